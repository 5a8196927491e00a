"""3D: bassanite crystals and pores of a block in 3D, over time and side by side, with 3D numbers and exports."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

import ui
from core.errors import ReactomoError
from core.charts import numbers_over_time_chart
from core.render.morphology import METHOD
from core.render.surfaces import DEFAULT_BLOCK_EDGE, RenderConfig, block_from_um, check_block, default_block
from core.workflow.jobs import list_jobs, read_job, request_cancel
from core.workflow.paths import segmentation_record
from core.workflow.project import list_projects, open_project
from core.workflow.render import OVER_TIME_COLUMNS, cached_numbers_over_time, cached_render
from core.workflow.render import label_shape as segmentation_shape
from core.workflow.render import voxel_size as segmentation_voxel_size
from core.workflow.worker import submit_job

KIND = "render"
OVER_TIME_KIND = "render-numbers"
VIEW_HEIGHT = 560
#: vtk.js keeps the vertical field of view, so a half-width view gets a lower frame to show the whole block.
SIDE_VIEW_HEIGHT = 430
TABLE_ROW_PX = 35  # a row of st.dataframe, header included
COLUMNS = {"phase": "Phase", "objects": "Objects", "objects_touching_block_edge": "Cut by the block",
           "volume_mm3": "Volume (mm³)", "volume_fraction": "Share of block",
           "object_volume_median_um3": "Median object (µm³)", "object_volume_p90_um3": "90th pct object (µm³)",
           "object_volume_max_um3": "Largest object (µm³)", "equivalent_diameter_median_um": "Median eq. diameter (µm)",
           "surface_area_mm2": "Surface (mm²)", "specific_surface_per_mm": "Specific surface (mm²/mm³)",
           "largest_cluster_share": "Largest pore cluster", "largest_cluster_spans": "Cluster spans axes"}



def numbers_table(df: pd.DataFrame) -> pd.DataFrame:
    """The 3D numbers as a table: units in the headers, an en dash where a number is undefined (no object)."""
    fmt = {"Share of block": lambda v: f"{v * 100:.2f} %", "Largest pore cluster": lambda v: f"{v * 100:.1f} %",
           "Volume (mm³)": "{:.5f}".format, "Surface (mm²)": "{:.4f}".format,
           "Specific surface (mm²/mm³)": "{:.1f}".format, "Median object (µm³)": "{:,.0f}".format,
           "90th pct object (µm³)": "{:,.0f}".format, "Largest object (µm³)": "{:,.0f}".format,
           "Median eq. diameter (µm)": "{:.1f}".format, "Time (min)": "{:.1f}".format}
    out = df.copy()
    for col, f in fmt.items():
        if col in out.columns:
            out[col] = [("–" if v is None or pd.isna(v) else f(v)) for v in out[col]]
    return out


ui.page_setup("3D")
project = ui.require_project()
ui.sidebar_project(project)
ss = st.session_state

st.title("3D")
st.caption("Phase surfaces of a block of a segmented step, meshed on the server (surface nets, volume-preserving "
           "smoothing, reduced to a triangle budget) and cached, so a step seen once comes back at once. Drag to "
           "rotate, scroll to zoom. Coordinates are in µm.")


def segmented(proj) -> dict[str, list[int]]:
    """Segmentation name -> its segmented steps, in the order they were made."""
    out = {}
    for name in (proj.manifest.get("segmentations") or {}):
        rec = segmentation_record(proj, name) or {}
        steps = sorted(int(s["step"]) for s in rec.get("steps", []) if isinstance(s, dict) and s.get("status") == "done")
        if steps:
            out[name] = steps
    return out


segs = segmented(project)
if not segs:
    st.info("This project has no segmented step yet. Segment the time steps first; the 3D view shows a segmentation.")
    st.markdown('<a href="./segment" target="_self">Go to the Segment page</a>', unsafe_allow_html=True)
    st.stop()

times = project.times_s()
scan_names = [x.name for x in project.scans()]
phases = project.phases()
choosable = [p for p in phases if p.code > 0]


def step_label(k: int, t: list[float], names: list[str] | None = None) -> str:
    """"t005 · 25.0 min", as the other pages name a step."""
    if k >= len(t):
        return str(k)
    return f"{names[k] if names and k < len(names) else f'step {k}'} · {t[k] / 60:.1f} min"


# ------------------------------------------------------------------------------------------------ what to show
c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
name = c1.selectbox("Segmentation", list(segs), index=len(segs) - 1, key="r3_seg",  # the newest, as on Segment
                    help="A segmentation of this project (Segment page).")
steps = segs[name]
if ss.get("r3_step") not in steps:
    ss["r3_step"] = steps[len(steps) // 2]
if len(steps) > 1:
    step = c2.select_slider("Step", steps, key="r3_step",
                            format_func=lambda k: step_label(k, times, scan_names),
                            help="The time step to show. A step already meshed with these settings is shown at once.")
else:  # a slider of one value is a bare dot: say which step it is
    step = steps[0]
    c2.markdown(f"**Step**  \n{step_label(step, times, scan_names)} (the only step segmented)")
views = ["One view", "Two steps side by side", "Two experiments side by side"]
if len(steps) < 2:  # two views of the one step would show the same scene twice
    views.remove("Two steps side by side")
    if ss.get("r3_compare") not in views:
        ss["r3_compare"] = "One view"
compare = st.radio("Views", views, horizontal=True,
                   key="r3_compare", help="Side by side, both views are meshed with the same block and settings and "
                                          "seen from the same camera.")

second = None  # (project, segmentation, step) of the right-hand view
if compare == "Two steps side by side":
    if ss.get("r3_step2") not in steps:
        ss["r3_step2"] = steps[-1] if steps[-1] != step else steps[0]
    other_step = st.select_slider("Second step", steps, key="r3_step2", format_func=lambda k: step_label(k, times, scan_names))
    second = (project, name, other_step)
elif compare == "Two experiments side by side":
    others = [p.name for p in list_projects() if p.name != project.name]
    if not others:
        st.info("There is no other project in this workspace to compare with; create or import one on the home page.")
    else:
        d1, d2, d3 = st.columns(3, vertical_alignment="bottom")
        other_name = d1.selectbox("Other project", others, key="r3_proj2")
        with ui.user_errors():
            other = open_project(other_name)
            osegs = segmented(other)
            if not osegs:
                d2.caption(f"'{other_name}' has no segmented step yet.")
            else:
                oseg = d2.selectbox("Its segmentation", list(osegs), key="r3_seg2")
                ostep = d3.selectbox("Its step", osegs[oseg], key="r3_ostep2",
                                     format_func=lambda k: step_label(k, other.times_s(), [x.name for x in other.scans()]))
                second = (other, oseg, ostep)

with st.expander("Block, phases and detail", expanded=False):
    shape = tuple(project.scans()[0].shape) if project.scans() else None
    rec = segmentation_record(project, name) or {}
    settings = rec.get("settings") or {}
    if settings.get("z_range") or settings.get("region"):
        st.caption("This segmentation covers a region of the scans: block ranges are counted inside that region.")
    b1, b2, b3 = st.columns([2, 1, 1])
    mode = b1.radio("Block", ["Central block", "Voxel ranges", "Box in µm"], horizontal=True, key="r3_mode",
                    help="Never a whole big step at once: a block (and a downsampling factor) keeps meshing quick "
                         "and the view fluid.")
    factor = b2.number_input("Downsampling factor", 1, 8, 1, key="r3_factor",
                             help="1 keeps every voxel; 2 merges 2×2×2 voxels by majority (for big scans).")
    budget = b3.number_input("Triangle budget", 20_000, 1_000_000, 200_000, step=20_000, key="r3_budget",
                             help="All surfaces together after reduction; 100-500 k stays fluid in a browser.")
    block = None
    label_shape = None
    first = segs[name][0]
    with ui.user_errors():
        label_shape = segmentation_shape(project, name, first)
    if label_shape is not None:
        if mode == "Central block":
            edge = st.slider("Block edge (voxels, before downsampling)", 16, 320 * int(factor),
                             min(DEFAULT_BLOCK_EDGE * int(factor), max(label_shape)), step=16, key="r3_edge")
            block = default_block(label_shape, edge=int(edge) // int(factor), factor=int(factor))
        elif mode == "Voxel ranges":
            default = default_block(label_shape, factor=int(factor))
            rz, ry, rx = st.columns(3)
            z = rz.slider("z range", 0, label_shape[0], (default[0], default[1]), key="r3_z")
            y = ry.slider("y range", 0, label_shape[1], (default[2], default[3]), key="r3_y")
            x = rx.slider("x range", 0, label_shape[2], (default[4], default[5]), key="r3_x")
            block = (*z, *y, *x)
        else:
            vs = segmentation_voxel_size(project, name)  # the meshes' own, not a project value changed since
            default = [v * vs for v in default_block(label_shape, factor=int(factor))]
            cols = st.columns(6)
            box = [cols[i].number_input(f"{'zzyyxx'[i]}{'01'[i % 2]} (µm)", 0.0, float(label_shape[i // 2] * vs),
                                        float(default[i]), key=f"r3_um{i}") for i in range(6)]
            with ui.user_errors():
                block = block_from_um(box, vs)
    chosen = st.multiselect("Phases", [p.name for p in choosable],
                            default=[p.name for p in choosable if p.role in ("product", "pore")] or [choosable[0].name],
                            key="r3_phases", help="Default: the product (bassanite) and the pores, as in the study's "
                                                  "Fig. 6. Add gypsum as faint context, or celestite.")
    opacity = {}
    if chosen:
        ocols = st.columns(len(chosen))
        for col, pname in zip(ocols, chosen):
            p = phases.by_name(pname)
            opacity[p.code] = col.slider(f"{pname} opacity", 0.0, 1.0, 0.15 if p.role == "reactant" else 1.0, 0.05,
                                         key=f"r3_op_{p.code}")

config = None
with ui.user_errors():
    if not chosen:
        raise ReactomoError("Pick at least one phase to show.")
    if block is not None and label_shape is not None:  # refused here, in a sentence, before any job is queued
        check_block(block, label_shape, int(factor))
    config = RenderConfig(phases=tuple(phases.by_name(n).code for n in chosen), block=block, factor=int(factor),
                          max_triangles=int(budget), opacity=opacity)
if config is None:
    st.stop()


# ------------------------------------------------------------------------------------------------ the views
def active_job(proj, seg: str, k: int):
    for job in list_jobs(proj.root, kind=KIND):
        if job.is_active:
            return job
    return None


@st.fragment(run_every=1.0)
def progress(proj, job_id: str, key: str) -> None:
    job = read_job(proj.root, job_id)
    if not job.is_active:
        st.rerun()
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    what = (f"3D numbers of every step of '{job.params.get('name')}'" if job.kind == OVER_TIME_KIND
            else f"Meshing step {job.params.get('step')} of '{job.params.get('name')}'")
    c1.progress(min(max(float(job.progress), 0.0), 1.0), text=f"{what}: {ui.job_message(proj.root, job)}")
    if c2.button("Stop", icon=":material/stop_circle:", key=f"r3_stop_{key}", width="stretch"):
        with ui.user_errors():
            request_cancel(proj.root, job_id)


def view(column, proj, seg: str, k: int, key: str):
    """Show the cached render, or start (or follow) its job; returns the render when shown."""
    with column:
        st.markdown(f"**{proj.name} / {seg}, {step_label(k, proj.times_s(), [x.name for x in proj.scans()])}**")
        result = None
        with ui.user_errors():
            result = cached_render(proj, seg, k, config)
        if result is not None:
            legend = " &nbsp; ".join(
                f'<span style="color:{phases.by_name(n).colour}">&#9632;</span> {n}' for n, count in result.record["triangles"].items()
                if count and n in phases.names) or "nothing of the chosen phases in this block"
            st.markdown(f'<span style="font-size:0.9em">{legend} &nbsp;·&nbsp; axes in µm</span>',
                        unsafe_allow_html=True)
            st.iframe(result.html_text(), height=VIEW_HEIGHT if second is None else SIDE_VIEW_HEIGHT)  # our own export, made on the server: trusted HTML
            st.caption(result.caption())
            e1, e2, e3 = st.columns(3)
            e1.download_button("PNG", result.file_bytes("view.png") or b"", file_name=f"{proj.name}-{seg}-t{k:03d}.png",
                               mime="image/png", icon=":material/image:", key=f"r3_png_{key}", width="stretch")
            e2.download_button("HTML (offline)", result.html_text(), file_name=f"{proj.name}-{seg}-t{k:03d}.html",
                               mime="text/html", icon=":material/view_in_ar:", key=f"r3_html_{key}", width="stretch",
                               help="One self-contained file: opens in any browser without Reactomo or a network.")
            e3.download_button("Surfaces (.vtp .ply .stl)", result.surfaces_zip(),
                               file_name=f"{proj.name}-{seg}-t{k:03d}-surfaces.zip", mime="application/zip",
                               icon=":material/download:", key=f"r3_zip_{key}", width="stretch",
                               help="In µm, for ParaView, Blender or a 3D printer; with the 3D numbers.")
            grey = result.file_bytes("volume.png")
            if grey:
                with st.expander("Grey values of the same block (volume rendering)"):
                    st.image(grey, caption="The scan's grey values, windowed to their 1st-99th percentiles, seen from "
                                           "the same camera.")
            return result
        params = {"name": seg, "step": int(k), "config": config.to_dict()}
        # the last job of exactly this view: one that failed is said, and queued again only when asked (queueing it
        # again by itself would fail again, and again, without the page ever showing why)
        same = json.dumps(params, sort_keys=True)  # as stored (tuples become lists)
        last = next((j for j in list_jobs(proj.root, kind=KIND) if json.dumps(j.params, sort_keys=True) == same), None)
        failed = last is not None and last.status in ("failed", "interrupted")
        job = None
        with ui.user_errors():
            job = active_job(proj, seg, k)
            if job is None and not failed:
                submit_job(proj, KIND, params, title=f"3D view of {seg}, step {k}")
                st.rerun()
        if job is not None:
            if job.params.get("name") == seg and int(job.params.get("step", -1)) == k:
                progress(proj, job.id, key)
            else:
                st.info(f"Waiting for the 3D view of step {job.params.get('step')} to finish; this one is next.")
                progress(proj, job.id, key)
        elif failed:
            st.error(f"The 3D view of step {k} with these settings {last.status}: {ui.plain(last.error or 'no reason recorded')}",
                     icon=":material/error:")
            if st.button("Try again", icon=":material/refresh:", key=f"r3_retry_{key}"):
                with ui.user_errors():
                    submit_job(proj, KIND, params, title=f"3D view of {seg}, step {k}")
                    st.rerun()
        return None


if second is None:
    results = [(project.name, step, view(st.container(), project, name, step, "a"))]
else:
    left, right = st.columns(2, gap="medium")
    results = [(project.name, step, view(left, project, name, step, "a")),
               (second[0].name, second[2], view(right, second[0], second[1], second[2], "b"))]

# ------------------------------------------------------------------------------------------------ 3D numbers
shown = [(pname, k, r) for pname, k, r in results if r is not None]
if shown:
    st.subheader("3D numbers")
    rows = []
    for pname, k, r in shown:
        for row in r.numbers:
            rows.append({"view": f"{pname}, step {k}", **row})
    df = numbers_table(pd.DataFrame(rows).drop(columns=["code", "voxels"], errors="ignore").rename(columns=COLUMNS))
    # one column per phase (and view), one row per number: narrow enough to read without scrolling sideways
    views, names = df.pop("view"), df.pop("Phase")
    df.index = list(names) if views.nunique() == 1 else [f"{v} · {p}" for v, p in zip(views, names)]
    table = df.T.fillna("–").astype(str).rename_axis("Number")
    # every row in sight (the percolation rows were scrolled out of a fixed-height box) and the numbers' names whole
    st.dataframe(table, width="stretch", height=TABLE_ROW_PX * (len(table) + 1) + 3,
                 column_config={"_index": st.column_config.Column("Number", width="large")})
    st.caption(f"Method. {METHOD}")
    for i, (pname, k, r) in enumerate(shown):
        n1, n2 = st.columns(2)
        n1.download_button(f"numbers.csv ({pname}, step {k})", r.file_bytes("numbers.csv") or b"",
                           file_name=f"{pname}-t{k:03d}-numbers.csv", mime="text/csv", icon=":material/download:",
                           key=f"r3_num_{i}", width="stretch")
        n2.download_button(f"objects.csv, one row per object ({pname}, step {k})", r.file_bytes("objects.csv") or b"",
                           file_name=f"{pname}-t{k:03d}-objects.csv", mime="text/csv", icon=":material/download:",
                           key=f"r3_obj_{i}", width="stretch")


# ------------------------------------------------------------------------------------------------ over time
st.subheader("3D numbers over time")
over = None
with ui.user_errors():
    over = cached_numbers_over_time(project, name, config)
if over is None:
    running = next((j for j in list_jobs(project.root, kind=OVER_TIME_KIND) if j.is_active), None)
    if running is not None:
        progress(project, running.id, "over")
    elif len(steps) < 2:
        st.caption(f"'{name}' has one segmented step, so there is nothing to follow over time: segment more steps "
                   "(Segment page) to see the crystals and the pore network grow.")
    else:
        st.caption(f"The same numbers for the same block at every segmented step of '{name}' ({len(steps)} steps), "
                   "computed in the background without meshing for the view: how the crystals and the pore network "
                   "grow and connect.")
        if st.button(f"Compute for all {len(steps)} steps", icon=":material/timeline:", key="r3_over_go"):
            with ui.user_errors():
                submit_job(project, OVER_TIME_KIND, {"name": name, "config": config.to_dict()},
                           title=f"3D numbers over time of {name}")
                st.rerun()
        last = next(iter(list_jobs(project.root, kind=OVER_TIME_KIND)), None)
        if last is not None and last.status in ("failed", "interrupted") and last.params.get("name") == name:
            st.error(f"The last computation of the numbers over time {last.status}: "
                     f"{ui.plain(last.error or 'no reason recorded')}", icon=":material/error:")
else:
    columns = [c for c in OVER_TIME_COLUMNS if any(r.get(c) is not None for r in over.rows)]
    metric = st.selectbox("Number", columns, key="r3_over_metric",
                          format_func=lambda c: OVER_TIME_COLUMNS[c][0] + (f" ({OVER_TIME_COLUMNS[c][1]})"
                                                                           if OVER_TIME_COLUMNS[c][1] else ""))
    lab, unit = OVER_TIME_COLUMNS[metric]
    st.plotly_chart(numbers_over_time_chart(over.rows, metric, label=lab, unit=unit, phases=phases,
                                            percent=metric in ("volume_fraction", "largest_cluster_share")),
                    width="stretch")
    table = pd.DataFrame(over.rows).drop(columns=["code", "voxels"], errors="ignore")
    if "time_s" in table.columns:  # minutes, as on the chart above and every other page
        table["time_s"] = table["time_s"] / 60.0
    table = table.rename(columns={"step": "Step", "time_s": "Time (min)", **COLUMNS})
    st.dataframe(numbers_table(table), hide_index=True, width="stretch")
    st.caption(f"{over.caption()} Method. {METHOD}")
    st.download_button("numbers_over_time.csv", over.csv_text(), file_name=f"{project.name}-{name}-numbers-over-time.csv",
                       mime="text/csv", icon=":material/download:", key="r3_over_csv")
