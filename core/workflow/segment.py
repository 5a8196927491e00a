"""The Segment step for a project: every chosen step segmented with one model into ``segmentations/<name>/``.

One step, one name: ``pages/5_Segment.py`` (as a job in the worker), ``python -m core segment`` (on files) and this
module. The series machinery (local, in threads, or on a Dask cluster) is :mod:`core.segmentation.series`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.errors import ReactomoError
from core.segmentation.series import SeriesResult, StepOutcome, check_offered_scheduler, segment_series
from core.workflow.paths import segmentation_folder

__all__ = ["segment_project"]


def _temporal_default() -> bool:
    from core.segmentation.temporal import DEFAULT

    return DEFAULT


def segment_project(
    project,
    model_dir: str | os.PathLike,
    *,
    name: str,
    steps: Sequence[int] | None = None,
    inference: Any = None,
    postprocess: Any = "default",
    use_roi: bool = True,
    z_range: tuple[int, int] | None = None,
    scheduler: str | None = None,
    workers: int = 1,
    on_progress: Callable[[float, str], None] | None = None,
    on_step: Callable[[StepOutcome], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    cleaning_source: str | None = None,
    temporal: bool | None = None,
    match_volumes: bool | None = None,
) -> SeriesResult:
    """Segment a project's steps into ``<project>/segmentations/<name>/`` and record it in the manifest.

    The project's region of interest (when set and ``use_roi``) crops every scan. The manifest's
    ``segmentations[name]`` holds the folder, the model, the settings and the steps done; it is written when the
    run starts (status ``running``) and when it ends (``done``, ``failed`` or ``cancelled``), so a crash leaves a
    record whose folder tells which steps finished.

    ``scheduler`` is None (this process), ``"local"`` (a local Dask cluster) or one of the addresses the
    administrator offers (:func:`configured_schedulers`); any other address is refused, since Dask unpickles what a
    scheduler's workers send back and a hostile scheduler could run code in this process.

    ``temporal`` labels the steps together (:mod:`core.segmentation.temporal`; None = its default);
    ``match_volumes`` first matches each step's product volume to the network's expected volume (None = its default).
    """
    from core.errors import JobCancelled
    from core.workflow.project import sanitize_name

    check_offered_scheduler(scheduler)
    clean = sanitize_name(name)
    scans = project.scans()
    if not scans:
        raise ReactomoError("This project has no scans yet; add them on the Data page first.")
    paths = [project.scan_path(i) for i in range(len(scans))]
    region = None
    roi = project.roi() if use_roi else None
    if roi:
        z_range = z_range or tuple(roi["z"])
        region = (*roi["y"], *roi["x"])
    out_dir = segmentation_folder(project, clean)
    model_dir = Path(model_dir)

    def mark(status: str, result: SeriesResult | None = None) -> None:
        def fn(m: dict[str, Any]) -> None:
            rec = m["segmentations"].get(clean, {})
            rec.update({"name": clean, "path": str(out_dir), "model": str(model_dir.resolve()), "model_name": model_dir.name,
                        "status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            if result is not None:
                rec["steps_done"] = [o.step for o in result.done]
                rec["steps_failed"] = [o.step for o in result.failed]
            m["segmentations"][clean] = rec
        project.update(fn)

    mark("running")
    try:
        result = segment_series(model_dir, paths, out_dir, phases=project.phases(), times_s=project.times_s(),
                                voxel_size_um=project.voxel_size_um(), inference=inference, postprocess=postprocess,
                                z_range=z_range, region=region, steps=steps, scheduler=scheduler, workers=workers,
                                on_progress=on_progress, on_step=on_step, should_stop=should_stop,
                                extra={"project": project.name}, cleaning_source=cleaning_source,
                                temporal=_temporal_default() if temporal is None else bool(temporal),
                                match_volumes=match_volumes)
    except JobCancelled:
        mark("cancelled")
        raise
    except BaseException:
        mark("failed")
        raise
    mark("failed" if result.failed and not result.done else "done", result)
    return result
