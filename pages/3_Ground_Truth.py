"""Ground truth: train the random forest on the brushed labels, inspect it, compare it with thresholds, accept it."""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

import ui
from core.charts import (
    dice_comparison_chart,
    feature_importance_chart,
    phase_fraction_chart,
    slice_figure,
    threshold_histogram,
    uncertainty_figure,
)
from core.labelling.features import FEATURE_GROUPS, FeatureConfig
from core.labelling.forest import ALL_SLICES, AUTO_SLICES, EXTRA_SLICES, TIME_CONTEXT, ForestConfig
from core.workflow.ground_truth import (
    accept_candidate,
    extra_slices_sentence,
    partial_volume_sentence,
    redraw_outdated,
    rings_sentence,
    staleness,
    held_out_forest,
    labelled_steps,
    load_accepted,
    load_candidate,
    most_uncertain_window,
    threshold_comparison,
    time_context_sentence,
    train_candidate,
)

ui.page_setup("Ground truth")
project = ui.require_project()
ui.sidebar_project(project)
ss = st.session_state

st.title("Ground truth")
st.caption("A random forest learns every phase from your brushed pixels (multi-scale intensity, neighbourhood and "
           "edge features, optionally gradient, structure and morphology) and labels each brushed slice completely, and more "
           "slices of the same step: that is the ground truth the U-Net learns from. The threshold baseline below is scored beside it, on pixels neither was made from.")
scans = project.scans()
if not scans:
    st.info("This project has no scans yet. Open them (or generate the demo) on the Data page first.")
    st.stop()
steps = labelled_steps(project)
if not steps:
    st.info("No slice has brushed labels yet. Brush a few pixels of every phase on a few slices first.")
    st.markdown('<a href="./label" target="_self">Go to the Label page</a>', unsafe_allow_html=True)
    st.stop()
times = project.times_s()
phases = project.phases()
vs = project.voxel_size_um()

@st.cache_data(max_entries=4, show_spinner="Training the forest again without each group of scribbles, to score it fairly")
def _held_out(project_name: str, created: str):
    """The candidate forest's held-out labels of its scribbles (cross-validation), cached on its creation time."""
    from core.workflow.project import open_project

    proj = open_project(project_name)
    return held_out_forest(proj, load_candidate(proj))


@st.cache_data(max_entries=8, show_spinner="Comparing with the threshold baseline")
def _compare(project_name: str, created: str, method: str, ranges: tuple | None) -> dict:
    """Threshold labels and Dice for the candidate, cached on its creation time (reruns cost nothing)."""
    from core.workflow.project import open_project

    proj = open_project(project_name)
    stored = load_candidate(proj)
    out = threshold_comparison(proj, stored, method=method, ranges=list(ranges) if ranges else None,
                               held_out=_held_out(project_name, created))
    with proj.open_step(stored.step) as vol:
        values = np.concatenate([np.asarray(vol.slice(0, k)).ravel() for k in stored.slices])
    rng = np.random.default_rng(0)
    out["sample"] = values if values.size <= 2_000_000 else rng.choice(values, 2_000_000, replace=False)
    return out


# ------------------------------------------------------------------------------------------------ training
EXTRA_CHOICES = {"Automatic (up to 3.1 Mpx)": AUTO_SLICES, "Every slice": ALL_SLICES, "Scribbled slices only": 0}
SIGMAS = [0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0]
fdef, rdef = FeatureConfig(), ForestConfig()
with st.expander("Random forest settings", expanded=load_candidate(project) is None, icon=":material/tune:"):
    with st.form("rf_settings", border=False, enter_to_submit=False):  # Enter never starts a long job
        c1, c2, c3 = st.columns(3)
        step = c1.selectbox("Labelled step", list(steps), key="gt_step",
                            format_func=lambda i: f"{scans[i].name} · t = {times[i] / 60:.1f} min · {len(steps[i])} slices")
        groups = c2.multiselect("Feature groups", list(FEATURE_GROUPS), default=list(fdef.groups), key="gt_groups")
        lo_s, hi_s = c3.select_slider("Scales σ (px)", SIGMAS, value=(min(fdef.sigmas), max(fdef.sigmas)), key="gt_sigmas",
                                      help="Gaussian scales of the features, in scan pixels.")
        c4, c5, c6 = st.columns(3)
        context_3d = c4.toggle("3D context (neighbouring slices)", value=fdef.context_3d, key="gt_3d",
                               help="Smooths across z too: much less noise on CT, a few slices more to read.")
        n_trees = c5.number_input("Trees", 1, 500, rdef.n_trees, key="gt_trees",
                                  help="Why 4: on the six tuning experiments of the accuracy benchmark, 16 trees gave "
                                       "+0.002 mean Dice against the known truth (0.863 against 0.860) for 1.75× the "
                                       "time, and 64 trees nothing more; the features and the edge-aware refinement "
                                       "do the work, and few trees keep retraining after a stroke interactive.")
        seed = c6.number_input("Seed", 0, 2**31 - 1, rdef.seed, key="gt_seed")
        time_context = c4.number_input(
            "Neighbouring time steps read (each side)", 0, 3, TIME_CONTEXT, key="gt_time_context",
            help="The forest also reads the same slices of this many steps before and after the labelled one (a thin "
                 "young lath is thicker a step later; rings and grain texture are the same at every step). Only "
                 "when the scans are aligned; the labelling says what was read. The same setting as `core run "
                 "--forest-time-context`.")
        extra_choice = c5.selectbox(
            "Slices labelled for the U-Net", list(EXTRA_CHOICES), index=list(EXTRA_CHOICES.values()).index(EXTRA_SLICES)
            if EXTRA_SLICES in EXTRA_CHOICES.values() else 0, key="gt_extra_slices",
            help="The forest also labels unscribbled slices of this step, spread over the stack, for the U-Net to "
                 "learn from (never validated on): more laths, orientations and noise than the scribbled slices "
                 "alone. Automatic takes as many as 3.1 Mpx hold (every slice of a 48 × 256 × 256 scan). Chosen on "
                 "the accuracy benchmark's tuning half: better on 10 of 12 runs. The same setting as `core run "
                 "--extra-slices`.")
        train = st.form_submit_button("Train random forest", type="primary", icon=":material/forest:")
if train:
    bar = st.progress(0.0, text="Training the random forest")
    with ui.user_errors():
        sigmas = tuple(s for s in SIGMAS if lo_s <= s <= hi_s)
        fcfg = FeatureConfig(sigmas=sigmas, groups=tuple(g for g in FEATURE_GROUPS if g in groups), context_3d=bool(context_3d))
        rcfg = ForestConfig(n_trees=int(n_trees), seed=int(seed))
        train_candidate(project, step=int(step), feature_config=fcfg, forest_config=rcfg,
                        on_progress=ui.progress_callback(bar), time_context=int(time_context),
                        extra_slices=EXTRA_CHOICES[extra_choice])
        ss["gt_flash"] = "Trained the random forest; its labelling is below."
        st.rerun()

if msg := ss.pop("gt_flash", None):
    st.success(msg, icon=":material/check_circle:")

cand = None
with ui.user_errors():
    cand = load_candidate(project)
if cand is None:
    st.info("Train the random forest to see its labelling of every brushed slice.")
    st.stop()
accepted = load_accepted(project)
is_accepted = accepted is not None and accepted.meta.get("created") == cand.meta.get("created")

m1, m2, m3, m4 = st.columns([1, 1, 1, 2], vertical_alignment="center")
m1.metric("Step", cand.step_name)
m2.metric("Slices labelled", len(cand.slices))
m3.metric("Training time", f"{cand.meta.get('seconds', {}).get('total', float('nan')):.1f} s")
stale = staleness(project, cand)
with m4:
    if stale:
        st.warning(stale + (" The accepted ground truth is this older labelling until then." if is_accepted else
                            " It cannot be accepted until then."), icon=":material/update:")
    elif is_accepted:
        st.success(f"This labelling ({len(cand.slices)} slice{'s' if len(cand.slices) != 1 else ''}) is the "
                   "project's ground truth.", icon=":material/verified:")
    elif st.button("Accept as the project's ground truth", type="primary", icon=":material/verified:"):
        with ui.user_errors():
            accept_candidate(project)
            ss["gt_flash"] = "Accepted: the U-Net will learn from this ground truth."
            st.rerun()

# ------------------------------------------------------------------------------------------------ inspect
st.subheader("Random-forest labelling")
if pv := partial_volume_sentence(cand, project.phases()):
    st.caption(pv)
if tc := time_context_sentence(cand, scans):
    st.caption(tc)
if more := extra_slices_sentence(cand):
    st.caption(more)
if rs := rings_sentence(cand, project):
    st.caption(rs)
if outdated := redraw_outdated(cand, project.phases()):
    st.info(outdated, icon=":material/update:")
mean_unc = {z: float(np.mean(cand.slice_uncertainty(z))) for z in cand.slices}
z = st.pills("Slice", list(cand.slices), default=cand.slices[0], key="gt_z",
             format_func=lambda k: f"z {k} · {mean_unc[k]:.2f}") or cand.slices[0]
st.caption("Next to each slice: its mean uncertainty (1 − max class probability; 0 = sure).")
opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="gt_opacity")
with ui.user_errors():
    image = ui.read_slice(scans[cand.step], 0, z)
    lo, hi, _, _ = ui.display_range(scans[cand.step])
    left, right = st.columns(2)
    left.plotly_chart(slice_figure(image, voxel_size_um=vs, window=(lo, hi), labels=cand.slice_labels(z), phases=phases,
                                   opacity=opacity, title=f"{cand.step_name} · z {z} · random forest", height=520),
                      width="stretch", key="gt_overlay")
    right.plotly_chart(uncertainty_figure(cand.slice_uncertainty(z), voxel_size_um=vs, height=520),
                       width="stretch", key="gt_uncertainty")

    unsure_z = max(mean_unc, key=mean_unc.get)
    win = 256 if max(image.shape) > 256 else max(image.shape)
    if st.button(f"Label more where it is unsure (z {unsure_z})", icon=":material/brush:"):
        y0, x0 = most_uncertain_window(cand.slice_uncertainty(unsure_z), window=win)
        ss["label_focus"] = {"step": cand.step, "z": unsure_z, "y0": y0, "x0": x0, "window": win}
        st.switch_page("pages/2_Label.py")

    f1, f2 = st.columns(2)
    fractions = {int(k): v for k, v in cand.meta.get("fractions", {}).items()}
    f1.plotly_chart(phase_fraction_chart(fractions, phases, title="Labelled pixels per phase"),
                    width="stretch", key="gt_fractions")
    imp = [(n, v) for n, v in cand.meta.get("importances", []) if v >= 0.0005]  # features the trees never used: left out
    if imp:
        f2.plotly_chart(feature_importance_chart([n for n, _ in imp], [v for _, v in imp], top=15),
                        width="stretch", key="gt_importance")

# ------------------------------------------------------------------------------------------------ baseline
st.subheader("Threshold baseline")
st.caption("One grey range per phase, the same for every pixel: multi-Otsu picks the cuts from the histogram, or set "
           "them yourself. Gypsum and bassanite overlap in grey value, so no cut separates them.")
method = st.radio("Method", ["otsu", "ranges"], horizontal=True, key="gt_thr_method",
                  format_func=lambda k: {"otsu": "Multi-Otsu", "ranges": "Manual grey ranges"}[k])
with ui.user_errors():
    ranges = None
    if method == "ranges":
        base = _compare(project.name, cand.meta["created"], "otsu", None)
        vmin = min(r["low"] for r in base["ranges"])
        vmax = max(r["high"] for r in base["ranges"])
        cols = st.columns(len(base["ranges"]))
        ranges = []
        whole = vmax - vmin >= 100  # grey values of integer scans (uint16: thousands): whole numbers, not "8258.00"
        fit = (lambda v: float(round(v))) if whole else float
        vmin, vmax = (math.floor(vmin), math.ceil(vmax)) if whole else (vmin, vmax)
        for col, r in zip(cols, base["ranges"]):
            p = phases.by_code(int(r["code"]))
            a, b = col.slider(p.name, float(vmin), float(vmax), (fit(r["low"]), fit(r["high"])),
                              step=1.0 if whole else None, format="%.0f" if whole else None,
                              key=f"gt_range_{p.code}")
            ranges.append((p.code, a, b))
    cmp = _compare(project.name, cand.meta["created"], method, tuple(ranges) if ranges else None)
    t1, t2 = st.columns(2)
    t1.plotly_chart(threshold_histogram(cmp["sample"], cmp["ranges"], phases), width="stretch", key="gt_thr_hist")
    i = cand.slices.index(z)
    t2.plotly_chart(slice_figure(image, voxel_size_um=vs, window=(lo, hi), labels=cmp["labels"][i], phases=phases,
                                 opacity=opacity, title=f"z {z} · threshold", height=420),
                    width="stretch", key="gt_thr_overlay")
    # judged against references neither method was made from: the demo's truth, and the held-out scribbles
    dice, parts = {}, []
    if "dice_truth" in cmp:
        dice |= {"random forest vs truth": cmp["dice_truth"]["random forest"],
                 "threshold vs truth": cmp["dice_truth"]["threshold"]}
        parts.append("against the demo's known truth")
    if "dice_held_out" in cmp:
        dice |= {"random forest (held out) vs scribbles": cmp["dice_held_out"]["random forest"],
                 "threshold vs scribbles": cmp["dice_held_out"]["threshold"]}
        parts.append("on the held-out scribbles")
    if not dice:  # nothing independent to score against: only how much the two agree
        dice = {"threshold vs random forest": cmp["dice_vs_forest"]}
        parts.append("of the threshold against the random forest (agreement, not quality)")
    title = "Dice on the labelled slices " + " and ".join(parts)
    st.plotly_chart(dice_comparison_chart(dice, phases, title=title), width="stretch", key="gt_dice")
    means = {k: np.nanmean([x for x in v.values() if x is not None]) for k, v in dice.items()}
    st.caption(" · ".join(f"{k}: mean Dice {v:.3f}" for k, v in means.items()))
    verdict = cmp["verdict"]
    if verdict["sentence"]:
        st.warning(verdict["sentence"], icon=":material/warning:")
    elif verdict["reference"]:
        st.caption(f"The forest scores at least as well as the threshold on every phase {verdict['reference']}.")
    held = _held_out(project.name, cand.meta["created"])
    notes = [held.describe()] + ([held.note] if held.note and held.by != "none" else [])
    if held.unjudged:
        notes.append(f"{', '.join(phases.by_code(c).name for c in held.unjudged)}: brushed in one group only, so the "
                     "held-out forest never saw it; not judged there.")
    if "dice_truth" in cmp:
        notes.append("The verdict uses the demo's known truth: every pixel of the labelled slices, edges included.")
    st.caption(" ".join(notes))
