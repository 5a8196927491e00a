"""Analysis: the internal standard, pore sizes and growth of a segmentation, with uncertainty, exports and a report."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from core.analysis import AnalysisConfig, analyze, figures, load_result
from core.analysis_charts import method_of
from core.errors import ReactomoError
from core.jobs import list_jobs, read_job, request_cancel, start_job
from core.series import read_series_record

KIND = "analysis"
CHART_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "svg", "scale": 2}}


def _job_fn(project, params: dict):
    """The background work (no Streamlit calls: it runs in a thread)."""

    def run(ctx) -> dict:
        out = project.root / "analysis" / params["name"]
        config = AnalysisConfig(**params["config"])
        result = analyze(params["segmentation"], out, config=config, phases=project.phases(), reaction=project.reaction(),
                         on_progress=ctx.progress, extra={"project": project.name, "segmentation_name": params["name"]})
        v = result["summary"]["verdict"]

        def record(m: dict) -> None:
            m["analysis"][params["name"]] = {"name": params["name"], "path": str(out), "segmentation": params["segmentation"],
                                             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                             "all_inside": v.get("all_inside"), "max_abs_deviation_pct": v.get("max_abs_deviation_pct")}

        project.update(record)
        return {"name": params["name"], "sentence": v.get("sentence", "")}

    return run


ui.page_setup("Analysis")
project = ui.require_project()
ui.sidebar_project(project)
ss = st.session_state

st.title("Analysis")
st.caption("The reaction's chemistry checks the segmentation (the internal standard), then pore sizes and the growth "
           "of the product over time. Every number carries its interval; the method is written under each chart.")

segs = {k: v for k, v in (project.manifest.get("segmentations") or {}).items() if isinstance(v, dict)}
done = {k: v for k, v in segs.items() if (read_series_record(v.get("path", "")) or {}).get("steps")}
if not done:
    st.info("This project has no segmentation yet. Segment the time steps first; the analysis runs on a segmentation.")
    st.markdown('<a href="./segment" target="_self">Go to the Segment page</a>', unsafe_allow_html=True)
    st.stop()

jobs = []
with ui.user_errors():
    jobs = list_jobs(project.root, kind=KIND)
latest = jobs[0] if jobs else None


@st.fragment(run_every=1.0)
def live(job_id: str) -> None:
    job = read_job(project.root, job_id)
    if not job.is_active:
        st.rerun()
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    c1.progress(min(max(float(job.progress), 0.0), 1.0), text=f"Analysing '{job.params.get('name')}': {job.message or 'starting'}")
    if c2.button("Stop", icon=":material/stop_circle:", key="an_stop", width="stretch"):
        with ui.user_errors():
            request_cancel(project.root, job_id)


if latest is not None and latest.is_active:
    live(latest.id)
elif latest is not None and latest.status in ("failed", "interrupted"):
    st.error(f"The last analysis ('{latest.params.get('name')}') {latest.status}: {latest.error or 'no reason recorded'}",
             icon=":material/error:")

names = sorted(done)
default = names.index(latest.params.get("name")) if latest is not None and latest.params.get("name") in names else 0
c1, c2, c3, c4 = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
name = c1.selectbox("Segmentation", names, index=default, key="an_seg",
                    help="A segmentation of this project (Segment page); its analysis is saved in the project.")
band = c2.number_input("Band (± %)", min_value=0.1, max_value=20.0, value=2.0, step=0.5, key="an_band",
                       help="Half-width of the internal-standard band; the study: all points inside ±2 %.")
n_boot = c3.number_input("Bootstrap resamples", min_value=50, max_value=20000, value=500, step=50, key="an_boot",
                         help="Resamples behind every bootstrap interval (pore sizes, growth rate).")
sub_mvox = c4.number_input("Pore sub-volume (Mvoxel)", min_value=0.01, max_value=10000.0, value=4.0, step=1.0, key="an_sub",
                           help="Pore sizes are measured on a central sub-volume of at most this many voxels per step.")
st.caption(f"Voxel size {project.voxel_size_um():g} µm and step times from the project (Data page).")
running = latest is not None and latest.is_active
if st.button("Run the analysis", icon=":material/analytics:", type="primary", disabled=running, key="an_run"):
    with ui.user_errors():
        config = AnalysisConfig(voxel_size_um=project.voxel_size_um(), band=float(band) / 100.0, n_boot=int(n_boot),
                                pore_max_voxels=int(float(sub_mvox) * 1e6))
        config.validate()
        times = project.times_s()
        params = {"name": name, "segmentation": segs[name]["path"], "config": {**config.__dict__, "interval_s": None},
                  "times": len(times)}
        start_job(project.root, KIND, _job_fn(project, params), params=params, title=f"Analyse {name}")
        st.rerun()

result = None
with ui.user_errors():
    result = load_result(project.root / "analysis" / name)
if result is None:
    st.info(f"'{name}' has not been analysed yet: press **Run the analysis**.")
    st.stop()

s = result["summary"]
v = s["verdict"]
(st.success if v.get("all_inside") else st.warning)(v.get("sentence", ""), icon=":material/science:")
fit = result["fit"] or {}
jm = s.get("jmak") or {}
m1, m2, m3, m4 = st.columns(4)
m1.metric("Steps inside the band", f"{v.get('n_inside', '?')} / {v.get('n_steps', '?')}")
m2.metric("Largest |deviation|", f"{v.get('max_abs_deviation_pct', float('nan')):.2f} %")
if fit.get("slope") is not None:
    m3.metric("Fitted slope (theory −1)", f"{fit['slope']:.3f}",
              help=f"95 % CI [{fit['slope_ci'][0]:.3f}, {fit['slope_ci'][1]:.3f}]; intercept {fit['intercept']:.3f} "
                   f"[{fit['intercept_ci'][0]:.3f}, {fit['intercept_ci'][1]:.3f}] (theory 1).")
if jm.get("k") is not None:
    m4.metric("Avrami n", f"{jm['n']:.2f}", help=f"95 % CI [{jm['n_ci'][0]:.2f}, {jm['n_ci'][1]:.2f}]; "
                                                 f"k = {jm['k'] * 3600:.3g} per hour.")

for i, (title, fig) in enumerate(figures(result)):
    st.plotly_chart(fig, width="stretch", key=f"an_fig_{i}", config=CHART_CONFIG)
    st.caption(method_of(fig))

st.subheader("Tables")
tabs = st.tabs(["Molar evolution", "Pore-volume check", "Inert phases", "Pore sizes", "Growth"])
files = {"molar_evolution.csv": 0, "pore_check.csv": 1, "inert.csv": 2, "pore_sizes.csv": 3, "growth.csv": 4}
folder = project.root / "analysis" / name
for fname, i in files.items():
    with tabs[i]:
        p = folder / fname
        try:
            df = pd.read_csv(p)
        except (OSError, ValueError, pd.errors.EmptyDataError):
            st.caption("No rows.")
            continue
        st.dataframe(df, width="stretch", hide_index=True)
        st.download_button(f"Download {fname}", p.read_bytes(), file_name=f"{name}-{fname}", mime="text/csv",
                           icon=":material/download:", key=f"an_dl_{i}")

st.subheader("Exports")
c1, c2 = st.columns(2)
report = folder / "report.html"
if report.is_file():
    c1.download_button("Download the HTML report", report.read_bytes(), file_name=f"{name}-report.html", mime="text/html",
                       icon=":material/description:", key="an_report",
                       help="One self-contained file: interactive charts, settings, model, verdicts; opens offline.")


@st.cache_data(show_spinner="Packing the label TIFFs ...", max_entries=2)
def _labels_zip(path: str, mtime: float) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for f in sorted(Path(path).glob("*.tif")):
            z.write(f, arcname=f.name)
    return buf.getvalue()


seg_dir = Path(segs[name]["path"])
try:
    mt = max(f.stat().st_mtime for f in seg_dir.glob("*.tif"))
except (OSError, ValueError):
    mt = None
if mt is not None and c2.toggle("Prepare the label TIFFs (zip)", key="an_zip_on"):
    try:
        data = _labels_zip(str(seg_dir), mt)
        c2.download_button("Download the label TIFFs", data, file_name=f"{name}-labels.zip", mime="application/zip",
                           icon=":material/folder_zip:", key="an_zip")
    except (OSError, ReactomoError) as exc:
        c2.error(f"The label files could not be packed: {exc}")
st.caption("Any chart: the camera icon of its toolbar saves it as SVG (vector); the CSV files hold every number shown.")
