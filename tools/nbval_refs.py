"""Maintain notebooks for git: strip outputs, or refresh the nbval reference outputs.

    python tools/nbval_refs.py strip notebooks/*.ipynb     # remove every output but the nbval references
    python tools/nbval_refs.py refresh notebooks/03_googlenet.ipynb

`refresh` runs the notebook through papermill in smoke mode and copies the outputs of the cells tagged
`keep_output` (and `nbval-check-output`) into the committed notebook; every other output is stripped.
Those kept outputs are nbval's reference: tests re-run the notebook and compare them.
"""
import sys
import tempfile
from pathlib import Path

import nbformat

KEEP = "keep_output"


def strip(nb, keep_tagged: bool) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if keep_tagged and KEEP in cell.metadata.get("tags", []):
            continue
        cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)


def refresh(path: Path) -> None:
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / path.name
        papermill.execute_notebook(str(path), str(out), cwd=str(path.parent), kernel_name="python3",
                                   parameters={"SMOKE": True}, progress_bar=False)
        executed = nbformat.read(out, as_version=4)
    nb = nbformat.read(path, as_version=4)
    by_id = {c.get("id"): c for c in executed.cells}
    strip(nb, keep_tagged=False)
    for cell in nb.cells:
        if cell.cell_type == "code" and KEEP in cell.metadata.get("tags", []):
            ran = by_id[cell.get("id")]
            cell.outputs = ran.outputs
            cell.execution_count = ran.execution_count  # nbval ignores a reference cell that never ran
    nbformat.write(nb, path)


if __name__ == "__main__":
    command, paths = sys.argv[1], [Path(p) for p in sys.argv[2:]]
    for p in paths:
        if command == "strip":
            nb = nbformat.read(p, as_version=4)
            strip(nb, keep_tagged=True)
            nbformat.write(nb, p)
        elif command == "refresh":
            refresh(p)
        else:
            sys.exit(__doc__)
        print(f"{command}: {p}")
