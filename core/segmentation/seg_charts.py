"""Figure builders of the Segment and Evaluate pages: phase fractions over time, cleaning, confusion, Dice per step.

Each function returns a :class:`plotly.graph_objects.Figure` with units on its axes and a legend or colour bar.
No streamlit here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from core.charts import LEGEND_BELOW, wrap_title
from core.errors import ReactomoError

__all__ = ["fraction_over_time", "cleaning_chart", "confusion_heatmap", "dice_per_step_chart"]

_FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=13)
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def fraction_over_time(rows: Sequence[Mapping], phases, *, title: str = "Phase volume fractions over time") -> go.Figure:
    """Volume fraction (%) of every phase per segmented step, one line per phase in its colour.

    Parameters
    ----------
    rows : sequence of mappings
        Rows of ``phase_volumes.csv`` (keys ``step``, ``time_s``, ``scan`` and ``<phase>_fraction``), in any order.
    phases : PhaseTable
    """
    rows = sorted(rows, key=lambda r: float(r["step"]))
    if len(rows) == 1:  # one step has no time course: its fractions as bars (a line of one point spanned -1 to 1 min)
        return _fractions_of_one_step(rows[0], phases, title=title)
    has_time = all(r.get("time_s") not in (None, "") and np.isfinite(float(r["time_s"])) for r in rows) and rows
    xs = [float(r["time_s"]) / 60.0 for r in rows] if has_time else [int(float(r["step"])) for r in rows]
    steps = [int(float(r["step"])) for r in rows]
    fig = go.Figure()
    for p in phases:
        ys = []
        for r in rows:
            v = r.get(f"{p.name}_fraction")
            ys.append(float(v) * 100.0 if v not in (None, "") and np.isfinite(float(v)) else None)
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=p.name, line=dict(color=p.colour, width=2), marker=dict(size=7),
            customdata=steps,
            hovertemplate=f"{p.name}<br>step %{{customdata}}<br>" + ("t = %{x:.1f} min" if has_time else "")
            + "<br>%{y:.2f} % of the segmented volume<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="time (min)" if has_time else "step", yaxis_title="volume fraction (%)",
                      font=_FONT, height=400, legend=LEGEND_BELOW, margin=dict(l=60, r=10, t=50, b=50),
                      hovermode="x unified")
    fig.update_yaxes(rangemode="tozero")
    return wrap_title(fig)


def _fractions_of_one_step(row: Mapping, phases, *, title: str) -> go.Figure:
    step = int(float(row["step"]))
    t = row.get("time_s")
    when = f"step {step}" + (f", t = {float(t) / 60.0:.1f} min" if t not in (None, "") and np.isfinite(float(t)) else "")
    ys = []
    for p in phases:
        v = row.get(f"{p.name}_fraction")
        ys.append(float(v) * 100.0 if v not in (None, "") and np.isfinite(float(v)) else None)
    fig = go.Figure(go.Bar(x=[p.name for p in phases], y=ys, marker_color=[p.colour for p in phases],
                           text=[f"{y:.2f} %" if y is not None else "" for y in ys], textposition="outside",
                           cliponaxis=False, name=when,
                           hovertemplate="%{x}<br>%{y:.2f} % of the segmented volume<extra>" + when + "</extra>"))
    fig.update_layout(title=f"{title} ({when})", xaxis_title="phase", yaxis_title="volume fraction (%)",
                      font=_FONT, height=380, showlegend=False, margin=dict(l=60, r=10, t=70, b=50))
    fig.update_yaxes(rangemode="tozero")
    return wrap_title(fig)


def cleaning_chart(before: Mapping, after: Mapping, phases, *, voxel_size_um: float | None = None,
                   title: str = "Post-processing: volume per phase before and after cleaning") -> go.Figure:
    """Grouped bars of each phase's voxels (or mm³ with ``voxel_size_um``) before and after cleaning.

    ``before`` / ``after`` map the phase code (int or str) to a voxel count.
    """
    scale = (float(voxel_size_um) * 1e-3) ** 3 if voxel_size_um else 1.0
    unit = "volume (mm³)" if voxel_size_um else "voxels"
    names = [p.name for p in phases]

    def vals(d: Mapping) -> list[float]:
        return [float(d.get(p.code, d.get(str(p.code), 0)) or 0) * scale for p in phases]

    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=vals(before), name="before cleaning", marker_color="#b0b7bf",
                         hovertemplate="%{x}: %{y:.4g}<extra>before</extra>"))
    fig.add_trace(go.Bar(x=names, y=vals(after), name="after cleaning (each phase's colour)",
                         marker_color=[p.colour for p in phases],
                         hovertemplate="%{x}: %{y:.4g}<extra>after</extra>"))
    fig.update_layout(title=title, barmode="group", yaxis_title=f"{unit}, log scale", xaxis_title="phase", font=_FONT,
                      height=380, legend=LEGEND_BELOW, margin=dict(l=70, r=10, t=50, b=50))
    fig.update_yaxes(type="log", dtick="D2", tickformat="~r")  # small phases stay visible next to the matrix phase;
    # ticks at 1, 2 and 5 of every decade, as plain numbers (0.002, 0.005, 0.01 mm³), not "10⁻³": the bars of a step
    # often span one decade only, where one tick a decade left a single "0.01" to read them by
    return wrap_title(fig)


def confusion_heatmap(confusion: np.ndarray, names: Sequence[str], *, title: str = "Confusion matrix",
                      reference: str = "reference") -> go.Figure:
    """Rows reference, columns prediction; colour = row-normalised %, text = count and %.

    ``reference`` names what the rows are (e.g. "known truth" or "ground truth (random forest)"): never "truth" for a
    reference that is itself a model's labelling."""
    c = np.asarray(confusion, dtype=np.int64)
    k = len(names)
    if c.shape != (k, k):
        raise ReactomoError(f"A confusion matrix of shape {c.shape} does not fit {k} phases.")
    totals = c.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(totals > 0, c / np.maximum(totals, 1) * 100.0, np.nan)
    def compact(n: int) -> str:  # a count that fits its cell, one notation for all: 1.21 M, 798 k, 4.39 k, 612
        return f"{n / 1e6:.3g} M" if n >= 1e6 else f"{n / 1e3:.3g} k" if n >= 1e3 else f"{n}"

    text = [[f"{compact(int(c[i, j]))}<br>{pct[i, j]:.1f} %" if np.isfinite(pct[i, j]) else compact(int(c[i, j]))
             for j in range(k)] for i in range(k)]
    fig = go.Figure(go.Heatmap(
        z=pct, x=list(names), y=list(names), text=text, texttemplate="%{text}", textfont=dict(size=12),
        colorscale="Blues", zmin=0, zmax=100,
        colorbar=dict(title=dict(text="% of the reference row", side="right"), thickness=14),
        customdata=[[f"{int(c[i, j]):,}" for j in range(k)] for i in range(k)],
        hovertemplate=f"{reference} %{{y}}<br>predicted %{{x}}<br>%{{customdata}} voxels, %{{z:.1f}} % of the row"
                      "<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="predicted phase", yaxis_title=f"{reference} phase", font=_FONT,
                      height=500, margin=dict(l=80, r=40, t=50, b=60))  # room for the colour bar's title
    fig.update_yaxes(autorange="reversed")
    return wrap_title(fig)


def dice_per_step_chart(series: Mapping[str, Mapping[int, Mapping[int, float]]], phases, times_s: Sequence[float] | None = None,
                        *, title: str = "Dice per step against the known truth") -> go.Figure:
    """Dice of every phase over the steps, one line per (segmentation, phase).

    Parameters
    ----------
    series : mapping
        ``{segmentation label: {step: {phase code: Dice}}}``; NaN (phase absent) leaves a gap.
    times_s : sequence of float, optional
        Time of every step of the project in seconds; the x axis is then time in minutes.
    """
    fig = go.Figure()
    for k, (label, per_step) in enumerate(series.items()):
        steps = sorted(per_step)
        xs = [times_s[s] / 60.0 for s in steps] if times_s is not None else steps
        for p in phases:
            ys = [per_step[s].get(p.code) for s in steps]
            ys = [float(v) if v is not None and np.isfinite(v) else None for v in ys]
            name = p.name if len(series) == 1 else f"{label} · {p.name}"
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, customdata=steps,
                                     line=dict(color=p.colour, width=2, dash=_DASHES[k % len(_DASHES)]), marker=dict(size=7),
                                     hovertemplate=f"{name}<br>step %{{customdata}}<br>Dice %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="time (min)" if times_s is not None else "step", yaxis_title="Dice (0-1)",
                      yaxis_range=[0, 1.02], font=_FONT, height=420 + 20 * (len(series) - 1) * len(phases) // 2,
                      legend=LEGEND_BELOW, margin=dict(l=60, r=10, t=50, b=50))
    return wrap_title(fig)
