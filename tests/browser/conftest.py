"""Headless Chromium (Debian's package, driven by Playwright for Python) against a real JupyterLab.

The browser is found at $COURSE_CHROMIUM, else /usr/bin/chromium, else `chromium` on PATH.  Without
one these tests skip with a one-line reason, except under CI (the CI variable set), where a missing
browser is a failure.  Never run `playwright install`: it downloads a browser and fails offline.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("COURSE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        reason = "no Chromium: install Debian's chromium or set COURSE_CHROMIUM"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run the browser tests)")
        pytest.skip(reason)
    return path


@pytest.fixture
def browser_context(chromium, tmp_path):
    """A fresh persistent profile in a temporary folder (launch() rejects --user-data-dir in args)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


class PageErrors:
    """Collects uncaught page errors and console errors while a page is used."""

    # Messages that a healthy JupyterLab prints on a machine without internet or with a fresh profile.
    BENIGN = ("favicon", "Failed to load resource: net::ERR_", "the server responded with a status of 404")

    def __init__(self, page):
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        page.on("pageerror", lambda err: self.page_errors.append(str(err)))
        page.on("console", self._console)

    def _console(self, message) -> None:
        if message.type == "error" and not any(b in message.text for b in self.BENIGN):
            self.console_errors.append(message.text)


def run_all_and_wait(page, timeout_s: float = 300) -> None:
    """Run → Run All Cells, then wait until every code cell has an execution count and the kernel is idle."""
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    page.get_by_text("| Idle").first.wait_for(timeout=120_000)  # kernel started
    page.locator('.lm-MenuBar-itemLabel:text-is("Run")').click()
    page.locator('li[data-command="runmenu:run-all"]').click()
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""", timeout=timeout_s * 1000, polling=500)
    page.get_by_text("| Idle").first.wait_for(timeout=60_000)


def error_outputs(page) -> list[str]:
    """Texts of error outputs (tracebacks) shown in the notebook."""
    return page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"], '
                        '.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]').all_inner_texts()
