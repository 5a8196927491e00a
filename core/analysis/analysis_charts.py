"""Figures of the Analysis step, shared by the page and the HTML report (one function makes one figure).

Every figure draws its uncertainty (a band or interval) and carries the method in ``fig.layout.meta["method"]``,
which the page prints under the chart and the report writes beneath it.
"""

from __future__ import annotations

from collections.abc import Sequence


import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.analysis.stoichiometry import amount_unit

__all__ = ["molar_evolution_figure", "extent_figure", "pore_check_figure", "inert_figure", "pore_size_figure",
           "porosity_figure", "growth_figure", "method_of"]

_BAND_FILL = "rgba(120, 120, 120, 0.18)"
_LAYOUT = dict(template="plotly_white", margin=dict(l=70, r=30, t=50, b=120), height=470,
               legend=dict(orientation="h", yanchor="top", y=-0.16, xanchor="left", x=0))


def method_of(fig: go.Figure) -> str:
    """The method sentence stored with a figure (empty when none)."""
    meta = fig.layout.meta
    return str(meta.get("method", "")) if isinstance(meta, dict) else ""


def _minutes(rows: Sequence[dict]) -> list[float | None]:
    return [None if r.get("time_s") in (None, "") else float(r["time_s"]) / 60.0 for r in rows]


def _colour(phases, code: int, default: str) -> str:
    try:
        return phases.by_code(code).colour
    except Exception:  # noqa: BLE001 - a table without that code
        return default


def _hex_to_rgba(colour: str, alpha: float) -> str:
    c = colour.lstrip("#")
    if len(c) != 6:
        return f"rgba(120,120,120,{alpha})"
    return f"rgba({int(c[0:2], 16)},{int(c[2:4], 16)},{int(c[4:6], 16)},{alpha})"


def molar_evolution_figure(rows: Sequence[dict], *, fit: dict | None = None, band: float = 0.02,
                           reactant: str = "gypsum", product: str = "bassanite") -> go.Figure:
    """Measured (x = n_product / n0, y = n_reactant / n0) per step against the theory y = 1 − x with its ±band.

    Points are coloured by time (minutes); hover gives step, time, moles and deviation. ``fit`` (from
    :func:`core.analysis.stoichiometry.fit_line`) adds the fitted line and its 95 % confidence band.
    """
    fig = go.Figure()
    xs = np.linspace(0, 1, 101)
    fig.add_trace(go.Scatter(x=np.r_[xs, xs[::-1]], y=np.r_[1 - xs + band, (1 - xs - band)[::-1]], fill="toself", mode="lines",
                             fillcolor=_BAND_FILL, line=dict(width=0), hoverinfo="skip",
                             name=f"±{100 * band:g} % band"))
    fig.add_trace(go.Scatter(x=xs, y=1 - xs, mode="lines", line=dict(color="black", dash="dash"), name="theory y = 1 − x"))
    if fit and np.isfinite(fit.get("slope", np.nan)):
        x = np.array([float(r["x"]) for r in rows])
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        gx = np.linspace(lo, hi, 50)
        fig.add_trace(go.Scatter(x=gx, y=fit["intercept"] + fit["slope"] * gx, mode="lines",
                                 line=dict(color="#d62728"),
                                 name=f"fit: slope {fit['slope']:.3f} [{fit['slope_ci'][0]:.3f}, {fit['slope_ci'][1]:.3f}], "
                                      f"intercept {fit['intercept']:.3f} [{fit['intercept_ci'][0]:.3f}, {fit['intercept_ci'][1]:.3f}]"))
        if fit.get("band_x") is not None:
            fig.add_trace(go.Scatter(x=np.r_[fit["band_x"], fit["band_x"][::-1]],
                                     y=np.r_[fit["band_high"], fit["band_low"][::-1]], fill="toself", mode="lines",
                                     fillcolor="rgba(214,39,40,0.15)", line=dict(width=0), hoverinfo="skip",
                                     name="fit 95 % confidence band"))
    minutes = _minutes(rows)
    amounts = [r.get(k) for r in rows for k in ("n_reactant_mol", "n_product_mol")]
    factor, unit = amount_unit([np.nan if a is None else a for a in amounts])  # 2.41 µmol, not 2.413e-06 mol

    def _amount(v):
        return float("nan") if v is None else float(v) / factor

    custom = [[r["step"], m if m is not None else float("nan"), _amount(r.get("n_reactant_mol")),
               _amount(r.get("n_product_mol")), r["deviation_pct"], "inside" if r["inside_band"] else "OUTSIDE"]
              for r, m in zip(rows, minutes)]
    fig.add_trace(go.Scatter(
        x=[r["x"] for r in rows], y=[r["y"] for r in rows], mode="markers+text", text=[str(r["step"]) for r in rows],
        textposition="top right", customdata=custom, name="measured steps",
        marker=dict(size=11, color=[m if m is not None else r["step"] for r, m in zip(rows, minutes)], colorscale="Viridis",
                    showscale=True, colorbar=dict(title="time (min)" if minutes and minutes[0] is not None else "step"),
                    line=dict(width=[0 if r["inside_band"] else 3 for r in rows], color="#d62728")),
        hovertemplate=("step %{customdata[0]} · %{customdata[1]:.1f} min<br>" f"n {reactant} " "%{customdata[2]:.4g} " f"{unit}<br>"
                       f"n {product} " "%{customdata[3]:.4g} " f"{unit}<br>" "deviation %{customdata[4]:+.2f} % (%{customdata[5]})<extra></extra>"),
    ))
    fig.update_layout(**_LAYOUT, title=f"Molar evolution: {reactant} → {product} (internal standard)",
                      xaxis_title=f"x = n({product}) / n₀({reactant})", yaxis_title=f"y = n({reactant}) / n₀({reactant})",
                      meta={"method": (f"n = V·ρ/M per phase from the voxel counts; normalised by the reactant at the first step. "
                                       f"Band: |1 − x − y| ≤ {100 * band:g} %. "
                                       + (fit.get("method", "") if fit else ""))})
    fig.update_xaxes(range=[-0.03, 1.03])
    fig.update_yaxes(range=[-0.03, 1.08])
    return fig


def extent_figure(rows: Sequence[dict], *, reactant: str = "gypsum", product: str = "bassanite") -> go.Figure:
    """Reaction extent over time estimated twice: from reactant loss (1 − y) and from product gain (x)."""
    t = _minutes(rows)
    x_axis = t if t and t[0] is not None else [r["step"] for r in rows]
    loss = [1 - float(r["y"]) for r in rows]
    gain = [float(r["x"]) for r in rows]
    fig = go.Figure()
    # neutral colours: a series in a phase's colour would read as that phase (the pores' red, gypsum's blue)
    fig.add_trace(go.Scatter(x=x_axis, y=loss, mode="lines+markers", line=dict(color="#333333"),
                             marker=dict(symbol="circle"), name=f"from {reactant} loss (1 − y)"))
    fig.add_trace(go.Scatter(x=x_axis, y=gain, mode="lines+markers", line=dict(color="#6a3d9a", dash="dash"),
                             marker=dict(symbol="square"), name=f"from {product} gain (x)"))
    # the band spans exactly the two estimates at each step (their disagreement), no wider
    hi, lo = np.maximum(loss, gain), np.minimum(loss, gain)
    fig.add_trace(go.Scatter(x=list(x_axis) + list(x_axis)[::-1], y=list(hi) + list(lo[::-1]),
                             fill="toself", mode="lines", fillcolor=_BAND_FILL, line=dict(width=0), hoverinfo="skip",
                             name="disagreement of the two estimates"))
    fig.update_layout(**_LAYOUT, title="Reaction extent over time, two independent estimates",
                      xaxis_title="time (min)" if t and t[0] is not None else "step", yaxis_title="reaction extent (fraction)",
                      meta={"method": "Two estimates of one quantity from independent phases; the grey band spans their "
                                      "difference at each step. They agree where the segmentation honours the stoichiometry."})
    return fig


def pore_check_figure(rows: Sequence[dict], *, band: float = 0.02, ratio: float = 0.287,
                      initial_reactant_mm3: float = 0.0) -> go.Figure:
    """New pore volume against ``ratio`` × reactant volume consumed, with the band (a fraction of the initial
    reactant volume ``initial_reactant_mm3``)."""
    consumed = np.array([float(r["consumed_mm3"]) for r in rows])
    new = np.array([float(r["new_pore_mm3"]) for r in rows])
    expected = np.array([float(r["expected_new_pore_mm3"]) for r in rows])
    v0 = float(initial_reactant_mm3 or 0)
    fig = go.Figure()
    gx = np.linspace(0, max(consumed.max(), 1e-12), 50)
    if v0 > 0:
        fig.add_trace(go.Scatter(x=np.r_[gx, gx[::-1]], y=np.r_[ratio * gx + band * v0, (ratio * gx - band * v0)[::-1]],
                                 fill="toself", mode="lines", fillcolor=_BAND_FILL, line=dict(width=0), hoverinfo="skip",
                                 name=f"±{100 * band:g} % of the initial reactant volume"))
    fig.add_trace(go.Scatter(x=gx, y=ratio * gx, mode="lines", line=dict(color="black", dash="dash"),
                             name=f"theory: new pore = {ratio:.3f} × consumed"))
    fig.add_trace(go.Scatter(x=consumed, y=new, mode="markers+text", text=[str(r["step"]) for r in rows],
                             textposition="top left", marker=dict(size=10, color="#e45756"), name="measured steps",
                             customdata=np.c_[expected], hovertemplate="consumed %{x:.4g} mm³<br>new pore %{y:.4g} mm³<br>"
                                                                      "expected %{customdata[0]:.4g} mm³<extra></extra>"))
    fig.update_layout(**_LAYOUT, title="Pore-volume check: new pores from the solid volume lost",
                      xaxis_title="reactant volume consumed since the first step (mm³)", yaxis_title="new pore volume (mm³)",
                      meta={"method": f"With no compaction every mole reacted leaves (1 − V_product/V_reactant) = {ratio:.3f} of "
                                      "the consumed volume as new pores. Band: a fraction of the initial reactant volume."})
    fig.update_xaxes(exponentformat="power")  # 4×10⁻⁴ mm³, not plotly's SI "400µ" next to a unit
    fig.update_yaxes(exponentformat="power")
    return fig


def inert_figure(rows: Sequence[dict], *, band: float = 0.02, phases=None) -> go.Figure:
    """Volume of each inert phase over time (should be flat) with the ±band around its first step."""
    fig = go.Figure()
    names = sorted({r["phase"] for r in rows})
    for name in names:
        rs = [r for r in rows if r["phase"] == name]
        t = _minutes(rs)
        x_axis = t if t and t[0] is not None else [r["step"] for r in rs]
        v = np.array([float(r["volume_mm3"]) for r in rs])
        colour = "#54a24b"
        if phases is not None:
            for p in phases:
                if p.name == name:
                    colour = p.colour
        fig.add_trace(go.Scatter(x=list(x_axis) + list(x_axis)[::-1], y=list(np.full(len(v), v[0] * (1 + band)))
                                 + list(np.full(len(v), v[0] * (1 - band))), fill="toself", mode="lines",
                                 fillcolor=_hex_to_rgba(colour, 0.15), line=dict(width=0), hoverinfo="skip",
                                 name=f"{name}: ±{100 * band:g} % of the first step"))
        fig.add_trace(go.Scatter(x=x_axis, y=v, mode="lines+markers", line=dict(color=colour), name=f"{name} volume"))
    fig.update_layout(**_LAYOUT, title="Inert phase volume over time (should stay constant)",
                      xaxis_title="time (min)", yaxis_title="volume (mm³)",
                      meta={"method": "An inert phase takes no part in the reaction: a drift outside the band is a "
                                      "segmentation warning (e.g. a halo that grows into the product)."})
    fig.update_yaxes(exponentformat="power")
    return fig


def pore_size_figure(rows: Sequence[dict], *, voxel_size_um: float | None = None) -> go.Figure:
    """Pore size (local thickness) over time: median with its bootstrap 95 % CI and the interquartile range; with
    ``voxel_size_um``, the size of one voxel as a line, and a warning in the method when a median is at that limit."""
    t = _minutes(rows)
    x_axis = t if t and t[0] is not None else [r["step"] for r in rows]
    g = lambda k: np.array([np.nan if r.get(k) in (None, "") else float(r[k]) for r in rows])  # noqa: E731
    q1, q3, med, lo, hi = g("lt_q1_um"), g("lt_q3_um"), g("lt_median_um"), g("lt_median_ci_low"), g("lt_median_ci_high")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(x_axis) + list(x_axis)[::-1], y=list(q3) + list(q1[::-1]), fill="toself", mode="lines",
                             fillcolor="rgba(228,87,86,0.12)", line=dict(width=0), hoverinfo="skip", name="interquartile range"))
    fig.add_trace(go.Scatter(x=list(x_axis) + list(x_axis)[::-1], y=list(hi) + list(lo[::-1]), fill="toself", mode="lines",
                             fillcolor="rgba(228,87,86,0.35)", line=dict(width=0), hoverinfo="skip",
                             name="median: bootstrap 95 % CI"))
    fig.add_trace(go.Scatter(x=x_axis, y=med, mode="lines+markers", line=dict(color="#e45756"), name="median local thickness"))
    if "eqd_median_um" in (rows[0] if rows else {}):
        fig.add_trace(go.Scatter(x=x_axis, y=g("eqd_median_um"), mode="lines+markers", line=dict(color="#7f7f7f", dash="dot"),
                                 name="median equivalent diameter of connected pores"))
    method = rows[0].get("method", "") or ("Local thickness: diameter of the largest ball that fits in the pore "
                                            "space and covers the voxel. CI: bootstrap over pores.") if rows else ""
    if voxel_size_um:
        vs = float(voxel_size_um)
        fig.add_hline(y=vs, line=dict(color="#999", dash="dash", width=1),
                      annotation_text=f"one voxel ({vs:g} µm)", annotation_position="bottom right")
        medians = [m for k in ("lt_median_um", "eqd_median_um") if rows and k in rows[0] for m in g(k) if np.isfinite(m)]
        if any(m <= 1.5 * vs for m in medians):
            method += (f" A median within 1.5 voxels ({1.5 * vs:.3g} µm) is at the scan's resolution: pores of one or "
                       "two voxels dominate it, so it says how small the smallest pores look, not how large they are.")
    fig.update_layout(**_LAYOUT, title="Pore size over time", xaxis_title="time (min)" if t and t[0] is not None else "step",
                      yaxis_title="pore diameter (µm)", meta={"method": method})
    return fig


def _steps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polyline of the right-continuous step function that is 0 before ``x[0]`` and ``y[i]`` on ``[x[i], x[i+1])``."""
    xs, ys = [x[0]], [0.0]
    for i in range(x.size):
        xs.append(x[i])
        ys.append(y[i])
        if i + 1 < x.size:
            xs.append(x[i + 1])
            ys.append(y[i])
    return np.asarray(xs, float), np.asarray(ys, float)


#: Per distribution key: title, x-axis title, y-axis title, method sentence.
_DISTRIBUTION_TEXT = {
    "lt_distribution": (
        "Pore size distribution per step (local thickness)", "local thickness (µm)", "pore volume at most this thick (%)",
        "Cumulative share of the pore volume whose local thickness (diameter of the largest inscribed ball covering the "
        "voxel) is at most the given diameter, per step (colour: time). Bands: pointwise 95 % bootstrap interval, "
        "resampling whole pores."),
    "eqd_distribution": (
        "Connected pores: equivalent diameters per step", "equivalent diameter (µm)", "pores at most this large (%)",
        "Cumulative share of the connected pores (face connectivity) whose equivalent diameter (the sphere of the same "
        "volume) is at most the given diameter, per step (colour: time); every pore counts once. Bands: pointwise 95 % "
        "bootstrap interval, resampling the pores."),
}


def pore_distribution_figure(rows: Sequence[dict], *, key: str = "lt_distribution") -> go.Figure:
    """Cumulative distribution per step, coloured by time, each with its bootstrap band over pores: of the pore volume
    over local thickness (``key="lt_distribution"``), or of the pores over their equivalent diameter
    (``key="eqd_distribution"``)."""
    from plotly.colors import sample_colorscale

    steps = [r for r in rows if r.get(key)]
    eqd = key == "eqd_distribution"
    t = _minutes(steps)
    timed = bool(t) and all(v is not None for v in t)
    span = (max(t) - min(t)) if timed and len(t) > 1 else 0.0
    fig = go.Figure()
    for i, r in enumerate(steps):
        d = r[key]
        frac = ((t[i] - min(t)) / span) if span else (i / max(len(steps) - 1, 1))
        colour = sample_colorscale("Viridis", [frac])[0]
        label = f"step {r['step']}" + (f" ({t[i]:g} min)" if timed else "")
        x = np.asarray(d["diameter_um"], float)
        sx, sy = _steps(x, 100 * np.asarray(d["cdf"], float))
        _, lo = _steps(x, 100 * np.asarray(d["cdf_low"], float))
        _, hi = _steps(x, 100 * np.asarray(d["cdf_high"], float))
        fig.add_trace(go.Scatter(x=np.r_[sx, sx[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", mode="lines",
                                 line=dict(width=0), fillcolor=colour.replace("rgb", "rgba").replace(")", ",0.12)"),
                                 hoverinfo="skip", showlegend=False, legendgroup=label))
        fig.add_trace(go.Scatter(x=sx, y=sy, mode="lines", line=dict(color=colour, width=2), name=label, legendgroup=label,
                                 hovertemplate=f"{label}<br>%{{y:.1f}} % of the "
                                               + ("pores are at most %{x:.1f} µm across" if eqd else "pore volume is at most %{x:.1f} µm thick")
                                               + "<extra></extra>"))
    title, x_title, y_title, method = _DISTRIBUTION_TEXT[key]
    fig.update_layout(**_LAYOUT, title=title, xaxis_title=x_title, yaxis_title=y_title, meta={"method": method})
    if eqd:
        fig.update_xaxes(type="log")
        fig.update_layout(legend_y=-0.22, margin_b=140)  # log ticks take two lines: keep the legend clear of the title
    fig.update_yaxes(range=[0, 100.5])
    return fig


def porosity_figure(rows: Sequence[dict]) -> go.Figure:
    """Porosity and connected porosity over time (percent)."""
    t = _minutes(rows)
    x_axis = t if t and t[0] is not None else [r["step"] for r in rows]
    fig = go.Figure()
    lo = [r.get("porosity_ci_low") for r in rows]
    hi = [r.get("porosity_ci_high") for r in rows]
    if all(v not in (None, "") for v in lo + hi):
        fig.add_trace(go.Scatter(x=list(x_axis) + list(x_axis)[::-1], y=[100 * float(v) for v in hi] + [100 * float(v) for v in lo][::-1],
                                 fill="toself", mode="lines", fillcolor="rgba(228,87,86,0.2)", line=dict(width=0), hoverinfo="skip",
                                 name="porosity: 95 % interval over sub-volumes"))
    for key, name, dash in (("porosity", "porosity", None), ("connected_porosity", "connected porosity", "dot")):
        fig.add_trace(go.Scatter(x=x_axis, y=[100 * float(r[key]) for r in rows], mode="lines+markers",
                                 line=dict(color="#e45756", dash=dash), name=name))
    fig.update_layout(**_LAYOUT, title="Porosity over time", xaxis_title="time (min)" if t and t[0] is not None else "step",
                      yaxis_title="porosity (% of the labelled volume)",
                      meta={"method": "Porosity: pore voxels over labelled voxels. Connected porosity: pore voxels in "
                                      "clusters that reach the boundary of the analysed volume. Band: bootstrap over 32 "
                                      "sub-volumes (4 × 4 in the slice, 2 in z), i.e. how much another piece of the same "
                                      "size of this rock would differ."})
    return fig


def growth_figure(t_s: Sequence[float], fraction: Sequence[float], *, fit: dict | None = None,
                  rate: dict | None = None, product: str = "bassanite", colour: str = "#f58518",
                  extent: Sequence[float] | None = None) -> go.Figure:
    """Left: the product's volume fraction and the reaction extent α over time with the JMAK (Avrami) fit of α and
    its band. Right: the growth rate of the product's volume fraction with its band."""
    t_min = np.asarray(t_s, float) / 60.0
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"{product} fraction and reaction extent α",
                                                        f"growth rate of the {product} fraction"),
                        horizontal_spacing=0.12)
    fig.add_trace(go.Scatter(x=t_min, y=fraction, mode="markers", marker=dict(size=9, color=colour, symbol="square"),
                             name=f"{product} volume fraction"), row=1, col=1)
    if extent is not None:
        fig.add_trace(go.Scatter(x=t_min, y=extent, mode="markers", marker=dict(size=9, color="#333"),
                                 name=f"reaction extent α (from {product} gain)"), row=1, col=1)
    if fit and fit.get("curve_t_s") is not None:
        ct = np.asarray(fit["curve_t_s"]) / 60.0
        pct = f"{100 * float(fit.get('level') or 0.95):g} %"
        if fit.get("curve_low") is not None:
            fig.add_trace(go.Scatter(x=np.r_[ct, ct[::-1]], y=np.r_[fit["curve_high"], np.asarray(fit["curve_low"])[::-1]],
                                     fill="toself", mode="lines", fillcolor="rgba(50,50,50,0.15)", line=dict(width=0),
                                     hoverinfo="skip", name=f"JMAK fit: {pct} confidence band (delta method)"), row=1, col=1)

        def ci(c, f=1.0, fmt=".3g"):
            return f"[{c[0] * f:{fmt}}, {c[1] * f:{fmt}}]" if c and None not in c[:2] and np.all(np.isfinite(c[:2])) else "[n/a]"
        am = fit.get("alpha_max")
        am_text = (f"α_max = {am:.3f} {ci(fit.get('alpha_max_ci'), fmt='.3f')}" if fit.get("alpha_max_fitted")
                   else f"α_max fixed at {1.0 if am is None else am:g}")
        label = (f"JMAK fit: k = {fit['k'] * 3600:.3g} /h {ci(fit['k_ci'], 3600)}, "
                 f"n = {fit['n']:.2f} {ci(fit['n_ci'], fmt='.2f')}, {am_text}")
        fig.add_trace(go.Scatter(x=ct, y=fit["curve"], mode="lines", line=dict(color="#333"), name=label,
                                 hovertemplate=f"%{{x:.1f}} min: α = %{{y:.3f}}<br>{label}<extra></extra>"), row=1, col=1)
    if rate:
        rt = np.asarray(rate["t_s"]) / 60.0
        fig.add_trace(go.Scatter(x=np.r_[rt, rt[::-1]], y=np.r_[rate["rate_high"], np.asarray(rate["rate_low"])[::-1]],
                                 fill="toself", mode="lines", fillcolor=_BAND_FILL, line=dict(width=0), hoverinfo="skip",
                                 name="rate 95 % band"), row=1, col=2)
        fig.add_trace(go.Scatter(x=rt, y=rate["rate"], mode="lines+markers", line=dict(color="black"), name="smoothed rate"),
                      row=1, col=2)
    # five long legend entries under two panels: two per row, well below the tick labels and the axis titles
    fig.update_layout(**{**_LAYOUT, "height": 600, "margin": {**_LAYOUT["margin"], "t": 90, "b": 190},
                         "legend": dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0,
                                        entrywidth=0.5, entrywidthmode="fraction")},
                      title=f"{product} growth and kinetics")
    fig.update_xaxes(title_text="time (min)")
    fig.update_yaxes(title_text="fraction", row=1, col=1)
    fig.update_yaxes(title_text="rate (fraction per hour)", row=1, col=2)
    methods = []
    if fit:
        methods.append(fit.get("method", ""))
        reason = (fit.get("model_choice") or {}).get("reason") or ""
        if reason and reason not in methods[-1]:
            methods.append(reason)
    if rate:
        methods.append(rate.get("method", ""))
    fig.update_layout(meta={"method": " ".join(m for m in methods if m)})
    return fig
