"""Analysis: the internal standard, pore sizes and growth of a segmentation, with uncertainty, exports and a report."""

from __future__ import annotations

import io
import zipfile

import pandas as pd
import streamlit as st

import ui
from core.analysis.results import AnalysisConfig, csv_text, figures, report_bytes, report_html, verdict_rows, with_band
from core.analysis.analysis_charts import method_of
from core.analysis.stoichiometry import amount_unit
from core.errors import ReactomoError
from core.analysis.export import figure_images, zip_images
from core.workflow.jobs import list_jobs, read_job, request_cancel
from core.workflow.worker import submit_job
from core.workflow.analysis import outdated
from core.workflow.live import live_view
from core.workflow.paths import ANALYSIS_FILES, analysis_folder, analysis_table, saved_analysis, segmentation_label_files
from core.workflow.paths import segmentation_record

KIND = "analysis"
CHART_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "svg", "scale": 2}}


def _small_number_columns(df: pd.DataFrame) -> dict:
    """One format per numeric column: scientific notation where every value is tiny (moles and mm³ of a small
    sample), which fixed point would round to a single digit; else three decimals on every row (not 3 on one row and
    4 on the next)."""
    config = {}
    for col in df.columns:
        if pd.api.types.is_float_dtype(df[col]):
            vals = df[col].abs().dropna()
            vals = vals[vals > 0]
            tiny = len(vals) and vals.max() < 1e-2 and "%" not in str(col)  # a percentage reads best in fixed point
            config[col] = st.column_config.NumberColumn(format="%.4e" if tiny else "%.3f")
    return config


_UNITS = (("_pct_per_h", " (% per h)"), ("_per_h", " (per h)"), ("_mm3", " (mm³)"), ("_um", " (µm)"), ("_mol", " (mol)"), ("_mmol", " (mmol)"), ("_µmol", " (µmol)"),
          ("_nmol", " (nmol)"), ("_pmol", " (pmol)"), ("_fmol", " (fmol)"),
          ("_pct", " (%)"), ("_min", " (min)"), ("_s", " (s)"))
_WORDS = {"n": "amount", "x": "x (extent)", "y": "y (reactant left)", "ci": "95 % CI", "lt": "local thickness",
          "eqd": "equivalent diameter", "q1": "Q1", "q3": "Q3"}


def _header(col: str) -> str:
    """A CSV column name as a table header: words and units (``time_s`` -> ``time (s)``)."""
    if col.endswith("_ci") and len(col) > 3:
        return f"{_header(col[:-3])}, 95 % CI"
    unit = ""
    for suffix, text in _UNITS:
        if col.endswith(suffix) and len(col) > len(suffix):
            col, unit = col[: -len(suffix)], text
            break
    words = [_WORDS.get(w, w) for w in col.split("_")]
    return (" ".join(words) + unit).replace("amount gypsum", "gypsum").replace("amount bassanite", "bassanite")


def _interval(v):
    """``"(7.6149658306585115, 11.259536426030886)"`` -> ``"[7.61, 11.3]"``; anything else unchanged."""
    if isinstance(v, str) and v.startswith("(") and v.endswith(")") and "," in v:
        try:
            a, b = (float(x) for x in v[1:-1].split(","))
        except ValueError:
            return v
        return f"[{a:.3g}, {b:.3g}]"
    return v


def _tidy(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The table as a reader wants it: intervals rounded, a sentence repeated on every row taken out (returned, to
    be written once under the table), headers in words with units."""
    notes = []
    for col in list(df.columns):
        if pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col]):
            vals = df[col].dropna().unique()
            if len(vals) == 1 and isinstance(vals[0], str) and len(vals[0]) > 60:
                notes.append(vals[0])
                df = df.drop(columns=[col])
                continue
            df[col] = df[col].map(_interval)
    for col in [c for c in df.columns if c.endswith("_mol") and pd.api.types.is_numeric_dtype(df[c])]:
        factor, unit = amount_unit(df[col])  # 2.41 µmol, not 2.4134e-06 mol
        if factor != 1.0:
            df = df.assign(**{col: df[col] / factor}).rename(columns={col: f"{col[:-4]}_{unit}"})
    if "time_s" in df.columns and pd.api.types.is_numeric_dtype(df["time_s"]):  # minutes, as on every chart
        df = df.assign(time_s=df["time_s"] / 60.0).rename(columns={"time_s": "time_min"})
    return df.rename(columns={c: _header(c) for c in df.columns}), notes


ui.page_setup("Analysis")
project = ui.require_project(read_view=True)
ui.sidebar_project(project)
READ_ONLY = ui.read_only(project)
ss = st.session_state

st.title("Analysis")
st.caption("The reaction's chemistry checks the segmentation (the internal standard), then pore sizes and the growth "
           "of the product over time. Every number carries its interval; the method is written under each chart.")

segs = {k: v for k, v in (project.manifest.get("segmentations") or {}).items() if isinstance(v, dict)}
done = {k: v for k, v in segs.items() if (segmentation_record(project, k) or {}).get("steps")}
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
    if not READ_ONLY and c2.button("Stop", icon=":material/stop_circle:", key="an_stop", width="stretch"):
        with ui.user_errors():
            request_cancel(project.root, job_id)


if latest is not None and latest.is_active:
    live(latest.id)
elif latest is not None and latest.status in ("failed", "interrupted"):
    st.error(f"The last analysis ('{latest.params.get('name')}') {latest.status}: {ui.plain(latest.error or 'no reason recorded')}",
             icon=":material/error:")

names = list(done)  # in the order they were made; the last analysed, else the newest, to start with (as on Segment)
default = (names.index(latest.params.get("name")) if latest is not None and latest.params.get("name") in names
           else len(names) - 1)
c1, c2, c3, c4, c5 = st.columns([3, 1, 1, 1, 1], vertical_alignment="bottom")
name = c1.selectbox("Segmentation", names, index=default, key="an_seg",
                    help="A segmentation of this project (Segment page); its analysis is saved in the project.")
running = latest is not None and latest.is_active
saved = None
with ui.user_errors():
    saved = saved_analysis(project, name)
run_band_pct = 100.0 * float(saved["summary"]["config"]["band"]) if saved else 2.0
stamp = (name, saved["summary"].get("created") if saved else None)
if ss.get("an_band_for") != stamp or "an_band_view" not in ss:  # widget values do not survive a page switch; a new
    ss["an_band_for"] = stamp  # analysis (or another segmentation) starts from the band of its run
    ss["an_band_view"] = float(min(max(round(run_band_pct, 4), 0.1), 20.0))
band_pct = c2.number_input("Band (± %)", min_value=0.1, max_value=20.0, step=0.5, key="an_band_view",
                           help="Half-width of the band every check is judged with (the study: all points inside "
                                "±2 %). A new run writes its files with it; on results already there, the verdict, "
                                "counts and charts follow at once, while the files on disk keep the band of their run.")
if not READ_ONLY:  # the run's settings and its button change the project: not in the read-only view
    n_boot = c3.number_input("Bootstrap resamples", min_value=50, max_value=20000, value=500, step=50, key="an_boot",
                             help="Resamples behind every bootstrap interval (pore sizes, growth rate).")
    sub_mvox = c4.number_input("Pore sub-volume (Mvoxel)", min_value=0.01, max_value=10000.0, value=32.0, step=1.0, key="an_sub",
                               help="Pore sizes are measured on a central sub-volume of at most this many voxels per step.")
    onset = c5.selectbox("JMAK onset", ["first-step", "fitted"], key="an_onset",
                         format_func=lambda v: {"first-step": "first scan", "fitted": "fitted"}[v],
                         help="t0 of α = α_max·(1 − exp(−(k(t − t0))^n)): the first scan starts the reaction (default), or a "
                              "fitted onset. A little false product at the first step reads as an earlier onset when fitted.")
    st.caption(f"Voxel size {project.voxel_size_um():g} µm and step times from the project (Data page).")
    if st.button("Run the analysis", icon=":material/analytics:", type="primary", disabled=running, key="an_run"):
        with ui.user_errors():
            config = AnalysisConfig(voxel_size_um=project.voxel_size_um(), band=float(band_pct) / 100.0, n_boot=int(n_boot),
                                    pore_max_voxels=int(float(sub_mvox) * 1e6), onset=onset)
            config.validate()
            times = project.times_s()
            params = {"name": name, "segmentation": segs[name]["path"], "config": {**config.__dict__, "interval_s": None},
                      "times": len(times)}
            submit_job(project, KIND, params, title=f"Analyse {name}")
            st.rerun()

result = saved
if result is None:
    live = None
    with ui.user_errors():
        live = live_view(project, name)
    if live is not None and live.verdict:  # the live run's own checks: said, so this page does not seem to contradict
        st.info(f"'{name}' has not been analysed here yet. Its live run checked the steps as they arrived (Live "
                f"page): {live.verdict.get('sentence') or 'see the Live page'}"
                + ("" if READ_ONLY else " Press **Run the analysis** for the whole analysis (pore sizes, growth, "
                                        "report) of every step."), icon=":material/sensors:")
    else:
        st.info(f"'{name}' has not been analysed yet" + ("." if READ_ONLY else ": press **Run the analysis**."))
    st.stop()

rebanded = abs(float(band_pct) - run_band_pct) > 1e-9
run_verdict = result["summary"]["verdict"]  # the verdict of record: at the band the analysis was run with
run_result = result
if rebanded:
    with ui.user_errors():
        result = with_band(result, float(band_pct) / 100.0)
st.subheader("Results")
with ui.user_errors():
    if stale := outdated(project, run_result):
        st.warning(stale, icon=":material/update:")
if rebanded:
    cn = st.container()
    cn.caption(f"Judged here with ±{band_pct:g} %. The files on disk (CSV, report) were written with the band of the "
               f"run, ±{run_band_pct:g} %; the downloads beside follow ±{band_pct:g} %.")
    d1, d2 = cn.columns(2)
    d1.download_button(f"molar_evolution.csv (±{band_pct:g} %)", csv_text(result["summary"]["molar_evolution"]),
                       file_name=f"{name}-molar_evolution-band{band_pct:g}pct.csv", mime="text/csv",
                       icon=":material/download:", key="an_dl_band_csv", width="stretch")
    banded = result
    d2.download_button(f"HTML report (±{band_pct:g} %)", lambda: report_html(banded),
                       file_name=f"{name}-report-band{band_pct:g}pct.html", mime="text/html",
                       icon=":material/description:", key="an_dl_band_report", width="stretch",
                       help="Made when clicked: the same report as on disk, judged with the band chosen here.")

s = result["summary"]
v = s["verdict"]  # the verdict over every check; green only when none fails
checks = v.get("checks") or []
failing = [c for c in checks if c.get("passed") is False]
skipped = [c for c in checks if c.get("passed") is None]
run_failing = [c for c in run_verdict.get("checks") or [] if c.get("passed") is False]
if rebanded and run_failing:  # a wider band chosen after the run never turns a failed run green
    st.warning(f"At the run's ±{run_band_pct:g} % band, {len(run_failing)} of {len(run_verdict.get('checks') or [])} "
               f"checks fail ({', '.join(c.get('label', c['name']) for c in run_failing)}). The verdict below uses "
               f"±{band_pct:g} %, chosen after the run: a band widened until the checks pass proves nothing.",
               icon=":material/warning:")
if v.get("passed") is True and not failing and not (rebanded and run_failing):
    st.success(v.get("sentence", ""), icon=":material/verified:")
elif v.get("passed") is True and not failing:
    st.info(v.get("sentence", ""), icon=":material/info:")
else:
    st.error((f"{len(failing)} of {len(checks)} checks fail.\n\n" + "\n\n".join(c["sentence"] for c in failing)
              if failing else v.get("sentence", "The checks could not be judged."))
             + (f"\n\nNot evaluated: {', '.join(c['label'] for c in skipped)}." if skipped else ""), icon=":material/error:")
if checks:
    # a static table wraps its sentences (a data grid would scroll them sideways)
    vt = pd.DataFrame(verdict_rows(v)).drop(columns=["name", "limit_pct"])
    vt["value_pct"] = ["–" if x is None or pd.isna(x) else f"{x:.2f}" for x in vt["value_pct"]]
    vt = vt.rename(columns={"value_pct": "value (%)", "rule": "passes when", "sentence": "why"}).set_index("check")
    st.table(vt.style.map(lambda r: "color: #c62828; font-weight: 600" if r == "FAIL" else "", subset=["result"]))
    st.caption(v.get("method", ""))
st.caption(":material/balance: The internal standard and the other checks judge the segmentation; they are never a "
           "tuning target. Choose the model, the cleaning and the island sizes before looking at them (Reactomo chooses "
           "its cleaning from the ground-truth slices alone): a setting picked to make a check pass leaves that check "
           "proving nothing.")
iv = v.get("internal_standard") or {}
fit = result["fit"] or {}
jm = s.get("jmak") or {}
m1, m2, m3, m4 = st.columns(4)
m1.metric("Steps inside the band", f"{iv.get('n_inside', '?')} / {iv.get('n_steps', '?')}")
mx = iv.get("max_abs_deviation_pct")
m2.metric("Largest |deviation|", "–" if mx is None else f"{mx:.2f} %")
if fit.get("slope") is not None:
    m3.metric("Fitted slope (theory −1)", f"{fit['slope']:.3f}",
              help=f"95 % CI [{fit['slope_ci'][0]:.3f}, {fit['slope_ci'][1]:.3f}]; intercept {fit['intercept']:.3f} "
                   f"[{fit['intercept_ci'][0]:.3f}, {fit['intercept_ci'][1]:.3f}] (theory 1).")
if jm.get("k") is not None:
    am_ci = jm.get("alpha_max_ci") or [None, None]
    am_text = (f"α_max fixed at {jm.get('alpha_max') or 1.0:g}" if not jm.get("alpha_max_fitted") else
               f"plateau α_max = {jm['alpha_max']:.3f}" + ("" if None in am_ci else f" [{am_ci[0]:.3f}, {am_ci[1]:.3f}]"))
    m4.metric("Avrami n", f"{jm['n']:.2f}", help=f"95 % CI [{jm['n_ci'][0]:.2f}, {jm['n_ci'][1]:.2f}]; "
                                                 f"k = {jm['k'] * 3600:.3g} per hour; {am_text}. "
                                                 + ((jm.get("model_choice") or {}).get("reason") or ""))

figs = figures(result)
sections = st.tabs([title for title, _ in figs] + ["Tables", "Exports"])
for i, (title, fig) in enumerate(figs):
    with sections[i]:
        st.plotly_chart(fig, width="stretch", key=f"an_fig_{i}", config=CHART_CONFIG)
        st.caption(method_of(fig))

with sections[-2]:
    tabs = st.tabs(["Molar evolution", "Pore-volume check", "Inert phases", "Pore sizes", "Pore size distribution", "Growth"])
files = {fname: i for i, fname in enumerate(ANALYSIS_FILES)}
folder = analysis_folder(project, name)
# tables whose inside_band column depends on the band: from the re-judged result when the band was changed
banded_tables = {"molar_evolution.csv": "molar_evolution", "pore_check.csv": "pore_check", "inert.csv": "inert"}


def _show_table(df: pd.DataFrame) -> None:
    shown, notes = _tidy(df)
    st.dataframe(shown, width="stretch", hide_index=True, column_config=_small_number_columns(shown))
    for note in notes:
        st.caption(note)


for fname, i in files.items():
    with tabs[i]:
        if rebanded and fname in banded_tables:
            text = csv_text(s.get(banded_tables[fname]) or [])
            if not text:
                st.caption("No rows.")
                continue
            _show_table(pd.read_csv(io.StringIO(text)))
            st.download_button(f"Download {fname} (±{band_pct:g} %)", text,
                               file_name=f"{name}-{fname.removesuffix('.csv')}-band{band_pct:g}pct.csv", mime="text/csv",
                               icon=":material/download:", key=f"an_dl_{i}")
            continue
        data = analysis_table(project, name, fname)
        try:
            df = pd.read_csv(io.BytesIO(data)) if data else None
        except (ValueError, pd.errors.EmptyDataError):
            df = None
        if df is None:
            st.caption("No rows.")
            continue
        _show_table(df)
        st.download_button(f"Download {fname}", data, file_name=f"{name}-{fname}", mime="text/csv",
                           icon=":material/download:", key=f"an_dl_{i}")

exports = sections[-1]
c1, c2, c3 = exports.columns(3)
report = report_bytes(folder, run_result)
if report is not None:
    c1.download_button("Download the HTML report", report, file_name=f"{name}-report.html", mime="text/html",
                       icon=":material/description:", key="an_report",
                       help=f"One self-contained file: interactive charts, settings, model, verdicts; opens offline "
                            f"(judged with the band of the run, ±{run_band_pct:g} %).")

# PNG images of every chart: rendered on request (a browser session, a few seconds), kept for this band
png_key = (name, s.get("created"), float(band_pct))
if c3.button("Prepare PNG images", icon=":material/image:", key="an_png_prep",
             help="Renders every chart as a PNG (2000 px wide) with its method written under the plot."):
    ss.pop("an_png_zip", None)
    try:
        with c3, st.spinner(f"Rendering {len(figs)} charts as PNG ..."):
            ss["an_png_zip"] = (png_key, zip_images(figure_images(figs, "png", scale=2), "png"))
    except ReactomoError as exc:
        c3.error(str(exc), icon=":material/error:")
png = ss.get("an_png_zip")
if png is not None and png[0] == png_key:
    c3.download_button("Download all charts (PNG, zip)", png[1], file_name=f"{name}-charts-png.zip",
                       mime="application/zip", icon=":material/download:", key="an_png_dl")


@st.cache_data(show_spinner="Packing the label TIFFs ...", max_entries=2)
def _labels_zip(project_name: str, seg_name: str, mtime: float) -> bytes:
    from core.workflow.project import open_project

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for f in segmentation_label_files(open_project(project_name), seg_name):
            z.write(f, arcname=f.name)
    return buf.getvalue()


label_files = segmentation_label_files(project, name)
try:
    mt = max(f.stat().st_mtime for f in label_files)
except (OSError, ValueError):
    mt = None
if mt is not None and c2.toggle("Prepare the label TIFFs (zip)", key="an_zip_on"):
    try:
        data = _labels_zip(project.name, name, mt)
        c2.download_button("Download the label TIFFs", data, file_name=f"{name}-labels.zip", mime="application/zip",
                           icon=":material/folder_zip:", key="an_zip")
    except (OSError, ReactomoError) as exc:
        c2.error(f"The label files could not be packed: {exc}")
exports.caption("Any chart: the camera icon of its toolbar saves it as SVG (vector); **Prepare PNG images** renders all of "
           "them as PNG with their method under the plot (`python -m core analyze ... --figures png|svg|pdf` does the "
           "same from the command line); the CSV files hold every number shown.")
