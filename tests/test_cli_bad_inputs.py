"""Bad inputs the CLI met in issue 12: each is one sentence, exit status 2, and changes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from badinputs import make_bad_input
from core.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "demo-unet"


def _fails(capsys, argv, sentence):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and sentence in last and "Traceback" not in err
    return out, err


@pytest.mark.parametrize("case, words", [("nan", "The scan holds 1 NaN value"), ("inf", "The scan holds 1 infinite value")])
def test_a_scan_with_nan_or_inf_is_refused_by_train(case, words, tmp_path, capsys):
    scan = make_bad_input(case, tmp_path)
    vol = tifffile.imread(scan)
    z = int(np.flatnonzero(~np.isfinite(vol).all(axis=(1, 2)))[0])  # label the slice that holds the bad value
    gt = tmp_path / "gt.tif"
    labels = np.zeros(vol.shape, np.uint8)
    labels[z] = 1
    labels[z, :5, :5] = 2
    tifffile.imwrite(gt, labels)
    out, _ = _fails(capsys, ["train", "--scan", scan, "--ground-truth", str(gt), "--out", str(tmp_path / "models" / "m"),
                             "--epochs", "1", "--patch", "16", "--batch", "2"], words)
    assert "epoch" not in out and not (tmp_path / "models" / "m").exists()


@pytest.mark.parametrize("case, words", [("nan", "NaN value"), ("inf", "infinite value")])
def test_a_scan_with_nan_or_inf_fails_its_step_in_segment(case, words, tmp_path, capsys):
    scan = make_bad_input(case, tmp_path)
    _fails(capsys, ["-q", "segment", "--model", str(MODEL), "--scans", scan, "--out", str(tmp_path / "seg")],
           f"1 step failed (0); the first: The scan holds 1 {words}")
    assert not (tmp_path / "seg" / "scan.tif").exists()


def test_analyze_refuses_label_files_of_different_shapes(tmp_path, capsys):
    seg = tmp_path / "seg"
    seg.mkdir()
    tifffile.imwrite(seg / "t000.tif", np.ones((6, 20, 24), np.uint8))
    tifffile.imwrite(seg / "t001.tif", np.ones((6, 20, 30), np.uint8))
    _fails(capsys, ["-q", "analyze", "--segmentations", str(seg), "--out", str(tmp_path / "res")],
           "t001.tif has shape (6, 20, 30) but t000.tif has (6, 20, 24); the steps of one experiment must be label "
           "volumes of the same shape.")
    assert not (tmp_path / "res").exists()


def test_evaluate_refuses_codes_outside_the_phase_table(tmp_path, capsys):
    pred = np.ones((6, 10, 12), np.uint8)
    pred[0, 0, :2] = 9
    pred[1, 0, 0] = 7
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    tifffile.imwrite(tmp_path / "truth.tif", np.ones((6, 10, 12), np.uint8))
    _fails(capsys, ["evaluate", "--pred", str(tmp_path / "pred.tif"), "--truth", str(tmp_path / "truth.tif")],
           "The prediction pred.tif holds label codes 7, 9, not in the phase table (1 gypsum, 2 bassanite, 3 pore, "
           "4 celestite)")
    # unlabelled pixels (0) are no foreign code
    pred[pred > 4] = 0
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    assert main(["evaluate", "--pred", str(tmp_path / "pred.tif"), "--truth", str(tmp_path / "truth.tif")]) == 0


@pytest.mark.parametrize("codes", ["1234", [1, "2", None, 4], {"a": 1}])
def test_a_card_with_class_codes_of_the_wrong_type(codes, tmp_path, capsys):
    model = tmp_path / "bad-card"
    shutil.copytree(MODEL, model)
    card = json.loads((model / "card.json").read_text())
    card["class_codes"] = codes
    (model / "card.json").write_text(json.dumps(card))
    scan = make_bad_input("nan", tmp_path)  # any scan: the card is read and refused first
    _fails(capsys, ["-q", "segment", "--model", str(model), "--scans", scan, "--out", str(tmp_path / "seg")],
           "The model card of bad-card is inconsistent")


def test_a_step_with_a_truncated_header_fails_alone_without_library_log_lines(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        tifffile.imwrite(scans / f"t{i:03d}.tif", rng.integers(10000, 40000, (6, 32, 32), dtype=np.uint16))
    (scans / "t001.tif").write_bytes((scans / "t001.tif").read_bytes()[:6])  # the header cut short
    p = subprocess.run([sys.executable, "-m", "core", "-q", "segment", "--model", str(MODEL), "--scans", str(scans),
                        "--out", str(tmp_path / "seg")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert sorted(q.name for q in (tmp_path / "seg").glob("*.tif")) == ["t000.tif", "t002.tif"]
    assert "step   1  t001.tif                 FAILED: The file" in p.stdout and "truncated or corrupt" in p.stdout
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 1 step failed (1); the first: The file ")
    assert "ERROR" not in p.stderr and "WARNING" not in p.stderr and "Traceback" not in p.stderr
    rec = json.loads((tmp_path / "seg" / "segmentation.json").read_text())
    assert [s["status"] for s in rec["steps"]] == ["done", "failed", "done"]


def test_a_folder_where_nothing_reads_is_still_refused_whole(tmp_path, capsys):
    from core.errors import ReactomoError
    from core.imaging.io import series_scan_paths

    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(2):
        (scans / f"t{i:03d}.tif").write_bytes(b"II*\x00")
    with pytest.raises(ReactomoError, match="truncated or corrupt"):
        series_scan_paths(scans)


@pytest.mark.parametrize("argv, words", [
    (["--class-weights", "inverse"], "Unknown class_weights 'inverse'; use one of ['none', 'balanced', 'sqrt']"),
    (["--loss", "focal"], "Unknown loss 'focal'; use one of"),
])
def test_run_refuses_an_unknown_loss_or_class_weights_before_writing(argv, words, small_demo_dir, tmp_path, capsys):
    out = tmp_path / "run1"
    _fails(capsys, ["-q", "run", "--scans", str(small_demo_dir / "scans"), "--scribbles", str(small_demo_dir / "scribbles.tif"),
                    "--label-step", "1", "--out", str(out), *argv], words)
    assert not out.exists()


@pytest.mark.parametrize("argv", [
    ["rf", "--scan", "{outside}/scan.tif", "--scribbles", "{inside}/s.tif", "--out", "{inside}/gt"],
    ["train", "--scan", "{inside}/scan.tif", "--ground-truth", "{outside}/gt.tif", "--out", "{inside}/m"],
    ["segment", "--model", str(MODEL), "--scans", "{outside}/*.tif", "--out", "{inside}/seg"],
    ["evaluate", "--pred", "{inside}/p.tif", "--truth", "{inside}/../outside/t.tif"],
    ["analyze", "--segmentations", "{outside}", "--out", "{inside}/res"],
])
def test_cli_data_arguments_stay_inside_the_data_roots(argv, tmp_path, capsys, monkeypatch):
    """Issue 12: with REACTOMO_DATA_ROOT set, the CLI reads data only from the data roots, as the pages do."""
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    monkeypatch.setenv("REACTOMO_DATA_ROOT", str(inside))
    args = [a.replace("{inside}", str(inside)).replace("{outside}", str(outside)) for a in argv]
    _fails(capsys, args, "is outside the allowed data root(s)")
    assert sorted(p.name for p in inside.iterdir()) == []  # refused before anything was read or written
