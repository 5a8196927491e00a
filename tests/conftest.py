"""Shared fixtures. Running a page file directly puts only pages/ on sys.path, so the repo root is added here."""

from __future__ import annotations

import json

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: A demo small enough for every test that needs real scans (a few seconds to make once per session).
SMALL_DEMO = dict(steps=4, shape=(16, 64, 72), seed=3)


@pytest.fixture
def workspace(tmp_path, tmp_path_factory, monkeypatch):
    """An empty workspace in tmp_path; the data roots are pytest's temporary folders (never /etc or home)."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("REACTOMO_WORKSPACE", str(ws))
    monkeypatch.setenv("REACTOMO_DATA_ROOT", os.pathsep.join([str(tmp_path), str(tmp_path_factory.getbasetemp())]))
    # page tests run their jobs as threads (a worker process per test would only add start-up time); the worker
    # process itself, the default, is tested in test_worker.py
    monkeypatch.setenv("REACTOMO_JOB_RUNNER", "thread")
    return ws


@pytest.fixture(scope="session")
def small_demo_dir(tmp_path_factory):
    """A small demo experiment on disk (scans/, truth/, scribbles.tif, dataset.json), made once per session."""
    from core.imaging.synthetic import DemoConfig, write_demo

    out = tmp_path_factory.mktemp("demo") / "exp"
    write_demo(out, DemoConfig(**SMALL_DEMO))
    return out


@pytest.fixture(scope="session")
def truth_dir(small_demo_dir, tmp_path_factory):
    """The small demo's known truth as a 'segmentation' folder (no record: plain label TIFFs)."""
    import shutil

    d = tmp_path_factory.mktemp("truth-seg")
    for p in sorted((small_demo_dir / "truth").glob("*.tif")):
        shutil.copy(p, d / p.name)
    return d


@pytest.fixture(scope="session")
def analysed(truth_dir, tmp_path_factory):
    """The small demo's truth analysed (100 bootstrap resamples, 300 s between steps): (result, output folder).
    Shared by the analysis tests; nothing may change it (with_band returns copies)."""
    from core.analysis.results import AnalysisConfig, analyze

    out = tmp_path_factory.mktemp("analysis")
    return analyze(truth_dir, out, config=AnalysisConfig(n_boot=100, interval_s=300.0)), out


@pytest.fixture
def demo_project(workspace):
    """A project holding a small demo experiment, in the test's own workspace."""
    from core.workflow.data import create_demo_project
    from core.imaging.synthetic import DemoConfig

    return create_demo_project("demo", workspace=workspace, config=DemoConfig(**SMALL_DEMO))


# ---------------------------------------------------------------------------------------------- browser helpers
#: Debian's Chromium (never `playwright install`: no downloads here), and the flags it needs in a container.
CHROMIUM = os.environ.get("REACTOMO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


class _ServerUrl(str):
    """The server's URL (a str, as the tests use it), with its process as ``.proc`` for tests that kill it."""

    def __new__(cls, url: str, proc):
        obj = super().__new__(cls, url)
        obj.proc = proc
        return obj


def launch_streamlit(workspace: Path, *, data_root: Path, log_path: Path):
    """Start ``streamlit run app.py`` on a free local port for ``workspace``; a context manager yielding its URL."""
    import contextlib
    import socket
    import subprocess
    import time
    import urllib.request

    @contextlib.contextmanager
    def run():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "REACTOMO_WORKSPACE": str(workspace), "REACTOMO_DATA_ROOT": str(data_root)}
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                 "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                deadline = time.time() + 60
                while True:
                    try:
                        if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                            break
                    except OSError:
                        if time.time() > deadline or proc.poll() is not None:
                            pytest.fail(f"streamlit did not start: {Path(log_path).read_text()[-2000:]}")
                        time.sleep(0.3)
                yield _ServerUrl(url, proc)
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                stop_worker(workspace)  # a job started in the browser started a worker, which outlives the server

    return run()


def stop_worker(workspace: Path) -> None:
    """Kill the worker process of ``workspace``, if one runs (it is its own session: nothing else stops it)."""
    import json
    import signal

    try:
        pid = json.loads((Path(workspace) / ".worker.json").read_text())["pid"]
        os.kill(int(pid), signal.SIGKILL)
    except (OSError, ValueError, KeyError, TypeError):
        pass


def settle(pg) -> None:
    """Wait until the Streamlit app has rendered and no script run is in progress.

    A page just loaded (or reloaded) is drawn before its first script run has begun, and on two busy cores that run
    can start later than any fixed pause: so first wait for the run's first element in the main block.
    """
    pg.wait_for_selector('[data-testid="stApp"]')
    pg.wait_for_selector('[data-testid="stMainBlockContainer"] [data-testid="stElementContainer"]', timeout=120_000)
    pg.wait_for_timeout(300)
    pg.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=120_000)


def browser_page(*, height: int = 2000):
    """A headless Debian-Chromium page (Playwright), 1500 px wide; a context manager."""
    import contextlib

    @contextlib.contextmanager
    def run():
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1500, "height": height})
            pg = context.new_page()
            pg.set_default_timeout(60_000)
            try:
                yield pg
            finally:
                context.close()
                browser.close()

    return run()


@pytest.fixture
def cli_files(tmp_path):
    """A tiny scan (8 x 48 x 48, demo step 1) and its truth on slices 2 and 5 as a ground-truth TIFF, for `train`:
    (folder, scan path, ground-truth path, the full truth)."""
    import numpy as np
    import tifffile

    from core.imaging.io import write_labels
    from core.imaging.synthetic import DemoConfig, make_demo

    d = make_demo(DemoConfig(steps=2, shape=(8, 48, 48), seed=1))
    scan = tmp_path / "scan.tif"
    tifffile.imwrite(scan, d.scans[1])
    gt = np.zeros_like(d.truth[1])
    gt[[2, 5]] = d.truth[1][[2, 5]]
    write_labels(tmp_path / "gt.tif", gt)
    return tmp_path, scan, tmp_path / "gt.tif", d.truth[1]


def run_args(demo, out, *more):
    """`core run` arguments on a demo experiment folder: one U-Net epoch on the CPU, quiet, plus ``more``."""
    label_step = json.loads((demo / "dataset.json").read_text())["label_step"]
    return ["-q", "run", "--scans", str(demo / "scans"), "--scribbles", str(demo / "scribbles.tif"),
            "--label-step", str(label_step), "--out", str(out), "--epochs", "1", "--device", "cpu", *more]
