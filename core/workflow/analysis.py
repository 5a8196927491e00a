"""The Analysis step for a project: a segmentation's analysis written to ``analysis/<name>/`` and recorded.

One step, one name: ``pages/8_Analysis.py`` (as a job in the worker), ``python -m core analyze`` and this module. The
science (internal standard, pores, kinetics, report) is :mod:`core.analysis`.
"""

from __future__ import annotations

from typing import Any

from core.errors import ReactomoError
from core.workflow.paths import analysis_folder, segmentation_folder

__all__ = ["analyse_segmentation", "outdated"]


def analyse_segmentation(project, name: str, *, config=None, on_progress=None) -> dict[str, Any]:
    """Analyse the project's segmentation ``name`` into ``analysis/<name>`` and record it in the manifest.

    The one entry point of the Analysis step: the Analysis page's job (in the worker) and ``python -m core analyze
    --project P --name SEG`` both come here, so an analysis made from the CLI is in the project like one made on
    the page. Uses the project's phase table and reaction.

    Returns
    -------
    dict
        The result of :func:`core.analysis.results.analyze`.

    Raises
    ------
    ReactomoError
        When the project has no segmentation of that name, or the analysis cannot be made.
    """
    import time

    from core.analysis.results import AnalysisConfig, analyze

    segs = project.manifest.get("segmentations") or {}
    if name not in segs:
        known = ", ".join(sorted(segs)) or "none yet"
        raise ReactomoError(f"Project '{project.name}' has no segmentation called '{name}' (it has: {known}); "
                            "segment it first on the Segment page.")
    seg = segmentation_folder(project, name)
    out = analysis_folder(project, name)
    result = analyze(seg, out, config=config if config is not None else AnalysisConfig(), phases=project.phases(),
                     reaction=project.reaction(), on_progress=on_progress,
                     extra={"project": project.name, "segmentation_name": name, "conditions": project.conditions()})
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


def outdated(project, saved: dict[str, Any]) -> str | None:
    """One sentence when a saved analysis was computed with another voxel size or other step times than the project
    now has (changed on the Data page since), else None: its µm, mm³ and rates are then those of the old values."""
    summary = saved.get("summary") or {}
    said = []
    used = summary.get("voxel_size_um")
    now = project.voxel_size_um()
    if used and now and abs(float(used) - float(now)) > 1e-9 * max(abs(float(now)), 1.0):
        said.append(f"a voxel size of {float(used):g} µm (the project now says {float(now):g} µm)")
    times = project.times_s()
    moved = [int(r["step"]) for r in summary.get("molar_evolution") or []
             if r.get("time_s") is not None and 0 <= int(r["step"]) < len(times) and times[int(r["step"])] is not None
             and abs(float(r["time_s"]) - float(times[int(r["step"])])) > 1e-6]
    if moved:
        said.append(f"other step times (step{'s' if len(moved) > 1 else ''} {', '.join(map(str, moved[:5]))}"
                    f"{' ...' if len(moved) > 5 else ''} moved since)")
    if not said:
        return None
    return (f"These results were computed with {' and '.join(said)}; run the analysis again to bring them up to date "
            "(the sizes, volumes and rates below are those of the old values).")
