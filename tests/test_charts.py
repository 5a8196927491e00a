import json

import numpy as np
import pytest

from core.charts import histogram_lines, histogram_over_time, png_data_uri, slice_figure, window_to_uint8
from core.errors import ReactomoError


def _hist(n_steps=3, bins=16, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.random((n_steps, bins))
    return np.linspace(0, 1000, bins + 1), counts / counts.sum(1, keepdims=True)


def test_window_maps_linearly_and_clips():
    img = np.array([[0, 50, 100, 150]], dtype=np.uint16)
    out = window_to_uint8(img, 50, 150)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 0, 127, 255]]
    with pytest.raises(ReactomoError, match="low < high"):
        window_to_uint8(img, 10, 10)


def test_slice_figure_has_micrometre_axes_and_roi_box():
    img = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    fig = slice_figure(img, voxel_size_um=2.5, axis=1, window=(0, 600), roi=((2, 10), (3, 12)))
    assert fig.layout.xaxis.title.text == "x (µm)" and fig.layout.yaxis.title.text == "z (µm)"
    assert fig.data[0].dx == 2.5 and fig.data[0].source.startswith("data:image/png;base64,")
    box = fig.layout.shapes[0]
    assert (box.x0, box.x1, box.y0, box.y1) == (7.5, 30.0, 5.0, 25.0)
    with pytest.raises(ReactomoError, match="2D"):
        slice_figure(img[None], voxel_size_um=1, window=(0, 1))


def test_png_round_trip():
    from PIL import Image
    import base64
    import io

    img = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3)
    uri = png_data_uri(img)
    back = np.array(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    np.testing.assert_array_equal(back, img)


def test_histogram_over_time_axes_and_shape_checks():
    edges, counts = _hist()
    fig = histogram_over_time(edges, counts, [0, 60, 120], step_names=["a", "b", "c"])
    heat = fig.data[0]
    assert np.allclose(heat.y, [0, 1, 2])  # minutes
    assert len(heat.x) == 16 and np.asarray(heat.z).shape == (3, 16)
    assert fig.layout.xaxis.title.text.startswith("grey value") and fig.layout.yaxis.title.text == "time (min)"
    json.loads(fig.to_json())
    with pytest.raises(ReactomoError, match="times"):
        histogram_over_time(edges, counts, [0, 60])
    with pytest.raises(ReactomoError, match="bin edges"):
        histogram_over_time(edges[:-1], counts, [0, 60, 120])


def test_histogram_lines_one_trace_per_step_in_percent():
    edges, counts = _hist()
    fig = histogram_lines(edges, counts, [0, 60, 120], steps=[0, 2])
    assert len(fig.data) == 2
    assert np.isclose(np.sum(fig.data[0].y), 100.0)
    assert "t = 2.0 min" in fig.data[1].name
    with pytest.raises(ReactomoError, match="does not exist"):
        histogram_lines(edges, counts, [0, 60, 120], steps=[5])


def test_overlay_colours_only_labelled_pixels_and_adds_a_legend():
    from core.charts import overlay_labels
    from core.phases import DEFAULT_PHASES

    img = np.full((4, 5), 100.0)
    labels = np.zeros((4, 5), np.uint8)
    labels[0, 0], labels[1, 1] = 2, 4
    rgb = overlay_labels(np.full((4, 5, 3), 128, np.uint8), labels, phases=DEFAULT_PHASES, opacity=1.0)
    assert rgb[0, 0].tolist() == [0xF5, 0x85, 0x18]  # bassanite orange
    assert rgb[2, 2].tolist() == [128, 128, 128]  # unlabelled stays grey
    fig = slice_figure(img, voxel_size_um=1.0, window=(0, 200), labels=labels, phases=DEFAULT_PHASES)
    assert [t.name for t in fig.data[1:]] == ["bassanite", "celestite"]
    with pytest.raises(ReactomoError, match="do not match"):
        overlay_labels(np.zeros((3, 3, 3), np.uint8), labels, phases=DEFAULT_PHASES)


def test_ground_truth_charts():
    from core.charts import dice_comparison_chart, feature_importance_chart, phase_fraction_chart, uncertainty_figure
    from core.phases import DEFAULT_PHASES

    u = np.random.default_rng(0).random((2100, 300)).astype(np.float32)
    fig = uncertainty_figure(u, voxel_size_um=2.0)
    assert np.asarray(fig.data[0].z).shape == (700, 100)  # thinned for display, axes still in µm
    assert fig.data[0].y[1] == pytest.approx(6.0) and fig.layout.xaxis.title.text == "x (µm)"
    bars = feature_importance_chart(["a", "b", "c"], [0.2, 0.5, 0.3], top=2)
    assert list(bars.data[0].y) == ["c", "b"]  # largest at the top of a horizontal bar chart
    frac = phase_fraction_chart({1: 0.5, 2: 0.25}, DEFAULT_PHASES)
    assert [t.y[0] for t in frac.data] == [50.0, 25.0, 0.0, 0.0]
    comp = dice_comparison_chart({"forest": {1: 0.9, 2: float("nan")}, "threshold": {1: 0.5, 2: 0.4}}, DEFAULT_PHASES)
    assert list(comp.data[0].x) == ["gypsum"] and list(comp.data[1].y) == [0.5, 0.4]
    with pytest.raises(ReactomoError, match="names"):
        feature_importance_chart(["a"], [0.5, 0.5])


def test_extent_band_spans_exactly_the_two_estimates():
    from core.analysis.analysis_charts import extent_figure

    rows = [{"step": i, "time_s": 60.0 * i, "x": x, "y": y} for i, (x, y) in enumerate([(0.0, 1.0), (0.2, 0.75), (0.5, 0.52)])]
    fig = extent_figure(rows)
    band = next(t for t in fig.data if t.fill == "toself")
    loss, gain = 1 - np.array([1.0, 0.75, 0.52]), np.array([0.0, 0.2, 0.5])
    n = len(rows)
    np.testing.assert_allclose(band.y[:n], np.maximum(loss, gain))
    np.testing.assert_allclose(band.y[n:], np.minimum(loss, gain)[::-1])


def test_pore_sizes_at_the_voxel_size_are_marked_as_the_resolution_limit():
    """A user walk read a median connected-pore diameter of exactly one voxel from 25 min on as a measurement."""
    from core.analysis.analysis_charts import method_of, pore_size_figure

    rows = [{"step": k, "time_s": 300.0 * k, "lt_median_um": m, "lt_q1_um": m, "lt_q3_um": m + 2,
             "lt_median_ci_low": m, "lt_median_ci_high": m, "eqd_median_um": e}
            for k, (m, e) in enumerate([(11.0, 9.0), (8.0, 3.4), (7.5, 3.4)])]
    fig = pore_size_figure(rows, voxel_size_um=2.75)
    assert any(a.text == "one voxel (2.75 µm)" for a in fig.layout.annotations)
    assert "within 1.5 voxels (4.12 µm) is at the scan's resolution" in method_of(fig)
    big = [{**r, "eqd_median_um": 9.0} for r in rows]
    assert "resolution" not in method_of(pore_size_figure(big, voxel_size_um=2.75))
    assert "resolution" not in method_of(pore_size_figure(rows)) and not pore_size_figure(rows).layout.annotations


def test_method_and_estimate_series_never_wear_a_phase_colour():
    """A user walk read the threshold's bars (orange, green) and "from bassanite gain" (red) as phases."""
    from core.analysis.analysis_charts import extent_figure
    from core.charts import dice_comparison_chart
    from core.phases import DEFAULT_PHASES

    phase_colours = {p.colour.lower() for p in DEFAULT_PHASES}
    dice = {name: {p.code: 0.8 for p in DEFAULT_PHASES} for name in ("random forest", "threshold", "held out")}
    bars = dice_comparison_chart(dice, DEFAULT_PHASES)
    assert not {t.marker.color.lower() for t in bars.data} & phase_colours
    rows = [{"step": k, "time_s": 300.0 * k, "x": 0.1 * k, "y": 1 - 0.1 * k} for k in range(3)]
    lines = [t for t in extent_figure(rows).data if t.mode == "lines+markers"]
    assert len(lines) == 2 and not {t.line.color.lower() for t in lines} & phase_colours


# ----------------------------------------------------------------------------- Segment and Evaluate figure builders
def _phases():
    from core.phases import DEFAULT_PHASES

    return DEFAULT_PHASES


def test_fraction_of_one_step_is_bars_at_its_time_not_a_line_from_minus_one_minute():
    """A user's walk: a single segmented step drew its fractions as one point on an axis from -1 to 1 min."""
    from core.segmentation.seg_charts import fraction_over_time

    phases = _phases()
    row = {"step": "0", "time_s": "0", "scan": "t000.tif"} | {f"{p.name}_fraction": str(0.1 * (i + 1))
                                                               for i, p in enumerate(phases)}
    fig = fraction_over_time([row], phases)
    assert [t.type for t in fig.data] == ["bar"]
    assert list(fig.data[0].x) == [p.name for p in phases]
    assert np.allclose(fig.data[0].y, [10.0 * (i + 1) for i in range(len(phases))])
    assert list(fig.data[0].marker.color) == [p.colour for p in phases]
    assert "step 0, t = 0.0 min" in fig.layout.title.text.replace("<br>", " ").replace("\u00a0", " ") and fig.layout.yaxis.title.text == "volume fraction (%)"
    assert fig.layout.xaxis.range is None  # no invented time axis
    two = fraction_over_time([row, row | {"step": "1", "time_s": "300"}], phases)
    assert {t.type for t in two.data} == {"scatter"} and list(two.data[0].x) == [0.0, 5.0]
    assert two.layout.xaxis.title.text == "time (min)"


def test_cleaning_chart_labels_its_log_axis_with_plain_numbers_in_its_unit():
    from core.segmentation.seg_charts import cleaning_chart

    phases = _phases()
    counts = {p.code: 10 ** (i + 2) for i, p in enumerate(phases)}
    fig = cleaning_chart(counts, counts, phases, voxel_size_um=2.75)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.tickformat == "~r" and fig.layout.yaxis.dtick == "D2"
    assert fig.layout.yaxis.exponentformat is None  # no "10⁻³": d3's "~r" writes 0.001
    assert fig.layout.yaxis.title.text == "volume (mm³), log scale"
    assert np.isclose(fig.data[0].y[0], 100 * 2.75e-3 ** 3)


def test_confusion_counts_share_one_notation():
    """A user's walk: "4.2 M" beside "6,297" in the same matrix."""
    from core.segmentation.seg_charts import confusion_heatmap

    c = np.array([[4_210_000, 6_297, 12], [798_000, 40_000, 0], [999, 1_000, 5]])
    fig = confusion_heatmap(c, ["a", "b", "c"])
    cells = [t.split("<br>")[0] for row in fig.data[0].text for t in row]
    assert cells == ["4.21 M", "6.3 k", "12", "798 k", "40 k", "0", "999", "1 k", "5"]
    assert not any("," in t for t in cells)
    assert fig.data[0].customdata[0][1] == "6,297"  # the exact count stays in the hover


def test_figures_in_half_columns_wrap_long_titles_and_keep_legends_off_them():
    """A user's walk at 900 px with the sidebar: titles cut at the figure's edge ("Classifier uncertainty (1 − max
    cla"), phase legends over the title, and the uncertainty map's axes stretched to -1500 µm beside a small image."""
    from core.charts import LEGEND_BELOW, dice_comparison_chart, slice_figure, uncertainty_figure, wrap_title

    img = np.zeros((8, 8), np.float32)
    unc = uncertainty_figure(img, voxel_size_um=2.0)
    lines = unc.layout.title.text.split("<br>")
    assert len(lines) == 2 and all(len(t) <= 40 for t in lines)
    assert " ".join(lines) == "Classifier uncertainty (1 − max class probability)"
    assert unc.layout.margin.t >= 22 * len(lines) + 34 and unc.layout.title.yref == "container"
    assert unc.layout.xaxis.constrain == "domain" and unc.layout.yaxis.constrain == "domain"
    sl = slice_figure(img, voxel_size_um=2.0, window=(0, 1), labels=np.ones((8, 8), int), phases=_phases())
    assert sl.layout.legend.yref == "container" and sl.layout.legend.y == 0 and sl.layout.legend.yanchor == "bottom"
    assert sl.layout.yaxis.constrain == "domain"
    d = dice_comparison_chart({"a": {1: 0.5}}, _phases(), title="short")
    assert d.layout.title.text == "short" and d.layout.legend.to_plotly_json() == LEGEND_BELOW
    import plotly.graph_objects as go

    assert wrap_title(go.Figure(layout=dict(title="x" * 49))).layout.title.text == "x" * 40 + "<br>" + "x" * 9
    short = "Phase volume fractions over time (whole scans)"  # a short title stays on one line (full width reads it best)
    assert wrap_title(go.Figure(layout=dict(title=short))).layout.title.text == short
    # a number keeps its unit: "t = 20.0 min" is never broken between "20.0" and "min"
    text = wrap_title(go.Figure(layout=dict(title="Phase volume fractions of 'one-step' (step 4, t = 20.0 min)"))
                      ).layout.title.text
    assert "20.0\u00a0min" in text and "<br>" in text


def test_threshold_ranges_are_named_in_a_legend_not_over_each_other():
    """A user's walk at 900 px: the range names written in the shaded bands ran into each other ("gypsbassanite")."""
    from core.charts import threshold_histogram

    phases = _phases()
    v = np.random.default_rng(0).normal(20_000, 5_000, 10_000)
    ranges = [{"code": p.code, "low": 8_000 + 6_000 * i, "high": 14_000 + 6_000 * i} for i, p in enumerate(phases)]
    fig = threshold_histogram(v, ranges, phases)
    assert not fig.layout.annotations  # no text in the bands
    assert len(fig.layout.shapes) == len(phases)
    named = {t.name: t.marker.color for t in fig.data if t.name.endswith(" range")}
    assert named == {f"{p.name} range": p.colour for p in phases}
    assert fig.layout.showlegend and fig.layout.legend.yref == "container"
