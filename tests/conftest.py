"""Shared fixtures. Running a page file directly puts only pages/ on sys.path, so the repo root is added here."""

from __future__ import annotations

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
    return ws


@pytest.fixture(scope="session")
def small_demo_dir(tmp_path_factory):
    """A small demo experiment on disk (scans/, truth/, scribbles.tif, dataset.json), made once per session."""
    from core.synthetic import DemoConfig, write_demo

    out = tmp_path_factory.mktemp("demo") / "exp"
    write_demo(out, DemoConfig(**SMALL_DEMO))
    return out


@pytest.fixture
def demo_project(workspace):
    """A project holding a small demo experiment, in the test's own workspace."""
    from core.data import create_demo_project
    from core.synthetic import DemoConfig

    return create_demo_project("demo", workspace=workspace, config=DemoConfig(**SMALL_DEMO))
