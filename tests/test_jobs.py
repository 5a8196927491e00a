"""Background jobs: records on disk, progress, events, cancellation, failures and restarts (core.workflow.jobs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from core.workflow import jobs
from core.errors import ReactomoError
from core.workflow.jobs import JobRecord, list_jobs, read_events, read_job, running_job, start_job


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setattr(jobs, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(jobs, "HEARTBEAT_S", 0.05)


def _until(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return False


def test_job_runs_to_done_with_events_readable_while_running(tmp_path):
    go = threading.Event()

    def work(ctx):
        assert ctx.params == {"epochs": 2}
        for epoch in range(2):
            ctx.event({"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "val_loss": 0.5})
        ctx.progress(0.5, "half")
        assert go.wait(3)
        (ctx.folder / "model.txt").write_text("m")
        return {"model": "model.txt"}

    h = start_job(tmp_path, "train", work, params={"epochs": 2}, title="Train")
    assert h.folder == tmp_path / "jobs" / h.id
    assert _until(lambda: h.record().progress == 0.5)
    running = h.record()
    assert running.status == "running" and running.is_active and running.pid == os.getpid()
    assert [e["epoch"] for e in h.events()] == [0, 1]
    assert read_events(tmp_path, h.id, since=1) == [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.5}]
    go.set()
    rec = h.wait(3)
    assert rec.status == "done" and rec.progress == 1.0 and rec.result == {"model": "model.txt"}
    assert rec.error is None and rec.started and rec.finished and not rec.is_active
    assert (h.folder / "model.txt").exists()
    on_disk = json.loads((h.folder / "job.json").read_text())
    assert JobRecord.from_dict(on_disk) == rec == read_job(tmp_path, h.id)


def test_eta_appears_once_progress_moves(tmp_path):
    step = threading.Event()
    moved = threading.Event()

    def work(ctx):
        ctx.progress(0.0, "starting")
        assert step.wait(3)
        time.sleep(0.02)
        ctx.progress(0.25, "a quarter")
        moved.set()
        assert step.wait(3) and ctx.cancelled() is False
        return None

    h = start_job(tmp_path, "segment", work)
    assert _until(lambda: h.record().message == "starting")
    assert h.record().eta_s is None
    step.set()
    assert moved.wait(3)
    assert _until(lambda: h.record().progress == 0.25)  # read from disk: wait for the write on a loaded machine
    rec = h.record()
    assert rec.progress == 0.25 and rec.eta_s is not None and rec.eta_s >= 0
    assert h.wait(3).status == "done"


def test_progress_writes_are_throttled_but_one_always_lands(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "PROGRESS_INTERVAL_S", 60.0)
    monkeypatch.setattr(jobs, "HEARTBEAT_S", 60.0)
    hold = threading.Event()

    def work(ctx):
        ctx.progress(0.1, "first")  # throttled: the "running" write was just made
        ctx.progress(0.2, "second")  # throttled
        assert hold.wait(3)
        ctx.progress(1.0, "end")  # fraction 1 always writes

    h = start_job(tmp_path, "train", work)
    time.sleep(0.1)
    assert (h.record().status, h.record().progress) == ("running", 0.0)
    hold.set()
    rec = h.wait(3)
    assert rec.progress == 1.0 and rec.message == "end"


def test_cancel_stops_a_cooperative_job(tmp_path):
    started = threading.Event()

    def work(ctx):
        started.set()
        while True:
            ctx.check_cancelled()
            time.sleep(0.005)

    h = start_job(tmp_path, "train", work)
    assert started.wait(3)
    h.cancel()
    rec = h.wait(3)
    assert rec.status == "cancelled" and rec.error is None and rec.finished


def test_returning_after_cancel_counts_as_cancelled(tmp_path):
    def work(ctx):
        assert _until(ctx.cancelled)
        return {"partial": True}

    h = start_job(tmp_path, "train", work)
    jobs.request_cancel(tmp_path, h.id)
    assert h.wait(3).status == "cancelled"


def test_reactomo_error_fails_with_its_sentence(tmp_path):
    def work(ctx):
        raise ReactomoError("Scan 3 has shape (4, 4); expected (16, 64, 72).")

    rec = start_job(tmp_path, "segment", work).wait(3)
    assert rec.status == "failed" and rec.error == "Scan 3 has shape (4, 4); expected (16, 64, 72)."


def test_unexpected_exception_fails_with_a_plain_sentence(tmp_path, caplog):
    def work(ctx):
        raise KeyError("boom")

    rec = start_job(tmp_path, "segment", work).wait(3)
    assert rec.status == "failed"
    assert rec.error == "Unexpected error (KeyError: 'boom'); see the server log."
    assert "Traceback" not in rec.error
    assert any(r.exc_info for r in caplog.records if r.name == "core.workflow.jobs")


def test_a_full_disk_in_a_job_fails_with_the_cli_sentence(tmp_path):
    import errno

    def work(ctx):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/seg/t003.tif")

    rec = start_job(tmp_path, "segment", work).wait(3)
    assert rec.status == "failed"
    assert rec.error.startswith("The disk is full: /data/seg/t003.tif could not be written; free some space")


def test_bad_result_fails(tmp_path):
    rec = start_job(tmp_path, "train", lambda ctx: [1, 2]).wait(3)
    assert rec.status == "failed" and "must return a dict" in rec.error


def test_second_job_of_same_kind_is_refused_while_one_runs(tmp_path):
    release = threading.Event()
    first = start_job(tmp_path, "train", lambda ctx: release.wait(3) and None, title="Big model")
    try:
        with pytest.raises(ReactomoError, match=f"Big model.*{first.id}"):
            start_job(tmp_path, "train", lambda ctx: None)
        other = start_job(tmp_path, "segment", lambda ctx: None)  # another kind is fine
        assert other.wait(3).status == "done"
        assert running_job(tmp_path, "train").id == first.id
    finally:
        release.set()
    assert first.wait(3).status == "done"
    assert running_job(tmp_path, "train") is None
    assert start_job(tmp_path, "train", lambda ctx: None).wait(3).status == "done"


def test_list_jobs_newest_first_and_kind_filter(tmp_path):
    ids = []
    for kind in ("train", "segment", "train"):
        ids.append(start_job(tmp_path, kind, lambda ctx: None).id)
        jobs.JobHandle(tmp_path, ids[-1]).wait(3)
    assert [r.id for r in list_jobs(tmp_path)] == ids[::-1]
    assert [r.id for r in list_jobs(tmp_path, kind="train")] == [ids[2], ids[0]]
    assert list_jobs(tmp_path / "nowhere") == []
    with pytest.raises(ReactomoError, match="No job"):
        read_job(tmp_path, "20000101T000000000000Z-abcdef")


def test_partial_trailing_event_line_is_ignored(tmp_path):
    h = start_job(tmp_path, "train", lambda ctx: ctx.event({"epoch": 0}))
    h.wait(3)
    with open(h.folder / "events.jsonl", "a") as fh:
        fh.write('{"epoch": 1, "train_lo')
    assert read_events(tmp_path, h.id) == [{"epoch": 0}]
    with open(h.folder / "events.jsonl", "a") as fh:
        fh.write('ss": 0.3}\n')
    assert read_events(tmp_path, h.id, since=1) == [{"epoch": 1, "train_loss": 0.3}]


def _left_running(tmp_path, job_id, *, pid, heartbeat):
    folder = tmp_path / "jobs" / job_id
    folder.mkdir(parents=True)
    rec = JobRecord(id=job_id, kind="train", status="running", progress=0.4, pid=pid,
                    created=heartbeat, started=heartbeat, updated=heartbeat, heartbeat=heartbeat)
    (folder / "job.json").write_text(json.dumps(rec.to_dict()))
    return folder


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_record_of_dead_process_is_interrupted(tmp_path):
    now = datetime.now(timezone.utc).isoformat()
    folder = _left_running(tmp_path, "20260101T000000000000Z-aaaaaa", pid=_dead_pid(), heartbeat=now)
    rec = read_job(tmp_path, "20260101T000000000000Z-aaaaaa")
    assert rec.status == "interrupted" and not rec.is_active and "interrupted" in rec.error
    assert json.loads((folder / "job.json").read_text())["status"] == "interrupted"  # written back
    assert running_job(tmp_path, "train") is None
    assert start_job(tmp_path, "train", lambda ctx: None).wait(3).status == "done"


def test_stale_heartbeat_is_interrupted_fresh_one_is_not(tmp_path):
    old = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
    fresh = datetime.now(timezone.utc).isoformat()
    alive = os.getppid()  # a live process that is not this one
    _left_running(tmp_path, "20260101T000000000000Z-bbbbbb", pid=alive, heartbeat=old)
    _left_running(tmp_path, "20260101T000000000001Z-cccccc", pid=alive, heartbeat=fresh)
    by_id = {r.id: r.status for r in list_jobs(tmp_path)}
    assert by_id == {"20260101T000000000000Z-bbbbbb": "interrupted", "20260101T000000000001Z-cccccc": "running"}
    # Same pid as this server but no runner thread: left over from before a reload of this module's state.
    _left_running(tmp_path, "20260101T000000000002Z-dddddd", pid=os.getpid(), heartbeat=fresh)
    assert read_job(tmp_path, "20260101T000000000002Z-dddddd").status == "interrupted"


def test_heartbeat_keeps_a_quiet_job_alive(tmp_path):
    release = threading.Event()
    h = start_job(tmp_path, "train", lambda ctx: release.wait(3) and None)
    try:
        first = h.record().heartbeat
        assert _until(lambda: h.record().heartbeat != first)
        assert read_job(tmp_path, h.id, stale_after_s=1.0).status == "running"
    finally:
        release.set()
    assert h.wait(3).status == "done"


def test_record_is_valid_json_at_all_times(tmp_path):
    stop = threading.Event()
    bad: list[str] = []
    reads = 0

    def work(ctx):
        for i in range(1500):
            ctx.progress(i / 1500, f"step {i} " + "x" * (i % 50))
        stop.set()

    h = start_job(tmp_path, "train", work)
    path = h.folder / "job.json"
    while not stop.is_set() or reads < 50:
        text = path.read_text()
        reads += 1
        try:
            json.loads(text)
        except ValueError:
            bad.append(text)
        if stop.is_set() and reads > 2000:
            break
    assert h.wait(5).status == "done"
    assert bad == [] and reads >= 50


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ReactomoError, match="JSON-able"):
        start_job(tmp_path, "train", lambda ctx: None, params={"x": object()})
    with pytest.raises(ReactomoError, match="kind"):
        start_job(tmp_path, "", lambda ctx: None)
    with pytest.raises(ReactomoError, match="job id"):
        read_job(tmp_path, "../etc")

    def work(ctx):
        ctx.event({"loss": float("nan")})

    rec = start_job(tmp_path, "train", work).wait(3)
    assert rec.status == "failed" and "JSON-able" in rec.error


def test_a_queued_job_says_what_it_waits_for(tmp_path):
    """A user walk saw the 3D page say "queued" while a segmentation held the worker, and no more."""
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
    import ui

    go = threading.Event()

    def work(ctx):
        ctx.progress(0.1, "step 1 of 4")
        assert go.wait(5)

    h = start_job(tmp_path, "segment", work, title="Segment demo-unet-2")
    assert _until(lambda: h.record().status == "running")
    waiting = JobRecord(id="later", kind="render", status="queued")
    assert ui.job_message(tmp_path, waiting) == "queued, waiting for 'Segment demo-unet-2' to finish"
    assert ui.job_message(tmp_path, h.record()) == "step 1 of 4"  # a running job shows its own progress
    go.set()
    h.wait(5)
    assert ui.job_message(tmp_path, waiting) == "queued"  # nothing ahead of it any more
