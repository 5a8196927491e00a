"""Pictures of phase surfaces: a PNG, a self-contained interactive HTML file, and a volume rendering of grey values.

All three are rendered on the server with VTK off-screen (Mesa through EGL on headless machines). The HTML is VTK's
vtk.js scene export: one file with the meshes and the viewer inlined, which opens from ``file://`` with nothing
fetched (tests/test_render_browser.py counts the requests). Two views of the same block get the same camera, so
two steps or two experiments side by side are seen from the same place.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import core.render  # noqa: F401  (sets the headless EGL window before vtk loads)
from core.phases import PhaseTable

__all__ = ["scene", "save_png", "save_html", "offline_html", "volume_png", "WINDOW"]

WINDOW = (900, 700)


def _axes(p, bounds_um: Sequence[float], caption: str, *, color: str) -> None:
    # VTK's axis titles drop "µ", its text actors do not: the unit goes into the caption
    p.show_bounds(bounds=tuple(bounds_um), xtitle="x", ytitle="y", ztitle="z", color=color, font_size=10,
                  location="outer", fmt="%.0f")
    p.add_text(f"axes in µm{'; ' + caption if caption else ''}", position="lower_left", font_size=9, color=color)


def scene(surfaces: dict[int, Any], phases: PhaseTable, *, bounds_um: Sequence[float], opacity: dict[int, float] | None = None,
          window_size: Sequence[int] = WINDOW, caption: str = ""):
    """An off-screen plotter with the surfaces in their phase colours, µm axes and the block's outline.

    ``bounds_um`` is ``(x0, x1, y0, y1, z0, z1)`` of the block, which fixes the camera (the same block gives the same
    view whatever is in it).
    """
    import pyvista as pv

    p = pv.Plotter(off_screen=True, window_size=tuple(window_size))
    p.set_background("white")
    opacity = opacity or {}
    for code, mesh in surfaces.items():
        if mesh.n_cells:
            p.add_mesh(mesh, color=phases.by_code(code).colour, opacity=float(opacity.get(code, 1.0)),
                       smooth_shading=True, name=phases.by_code(code).name)
    box = pv.Box(bounds=tuple(bounds_um))
    p.add_mesh(box, style="wireframe", color="#888888", line_width=1)
    _axes(p, bounds_um, caption, color="#1b2631")
    p.add_legend([(phases.by_code(c).name, phases.by_code(c).colour) for c, m in surfaces.items() if m.n_cells] or
                 [("nothing of the chosen phases in this block", "#888888")], bcolor="white", border=True, size=(0.22, 0.12),
                 loc="upper left", face="rectangle")
    p.camera_position = "iso"
    p.reset_camera(bounds=tuple(bounds_um))
    p.camera.zoom(1.1)
    return p


def _atomic(path: Path, write) -> Path:
    from core.atomic import atomic_write_with

    return atomic_write_with(path, lambda tmp: write(str(tmp)))


def save_png(plotter, path: str | Path) -> Path:
    """The plotter's picture as a PNG (written atomically)."""
    return _atomic(Path(path), lambda tmp: plotter.screenshot(tmp))


#: vtk.js's viewer adds favicons from kitware.github.io; the only network request of the export, taken out.
_FAVICON = "`https://kitware.github.io/vtk-js/icon/favicon-${t}x${t}.png`"
#: And a policy that lets the page load nothing from a network, whatever a future vtk.js adds.
_OFFLINE = ('<meta http-equiv="Content-Security-Policy" content="default-src \'self\' data: blob: '
            '\'unsafe-inline\' \'unsafe-eval\'">')


def offline_html(text: str) -> str:
    """The exported scene made strictly offline: no favicon fetch, and a Content-Security-Policy that allows only
    the file itself, ``data:`` and ``blob:`` (tests/test_render_browser.py counts the requests from ``file://``)."""
    text = text.replace(_FAVICON, '"data:,"')
    head = text.lower().find("<head>")
    if head >= 0:
        text = text[: head + 6] + _OFFLINE + text[head + 6:]
    else:
        text = _OFFLINE + text
    return text


def save_html(plotter, path: str | Path) -> Path:
    """The plotter's scene as one self-contained interactive HTML file (vtk.js; offline; written atomically)."""
    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyvista 0.49 points to trame's exporter, which this uses underneath
            plotter.export_html(tmp)
        Path(tmp).write_text(offline_html(Path(tmp).read_text(encoding="utf-8")), encoding="utf-8")

    return _atomic(Path(path), write)


def volume_png(grey: np.ndarray, path: str | Path, *, spacing_um: float, bounds_um: Sequence[float],
               window_size: Sequence[int] = WINDOW, caption: str = "") -> Path:
    """A volume rendering of a grey-value block, from the same camera as the surfaces.

    Grey values are windowed to their 1st-99th percentiles; the opacity ramp keeps the matrix faint and the bright
    and dark phases visible, on black.
    """
    import pyvista as pv

    g = np.asarray(grey, dtype=np.float32)
    lo, hi = np.percentile(g, [1, 99]) if g.size else (0.0, 1.0)
    scaled = np.clip((g - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    half = spacing_um / 2
    img = pv.ImageData(dimensions=g.shape[::-1], spacing=(spacing_um,) * 3,
                       origin=(bounds_um[0] + half, bounds_um[2] + half, bounds_um[4] + half))
    img.point_data["grey"] = scaled.astype(np.uint8).ravel()
    p = pv.Plotter(off_screen=True, window_size=tuple(window_size))
    p.set_background("black")
    p.add_volume(img, scalars="grey", cmap="gray", opacity=[0, 0, 0.03, 0.15, 0.7], show_scalar_bar=False)
    _axes(p, bounds_um, caption, color="white")
    p.camera_position = "iso"
    p.reset_camera(bounds=tuple(bounds_um))
    p.camera.zoom(1.1)
    try:
        return save_png(p, path)
    finally:
        p.close()
