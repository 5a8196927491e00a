"""Label: brush phase labels over slices of a time step; every stroke is saved to the project at once."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

import ui
from core.charts import overlay_labels, png_data_uri, window_to_uint8
from core.errors import ReactomoError
from core.workflow.labels import (
    LabelStore,
    eraser_colour,
    import_demo_scribbles,
    read_canvas_png,
    stroke_labels,
    suggest_slices,
)

ui.page_setup("Label")
project = ui.require_project()
ui.sidebar_project(project)

# Components v2 must be imported inside a running Streamlit script (STACK.md), never at module level elsewhere.
from streamlit_drawable_canvas import st_canvas  # noqa: E402

log = logging.getLogger("reactomo.pages.label")

WINDOWS = (128, 256, 512, 768)  # px of the scan shown at once (a movable window, so 2016² works at full resolution)
ZOOMS = (1, 2, 3, 4, 6, 8)  # canvas pixels per scan pixel
MAX_CANVAS = 2048  # px: larger canvases are slow to send back after every stroke
HISTORY = 50  # undo steps kept per slice

st.title("Label")
scans = project.scans()
if not scans:
    st.info("This project has no scans yet. Open them (or generate the demo) on the Data page first.")
    st.markdown('<a href="./data" target="_self">Go to the Data page</a>', unsafe_allow_html=True)
    st.stop()

ss = st.session_state
phases = project.phases()
store = LabelStore(project)
demo = project.demo()
times = project.times_s()
nz, ny, nx = scans[0].shape
vs = project.voxel_size_um()
ERASER = eraser_colour([p.colour for p in phases])
PALETTE = {p.code: p.colour for p in phases} | {0: ERASER}


# ------------------------------------------------------------------------------------------- session state
def _reset_view() -> None:
    default_step = int(demo["label_step"]) if demo and 0 <= int(demo.get("label_step", -1)) < len(scans) else len(scans) // 2
    labelled = store.step_slices(default_step)
    demo_slices = demo.get("label_slices", []) if demo and default_step == demo.get("label_step") else []
    ss["label_step"] = default_step
    ss["label_z"] = int((labelled or demo_slices or suggest_slices(3, nz))[0])
    for key in ("label_y0", "label_x0", "label_window", "label_zoom", "label_quick"):
        ss.pop(key, None)


if ss.get("label_project") != project.name:  # one place for the page's state; a new project starts afresh
    ss["label_project"] = project.name
    ss["label_round"] = 0  # part of the canvas key: bumped to replace the canvas by an empty one
    ss["label_history"] = {}  # (step name, z) -> [Edit, ...] for undo
    ss["label_active"] = None  # the canvas on screen: its key and the window it shows
    ss["label_canvases"] = {}  # recent canvas keys -> the window each showed and the digest of its saved drawing
    ss["label_upload_round"] = 0
    ss["label_dirty"] = False  # the canvas on screen still shows strokes that are saved by now
    ss.pop("label_flash", None)
    _reset_view()
if focus := ss.pop("label_focus", None):  # sent by the Ground truth page: "label more where it is unsure"
    ss["label_step"] = int(focus["step"])
    ss["label_z"] = int(focus["z"])
    for key in ("y0", "x0", "window"):
        if key in focus:
            ss[f"label_{key}"] = int(focus[key])
if goto := ss.pop("label_goto", None):  # set by buttons further down, applied before the widgets exist
    ss["label_step"], ss["label_z"] = goto
ss["label_step"] = min(max(int(ss.get("label_step", 0)), 0), len(scans) - 1)
ss["label_z"] = min(max(int(ss.get("label_z", 0)), 0), nz - 1)


def _history(step: int, z: int) -> list:
    """The slice's saved changes that Undo takes back (kept in the project, so a reload keeps them)."""
    return store.undo_history(step, z)


def _flash(kind: str, text: str) -> None:
    """Remember a one-line status ("saved", "info" or "error") to show under the canvas."""
    ss["label_flash"] = (kind, f"{text.rstrip('.')} · {time.strftime('%H:%M:%S')}" if kind == "saved" else text)


def _describe(edit) -> str:
    parts = []
    for code, n in sorted(edit.added().items()):
        parts.append(f"{n:,} px erased" if code == 0 else f"{n:,} px of {phases.by_code(code).name}")
    return ", ".join(parts)


# ------------------------------------------------------------------- save the strokes drawn since the last run
# The canvas sends its drawing (the strokes alone, RGBA) after each mouse-up. The strokes are mapped back to scan
# pixels through the window that canvas showed and saved at once; the background is rebuilt from the stored labels.
#
# When the canvas is replaced by a fresh one (a new key), a stroke drawn on the old one in the ~0.6 s before that
# is lost (the component drops its pending send when it unmounts; measured in Chromium). So after a phase stroke
# the canvas is kept: its next drawing holds the old strokes again, which re-paint nothing (same codes) and are
# skipped by digest when unchanged. It is replaced (strokes shown through the background only) on the next rerun
# without a new drawing (any change of a control), and at once after erasing, undo, clear or import, so that
# erased pixels never stay covered by eraser-coloured strokes.
def _save_drawing(data: str, g: dict) -> set[int]:
    """Save the strokes of one canvas drawing (a PNG data URI) drawn on window ``g``; return the codes brushed."""
    started = time.perf_counter()
    try:
        strokes = stroke_labels(read_canvas_png(data), zoom=g["zoom"], palette=PALETTE)[: g["h"], : g["w"]]
        codes = {int(c) for c in np.unique(strokes) if c >= 0}
        if not codes:
            return codes
        edit = store.paint(g["step"], g["z"], strokes, origin=(g["y0"], g["x0"]))
        if edit is not None:
            store.push_undo(edit, keep=HISTORY)
            took = time.perf_counter() - started
            _flash("saved", f"Saved {_describe(edit)} on {scans[g['step']].name} z {g['z']} ({took:.2f} s).")
        else:
            _flash("info", "That stroke changed nothing: those pixels already had that label.")
        return codes
    except ReactomoError as exc:
        _flash("error", f"The stroke was not saved: {exc}")
    except Exception as exc:  # noqa: BLE001 - the page must stay usable; the log keeps the traceback
        log.exception("saving a stroke failed")
        _flash("error", f"The stroke was not saved ({type(exc).__name__}: {exc}); the server log has details.")
    return {0}  # replace the canvas: what it shows was not saved


def _fresh_canvas() -> None:
    """Replace the canvas by an empty one on this run (its strokes are in the stored labels by now)."""
    ss["label_round"] += 1
    ss["label_dirty"] = False


# Recent canvases are checked too, oldest first: a drawing sent by a canvas just before it was replaced arrives
# under its old key, with the window it was drawn on.
new_drawing = False
for canvas_key, info in list(ss["label_canvases"].items()):
    value = ss.get(canvas_key)
    data = ((value or {}).get("drawing") or {}).get("data") if isinstance(value, dict) else None
    if not data:
        continue
    digest = hashlib.md5(data.encode()).hexdigest()
    if digest != info["saved"]:
        info["saved"] = digest
        codes = _save_drawing(data, info["geometry"])
        if codes:
            new_drawing = True
            if 0 in codes:
                _fresh_canvas()
            else:
                ss["label_dirty"] = True
if ss.get("label_dirty") and not new_drawing:
    _fresh_canvas()

# ------------------------------------------------------------------------------------------------ header
scan_text = f"{len(scans)} steps · {nz}×{ny}×{nx} voxels (z×y×x) · voxel {vs:g} µm"
st.caption(
    f"Project **{project.name}** · {scan_text}. Brush a few pixels of every phase on a few XY slices; the random "
    "forest learns the phases from them. Every stroke is saved to the project as soon as you release the mouse."
)

# ------------------------------------------------------------------------------------------------ step and slice
pick_step, pick_z, pick_quick = st.columns([2, 1, 4], vertical_alignment="bottom")
step = pick_step.selectbox(
    "Time step",
    list(range(len(scans))),
    format_func=lambda i: f"{scans[i].name} · t = {times[i] / 60:.1f} min"
    + (" · demo label step" if demo and i == demo.get("label_step") else ""),
    key="label_step",
)
labelled = store.step_slices(step)
demo_slices = [int(v) for v in demo.get("label_slices", [])] if demo and step == demo.get("label_step") else []
if demo_slices:
    suggested = demo_slices  # the slices the demo's own scribbles are on
else:
    suggested = suggest_slices(min(13, max(3, nz // 16)), nz)  # the study labelled 13 slices
quick = sorted(set(suggested) | set(labelled))


def _pick_quick() -> None:
    if ss.get("label_quick") is not None:
        ss["label_z"] = int(ss["label_quick"])


z = pick_z.number_input("Slice z", min_value=0, max_value=nz - 1, step=1, key="label_z",
                        help=f"Any XY slice from 0 to {nz - 1}.")
ss["label_quick"] = z if z in quick else None
pick_quick.pills(
    ("The demo's scribbled slices" if suggested == demo_slices else "Suggested slices (evenly spaced, away from the ends)")
    + " · ● = labelled",
    quick,
    format_func=lambda v: f"{'● ' if v in labelled else ''}z {v}",
    key="label_quick",
    on_change=_pick_quick,
)

# ------------------------------------------------------------------------------------------------ controls
controls, view = st.columns([1.3, 3], gap="large")  # wide enough for "bassanite (2)" at 900 px with the sidebar
with controls:
    st.markdown("**Brush**")
    options = [p.code for p in phases] + [0]
    ss.setdefault("label_code", options[0])
    if ss["label_code"] not in options:
        ss["label_code"] = options[0]
    code = st.radio(
        "Paint",
        options,
        format_func=lambda c: (
            f':color[■■]{{foreground="{ERASER}"}} eraser (unlabel)'
            if c == 0
            else f':color[■■]{{foreground="{phases.by_code(c).colour}"}} {phases.by_code(c).name} ({c})'
        ),
        key="label_code",
        label_visibility="collapsed",
    )
    brush = st.slider("Brush diameter (scan px)", 1, 40, 3, key="label_brush",
                      help=f"1 px = {vs:g} µm. The stroke is drawn this wide in scan pixels at any zoom.")
    opacity = st.slider("Label overlay opacity", 0.0, 1.0, 0.6, 0.05, key="label_opacity",
                        help="How strongly the saved labels tint the slice (0 hides them).")
    lo_auto, hi_auto, vmin, vmax = ui.display_range(scans[step])
    if st.toggle("Auto contrast (0.5–99.5 %)", value=True, key="label_auto_contrast",
                 help="Off: choose the grey window yourself; a narrow window around the gypsum and bassanite peaks "
                      "(see the Data page's histograms) makes the two easier to tell apart."):
        grey_window = (lo_auto, hi_auto)
    else:
        grey_window = st.slider("Display window (grey value)", vmin, vmax, (lo_auto, hi_auto), key="label_grey_window")

    history = _history(step, z)
    b1, b2 = st.columns(2)
    if b1.button("Undo", icon=":material/undo:", disabled=not history, width="stretch",
                 help="Undo the last change on this slice (strokes, erasing, clearing); saved at once."):
        with ui.user_errors("Nothing was undone: "):
            edit = store.undo(step, z)
            _fresh_canvas()
            _flash("saved", f"Undid {_describe(edit)} on {scans[step].name} z {z}.")
            st.rerun()
    with b2.popover("Clear", icon=":material/delete_sweep:", help="Remove every label of this slice", disabled=z not in labelled,
                    width="stretch"):
        st.markdown(f"Remove **every label** of {scans[step].name} z {z}? **Undo** brings them back.")
        if st.button(f"Yes, clear z {z}", type="primary", key="label_clear_confirm"):
            with ui.user_errors("The slice was not cleared: "):
                edit = store.clear(step, z)
                if edit is not None:
                    store.push_undo(edit, keep=HISTORY)
                _fresh_canvas()
                _flash("saved", f"Cleared {scans[step].name} z {z}" + (f" ({edit.pixels:,} px)." if edit else "."))
                st.rerun()
    st.caption(f"{len(history)} change{'s' if len(history) != 1 else ''} to undo on this slice." if history
               else "Nothing to undo on this slice yet.")

    st.markdown("**View**")
    full = max(ny, nx)
    windows = [w for w in WINDOWS if w < full] + ([full] if full <= 1024 else [])
    ss.setdefault("label_window", windows[min(1, len(windows) - 1)] if full > 1024 else windows[-1])
    if ss["label_window"] not in windows:
        ss["label_window"] = windows[-1]
    win = st.segmented_control(
        "Window (scan px)", windows, key="label_window",
        format_func=lambda w: "whole slice" if w == full else f"{w}",
        help="Label a large slice at full resolution through a movable window.",
    ) or windows[-1]
    h, w = min(win, ny), min(win, nx)
    zooms = [k for k in ZOOMS if max(h, w) * k <= MAX_CANVAS] or [1]
    ss.setdefault("label_zoom", max([k for k in zooms if max(h, w) * k <= 640] or [1]))
    if ss["label_zoom"] not in zooms:
        ss["label_zoom"] = zooms[-1]
    zoom = st.select_slider("Zoom", zooms, key="label_zoom", format_func=lambda k: f"{k}×",
                            help="Screen pixels per scan pixel.") if len(zooms) > 1 else zooms[0]

    ss["label_y0"] = min(max(int(ss.get("label_y0", (ny - h) // 2)), 0), ny - h)
    ss["label_x0"] = min(max(int(ss.get("label_x0", (nx - w) // 2)), 0), nx - w)

    def _pan(dy: float, dx: float) -> None:
        ss["label_y0"] = int(min(max(ss["label_y0"] + dy * h, 0), ny - h))
        ss["label_x0"] = int(min(max(ss["label_x0"] + dx * w, 0), nx - w))

    if h < ny:
        st.slider("Window top y (px)", 0, ny - h, key="label_y0", step=max(1, h // 32))
    if w < nx:
        st.slider("Window left x (px)", 0, nx - w, key="label_x0", step=max(1, w // 32))
    if h < ny or w < nx:
        p1, p2, p3, p4 = st.columns(4)
        p1.button("", icon=":material/arrow_back:", key="label_pan_left", on_click=_pan, args=(0, -0.5),
                  help="Move the window left by half its width", disabled=ss["label_x0"] == 0)
        p2.button("", icon=":material/arrow_upward:", key="label_pan_up", on_click=_pan, args=(-0.5, 0),
                  help="Move the window up by half its height", disabled=ss["label_y0"] == 0)
        p3.button("", icon=":material/arrow_downward:", key="label_pan_down", on_click=_pan, args=(0.5, 0),
                  help="Move the window down by half its height", disabled=ss["label_y0"] == ny - h)
        p4.button("", icon=":material/arrow_forward:", key="label_pan_right", on_click=_pan, args=(0, 0.5),
                  help="Move the window right by half its width", disabled=ss["label_x0"] == nx - w)
    y0, x0 = int(ss["label_y0"]), int(ss["label_x0"])

# ------------------------------------------------------------------------------------------------ canvas
with view:
    geometry = {"step": int(step), "z": int(z), "y0": y0, "x0": x0, "h": h, "w": w, "zoom": int(zoom)}
    canvas_ok = False
    with ui.user_errors():
        grey = ui.read_slice(scans[step], 0, int(z))
        labels = store.get(step, z)
        crop = window_to_uint8(grey[y0 : y0 + h, x0 : x0 + w], *grey_window)
        rgb = overlay_labels(np.repeat(crop[:, :, None], 3, axis=2), labels[y0 : y0 + h, x0 : x0 + w],
                             phases=phases, opacity=float(opacity))
        background = png_data_uri(np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1))
        canvas_ok = True
    if canvas_ok:
        # The key changes when the canvas is to be replaced by an empty one (label_round) and with the window, so a
        # drawing is only ever mapped back through the window it was drawn on.
        digest = hashlib.md5(repr(sorted(geometry.items())).encode()).hexdigest()[:10]
        key = f"label_canvas_{ss['label_round']}_{digest}"
        colour = PALETTE[int(code)]
        tool = "the eraser" if code == 0 else phases.by_code(int(code)).name
        st.caption(
            f"**{scans[step].name}** · t = {times[step] / 60:.1f} min · XY slice **z {z}** · showing x {x0}–{x0 + w - 1}, "
            f"y {y0}–{y0 + h - 1} of {nx}×{ny} px ({w * vs:,.0f}×{h * vs:,.0f} µm) at {zoom}× · "
            f"painting with **{tool}**, {brush} px ({brush * vs:g} µm) wide. Draw with the mouse; each stroke is saved "
            "when you release the button."
        )
        st.caption("The canvas's own toolbar (undo, redo, bin), shown on hover, only acts on a stroke not yet saved; "
                   "every stroke is saved when the mouse is released, so use **Undo** and **Clear** on the left.")
        st.space("small")  # room for the canvas's own toolbar, which floats above it on hover
        st_canvas(  # wider than its column (a narrow window, the sidebar open), it scrolls sideways inside
            fill_color="rgba(0, 0, 0, 0)",
            stroke_width=max(2, int(brush) * int(zoom)),
            stroke_color=colour,
            background_image=background,
            update_streamlit=True,
            width=w * zoom,
            height=h * zoom,
            drawing_mode="freedraw",
            return_image_data=True,
            key=key,
        )
        ss["label_active"] = {"key": key, "geometry": geometry}
        canvases = ss["label_canvases"]
        canvases[key] = {"geometry": geometry, "saved": canvases.pop(key, {}).get("saved")}
        for old in list(canvases)[:-4]:
            del canvases[old]
    # The last change stays on screen until the next one (each new canvas causes one extra rerun when it loads).
    if flash := ss.get("label_flash"):
        kind, text = flash
        if kind == "error":
            st.error(text, icon=":material/error:")
        else:
            icon = ":green[:material/cloud_done:]" if kind == "saved" else ":blue[:material/info:]"
            st.markdown(f"{icon} {text}")

# ------------------------------------------------------------------------------------------------ overview
with controls:
    if canvas_ok and (h < ny or w < nx):
        st.markdown("**Where the window is**")
        with ui.user_errors():
            k = max(1, int(np.ceil(max(ny, nx) / 240)))
            small = window_to_uint8(grey[::k, ::k], *grey_window)
            thumb = np.repeat(small[:, :, None], 3, axis=2)
            ly, lx = (ny // k) * k, (nx // k) * k
            lab_small = labels[:ly, :lx].reshape(ny // k, k, nx // k, k).max(axis=(1, 3))
            thumb[: lab_small.shape[0], : lab_small.shape[1]] = overlay_labels(
                thumb[: lab_small.shape[0], : lab_small.shape[1]], lab_small, phases=phases, opacity=0.8)
            r0, r1 = y0 // k, min((y0 + h - 1) // k, thumb.shape[0] - 1)
            c0, c1 = x0 // k, min((x0 + w - 1) // k, thumb.shape[1] - 1)
            box = (255, 191, 0)
            thumb[r0, c0 : c1 + 1] = box
            thumb[r1, c0 : c1 + 1] = box
            thumb[r0 : r1 + 1, c0] = box
            thumb[r0 : r1 + 1, c1] = box
            st.image(thumb, caption=f"Whole slice z {z}; the yellow box is the window.", width="stretch")

# ------------------------------------------------------------------------------------------------ counters
st.subheader("Labelled so far")
with ui.user_errors():
    counts = store.counts()
    total = sum(c.pixels for c in counts.values())
    n_slices = len(store.slices())
    rows = [
        {
            " ": "",
            "phase": p.name,
            "code": p.code,
            "labelled pixels": counts[p.code].pixels,
            "slices": counts[p.code].slices,
            "share (%)": 100.0 * counts[p.code].pixels / total if total else 0.0,
        }
        for p in phases
    ]
    table = pd.DataFrame(rows)
    colours = [p.colour for p in phases]
    styled = (
        table.style.hide(axis="index")
        .apply(lambda col: [f"background-color: {c}; min-width: 2.5rem" for c in colours], subset=[" "])
        .format({"labelled pixels": "{:,}", "share (%)": "{:.1f}"})
    )
    t1, t2 = st.columns([3, 2], gap="large")
    t1.table(styled)
    with t2:
        st.metric("Labelled pixels (all phases)", f"{total:,}",
                  help=f"{total * vs * vs / 1e6:.4f} mm² of slice area at {vs:g} µm per pixel.")
        st.caption(f"On {n_slices} slice{'s' if n_slices != 1 else ''} in all · this step: "
                   + (", ".join(f"z {v}" for v in labelled) if labelled else "no labelled slice yet") + ".")
    missing = [p.name for p in phases if counts[p.code].pixels == 0]
    if missing:
        st.warning(
            f"No labels yet for {', '.join(missing)}: brush a few pixels of every phase (the random forest can only "
            "find phases it has seen)" + (", or import the demo's scribbles below." if demo else "."),
            icon=":material/warning:",
        )

# ------------------------------------------------------------------------------------------------ import / export
with st.expander("Import or export labels (TIFF)", icon=":material/swap_vert:"):
    e1, e2 = st.columns(2, gap="large")
    with e1:
        st.markdown(f"**Export** the labels of {scans[step].name}")
        st.caption(f"One multi-page uint8 TIFF of {nz}×{ny}×{nx} (z×y×x), 0 = unlabelled, phase codes as in the "
                   "table above; opens in Fiji/ImageJ.")
        export_step = int(step)

        def _export() -> bytes:
            with tempfile.TemporaryDirectory() as tmp:
                out = store.export_tiff(Path(tmp) / "labels.tif", export_step)
                return out.read_bytes()

        st.download_button(
            "Download label TIFF", data=_export, file_name=f"{project.name}_{scans[step].name}_labels.tif",
            mime="image/tiff", icon=":material/download:", on_click="ignore", disabled=not labelled,
            key="label_download",
        )
    with e2:
        st.markdown(f"**Import** a label TIFF into {scans[step].name}")
        upload = st.file_uploader("Label TIFF (z, y, x), uint8, 0 = unlabelled", type=["tif", "tiff"],
                                  key=f"label_upload_{ss['label_upload_round']}")
        replace = st.radio("Existing labels of this step", [True, False], horizontal=True, key="label_import_mode",
                           format_func=lambda r: "replace them" if r else "paint the file over them")
        if st.button("Import labels", icon=":material/upload:", disabled=upload is None, key="label_import"):
            with ui.user_errors("Nothing was imported: "):
                fd, tmp_name = tempfile.mkstemp(suffix=".tif", prefix=".label-upload-")
                try:
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(upload.getvalue())
                    changed = store.import_tiff(tmp_name, step, replace=bool(replace))
                except ReactomoError as exc:  # name the user's file, not our temporary copy
                    text = str(exc).replace(tmp_name, f"'{upload.name}'").replace(Path(tmp_name).name, upload.name)
                    raise ReactomoError(text) from None
                finally:
                    Path(tmp_name).unlink(missing_ok=True)
                for zz in changed:  # undo steps recorded before the import no longer apply
                    store.forget_undo(step, zz)
                ss["label_upload_round"] += 1
                _fresh_canvas()
                _flash("saved", f"Imported labels from '{upload.name}' into {scans[step].name}: "
                                f"{len(changed)} slice{'s' if len(changed) != 1 else ''} changed.")
                if changed:
                    ss["label_goto"] = (int(step), int(changed[0]))
                st.rerun()

if demo:
    d1, d2 = st.columns([1, 3], vertical_alignment="center")
    if d1.button("Import the demo's scribbles", icon=":material/science:", key="label_demo",
                 help="The demo generator's own brush strokes, painted over your labels."):
        with ui.user_errors("Nothing was imported: "):
            demo_step, changed = import_demo_scribbles(project)
            for zz in changed:
                store.forget_undo(demo_step, zz)
            _fresh_canvas()
            where = ", ".join(f"z {v}" for v in changed)
            if changed:
                _flash("saved", f"Imported the demo's scribbles into {scans[demo_step].name} ({where}).")
                ss["label_demo_note"] = (f"Imported the demo's scribbles: {len(changed)} slice"
                                         f"{'s' if len(changed) != 1 else ''} of {scans[demo_step].name} ({where}).")
            else:
                _flash("info", "The demo's scribbles are already in your labels.")
            slices_ = changed or list(demo.get("label_slices", [])) or [int(z)]
            ss["label_goto"] = (int(demo_step), int(slices_[0]))
            st.rerun()
    flash = ss.get("label_flash")  # kept until the next change, like the status under the canvas
    if flash and flash[0] == "saved" and flash[1].startswith("Imported the demo's scribbles"):
        d2.success(ss.get("label_demo_note") or flash[1], icon=":material/check_circle:")
    else:
        d2.caption(f"The demo experiment comes with scribbles on {len(demo.get('label_slices', []))} slices of "
                   f"{scans[int(demo.get('label_step', 0))].name}, like a user's first labelling session.")
