"""Figure builders shared by the pages and (later) the HTML report: one function makes one figure.

Every function returns a :class:`plotly.graph_objects.Figure` with units on its axes and a legend or colour bar.
No streamlit here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from core.errors import ReactomoError

__all__ = ["wrap_title", "LEGEND_BELOW", "histogram_over_time", "histogram_lines", "slice_figure", "AXIS_NAMES", "window_to_uint8", "png_data_uri", "overlay_labels",
           "numbers_over_time_chart"]

#: For a (z, y, x) volume, the plane shown when slicing along each axis, and its (vertical, horizontal) axes.
AXIS_NAMES = {0: ("XY", "y", "x"), 1: ("XZ", "z", "x"), 2: ("YZ", "z", "y")}

_FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=13)
#: A legend under the plot, at the figure's foot (the margin grows to hold it): in a narrow column a legend above the
#: plot wraps into rows over the title.
LEGEND_BELOW = dict(orientation="h", yref="container", y=0.0, yanchor="bottom", xanchor="left", x=0.0)


def wrap_title(fig: go.Figure, width: int = 40, longer_than: int = 48) -> go.Figure:
    """Break a title longer than ``longer_than`` characters into lines of at most ``width``, with the top margin grown
    to hold them (a shorter title stays on one line, which a full-width figure reads best).

    Plotly never wraps a title and cuts it at the figure's edge, so in a half-width column (a narrow window, the
    sidebar open) "Classifier uncertainty (1 − max class probability)" read "Classifier uncertainty (1 − max cla"."""
    import textwrap

    text = fig.layout.title.text
    if not text or "<br>" in text or len(text) <= longer_than:
        return fig
    import re

    text = re.sub(r"(\d) (min|s|h|µm|mm³|%)(?=\W|$)", "\\1\u00a0\\2", text)  # "20.0 min" never split,
    text = re.sub(r"\b(step|z) (\d)", "\\1\u00a0\\2", text)  # nor "step 4"
    lines = textwrap.wrap(text, width)
    # the lines hang from the figure's top, and the top margin holds them (about 22 px a line at the title's size)
    fig.update_layout(title=dict(text="<br>".join(lines), yref="container", y=1.0, yanchor="top", pad=dict(t=14)),
                      margin=dict(t=max(fig.layout.margin.t or 0, 22 * len(lines) + 34)))
    return fig


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
        legend=LEGEND_BELOW,
        font=_FONT,
        margin=dict(l=60, r=20, t=50, b=50),  # the legend sits under the plot now
        height=380,
    )
    if log:
        fig.update_yaxes(dtick=1, tickformat="~g")  # one labelled tick per decade (0.01, 0.1, 1)
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
    origin_px: tuple[int, int] = (0, 0),
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
    origin_px : (row, col)
        Where the image's first pixel lies in the scan (a region of interest's corner), so that the axes give the
        scan's own µm positions.
    """
    if image.ndim != 2:
        raise ReactomoError(f"A slice must be 2D; got an array of shape {image.shape}.")
    rows, cols = image.shape
    if rows < 0.6 * cols:  # a flat XZ/YZ slice of a short scan: a box as flat as the image, not a tall empty one
        height = min(height, max(260, int(140 + 900 * rows / cols)))
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
            x0=origin_px[1] * voxel_size_um,
            y0=origin_px[0] * voxel_size_um,
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
        legend=LEGEND_BELOW,
        xaxis_title=f"{horiz} (µm)",
        yaxis_title=f"{vert} (µm)",
        font=_FONT,
        margin=dict(l=60, r=10, t=50, b=50),
        height=height,
    )
    # constrain="domain": in a narrow column the image shrinks, instead of the axes stretching past the image
    fig.update_xaxes(showgrid=False, constrain="domain")
    fig.update_yaxes(showgrid=False, scaleanchor="x", constrain="domain")
    return wrap_title(fig)


def uncertainty_figure(
    uncertainty: np.ndarray,
    *,
    voxel_size_um: float,
    title: str = "Classifier uncertainty (1 − max class probability)",
    height: int = 560,
) -> go.Figure:
    """Heat map of a per-pixel uncertainty in [0, 1] with axes in µm (0 = certain; 1 − 1/n_classes = a coin toss)."""
    if uncertainty.ndim != 2:
        raise ReactomoError(f"An uncertainty map must be 2D; got shape {uncertainty.shape}.")
    rows, cols = uncertainty.shape
    # Heat maps of millions of cells are heavy in the browser; show at most ~1000 px a side (display only).
    step = max(1, int(np.ceil(max(rows, cols) / 1000)))
    u = np.asarray(uncertainty[::step, ::step], dtype=np.float32)
    fig = go.Figure(
        go.Heatmap(
            z=u,
            x=np.arange(u.shape[1]) * step * voxel_size_um,
            y=np.arange(u.shape[0]) * step * voxel_size_um,
            zmin=0.0,
            zmax=1.0,
            colorscale="Viridis",
            colorbar=dict(title=dict(text="uncertainty", side="right")),
            hovertemplate="x = %{x:.1f} µm<br>y = %{y:.1f} µm<br>uncertainty %{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(title=title, xaxis_title="x (µm)", yaxis_title="y (µm)", font=_FONT, height=height,
                      margin=dict(l=60, r=10, t=50, b=50))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showgrid=False, constrain="domain")
    fig.update_xaxes(showgrid=False, constrain="domain")
    return wrap_title(fig)


def feature_importance_chart(names: Sequence[str], importances: Sequence[float], *, top: int = 20) -> go.Figure:
    """Horizontal bars of the ``top`` most important features (mean decrease in impurity, summing to 1)."""
    names = list(names)
    imp = np.asarray(importances, dtype=float)
    if len(names) != imp.size:
        raise ReactomoError(f"Got {len(names)} feature names for {imp.size} importances.")
    order = np.argsort(imp)[::-1][:top][::-1]
    fig = go.Figure(
        go.Bar(x=imp[order] * 100.0, y=[names[i] for i in order], orientation="h", marker_color="#1f5f8b",
               hovertemplate="%{y}: %{x:.1f} %<extra></extra>")
    )
    fig.update_layout(title=f"Feature importance (top {min(top, len(names))})", xaxis_title="importance (%)",
                      yaxis_title="", font=_FONT, height=max(260, 22 * len(order) + 90),
                      margin=dict(l=10, r=10, t=50, b=50))
    return fig


def phase_fraction_chart(fractions: dict, phases, *, title: str = "Phase fractions") -> go.Figure:
    """Bars of each phase's fraction (in %), one colour per phase; ``fractions`` maps phase code → fraction."""
    fig = go.Figure()
    for p in phases:
        frac = float(fractions.get(p.code, 0.0))
        fig.add_trace(go.Bar(x=[p.name], y=[frac * 100.0], name=p.name, marker_color=p.colour,
                             hovertemplate=f"{p.name}: %{{y:.2f}} %<extra></extra>"))
    fig.update_layout(title=title, yaxis_title="fraction of labelled pixels (%)", showlegend=False, font=_FONT,
                      height=320, margin=dict(l=60, r=10, t=50, b=40))
    return wrap_title(fig)


def dice_comparison_chart(dice: dict, phases, *, title: str = "Dice per phase") -> go.Figure:
    """Grouped bars: ``dice`` maps a method name → {phase code: Dice}; NaN (phase absent) is left out."""
    fig = go.Figure()
    palette = ["#1f3a5f", "#b0b7bf", "#6a3d9a", "#8c564b", "#222222"]  # none of them a phase's colour
    for k, (method, per_phase) in enumerate(dice.items()):
        xs, ys = [], []
        for p in phases:
            v = per_phase.get(p.code)
            if v is not None and np.isfinite(v):
                xs.append(p.name)
                ys.append(float(v))
        fig.add_trace(go.Bar(x=xs, y=ys, name=method, marker_color=palette[k % len(palette)],
                             hovertemplate="%{x}: %{y:.3f}<extra>" + method + "</extra>"))
    fig.update_layout(title=title, barmode="group", yaxis_title="Dice", yaxis_range=[0, 1], font=_FONT,
                      height=340 + 22 * len(dice), legend=LEGEND_BELOW, margin=dict(l=60, r=10, t=60, b=40))
    return wrap_title(fig)


def threshold_histogram(values: np.ndarray, ranges: Sequence[dict], phases, *, bins: int = 200,
                        title: str = "Grey values of the labelled slices and the threshold ranges") -> go.Figure:
    """Histogram of grey values with each phase's threshold range shaded in its colour.

    ``ranges`` are dicts ``{"code", "low", "high"}`` (half-open grey ranges, as :mod:`core.labelling.threshold` returns).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ReactomoError("There are no grey values to draw a histogram of.")
    lo, hi = np.percentile(v, [0.01, 99.99])
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi if hi > lo else lo + 1))
    centres = 0.5 * (edges[:-1] + edges[1:])
    fig = go.Figure(go.Scatter(x=centres, y=counts / max(counts.sum(), 1) * 100.0, mode="lines", name="all pixels",
                               line=dict(color="#1b2631", width=1.5),
                               hovertemplate="grey value %{x:.0f}<br>%{y:.3f} %<extra></extra>"))
    for r in ranges:  # named in a legend under the plot: names written in the bands overlapped where bands are narrow
        p = phases.by_code(int(r["code"]))
        fig.add_vrect(x0=max(float(r["low"]), lo), x1=min(float(r["high"]), hi), fillcolor=p.colour, opacity=0.25,
                      line_width=0)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{p.name} range",
                                 marker=dict(size=12, symbol="square", color=p.colour, opacity=0.45)))
    fig.update_layout(title=title, xaxis_title="grey value (scan units)", yaxis_title="pixels per bin (%)",
                      yaxis_type="log", font=_FONT, height=360 + 20 * ((len(ranges) + 2) // 3), legend=LEGEND_BELOW,
                      showlegend=True, margin=dict(l=60, r=10, t=50, b=50))
    fig.update_yaxes(dtick=1, tickformat="~g")  # one labelled tick per decade (0.01, 0.1, 1), not "5 2 1 5 2"
    return wrap_title(fig)


# ---------------------------------------------------------------------------------------------- U-Net training
def _epochs(history: Sequence[dict]) -> list[int]:
    return [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]


def _finite(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _planned_axis(fig: go.Figure, epochs: list, planned: int | None) -> None:
    """While a training runs, the x axis spans every planned epoch: after epoch 1 the chart reads as "1 of 30",
    not as a lone dot in the middle of nowhere."""
    if planned and planned > max(epochs or [0]):
        fig.update_xaxes(range=[0.5, planned + 0.5], dtick=None if planned > 10 else 1)
        if len(epochs) == 1:
            fig.add_annotation(text=f"epoch 1 of {planned}: the curve grows as epochs finish", showarrow=False,
                               xref="paper", yref="paper", x=0.5, y=0.5, font=dict(color="#6b7785"))


def training_curves(history: Sequence[dict], *, best_epoch: int | None = None, planned_epochs: int | None = None,
                    title: str = "Training and validation loss") -> go.Figure:
    """Train and validation loss per epoch (one dict per epoch with ``epoch``, ``train_loss``, ``val_loss``).

    ``best_epoch`` (default: the lowest validation loss) is marked with a dotted line; ``planned_epochs`` (while a
    training runs) sets the x axis to every planned epoch.
    """
    history = list(history)
    epochs = _epochs(history)
    train = [_finite(h.get("train_loss")) for h in history]
    val = [_finite(h.get("val_loss")) for h in history]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=epochs, y=train, mode="lines+markers", name="training loss",
                             line=dict(color="#1f5f8b", width=2), marker=dict(size=5),
                             hovertemplate="epoch %{x}<br>training loss %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=epochs, y=val, mode="lines+markers", name="validation loss",
                             line=dict(color="#f58518", width=2), marker=dict(size=5),
                             hovertemplate="epoch %{x}<br>validation loss %{y:.4f}<extra></extra>"))
    if best_epoch is None and any(v is not None for v in val):
        best_epoch = epochs[int(np.nanargmin([np.nan if v is None else v for v in val]))]
    if best_epoch:
        fig.add_vline(x=best_epoch, line=dict(color="#6b7785", width=1, dash="dot"),
                      annotation_text=f"best epoch {best_epoch}",
                      annotation_position="top left" if best_epoch > (min(epochs) + max(epochs)) / 2 else "top right")
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="loss (dimensionless)", font=_FONT, height=360,
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
                      margin=dict(l=60, r=10, t=70, b=50), hovermode="x unified")
    fig.update_xaxes(rangemode="tozero" if len(epochs) < 2 else "normal", dtick=None if len(epochs) > 10 else 1)
    _planned_axis(fig, epochs, planned_epochs)
    return fig


def validation_dice_curves(history: Sequence[dict], phases, *, planned_epochs: int | None = None,
                           title: str = "Validation Dice per phase") -> go.Figure:
    """Validation Dice of each phase per epoch, in the phase's colour (``val_dice`` maps phase name → Dice or None)."""
    history = list(history)
    epochs = _epochs(history)
    fig = go.Figure()
    for p in phases:
        ys = [_finite((h.get("val_dice") or {}).get(p.name)) for h in history]
        if all(v is None for v in ys):  # absent from the validation slices: say so in the legend, draw nothing
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name=f"{p.name} (not in validation)",
                                     line=dict(color=p.colour, width=2, dash="dot")))
            continue
        fig.add_trace(go.Scatter(x=epochs, y=ys, mode="lines+markers", name=p.name,
                                 line=dict(color=p.colour, width=2), marker=dict(size=5),
                                 hovertemplate=f"epoch %{{x}}<br>{p.name} Dice %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="Dice (0-1)", yaxis_range=[0, 1.02], font=_FONT,
                      height=360, legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
                      margin=dict(l=60, r=10, t=70, b=50), hovermode="x unified")
    fig.update_xaxes(dtick=None if len(epochs) > 10 else 1)
    _planned_axis(fig, epochs, planned_epochs)
    return fig


def numbers_over_time_chart(rows: Sequence[dict], column: str, *, label: str, unit: str, phases,
                            percent: bool = False) -> go.Figure:
    """One line per phase of a 3D number (``column`` of :func:`core.workflow.render.numbers_over_time`'s rows)
    against time in minutes (or the step, when the steps have no times), in the phase colours.

    ``percent`` shows a share (0-1) in %. Steps where the number is undefined (no object of the phase) are gaps."""
    by_phase: dict[str, list[dict]] = {}
    for r in rows:
        by_phase.setdefault(str(r["phase"]), []).append(r)
    timed = bool(rows) and all(r.get("time_s") is not None for r in rows)
    fig = go.Figure()
    for name, rs in by_phase.items():
        rs = sorted(rs, key=lambda r: r["step"])
        xs = [float(r["time_s"]) / 60.0 for r in rs] if timed else [int(r["step"]) for r in rs]
        ys = [None if r.get(column) is None else float(r[column]) * (100.0 if percent else 1.0) for r in rs]
        colour = phases.by_name(name).colour if name in phases.names else None
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, line=dict(color=colour, width=2),
                                 customdata=[r["step"] for r in rs],
                                 hovertemplate=f"{name}, step %{{customdata}}: %{{y:.4g}}"
                                               f"{' %' if percent else (' ' + unit if unit else '')}<extra></extra>"))
    unit_text = "%" if percent else unit
    fig.update_layout(title=f"{label} over time", font=_FONT, height=340,
                      xaxis_title="time (min)" if timed else "step",
                      yaxis_title=f"{label} ({unit_text})" if unit_text else label,
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
                      margin=dict(l=70, r=10, t=60, b=45))
    return fig
