"""Notebooks import, never copy (issue 13); the package stays readable.

* No code cell of 10 or more lines appears in two notebooks, and no run of 10 consecutive lines is copied
  from one notebook into another: shared code belongs in ``course_utils``.  Lines are compared after
  normalisation (surrounding and repeated whitespace, blank lines, comments and IPython magics dropped);
  the copied-run check also ignores import lines, which every notebook legitimately repeats.
* No function in ``course_utils`` is longer than 80 lines, and no file longer than 500 lines other than
  the per-family model files in ``course_utils/models/``.
"""
import ast
import re
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PACKAGE = REPO / "course_utils"
MODEL_FAMILIES = PACKAGE / "models"
SOURCES = sorted(PACKAGE.rglob("*.py"))
LENGTH_LIMITED = [p for p in SOURCES if p.parent != MODEL_FAMILIES]  # a model family's file holds the whole family
MIN_COPY_LINES = 10
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 500
_IMPORT = re.compile(r"(import \S|from \S+ import )")


def normalised(source: str) -> list[str]:
    """The lines that carry code: whitespace collapsed; blank lines, comments and magics dropped."""
    lines = []
    for line in source.splitlines():
        text = " ".join(line.split())
        if text and not text.startswith(("#", "%", "!")):
            lines.append(text)
    return lines


def code_cells() -> list[tuple[str, int, list[str]]]:
    """(notebook stem, cell index, normalised lines) of every code cell of every notebook."""
    cells = []
    for path in NOTEBOOKS:
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "code":
                cells.append((path.stem, index, normalised(cell.source)))
    return cells


def shared_between_notebooks(places: dict[str, set[str]]) -> list[list[str]]:
    """The entries of ``places`` (text -> {"stem cell i", ...}) found in more than one notebook."""
    return [sorted(where) for where in places.values() if len({w.split()[0] for w in where}) > 1]


def test_the_checks_see_every_notebook():
    assert len(NOTEBOOKS) >= 12 and (REPO / "notebooks" / "10_speedycnet.ipynb") in NOTEBOOKS


def test_no_long_code_cell_appears_in_two_notebooks():
    places = defaultdict(set)
    for stem, index, lines in code_cells():
        if len(lines) >= MIN_COPY_LINES:
            places["\n".join(lines)].add(f"{stem} cell {index}")
    copies = shared_between_notebooks(places)
    assert not copies, f"code cells of {MIN_COPY_LINES}+ lines copied between notebooks (move them into " \
                       f"course_utils and call them): {copies}"


def test_no_run_of_ten_lines_is_copied_between_notebooks():
    places, first_line = defaultdict(set), {}
    for stem, index, lines in code_cells():
        code = [line for line in lines if not _IMPORT.match(line)]
        for start in range(len(code) - MIN_COPY_LINES + 1):
            window = "\n".join(code[start:start + MIN_COPY_LINES])
            places[window].add(f"{stem} cell {index}")
            first_line[window] = code[start]
    report = {}  # the cells that share a run -> the run's first line
    for text, where in places.items():
        if len({w.split()[0] for w in where}) > 1:
            report.setdefault(tuple(sorted(where)), first_line[text])
    assert not report, f"runs of {MIN_COPY_LINES} lines copied between notebooks (cells, first line): {report}"


def test_the_normalisation_ignores_layout_and_comments():
    assert normalised("  x  =  1  # one\n\n# a comment\n%matplotlib inline\ny = 2") == ["x = 1 # one", "y = 2"]


# ----------------------------------------------------------------------------- the package
def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, first line including decorators, length in lines) of every function, nested ones too."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                yield name, first, node.end_lineno - first + 1
            yield from functions(node, name + ".")
        else:
            yield from functions(node, prefix)


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", SOURCES, ids=[relative(p) for p in SOURCES])
def test_no_function_is_longer_than_80_lines(path):
    tree = ast.parse(path.read_text())
    long = [f"{name} (line {line}: {length} lines)" for name, line, length in functions(tree)
            if length > MAX_FUNCTION_LINES]
    assert not long, f"{relative(path)}: functions over {MAX_FUNCTION_LINES} lines, split them: {long}"


@pytest.mark.parametrize("path", LENGTH_LIMITED, ids=[relative(p) for p in LENGTH_LIMITED])
def test_no_file_is_longer_than_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_FILE_LINES, f"{relative(path)} has {lines} lines (at most {MAX_FILE_LINES}): split it"


def test_the_function_walk_finds_methods_and_nested_functions():
    tree = ast.parse("class A:\n    @staticmethod\n    def f():\n        def g():\n            pass\n")
    assert [(name, line) for name, line, _ in functions(tree)] == [("A.f", 2), ("A.f.g", 4)]


def private_uses(source: str) -> list[str]:
    """Another course module's private names that ``source`` imports or reaches through a module attribute."""
    tree = ast.parse(source)
    found, ours = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("course_utils")):
            found += [f"from {'.' * node.level}{node.module or ''} import {a.name}" for a in node.names if a.name.startswith("_")]
            ours |= {a.asname or a.name for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ours \
                and node.attr.startswith("_") and not node.attr.startswith("__"):
            found.append(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=[relative(p) for p in SOURCES])
def test_no_module_uses_another_modules_private_names(path):
    assert not private_uses(path.read_text()), f"{relative(path)}: make these public in their home module"


def test_the_private_name_check_sees_imports_and_attributes():
    assert private_uses("from .models import vgg\nvgg._init_weights(m)") == ["vgg._init_weights"]
    assert private_uses("from ..train import _fingerprint") == ["from ..train import _fingerprint"]
    assert private_uses("import torch\ntorch._C\nfrom .device import stopwatch") == []
