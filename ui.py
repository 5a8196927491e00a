"""Streamlit glue shared by the pages: the current project, error display, cached reads.

UI only; every computation is in ``core``. Session state is initialised here in one place.
The current project survives a browser refresh: it is kept in the URL (``?project=``) and in the workspace's
``.reactomo-ui.json`` (last opened project), not only in the session.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import streamlit as st

from core.atomic import atomic_write_json
from core.errors import ReactomoError

log = logging.getLogger("reactomo.ui")

PAGE_ICON = "🪨"


def page_setup(title: str) -> None:
    st.set_page_config(page_title=f"{title} · Reactomo", page_icon=PAGE_ICON, layout="wide")


def _state_file() -> Path:
    from core.workflow.project import workspace_dir

    return Path(workspace_dir()) / ".reactomo-ui.json"


def _last_project() -> str | None:
    try:
        return json.loads(_state_file().read_text()).get("last_project")
    except (OSError, ValueError):
        return None


def set_current_project(name: str | None) -> None:
    """Remember ``name`` as the open project in the session, the URL and the workspace."""
    st.session_state["project_name"] = name
    if name:
        st.query_params["project"] = name
    elif "project" in st.query_params:
        del st.query_params["project"]
    try:
        atomic_write_json(_state_file(), {"last_project": name})
    except OSError as exc:  # a read-only workspace must not break the page
        log.warning("could not remember the last project: %s", exc)


def current_project():
    """The open :class:`core.workflow.project.Project`, or ``None`` (a deleted or broken project is forgotten)."""
    from core.workflow.project import open_project

    name = st.session_state.get("project_name") or st.query_params.get("project") or _last_project()
    if not name:
        return None
    try:
        project = open_project(name)
    except ReactomoError:
        st.session_state["project_name"] = None
        return None
    if st.session_state.get("project_name") != name:
        st.session_state["project_name"] = name
    if st.query_params.get("project") != name:
        st.query_params["project"] = name
    return project


def require_project():
    """Return the open project or explain how to get one and stop the page."""
    project = current_project()
    if project is None:
        st.info("No project is open. Open or create one on the home page, or load the demo experiment there.")
        st.markdown('<a href="./" target="_self">Go to the home page</a>', unsafe_allow_html=True)
        st.stop()
    return project


def sidebar_project(project) -> None:
    with st.sidebar:
        if project is None:
            st.caption("No project open")
        else:
            st.markdown(f"**Project:** `{project.name}`")
            scans = project.scans()
            if scans:
                st.caption(f"{len(scans)} steps · {'×'.join(map(str, scans[0].shape))} voxels · {project.manifest['voxel_size_um']} µm")


def release_uploads(files) -> int:
    """Drop uploaded files from Streamlit's in-memory store once they are saved in the project; returns how many.

    Streamlit keeps every upload in server memory until the browser session ends (``MemoryUploadedFileManager``);
    its chat input frees files the same way after use. Without this a team's uploads would pile up in the server's
    memory. Files that the store no longer knows, or a Streamlit without ``remove_file``, are left alone.
    """
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    manager = getattr(ctx, "uploaded_file_mgr", None) if ctx is not None else None
    remove = getattr(manager, "remove_file", None)
    if remove is None:
        return 0
    n = 0
    for f in files or ():
        file_id = getattr(f, "file_id", None)
        if file_id:
            remove(session_id=ctx.session_id, file_id=file_id)
            n += 1
    return n


@contextmanager
def user_errors(prefix: str = ""):
    """Show a :class:`ReactomoError` as one sentence (no traceback); log anything unexpected and say so plainly."""
    try:
        yield
    except ReactomoError as exc:
        st.error(f"{prefix}{exc}", icon=":material/error:")
    except OSError as exc:  # a full disk, a read-only or vanished folder: the same sentence as the CLI
        from core.errors import filesystem_sentence

        log.warning("file-system fault: %s", exc)
        st.error(f"{prefix}{filesystem_sentence(exc)}", icon=":material/error:")
    except Exception as exc:  # noqa: BLE001 - the page must stay usable; the log keeps the traceback
        log.exception("unexpected error")
        st.error(f"{prefix}Something went wrong ({type(exc).__name__}: {exc}). The project was not changed; the server log has details.", icon=":material/error:")


def progress_callback(bar):
    """Adapt ``st.progress`` to core's ``on_progress(fraction, message)``.

    Core may report from worker threads (parallel feature computation); only the page's own thread may draw,
    so reports from other threads are skipped (the next one from the page's thread catches up).
    """
    import threading

    owner = threading.get_ident()

    def on_progress(fraction: float, message: str) -> None:
        if threading.get_ident() != owner:
            return
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

    return on_progress


# ---------------------------------------------------------------------------------------------- cached reads
def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(max_entries=48, show_spinner=False)
def _read_slice(path: str, kind: str, axis: int, index: int, mtime: float) -> np.ndarray:
    from core.imaging.io import open_volume

    with open_volume(path, kind=kind) as vol:
        return np.array(vol.slice(axis, index))


def read_slice(scan, axis: int, index: int) -> np.ndarray:
    """One 2D slice of a step, cached on (path, orientation, index, file time): never the whole scan."""
    return _read_slice(scan.path, scan.kind, int(axis), int(index), _mtime(scan.path))


def read_file_slice(path, axis: int, index: int) -> np.ndarray:
    """One 2D slice of a multi-page TIFF (e.g. a label volume), cached like :func:`read_slice`."""
    return _read_slice(str(path), "stack", int(axis), int(index), _mtime(str(path)))


@st.cache_data(max_entries=32, show_spinner=False)
def _display_range(path: str, kind: str, mtime: float) -> tuple[float, float, float, float]:
    from core.imaging.io import open_volume

    with open_volume(path, kind=kind) as vol:
        sample = vol.sample(max_voxels=400_000, max_slices=16)
    lo, hi = np.percentile(sample, [0.5, 99.5])
    vmin, vmax = float(sample.min()), float(sample.max())
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi), vmin, max(vmax, vmin + 1.0)


def display_range(scan) -> tuple[float, float, float, float]:
    """(auto low, auto high, min, max) grey values of a step, from a sample of its slices."""
    return _display_range(scan.path, scan.kind, _mtime(scan.path))


@st.cache_data(max_entries=8, show_spinner=False)
def _histograms(key: tuple, bins: int) -> tuple[np.ndarray, np.ndarray]:
    from core.workflow.data import step_histograms
    from core.imaging.io import ScanInfo

    scans = [ScanInfo.from_dict(json.loads(k[0])) for k in key]
    return step_histograms(scans, bins=bins)


def histograms(scans, bins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of every step, cached on the scans' paths and file times."""
    key = tuple((json.dumps(s.to_dict(), sort_keys=True), _mtime(s.path)) for s in scans)
    return _histograms(key, bins)


# ------------------------------------------------------------------------------------------- shared formatting
def models_root() -> Path:
    """The model registry: ``$REACTOMO_MODELS`` when set, else the repo's top-level ``models/``."""
    return Path(os.environ.get("REACTOMO_MODELS") or Path(__file__).resolve().parent / "models")


def fmt_duration(seconds: float | None) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``; ``"estimating"`` for None."""
    if seconds is None:
        return "estimating"
    s = int(round(seconds))
    return f"{s // 3600} h {s // 60 % 60:02d} min" if s >= 3600 else (f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s")


def fmt_date(text: str) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM`` (UTC); the text itself when it is not one."""
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (ValueError, AttributeError):
        return str(text)
