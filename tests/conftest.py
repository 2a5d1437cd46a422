"""Shared fixtures.  Real datasets come from $COURSE_DATA_DIR (CI: ../shared/data), never a fixed path."""
import os

import pytest

from course_utils import data
from course_utils.errors import DataNotFoundError


def pytest_configure(config):
    # Several test processes may share 2 cores; one thread each avoids oversubscription.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        # ...and so do the Jupyter kernels that run the notebooks (they inherit this environment).
        os.environ.setdefault("COURSE_THREADS", "1")


@pytest.fixture(scope="session")
def require_dataset():
    """``require_dataset(name)`` skips the test when ``name`` is not on disk (fails instead under CI)."""

    def check(name: str) -> None:
        try:
            data.locate(name, download=False)
        except DataNotFoundError as err:
            if os.environ.get("CI"):
                pytest.fail(f"CI needs {name}: set COURSE_DATA_DIR. {err}")
            pytest.skip(f"{name} not found; set COURSE_DATA_DIR to run this test")

    return check
