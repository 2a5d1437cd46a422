"""pages/edcnn_panel.ipynb, the page `make panel` serves with Voila: it shows the panel over a saved bundle, and
says what to run when there is none.  (Its behaviour in a browser is tests/browser/test_edcnn_panel.py's.)"""
import nbformat
import papermill
import pytest
import torch

from course_utils import exits
from course_utils.edcnn import LatencyModel

from lab_server import REPO

PAGE = REPO / "pages" / "edcnn_panel.ipynb"
pytestmark = pytest.mark.notebook


def outputs(nb) -> str:
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            texts.append(data.get("text/markdown", "") + data.get("text/plain", "") + out.get("text", ""))
            if "application/vnd.jupyter.widget-view+json" in data:
                texts.append("<widget>")
    return "\n".join(texts)


def synthetic_bundle(path) -> None:
    labels = torch.randint(0, 10, (400,), generator=torch.Generator().manual_seed(0))
    logits = torch.randn(3, 400, 10, generator=torch.Generator().manual_seed(1))
    logits[torch.arange(3)[:, None], torch.arange(400), labels] += torch.tensor([1.0, 2.0, 3.0])[:, None]
    scores = exits.ExitScores.from_logits(logits, labels)
    latency = LatencyModel([0.3, 0.2, 0.1], [0.05, 0.05, 0.1], "cpu (test)")
    exits.save_bundle(exits.ExitBundle.from_scores(
        {"val": scores, "test": scores}, exits.ExitCosts([10, 20, 30], [1, 1, 1]),
        exit_ms={b: latency.exit_ms(b) for b in (1, 256)}, device="cpu (test)",
        meta={"title": "a synthetic bundle", "scale": "400 samples", "acc_full_test": 0.5}), path)


def test_the_page_shows_the_panel_over_a_bundle(tmp_path):
    synthetic_bundle(tmp_path / "b.npz")
    nb = papermill.execute_notebook(str(PAGE), str(tmp_path / "out.ipynb"), parameters={"BUNDLE": str(tmp_path / "b.npz")},
                                    kernel_name="python3", progress_bar=False, cwd=str(PAGE.parent))
    text = outputs(nb)
    assert "**a synthetic bundle**" in text and "full network, test accuracy 50.00%" in text and "<widget>" in text


def test_the_page_says_what_to_run_when_there_is_no_bundle(tmp_path):
    nb = papermill.execute_notebook(str(PAGE), str(tmp_path / "out.ipynb"),
                                    parameters={"BUNDLE": str(tmp_path / "absent.npz")}, kernel_name="python3",
                                    progress_bar=False, cwd=str(PAGE.parent))
    text = outputs(nb)
    assert "No trained edCNN to show yet" in text and "--tier standard" in text and "<widget>" not in text


def test_the_page_is_committed_without_outputs_and_with_a_parameters_cell():
    nb = nbformat.read(PAGE, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert "parameters" in nb.cells[1].metadata.get("tags", [])


def test_notebook_11_shows_a_trained_bundle_at_once_and_stops_before_training(tmp_path):
    """Default mode (TRAIN = None) with a trained bundle on file: the panel, then one line, and no training."""
    from papermill.exceptions import PapermillExecutionError

    synthetic_bundle(tmp_path / "b.npz")
    with pytest.raises(PapermillExecutionError) as stopped:
        papermill.execute_notebook(str(REPO / "notebooks" / "11_edcnn.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"TRAINED_BUNDLE": str(tmp_path / "b.npz")}, kernel_name="python3",
                                   progress_bar=False, cwd=str(REPO / "notebooks"))
    assert stopped.value.ename == "StopHere" and "Set TRAIN = True" in stopped.value.evalue
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    ran = [c for c in nb.cells if c.cell_type == "code" and c.execution_count]
    assert "**a synthetic bundle**" in outputs(nb) and "<widget>" in outputs(nb)
    # parameters, papermill's injected parameters, setup, imports, the panel: no training
    assert "find_trained" in ran[-1].source and len(ran) == 5
