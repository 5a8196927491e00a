"""Beamtime mode (issue 14): when a scan counts as complete, a simulated beamline (slow partial writes, renames, a scan
out of order, the watcher killed and restarted) whose live results equal a batch segment + analyze, a re-written
scan segmented once more, failed reads retried, alerts, and the CLI's sentences."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from core.cli import main
from core.errors import ReactomoError
from core.imaging.arrivals import Arrivals, reads_completely, scan_checksum
from core.imaging.io import write_volume

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "demo-unet"
SHAPE = dict(steps=5, shape=(12, 64, 72), seed=3)


@pytest.fixture(scope="module")
def demo():
    from core.imaging.synthetic import DemoConfig, make_demo

    return make_demo(DemoConfig(**SHAPE))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def tiff_bytes(tmp_path: Path, data: np.ndarray, name: str = "x.tif") -> bytes:
    p = tmp_path / f".bytes-{name}"
    write_volume(p, data)
    b = p.read_bytes()
    p.unlink()
    return b


# ------------------------------------------------------------------------------------------------ completeness
def test_a_half_written_scan_is_never_complete_and_a_whole_one_only_after_the_quiet_window(tmp_path, demo):
    scans = tmp_path / "scans"
    scans.mkdir()
    data = tiff_bytes(tmp_path, demo.scans[0])
    clock = Clock()
    arr = Arrivals(scans, rule="quiet", quiet_s=2.0, clock=clock)
    (scans / "t000.tif").write_bytes(data[: len(data) // 2])
    assert arr.look() == [] and arr.incomplete == ["t000.tif"]
    clock.t += 10
    assert arr.look() == []  # quiet for 10 s, but its pages do not fit in the file: still being written
    assert not reads_completely(scans / "t000.tif")
    (scans / "t000.tif").write_bytes(data)
    assert arr.look() == []  # just changed
    clock.t += 1
    assert arr.look() == []
    clock.t += 1.5
    assert arr.look() == [scans / "t000.tif"]
    with open(scans / "t000.tif", "ab") as f:  # written again: incomplete until quiet again
        f.write(b"\0" * 10)
    assert arr.look() == []


def test_rename_marker_and_slice_count_rules_and_temporary_names(tmp_path, demo):
    data = tiff_bytes(tmp_path, demo.scans[1])
    scans = tmp_path / "r"
    scans.mkdir()
    arr = Arrivals(scans, rule="rename")
    for tmp in (".t001.tif", "t001.tif.part", "t001.tif.tmp", "~t001.tif"):
        (scans / tmp).write_bytes(data)
    assert arr.look() == [] and arr.incomplete == []
    os.replace(scans / "t001.tif.part", scans / "t001.tif")
    (scans / "t010.tif").write_bytes(data)
    (scans / "t2.tif").write_bytes(data)
    assert [p.name for p in arr.look()] == ["t001.tif", "t2.tif", "t010.tif"]  # natural order

    marked = tmp_path / "m"
    marked.mkdir()
    arr = Arrivals(marked, rule="marker")
    (marked / "t000.tif").write_bytes(data)
    assert arr.look() == []
    (marked / "t000.done").write_text("")
    assert arr.look() == [marked / "t000.tif"]

    sliced = tmp_path / "s"
    (sliced / "t000").mkdir(parents=True)
    arr = Arrivals(sliced, rule="slices", slices=12)
    for z in range(8):
        tifffile.imwrite(sliced / "t000" / f"z{z:04d}.tif", demo.scans[0][z])
    assert arr.look() == [] and arr.incomplete == ["t000"]
    for z in range(8, 12):
        tifffile.imwrite(sliced / "t000" / f"z{z:04d}.tif", demo.scans[0][z])
    assert arr.look() == [sliced / "t000"]
    assert len(scan_checksum(sliced / "t000")) == 64


@pytest.mark.parametrize("kwargs, match", [
    (dict(rule="inotify"), "completeness rule"),
    (dict(rule="slices"), "needs the number of slices"),
    (dict(quiet_s=0), "quiet window"),
])
def test_bad_rules_are_refused(tmp_path, kwargs, match):
    with pytest.raises(ReactomoError, match=match):
        Arrivals(tmp_path, **kwargs)
    with pytest.raises(ReactomoError, match="does not exist"):
        Arrivals(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------ the beamline
def _write_slowly(path: Path, data: bytes, parts: int = 4, pause: float = 0.4) -> None:
    """The reconstruction writing a scan in several pieces into its final name (reopening the file each time)."""
    step = len(data) // parts + 1
    for i in range(parts):
        with open(path, "ab" if i else "wb") as f:
            f.write(data[i * step:(i + 1) * step])
        time.sleep(pause)


def _watch(scans: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core", "-q", "watch", "--scans", str(scans), "--model", str(MODEL),
                             "--out", str(out), "--interval", "60", "--quiet-s", "1", "--poll", "0.2", "--tile", "64",
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _done(out: Path) -> dict:
    try:
        rec = json.loads((out / "segmentation.json").read_text())
    except (OSError, ValueError):
        return {}
    return {Path(s["scan"]).name: s for s in rec["steps"] if s.get("status") == "done"}


def test_a_simulated_beamline_ends_with_every_scan_segmented_once_and_the_batch_results(tmp_path, demo):
    scans, out = tmp_path / "scans", tmp_path / "live-seg"
    scans.mkdir()
    blobs = {k: tiff_bytes(tmp_path, demo.scans[k], f"{k}.tif") for k in range(5)}
    watcher = _watch(scans, out)
    try:
        # t000 by rename, t001 in four partial writes, then t003 before t002 (out of order)
        (scans / "t000.tif.part").write_bytes(blobs[0])
        os.replace(scans / "t000.tif.part", scans / "t000.tif")
        _write_slowly(scans / "t001.tif", blobs[1])
        deadline = time.monotonic() + 120
        while len(_done(out)) < 2:
            assert time.monotonic() < deadline, "the first two scans were not segmented in time"
            assert watcher.poll() is None, watcher.stdout.read()
            time.sleep(0.2)
        os.killpg(watcher.pid, signal.SIGKILL)  # the watcher dies mid-experiment
        watcher.wait(10)
        _write_slowly(scans / "t003.tif", blobs[3], parts=2, pause=0.2)
        (scans / "t002.tif.part").write_bytes(blobs[2])
        os.replace(scans / "t002.tif.part", scans / "t002.tif")
        watcher = _watch(scans, out, "--idle-exit", "4")  # restarted: resumes, exits once nothing new comes
        (scans / "t004.tif.part").write_bytes(blobs[4])
        os.replace(scans / "t004.tif.part", scans / "t004.tif")
        text, _ = watcher.communicate(timeout=240)
        assert watcher.returncode == 0, text
    finally:
        if watcher.poll() is None:
            os.killpg(watcher.pid, signal.SIGKILL)
    done = _done(out)
    assert sorted(done) == [f"t00{k}.tif" for k in range(5)]
    assert [done[f"t00{k}.tif"]["step"] for k in range(5)] == list(range(5))  # t003 moved to step 3 when t002 came
    assert [done[f"t00{k}.tif"]["time_s"] for k in range(5)] == [60.0 * k for k in range(5)]
    state = json.loads((out / "live" / "state.json").read_text())
    assert {n: r["attempts"] for n, r in state["scans"].items()} == {f"t00{k}.tif": 1 for k in range(5)}  # once each
    assert text.count("Segmented t000.tif") == 0 and text.count("Segmented t002.tif") == 1  # the restart redid nothing
    assert "5 of 5 complete scans segmented" in text
    # the same scans in batch, each on its own as beamtime mode labels them: segment + analyze give the same molar
    # evolution, byte for byte (batch `segment` labels a finished series together unless told --no-temporal)
    batch, res = tmp_path / "batch", tmp_path / "res"
    assert main(["-q", "segment", "--model", str(MODEL), "--scans", str(scans), "--out", str(batch), "--interval", "60",
                 "--tile", "64", "--no-temporal"]) == 0
    assert main(["-q", "analyze", "--segmentations", str(batch), "--out", str(res)]) == 0
    live_csv = (out / "live" / "analysis" / "molar_evolution.csv").read_text()
    assert live_csv == (res / "molar_evolution.csv").read_text() and live_csv.count("\n") == 6
    for k in range(5):
        np.testing.assert_array_equal(tifffile.imread(out / f"t00{k}.tif"), tifffile.imread(batch / f"t00{k}.tif"))


def _config(scans: Path, out: Path, **kw):
    from core.workflow.live import LiveConfig

    return LiveConfig(**{"scans": str(scans), "model": str(MODEL), "out": str(out), "interval_s": 60, "quiet_s": 0.2,
                         "poll_s": 0.1, "inference": {"tile": 64}, **kw})


def _quiet(w, clock) -> int:
    """Two looks a quiet window apart: the scans written since the last look count as complete."""
    w.look()
    time.sleep(0.25)
    return w.look()


def test_a_rewritten_scan_is_segmented_once_more_and_a_failed_one_is_retried_later(tmp_path, demo, monkeypatch):
    from core.workflow.live import Watcher

    scans, out = tmp_path / "scans", tmp_path / "seg"
    scans.mkdir()
    for k in (0, 1):
        write_volume(scans / f"t00{k}.tif", demo.scans[k])
    clock = Clock()
    w = Watcher(_config(scans, out), clock=clock)
    assert _quiet(w, clock) == 2
    first = tifffile.imread(out / "t001.tif")
    assert _quiet(w, clock) == 0  # nothing new: nothing segmented again
    os.utime(scans / "t001.tif")  # touched, same bytes: the checksum says nothing changed
    assert _quiet(w, clock) == 0
    write_volume(scans / "t001.tif", demo.scans[3])  # the reconstruction writes step 1 again
    assert _quiet(w, clock) == 1
    rec = w.scans["t001.tif"]
    assert rec["rewritten"] == 1 and rec["attempts"] == 2 and rec["status"] == "done"
    assert not np.array_equal(first, tifffile.imread(out / "t001.tif"))
    # a scan whose data cannot be read: skipped with its sentence, the others go on, retried after a delay
    write_volume(scans / "t002.tif", demo.scans[2], compression="zlib")
    comp = bytearray((scans / "t002.tif").read_bytes())
    comp[len(comp) // 2: len(comp) // 2 + 2000] = b"\xff" * 2000
    (scans / "t002.tif").write_bytes(bytes(comp))
    write_volume(scans / "t003.tif", demo.scans[3])
    _quiet(w, clock)
    assert w.scans["t003.tif"]["status"] == "done"
    failed = w.scans["t002.tif"]
    assert failed["status"] == "failed" and failed["error"] and "Traceback" not in failed["error"]
    assert any(a["kind"] == "failed" and "t002.tif" in a["sentence"] for a in w.alerts)
    attempts = failed["attempts"]
    w.look()
    assert w.scans["t002.tif"]["attempts"] == attempts  # not before its retry time
    clock.t += 31
    write_volume(scans / "t002.tif", demo.scans[2])  # the reconstruction fixed it
    _quiet(w, clock)
    assert w.scans["t002.tif"]["status"] == "done"


def test_a_full_disk_fails_the_step_with_a_sentence_and_it_goes_on_when_there_is_room(tmp_path, demo, monkeypatch):
    import errno

    import core.network.inference as inference
    from core.workflow.live import Watcher

    scans, out = tmp_path / "scans", tmp_path / "seg"
    scans.mkdir()
    write_volume(scans / "t000.tif", demo.scans[0])

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inference, "atomic_write_with", full)
    clock = Clock()
    w = Watcher(_config(scans, out), clock=clock)
    _quiet(w, clock)
    rec = w.scans["t000.tif"]
    assert rec["status"] == "failed" and "space" in rec["error"].lower()
    monkeypatch.undo()
    clock.t += 31
    w.look()
    assert w.scans["t000.tif"]["status"] == "done"


# ------------------------------------------------------------------------------------------------ alerts
def test_a_drifted_histogram_and_a_confidence_drop_give_alerts_and_run_the_alert_command(tmp_path, demo):
    from core.workflow.live import Watcher

    scans, out = tmp_path / "scans", tmp_path / "seg"
    scans.mkdir()
    said = tmp_path / "said.txt"
    script = tmp_path / "post.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> {said}\n')
    script.chmod(0o755)
    write_volume(scans / "t000.tif", demo.scans[1])
    write_volume(scans / "t001.tif", demo.scans[2])
    clock = Clock()
    w = Watcher(_config(scans, out, alert_command=str(script)), clock=clock)
    _quiet(w, clock)
    assert not [a for a in w.alerts if a["kind"] in ("histogram", "confidence")]  # the reaction alone alerts nothing
    # a scan whose contrast changed (e.g. another energy): the normalisation cannot undo it
    scan = demo.scans[3].astype(np.float64)
    mid = np.median(scan)
    write_volume(scans / "t002.tif", np.clip(mid + 0.45 * (scan - mid), 0, 65535).astype(np.uint16))
    # a scan of noise: nothing the model knows
    rng = np.random.default_rng(0)
    write_volume(scans / "t003.tif", rng.integers(1000, 40000, size=demo.scans[0].shape).astype(np.uint16))
    _quiet(w, clock)
    kinds = {(a["kind"], a["scan"]) for a in w.alerts}
    assert ("histogram", "t002.tif") in kinds
    assert ("confidence", "t003.tif") in kinds
    hist = next(a for a in w.alerts if a["kind"] == "histogram" and a["scan"] == "t002.tif")
    assert "moved" in hist["sentence"] and "retrain" in hist["sentence"] and hist["value"] is not None
    log = (out / "live" / "alerts.log").read_text().splitlines()
    assert len(log) == len(w.alerts) and all(line.count("\t") == 2 for line in log)
    assert said.read_text().splitlines() == [a["sentence"] for a in w.alerts]
    # raised once: another look says nothing again
    n = len(w.alerts)
    w.look()
    assert len(w.alerts) == n
    # no new scan for more than three intervals: the scans stopped arriving
    clock.t += 3 * 60 + 1
    w.look()
    assert w.alerts[-1]["kind"] == "stalled" and "No new scan for" in w.alerts[-1]["sentence"]


def test_quick_mode_segments_the_central_slab_first_and_keeps_it_apart(tmp_path, demo):
    from core.workflow.live import Watcher, live_view  # noqa: F401

    scans, out = tmp_path / "scans", tmp_path / "seg"
    scans.mkdir()
    for k in (0, 1, 2):
        write_volume(scans / f"t00{k}.tif", demo.scans[k])
    clock = Clock()
    w = Watcher(_config(scans, out, quick=True, quick_slices=4), clock=clock)
    _quiet(w, clock)
    quick = json.loads((out / "live" / "quick" / "segmentation.json").read_text())
    assert [s["status"] for s in quick["steps"]] == ["done"] * 3
    assert quick["settings"]["z_range"] == [4, 8]  # the central 4 of 12 slices
    assert tifffile.imread(out / "live" / "quick" / "t000.tif").shape[0] == 4
    assert len(_done(out)) == 1  # one whole scan per look after the quick slabs
    while len(_done(out)) < 3:
        w.look()
    assert (out / "live" / "quick-analysis" / "molar_evolution.csv").is_file()
    assert (out / "live" / "analysis" / "molar_evolution.csv").is_file()
    # sized from the measured speed when not given: what fits in 80 % of the interval
    auto = Watcher(_config(scans, tmp_path / "auto", quick=True, interval_s=2.0), clock=clock)
    auto.scans = {"a": {"mvoxel_per_s": 0.5}}
    assert auto._quick_slices((2016, 1000, 1000)) == 1  # never less than one slice
    auto.scans = {"a": {"mvoxel_per_s": 50.0}}
    assert auto._quick_slices((2016, 1000, 1000)) == 80  # 0.8 x 2 s x 50 Mvoxel/s / 1 Mvoxel per slice


# ------------------------------------------------------------------------------------------------ the CLI
def test_cli_watch_bad_inputs_are_one_sentence(tmp_path, capsys):
    cases = [
        (["--scans", str(tmp_path / "nope")], "does not exist or is not a folder"),
        (["--scans", str(tmp_path), "--complete", "slices"], "--complete slices needs --slices"),
        (["--scans", str(tmp_path), "--interval", "0"], "arrival interval"),
        (["--scans", str(tmp_path), "--workers", "3"], "--workers and --scheduler are for segment"),
    ]
    for extra, match in cases:
        code = main(["-q", "watch", "--model", str(MODEL), "--out", str(tmp_path / "o"), "--once", *extra])
        err = capsys.readouterr().err
        assert code == 2 and match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_second_watcher_on_the_same_folder_is_refused(tmp_path, capsys):
    from core.atomic import writer_lock

    out = tmp_path / "o"
    out.mkdir()
    with writer_lock(out / "live", what=f"the live run in {out}"):
        code = subprocess.run([sys.executable, "-m", "core", "-q", "watch", "--scans", str(tmp_path), "--model", str(MODEL),
                               "--out", str(out), "--once"], cwd=ROOT, capture_output=True, text=True)
    assert code.returncode == 2 and "live run" in code.stderr and "Traceback" not in code.stderr


def test_a_watch_restarted_with_other_settings_on_a_used_folder_is_refused_when_it_starts(tmp_path, demo, capsys):
    """A watcher restarted on a folder segmented with other settings (here: no averaging over slices) would only meet
    segment_series' refusal when the next scan arrives, possibly hours later: it is refused at once, in one sentence,
    and changes nothing; the same settings resume as before."""
    from core.workflow.live import Watcher, read_live_state

    scans, out = tmp_path / "scans", tmp_path / "seg"
    scans.mkdir()
    for k in (0, 1):
        write_volume(scans / f"t00{k}.tif", demo.scans[k])
    clock = Clock()
    assert _quiet(Watcher(_config(scans, out), clock=clock), clock) == 2
    labels = {p.name: p.read_bytes() for p in sorted(out.glob("t*.tif"))}
    state = read_live_state(out)
    with pytest.raises(ReactomoError, match=r"holds 2 step\(s\) segmented with another model or other settings"):
        Watcher(_config(scans, out, inference={"tile": 64, "z_sigma": 0.0}), clock=clock)
    write_volume(scans / "t002.tif", demo.scans[2])
    code = main(["-q", "watch", "--scans", str(scans), "--model", str(MODEL), "--out", str(out), "--once",
                 "--tile", "64", "--z-sigma", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "give a new output folder" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in sorted(out.glob("t*.tif"))} == labels  # nothing changed
    assert read_live_state(out) == state
    w = Watcher(_config(scans, out), clock=clock)  # the same settings: goes on where it stopped
    assert _quiet(w, clock) == 1 and w.scans["t002.tif"]["status"] == "done"
