"""Streamlit glue shared by the pages: the current project, error display, cached reads.

UI only; every computation is in ``core``. Session state is initialised here in one place.
The current project survives a browser refresh: it is kept in the URL (``?project=``) and in the workspace's
``.reactomo-ui.json`` (last opened project), not only in the session.
"""

from __future__ import annotations

import json
import logging
import os
import re
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
    # the home page's "Open a project" box holds the previous choice and would switch back to it on the next run
    # (a user's walk: a project created, or the demo loaded, from another one was not opened); forgetting it makes
    # the box start again from the project opened here
    st.session_state.pop("home_open_project", None)
    if name:
        st.query_params["project"] = name
    elif "project" in st.query_params:
        del st.query_params["project"]
    try:
        atomic_write_json(_state_file(), {"last_project": name})
    except OSError as exc:  # a read-only workspace must not break the page
        log.warning("could not remember the last project: %s", exc)


def _shared() -> dict | None:
    """The share link this session was opened with ({"project", "token"}), kept across pages and reloads."""
    token = st.query_params.get("share")
    if token:
        st.session_state["share"] = {"project": st.query_params.get("project") or "", "token": token}
    return st.session_state.get("share")


def _bad_link(sentence: str) -> None:
    st.error(sentence, icon=":material/link_off:")
    st.stop()


def current_project():
    """The open :class:`core.workflow.project.Project`, or ``None`` (a deleted or broken project is forgotten).

    A session opened with a share link stays on that project, read-only, and stops at once when the link was revoked
    or mistyped."""
    from core.workflow.access import valid_edit_key, valid_share
    from core.workflow.project import open_project

    shared = _shared()
    if shared is not None:
        try:
            project = open_project(shared["project"])
        except ReactomoError:
            _bad_link("This share link does not open a project: the project is gone or the link is mistyped.")
        if not valid_share(project, shared["token"]):
            st.session_state.pop("share", None)
            _bad_link("This share link is not valid: it was revoked or mistyped. Ask the project's owner for a new one.")
        st.session_state["project_name"] = project.name
        if st.query_params.get("project") != project.name or st.query_params.get("share") != shared["token"]:
            st.query_params.update({"project": project.name, "share": shared["token"]})
        return project
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
    key = st.query_params.get("key")
    if key and valid_edit_key(project, key):
        st.session_state.setdefault("edit_keys", {})[project.name] = key
    held = st.session_state.get("edit_keys", {}).get(project.name)
    if held and st.query_params.get("key") != held:
        st.query_params["key"] = held  # the edit link survives a reload
    return project


def read_only(project) -> bool:
    """Whether this session may only look at ``project``: opened with a share link, or on a team server
    (``REACTOMO_TEAM``) without the project's edit key."""
    from core.workflow.access import team_mode, valid_edit_key

    if project is None:
        return False
    if st.session_state.get("share"):
        return True
    if team_mode():
        return not valid_edit_key(project, st.session_state.get("edit_keys", {}).get(project.name))
    return False


def hold_edit_key(project) -> None:
    """This session made ``project``: on a team server it gets the project's edit key (and the URL keeps it)."""
    from core.workflow.access import edit_key, team_mode

    if team_mode():
        key = edit_key(project)
        st.session_state.setdefault("edit_keys", {})[project.name] = key
        st.query_params["key"] = key


def read_only_notice(project, *, page_changes: bool) -> None:
    """Say that this view is read-only; on a page whose every control changes the project, stop there."""
    why = ("a share link" if st.session_state.get("share") else
           "no edit key (this server is set up for a team; ask the project's owner for its edit link)")
    st.info(f"**Read-only view** of project '{project.name}', opened with {why}. Nothing here can be changed, run or "
            "deleted.", icon=":material/visibility:")
    if page_changes:
        st.markdown("This page changes the project, so it is not part of the read-only view. The results are on the "
                    '<a href="./analysis" target="_self">Analysis page</a> and the '
                    '<a href="./" target="_self">home page</a>.', unsafe_allow_html=True)
        st.stop()


def require_project(*, read_view: bool = False):
    """Return the open project or explain how to get one and stop the page.

    In a read-only session (a share link, or a team server without the edit key) a page that changes the project
    stops here with a notice; a page with ``read_view=True`` (the results) goes on, with its changing controls hidden
    (it asks :func:`read_only`)."""
    project = current_project()
    if project is None:
        st.info("No project is open. Open or create one on the home page, or load the demo experiment there.")
        st.markdown('<a href="./" target="_self">Go to the home page</a>', unsafe_allow_html=True)
        st.stop()
    if read_only(project):
        read_only_notice(project, page_changes=not read_view)
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


def plain(text: object) -> str:
    """``text`` shown as written in a Streamlit element that reads Markdown: ``*``, ``_``, ``~``, ``$``, ``[``, ``]``
    and backslashes are escaped outside code spans (a user's walk saw ``run1/*.png`` printed as ``run1/.png``, and
    underscores in a path turn into italics). Code spans (between backticks) are kept: they show what is in them."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick: shown as itself, what follows it is plain text
        parts[-2:] = [parts[-2] + "\x00" + parts[-1]]
    for i in range(0, len(parts), 2):  # outside the code spans
        parts[i] = _MARKDOWN.sub(r"\\\1", parts[i]).replace("\x00", "\\`")
    return "`".join(parts)


_MARKDOWN = re.compile(r"([\\*_~$\[\]])")


@contextmanager
def user_errors(prefix: str = ""):
    """Show a :class:`ReactomoError` as one sentence (no traceback); log anything unexpected and say so plainly."""
    def after(text: str) -> str:  # "Nothing was imported: the labels file ..." (no capital after a colon)
        if prefix.endswith(": ") and len(text) > 1 and text[0].isupper() and text[1].islower():
            return text[0].lower() + text[1:]
        return text

    try:
        yield
    except ReactomoError as exc:
        st.error(f"{prefix}{after(plain(exc))}", icon=":material/error:")
    except OSError as exc:  # a full disk, a read-only or vanished folder: the same sentence as the CLI
        from core.errors import filesystem_sentence

        log.warning("file-system fault: %s", exc)
        st.error(f"{prefix}{after(plain(filesystem_sentence(exc)))}", icon=":material/error:")
    except Exception as exc:  # noqa: BLE001 - the page must stay usable; the log keeps the traceback
        log.exception("unexpected error")
        st.error(f"{prefix}Something went wrong ({type(exc).__name__}: {plain(exc)}). The project was not changed; the server log has details.", icon=":material/error:")


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
def _read_slice(path: str, kind: str, axis: int, index: int, mtime: float, rings: str = "keep") -> np.ndarray:
    from core.imaging.rings import open_scan

    with open_scan(path, kind=kind, rings=rings) as vol:
        return np.array(vol.slice(axis, index))


def read_slice(scan, axis: int, index: int, *, rings: str = "keep") -> np.ndarray:
    """One 2D slice of a step, cached on (path, orientation, index, file time): never the whole scan. ``rings="remove"``
    reads it with the scan's ring artefacts removed, as the forest and the network read it (core.imaging.rings)."""
    return _read_slice(scan.path, scan.kind, int(axis), int(index), _mtime(scan.path), rings)


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


def fmt_bytes(n: int | float) -> str:
    """A size in bytes as kB, MB or GB (decimal units, as file browsers show them)."""
    n = float(n)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_date(text: str) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM`` (UTC); the text itself when it is not one."""
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (ValueError, AttributeError):
        return str(text)


def job_message(project_root, job) -> str:
    """A job's progress message; for a job still queued, what it waits for (the worker runs one job at a time)."""
    from core.workflow.jobs import list_jobs

    if job.status != "queued":
        return job.message or "starting"
    ahead = [j for j in list_jobs(project_root) if j.id != job.id and j.status == "running"]
    if ahead:
        return f"queued, waiting for '{ahead[0].title or ahead[0].kind}' to finish"
    return job.message or "queued"
