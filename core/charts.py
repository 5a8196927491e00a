"""Figure builders shared by the pages and (later) the HTML report: one function makes one figure.

Every function returns a :class:`plotly.graph_objects.Figure` with units on its axes and a legend or colour bar.
No streamlit here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from core.errors import ReactomoError

__all__ = ["histogram_over_time", "histogram_lines", "slice_figure", "AXIS_NAMES", "window_to_uint8", "png_data_uri", "overlay_labels"]

#: For a (z, y, x) volume, the plane shown when slicing along each axis, and its (vertical, horizontal) axes.
AXIS_NAMES = {0: ("XY", "y", "x"), 1: ("XZ", "z", "x"), 2: ("YZ", "z", "y")}

_FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=13)


def _minutes(times_s: Sequence[float]) -> np.ndarray:
    return np.asarray(times_s, dtype=float) / 60.0


def histogram_over_time(
    edges: np.ndarray,
    counts: np.ndarray,
    times_s: Sequence[float],
    *,
    step_names: Sequence[str] | None = None,
    log: bool = True,
    title: str = "Grey-value histogram of every step over time",
) -> go.Figure:
    """Heat map of the grey-value distribution (x) of every time step (y).

    Parameters
    ----------
    edges : ndarray, shape (bins + 1,)
        Bin edges in grey values (the scan's own units: uint8/uint16 counts or float attenuation).
    counts : ndarray, shape (n_steps, bins)
        Fraction of voxels per bin for each step (rows sum to 1).
    times_s : sequence of float, length n_steps
        Time of each step in seconds (shown in minutes).
    step_names : sequence of str, optional
        Shown on hover.
    log : bool
        Colour by log10 of the fraction, so the small phases (pores, celestite) stay visible.
    """
    counts = np.asarray(counts, dtype=float)
    edges = np.asarray(edges, dtype=float)
    if counts.ndim != 2 or edges.shape != (counts.shape[1] + 1,):
        raise ReactomoError(f"Histogram counts of shape {counts.shape} do not match {edges.size} bin edges.")
    if len(times_s) != counts.shape[0]:
        raise ReactomoError(f"Got {len(times_s)} step times for {counts.shape[0]} histograms.")
    centres = 0.5 * (edges[:-1] + edges[1:])
    minutes = _minutes(times_s)
    names = list(step_names) if step_names is not None else [f"step {i}" for i in range(len(minutes))]
    z = np.log10(np.maximum(counts, 1e-7)) if log else counts
    hover = np.array([[n] * counts.shape[1] for n in names])
    fig = go.Figure(
        go.Heatmap(
            x=centres,
            y=minutes if len(minutes) > 1 else None,
            z=z,
            customdata=np.dstack([hover, counts * 100.0]),
            colorscale="Viridis",
            zmin=float(np.percentile(z, 20)) if log else None,
            colorbar=dict(title=dict(text="log10 fraction" if log else "fraction", side="right")),
            hovertemplate="%{customdata[0]}<br>t = %{y:.1f} min<br>grey value %{x:.0f}<br>%{customdata[1]:.3f} % of voxels<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="grey value (scan units)",
        yaxis_title="time (min)",
        font=_FONT,
        margin=dict(l=60, r=20, t=50, b=50),
        height=380,
    )
    return fig


def histogram_lines(
    edges: np.ndarray,
    counts: np.ndarray,
    times_s: Sequence[float],
    *,
    steps: Sequence[int],
    step_names: Sequence[str] | None = None,
    log: bool = True,
    title: str = "Histograms of selected steps",
) -> go.Figure:
    """Overlaid grey-value histograms of a few steps (e.g. first, current, last), coloured by time."""
    counts = np.asarray(counts, dtype=float)
    centres = 0.5 * (np.asarray(edges[:-1], float) + np.asarray(edges[1:], float))
    minutes = _minutes(times_s)
    names = list(step_names) if step_names is not None else [f"step {i}" for i in range(len(minutes))]
    fig = go.Figure()
    span = max(float(minutes.max() - minutes.min()), 1e-9) if len(minutes) else 1.0
    import plotly.colors as pc

    for i in steps:
        if not 0 <= i < counts.shape[0]:
            raise ReactomoError(f"Step {i} does not exist; there are {counts.shape[0]} steps.")
        colour = pc.sample_colorscale("Viridis", [(minutes[i] - minutes.min()) / span])[0]
        fig.add_trace(
            go.Scatter(
                x=centres,
                y=counts[i] * 100.0,
                mode="lines",
                name=f"{names[i]} (t = {minutes[i]:.1f} min)",
                line=dict(color=colour, width=2),
                hovertemplate="grey value %{x:.0f}<br>%{y:.3f} % of voxels<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="grey value (scan units)",
        yaxis_title="voxels per bin (%)",
        yaxis_type="log" if log else "linear",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0.0),
        font=_FONT,
        margin=dict(l=60, r=20, t=70, b=50),
        height=380,
    )
    return fig


def png_data_uri(image: np.ndarray) -> str:
    """Encode a uint8 greyscale ``(rows, cols)`` or RGB(A) ``(rows, cols, 3|4)`` image as a PNG data URI."""
    import base64
    import io

    from PIL import Image

    if image.dtype != np.uint8:
        raise ReactomoError(f"PNG encoding needs a uint8 image; got {image.dtype}.")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def overlay_labels(rgb: np.ndarray, labels: np.ndarray, *, phases, opacity: float = 0.45) -> np.ndarray:
    """Blend phase colours over an RGB uint8 image where ``labels`` is non-zero.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (rows, cols, 3)
    labels : ndarray of integer codes, shape (rows, cols); 0 stays transparent.
    phases : core.phases.PhaseTable
    opacity : float in [0, 1]
    """
    if phases is None:
        raise ReactomoError("A label overlay needs the phase table for its colours.")
    if labels.shape != rgb.shape[:2]:
        raise ReactomoError(f"Labels of shape {labels.shape} do not match the slice of shape {rgb.shape[:2]}.")
    if not 0.0 <= opacity <= 1.0:
        raise ReactomoError(f"The overlay opacity is {opacity}; use a value from 0 to 1.")
    lut = np.zeros((256, 3), dtype=np.float32)
    for code, colour in enumerate(phases.colour_lut()):
        lut[code] = colour
    lab = labels.astype(np.uint8, copy=False)
    mask = (lab > 0)[:, :, None]
    blended = rgb.astype(np.float32) * (1.0 - opacity) + lut[lab] * opacity
    return np.where(mask, blended, rgb).round().astype(np.uint8)


def window_to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map grey values in ``[low, high]`` linearly to 0-255 (clipped); a display window, not a change of data."""
    if not high > low:
        raise ReactomoError(f"The display window needs low < high; got low={low}, high={high}.")
    scaled = (np.asarray(image, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def slice_figure(
    image: np.ndarray,
    *,
    voxel_size_um: float,
    axis: int = 0,
    window: tuple[float, float],
    title: str = "",
    roi: tuple[tuple[int, int], tuple[int, int]] | None = None,
    labels: np.ndarray | None = None,
    phases=None,
    opacity: float = 0.45,
    height: int = 560,
) -> go.Figure:
    """One slice as a zoomable grey image with axes in micrometres.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
        The slice, in scan grey values.
    voxel_size_um : float
        Edge length of one voxel in µm (axes are drawn in µm).
    axis : {0, 1, 2}
        The axis the slice was cut along (0 → XY plane, 1 → XZ, 2 → YZ); names the axes.
    window : (low, high)
        Display window in grey values.
    roi : ((r0, r1), (c0, c1)), optional
        Region of interest in voxel indices of this plane, drawn as a box.
    labels : ndarray of uint8, shape (rows, cols), optional
        Label codes to overlay in the phase colours (0 = unlabelled, left transparent).
    phases : core.phases.PhaseTable, optional
        Colours and names of the label codes (required with ``labels``); one legend entry per phase.
    opacity : float
        Opacity of the label overlay, 0-1.
    """
    if image.ndim != 2:
        raise ReactomoError(f"A slice must be 2D; got an array of shape {image.shape}.")
    plane, vert, horiz = AXIS_NAMES[axis]
    grey = window_to_uint8(image, *window)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if labels is not None:
        rgb = overlay_labels(rgb, labels, phases=phases, opacity=opacity)
    # A PNG data URI keeps a 2016x2016 slice at ~2-4 MB instead of a 12-million-number JSON list.
    fig = go.Figure(
        go.Image(
            source=png_data_uri(rgb),
            dx=voxel_size_um,
            dy=voxel_size_um,
            hovertemplate=f"{horiz} = %{{x:.1f}} µm<br>{vert} = %{{y:.1f}} µm<extra></extra>",
        )
    )
    if roi is not None:
        (r0, r1), (c0, c1) = roi
        fig.add_shape(
            type="rect",
            x0=c0 * voxel_size_um,
            x1=c1 * voxel_size_um,
            y0=r0 * voxel_size_um,
            y1=r1 * voxel_size_um,
            line=dict(color="#ffbf00", width=2, dash="dash"),
            name="region of interest",
        )
    if labels is not None:
        present = set(np.unique(labels).tolist())
        for p in phases:
            if p.code in present:  # legend entries only; the colours are in the image itself
                fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=p.name,
                                         marker=dict(size=11, symbol="square", color=p.colour)))
    fig.update_layout(
        title=title or f"{plane} slice",
        showlegend=labels is not None,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        xaxis_title=f"{horiz} (µm)",
        yaxis_title=f"{vert} (µm)",
        font=_FONT,
        margin=dict(l=60, r=10, t=50, b=50),
        height=height,
    )
    fig.update_xaxes(showgrid=False)
    fig.update_yaxes(showgrid=False, scaleanchor="x")
    return fig
