"""core.imaging.rings: ring artefacts measured on a scan and removed, checked against the same scan made without them.

The scans here are real tomography (core.imaging.tomography: projection, photon noise, filtered back projection) of
a rock-like slab that changes from slice to slice, made twice with the same photons: once with miscalibrated detector
columns (the half-rings of a 180° scan) and once without. The ring is therefore known exactly, pixel by pixel.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ReactomoError
from core.imaging.io import open_volume, write_volume
from core.imaging.rings import (RING_DEFAULTS, check_rings_mode, fit_rings, model_rings, open_scan, ring_corrected_class,
                                ring_settings, rings_summary, with_rings)
from core.imaging.tomography import ScanPhysics, Tomograph, scan_volume

N, NZ = 96, 16
MODEL_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "models" / "demo-unet"


def _rock(seed: int = 0) -> np.ndarray:
    """Attenuation of a disc of matrix with small bright grains and dark pores that differ on every slice."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2.0
    out = np.zeros((NZ, N, N), np.float32)
    for z in range(NZ):
        sl = np.where(np.hypot(yy, xx) < 44, 0.010, 0.0).astype(np.float32)
        for _ in range(14):
            cy, cx = rng.uniform(-35, 35, 2)
            r = rng.uniform(2.0, 5.0)
            sl[np.hypot(yy - cy, xx - cx) < r] = rng.choice([0.02, 0.003])
        out[z] = sl
    return out


def _scans(bad_columns) -> tuple[np.ndarray, np.ndarray]:
    """(with rings, without) grey values of the same rock and the same photons."""
    tomo = Tomograph((N, N), n_angles=120)
    att = _rock()
    grey = lambda rec: (rec * 2.0e6 + 10000.0).astype(np.float32)  # noqa: E731
    ringed = grey(scan_volume(att, tomo, ScanPhysics(photons=4e5, bad_columns=bad_columns), rng=np.random.default_rng(1)))
    clean = grey(scan_volume(att, tomo, ScanPhysics(photons=4e5), rng=np.random.default_rng(1)))
    return ringed, clean


@pytest.fixture(scope="module")
def ringed():
    return _scans(((17, 0.02), (18, 0.02), (-30, -0.015)))


def test_the_rings_of_a_scan_are_measured_and_removed_leaving_the_rest_alone(ringed):
    scan, clean = ringed
    ring = scan - clean
    on = np.abs(ring) > 0.25 * np.abs(ring).max()
    assert on.mean() > 0.005  # the rings are there, and large
    rings = fit_rings(scan)
    fixed = rings.apply(scan)
    left = fixed - clean
    before, after = np.sqrt(np.mean(ring[on] ** 2)), np.sqrt(np.mean(left[on] ** 2))
    assert after < 0.4 * before, (before, after)
    # off the rings, the correction adds little next to the scan's own noise
    noise = (scan - clean - ring).std() + np.std(clean[:, 40:56, 40:56] - clean[:, 40:56, 40:56].mean(axis=(1, 2), keepdims=True))
    assert np.sqrt(np.mean(left[~on] ** 2)) < np.sqrt(np.mean(ring[~on] ** 2)) + 0.1 * noise
    # the rings lie where the columns' radii are: 17-18 and 30 pixels from the axis
    img = rings.image()
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2.0
    r = np.hypot(yy, xx)
    moved = np.abs(img) > 0.25 * np.abs(img).max()
    assert np.all((np.abs(r[moved] - 17.5) < 4) | (np.abs(r[moved] - 30) < 4))
    s = rings.summary()
    assert s["bins_with_rings"] > 0 and s["largest_grey"] > 0 and s["slices_read"] == NZ
    assert s["settings"] == ring_settings()


def test_a_scan_without_rings_is_left_almost_as_it_is():
    scan, clean = _scans(())
    rings = fit_rings(scan)
    change = rings.apply(scan) - scan
    noise = np.std(scan[:, 40:56, 40:56] - scan[:, 40:56, 40:56].mean(axis=(1, 2), keepdims=True))
    assert np.sqrt(np.mean(change**2)) < 0.1 * noise
    assert np.count_nonzero(rings.image()) < 0.05 * N * N


def test_an_integer_scan_keeps_its_dtype_rounded_and_clipped(ringed):
    scan, _ = ringed
    as_u16 = np.clip(scan, 0, 65535).astype(np.uint16)
    rings = fit_rings(as_u16)
    out = rings.apply(as_u16)
    assert out.dtype == np.uint16
    expect = np.clip(np.rint(as_u16.astype(np.float32) - rings.image()), 0, 65535)
    np.testing.assert_array_equal(out, expect.astype(np.uint16))
    # a uint8 scan near its ceiling is clipped, never wrapped round
    bright = np.full((4, 32, 32), 250, np.uint8)
    fake = fit_rings(bright)
    assert fake.apply(bright).dtype == np.uint8


def test_a_scan_opened_with_its_rings_removed_reads_the_same_in_every_way(ringed, tmp_path):
    scan, _ = ringed
    path = write_volume(tmp_path / "scan.tif", np.clip(scan, 0, 65535).astype(np.uint16))
    with open_scan(path, rings="remove") as vol, open_volume(path) as raw:
        assert isinstance(vol, ring_corrected_class())
        whole = vol.read()
        expect = vol.rings.apply(raw.read())
        np.testing.assert_array_equal(whole, expect)
        np.testing.assert_array_equal(vol.slice(0, 5), expect[5])
        np.testing.assert_array_equal(vol.slice(1, 40), expect[:, 40])
        np.testing.assert_array_equal(vol.slice(2, 33), expect[:, :, 33])
        np.testing.assert_array_equal(vol.slab(2, 6), expect[2:6])
        np.testing.assert_array_equal(vol.block(1, 4, 10, 50, 20, 70), expect[1:4, 10:50, 20:70])
        assert vol.sample(max_voxels=500).dtype == np.uint16
        assert not np.array_equal(whole, raw.read())  # something was removed
        assert rings_summary(vol)["bins_with_rings"] > 0 and rings_summary(raw) is None
    with open_scan(path, rings="keep") as plain:
        assert type(plain) is type(open_volume(path)) and rings_summary(plain) is None


def test_the_rings_are_measured_once_per_file_and_again_when_it_changes(ringed, tmp_path):
    scan, _ = ringed
    path = write_volume(tmp_path / "scan.tif", np.clip(scan, 0, 65535).astype(np.uint16))
    with open_scan(path, rings="remove") as a, open_scan(path, rings="remove") as b:
        assert a.rings is b.rings
    write_volume(path, np.clip(scan[::-1], 0, 65535).astype(np.uint16))
    import os

    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    with open_scan(path, rings="remove") as c:
        assert c.rings is not a.rings


def test_with_rings_reads_a_volume_or_an_array_as_a_model_was_trained(ringed, tmp_path):
    scan, _ = ringed
    path = write_volume(tmp_path / "scan.tif", np.clip(scan, 0, 65535).astype(np.uint16))
    with open_volume(path) as raw:
        corrected, opened = with_rings(raw, "remove")
        assert opened and isinstance(corrected, ring_corrected_class())
        again, opened2 = with_rings(corrected, "remove")
        assert again is corrected and not opened2
        back, opened3 = with_rings(corrected, "keep")  # a model trained on raw scans reads them raw
        assert opened3 and not isinstance(back, ring_corrected_class())
        same, opened4 = with_rings(raw, "keep")
        assert same is raw and not opened4
        for v in (corrected, back):
            v.close()
    arr, opened = with_rings(scan, "remove")
    assert not opened and arr.shape == scan.shape and not np.array_equal(arr, scan)
    # a model card made before the setting existed reads scans as they are
    assert model_rings({"method": "bright-tail"}) == "keep" and model_rings(None) == "keep"
    assert model_rings({"method": "bright-tail", "rings": "remove"}) == "remove"


@pytest.mark.parametrize("changes, words", [
    ({"radial_width": 2}, "radial width must be a whole number from 3 to 101"),
    ({"radial_width": 7.5}, "radial width must be a whole number"),
    ({"arc_sectors": 0}, "arc sectors must be a whole number from 1 to 36"),
    ({"gate": -1}, "gate must be a number from 0 to 20"),
    ({"sector_deg": "ten"}, "sector deg must be a number"),
    ({"width": 3}, "has no setting 'width'"),
])
def test_bad_ring_settings_are_refused_in_a_sentence(changes, words):
    with pytest.raises(ReactomoError, match=words):
        ring_settings(**changes)


def test_a_bad_mode_or_scan_is_refused_in_a_sentence(tmp_path):
    with pytest.raises(ReactomoError, match=r"^The rings setting is 'off'; use 'remove' .* or 'keep' .*\.$"):
        check_rings_mode("off")
    with pytest.raises(ReactomoError, match="The rings setting is 'sometimes'"):
        open_scan(tmp_path / "missing.tif", rings="sometimes")  # the mode is checked before the file
    with pytest.raises(ReactomoError, match="at least 16 x 16"):
        fit_rings(np.zeros((3, 8, 8), np.float32))
    # NaN or infinity is measured around and kept: refusing it is the normalisation's call, with its own sentence
    bad = np.random.default_rng(0).normal(100.0, 5.0, (2, 32, 32)).astype(np.float32)
    bad[1, 3, 3] = np.nan
    out = fit_rings(bad).apply(bad)
    assert np.isnan(out[1, 3, 3]) and np.isfinite(np.delete(out.ravel(), 32 * 32 + 3 * 32 + 3)).all()
    assert set(RING_DEFAULTS) == set(ring_settings())


def test_a_project_removes_rings_when_made_now_and_keeps_them_when_made_before(tmp_path, ringed):
    from core.imaging.rings import RINGS
    from core.workflow.project import create_project

    p = create_project("rings", workspace=tmp_path)
    assert p.rings() == RINGS
    p.set_rings("keep")
    assert p.rings() == "keep"
    with pytest.raises(ReactomoError, match="The rings setting is 'maybe'"):
        p.set_rings("maybe")
    assert p.rings() == "keep"
    p.update(lambda m: m.pop("rings"))  # a project made before the setting existed
    assert p.rings() == "keep"
    manifest = json.loads((p.root / "project.json").read_text()) if (p.root / "project.json").exists() else None
    if manifest is not None:
        assert "rings" not in manifest


# ---------------------------------------------------------------------------------------------------------------
# the workflow: train, segment, run and the project read scans as the setting says, and a model remembers it
# ---------------------------------------------------------------------------------------------------------------
def test_train_records_the_rings_in_the_card_and_segment_reads_new_scans_the_same_way(small_demo_dir, tmp_path, capsys):
    from core.cli import main
    from core.imaging.io import read_labels

    meta = json.loads((small_demo_dir / "dataset.json").read_text())
    k = meta["label_step"]
    scan = small_demo_dir / meta["steps"][k]["scan"]
    cards = {}
    for mode in ("remove", "keep"):
        out = tmp_path / "models" / mode
        assert main(["-q", "train", "--scan", str(scan), "--ground-truth", str(small_demo_dir / "scribbles.tif"),
                     "--out", str(out), "--epochs", "1", "--patch", "32", "--batch", "4", "--device", "cpu",
                     "--rings", mode]) == 0
        cards[mode] = json.loads((out / "card.json").read_text())
        assert cards[mode]["normalisation"]["rings"] == mode
    capsys.readouterr()
    # the same weights (the shipped model's) read a scan with and without its rings: the card alone decides
    import shutil

    seg = {}
    model = tmp_path / "models" / "shipped"
    shutil.copytree(MODEL_DIR, model)
    for mode in ("remove", "keep"):  # the card edited in place: the process's cached model follows it
        card = json.loads((model / "card.json").read_text())
        card["normalisation"]["rings"] = mode
        (model / "card.json").write_text(json.dumps(card))
        out = tmp_path / f"seg-{mode}"
        assert main(["-q", "segment", "--model", str(model), "--scans", str(small_demo_dir / "scans"), "--out", str(out),
                     "--steps", str(k), "--no-temporal", "--partial-volume", "none"]) == 0
        record = json.loads((out / "segmentation.json").read_text())
        assert record["model"]["normalisation"]["rings"] == mode
        seg[mode] = read_labels(sorted(out.glob("t*.tif"))[0])
    capsys.readouterr()
    assert not np.array_equal(seg["remove"], seg["keep"])
    # a model saved before the setting existed (no "rings" in its card) reads scans as they are, rings kept
    card = json.loads((model / "card.json").read_text())
    del card["normalisation"]["rings"]
    (model / "card.json").write_text(json.dumps(card))
    out = tmp_path / "seg-legacy"
    assert main(["-q", "segment", "--model", str(model), "--scans", str(small_demo_dir / "scans"), "--out", str(out),
                 "--steps", str(k), "--no-temporal", "--partial-volume", "none"]) == 0
    assert np.array_equal(read_labels(sorted(out.glob("t*.tif"))[0]), seg["keep"])
    # the shipped model (rebuilt 2026-12-08 by scripts/make_demo_model.sh) removes them, as projects do by default
    assert json.loads((MODEL_DIR / "card.json").read_text())["normalisation"]["rings"] == "remove"


def test_a_bad_rings_mode_is_refused_before_anything_is_written(small_demo_dir, tmp_path, capsys):
    from core.cli import main
    from core.workflow.run import RunConfig, run_workflow

    meta = json.loads((small_demo_dir / "dataset.json").read_text())
    out = tmp_path / "run"
    with pytest.raises(ReactomoError, match=r"^The rings setting is 'off'; use 'remove'"):
        run_workflow(RunConfig(scans=str(small_demo_dir / "scans"), scribbles=str(small_demo_dir / "scribbles.tif"),
                               label_step=meta["label_step"], out=str(out), epochs=1, rings="off"))
    assert not out.exists()
    assert main(["-q", "run", "--scans", str(small_demo_dir / "scans"), "--scribbles", str(small_demo_dir / "scribbles.tif"),
                 "--label-step", str(meta["label_step"]), "--out", str(out), "--rings", "off"]) == 2
    assert "--rings" in capsys.readouterr().err and not out.exists()


def test_the_data_command_sets_the_projects_rings_and_the_forest_reads_them(small_demo_dir, workspace, capsys):
    from core.cli import main
    from core.workflow.project import create_project, open_project

    p = create_project("rings-data", workspace=workspace)
    assert main(["data", p.name, "--scans", str(small_demo_dir / "scans")]) == 0
    assert "ring artefacts removed" in capsys.readouterr().out
    with open_project(p.name).open_step(1) as vol, open_project(p.name).open_step(1, raw=True) as raw:
        assert isinstance(vol, ring_corrected_class()) and not isinstance(raw, ring_corrected_class())
        assert not np.array_equal(vol.slice(0, 3), raw.slice(0, 3))
    assert main(["data", p.name, "--rings", "keep"]) == 0
    assert "ring artefacts kept" in capsys.readouterr().out
    assert open_project(p.name).rings() == "keep"
    with open_project(p.name).open_step(1) as vol:
        assert not isinstance(vol, ring_corrected_class())
    assert main(["data", p.name, "--rings", "sometimes"]) == 2
    assert open_project(p.name).rings() == "keep"


def test_a_scan_of_tiny_slices_is_read_as_it_is(tmp_path):
    vol = (np.arange(3 * 10 * 12, dtype=np.uint16).reshape(3, 10, 12) * 7)
    path = write_volume(tmp_path / "tiny.tif", vol)
    with open_scan(path, rings="remove") as v:
        np.testing.assert_array_equal(v.read(), vol)
        assert rings_summary(v)["bins_with_rings"] == 0 and rings_summary(v)["slices_read"] == 0
