"""The band chosen after the run (with_band), static chart images (core.analysis.export), their CLI and page controls."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.analysis.results import AnalysisConfig, band_of, figures, report_html, result_from_summary, with_band
from core.analysis.analysis_charts import method_of
from core.errors import ReactomoError
from core.analysis.export import figure_images, slugify

ROOT = Path(__file__).resolve().parents[1]
FAST = AnalysisConfig(n_boot=100, interval_s=300.0)


def _band_between(devs_pct) -> float:
    """A band (fraction) that keeps the smallest |deviations| inside and puts the largest outside."""
    d = sorted({abs(float(x)) for x in devs_pct})
    assert len(d) >= 2, d
    return (d[-1] + d[-2]) / 2 / 100.0


# ------------------------------------------------------------------------------------------------- with_band
def test_with_band_rejudges_every_flag_and_the_verdict_from_the_stored_numbers(analysed):
    result, _ = analysed
    before = copy.deepcopy(result["summary"]), copy.deepcopy(result["rows"])
    devs = [r["deviation_pct"] for r in result["rows"]]
    band = _band_between(devs)
    nb = with_band(result, band)
    expected = [abs(d) <= 100 * band for d in devs]
    assert True in expected and False in expected
    assert [r["inside_band"] for r in nb["rows"]] == expected
    assert [r["inside_band"] for r in nb["summary"]["molar_evolution"]] == expected
    v = nb["summary"]["verdict"]  # the verdict over every check, judged again
    iv = v["internal_standard"]
    assert iv["band"] == band and iv["n_inside"] == sum(expected) and iv["all_inside"] is False
    assert v["band"] == band and v["passed"] is False and "internal_standard" in v["failed"]
    assert v["checks"][0]["passed"] is False and v["checks"][0]["limit"] == pytest.approx(100 * band)
    assert f"{sum(expected)} of {len(devs)} steps" in v["checks"][0]["sentence"] and v["checks"][0]["sentence"] in v["sentence"]
    assert nb["band"] == band_of(nb) == band
    assert nb["summary"]["config"]["band"] == FAST.band  # the band of the run (and of the files) is kept
    assert [r["inside_band"] for r in nb["pore_check"]] == [abs(r["deviation"]) <= band + 1e-12 for r in result["pore_check"]]
    assert all(f"band ±{100 * band:g} %" in r["method"] for r in nb["pore_check"] + nb["inert"])
    v0 = {r["phase"]: r["volume_mm3"] for r in reversed(result["inert"])}
    assert [r["inside_band"] for r in nb["inert"]] == [abs(r["volume_mm3"] - v0[r["phase"]]) <= (band + 1e-12) * v0[r["phase"]]
                                                        for r in result["inert"]]
    # the input is untouched
    assert (result["summary"], result["rows"]) == before and "band" not in result
    # the band of the run gives back the analysis itself
    same = with_band(result, FAST.band)
    assert same["summary"] == result["summary"] and same["rows"] == result["rows"]
    assert same["pore_check"] == result["pore_check"] and same["inert"] == result["inert"]


@pytest.mark.parametrize("bad", [0, -0.01, 0.21, 0.3, 1, 1.5, float("nan"), float("inf"), "0.02", None, True])
def test_with_band_refuses_a_bad_band_in_one_sentence(analysed, bad):
    with pytest.raises(ReactomoError, match=r"^The band must be a fraction above 0 and at most 0.2 .*got .*\.$"):
        with_band(analysed[0], bad)
    with pytest.raises(ReactomoError, match="at most 0.2"):
        AnalysisConfig(band=bad).validate()


def test_figures_and_report_draw_the_band_chosen(analysed):
    result, _ = analysed
    band = 0.05
    nb = with_band(result, band)
    figs = dict(figures(nb))
    me = figs["Molar evolution (internal standard)"]
    bt = me.data[0]
    xs = np.linspace(0, 1, 101)
    assert bt.name == "±5 % band"
    assert np.allclose(np.asarray(bt.y), np.r_[1 - xs + band, (1 - xs - band)[::-1]])
    assert "≤ 5 %" in method_of(me)
    inert = figs["Inert phase constancy"].data[0]
    v0 = result["inert"][0]["volume_mm3"]
    assert np.allclose(np.asarray(inert.y)[0], v0 * (1 + band)) and np.allclose(np.asarray(inert.y)[-1], v0 * (1 - band))
    pc = figs["Pore-volume check"].data[0]
    assert pc.name.startswith("±5 %") and np.asarray(pc.y)[0] > 0
    # the original still draws the band of the run
    assert dict(figures(result))["Molar evolution (internal standard)"].data[0].name == "±2 % band"
    html = report_html(nb)
    assert nb["summary"]["verdict"]["sentence"] in html and "±5 % band</th>" in html
    assert "chosen after the run; the run and its CSV files used ±2 %" in html


# ------------------------------------------------------------------------------------------------- images
@pytest.fixture(scope="module")
def pngs(analysed):
    figs = figures(analysed[0])
    counts = [len(f.layout.annotations) for _, f in figs]
    return figs, figure_images(figs, "png", scale=2, width=800, height=400), counts


def test_png_images_of_every_chart_in_one_session(pngs):
    from PIL import Image

    figs, images, counts = pngs
    assert list(images) == [slugify(n) for n, _ in figs] and len(set(images)) == len(figs)
    assert "molar-evolution-internal-standard" in images
    for name, data in images.items():
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        im = Image.open(io.BytesIO(data))
        im.load()
        assert im.size == (1600, 800), (name, im.size)
    assert [len(f.layout.annotations) for _, f in figs] == counts  # the note is added to an export copy only


def test_svg_and_pdf_carry_the_method_and_bad_formats_are_refused(analysed):
    figs = [f for f in figures(analysed[0]) if f[0] == "Reaction extent, two estimates"]
    svg = figure_images(figs, "svg")["reaction-extent-two-estimates"].decode()
    assert "<svg" in svg and "Two estimates of one quantity from independent phases" in svg
    assert figure_images(figs, "pdf")["reaction-extent-two-estimates"][:5] == b"%PDF-"
    for bad in ("jpg", "", None, "PNGX"):
        with pytest.raises(ReactomoError, match="image format must be one of png, svg, pdf"):
            figure_images(figs, bad)
    with pytest.raises(ReactomoError, match="scale"):
        figure_images(figs, "png", scale=0)


def test_no_browser_is_one_sentence_saying_what_to_install(analysed, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium-here"))
    figs = figures(analysed[0])[:1]
    with pytest.raises(ReactomoError) as ei:
        figure_images(figs, "png")
    msg = str(ei.value)
    assert msg.startswith("PNG export needs Chromium (Debian: apt install chromium") and "SVG" in msg
    assert "\n" not in msg and "Traceback" not in msg
    with pytest.raises(ReactomoError, match="PDF export needs Chromium"):
        figure_images(figs, "pdf", browser=str(tmp_path / "nothing"))


# ------------------------------------------------------------------------------------------------- the CLI
def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "core", "-q", "analyze", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_cli_writes_one_png_per_chart(analysed, truth_dir, tmp_path):
    out = tmp_path / "res"
    p = _cli("--segmentations", str(truth_dir), "--out", str(out), "--interval", "300", "--n-boot", "100", "--figures", "png")
    assert p.returncode == 0, p.stderr
    names = sorted(f.name for f in (out / "figures").iterdir())
    assert names == sorted(f"{slugify(n)}.png" for n, _ in figures(analysed[0]))
    assert all((out / "figures" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    assert "charts as PNG" in p.stdout


def test_cli_bad_band_and_a_failed_export(truth_dir, tmp_path):
    p = _cli("--segmentations", str(truth_dir), "--out", str(tmp_path / "a"), "--band", "0")
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "band" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "a").exists()
    # the export alone fails: the results stay written, exit status 1, one sentence
    out = tmp_path / "b"
    p = _cli("--segmentations", str(truth_dir), "--out", str(out), "--interval", "300", "--n-boot", "100", "--figures", "svg",
             env={"BROWSER_PATH": str(tmp_path / "no-chromium")})
    assert p.returncode == 1 and "SVG export needs Chromium" in p.stderr and "Traceback" not in p.stderr
    assert (out / "report.html").is_file() and (out / "molar_evolution.csv").is_file()
    assert not (out / "figures").exists()


# ------------------------------------------------------------------------------------------------- the page
def test_page_band_input_rejudges_the_saved_analysis(demo_project, analysed, tmp_path):
    from core.segmentation.series import FORMAT, RECORD

    _, out = analysed
    # a saved analysis whose steps deviate by 0, 1.8, 2.7 and 5 %: two of them are outside ±2 %
    summary = json.loads((out / "summary.json").read_text())
    for r in summary["molar_evolution"]:
        r["deviation_pct"] *= 1000.0
    summary = with_band(result_from_summary(summary), summary["config"]["band"])["summary"]
    dest = demo_project.root / "analysis" / "s1"
    shutil.copytree(out, dest)
    (dest / "summary.json").write_text(json.dumps(summary))
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / RECORD).write_text(json.dumps({"format": FORMAT, "steps": [{"step": 0}]}))
    demo_project.update(lambda m: (m["segmentations"].__setitem__("s1", {"name": "s1", "path": str(seg)}),
                                   m["analysis"].__setitem__("s1", {"name": "s1", "path": str(dest)})))
    at = AppTest.from_file(str(ROOT / "pages" / "8_Analysis.py"), default_timeout=60)
    at.session_state["project_name"] = "demo"
    at.run()
    assert not at.exception
    assert at.number_input(key="an_band_view").value == 2.0
    assert "Internal standard: 2 of 4 steps lie inside the ±2 % band" in at.error[0].value and not at.success
    assert at.metric[0].value == "2 / 4"
    at.number_input(key="an_band_view").set_value(6.0).run()
    assert not at.exception
    # every step inside ±6 %, but the deviation rises steadily by 5 %, more than half the band: still red
    assert at.metric[0].value == "4 / 4" and not at.success
    checks = at.table[0].value
    assert "all 4 steps lie inside the ±6 % band" in checks["why"].iloc[0] and checks["result"].iloc[0] == "pass"
    assert "Trend over time: the deviation drifts steadily" in at.error[0].value and "Internal standard" not in at.error[0].value
    assert any("written with the band of the run, ±2 %" in c.value for c in at.caption)
    keys = {b.key for b in at.get("download_button")}
    assert {"an_dl_band_csv", "an_dl_band_report"} <= keys
    at.number_input(key="an_band_view").set_value(1.0).run()
    assert "1 of 4 steps lie inside the ±1 % band" in at.error[0].value and at.metric[0].value == "1 / 4"
    # the PNG export from the page: one zip of every chart drawn at the chosen band
    assert not [b for b in at.get("download_button") if b.key == "an_png_dl"]
    at.button(key="an_png_prep").click().run(timeout=120)
    other = [e.value for e in at.error if " checks fail." not in e.value]  # the verdict's red box aside: no error
    assert not at.exception and not other, other
    assert [b for b in at.get("download_button") if b.key == "an_png_dl"]
    import zipfile

    with zipfile.ZipFile(io.BytesIO(at.session_state["an_png_zip"][1])) as zf:
        names = zf.namelist()
        assert len(names) == len(figures(with_band(result_from_summary(summary), 0.01))) and all(n.endswith(".png") for n in names)
        assert all(zf.read(n).startswith(b"\x89PNG") for n in names)


def test_method_note_sits_under_a_tall_legend():
    """Long legend entries wrap one per row under the plot: the exported method note must start below the last row."""
    import plotly.graph_objects as go

    from core.analysis.analysis_charts import _LAYOUT
    from core.analysis.export import with_method_note

    fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], name=f"a long legend entry number {i} " + "x" * 60) for i in range(6)])
    fig.update_layout(**_LAYOUT, meta={"method": "The method sentence."})
    short = go.Figure(fig)
    short.data = short.data[:1]
    tall, one = with_method_note(fig, width=1000), with_method_note(short, width=1000)
    note = next(a for a in tall.layout.annotations if a.name == "method")
    plot_h = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    assert -note.yshift >= 0.16 * plot_h + 6 * 20  # six rows of legend between the plot and the note
    assert tall.layout.height > one.layout.height and tall.layout.margin.b > one.layout.margin.b


@pytest.mark.parametrize("post, expect", [
    ({"min_sizes": {"2": 9, "3": 4}, "connectivity": "2d", "rim_phase": 2, "rim_around": 4, "rim_px": 2, "enabled": True},
     ["islands removed (2d): bassanite &lt; 9 px, pore &lt; 4 px", "bassanite within 2 px of celestite relabelled"]),
    ({"min_sizes": {}, "connectivity": "2d", "rim_phase": 2, "rim_around": 4, "rim_px": 0, "enabled": True},
     ["no island removal; no rim relabelling"]),
    ({}, ["<td style='text-align:left'>off</td>"]),
])
def test_report_says_in_words_how_the_labels_were_cleaned(analysed, post, expect):
    result = copy.deepcopy(analysed[0])
    result["summary"]["segmentation_settings"] = {"inference": {"tile": 1024, "overlap": 0.25, "blend": "gaussian", "batch_size": 2},
                                                  "postprocess": post, "device": "cpu"}
    html = report_html(result)
    assert "<h3>Segmentation</h3>" in html and "tile 1024, overlap 0.25, gaussian blending, batch 2, device cpu" in html
    for text in expect:
        assert text in html, text
    assert "within 0 px" not in html
