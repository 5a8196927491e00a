"""Evaluate: score the project's segmentations against a reference, per phase and per step; compare them side by side."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

import ui
from core.workflow.evaluate import comparison_rows, coverage_note, evaluate_segmentation, references, report_csv
from core.workflow.evaluate import training_overlap
from core.segmentation.metrics import METRICS, pool_reports
from core.segmentation.seg_charts import confusion_heatmap, dice_per_step_chart
from core.workflow.paths import segmentation_record, segmentation_stamp

DASH = "–"
LABELS = {"accuracy": "Accuracy", "recall": "Recall", "specificity": "Specificity", "precision": "Precision",
          "dice": "Dice", "iou": "IoU", "auc": "AUC", "volumetric_similarity": "Volumetric similarity", "kappa": "Kappa"}


def _fmt(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return DASH if math.isnan(f) else f"{f:.3f}"


def _has_nan(rows: list[dict]) -> bool:
    return any(isinstance(v, float) and math.isnan(v) for r in rows for v in r.values())


@st.cache_data(max_entries=32, show_spinner="Scoring the segmentation against the reference")
def _evaluate(project_name: str, name: str, reference: str, stamp: tuple):
    """``{step: MetricsReport}``, cached on the segmentation record's and the manifest's time (a re-run re-scores)."""
    from core.workflow.project import open_project

    return evaluate_segmentation(open_project(project_name), name, reference=reference)


ui.page_setup("Evaluate")
project = ui.require_project()
ui.sidebar_project(project)

st.title("Evaluate")
st.caption("Every segmented step is scored against a reference, voxel by voxel: the ground-truth slices you accepted, "
           "or on the demo experiment its known truth. Voxels without a reference label are not scored.")

segs = {n: s for n, s in (project.manifest.get("segmentations") or {}).items()
        if any(x.get("status") == "done" for x in ((segmentation_record(project, n) or {}).get("steps") or []))}
if not segs:
    st.info("This project has no finished segmentation yet. Segment the time steps on the Segment page first.")
    st.markdown('<a href="./segment" target="_self">Go to the Segment page</a>', unsafe_allow_html=True)
    st.stop()
refs = references(project)
if not refs:
    st.info("This project has no reference to score against: accept a ground truth on the Ground truth page first.")
    st.markdown('<a href="./ground-truth" target="_self">Go to the Ground truth page</a>', unsafe_allow_html=True)
    st.stop()

phases = project.phases()
scans = project.scans()
times = project.times_s()

c1, c2 = st.columns([3, 2])
# a segmentation still running is offered (its finished steps can be scored) but not chosen for the user: its label
# step may not be done yet, and a half series is not what a first look should score
finished = [n for n in segs if segs[n].get("status") not in ("running", "live")]
chosen = c1.multiselect("Segmentations", list(segs), default=(finished or list(segs))[-3:], key="ev_segs",
                        format_func=lambda n: f"{n} · model {segs[n].get('model_name', '?')}"
                                              + (" (still running)" if n not in finished else ""))
ref_keys = list(refs)
reference = c2.radio("Reference", ref_keys, index=ref_keys.index("demo truth") if "demo truth" in refs else 0,
                     key="ev_ref", horizontal=True, captions=[refs[k] for k in ref_keys])
if not chosen:
    st.info("Choose at least one segmentation to score.")
    st.stop()

reports: dict[str, dict] = {}
for name in chosen:
    with ui.user_errors(prefix=f"{name}: "):
        reports[name] = _evaluate(project.name, name, reference, segmentation_stamp(project, name))
if not reports:
    st.stop()
for name in reports:
    if note := coverage_note(project, name):
        st.info(note, icon=":material/crop:")
if reference == "ground truth":
    for name in reports:
        if note := training_overlap(project, name):
            st.warning(note, icon=":material/school:")

# ------------------------------------------------------------------------------------------------ one view, one segmentation
all_steps = sorted({s for r in reports.values() for s in r})
common = [s for s in all_steps if all(s in r for r in reports.values())] or all_steps
POOLED = "pooled"


def _step_label(i: int) -> str:
    return f"{scans[i].name} · {times[i] / 60:.1f} min" if i < len(scans) else f"step {i}"


def _view_label(v) -> str:
    return f"all {len(common)} shared steps (pooled)" if v == POOLED else _step_label(v)


# pooled over every shared step is the default view: one step alone can lack a phase (bassanite at t = 0)
views = ([POOLED] if len(common) > 1 else []) + common
if POOLED in views and not st.session_state.get("ev_pooled_offered"):
    st.session_state["ev_step"] = POOLED  # pooling just became possible (e.g. another choice of segmentations)
st.session_state["ev_pooled_offered"] = POOLED in views
c1, c2 = st.columns([2, 3])
view = c1.selectbox("Scored over", views, key="ev_step", format_func=_view_label,
                    help="Pooled: the voxels of every step the chosen segmentations share are counted together, so "
                         "each step weighs by its voxels and a phase absent at some steps is scored over the others. "
                         "Or one step alone.")


def _at_view(r: dict):
    """The report of one segmentation for the chosen view (None when it lacks the view's steps)."""
    if view == POOLED:
        have = [r[s] for s in common if s in r]
        return pool_reports(have) if have else None
    return r.get(view)


at_view = {n: rep for n, rep in ((n, _at_view(r)) for n, r in reports.items()) if rep is not None}
detail = c2.selectbox("Segmentation shown in detail", list(at_view), key="ev_detail")
report = at_view[detail]
where = (f"over all {len(common)} shared steps pooled ({', '.join(str(s) for s in common)})" if view == POOLED
         else f"on {_step_label(view)}")

st.subheader(f"Metrics of '{detail}' {'pooled over all shared steps' if view == POOLED else 'on ' + _step_label(view)}")
rows = report.rows()
table = pd.DataFrame([{"Phase": r["phase"] + (" (absent from the reference)" if r["code"] not in (None, *report.averaged) else ""),
                       **{LABELS[m]: _fmt(r[m]) for m in METRICS}} for r in rows])
st.dataframe(table, hide_index=True, width="stretch", key="ev_metrics")
notes = [report.average_note()]
if _has_nan(rows):
    notes.append(f"{DASH} : undefined (e.g. the recall of a phase absent from the reference, or every score but "
                 "accuracy of a phase absent from both the reference and the segmentation).")
st.caption(" ".join(notes))
st.download_button("Download metrics (CSV)", report_csv(rows),  # under the note: in a column beside it, "Do…"
                   file_name=f"{detail}_{'pooled' if view == POOLED else _step_label(view).split(' ')[0]}_metrics.csv",
                   mime="text/csv", icon=":material/download:", key="ev_metrics_csv")
# one above the other: side by side, a narrow window (900 px with the sidebar) left the matrix's cells too small to read
st.plotly_chart(confusion_heatmap(report.confusion, report.names,
                                  title="Confusion matrix (counts, % of each reference row)",
                                  reference="known truth" if reference == "demo truth" else "ground truth (forest)"),
                width="stretch", key="ev_confusion")
if reference == "demo truth":
    series = {detail: {s: {c: rep.per_phase[c]["dice"] for c in rep.codes} for s, rep in reports[detail].items()}}
    st.plotly_chart(dice_per_step_chart(series, phases, times, title=f"Dice per step of '{detail}' against the known truth"),
                    width="stretch", key="ev_dice_steps")
    per_step = [{"segmentation": n, "step": s, "time_min": round(times[s] / 60.0, 3),
                 **{p.name: r[s].per_phase[p.code]["dice"] for p in phases}, "average": r[s].average["dice"]}
                for n, r in reports.items() for s in sorted(r)]
    st.download_button("Download Dice per step (CSV)", report_csv(per_step), file_name="dice_per_step.csv",
                       mime="text/csv", icon=":material/download:", key="ev_steps_csv",
                       help="Every chosen segmentation, every step, Dice per phase and averaged.")
else:
    st.caption("Dice over all steps needs a reference on every step: the demo experiment's known truth.")

# ------------------------------------------------------------------------------------------------ comparison
st.subheader("Segmentations side by side")
mc1, mc2 = st.columns([1, 3], vertical_alignment="bottom")
metric = mc1.selectbox("Metric", list(METRICS), index=list(METRICS).index("dice"), key="ev_metric", format_func=LABELS.get)
mc2.caption(f"Scored {where} (the view chosen above).")
cmp = comparison_rows(at_view, metric=metric)
cmp_table = pd.DataFrame([{("Segmentation" if k == "model" else k): (_fmt(v) if k != "model" else v) for k, v in r.items()}
                          for r in cmp])
cmp_table.insert(1, "Model", [segs[n].get("model_name", "?") for n in at_view])
st.dataframe(cmp_table, hide_index=True, width="stretch", key="ev_compare")
st.caption(f"{LABELS[metric]} per phase and averaged, {where}, against the {reference}. {report.average_note()}"
           + (f" {DASH} : undefined for that phase." if _has_nan(cmp) else ""))
st.download_button("Download comparison (CSV)", report_csv(cmp),
                   file_name=f"comparison_{metric}_{'pooled' if view == POOLED else 'step'}.csv", mime="text/csv",
                   icon=":material/download:", key="ev_compare_csv")
