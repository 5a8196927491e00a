"""The worker process: jobs leave the web server, survive it, and resume when the worker itself is killed.

Real processes throughout: ``python -m core worker``, a stand-in for the web server that queues a job and dies, and
``kill -9``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import stop_worker
from core.errors import ReactomoError
from core.workflow.jobs import list_jobs, queue_job, read_events, read_job

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "demo-unet"


@pytest.fixture
def worker_mode(monkeypatch, workspace):
    monkeypatch.setenv("REACTOMO_JOB_RUNNER", "worker")
    yield workspace
    stop_worker(workspace)


def _segment_params(project, name="w1", steps=(0, 1)):
    return {"name": name, "model_dir": str(SHIPPED), "model_name": "demo-unet", "cleaning_source": "test",
            "steps": list(steps), "inference": {"tile": 64, "overlap": 0.25, "batch_size": 2}, "postprocess": None,
            "use_roi": False, "z_range": None, "scheduler": None, "workers": 1, "project": project.name}


def _worker(workspace: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "REACTOMO_WORKSPACE": str(workspace)}
    return subprocess.Popen([sys.executable, "-m", "core", "--workspace", str(workspace), "worker", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, timeout=180.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_queued_job_runs_in_the_worker_not_here(demo_project, worker_mode):
    from core.workflow.worker import submit_job

    handle = submit_job(demo_project, "segment", _segment_params(demo_project), title="Segment w1")
    rec = read_job(demo_project.root, handle.id)
    assert rec.runner == "worker" and rec.status in ("queued", "running") and rec.pid != os.getpid()
    # one writer per step: a second segmentation of this project is refused with a sentence while the first waits
    with pytest.raises(ReactomoError, match=r"^A segment job 'Segment w1' \(.*\) is already (queued|running); wait for it"):
        submit_job(demo_project, "segment", _segment_params(demo_project, "w2"), title="Segment w2")
    done = _wait_for(lambda: (r := read_job(demo_project.root, handle.id)) and not r.is_active and r, what="the job")
    assert done.status == "done", done.error
    assert done.pid != os.getpid() and done.attempts == 1 and done.result["done"] == [0, 1]
    assert demo_project.manifest["segmentations"]["w1"]["status"] == "done"
    state = json.loads((worker_mode / ".worker.json").read_text())
    assert state["pid"] == done.pid  # the workspace's worker ran it
    assert [r.title for r in list_jobs(demo_project.root)] == ["Segment w1"]  # the refused one wrote nothing


def test_unknown_kinds_and_a_second_worker_are_refused(demo_project, worker_mode):
    from core.workflow.worker import submit_job

    with pytest.raises(ReactomoError, match=r"^Unknown job kind 'shell'; the worker runs analysis, demo, export, live, render, render-numbers, segment, train\."):
        submit_job(demo_project, "shell", {})
    assert list_jobs(demo_project.root) == []
    first = _worker(worker_mode, "--poll", "0.2")
    try:
        _wait_for(lambda: (worker_mode / ".worker.json").exists(), 60, "the first worker")
        second = _worker(worker_mode, "--once")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2 and err.strip() == f"error: A worker already runs for the workspace {worker_mode}; one is enough."
    finally:
        first.kill()
        first.wait()


def test_a_record_naming_another_kind_fails_in_the_worker_without_running_anything(demo_project, workspace):
    handle = queue_job(demo_project.root, "rm-rf", params={})
    p = _worker(workspace, "--once")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    rec = read_job(demo_project.root, handle.id)
    assert rec.status == "failed" and rec.error.startswith("Unknown job kind 'rm-rf'")


def test_killing_the_web_server_leaves_the_job_running(demo_project, worker_mode):
    """A stand-in for the server queues a segmentation (which starts the worker) and is killed at once with
    SIGKILL; the job still finishes, in the worker."""
    script = (
        "import json, os, sys, time\n"
        "from core.workflow.project import open_project\n"
        "from core.workflow.worker import submit_job\n"
        "p = open_project('demo')\n"
        "h = submit_job(p, 'segment', json.loads(sys.argv[1]), title='Segment w1')\n"
        "print(h.id, flush=True)\n"
        "time.sleep(600)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script, json.dumps(_segment_params(demo_project, steps=(0, 1, 2, 3)))],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ})
    job_id = server.stdout.readline().strip()
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    done = _wait_for(lambda: (r := read_job(demo_project.root, job_id)) and not r.is_active and r, what="the job")
    assert done.status == "done", done.error
    assert done.result["done"] == [0, 1, 2, 3] and done.pid != server.pid


def test_a_worker_killed_mid_training_is_resumed_by_the_next_without_redoing_epochs(monkeypatch, workspace):
    """kill -9 the worker after the first epochs of a training; the next worker puts the job back in the queue and
    the training continues from its checkpoint: every epoch appears once, and the model is saved."""
    from core.workflow.data import create_demo_project
    from core.workflow.ground_truth import accept_candidate, train_candidate
    from core.workflow.labels import import_demo_scribbles
    from core.imaging.synthetic import DemoConfig

    from conftest import SMALL_DEMO

    monkeypatch.setenv("REACTOMO_MODELS", str(workspace.parent / "models"))
    project = create_demo_project("demo", workspace=workspace, config=DemoConfig(**SMALL_DEMO))
    import_demo_scribbles(project)
    train_candidate(project)
    accept_candidate(project)
    params = {"name": "resumed", "models_root": str(workspace.parent / "models"), "project": "demo",
              "unet": {"width": 4, "depth": 2, "n_classes": 4, "in_channels": 1},
              "train": {"patch_size": 16, "batch_size": 8, "max_epochs": 8, "patience": 0, "augment_factor": 1,
                        "augment": False}}
    from core.network.train import TrainConfig
    from core.network.unet import UNetConfig

    params["unet"] = UNetConfig(**params["unet"]).to_dict()
    params["train"] = TrainConfig(**params["train"]).to_dict()
    handle = queue_job(project.root, "train", params=params, title="Train resumed")
    first = _worker(workspace, "--poll", "0.2")
    try:
        _wait_for(lambda: len(read_events(project.root, handle.id)) >= 2
                  and (handle.folder / "checkpoints" / "last.json").exists(), 300, "two epochs")
        os.kill(first.pid, signal.SIGKILL)  # the worker dies mid-training
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    seen_before = [e["epoch"] for e in read_events(project.root, handle.id)]
    assert read_job(project.root, handle.id).status == "interrupted"
    second = _worker(workspace, "--once")
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert f"job {handle.id} in demo: put back in the queue to resume" in out
    rec = read_job(project.root, handle.id)
    assert rec.status == "done" and rec.attempts == 2, rec.error
    epochs = [e["epoch"] for e in read_events(project.root, handle.id)]
    resumed = epochs[len(seen_before):]
    assert resumed and resumed[0] > 1 and resumed[-1] == 8  # the second run started after the first's checkpoint
    card = json.loads((workspace.parent / "models" / "resumed" / "card.json").read_text())
    assert card["metrics"]["epochs"] == 8  # one history of 8 epochs: nothing was trained twice into the model


def test_only_the_newest_interrupted_job_of_a_kind_is_put_back(tmp_path):
    """A Resume pressed on the page queues a new job; the interrupted one it replaces must not run a second time."""
    from dataclasses import replace

    from core.workflow.jobs import _job_folder, _load_record, _write_record, requeue_interrupted

    def interrupt(job_id, attempts=1):
        folder = _job_folder(tmp_path, job_id)
        _write_record(folder, replace(_load_record(folder), status="interrupted", attempts=attempts))

    old = queue_job(tmp_path, "train", params={"name": "m"}).id
    interrupt(old)
    new = queue_job(tmp_path, "train", params={"name": "m", "resume": True}).id
    interrupt(new)
    seg = queue_job(tmp_path, "segment", params={}).id
    interrupt(seg, attempts=3)  # interrupted three times: left alone
    assert requeue_interrupted(tmp_path) == [new]
    assert read_job(tmp_path, new).status == "queued" and read_job(tmp_path, old).status == "interrupted"
    assert read_job(tmp_path, seg).status == "interrupted"


def test_a_queued_job_left_without_a_worker_gets_one_from_the_next_reader(demo_project, worker_mode):
    """A job queued while no worker lives (the server died between writing the record and starting the worker, or
    the worker exited idle at that moment) does not wait forever: the page that reads it starts a worker."""
    from dataclasses import replace
    from datetime import datetime, timedelta, timezone

    from core.workflow.jobs import _job_folder, _load_record, _write_record
    from core.workflow.worker import QUEUE_GRACE_S, worker_status

    handle = queue_job(demo_project.root, "rm-rf", params={})  # written, and no worker started
    assert worker_status(worker_mode) is None
    assert read_job(demo_project.root, handle.id).status == "queued" and worker_status(worker_mode) is None  # young
    folder = _job_folder(demo_project.root, handle.id)
    old = (datetime.now(timezone.utc) - timedelta(seconds=QUEUE_GRACE_S + 5)).isoformat()
    _write_record(folder, replace(_load_record(folder), created=old))
    for _ in range(5):  # what a page polling the job does, several times before the worker's first heartbeat
        read_job(demo_project.root, handle.id)
    done = _wait_for(lambda: (r := read_job(demo_project.root, handle.id)) and not r.is_active and r, 120, "the job")
    assert done.status == "failed" and done.error.startswith("Unknown job kind 'rm-rf'")  # a worker claimed and ran it
    assert done.pid != os.getpid()
    log = (worker_mode / "worker.log").read_text()
    assert log.count("serving") == 1 and "one is enough" not in log  # the polls started one worker, not five
