"""Segment: a trained U-Net labels every time step in the background; quality check of any segmentation."""

from __future__ import annotations

import math
import re
from datetime import datetime

import pandas as pd
import streamlit as st

import ui
from core.network.bundle import list_bundles
from core.charts import slice_figure
from core.errors import ReactomoError
from core.workflow.jobs import list_jobs, read_job, request_cancel
from core.segmentation.postprocess import PostprocessConfig, cleaning_for
from core.segmentation.seg_charts import cleaning_chart, fraction_over_time
from core.network.inference import InferenceConfig
from core.segmentation.temporal import DEFAULT as TEMPORAL_DEFAULT
from core.segmentation.temporal import MATCH_VOLUMES as MATCH_DEFAULT
from core.segmentation.temporal import describe as describe_steps
from core.workflow.worker import submit_job
from core.workflow.paths import phase_volume_rows, phase_volumes_csv, segmentation_record, segmentation_voxel_size

KIND = "segment"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SCHEDULERS = {"process": "In the worker, one step after another", "local": "Local cluster (Dask) with N workers",
              "address": "A Dask cluster the administrator offers"}








def _mean_dice(b) -> float | None:
    d = [v for v in (b.metrics.get("val_dice") or {}).values() if v is not None]
    return sum(d) / len(d) if d else None


def _step_table(record: dict | None, steps: list[int]) -> pd.DataFrame:
    """Status of every chosen step from the segmentation's record (pending where it has none yet)."""
    by_step = {int(s["step"]): s for s in (record or {}).get("steps", [])}
    rows = []
    for i in steps:
        s = by_step.get(i, {})
        status = s.get("status", "pending")
        if status == "done":
            c = s.get("cleaning") or {}
            detail = f"{s.get('seconds', 0):.1f} s" + (f" · cleaning changed {c['changed']:,} voxels" if c.get("changed") is not None else "")
        elif status == "failed":
            detail = s.get("error") or "failed"
        else:
            detail = ""
        rows.append({"Step": i, "Scan": scans[i].name, "Time (min)": times[i] / 60.0, "Status": status, "Detail": detail})
    return pd.DataFrame(rows)


def _show_steps(record: dict | None, steps: list[int], key: str) -> None:
    st.dataframe(_step_table(record, steps), hide_index=True, width="stretch", key=key, column_config={
        "Time (min)": st.column_config.NumberColumn(format="%.1f"),
        "Detail": st.column_config.TextColumn(width="large")})


def _steps(n: int) -> str:
    return f"{n} step{'s' if n != 1 else ''}"


def _status_sentence(job) -> tuple[str, str]:
    name = job.params.get("name", "?")
    res = job.result or {}
    if job.status == "done":
        done, failed = res.get("done", []), res.get("failed", [])
        if failed and not done:
            return "error", f"Segmentation '{name}' failed on every step; the table below gives each step's reason."
        tail = f"; {_steps(len(failed))} failed, see the table below" if failed else ""
        return ("warning" if failed else "success"), f"Segmentation '{name}' finished: {_steps(len(done))} segmented in {ui.fmt_duration(res.get('seconds'))}{tail}."
    if job.status == "cancelled":
        return "warning", f"Segmentation '{name}' was stopped; the steps done so far are kept."
    if job.status == "interrupted":
        return "warning", f"Segmentation '{name}' was interrupted ({ui.plain(job.error or 'the server stopped')}); start it again with the same name to resume."
    return "error", f"Segmentation '{name}' failed: {ui.plain(job.error or 'unknown error')}"


ICONS = {"success": ":material/check_circle:", "warning": ":material/pause_circle:", "error": ":material/error:"}

ui.page_setup("Segment")
project = ui.require_project()
ui.sidebar_project(project)
ss = st.session_state

st.title("Segment")
st.caption("A trained U-Net labels every time step, slab by slab; then the cleaning the model carries (small islands "
           "and the false bassanite rim around celestite, chosen from its ground truth when it was trained) is applied. "
           "Segmenting runs in the background: you can leave this page or reload it, the run goes on.")
scans = project.scans()
if not scans:
    st.info("This project has no scans yet. Open them (or generate the demo) on the Data page first.")
    st.markdown('<a href="./data" target="_self">Go to the Data page</a>', unsafe_allow_html=True)
    st.stop()
phases = project.phases()
times = project.times_s()

if msg := ss.pop("seg_flash", None):
    st.success(msg, icon=":material/check_circle:")

jobs = []
with ui.user_errors():
    jobs = list_jobs(project.root, kind=KIND)
latest = jobs[0] if jobs else None
active = latest is not None and latest.is_active


def _job_steps(job) -> list[int]:
    chosen = job.params.get("steps")
    return list(chosen) if chosen else list(range(len(scans)))


# ------------------------------------------------------------------------------------------------ live run
@st.fragment(run_every=1.5)
def live_run(job_id: str) -> None:
    job = read_job(project.root, job_id)
    if not job.is_active:
        st.rerun()  # the whole page switches to the final state
    name = job.params.get("name", "?")
    record = segmentation_record(project, name)
    steps = _job_steps(job)
    n_done = sum(1 for s in (record or {}).get("steps", []) if s.get("step") in steps and s.get("status") in ("done", "failed"))
    st.subheader("Segmentation in progress")
    m1, m2, m3, m4 = st.columns([2, 1, 1, 1], vertical_alignment="center")
    m1.markdown(f"**{name}** · model `{job.params.get('model_name', '?')}` · started "
                f"{(job.started or job.created or '')[:19].replace('T', ' ')} UTC")
    m2.metric("Steps finished", f"{n_done} / {len(steps)}")
    m3.metric("Time left", ui.fmt_duration(job.eta_s) if job.status == "running" else "waiting")
    with m4:
        if st.button("Stop", icon=":material/stop_circle:", key="seg_stop", width="stretch",
                     help="Stops after the current slab; the steps already done are kept."):
            with ui.user_errors():
                request_cancel(project.root, job_id)
                st.toast("Stopping after the current slab.", icon=":material/stop_circle:")
    st.progress(min(max(float(job.progress), 0.0), 1.0), text=job.message or "starting")
    left, right = st.columns([2, 3])
    with left:
        _show_steps(record, steps, "seg_live_steps")
    rows = phase_volume_rows(project, name)
    if rows:
        right.plotly_chart(fraction_over_time(rows, phases, title=f"Phase volume fractions of '{name}' so far"),
                           width="stretch", key="seg_live_fractions")
    else:
        right.caption("The phase volume fractions appear when the first step is done.")


if active:
    live_run(latest.id)
elif latest is not None:
    st.subheader("Last run")
    kind, sentence = _status_sentence(latest)
    getattr(st, kind)(sentence, icon=ICONS[kind])
    with st.expander("Steps of the last run", expanded=kind != "success", icon=":material/list:"):
        _show_steps(segmentation_record(project, latest.params.get("name", "?")),
                    _job_steps(latest), "seg_last_steps")

# ------------------------------------------------------------------------------------------------ settings
bundles = []
with ui.user_errors():
    bundles = list_bundles(ui.models_root())
with st.expander("New segmentation", expanded=not active and not project.manifest.get("segmentations"),
                 icon=":material/tune:"):
    if not bundles:
        st.info(f"There is no model in the registry (`{ui.models_root()}`) yet. Train one on the Train page first.")
        st.markdown('<a href="./train" target="_self">Go to the Train page</a>', unsafe_allow_html=True)
    else:
        names = [b.name for b in bundles]
        # the model trained last in this project when it is in the registry (one whose training ran to its end before
        # one the user stopped), else the registry's first
        mine = [str(r.get("name")) for r in project.manifest.get("models") or [] if r.get("name") in names]
        stopped = {x.name for x in bundles if x.metrics.get("cancelled")}
        start_with = ([m for m in mine if m not in stopped] or mine)[-1:]
        model = st.selectbox("Model", names, index=names.index(start_with[0]) if start_with else 0, key="seg_model",
                             help=f"Models of the registry in `{ui.models_root()}`; the one trained last in this "
                                  "project (whose training ran to its end) is chosen to start with.")
        b = next(x for x in bundles if x.name == model)
        if b.metrics.get("cancelled"):
            asked = b.metrics.get("networks_asked")
            st.warning(f"The training of '{b.name}' was stopped by hand after {b.metrics.get('epochs', '?')} epochs"
                       + (f", with {b.members} of the {asked} networks asked for" if asked else "")
                       + "; it may be under-trained. Segmenting with it is allowed.", icon=":material/warning:")
        dice = _mean_dice(b)
        st.caption(f":material/deployed_code: **{b.name}** · created {ui.fmt_date(b.created)} UTC · phases: {', '.join(b.phases)}"
                   + (f" · mean validation Dice {dice:.3f}" if dice is not None else "")
                   + (f" · {b.metrics['epochs']} epochs" if b.metrics.get("epochs") else "")
                   + (f" · {b.members} networks averaged (each scan is read by all {b.members}: about "
                      f"{b.members}× the time of one)" if b.members > 1 else ""))
        with ui.user_errors():
            from core.network.train import quality_warning

            if not b.metrics.get("val_dice"):
                st.warning("This model carries no validation Dice, so its quality is unknown; check its labels before "
                           "trusting the volumes.", icon=":material/warning:")
            elif poor := quality_warning(b.metrics["val_dice"]):  # never segment with a poor model unawares
                st.warning(f"{poor} Segmenting with it is allowed, but check its labels before trusting the volumes.",
                           icon=":material/warning:")
        if b.rings != project.rings():  # the model reads scans as it was trained; say where the project differs
            st.info(f"'{b.name}' was trained on scans with their ring artefacts "
                    f"{'removed' if b.rings == 'remove' else 'kept'} and reads them so, while the project is set to "
                    f"{'remove' if project.rings() == 'remove' else 'keep'} them (Data page). "
                    + ("A ring the model never learned to ignore can be labelled as a phase (a ring arc as the product "
                       "before the reaction): train a model on this project to read the scans as it is set."
                       if b.rings == "keep" else
                       "The model subtracts the rings itself before reading each scan, so its labels do not depend on "
                       "the project's setting; the forest and the models you train here read the scans as the project "
                       "is set."), icon=":material/blur_circular:")
        if tuple(b.phases) != tuple(phases.names):
            st.warning(f"This model was trained for the phases {', '.join(b.phases)}, but the project has "
                       f"{', '.join(phases.names)}; it will be refused.", icon=":material/warning:")
        # the default name follows the chosen model (set before the text box is drawn)
        if ss.get("seg_name_model") != model or "seg_name" not in ss:
            base, taken, i = f"{model}-{datetime.now():%Y%m%d}", set(project.manifest.get("segmentations") or {}), 2
            default = base
            while default in taken:
                default, i = f"{base}-{i}", i + 1
            ss["seg_name"] = default
            ss["seg_name_model"] = model

        idef = InferenceConfig()
        # the cleaning this model carries (chosen when it was trained, from its ground truth alone), else the study's
        try:
            pdef, clean_why = cleaning_for("auto", phases, {"cleaning": b.cleaning})
        except ReactomoError as exc:  # a stored cleaning that does not fit this project's phases: the study's instead
            pdef, clean_why = cleaning_for("study", phases)
            st.warning(f"{exc} The study's cleaning is filled in below instead.", icon=":material/warning:")
        # the cleaning inputs follow the chosen model; widget values do not survive a page switch, so refill then too
        if ss.get("seg_clean_model") != model or "seg_clean" not in ss:
            ss["seg_clean"], ss["seg_conn"], ss["seg_rim"] = pdef.enabled, pdef.connectivity, int(pdef.rim_px)
            for p in phases:
                ss[f"seg_min_{p.code}"] = int(pdef.min_sizes.get(p.code, 0))
            ss["seg_clean_model"] = model
        depth = scans[0].shape[0]
        roi = project.roi()
        # outside the form, so that the z-range slider follows it at once
        some_z = st.checkbox("Only some slices (z range)", value=False, key="seg_some_z",
                             help="Segment a z range of every scan instead of the whole scan.")
        with st.form("seg_settings", border=False, enter_to_submit=False):  # Enter never starts a long job
            steps = st.multiselect("Steps", list(range(len(scans))), default=list(range(len(scans))), key="seg_steps",
                                   format_func=lambda i: f"{scans[i].name} · {times[i] / 60:.1f} min",
                                   help="All steps by default; remove the ones to skip.")
            name = st.text_input("Segmentation name", key="seg_name", max_chars=64,
                                 help="Letters, digits, '-', '_' and '.'. The same name again resumes a stopped run.")
            c1, c2 = st.columns([2, 5])
            use_roi = c1.checkbox("Use the project's region of interest", value=roi is not None, disabled=roi is None,
                                  key="seg_use_roi",
                                  help="Crop every scan to the region set on the Data page." if roi else "No region of interest is set (Data page).")
            z0, z1 = c2.slider("z range (slices, end excluded)", 0, max(depth, 1), (0, max(depth, 1)), key="seg_z",
                               disabled=not some_z, help=None if some_z else "Tick \"Only some slices\" above first.")

            with st.expander("Inference settings", icon=":material/memory:"):
                c1, c2, c3, c4 = st.columns(4)
                tile = c1.number_input("Tile (px)", 16, 4096, idef.tile, step=16, key="seg_tile",
                                       help="Side of the square tiles pushed through the network; a tile as large as the slice is fastest on a CPU.")
                overlap = c2.slider("Overlap", 0.0, 0.75, float(idef.overlap), 0.05, key="seg_overlap",
                                    help="Fraction of the tile side shared by neighbouring tiles (Gaussian blending).")
                batch = c3.number_input("Batch (tiles per pass)", 1, 1024, idef.batch_size, key="seg_batch")
                z_sigma = c4.number_input("Averaged over slices (σ)", 0.0, 3.0, float(idef.z_sigma), 0.1, key="seg_zsigma",
                                          help="Each slice's phase probabilities are averaged with its neighbours' (a "
                                               "Gaussian of this σ in slices) before labelling: CT noise is independent "
                                               "from slice to slice, the rock is not. 0 labels every slice on its own; "
                                               "0.7 (the default) was chosen on the accuracy benchmark's tuning half.")
                together = st.checkbox("Label the steps together", value=TEMPORAL_DEFAULT, key="seg_temporal",
                                       help="Once every step is segmented, each voxel's labels follow its most probable "
                                            "history among those the reaction allows (the reactant may become the "
                                            "product or pore, nothing turns back), from the network's probabilities "
                                            "at every step. Needs aligned scans and all steps in one run; otherwise "
                                            "the steps stay labelled one by one and the record says why.")
                match = st.checkbox("Match each step's product to the network's expected volume", value=MATCH_DEFAULT,
                                    key="seg_match",
                                    help="With the steps labelled together: each step's split between the reactant "
                                         "and the product is first set to the network's own expected split (its "
                                         "probabilities summed over the step). The most probable class of each voxel "
                                         "gives less of a scarce phase than that sum: the thin laths of an early step, "
                                         "the last reactant of a late one. Uses no truth and never the internal "
                                         "standard, which stays a check.")

            with st.expander("Post-processing (cleaning)", icon=":material/auto_fix_high:"):
                st.caption(clean_why + " The internal standard is a check of the result, never a tuning target: "
                           "choose the cleaning before looking at it.")
                clean_on = st.toggle("Clean the segmentation", key="seg_clean")
                c1, c2 = st.columns(2)
                connectivity = c1.radio("Connectivity", ["2d", "3d"], horizontal=True, key="seg_conn",
                                        format_func=lambda k: {"2d": "2D (per XY slice, 8-connected)", "3d": "3D (26-connected)"}[k])
                rim_px = c2.number_input("Rim width (px)", 0, 20, key="seg_rim",
                                         disabled=pdef.rim_phase is None,
                                         help=(f"False {phases.by_code(pdef.rim_phase).name} rim around "
                                               f"{phases.by_code(pdef.rim_around).name} removed within this many pixels; 0 = off."
                                               if pdef.rim_phase is not None else "This phase table has no rim rule."))
                st.markdown("Minimum island size per phase (px in 2D, voxels in 3D; 0 = keep every island)")
                st.caption("The study's values: bassanite 100 px, pore 8 px, rim 2 px. They delete thin laths of real "
                           "bassanite; a model trained here carries sizes chosen by agreement with its ground truth.")
                cols = st.columns(len(phases))
                min_sizes = {p.code: col.number_input(p.name, 0, 1_000_000, key=f"seg_min_{p.code}")
                             for col, p in zip(cols, phases)}

            with st.expander("Dask scheduler", icon=":material/hub:"):
                from core.segmentation.series import ENV_SCHEDULERS, configured_schedulers

                offered = configured_schedulers()  # only the administrator's list: never an address typed here
                c1, c2, c3 = st.columns([2, 1, 2])
                sched = c1.radio("Run the steps", [k for k in SCHEDULERS if k != "address" or offered],
                                 format_func=SCHEDULERS.get, key="seg_sched")
                workers = c2.number_input("Workers (N)", 1, 256, 2, key="seg_workers", help="For the local cluster.")
                if offered:
                    address = c3.selectbox("Cluster", offered, key="seg_address",
                                           help="Every worker must see the model, the scans and the project at the same paths.")
                else:
                    address = None
                    c3.caption(f"No Dask cluster is offered on this server. An administrator lists them in "
                               f"`{ENV_SCHEDULERS}` (e.g. `tls://cluster:8786`); see the README.")
            start = st.form_submit_button("Start segmentation", type="primary", icon=":material/layers:", disabled=active)

        if start:
            with ui.user_errors():
                from core.network.inference import load_model_cached

                name = (name or "").strip()
                if not name:
                    raise ReactomoError("Give the segmentation a name (letters, digits, '-', '_' and '.').")
                if not NAME_RE.match(name):
                    raise ReactomoError(f"Segmentation name '{name}' is not allowed; use up to 64 letters, digits, '-', '_' "
                                        "and '.', starting with a letter or digit.")
                if not steps:
                    raise ReactomoError("Choose at least one step to segment.")
                old = (project.manifest.get("segmentations") or {}).get(name)
                if old and old.get("model_name") != model:
                    raise ReactomoError(f"A segmentation called '{name}' already exists (model '{old.get('model_name')}'); "
                                        "choose another name.")
                if some_z and z1 - z0 < 1:
                    raise ReactomoError("The z range holds no slice; widen it.")
                scheduler = {"process": None, "local": "local"}.get(sched)
                if sched == "address":
                    from core.segmentation.series import check_offered_scheduler

                    scheduler = address or ""
                    check_offered_scheduler(scheduler)  # and again in the job: only an offered cluster is used
                load_model_cached(ui.models_root() / model, phases=phases, device="cpu")  # refuses another phase table
                inference = InferenceConfig(tile=int(tile), overlap=float(overlap), batch_size=int(batch),
                                            z_sigma=float(z_sigma))
                inference.validate()
                post = PostprocessConfig(min_sizes={c: int(v) for c, v in min_sizes.items() if int(v) > 0},
                                         connectivity=connectivity, rim_phase=pdef.rim_phase, rim_around=pdef.rim_around,
                                         rim_px=int(rim_px) if pdef.rim_phase is not None else 0, enabled=bool(clean_on))
                if not clean_on:
                    source = "No cleaning: switched off on the Segment page."
                elif (post.min_sizes, post.connectivity, post.rim_px) == (
                        {c: v for c, v in pdef.min_sizes.items() if v > 0}, pdef.connectivity,
                        pdef.rim_px if pdef.rim_phase is not None else 0):
                    source = clean_why
                else:
                    source = f"Set by hand on the Segment page, starting from: {clean_why}"
                params = {"name": name, "model_dir": str(ui.models_root() / model), "model_name": model,
                          "cleaning_source": source,
                          "steps": sorted(int(s) for s in steps), "inference": inference.to_dict(),
                          "postprocess": post.to_dict() if clean_on else None, "use_roi": bool(use_roi and roi),
                          "z_range": [int(z0), int(z1)] if some_z and (z0, z1) != (0, depth) else None,
                          "scheduler": scheduler, "workers": int(workers) if sched == "local" else 1,
                          "project": project.name, "temporal": bool(together),
                          "match_volumes": bool(together and match)}
                submit_job(project, KIND, params, title=f"Segment {name}")
                ss["seg_flash"] = f"Started segmenting {_steps(len(steps))} as '{name}'."
                ss["qc_seg"] = ss["qc_want"] = name  # shown below as soon as its record exists
                st.rerun()

# ------------------------------------------------------------------------------------------------ QC viewer
st.subheader("Quality check")
segs = project.manifest.get("segmentations") or {}
if not segs:
    st.info("The first segmentation is running: its steps can be checked here as soon as they are written."
            if active else "This project has no segmentation yet: choose a model and start one above.")
    st.stop()
seg_names = list(segs)
if (want := ss.get("qc_want")) in seg_names:  # the run started on this page, once it is listed
    ss["qc_seg"] = want
    ss.pop("qc_want")
elif want and not active:  # it ended without being listed (refused or failed): stop waiting for it
    ss.pop("qc_want")
if ss.get("qc_seg") not in seg_names:
    ss["qc_seg"] = seg_names[-1]
c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
running_names = {j.params.get("name") for j in jobs if j.is_active}


def _seg_status(n: str) -> str:
    """A segmentation's state as it is now: running only while its job runs (a record left "running" by a killed
    worker reads "interrupted")."""
    status = segs[n].get("status", "?")
    if n in running_names:
        return "running"
    return "interrupted" if status == "running" else status


seg_name = c1.selectbox("Segmentation", seg_names, key="qc_seg",
                        format_func=lambda n: f"{n} · {segs[n].get('model_name', '?')} · {_seg_status(n)}")
seg = segs[seg_name]
record = segmentation_record(project, seg_name)
vs = segmentation_voxel_size(project, seg_name)  # the segmentation's own, not a project value changed since
if record is None:
    if seg_name in running_names:
        st.info(f"'{seg_name}' is being segmented; its first step shows here when it is done.", icon=":material/hourglass_top:")
    else:
        st.warning(f"The segmentation '{seg_name}' has no readable record in its folder; segment it again with the same "
                   "name to rebuild it.", icon=":material/warning:")
    st.stop()
done = {int(s["step"]): s for s in record.get("steps", []) if s.get("status") == "done"}
settings = record.get("settings") or {}
c2.caption(f"Model `{record.get('model', {}).get('name', '?')}` · {len(done)} of {len(record.get('steps', []))} steps done · "
           f"tile {settings.get('inference', {}).get('tile', '?')} px · cleaning "
           f"{'on' if settings.get('postprocess') and settings['postprocess'].get('enabled', True) else 'off'} · "
           f"{record.get('device', '?')}, {record.get('scheduler', '?')}")
if abs(vs - project.voxel_size_um()) > 1e-9 * max(vs, 1.0):
    st.caption(f":material/straighten: Segmented at a voxel size of {vs:g} µm; the project now says "
               f"{project.voxel_size_um():g} µm (Data page). The views below use {vs:g} µm; segment again to use the new one.")
together = record.get("temporal") or {}
if together:
    st.caption(f":material/timeline: {describe_steps(together)}")

rows = phase_volume_rows(project, seg_name)
f1, f2 = st.columns([3, 1], vertical_alignment="bottom")
if rows:
    f1.plotly_chart(fraction_over_time(rows, phases, title=f"Phase volume fractions of '{seg_name}'"),
                    width="stretch", key="qc_fractions")
    f2.download_button("Download phase_volumes.csv", phase_volumes_csv(project, seg_name) or b"", file_name=f"{seg_name}_phase_volumes.csv",
                       mime="text/csv", icon=":material/download:", width="stretch", key="qc_csv")
    f2.caption("Per step: voxels, volume (mm³) and fraction of the segmented voxels of every phase.")
if not done:
    st.info("No step of this segmentation is done yet.")
    st.stop()

# what the cleaning did, said in words where it changed a phase by more than 5 % at some step
big = []
for k, sd in sorted(done.items()):
    c = sd.get("cleaning") or {}
    for p in phases:
        b_, a_ = int((c.get("before") or {}).get(str(p.code), 0)), int((c.get("after") or {}).get(str(p.code), 0))
        if b_ >= 100 and abs(a_ - b_) / b_ > 0.05:
            big.append((abs(a_ - b_) / b_, p.name, (a_ - b_) / b_ * 100.0, scans[k].name if k < len(scans) else str(k)))
if big:
    worst = sorted(big, reverse=True)[:3]
    st.warning("The cleaning changed " + "; ".join(f"{n} by {d:+.1f} % at {t}" for _, n, d, t in worst)
               + ". Islands smaller than the model's minimum sizes were relabelled as their surroundings: check those "
                 "steps below, and segment again without cleaning (Post-processing) if they were real.",
               icon=":material/auto_fix_high:")

steps_done = sorted(done)
c1, c2, c3 = st.columns([2, 2, 1])
_qc_label = lambda i: f"{scans[i].name} · {times[i] / 60:.1f} min" if i < len(scans) else str(i)  # noqa: E731
if len(steps_done) > 1:
    step = c1.select_slider("Step", steps_done, key="qc_step", format_func=_qc_label)
else:  # a slider of one value is a bare dot: say which step it is
    step = steps_done[0]
    c1.markdown(f"**Step**  \n{_qc_label(step)} (the only step segmented)")
s = done[step]
with ui.user_errors():
    label_path = s["out_path"]
    from core.imaging.io import open_volume

    with open_volume(label_path) as lv:
        nz = lv.shape[0]
    z = c2.slider("Slice (z of the segmented volume)", 0, nz - 1, nz // 2, key="qc_z") if nz > 1 else 0
    opacity = c3.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="qc_opacity")
    z_off = (settings.get("z_range") or [0, 0])[0]
    region = settings.get("region")
    image = ui.read_slice(scans[step], 0, z + z_off)
    origin = (0, 0)
    if region:
        y0, y1, x0, x1 = region
        image = image[y0:y1, x0:x1]
        origin = (y0, x0)  # the axes give the scan's own positions
    labels = ui.read_file_slice(label_path, 0, z)
    lo, hi, _, _ = ui.display_range(scans[step])
    v1, v2 = st.columns([3, 2])
    v1.plotly_chart(slice_figure(image, voxel_size_um=vs, window=(lo, hi), labels=labels, phases=phases, opacity=opacity,
                                 origin_px=origin,
                                 title=f"{scans[step].name} · z {z + z_off} · '{seg_name}'", height=520),
                    width="stretch", key="qc_overlay")
    cleaning = s.get("cleaning")
    with v2:
        if cleaning and cleaning.get("before"):
            st.plotly_chart(cleaning_chart(cleaning["before"], cleaning["after"], phases, voxel_size_um=vs,
                                           title=f"Cleaning of {scans[step].name}"),
                            width="stretch", key="qc_cleaning")
            table = pd.DataFrame([{
                "Phase": p.name,
                "Before": int(cleaning["before"].get(str(p.code), 0)),
                "After": int(cleaning["after"].get(str(p.code), 0)),
            } for p in phases])
            table["Change (%)"] = [(a - b_) / b_ * 100.0 if b_ else math.nan
                                   for b_, a in zip(table["Before"], table["After"])]
            relabelled = together.get("applied") or step in (together.get("together_steps") or [])
            final = {str(k): int(v) for k, v in (s.get("counts") or {}).items()}
            if relabelled and final:  # the histories came after the cleaning: its counts are not the step's last word
                table["Final"] = [final.get(str(p.code), 0) for p in phases]
            st.dataframe(table, hide_index=True, width="stretch", key="qc_cleaning_table",
                         column_config={"Change (%)": st.column_config.NumberColumn(format="%+.1f"),
                                        **{c: st.column_config.NumberColumn(format="localized")  # 154,936 voxels
                                           for c in ("Before", "After", "Final")}})
            st.caption(f"Voxels of each phase before and after the cleaning, which relabelled "
                       f"{int(cleaning.get('changed', 0)):,} voxels of this step."
                       + (" The steps were then labelled together along each voxel's history; \"Final\" is what the "
                          "step holds now (the volume chart above)." if relabelled and final else ""))
        else:
            st.caption("This segmentation was not cleaned, so there is no before/after comparison.")
    for w in s.get("warnings") or []:  # notes from segmenting this step (e.g. slices smaller than a tile)
        st.caption(f":material/info: {w}")
st.markdown('<a href="./evaluate" target="_self">Evaluate the segmentations against a reference</a>',
            unsafe_allow_html=True)
