"""Two writers at once, and writers killed mid-way: one writer per step, nothing half-written, nothing orphaned.

Real processes (``python -m core ...``) racing on real files, as two users of one server or two terminals would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from core.atomic import BusyError, remove_orphan_temporaries, writer_lock
from core.errors import ReactomoError

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "demo-unet"


def _core(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


_HOLD = """
import sys, time
from core.atomic import writer_lock
with writer_lock(sys.argv[1], what="the test's folder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold_in_another_process(target: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(target), str(seconds)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


# ------------------------------------------------------------------------------------------------ the lock itself
def test_writer_lock_refuses_a_second_writer_with_a_sentence_and_frees_on_exit(tmp_path):
    target = tmp_path / "seg"
    holder = _hold_in_another_process(target, 30)
    try:
        with pytest.raises(BusyError, match=r"^Another job is writing the test's folder right now; wait for it") as err:
            with writer_lock(target, what="the test's folder"):
                pass
        assert isinstance(err.value, ReactomoError)  # pages show it, the CLI exits 2 with it
        t0 = time.monotonic()
        with pytest.raises(BusyError):
            with writer_lock(target, what="the test's folder", wait_s=0.3):
                pass
        assert time.monotonic() - t0 >= 0.3  # it did wait before refusing
    finally:
        holder.kill()  # kill -9: the operating system drops the lock with the process
        holder.wait()
    with writer_lock(target, what="the test's folder", wait_s=5):
        pass


def test_orphan_temporaries_go_and_nothing_else(tmp_path):
    (tmp_path / ".t000.tif.x1y2.tmp.tif").write_bytes(b"half")
    (tmp_path / ".record.json.abc.tmp.json").write_text("{")
    (tmp_path / "t000.tif").write_bytes(b"whole")
    (tmp_path / ".seg.lock").write_text("")
    assert remove_orphan_temporaries(tmp_path) == [".record.json.abc.tmp.json", ".t000.tif.x1y2.tmp.tif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".seg.lock", "t000.tif"]
    assert remove_orphan_temporaries(tmp_path / "missing") == []


# ------------------------------------------------------------------------------------------- ground truth accepts
def test_two_concurrent_accepts_both_land_whole(demo_project):
    """Issue 12: two `ground-truth PROJECT --accept` at once left the candidate without labels.tif (2 of 4 trials)."""
    from core.workflow.ground_truth import load_accepted, load_candidate
    from core.workflow.labels import import_demo_scribbles

    import_demo_scribbles(demo_project)
    env = {"REACTOMO_WORKSPACE": str(demo_project.root.parent)}
    gt = demo_project.root / "ground_truth"
    for trial in range(2):
        procs = [_core("-q", "ground-truth", demo_project.name, "--accept", "--trees", "4", "--seed", str(seed), env=env)
                 for seed in (trial, trial + 10)]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err
        for name in ("candidate", "accepted"):
            assert sorted(p.name for p in (gt / name).iterdir()) == ["classifier.json", "classifier.skops",
                                                                      "extra_labels.tif", "labels.tif", "meta.json",
                                                                      "uncertainty.tif"]
        # no temporary folder survives, and the accepted labels are one whole training (one of the two seeds)
        assert [p.name for p in gt.iterdir() if p.name.endswith("-tmp") or p.name.endswith("-old")] == []
        cand, acc = load_candidate(demo_project), load_accepted(demo_project)
        assert cand is not None and acc is not None
        assert acc.meta["forest_config"]["seed"] in (trial, trial + 10)
        assert demo_project.manifest["ground_truth"]["folder"] == "ground_truth/accepted"


def test_a_crashed_ground_truth_writer_leaves_nothing_the_next_one_keeps(demo_project):
    from core.workflow.ground_truth import accept_candidate, train_candidate
    from core.workflow.labels import import_demo_scribbles

    import_demo_scribbles(demo_project)
    train_candidate(demo_project)
    gt = demo_project.root / "ground_truth"
    orphan = gt / ".accepted-20261205000000-999999-deadbeef-tmp"  # what kill -9 mid-write leaves
    orphan.mkdir()
    (orphan / "labels.tif").write_bytes(b"half")
    accept_candidate(demo_project)
    assert not orphan.exists() and (gt / "accepted" / "labels.tif").is_file()


# ------------------------------------------------------------------------------------------------- segmentations
def _one_step_scan(small_demo_dir: Path) -> Path:
    return sorted((small_demo_dir / "scans").glob("*.tif"))[0]


def test_a_second_segmentation_into_a_busy_folder_is_refused_and_writes_nothing(small_demo_dir, tmp_path):
    """Issue 12: `segment --no-clean --steps 0` into a folder another `segment` was writing left t000 uncleaned while
    the record said cleaned. Now the second writer is refused, with the sentence and exit 2, before writing."""
    out = tmp_path / "seg"
    holder = _hold_in_another_process(out, 60)  # the first segmentation, holding its folder
    try:
        p = _core("segment", "--model", str(MODEL), "--scans", str(_one_step_scan(small_demo_dir)), "--out", str(out),
                  "--no-clean", "--steps", "0")
        _, err = p.communicate(timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert p.returncode == 2
    assert err.strip().splitlines()[-1] == (f"error: Another job is writing the segmentation folder {out} right now; "
                                            "wait for it to finish, or write somewhere else.")
    assert "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_two_segmentations_racing_keep_files_and_record_in_step(small_demo_dir, tmp_path):
    """Two real `segment` processes into one folder, started together: one finishes, the other is refused; the
    files on disk are the cleaning the record says."""
    from core.segmentation.series import read_series_record

    out = tmp_path / "seg"
    scan = str(_one_step_scan(small_demo_dir))
    a = _core("segment", "--model", str(MODEL), "--scans", scan, "--out", str(out))
    b = _core("segment", "--model", str(MODEL), "--scans", scan, "--out", str(out), "--no-clean")
    (_, err_a), (_, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
    codes = sorted([a.returncode, b.returncode])
    assert codes in ([0, 2], [0, 0]), (err_a, err_b)  # [0, 0]: the second started after the first had finished
    rec = read_series_record(out)
    if codes == [0, 2]:
        loser = err_a if a.returncode == 2 else err_b
        assert "Another job is writing the segmentation folder" in loser and "Traceback" not in loser
        # the record is the winner's: cleaned when `a` won, not cleaned when `b` (--no-clean) won
        assert (rec["settings"]["postprocess"] is None) == (a.returncode == 2)
    step = rec["steps"][0]
    assert step["status"] == "done"
    labels = tifffile.imread(out / Path(step["out_path"]).name)
    assert labels.dtype == np.uint8 and labels.shape == tifffile.imread(scan).shape
    assert [q.name for q in out.iterdir() if ".tmp" in q.name] == []


def test_a_killed_segmentation_leaves_no_orphan_for_the_next_run(small_demo_dir, tmp_path):
    """Issue 12: kill -9 during segment left an orphan .tmp.tif that nothing removed; the next run removes it."""
    out = tmp_path / "seg"
    out.mkdir()
    orphan = out / ".t000.tif.k9x2.tmp.tif"
    orphan.write_bytes(b"half a label file")
    p = _core("-q", "segment", "--model", str(MODEL), "--scans", str(_one_step_scan(small_demo_dir)), "--out", str(out))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert not orphan.exists() and sorted(q.name for q in out.iterdir() if q.suffix == ".tif") == ["t000.tif"]
