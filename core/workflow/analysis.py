"""The Analysis step for a project: a segmentation's analysis written to ``analysis/<name>/`` and recorded.

One step, one name: ``pages/8_Analysis.py`` (as a job in the worker), ``python -m core analyze`` and this module. The
science (internal standard, pores, kinetics, report) is :mod:`core.analysis`.
"""

from __future__ import annotations

from typing import Any

from core.errors import ReactomoError
from core.workflow.paths import analysis_folder, segmentation_folder

__all__ = ["analyse_segmentation"]


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
