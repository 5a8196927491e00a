"""3D (issue 13): surfaces whose enclosed volume is the voxel volume, bounds in µm, empty phases, exports that load
back, 3D numbers on analytic shapes, the project cache, and the `render` CLI with its bad inputs."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from core.cli import main
from core.errors import ReactomoError
from core.phases import DEFAULT_PHASES
from core.render.morphology import block_numbers, object_rows, phase_numbers
from core.render.surfaces import (
    RenderConfig,
    block_from_um,
    build_surfaces,
    check_block,
    default_block,
    downsample_labels,
    phase_surface,
)
from core.render.surfaces import interface_area_um2
from core.workflow.render import cached_render, render_labels, render_segmentation

ROOT = Path(__file__).resolve().parents[1]
VS = 2.75
BASSANITE, PORE = 2, 3


def ball(shape=(40, 40, 40), centre=(20, 20, 20), r=8.0) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= r * r


def slab(shape=(40, 40, 40), lo=18, hi=21) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[:, :, lo:hi] = True  # 3 voxels thick and cut by four faces of the block
    return m


@pytest.mark.parametrize("name, mask", [("ball r=8", ball()), ("ball r=2.5", ball(r=2.5)), ("slab 3 vx", slab()),
                                        ("two balls", ball(r=5, centre=(10, 10, 10)) | ball(r=6, centre=(28, 28, 26)))])
def test_the_enclosed_volume_is_the_voxel_volume_on_analytic_shapes(name, mask):
    surf = phase_surface(mask, spacing_um=VS, origin_um=(VS / 2,) * 3)
    expected = mask.sum() * VS**3
    assert surf.n_cells > 0
    assert abs(surf.volume / expected - 1) < 0.05, f"{name}: {surf.volume / expected:.3f}"


def test_the_surfaces_of_the_demo_keep_each_phases_volume_and_say_what_reduction_cost():
    from core.imaging.synthetic import DemoConfig, make_demo

    exp = make_demo(DemoConfig(steps=3, shape=(32, 96, 96), seed=5, imaging="fast"))
    labels = exp.truth[2]
    for budget in (2_000_000, 300_000):  # unreduced, and the default budget
        surfaces = build_surfaces(labels, RenderConfig(max_triangles=budget), spacing_um=VS, origin_um=(VS / 2,) * 3)
        assert sum(m.n_cells for m in surfaces.values()) <= budget * 1.02
        for code, mesh in surfaces.items():
            kept = mesh.volume / ((labels == code).sum() * VS**3)
            assert abs(kept - 1) < 0.05, (code, budget, kept)
            assert mesh.field_data["volume_kept"][0] == pytest.approx(kept)
    # a budget far too tight for small grains is kept, and the volume it cost is recorded, not hidden
    tight = build_surfaces(labels, RenderConfig(phases=(1, 2, 3, 4), max_triangles=20_000), spacing_um=VS,
                           origin_um=(VS / 2,) * 3)
    assert sum(m.n_cells for m in tight.values()) <= 20_000 * 1.02
    for code, mesh in tight.items():
        assert mesh.field_data["volume_kept"][0] == pytest.approx(mesh.volume / ((labels == code).sum() * VS**3))


def test_the_interface_area_without_a_second_mesh_matches_the_open_surface():
    from core.imaging.synthetic import DemoConfig, make_demo

    labels = make_demo(DemoConfig(steps=2, shape=(32, 96, 96), seed=4, imaging="fast")).truth[1]
    for code in (BASSANITE, PORE):
        mask = labels == code
        closed = phase_surface(mask, spacing_um=VS)
        open_area = phase_surface(mask, spacing_um=VS, closed=False).area
        # both are estimates of the same interface (the analytic ball above is the real check); in this thin block
        # (32 slices) many voxels touch a cut face, where the two estimates differ most
        assert interface_area_um2(closed, mask, VS) == pytest.approx(open_area, rel=0.05)


def test_bounds_are_in_micrometres_at_the_blocks_place():
    mask = np.zeros((20, 30, 40), bool)
    mask[5:15, 10:20, 20:30] = True
    origin = (100 * VS + VS / 2, 50 * VS + VS / 2, 10 * VS + VS / 2)  # the block starts at voxel (100, 50, 10)
    surf = phase_surface(mask, spacing_um=VS, origin_um=origin, smooth=False)
    x0, x1, y0, y1, z0, z1 = surf.bounds
    assert (x0, x1) == pytest.approx(((10 + 20) * VS, (10 + 30) * VS), abs=1e-6)
    assert (y0, y1) == pytest.approx(((50 + 10) * VS, (50 + 20) * VS), abs=1e-6)
    assert (z0, z1) == pytest.approx(((100 + 5) * VS, (100 + 15) * VS), abs=1e-6)


def test_an_empty_phase_gives_an_empty_surface_and_zero_numbers():
    labels = np.ones((12, 16, 16), np.uint8)
    labels[4:8, 4:8, 4:8] = BASSANITE
    surfaces = build_surfaces(labels, RenderConfig(phases=(BASSANITE, PORE)), spacing_um=VS, origin_um=(0, 0, 0))
    assert surfaces[PORE].n_cells == 0 and surfaces[BASSANITE].n_cells > 0
    row = phase_numbers(labels, PORE, voxel_size_um=VS, surface_area_um2=0.0, pore=True)
    assert row["objects"] == 0 and row["volume_mm3"] == 0 and row["specific_surface_per_mm"] is None
    assert row["largest_cluster_share"] is None and row["largest_cluster_spans"] == "none"


def test_3d_numbers_on_analytic_shapes():
    r = 10.0
    labels = np.ones((48, 48, 48), np.uint8)
    labels[ball((48, 48, 48), (24, 24, 24), r)] = BASSANITE
    area = interface_area_um2(phase_surface(labels == BASSANITE, spacing_um=VS), labels == BASSANITE, VS)
    row = phase_numbers(labels, BASSANITE, voxel_size_um=VS, surface_area_um2=area)
    assert row["objects"] == 1 and row["objects_touching_block_edge"] == 0
    # a ball's specific surface is 3/r; r in mm
    assert row["specific_surface_per_mm"] == pytest.approx(3 / (r * VS * 1e-3), rel=0.06)
    assert row["equivalent_diameter_median_um"] == pytest.approx(2 * r * VS, rel=0.03)
    # pores: a tube along z through the block percolates; an isolated pore does not join it
    pores = np.ones((30, 30, 30), np.uint8)
    pores[:, 5:9, 5:9] = PORE
    pores[10:14, 20:24, 20:24] = PORE
    p = phase_numbers(pores, PORE, voxel_size_um=VS, pore=True)
    assert p["objects"] == 2 and p["largest_cluster_spans"] == "z"
    assert p["largest_cluster_share"] == pytest.approx(30 * 16 / (30 * 16 + 64))
    rows = object_rows(pores, PORE, voxel_size_um=VS, phase_name="pore")
    assert sorted(r["voxels"] for r in rows) == [64, 480] and [r["touches_block_edge"] for r in rows].count(True) == 1
    # corner-touching voxels are two objects (face connectivity)
    corner = np.zeros((4, 4, 4), np.uint8)
    corner[1, 1, 1] = corner[2, 2, 2] = PORE
    assert phase_numbers(corner, PORE, voxel_size_um=VS)["objects"] == 2
    named = block_numbers(pores, (PORE,), phases=DEFAULT_PHASES, voxel_size_um=VS)
    assert named[0]["phase"] == "pore" and "largest_cluster_share" in named[0]


def test_blocks_factors_and_settings_are_checked_with_a_sentence():
    assert default_block((10, 300, 500)) == (0, 10, 86, 214, 186, 314)
    assert default_block((400, 400, 400), factor=2) == (72, 328, 72, 328, 72, 328)
    assert block_from_um((0, 27.5, 2.75, 5.5, 0, 1), 2.75) == (0, 10, 1, 2, 0, 1)
    with pytest.raises(ReactomoError, match="x range 0-500 is outside"):
        check_block((0, 10, 0, 10, 0, 500), (10, 10, 10))
    with pytest.raises(ReactomoError, match="more than the .* meshed at once"):
        check_block((0, 400, 0, 400, 0, 400), (400, 400, 400), factor=1)
    assert check_block((0, 400, 0, 400, 0, 400), (400, 400, 400), factor=2)
    with pytest.raises(ReactomoError, match="z range 9-3 is reversed; give z0 below z1"):
        check_block((9, 3, 0, 10, 0, 10), (10, 10, 10))
    with pytest.raises(ReactomoError, match="y range 4-4 is empty"):
        check_block((0, 10, 4, 4, 0, 10), (10, 10, 10))
    # one voxel thick has no inside to mesh (pyvista's contour_labels failed on it with a KeyError in a user's walk)
    with pytest.raises(ReactomoError, match="z range 7-8 is 1 voxel thick; a 3D view needs at least 2"):
        check_block((7, 8, 0, 10, 0, 10), (10, 10, 10))
    with pytest.raises(ReactomoError, match=r"x range 0-3 is 3 voxels thick \(1 after downsampling by 3\)"):
        check_block((0, 10, 0, 10, 0, 3), (10, 10, 10), factor=3)
    assert check_block((0, 10, 0, 10, 0, 3), (10, 10, 10), factor=2)  # 2 after downsampling: meshed
    for bad in (dict(phases=()), dict(factor=0), dict(max_triangles=10), dict(block=(1, 2, 3)), dict(opacity={2: 1.5})):
        with pytest.raises(ReactomoError):
            RenderConfig(**bad)
    cfg = RenderConfig(phases=(3, 2), block=(0, 4, 0, 4, 0, 4), opacity={1: 0.2})
    assert RenderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg and cfg.phases == (2, 3)
    lab = np.array([[[1, 1], [2, 2]], [[2, 3], [3, 3]]], np.uint8)
    assert downsample_labels(lab, 2).tolist() == [[[2]]]  # codes 2 and 3 have 3 voxels each: the tie goes to 2


def _seg_file(tmp_path, shape=(24, 64, 64), seed=2):
    from core.imaging.synthetic import DemoConfig, make_demo

    exp = make_demo(DemoConfig(steps=2, shape=shape, seed=seed, imaging="fast"))
    seg, scan = tmp_path / "seg.tif", tmp_path / "scan.tif"
    tifffile.imwrite(seg, exp.truth[1])
    tifffile.imwrite(scan, exp.scans[1])
    return seg, scan, exp.truth[1]


def test_render_writes_every_export_and_they_load_back(tmp_path):
    import pyvista as pv

    seg, scan, truth = _seg_file(tmp_path)
    out = tmp_path / "r"
    result = render_labels(seg, out, RenderConfig(phases=(BASSANITE, PORE), max_triangles=50_000), voxel_size_um=VS,
                           phases=DEFAULT_PHASES, grey_path=scan)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["bassanite.vtp", "bassanite.ply", "pore.vtp", "pore.ply",
                            "view.png", "view.html", "volume.png", "numbers.csv", "objects.csv", "render.json"])
    rec = json.loads((out / "render.json").read_text())
    assert rec["bounds_um"] == {"x": [0.0, 64 * VS], "y": [0.0, 64 * VS], "z": [0.0, 24 * VS]}
    for name in ("bassanite", "pore"):
        mesh = pv.read(out / f"{name}.vtp")
        assert mesh.n_cells == rec["triangles"][name] > 0
        assert pv.read(out / f"{name}.ply").n_cells == mesh.n_cells
        code = DEFAULT_PHASES.by_name(name).code
        assert abs(mesh.volume / ((truth == code).sum() * VS**3) - 1) < 0.05
        x0, x1, y0, y1, z0, z1 = mesh.bounds
        half = VS / 2  # smoothing may move the closing faces by a fraction of a voxel
        assert -half <= x0 < x1 <= 64 * VS + half and -half <= z0 < z1 <= 24 * VS + half
    assert tifffile.imread(seg).shape == truth.shape  # the input is untouched
    html = (out / "view.html").read_text()
    assert "<html" in html.lower() and "http://" not in html.split("<body", 1)[0].lower().replace("http://www.w3.org", "")
    assert (out / "view.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.file_bytes("numbers.csv").startswith(b"phase,")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r-")]  # the temporary folder went
    # the zip for collaborators adds STL, made from the .vtp on demand
    import zipfile

    with zipfile.ZipFile(io.BytesIO(result.surfaces_zip())) as z:
        z.extractall(tmp_path / "unzipped")
        assert {"bassanite.stl", "pore.stl", "bassanite.vtp", "numbers.csv"} <= set(z.namelist())
    for name in ("bassanite", "pore"):
        stl = pv.read(tmp_path / "unzipped" / f"{name}.stl")
        assert stl.n_cells == pytest.approx(rec["triangles"][name], rel=0.005)  # STL drops degenerate triangles
    assert set(rec["volume_kept"]) == {"bassanite", "pore"}


def test_the_project_cache_is_hit_the_second_time_and_missed_for_other_settings(demo_project):
    from core.workflow.segment import segment_project
    from core.network.inference import InferenceConfig

    segment_project(demo_project, ROOT / "models" / "demo-unet", name="s1", steps=[1, 3], inference=InferenceConfig(tile=64))
    cfg = RenderConfig(max_triangles=20_000)
    assert cached_render(demo_project, "s1", 1, cfg) is None
    seen = []
    first = render_segmentation(demo_project, "s1", 1, cfg, on_progress=lambda f, m: seen.append(m))
    assert not first.cached and seen[-1].startswith("Rendered")
    stamp = (first.folder / "render.json").stat().st_mtime_ns
    again = render_segmentation(demo_project, "s1", 1, cfg)
    assert again.cached and again.folder == first.folder and (first.folder / "render.json").stat().st_mtime_ns == stamp
    assert cached_render(demo_project, "s1", 1, cfg).record == first.record
    assert first.record["segmentation"] == "s1" and first.record["step"] == 1 and first.volume_png is not None
    other = render_segmentation(demo_project, "s1", 1, RenderConfig(max_triangles=20_000, phases=(2,)))
    assert not other.cached and other.folder != first.folder
    with pytest.raises(ReactomoError, match="Step 2 of segmentation 's1' is not segmented"):
        render_segmentation(demo_project, "s1", 2, cfg)
    with pytest.raises(ReactomoError, match="no segmentation called 'nope'"):
        render_segmentation(demo_project, "nope", 1, cfg)


def test_cli_render_writes_the_files_and_prints_the_numbers(tmp_path, capsys):
    seg, scan, _ = _seg_file(tmp_path)
    code = main(["-q", "render", "--segmentation", str(seg), "--out", str(tmp_path / "o"), "--phases", "bassanite,pore",
                 "--block-um", "0", "55", "0", "110", "0", "110", "--max-triangles", "30000", "--grey", str(scan)])
    out, err = capsys.readouterr()
    assert code == 0, err
    rec = json.loads((tmp_path / "o" / "render.json").read_text())
    assert rec["block"] == [0, 20, 0, 40, 0, 40]
    assert "bassanite:" in out and "mm²/mm³" in out and "largest pore cluster" in out


@pytest.mark.parametrize("args, match", [
    (["--block", "0", "8", "0", "10", "0", "500"], "x range 0-500 is outside"),
    (["--phases", "quartz"], "No phase is called 'quartz'"),
    (["--factor", "0"], "downsampling factor"),
    (["--block", "0", "1", "0", "1", "0", "1", "--block-um", "0", "1", "0", "1", "0", "1"], "not both"),
])
def test_cli_render_bad_inputs_exit_2_with_one_sentence_and_write_nothing(tmp_path, capsys, args, match):
    seg, _, _ = _seg_file(tmp_path, shape=(8, 32, 32))
    out = tmp_path / "o"
    code = main(["-q", "render", "--segmentation", str(seg), "--out", str(out), *args])
    _, err = capsys.readouterr()
    assert code == 2 and match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "render.json").exists()


def test_cli_render_refuses_a_grey_scan_given_as_labels(tmp_path, capsys):
    _, scan, _ = _seg_file(tmp_path, shape=(8, 32, 32))
    f = tmp_path / "float.tif"
    tifffile.imwrite(f, tifffile.imread(scan).astype(np.float32))
    assert main(["-q", "render", "--segmentation", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "is not a label volume" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ numbers over time
def test_numbers_over_time_follow_one_block_through_every_step_and_match_each_view(demo_project):
    from core.imaging.io import read_labels
    from core.network.inference import InferenceConfig
    from core.workflow.paths import segmentation_record
    from core.workflow.render import cached_numbers_over_time, numbers_over_time
    from core.workflow.segment import segment_project

    segment_project(demo_project, ROOT / "models" / "demo-unet", name="s1", steps=[0, 3], inference=InferenceConfig(tile=64))
    cfg = RenderConfig(phases=(BASSANITE, PORE), block=(2, 14, 0, 48, 8, 64), max_triangles=20_000)
    assert cached_numbers_over_time(demo_project, "s1", cfg) is None
    seen = []
    over = numbers_over_time(demo_project, "s1", cfg, on_progress=lambda f, m: seen.append(m))
    assert not over.cached and over.record["steps"] == [0, 3] and over.record["block"] == [2, 14, 0, 48, 8, 64]
    assert [(r["step"], r["phase"]) for r in over.rows] == [(0, "bassanite"), (0, "pore"), (3, "bassanite"), (3, "pore")]
    times = demo_project.times_s()
    steps = {int(s["step"]): s for s in segmentation_record(demo_project, "s1")["steps"]}
    for r in over.rows:
        assert r["time_s"] == times[r["step"]]
        block = read_labels(steps[r["step"]]["out_path"])[2:14, 0:48, 8:64]
        code = BASSANITE if r["phase"] == "bassanite" else PORE
        assert r["voxels"] == int((block == code).sum()) and r["volume_fraction"] == pytest.approx((block == code).mean())
        assert r["volume_mm3"] == pytest.approx(r["voxels"] * VS**3 * 1e-9)
    # the reaction makes bassanite: the later step holds more of it than the first
    frac = {(r["step"], r["phase"]): r["volume_fraction"] for r in over.rows}
    assert frac[(3, "bassanite")] > frac[(0, "bassanite")]
    # the same block's view at step 3 shows the same numbers, surface area included (reduction does not change it)
    view = render_segmentation(demo_project, "s1", 3, cfg)
    for mine, theirs in zip([r for r in over.rows if r["step"] == 3], view.numbers):
        for key in ("voxels", "objects", "surface_area_mm2", "largest_cluster_share"):
            assert mine.get(key) == pytest.approx(theirs.get(key)), key
    assert over.csv_text().splitlines()[0].startswith("step,time_s,phase,")
    assert over.path.with_suffix(".csv").read_text() == over.csv_text()
    # cached the second time; a step added is a new key, never the stale numbers
    stamp = over.path.stat().st_mtime_ns
    again = numbers_over_time(demo_project, "s1", cfg)
    assert again.cached and again.path == over.path and over.path.stat().st_mtime_ns == stamp
    assert numbers_over_time(demo_project, "s1", RenderConfig(phases=(BASSANITE, PORE), block=(2, 14, 0, 48, 8, 64),
                                                              max_triangles=90_000)).cached  # the budget does not matter
    segment_project(demo_project, ROOT / "models" / "demo-unet", name="s1", steps=[1], inference=InferenceConfig(tile=64))
    assert cached_numbers_over_time(demo_project, "s1", cfg) is None
    assert numbers_over_time(demo_project, "s1", cfg).record["steps"] == [0, 1, 3]


def test_numbers_over_time_stopped_or_without_steps_save_nothing(demo_project):
    from core.errors import JobCancelled
    from core.network.inference import InferenceConfig
    from core.workflow.paths import render_folder
    from core.workflow.render import numbers_over_time
    from core.workflow.segment import segment_project

    with pytest.raises(ReactomoError, match="no segmentation called 's1'"):
        numbers_over_time(demo_project, "s1")
    segment_project(demo_project, ROOT / "models" / "demo-unet", name="s1", steps=[1], inference=InferenceConfig(tile=64))
    with pytest.raises(JobCancelled):
        numbers_over_time(demo_project, "s1", should_stop=lambda: True)
    folder = render_folder(demo_project, "s1")
    assert not folder.exists() or not list(folder.glob("numbers-*"))


def test_the_over_time_chart_has_a_line_per_phase_in_its_colour_against_minutes():
    from core.charts import numbers_over_time_chart

    rows = [{"step": k, "time_s": 300.0 * k, "phase": p, "largest_cluster_share": s}
            for k, (p, s) in enumerate([("pore", 0.5), ("pore", 0.75), ("pore", None)])]
    fig = numbers_over_time_chart(rows, "largest_cluster_share", label="Largest pore cluster", unit="", phases=DEFAULT_PHASES,
                                  percent=True)
    (trace,) = fig.data
    assert list(trace.x) == [0.0, 5.0, 10.0] and list(trace.y) == [50.0, 75.0, None]
    assert trace.line.color == DEFAULT_PHASES.by_name("pore").colour
    assert fig.layout.xaxis.title.text == "time (min)" and fig.layout.yaxis.title.text == "Largest pore cluster (%)"
    untimed = numbers_over_time_chart([{**r, "time_s": None} for r in rows], "largest_cluster_share", label="x", unit="µm",
                                      phases=DEFAULT_PHASES)
    assert untimed.layout.xaxis.title.text == "step" and untimed.layout.yaxis.title.text == "x (µm)"


def test_cli_render_over_time_prints_every_step_and_refuses_a_step(demo_project, capsys):
    from core.network.inference import InferenceConfig
    from core.workflow.segment import segment_project

    segment_project(demo_project, ROOT / "models" / "demo-unet", name="s1", steps=[0, 2], inference=InferenceConfig(tile=64))
    args = ["-q", "render", "--project", "demo", "--name", "s1", "--over-time", "--block", "0", "12", "0", "40", "0", "40"]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = [ln.split() for ln in out.splitlines()]
    assert sum(1 for ln in lines if ln[:1] in (["0"], ["2"]) and ln[2:3] in (["bassanite"], ["pore"])) == 4
    assert "2 steps" in out and "specific surface mm²/mm³" in out and ".csv" in out
    assert main(args) == 0 and "(from the cache)" in capsys.readouterr().out
    for bad in (["--step", "1"], ["--out", "x"]):
        assert main(args + bad) == 2
        err = capsys.readouterr().err
        assert "--over-time needs --project and --name" in err and "Traceback" not in err
