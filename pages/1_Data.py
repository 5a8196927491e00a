"""Data: open scans (server path, upload or demo), set acquisition settings, browse slices, see the histograms drift."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from core.charts import AXIS_NAMES, histogram_lines, histogram_over_time, slice_figure
from core.workflow.data import generate_demo_into, register_scans
from core.errors import ReactomoError
from core.phases import PhaseTable, pretty_formula
from core.workflow.project import data_roots
from core.imaging.synthetic import DEMO, demo_config
from core.workflow.paths import upload_folder


def _num_text(values) -> list[str]:
    """Numbers with two decimals, "–" for a missing one (e.g. the pore space's density)."""
    return ["–" if v is None or v != v else f"{float(v):.2f}" for v in values]


ui.page_setup("Data")
project = ui.require_project()
ui.sidebar_project(project)

st.title("Data")
scans = project.scans()
manifest = project.manifest
if scans:
    s0 = scans[0]
    st.caption(
        f"Project **{project.name}** · {len(scans)} steps · {'×'.join(map(str, s0.shape))} voxels (z×y×x) · "
        f"{s0.dtype} · voxel {manifest['voxel_size_um']} µm"
    )

# ------------------------------------------------------------------------------------------------ open scans
with st.expander("Open scans", expanded=not scans, icon=":material/folder_open:"):
    tab_path, tab_upload, tab_demo = st.tabs(["Server path", "Upload TIFFs", "Demo experiment"])
    with tab_path:
        roots = ", ".join(f"`{r}`" for r in data_roots())
        st.caption(
            "A folder of multi-page TIFFs (one per time step), a glob such as `/data/run1/scan_*.tif`, one multi-page "
            f"TIFF, a folder of 2D slices (one step), or a folder of such folders (one per step). Allowed data roots: {roots}."
        )
        with st.form("open_path", border=False):
            source = st.text_input("Path on the server", placeholder="/data/experiment/scans")
            times_text = st.text_input("Times of the steps in seconds (optional, comma-separated)",
                                       help="Leave empty to use step × interval.")
            if st.form_submit_button("Open scans", type="primary"):
                bar = st.progress(0.0, text="Opening scans")
                with ui.user_errors():
                    times = None
                    if times_text.strip():
                        try:
                            times = [float(t) for t in times_text.replace(";", ",").split(",") if t.strip()]
                        except ValueError:
                            raise ReactomoError(f"Times must be numbers separated by commas; got '{times_text}'.") from None
                    with project.transaction():
                        found = register_scans(project, source, allowed_roots=data_roots(), times_s=times,
                                               on_progress=ui.progress_callback(bar))
                    st.session_state["data_flash"] = " ".join([f"Opened {len(found)} steps from {source}.", *found.notes])
                    st.rerun()
                bar.empty()
    with tab_upload:
        st.caption("Upload one multi-page TIFF per time step (uint8, uint16 or float32). Files are added to the "
                   "project's `scans/` folder in name order. Up to 500 MB per file: larger scans are opened by "
                   "server path (first tab).")
        # A new key after each successful upload empties the uploader, so files are never added twice.
        files = st.file_uploader("TIFF files", type=["tif", "tiff"], accept_multiple_files=True,
                                 key=f"uploads_{st.session_state.get('upload_round', 0)}")
        if st.button("Add uploaded files as steps", disabled=not files):
            with ui.user_errors():
                upload_dir = upload_folder(project)
                existing = {p.name for p in upload_dir.glob("*")} if upload_dir.exists() else set()
                clash = [f.name for f in files if f.name in existing]
                if clash:
                    raise ReactomoError(f"'{clash[0]}' is already in this project's scans; rename the file or remove the old one first.")
                added = []
                try:
                    for f in files:
                        f.seek(0)
                        added.append(project.import_upload(f.name, f))  # streamed in chunks
                    with project.transaction():
                        notes = register_scans(project, upload_dir).notes
                except BaseException:
                    for p in added:
                        p.unlink(missing_ok=True)
                    raise
                ui.release_uploads(files)  # the project has them on disk: free Streamlit's copy in server memory
                st.session_state["upload_round"] = st.session_state.get("upload_round", 0) + 1
                st.session_state["data_flash"] = " ".join([f"Added {len(added)} uploaded file(s).", *notes])
                st.rerun()
    with tab_demo:
        st.caption("A generated dehydrating-gypsum rock with known truth: gypsum grains, bassanite laths growing "
                   "with new pores, inert celestite, scanned by a simulated synchrotron tomograph (projections with "
                   "photon noise and bad detector columns, filtered back projection) with drift between steps. As hard "
                   "as the study's data: bassanite is only slightly brighter than gypsum.")
        d = DEMO
        with st.form("demo_form", border=False):
            c1, c2, c3 = st.columns(3)
            steps = c1.number_input("Time steps", 2, 500, d.steps)
            seed = c2.number_input("Seed", 0, 2**31 - 1, d.seed)
            interval = c3.number_input("Interval (s)", 1.0, 86400.0, float(d.interval_s))
            c4, c5, c6 = st.columns(3)
            nz = c4.number_input("Z (slices)", 16, 2048, d.shape[0])
            ny = c5.number_input("Y (rows)", 16, 2048, d.shape[1])
            nx = c6.number_input("X (columns)", 16, 2048, d.shape[2])
            replace_ok = st.checkbox("Replace this project's scans with the demo", value=not scans)
            if st.form_submit_button("Generate demo", type="primary"):
                if not replace_ok:
                    st.warning("Tick 'Replace this project's scans with the demo' first; nothing was changed.")
                else:
                    bar = st.progress(0.0, text="Generating the demo experiment")
                    with ui.user_errors():
                        cfg = demo_config(steps=int(steps), shape=(int(nz), int(ny), int(nx)), seed=int(seed), interval_s=float(interval))
                        generate_demo_into(project, cfg, on_progress=ui.progress_callback(bar))
                        st.session_state["data_flash"] = f"Generated the demo experiment ({cfg.steps} steps)."
                        st.rerun()

if msg := st.session_state.pop("data_flash", None):
    st.success(msg, icon=":material/check_circle:")

if not scans:
    st.info("This project has no scans yet. Open them above, or generate the demo experiment.")
    st.stop()

# ------------------------------------------------------------------------------------------------ settings
with st.expander("Acquisition, phases and region of interest", icon=":material/tune:"):
    c1, c2 = st.columns(2)
    with c1:
        with st.form("acq", border=True):
            st.markdown("**Acquisition**")
            vs = st.number_input("Voxel size (µm)", min_value=None, value=float(manifest["voxel_size_um"]), format="%.3f", key="acq_voxel")
            iv = st.number_input("Time between steps (s)", min_value=None, value=float(manifest.get("interval_s", 60.0)), key="acq_interval")
            rings = st.radio("Ring artefacts", ["remove", "keep"], index=0 if project.rings() == "remove" else 1,
                             format_func=lambda m: {"remove": "Remove", "keep": "Keep as reconstructed"}[m],
                             horizontal=True, key="acq_rings",
                             help="Rings (a miscalibrated detector column) are measured on each scan around the "
                                  "rotation axis and subtracted before the forest and the network read it; a model "
                                  "remembers the choice, so new scans are read the same way. The slice viewer shows "
                                  "the scans as reconstructed unless its toggle says otherwise.")
            if st.form_submit_button("Save acquisition settings"):
                with ui.user_errors():
                    with project.transaction():
                        project.set_voxel_size(vs)
                        project.set_interval(iv)
                        project.set_rings(rings)
                    st.session_state["data_flash"] = "Saved the acquisition settings."
                    st.rerun()
    with c2:
        with st.form("roi_form", border=True):
            st.markdown("**Region of interest** (half-open voxel ranges)")
            roi = manifest.get("roi") or {}
            nz_, ny_, nx_ = scans[0].shape
            use_roi = st.checkbox("Restrict the analysis to a box", value=bool(roi))
            cols = st.columns(3)
            vals = {}
            for col, ax, n in zip(cols, "zyx", (nz_, ny_, nx_)):
                a, b = roi.get(ax, [0, n])
                vals[ax] = (col.number_input(f"{ax} from", 0, n, int(a), key=f"roi_{ax}0"),
                            col.number_input(f"{ax} to", 0, n, int(b), key=f"roi_{ax}1"))
            if st.form_submit_button("Save region"):
                with ui.user_errors():
                    project.set_roi({ax: [int(a), int(b)] for ax, (a, b) in vals.items()} if use_roi else None)
                    st.session_state["data_flash"] = "Saved the region of interest." if use_roi else "Using the whole volume."
                    st.rerun()
    with st.form("conditions_form", border=True):
        st.markdown("**Experiment conditions** (free text, shown at the top of the analysis report)")
        have = project.conditions()
        k1, k2, k3 = st.columns(3)
        cond = {"sample": k1.text_input("Sample", have.get("sample", ""), key=f"cond_sample_{project.name}",
                                        placeholder="e.g. Volterra gypsum VG-3"),
                "temperature": k2.text_input("Temperature", have.get("temperature", ""), key=f"cond_temperature_{project.name}",
                                             placeholder="e.g. 120 °C"),
                "pressure": k3.text_input("Pressure", have.get("pressure", ""), key=f"cond_pressure_{project.name}",
                                          placeholder="e.g. 5 MPa pore pressure"),
                "stress": k1.text_input("Stress", have.get("stress", ""), key=f"cond_stress_{project.name}",
                                        placeholder="e.g. 20 MPa differential"),
                "beamline": k2.text_input("Beamline", have.get("beamline", ""), key=f"cond_beamline_{project.name}",
                                          placeholder="e.g. ESRF ID19, 2.75 µm"),
                "notes": k3.text_input("Notes", have.get("notes", ""), key=f"cond_notes_{project.name}")}
        # only what this user changed is written: a field someone else saved meanwhile (another browser, the CLI)
        # is not overwritten by the old value still standing in this form
        shown = st.session_state.get(f"cond_shown_{project.name}", have)
        changed = {k: v for k, v in cond.items() if v != shown.get(k, "")}
        if not st.form_submit_button("Save conditions"):
            st.session_state[f"cond_shown_{project.name}"] = dict(cond)
        else:
            with ui.user_errors():
                project.set_conditions(changed)
                st.session_state[f"cond_shown_{project.name}"] = dict(cond)
                st.session_state["data_flash"] = "Saved the experiment conditions."
                st.rerun()
    st.markdown("**Phase table** (label codes are used everywhere: files, arrays, CLI)")
    table = pd.DataFrame(project.phases().to_dict())
    shown = pd.DataFrame({
        "code": table["code"], "phase": table["name"], "formula": [pretty_formula(f) for f in table["formula"]],
        # written out here, "–" where a phase needs none (the pore space): the grid draws a missing number as "None"
        "role": table["role"], "density (kg/m³)": _num_text(table["density_kg_m3"]),
        "molar mass (g/mol)": _num_text(table["molar_mass_g_mol"]),
        "molar volume (cm³/mol)": _num_text(table["molar_volume_cm3_mol"]),
        "colour": table["colour"],
    })
    st.dataframe(
        shown.style.map(lambda c: f"background-color: {c}; color: {c}", subset=["colour"])
        .set_properties(subset=["density (kg/m³)", "molar mass (g/mol)", "molar volume (cm³/mol)"],
                        **{"text-align": "right"}),
        hide_index=True, width="stretch",
        column_config={"colour": st.column_config.TextColumn("colour", width="small")},
    )
    st.caption("– : not needed for this phase (the pore space has no density; the reaction's water escapes).")
    edit = st.toggle("Edit the phase table", key="phase_edit", value=False)
    if not edit:
        st.caption(f"Reaction: {project.reaction().name}")
    if edit:
        edited = st.data_editor(
            table,
            num_rows="dynamic",
            hide_index=True,
            key="phase_editor",
            column_config={
                "code": st.column_config.NumberColumn("code", min_value=1, max_value=255, step=1),
                "density_kg_m3": st.column_config.NumberColumn("density (kg/m³)"),
                "molar_mass_g_mol": st.column_config.NumberColumn("molar mass (g/mol)"),
                "molar_volume_cm3_mol": st.column_config.NumberColumn("molar volume (cm³/mol)"),
                "role": st.column_config.SelectboxColumn("role", options=["reactant", "product", "pore", "inert", "other"]),
            },
        )
        if st.button("Save phase table"):
            with ui.user_errors():
                rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in edited.to_dict("records")]
                project.set_phases(PhaseTable.from_dict(rows))
                st.session_state["data_flash"] = "Saved the phase table."
                st.rerun()
        st.caption(f"Reaction: {project.reaction().name}")

# ------------------------------------------------------------------------------------------------ viewer
st.subheader("Slice viewer")
times = project.times_s()
controls, view = st.columns([1, 3], gap="medium")
with controls:
    if len(scans) > 1:
        step = st.select_slider(
            "Time step",
            options=list(range(len(scans))),
            value=min(st.session_state.get("view_step", 0), len(scans) - 1),
            format_func=lambda i: f"{scans[i].name} · {times[i] / 60:.1f} min",
            key="view_step",
        )
    else:
        step = 0
    orientation = st.radio("Orientation", [0, 1, 2], format_func=lambda a: AXIS_NAMES[a][0], horizontal=True, key="view_axis")
    n_slices = scans[step].shape[orientation]
    index = st.slider(f"Slice ({'zyx'[orientation]})", 0, n_slices - 1, n_slices // 2, key=f"view_index_{orientation}")
    lo, hi, vmin, vmax = ui.display_range(scans[step])
    auto = st.toggle("Auto contrast (0.5–99.5 %)", value=True, key="view_auto")
    if auto:
        window = (lo, hi)
    else:
        window = st.slider("Display window (grey value)", vmin, vmax, (lo, hi), key="view_window")
    st.caption(f"Window {window[0]:.0f} – {window[1]:.0f}")
    no_rings = st.toggle("Ring artefacts removed", value=False, key="view_rings",
                         help="Show the slice as the forest and the network read it when the project removes ring "
                              "artefacts (measured on the whole scan around the rotation axis; the first view of a "
                              "step takes a moment). Off: as reconstructed.")
    demo = project.demo()
    show_truth = False
    if demo and len(demo.get("truth", [])) == len(scans):
        show_truth = st.toggle("Overlay the demo's known truth", value=False, key="view_truth",
                               help="The generator's true phase of every voxel, in the phase colours.")
        if show_truth:
            opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="view_opacity")

with view:
    with ui.user_errors():
        if no_rings:  # the first view of a step measures its rings on the whole scan (seconds on a big one)
            with st.spinner(f"Measuring the ring artefacts of {scans[step].name} ..."):
                image = ui.read_slice(scans[step], orientation, index, rings="remove")
        else:
            image = ui.read_slice(scans[step], orientation, index)
        roi = manifest.get("roi")
        box = None
        if roi:
            plane_axes = {0: ("y", "x"), 1: ("z", "x"), 2: ("z", "y")}[orientation]
            box = (tuple(roi[plane_axes[0]]), tuple(roi[plane_axes[1]]))
        labels = None
        if show_truth:
            labels = ui.read_file_slice(project.resolve_path(demo["truth"][step]), orientation, index)
        fig = slice_figure(
            image,
            labels=labels,
            phases=project.phases() if show_truth else None,
            opacity=opacity if show_truth else 0.45,
            voxel_size_um=float(manifest["voxel_size_um"]),
            axis=orientation,
            window=window,
            roi=box,
            title=f"{scans[step].name} · t = {times[step] / 60:.1f} min · {AXIS_NAMES[orientation][0]} slice {index}"
                  + (" · ring artefacts removed" if no_rings else ""),
        )
        st.plotly_chart(fig, width="stretch", key="slice_chart")

# ------------------------------------------------------------------------------------------------ histograms
st.subheader("Grey values over time")
st.caption(
    "Every step's grey-value distribution on one axis. Peaks move between steps (intensity drift, and phase "
    "fractions change as gypsum turns into bassanite and pores), which is why one global threshold cannot segment "
    "every step. Histograms are computed from up to 500 000 voxels of evenly spaced slices per step."
)
with ui.user_errors():
    with st.spinner("Computing histograms of every step"):
        edges, counts = ui.histograms(scans)
    names = [s.name for s in scans]
    h1, h2 = st.columns(2)
    h1.plotly_chart(histogram_over_time(edges, counts, times, step_names=names), width="stretch", key="hist_heat")
    chosen = sorted({0, step, len(scans) - 1})
    h2.plotly_chart(histogram_lines(edges, counts, times, steps=chosen, step_names=names,
                                    title="First, viewed and last step"), width="stretch", key="hist_lines")
