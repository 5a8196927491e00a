"""The Data step: put scans (or the demo experiment) into a project, and summarise them.

Shared by ``pages/1_Data.py`` and ``python -m core data`` / ``python -m core demo-project``: the page and the
CLI call these same functions, so they accept and refuse exactly the same inputs.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.atomic import move_to_trash
from core.errors import ReactomoError

__all__ = ["register_scans", "generate_demo_into", "create_demo_project", "step_histograms", "dataset_interval", "DEMO_DIR"]

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]

#: Folder inside a project that holds the generated demo experiment.
DEMO_DIR = "demo"


def _noop(fraction: float, message: str) -> None:  # pragma: no cover - trivial
    pass


def dataset_interval(scans: str | Path) -> tuple[float, str] | None:
    """Seconds between steps from a Reactomo ``dataset.json`` beside the scans (``python -m core demo`` writes one).

    Looks in the scans folder (or a glob's folder) and its parent. Returns ``(interval_s, path)``, or None when there
    is no such file or it holds no positive ``interval_s`` (a file that cannot be read counts as none: the caller
    then says that no step times are known).
    """
    import json
    import os

    src = str(scans)
    folder = Path(src) if Path(src).is_dir() else Path(os.path.dirname(src) or ".")
    for d in (folder, folder.parent):
        f = d / "dataset.json"
        if not f.is_file():
            continue
        try:
            iv = json.loads(f.read_text(encoding="utf-8")).get("interval_s")
        except (OSError, ValueError, AttributeError):
            return None
        if isinstance(iv, (int, float)) and not isinstance(iv, bool) and 0 < iv <= 1e7:
            return float(iv), str(f)
        return None
    return None


def register_scans(
    project,
    source: str | Path,
    *,
    allowed_roots: Sequence[str | Path] | None = None,
    times_s: Sequence[float] | None = None,
    check_values: bool = True,
    on_progress: Progress | None = None,
):
    """Discover the time steps at ``source``, check them, and make them the project's scans.

    Everything is validated before the project is touched: on any error the manifest is unchanged.

    Parameters
    ----------
    project : core.workflow.project.Project
    source : str or Path
        A multi-page TIFF, a glob, a folder of multi-page TIFFs (one per step), a folder of 2D slices (one step) or
        a folder of such folders (one per step). See :func:`core.imaging.io.discover_scans`.
    allowed_roots : sequence of paths, optional
        Server-side data roots the path must lie in (``core.workflow.project.data_roots()`` for the dashboard).
    times_s : sequence of float, optional
        Time of each step in seconds; default: step index × the project's interval.
    check_values : bool
        Check each step for NaN/inf and constant images on evenly spaced slices.

    Returns
    -------
    OpenedScans
        The list of :class:`core.imaging.io.ScanInfo`, with ``notes``: what the new scans made obsolete and was
        cleared (the demo's truth and scribbles, a region of interest of another shape), one sentence each.
    """
    from core.imaging.io import check_volume_values, discover_scans, open_volume

    progress = on_progress or _noop
    text = str(source).strip()
    if not text:
        raise ReactomoError("No scan path was given; enter a folder, a glob such as /data/exp1/*.tif, or a TIFF file.")
    progress(0.0, "Looking for scans")
    scans = discover_scans(text, allowed_roots=allowed_roots)
    if times_s is not None and len(times_s) != len(scans):
        raise ReactomoError(f"Got {len(times_s)} times for {len(scans)} steps; give one time per step.")
    if check_values:
        for i, info in enumerate(scans):
            progress(0.1 + 0.85 * i / len(scans), f"Checking {info.name} ({i + 1}/{len(scans)})")
            with open_volume(info.path, kind=info.kind) as vol:
                try:
                    check_volume_values(vol)
                except ReactomoError as exc:
                    raise ReactomoError(f"Step '{info.name}': {exc}") from None
    looks = _looks_like_labels(scans[0]) if scans else ""
    notes = project.set_scans(scans, times_s=times_s) + ([looks] if looks else [])
    progress(1.0, f"Opened {len(scans)} steps")
    log.info("project %s: %d scans from %s", project.name, len(scans), text)
    return OpenedScans(scans, notes)


def _looks_like_labels(info) -> str:
    """A sentence when the first step's middle slice holds a handful of integer values only (a label volume, such as
    the demo's truth, opened as scans), else "". It is said, not refused: a binarised scan is a user's choice."""
    from core.imaging.io import open_volume

    with open_volume(info.path, kind=info.kind) as vol:
        if not np.issubdtype(vol.dtype, np.integer):
            return ""
        values = np.unique(vol.slice(0, vol.shape[0] // 2))
    if values.size > 16:
        return ""
    shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if values.size > 8 else "")
    return (f"The scans hold only {values.size} grey value{'s' if values.size != 1 else ''} ({shown}) in their "
            "middle slice: they look like label volumes, not reconstructed CT scans.")


class OpenedScans(list):
    """The scans :func:`register_scans` opened (a list), with ``notes``: what they made obsolete, in sentences."""

    def __init__(self, scans, notes=()):
        super().__init__(scans)
        self.notes = list(notes)


def generate_demo_into(project, config=None, *, on_progress: Progress | None = None) -> dict:
    """Generate the demo experiment inside ``project`` (folder ``demo/``) and make it the project's data.

    The new demo is written to a temporary folder first; only when it is complete does it replace an older demo,
    which is moved to the workspace trash, never deleted.

    Returns
    -------
    dict
        The demo's ``dataset.json`` content.
    """
    from core.imaging.io import discover_scans
    from core.imaging.synthetic import DEMO, write_demo

    config = config or DEMO
    config.validate()
    progress = on_progress or _noop
    root = Path(project.root)
    tmp = root / f".{DEMO_DIR}-{time.strftime('%Y%m%d-%H%M%S')}-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        dataset = write_demo(tmp, config, on_progress=lambda f, m: progress(0.95 * f, m))
        final = root / DEMO_DIR
        if final.exists():
            move_to_trash(final, root.parent / ".trash", name=f"{project.name}-{DEMO_DIR}")
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(0.96, "Registering the demo scans")
    scans = discover_scans(final / "scans")
    times = [float(s["time_s"]) for s in dataset["steps"]]
    project.set_voxel_size(float(dataset["voxel_size_um"]))
    project.set_interval(float(dataset["interval_s"]))
    project.set_scans(scans, times_s=times)
    project.set_roi(None)
    project.set_demo(
        {
            "folder": DEMO_DIR,
            "dataset": f"{DEMO_DIR}/dataset.json",
            "truth": [f"{DEMO_DIR}/{s['truth']}" for s in dataset["steps"]],
            "scribbles": f"{DEMO_DIR}/scribbles.tif",
            "label_step": int(dataset["label_step"]),
            "label_slices": [int(z) for z in dataset["label_slices"]],
            "seed": int(dataset["config"]["seed"]),
        }
    )
    progress(1.0, f"Demo experiment ready: {len(scans)} steps")
    return dataset


def create_demo_project(
    name: str = "demo",
    *,
    workspace: str | Path | None = None,
    config=None,
    if_missing: bool = False,
    on_progress: Progress | None = None,
):
    """Create a project called ``name`` holding the demo experiment.

    Parameters
    ----------
    if_missing : bool
        If the project already exists and has scans, open it instead of failing (used by the README's start
        command, so a second start does not regenerate anything).
    """
    from core.workflow.project import create_project, delete_project, open_project, project_exists

    if project_exists(name, workspace=workspace):
        if if_missing:
            project = open_project(name, workspace=workspace)
            if project.scans():
                return project
            generate_demo_into(project, config, on_progress=on_progress)
            return project
        raise ReactomoError(f"A project called '{name}' already exists; open it, or choose another name.")
    project = create_project(name, workspace=workspace)
    try:
        generate_demo_into(project, config, on_progress=on_progress)
    except BaseException:
        delete_project(name, workspace=workspace)
        raise
    return project


def step_histograms(
    volumes_or_paths: Sequence,
    *,
    bins: int = 256,
    max_voxels_per_step: int = 500_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Grey-value histograms of every step on one shared axis (see :func:`core.imaging.io.grey_histograms`).

    Accepts open :class:`core.imaging.io.Volume` objects or :class:`core.imaging.io.ScanInfo` records (opened and closed here).
    """
    from core.imaging.io import ScanInfo, grey_histograms, open_volume

    opened = []
    try:
        vols = []
        for v in volumes_or_paths:
            if isinstance(v, ScanInfo):
                vol = open_volume(v.path, kind=v.kind)
                opened.append(vol)
                vols.append(vol)
            else:
                vols.append(v)
        return grey_histograms(vols, bins=bins, max_voxels_per_step=max_voxels_per_step, seed=seed)
    finally:
        for vol in opened:
            vol.close()
