"""Every notebook in notebooks/ runs end to end in smoke mode; none is committed with outputs.

New notebooks are picked up by the glob: no edit here is needed to test them.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from notebook_checks import CHECKS, PATH_PARAMETERS

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CHECK_TAG = "nbval-check-output"  # cells whose output is deterministic: nbval compares it
KEEP_TAG = "keep_output"  # the only cells allowed to carry committed outputs (nbval's reference)


def ids(paths):
    return [p.stem for p in paths]


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_there_are_notebooks():
    assert (REPO / "notebooks" / "00_setup_and_data.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_is_committed_clean_with_a_literal_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name"), "papermill needs a kernelspec"
    for cell in nb.cells:
        if cell.cell_type == "code" and KEEP_TAG not in tags(cell):
            assert not cell.get("outputs"), f"{path.name}: commit notebooks without outputs"
        if KEEP_TAG in tags(cell):
            assert CHECK_TAG in tags(cell), f"{path.name}: kept outputs exist only as nbval references"
    params = [c for c in nb.cells if "parameters" in tags(c)]
    assert len(params) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
    names = {}
    for node in ast.parse(params[0].source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: the parameters cell holds assignments only"
        names[node.targets[0].id] = ast.literal_eval(node.value)  # raises unless the value is a literal
    assert names.get("SMOKE") is False, f"{path.name}: SMOKE = False is the default"
    assert "RESULTS_DIR" in names and "SEED" in names


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_runs_in_smoke_mode(path, tmp_path):
    import papermill

    extra = {name: str(tmp_path / "results" / file) for name, file in PATH_PARAMETERS.get(path.stem, {}).items()}
    papermill.execute_notebook(
        str(path), str(tmp_path / path.name), cwd=str(path.parent),
        parameters={"SMOKE": True, "RESULTS_DIR": str(tmp_path / "results"), **extra},
        kernel_name="python3", progress_bar=False, execution_timeout=900)
    metrics = tmp_path / "results" / "metrics.json"
    assert metrics.exists(), "the notebook publishes its figures (course_utils.results.publish)"
    assert json.loads(metrics.read_text()).get("device"), "every result says which device produced it"
    if path.stem in CHECKS:
        CHECKS[path.stem](tmp_path / "results")


@pytest.mark.notebook
def test_speedycnet_resumes_after_its_last_finished_pass(tmp_path):
    """A run cut off during its removal-off ablation measures that pass again and takes the rest from PASS_DIR."""
    import pandas as pd
    import papermill

    path = REPO / "notebooks" / "10_speedycnet.ipynb"

    def run(out: Path) -> tuple[dict, "pd.DataFrame"]:
        # a fixed format: "measure" could pick another one in the second process, a different run by design
        out.mkdir()
        papermill.execute_notebook(
            str(path), str(out / path.name), cwd=str(path.parent), kernel_name="python3", progress_bar=False,
            parameters={"SMOKE": True, "RESULTS_DIR": str(out), "PASS_DIR": str(tmp_path / "passes"),
                        "PRECISION": "fp32"}, execution_timeout=900)
        return json.loads((out / "metrics.json").read_text()), pd.read_csv(out / "speedycnet.csv")

    first, before = run(tmp_path / "first")
    [kept] = (tmp_path / "passes").iterdir()
    (kept / "cascade_removal_off.json").unlink()  # the session ended during this pass
    second, after = run(tmp_path / "second")
    assert first["resumed_passes"] == []
    assert second["resumed_passes"] == [
        "VGG16 and SpeedyCNet, early stopping", "Learner 1 alone (all data)", "Learner 4 full stack alone (all data)",
        "Cascade, random removal (same counts)", "SpeedyCNet (independent learners)",
        "SpeedyCNet (small first learner), first width 0.25", "VGG16 and SpeedyCNet, equal epochs"]
    assert second["passes_note"].startswith("Resumed: VGG16 and SpeedyCNet, early stopping") and \
        second["passes_note"].endswith("Cascade, removal off measured in this one.")
    kept_rows = before["model"] != "Cascade, removal off"
    columns = ["protocol", "model", "train_seconds", "cpu_seconds", "test_accuracy", "epochs"]
    pd.testing.assert_frame_equal(before.loc[kept_rows, columns], after.loc[kept_rows, columns])
    for key in ("vgg16_seconds", "speedycnet_seconds", "speedycnet_test_accuracy", "speedycnet_exit_counts"):
        assert first[key] == second[key], key  # the headline pair, and the cascade itself, came back whole


CHECKED = [p for p in NOTEBOOKS
           if any(CHECK_TAG in tags(c) for c in nbformat.read(p, as_version=4).cells)]


@pytest.mark.notebook
@pytest.mark.skipif(not CHECKED, reason="no notebook has cells tagged nbval-check-output")
def test_deterministic_outputs_match_with_nbval():
    """nbval re-runs the notebooks (smoke mode via COURSE_SMOKE=1) and compares the tagged cells' outputs."""
    env = {**os.environ, "COURSE_SMOKE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                           "-o", "addopts=", *map(str, CHECKED)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
