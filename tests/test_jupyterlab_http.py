"""`jupyter lab` starts from the course's environment and lists the notebooks (its HTTP API, no browser).

No wall-clock bound here: how long the server takes to start is for a benchmark, not a test (a loaded
2-core CI machine makes timed tests flaky); `lab_server` itself gives up with a clear error if it never answers.
"""
import pytest

from lab_server import REPO, lab_server


@pytest.mark.notebook
def test_jupyter_lab_starts_and_lists_every_notebook(tmp_path):
    with lab_server(tmp_path) as server:
        assert server.get("/api/status")["kernels"] == 0
        listing = server.get("/api/contents/notebooks")
        names = sorted(item["name"] for item in listing["content"] if item["type"] == "notebook")
        assert names == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
        assert "python3" in server.get("/api/kernelspecs")["kernelspecs"]
        lab = server.get("/lab/api/settings/@jupyterlab/apputils-extension:notification")
        assert lab["raw"]
        assert not list((tmp_path / "config").glob("**/*.py")), "nothing written outside the temp folders"
