"""`jupyter lab` starts from the course's environment and lists the notebooks (its HTTP API, no browser)."""
import time

import pytest

from lab_server import REPO, lab_server


@pytest.mark.notebook
def test_jupyter_lab_starts_and_lists_every_notebook(tmp_path):
    started = time.perf_counter()
    with lab_server(tmp_path) as server:
        ready_seconds = time.perf_counter() - started
        assert server.get("/api/status")["kernels"] == 0
        listing = server.get("/api/contents/notebooks")
        names = sorted(item["name"] for item in listing["content"] if item["type"] == "notebook")
        assert names == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
        assert "python3" in server.get("/api/kernelspecs")["kernelspecs"]
        lab = server.get("/lab/api/settings/@jupyterlab/apputils-extension:notification")
        assert lab["raw"] and ready_seconds < 90
        assert not list((tmp_path / "config").glob("**/*.py")), "nothing written outside the temp folders"
