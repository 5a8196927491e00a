"""Live: segment each scan as it arrives at the beamline, with a status strip, live checks and alerts."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pandas as pd
import streamlit as st

import ui
from core.analysis.analysis_charts import molar_evolution_figure
from core.errors import ReactomoError
from core.imaging.arrivals import RULES
from core.network.bundle import list_bundles
from core.segmentation.seg_charts import fraction_over_time
from core.workflow.jobs import list_jobs, request_cancel
from core.workflow.live import live_start_problem, live_view
from core.workflow.project import data_roots
from core.workflow.worker import submit_job

KIND = "live"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RULE_TEXT = {"quiet": "Unchanged for a quiet window, and fully readable (works everywhere)",
             "rename": "Renamed from a temporary name (.part, .tmp, a leading dot): the recommended way",
             "marker": "A marker file NAME.done written beside it",
             "slices": "A folder of 2D slices holds the expected number"}

ui.page_setup("Live")
project = ui.require_project()
ui.sidebar_project(project)
ss = st.session_state

st.title("Live")
st.caption("Beamtime mode: each scan is segmented as it lands in the folder the reconstruction writes into, then the "
           "internal standard, the pore check, the inert phase and the kinetics are updated, and anything that goes "
           "wrong raises an alert. The watcher runs in the worker: closing this page or restarting the server does "
           "not stop it. Afterwards the project is an ordinary one: Segment, Analysis, 3D and the report work as usual.")


def _active():
    return next((j for j in list_jobs(project.root, kind=KIND) if j.is_active), None)


def _due(text: str | None) -> str:
    """When the next scan is due: "in 40 s", or "2 min 05 s late" (short: a metric's value is cut at its column's
    width, and a user's walk read "overdue b...")."""
    if not text:
        return "–"
    try:
        t = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return text
    s = (datetime.now(timezone.utc) - t).total_seconds()
    return f"in {ui.fmt_duration(-s)}" if s <= 0 else f"{ui.fmt_duration(s)} late"


def status_strip(view, ended: dict | None = None) -> None:
    """The live run's status; ``ended``: the record of a run that is no longer watching (nothing is expected)."""
    s = view.status
    c = st.columns(5)
    c[0].metric("Last scan seen", s.get("last_seen") or "–", help="The newest complete scan in the folder.")
    c[1].metric("Last segmented", s.get("last_segmented") or "–",
                help=f"{s.get('scans_segmented', 0)} of {s.get('scans_complete', 0)} complete scans are segmented.")
    being = s.get("being_written") or []
    c[2].metric("Queue", s.get("queue", 0), help="Complete scans waiting, plus scans still being written"
                + (f" ({', '.join(being)})" if being else "") + ".")
    sps, interval = s.get("seconds_per_scan_median"), s.get("interval_s")
    keeps = s.get("keeps_up")
    c[3].metric("Seconds per scan", "–" if sps is None else f"{sps:.1f} s",
                delta=None if keeps is None else (f"keeps up with {interval:g} s" if keeps else f"slower than {interval:g} s"),
                delta_color="normal" if keeps else "inverse",
                help="Median of the last scans' segmentation times, against the arrival interval.")
    if ended is None:
        c[4].metric("Next scan expected", _due(s.get("next_expected")),
                    help="The last arrival plus the interval.")
    else:
        when = str(ended.get("updated") or "")
        c[4].metric("Watcher", str(ended.get("status") or "stopped"),
                    help=(f"Since {when.replace('T', ' ').rstrip('Z')} UTC. " if when else "")
                    + "It watches no more; start a new live run above to go on.")
    if s.get("quick"):
        st.caption("Quick mode: the central slab of each scan is segmented first (labelled **quick** below), whole "
                   "scans when there is time.")


def results(view) -> None:
    phases = project.phases()
    if view.verdict and view.verdict.get("sentence"):
        (st.success if view.verdict.get("passed") else st.error)(view.verdict["sentence"])
    if view.alerts:
        with st.expander(f"Alerts ({len(view.alerts)})", expanded=True):
            for a in view.alerts[:20]:  # newest first
                st.markdown(f"`{a['time'][11:19]} UTC` **{a['kind'].replace('_', ' ')}** · {a['sentence']}")
            if len(view.alerts) > 20:
                st.caption(f"... and {len(view.alerts) - 20} earlier alerts.")
            st.caption("Also in live/alerts.log of the segmentation folder"
                       + (", and sent with the administrator's alert command." if view.state["config"].get("alert_command")
                          else "."))
    c1, c2 = st.columns(2)
    if view.molar:
        c1.plotly_chart(molar_evolution_figure(view.molar, band=float(view.state["config"].get("band", 0.02))),
                        width="stretch")
    elif view.status.get("analysis_note"):
        c1.info(f"Checks not available yet: {view.status['analysis_note']}")
    if view.volumes:
        c2.plotly_chart(fraction_over_time(view.volumes, phases, title="Phase volume fractions over time (whole scans)"),
                        width="stretch")
    if view.quick_molar:
        st.plotly_chart(molar_evolution_figure(view.quick_molar, band=float(view.state["config"].get("band", 0.02)))
                        .update_layout(title="QUICK (central slab of each scan): molar evolution"), width="stretch")
    scans = view.state.get("scans") or {}
    if scans:
        qc = (view.state.get("qc") or {}).get("scans") or {}
        rows = []
        for n, r in sorted(scans.items(), key=lambda kv: kv[1].get("step", 1e9)):
            q = qc.get(n, {})
            rows.append({"Step": r.get("step"), "Scan": n, "Status": r.get("status"),
                         "Seconds": r.get("seconds"), "Confidence": q.get("confidence"),
                         "Peak shift": q.get("peak_shift"), "Note": r.get("error") or
                         (f"written again ({r['rewritten']}×)" if r.get("rewritten") else "")})
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
            "Confidence": st.column_config.NumberColumn(format="%.3f", help="Mean max-probability of the model."),
            "Peak shift": st.column_config.NumberColumn(format="%.3f", help="Move of the grey-value histogram's main "
                                                        "peak against the reference scan, in units of its gap to the "
                                                        "brightest phase; the reaction moves it ≈ 0.1.")})


# ------------------------------------------------------------------------------------------------ running
job = _active()
if job is not None:
    name = job.params.get("name")
    st.subheader(f"Watching `{job.params.get('scans')}` → {name}")

    @st.fragment(run_every=2.0)
    def live_panel() -> None:
        current = _active()
        if current is None:
            st.rerun()
        view = None
        with ui.user_errors():
            view = live_view(project, name)
        if view is None:
            st.info("Starting the watcher...")
            return
        status_strip(view)
        results(view)

    live_panel()
    if st.button("Stop watching", icon=":material/stop_circle:", key="live_stop"):
        with ui.user_errors():
            request_cancel(project.root, job.id)
            st.toast("The watcher stops after the scan it is on.")
    st.stop()

# ------------------------------------------------------------------------------------------------ start
last = next(iter(list_jobs(project.root, kind=KIND)), None)
if last is not None and last.status in ("failed", "interrupted"):
    st.error(f"The last live run {last.status}: {ui.plain(last.error or 'no reason recorded')}", icon=":material/error:")

bundles = list_bundles(ui.models_root())
if not bundles:
    st.info(f"There is no model in the registry (`{ui.models_root()}`) yet. Train one on the Train page (on a first "
            "scan of the experiment, or an earlier one of the same rock) before the beamtime.")
    st.stop()

with st.form("live_start", enter_to_submit=False):  # Enter never starts a live run
    st.subheader("Start watching")
    roots = ", ".join(f"`{r}`" for r in data_roots())
    folder = st.text_input("Scan folder on the server", key="live_scans",
                           help=f"Where the reconstruction writes one scan per time step: multi-page TIFFs, or one "
                                f"sub-folder of 2D slices per step. Must lie inside the data roots: {roots}.")
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", [b.name for b in bundles], key="live_model")
    name = c2.text_input("Segmentation name", value=f"live-{datetime.now():%Y%m%d-%H%M}", key="live_name")
    # a project that already holds scans (a live run resumed, or its first scans opened on the Data page) says how
    # far apart they are and how many slices each has: the form starts from that, not from a beamline's usual values
    held = project.scans()
    interval = c3.number_input("Seconds between scans", 1.0, 86_400.0,
                               float(min(max(project.interval_s(), 1.0), 86_400.0)) if held else 60.0, step=5.0,
                               key="live_interval")
    rule = st.radio("A scan is complete when", list(RULES), format_func=RULE_TEXT.get, key="live_rule")
    d1, d2, d3 = st.columns(3)
    quiet = d1.number_input("Quiet window (s)", 0.2, 3600.0, 2.0, key="live_quiet",
                            help="For the quiet-window rule: how long size and time must stay unchanged.")
    slices = d2.number_input("Slices per scan", 1, 100_000, int(held[0].shape[0]) if held else 2016, key="live_slices",
                             help="For the slices rule: the number of 2D slices of a complete scan.")
    quick = d3.checkbox("Quick mode", key="live_quick",
                        help="When a whole scan takes longer than the interval on this machine: the central slab of "
                             "each scan first, sized from the measured speed, then whole scans when there is time.")
    go = st.form_submit_button("Start watching", type="primary", icon=":material/play_circle:")

if go:
    with ui.user_errors():
        if not folder.strip():
            raise ReactomoError("Give the scan folder the reconstruction writes into.")
        if not NAME_RE.match(name):
            raise ReactomoError(f"'{name}' is not a usable segmentation name; use letters, digits, '.', '_' or '-'.")
        from core.imaging.io import check_inside_roots

        path = check_inside_roots(folder.strip(), data_roots())
        if not path.is_dir():
            raise ReactomoError(f"{path} is not a folder; give the folder the reconstruction writes into.")
        if problem := live_start_problem(project, path, float(interval)):
            raise ReactomoError(problem)
        submit_job(project, KIND, {"name": name, "scans": str(path), "model_dir": str(ui.models_root() / model),
                                   "interval_s": float(interval), "complete": rule, "quiet_s": float(quiet),
                                   "slices": int(slices) if rule == "slices" else None, "quick": bool(quick)},
                   title=f"Live: {path.name} → {name}")
        st.rerun()

# the last live run of this project, when there is one
lives = [n for n, r in (project.manifest.get("segmentations") or {}).items() if r.get("live")]
if lives:
    st.subheader("Earlier live runs")
    pick = st.selectbox("Live run", lives, index=len(lives) - 1, key="live_pick")
    view = None
    with ui.user_errors():
        view = live_view(project, pick)
    if view is not None:
        status_strip(view, ended=(project.manifest.get("segmentations") or {}).get(pick) or {})
        results(view)
