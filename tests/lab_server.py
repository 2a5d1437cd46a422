"""Start and stop a real JupyterLab server for tests: 127.0.0.1, a free port, no token, no password.

Jupyter's config, data, runtime, settings and workspace folders live in a temporary directory, so
nothing is written to the user's home.  The server is stopped by its own PID.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url, self.process, self.log = url, process, log

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())


def _jupyter_env(tmp: Path, env_extra: dict[str, str] | None) -> dict[str, str]:
    """Jupyter's folders inside ``tmp``, JupyterLab's news and windowing off; the environment to run with."""
    dirs = {name: tmp / name for name in ("config", "data", "runtime", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    # JupyterLab's news pop-up would cover the page
    notification = dirs["settings"] / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Render every cell (no windowing), so the tests can read outputs that are scrolled out of view.
    tracker = dirs["settings"] / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    return {**os.environ, "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]), "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]), "IPYTHONDIR": str(tmp / "ipython"),
            "MPLCONFIGDIR": str(tmp / "mpl"), **(env_extra or {})}


@contextmanager
def _server(cmd: list[str], env: dict[str, str], log: Path, url: str, ready_path: str, name: str,
            cwd: Path | None = None) -> Iterator[LabServer]:
    """Start ``cmd``, wait until ``url + ready_path`` answers 200, yield, then stop its process group."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI machines run as root
        cmd = cmd + ["--allow-root"] if name == "jupyter lab" else cmd
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd)
    try:
        deadline = time.time() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + ready_path, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"{name} did not answer {ready_path} in 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield LabServer(url, process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own process group: kernels go too
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def lab_server(tmp: Path, env_extra: dict[str, str] | None = None, root: Path = REPO) -> Iterator[LabServer]:
    """A running ``jupyter lab`` serving ``root``; yields a ``LabServer`` once ``/api/status`` answers."""
    port = free_port()
    env = _jupyter_env(tmp, env_extra)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
           "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=", "--LabApp.extension_manager=readonly"]  # no network look-ups
    with _server(cmd, env, tmp / "jupyter.log", f"http://127.0.0.1:{port}", "/api/status", "jupyter lab") as s:
        yield s


@contextmanager
def voila_server(tmp: Path, notebook: Path, env_extra: dict[str, str] | None = None) -> Iterator[LabServer]:
    """``voila notebook`` (what ``make panel`` runs) on a free port, in the notebook's folder so that its
    ``voila.json`` applies (only the widget extensions load); yields once its page answers."""
    port = free_port()
    env = _jupyter_env(tmp, env_extra)
    cmd = [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
           "--Voila.port_retries=0"]
    with _server(cmd, env, tmp / "voila.log", f"http://127.0.0.1:{port}", "/", "voila", cwd=notebook.parent) as s:
        yield s
