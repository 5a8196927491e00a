"""Where a project's steps keep their files, and reading their results: the one place that knows.

Pages, the worker and the project-level entry points ask here for a step's folder and its result files instead of
building ``project.root / "segmentations" / name`` themselves, so the layout of a project lives in one module:

=======================================  ===================================================================
``scans/``                               uploaded scans (:func:`upload_folder`)
``segmentations/<name>/``                label TIFFs, ``segmentation.json``, ``phase_volumes.csv``
``analysis/<name>/``                     the analysis of segmentation ``<name>``: CSVs, ``summary.json``, report
``jobs/<id>/checkpoints/``               a training's checkpoints (:func:`training_checkpoints`)
=======================================  ===================================================================

This is the first part of issue 12's workflow layer; the step entry points (segment, analyse, train) still live in
their modules and call these functions.
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
    "phase_volume_rows",
    "phase_volumes_csv",
    "analysis_folder",
    "saved_analysis",
    "analysis_table",
    "segmentation_label_files",
    "training_checkpoints",
    "upload_folder",
    "analyse_segmentation",
    "segmentation_stamp",
]

#: The tables an analysis writes, in the order the page shows them.
ANALYSIS_FILES = ("molar_evolution.csv", "pore_check.csv", "inert.csv", "pore_sizes.csv", "pore_size_distribution.csv",
                  "growth.csv")


def _name(name: str, what: str = "Segmentation") -> str:
    from core.project import sanitize_name

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
    from core.project import MANIFEST
    from core.series import RECORD

    out = []
    for f in (segmentation_folder(project, name) / RECORD, Path(project.root) / MANIFEST):
        try:
            out.append(f.stat().st_mtime_ns)
        except OSError:
            out.append(0)
    return out[0], out[1]


def segmentation_record(project, name: str) -> dict[str, Any] | None:
    """The segmentation's record (``segmentation.json``), or None while it has none."""
    from core.series import read_series_record

    return read_series_record(segmentation_folder(project, name))


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
    from core.series import VOLUMES

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
    """The saved analysis of segmentation ``name`` (see :func:`core.analysis.load_result`), or None."""
    from core.analysis import load_result

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
    from core.jobs import _job_folder

    return _job_folder(project.root, job_id) / "checkpoints"


def upload_folder(project) -> Path:
    """Where uploaded scans are written (``scans/``)."""
    return Path(project.root) / "scans"


def analyse_segmentation(project, name: str, *, config=None, on_progress=None) -> dict[str, Any]:
    """Analyse the project's segmentation ``name`` into ``analysis/<name>`` and record it in the manifest.

    The one entry point of the Analysis step: the Analysis page's job (in the worker) and ``python -m core analyze
    --project P --name SEG`` both come here, so an analysis made from the CLI is in the project like one made on
    the page. Uses the project's phase table and reaction.

    Returns
    -------
    dict
        The result of :func:`core.analysis.analyze`.

    Raises
    ------
    ReactomoError
        When the project has no segmentation of that name, or the analysis cannot be made.
    """
    import time

    from core.analysis import AnalysisConfig, analyze

    segs = project.manifest.get("segmentations") or {}
    if name not in segs:
        known = ", ".join(sorted(segs)) or "none yet"
        raise ReactomoError(f"Project '{project.name}' has no segmentation called '{name}' (it has: {known}); "
                            "segment it first on the Segment page.")
    seg = segmentation_folder(project, name)
    out = analysis_folder(project, name)
    result = analyze(seg, out, config=config if config is not None else AnalysisConfig(), phases=project.phases(),
                     reaction=project.reaction(), on_progress=on_progress,
                     extra={"project": project.name, "segmentation_name": name})
    v = result["summary"]["verdict"]
    iv = v.get("internal_standard") or {}

    def record(m: dict) -> None:
        m.setdefault("analysis", {})[name] = {
            "name": name, "path": str(out), "segmentation": str(seg),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "verdict_passed": v.get("passed"),
            "failed_checks": v.get("failed") or [], "all_inside": iv.get("all_inside"),
            "max_abs_deviation_pct": iv.get("max_abs_deviation_pct")}

    project.update(record)
    return result
