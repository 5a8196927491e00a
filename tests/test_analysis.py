"""The Analysis step: internal standard on the demo truth, CSV columns, the self-contained report, the CLI, the page."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.analysis import AnalysisConfig, analyze, figures, load_result, load_series
from core.cli import main
from core.errors import ReactomoError
from core.io import write_labels
from core.jobs import list_jobs

ROOT = Path(__file__).resolve().parents[1]
FAST = AnalysisConfig(n_boot=100, interval_s=300.0)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_internal_standard_holds_on_the_demo_truth(analysed):
    result, out = analysed
    rows = _csv(out / "molar_evolution.csv")
    assert list(rows[0]) == ["step", "time_s", "n_gypsum_mol", "n_bassanite_mol", "x", "y", "deviation_pct", "inside_band"]
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3] and [float(r["time_s"]) for r in rows] == [0, 300, 600, 900]
    assert all(abs(float(r["deviation_pct"])) < 0.5 for r in rows)  # the truth is exact to the rounding of voxels
    assert result["summary"]["verdict"]["all_inside"] is True
    fit = result["fit"]
    assert fit["slope"] == pytest.approx(-1, abs=0.02) and fit["intercept"] == pytest.approx(1, abs=0.01)
    # the second check: new pores = 0.287 x gypsum consumed (exact in the generator up to rounding)
    pc = _csv(out / "pore_check.csv")
    assert len(pc) == 4
    inert = result["inert"]
    assert inert and all(r["inside_band"] for r in inert)  # celestite does not change in the truth


def test_every_file_and_the_report_are_written_and_self_contained(analysed):
    result, out = analysed
    for name in ("molar_evolution.csv", "pore_check.csv", "inert.csv", "pore_sizes.csv", "growth.csv", "summary.json", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    dist = _csv(out / "pore_size_distribution.csv")
    assert {r["measure"] for r in dist} == {"local thickness", "equivalent diameter of connected pores"}
    for measure in {r["measure"] for r in dist}:
        for step in {r["step"] for r in dist}:
            cdf = [float(r["cumulative_fraction"]) for r in dist if r["step"] == step and r["measure"] == measure]
            assert np.all(np.diff(cdf) > 0) and cdf[-1] == pytest.approx(1.0)
    assert not {"lt_distribution", "eqd_distribution"} & set(_csv(out / "pore_sizes.csv")[0])
    ps = _csv(out / "pore_sizes.csv")
    assert len(ps) == 4 and float(ps[-1]["porosity"]) > float(ps[0]["porosity"])  # pores grow with the reaction
    html = (out / "report.html").read_text()
    assert "Plotly" in html and len(html) > 1_000_000  # plotly.js is inlined
    assert not re.search(r"<script[^>]+src=", html)  # nothing to fetch: opens offline
    assert html.count('class="plotly-graph-div"') == len(figures(result)) >= 6
    assert result["summary"]["verdict"]["sentence"] in html and "Library versions" in html
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["n_boot"] == 100 and summary["versions"]["numpy"] and summary["versions"]["numba"] and summary["versions"]["edt"]


def test_a_saved_analysis_draws_the_same_figures(analysed):
    result, out = analysed
    again = load_result(out)
    a, b = figures(result), figures(again)
    assert [t for t, _ in a] == [t for t, _ in b]
    for (_, fa), (_, fb) in zip(a, b):
        assert len(fa.data) == len(fb.data)
        assert fa.layout.xaxis.title.text and fa.layout.yaxis.title.text  # units on every axis
    assert load_result(out.parent / "nothing-here") is None


def test_every_chart_states_its_method_and_draws_its_uncertainty(analysed):
    from core.analysis_charts import method_of

    for title, fig in figures(analysed[0]):
        assert len(method_of(fig)) > 30, title
        assert any(getattr(t, "fill", None) == "toself" for t in fig.data), f"{title} draws no band"


def test_load_series_reads_a_reactomo_record_with_times(small_demo_dir, tmp_path):
    from core.segment import InferenceConfig
    from core.series import segment_series

    scans = sorted((small_demo_dir / "scans").glob("*.tif"))
    segment_series(ROOT / "models" / "demo-unet", scans, tmp_path / "seg", times_s=[0, 60, 120, 180], voxel_size_um=2.75,
                   inference=InferenceConfig(tile=64))
    data = load_series(tmp_path / "seg")
    assert data.times_s == [0, 60, 120, 180] and data.voxel_size_um == 2.75 and data.model["name"] == "demo-unet"
    assert len(data.counts) == 4 and all(sum(c.values()) == 16 * 64 * 72 for c in data.counts)


@pytest.mark.parametrize(
    "argv, sentence",
    [
        (["--segmentations", "{tmp}/missing"], "does not exist"),
        (["--segmentations", "{scans}"], "not uint8 label codes"),
        (["--segmentations", "{truth}", "--band", "80"], "band"),
        (["--segmentations", "{empty}"], "holds no label TIFF"),
    ],
)
def test_analyze_command_bad_input_is_one_sentence(small_demo_dir, truth_dir, tmp_path, capsys, argv, sentence):
    (tmp_path / "empty").mkdir()
    subs = {"{tmp}": str(tmp_path), "{scans}": str(small_demo_dir / "scans"), "{truth}": str(truth_dir),
            "{empty}": str(tmp_path / "empty")}
    args = ["analyze", "--out", str(tmp_path / "out")] + [subs.get(a, a).replace("{tmp}", str(tmp_path)) for a in argv]
    code = main(args)
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and sentence in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_analyze_command_writes_the_results(truth_dir, tmp_path, capsys):
    code = main(["-q", "analyze", "--segmentations", str(truth_dir), "--voxel-size", "2.75", "--interval", "60",
                 "--out", str(tmp_path / "res"), "--n-boot", "100"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "inside the ±2 % band" in out and (tmp_path / "res" / "report.html").is_file()
    assert [float(r["time_s"]) for r in _csv(tmp_path / "res" / "growth.csv")] == [0, 60, 120, 180]


def test_analyze_without_times_keeps_the_internal_standard_and_pore_sizes(truth_dir, tmp_path, capsys):
    """Plain label files and no --interval: no kinetics, but every time-free result is still written."""
    code = main(["-q", "analyze", "--segmentations", str(truth_dir), "--out", str(tmp_path / "res"), "--n-boot", "50"])
    out, err = capsys.readouterr()
    assert code == 0, err
    molar = _csv(tmp_path / "res" / "molar_evolution.csv")
    assert len(molar) == 4 and all(r["time_s"] == "" for r in molar)
    assert all(abs(float(r["deviation_pct"])) < 0.5 for r in molar)
    sizes = _csv(tmp_path / "res" / "pore_sizes.csv")
    assert len(sizes) == 4 and all(float(r["lt_median_um"]) > 0 for r in sizes)
    assert "<html" in (tmp_path / "res" / "report.html").read_text(encoding="utf-8")


def test_jmak_onset_is_the_first_step_by_default_or_fitted(truth_dir, analysed):
    from core.analysis import AnalysisConfig as AC

    result, _ = analysed
    jm = result["summary"]["jmak"]
    assert jm["t0"] == 0 and "t0" not in jm["param_names"] and "t0 fixed at 0 s" in jm["method"]
    fitted = analyze(truth_dir, None, config=AC(n_boot=100, interval_s=300.0, onset="fitted"))["summary"]["jmak"]
    assert "t0" in fitted["param_names"] and "t0 fitted" in fitted["method"]
    with pytest.raises(ReactomoError, match="onset must be 'first-step' or 'fitted'"):
        analyze(truth_dir, None, config=AC(onset="sometime"))


def test_large_volumes_are_read_slab_by_slab_and_cropped_only_for_pore_sizes(truth_dir, analysed):
    """A sub-volume cap changes the pore sizes' volume, never the porosity (every voxel, read slab by slab)."""
    from core.analysis import _block_bootstrap_porosity
    from core.io import open_volume, read_labels

    full = analysed[0]["summary"]["pore_sizes"]
    small = analyze(truth_dir, None, config=AnalysisConfig(n_boot=100, interval_s=300.0, pore_max_voxels=20_000))
    rows = small["summary"]["pore_sizes"]
    assert all(r["subvolume"] for r in rows) and not any(r["subvolume"] for r in full)
    assert all(np.prod(r["shape"]) <= 20_000 for r in rows)
    assert [r["porosity"] for r in rows] == [r["porosity"] for r in full]
    assert [r["porosity_ci_low"] for r in rows] == [r["porosity_ci_low"] for r in full]
    path = sorted(truth_dir.glob("*.tif"))[-1]
    with open_volume(path) as vol:
        assert _block_bootstrap_porosity(vol, 3, [1, 2, 3, 4], n_boot=200) == _block_bootstrap_porosity(read_labels(path), 3, [1, 2, 3, 4], n_boot=200)


def test_a_label_file_that_is_not_uint8_is_refused(tmp_path):
    import numpy as np

    d = tmp_path / "seg"
    d.mkdir()
    write_labels(d / "t000.tif", np.ones((2, 8, 8), np.uint8))
    import tifffile

    tifffile.imwrite(d / "t001.tif", np.ones((2, 8, 8), np.uint16))
    with pytest.raises(ReactomoError, match="t001.tif holds uint16"):
        analyze(d, None, config=FAST)


# ------------------------------------------------------------------------------------------------------ the page
def _page(workspace) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "8_Analysis.py"), default_timeout=60)
    at.session_state["project_name"] = "demo"
    return at


def test_page_without_segmentation_points_to_the_segment_page(demo_project):
    at = _page(demo_project)
    at.run()
    assert not at.exception
    assert "no segmentation yet" in at.info[0].value
    assert any('href="./segment"' in m.value for m in at.markdown)


def test_page_runs_the_analysis_in_the_background_and_shows_it(demo_project):
    from core.segment import InferenceConfig
    from core.series import segment_project

    segment_project(demo_project, ROOT / "models" / "demo-unet", name="s1", inference=InferenceConfig(tile=64))
    at = _page(demo_project)
    at.run()
    assert not at.exception and "has not been analysed yet" in at.info[0].value
    at.number_input(key="an_boot").set_value(100)
    at.button(key="an_run").click().run()
    deadline = time.time() + 120
    while time.time() < deadline:
        jobs = list_jobs(demo_project.root, kind="analysis")
        if jobs and not jobs[0].is_active:
            break
        time.sleep(0.5)
    assert jobs[0].status == "done", jobs[0].error
    at = _page(demo_project)
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) >= 6
    verdict = (at.success or at.warning)[0].value
    assert "band" in verdict
    assert demo_project.manifest["analysis"]["s1"]["path"].endswith("analysis/s1")
    assert any(s.key == "analysis" and s.done for s in demo_project.status())


@pytest.mark.browser
def test_browser_analysis_page_and_report_screenshots(tmp_path, monkeypatch):
    from conftest import SMALL_DEMO, browser_page, launch_streamlit, settle
    from core.data import create_demo_project
    from core.segment import InferenceConfig
    from core.series import segment_project
    from core.synthetic import DemoConfig

    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("REACTOMO_WORKSPACE", str(ws))
    project = create_demo_project("demo", workspace=ws, config=DemoConfig(**{**SMALL_DEMO, "steps": 6}))
    seg = segment_project(project, ROOT / "models" / "demo-unet", name="s1", inference=InferenceConfig(tile=64),
                          postprocess=None)
    out = project.root / "analysis" / "s1"
    analyze(seg.out_dir, out, config=AnalysisConfig(n_boot=200))
    project.update(lambda m: m["analysis"].__setitem__("s1", {"name": "s1", "path": str(out)}))
    shots = ROOT / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with launch_streamlit(ws, data_root=tmp_path, log_path=tmp_path / "streamlit.log") as url, \
            browser_page(height=1400) as pg:
        pg.goto(f"{url}/?project=demo")
        settle(pg)
        pg.goto(f"{url}/analysis?project=demo")
        pg.get_by_text("Steps inside the band").first.wait_for(timeout=60_000)
        pg.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 6", timeout=60_000)
        settle(pg)
        pg.set_viewport_size({"width": 1400, "height": 4200})
        pg.wait_for_timeout(1000)
        text = pg.inner_text("body")
        assert "Traceback" not in text and "Molar evolution" in text and "Pore size over time" in text
        pg.screenshot(path=str(shots / "analysis.png"), full_page=True)
        pg.goto((out / "report.html").as_uri())  # offline: a file, no server
        pg.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 6", timeout=60_000)
        pg.wait_for_timeout(800)
        assert "Reactomo analysis report" in pg.inner_text("body")
        pg.screenshot(path=str(shots / "report.png"), full_page=True)
