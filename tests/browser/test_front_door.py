"""The course's front door in a real browser: JupyterLab lists every notebook and runs notebook 00."""
import pytest

from conftest import PageErrors, error_outputs, run_all_and_wait
from lab_server import REPO, lab_server

pytestmark = pytest.mark.browser


def test_lab_lists_every_notebook_and_runs_00_without_errors(browser_context, tmp_path):
    # Smoke mode through the environment: the kernel inherits COURSE_SMOKE=1 and setup_notebook reads it.
    with lab_server(tmp_path / "lab", env_extra={"COURSE_SMOKE": "1"}) as server:
        page = browser_context.new_page()
        errors = PageErrors(page)
        page.goto(f"{server.url}/lab/tree/notebooks")
        page.locator(".jp-DirListing-item").first.wait_for(timeout=60_000)
        listed = set(page.locator(".jp-DirListing-itemText").all_inner_texts())
        expected = {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
        assert expected <= listed, f"not listed: {expected - listed}"
        page.screenshot(path=str(tmp_path / "file_browser.png"))

        page.goto(f"{server.url}/lab/tree/notebooks/00_setup_and_data.ipynb")
        run_all_and_wait(page, timeout_s=400)
        page.screenshot(path=str(tmp_path / "notebook_00.png"), full_page=True)
        assert error_outputs(page) == []
        assert page.locator(".jp-OutputArea-output img").count() >= 3, "the notebook's plots rendered"
        assert "mode: SMOKE" in page.locator(".jp-OutputArea-output").first.inner_text()
        assert errors.page_errors == [], errors.page_errors
        assert errors.console_errors == [], errors.console_errors
