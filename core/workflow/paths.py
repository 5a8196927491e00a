"""Where a project's steps keep their files, and reading their results: the one place that knows.

Pages, the worker and the project-level entry points ask here for a step's folder and its result files instead of
building ``project.root / "segmentations" / name`` themselves, so the layout of a project lives in one module:

=======================================  ===================================================================
``scans/``                               uploaded scans (:func:`upload_folder`)
``segmentations/<name>/``                label TIFFs, ``segmentation.json``, ``phase_volumes.csv``
``analysis/<name>/``                     the analysis of segmentation ``<name>``: CSVs, ``summary.json``, report
``renders/<name>/t<k>-<key>/``          cached 3D views of step k of segmentation ``<name>`` (:func:`render_folder`)
``jobs/<id>/checkpoints/``               a training's checkpoints (:func:`training_checkpoints`)
``exports/``                             the project's ``.reactomo.zip`` archives (:func:`export_folder`)
=======================================  ===================================================================

The step entry points (:mod:`core.workflow.train`, :mod:`core.workflow.segment`, :mod:`core.workflow.analysis`, ...)
call these functions.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from core.errors import ReactomoError

__all__ = [
    "ANALYSIS_FILES",
    "segmentation_folder",
    "segmentation_record",
    "segmentation_voxel_size",
    "phase_volume_rows",
    "phase_volumes_csv",
    "analysis_folder",
    "saved_analysis",
    "analysis_table",
    "segmentation_label_files",
    "training_checkpoints",
    "upload_folder",
    "render_folder",
    "segmentation_stamp",
    "export_folder",
]

#: The tables an analysis writes, in the order the page shows them.
ANALYSIS_FILES = ("molar_evolution.csv", "pore_check.csv", "inert.csv", "pore_sizes.csv", "pore_size_distribution.csv",
                  "growth.csv")


def _name(name: str, what: str = "Segmentation") -> str:
    from core.workflow.project import sanitize_name

    try:
        return sanitize_name(name)
    except ReactomoError:
        raise ReactomoError(f"{what} name {name!r} is not allowed; use letters, digits, '-', '_' and '.' (up to 64 "
                            "characters, not starting with '.').") from None


def segmentation_folder(project, name: str) -> Path:
    """The folder of segmentation ``name``: the one its manifest record names, else ``segmentations/<name>``."""
    rec = (project.manifest.get("segmentations") or {}).get(name) or {}
    if rec.get("path"):
        return Path(rec["path"])
    return Path(project.root) / "segmentations" / _name(name)


def segmentation_stamp(project, name: str) -> tuple[int, int]:
    """When segmentation ``name``'s record and the project's manifest last changed (nanoseconds; 0 when missing):
    a cache key for anything computed from them, so a re-run or a new reference is never served stale."""
    from core.workflow.project import MANIFEST
    from core.segmentation.series import RECORD

    out = []
    for f in (segmentation_folder(project, name) / RECORD, Path(project.root) / MANIFEST):
        try:
            out.append(f.stat().st_mtime_ns)
        except OSError:
            out.append(0)
    return out[0], out[1]


def segmentation_record(project, name: str) -> dict[str, Any] | None:
    """The segmentation's record (``segmentation.json``), or None while it has none."""
    from core.segmentation.series import read_series_record

    return read_series_record(segmentation_folder(project, name))


def segmentation_voxel_size(project, name: str) -> float:
    """The voxel size (µm) segmentation ``name`` was made with: its record's, else the project's. Views of a
    segmentation (the Segment page's slice, the 3D meshes, a box given in µm) use this one, not a project voxel size
    changed since."""
    rec = segmentation_record(project, name) or {}
    return float(rec.get("voxel_size_um") or project.voxel_size_um())


def _number(text: str) -> Any:
    if text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def phase_volume_rows(project=None, name: str | None = None, *, folder: str | Path | None = None) -> list[dict[str, Any]]:
    """The rows of a segmentation's ``phase_volumes.csv`` with numbers as numbers (empty cells None); [] while the
    file does not exist yet or cannot be read. Give ``project`` and ``name``, or the ``folder``."""
    data = phase_volumes_csv(project, name, folder=folder)
    if not data:
        return []
    try:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(data.decode("utf-8")))]
    except (UnicodeDecodeError, csv.Error):
        return []


def phase_volumes_csv(project=None, name: str | None = None, *, folder: str | Path | None = None) -> bytes | None:
    """The bytes of a segmentation's ``phase_volumes.csv`` (for a download), or None when there is none."""
    from core.segmentation.series import VOLUMES

    if folder is None:
        if project is None or name is None:
            raise ReactomoError("Give a project and a segmentation name, or the segmentation's folder.")
        folder = segmentation_folder(project, name)
    try:
        return (Path(folder) / VOLUMES).read_bytes()
    except OSError:
        return None


def segmentation_label_files(project, name: str) -> list[Path]:
    """The label TIFFs of segmentation ``name`` in step order ([] when there are none)."""
    folder = segmentation_folder(project, name)
    try:
        return sorted(p for p in folder.glob("*.tif") if not p.name.startswith("."))
    except OSError:
        return []


def analysis_folder(project, name: str) -> Path:
    """Where the analysis of segmentation ``name`` is written: ``analysis/<name>``."""
    return Path(project.root) / "analysis" / _name(name)


def saved_analysis(project, name: str) -> dict[str, Any] | None:
    """The saved analysis of segmentation ``name`` (see :func:`core.analysis.results.load_result`), or None."""
    from core.analysis.results import load_result

    return load_result(analysis_folder(project, name))


def analysis_table(project, name: str, filename: str) -> bytes | None:
    """One table of a saved analysis (a name from :data:`ANALYSIS_FILES`) as CSV bytes, or None when missing."""
    if filename not in ANALYSIS_FILES:
        raise ReactomoError(f"{filename!r} is not a table of an analysis; use one of {', '.join(ANALYSIS_FILES)}.")
    try:
        return (analysis_folder(project, name) / filename).read_bytes()
    except OSError:
        return None


def training_checkpoints(project, job_id: str) -> Path:
    """The checkpoint folder of training job ``job_id`` (``jobs/<id>/checkpoints``)."""
    from core.workflow.jobs import _job_folder

    return _job_folder(project.root, job_id) / "checkpoints"


def render_folder(project, name: str) -> Path:
    """Where the 3D views of segmentation ``name`` are cached: ``renders/<name>/`` (one folder per step and settings)."""
    return Path(project.root) / "renders" / _name(name)


def upload_folder(project) -> Path:
    """Where uploaded scans are written (``scans/``)."""
    return Path(project.root) / "scans"


def export_folder(project) -> Path:
    """Where the home page's exports of the project are written: ``exports/`` (never itself exported)."""
    return Path(project.root) / "exports"
