"""The worker: a process beside the web server that runs the dashboard's long jobs from a queue on disk.

Training, segmenting and analysing used to run as threads of the Streamlit server, so one oversized job could take
the dashboard down for every user, and a server restart stopped every job. Now a page only *queues* a job
(:func:`submit_job`: a JSON record ``<project>/jobs/<id>/job.json``, status "queued"), and the worker
(``python -m core worker``, started beside Streamlit by ``scripts/app.sh``, or by the page when none runs) claims
and runs it, writing progress, events and the outcome to the same record the page reads.

- **Killing the web server** leaves the worker and its jobs running (it is its own session, not a child the
  server's Ctrl+C reaches).
- **Killing the worker** leaves its job "interrupted"; the next worker puts it back in the queue and runs it again,
  and the job resumes without redoing finished work (a segmentation skips the steps its record says are done, a
  training continues from its last checkpoint). A job interrupted :data:`core.workflow.jobs.MAX_ATTEMPTS` times stays
  interrupted.
- **One writer per project step**: one queued or running job per project and kind; a second is refused with a
  sentence (:func:`core.workflow.jobs.queue_job`).
- **One worker per workspace**: a second ``core worker`` on the same workspace exits at once with a sentence.
  It runs one job at a time, oldest first, so memory stays that of one job (bounded by the training's memory
  check).

Why not a queue library: the job records, events, progress, cancel markers and heartbeats already live on disk,
tested, and the pages read them; huey's ``SqliteHuey`` would be a second source of truth for a job's state, pickles
its task payloads by default and brings its own consumer and retry semantics; a Dask scheduler keeps its queue in
memory, so a killed scheduler loses the jobs. What is hand-written here is small: claim a record under a file lock,
run it, put interrupted ones back.

``REACTOMO_JOB_RUNNER=thread`` runs jobs as threads of the calling process instead (the page tests use it, where a
worker per test would only add start-up time); the default is the worker.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import ReactomoError
from core.workflow.jobs import (  # the worker process's whereabouts live with the job records; re-exported here
    DEAD_AFTER_S,
    IDLE_EXIT_S,
    QUEUE_GRACE_S,
    STATE_NAME,
    _SERVING,
    ensure_worker,
    revive_queue,
    worker_status,
)

__all__ = ["JOB_KINDS", "submit_job", "job_function", "run_worker", "worker_status", "ensure_worker", "revive_queue",
           "ENV_RUNNER"]

log = logging.getLogger(__name__)

ENV_RUNNER = "REACTOMO_JOB_RUNNER"
LOCK_TARGET = ".worker"
#: Seconds between the worker's heartbeats in ``<workspace>/.worker.json``.
BEAT_S = 2.0


# ------------------------------------------------------------------------------------------------ job kinds
def _train(project, params: dict, ctx) -> dict:
    import math

    from core.network.train import TrainConfig
    from core.workflow.train import train_project_model
    from core.network.unet import UNetConfig

    def clean(obj):  # JSON-safe epoch record (NaN/inf become None)
        if isinstance(obj, dict):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return None if isinstance(obj, float) and not math.isfinite(obj) else obj

    ckpt = Path(params["checkpoint_dir"]) if params.get("checkpoint_dir") else ctx.folder / "checkpoints"
    # a worker restarted mid-training resumes (an ensemble keeps each network's checkpoints in network<i>/)
    resume = bool(params.get("resume")) or (ckpt / "last.json").exists() or any(ckpt.glob("network*/last.json"))
    path = train_project_model(
        project, name=params["name"], unet_config=UNetConfig.from_dict(params["unet"]),
        train_config=TrainConfig.from_dict(params["train"]), device="auto", models_root=params["models_root"],
        on_epoch=lambda rec: ctx.event(clean(rec)), on_progress=ctx.progress, should_stop=ctx.cancelled,
        checkpoint_dir=ckpt, resume=resume, members=int(params.get("members", 1)),
    )
    return {"model": params["name"], "path": str(path)}


def _segment(project, params: dict, ctx) -> dict:
    from core.segmentation.postprocess import PostprocessConfig
    from core.network.inference import InferenceConfig
    from core.workflow.segment import segment_project

    post = PostprocessConfig.from_dict(params["postprocess"]) if params.get("postprocess") else None
    result = segment_project(
        project, params["model_dir"], name=params["name"], steps=params["steps"],
        inference=InferenceConfig.from_dict(params["inference"]), postprocess=post, use_roi=params["use_roi"],
        z_range=tuple(params["z_range"]) if params.get("z_range") else None, scheduler=params.get("scheduler"),
        workers=int(params.get("workers", 1)), on_progress=ctx.progress,
        on_step=lambda o: ctx.event({"step": o.step, "status": o.status, "error": o.error}), should_stop=ctx.cancelled,
        cleaning_source=params.get("cleaning_source"), temporal=params.get("temporal"),
        match_volumes=params.get("match_volumes"),
    )
    return {"name": params["name"], "done": [o.step for o in result.done], "failed": [o.step for o in result.failed],
            "seconds": round(result.seconds, 2)}


def _analysis(project, params: dict, ctx) -> dict:
    from core.analysis.results import AnalysisConfig
    from core.workflow.analysis import analyse_segmentation

    result = analyse_segmentation(project, params["name"], config=AnalysisConfig(**params["config"]),
                                  on_progress=ctx.progress)
    return {"name": params["name"], "sentence": result["summary"]["verdict"].get("sentence", "")}


def _render(project, params: dict, ctx) -> dict:
    from core.render.surfaces import RenderConfig
    from core.workflow.render import render_segmentation

    result = render_segmentation(project, params["name"], int(params["step"]), RenderConfig.from_dict(params["config"]),
                                 on_progress=ctx.progress)
    return {"name": params["name"], "step": int(params["step"]), "folder": str(result.folder),
            "seconds": result.record.get("seconds")}


def _render_numbers(project, params: dict, ctx) -> dict:
    from core.render.surfaces import RenderConfig
    from core.workflow.render import numbers_over_time

    result = numbers_over_time(project, params["name"], RenderConfig.from_dict(params["config"]),
                               on_progress=ctx.progress, should_stop=ctx.cancelled)
    return {"name": params["name"], "steps": result.record["steps"], "path": str(result.path),
            "seconds": result.record.get("seconds")}


def _live(project, params: dict, ctx) -> dict:
    from core.workflow.live import live_project

    state = live_project(project, name=params["name"], scans=params["scans"], model_dir=params["model_dir"],
                         interval_s=float(params.get("interval_s", 60.0)), complete=params.get("complete", "quiet"),
                         quiet_s=float(params.get("quiet_s", 2.0)), slices=params.get("slices"),
                         quick=bool(params.get("quick", False)), inference=params.get("inference") or {},
                         should_stop=ctx.cancelled, on_message=lambda m: ctx.event({"message": m}),
                         on_progress=ctx.progress, idle_exit_s=params.get("idle_exit_s"))
    st = state.get("status") or {}
    return {"name": params["name"], "segmented": st.get("scans_segmented", 0), "alerts": len(state.get("alerts") or [])}


def _demo(project, params: dict, ctx) -> dict:
    from core.workflow.data import generate_demo_into

    info = generate_demo_into(project, None, on_progress=ctx.progress)
    return {"steps": len(project.scans()), "folder": str((info or {}).get("folder", ""))}


def _export(project, params: dict, ctx) -> dict:
    from core.workflow.share import export_to_folder

    r = export_to_folder(project, with_scans=bool(params.get("with_scans")), on_progress=ctx.progress)
    return {"file": r.path.name, "files": r.files, "bytes": r.bytes_out, "seconds": round(r.seconds, 2)}


#: The work of each job kind: ``fn(project, params, ctx) -> dict``. Only these run in the worker; a record of any
#: other kind is refused, so a job record never names code to import.
JOB_KINDS: dict[str, Callable[..., dict]] = {"train": _train, "segment": _segment, "analysis": _analysis,
                                             "render": _render, "render-numbers": _render_numbers,
                                             "live": _live, "export": _export, "demo": _demo}


def job_function(project, kind: str, params: dict) -> Callable:
    """``fn(ctx)`` for :func:`core.workflow.jobs.start_job` / :func:`core.workflow.jobs.run_claimed`: the registered work of ``kind``."""
    if kind not in JOB_KINDS:
        raise ReactomoError(f"Unknown job kind {kind!r}; the worker runs {', '.join(sorted(JOB_KINDS))}.")
    work = JOB_KINDS[kind]
    return lambda ctx: work(project, params, ctx)


# ------------------------------------------------------------------------------------------------ submitting
def submit_job(project, kind: str, params: dict, *, title: str = ""):
    """Start a job the way the server is configured: queued for the worker (default; a worker is started when
    none runs), or a thread of this process with ``REACTOMO_JOB_RUNNER=thread``. Returns a :class:`JobHandle`."""
    from core.workflow.jobs import queue_job, start_job

    mode = os.environ.get(ENV_RUNNER, "worker").strip().lower() or "worker"
    if mode not in ("worker", "thread"):
        raise ReactomoError(f"{ENV_RUNNER} is {mode!r}; use 'worker' or 'thread'.")
    fn = job_function(project, kind, params)  # refuses an unknown kind before anything is written
    if mode == "thread":
        return start_job(project.root, kind, fn, params=params, title=title)
    # The worker is started *before* the record is written: a server killed between the two would otherwise leave
    # a queued job with nobody to run it (CI caught it, on a loaded 2-core machine). A worker started for a job
    # that is then refused simply exits after IDLE_EXIT_S. A queued job that still finds no worker (one that exited
    # idle at the wrong moment) gets one from the next page that reads it (core.workflow.jobs.read_job).
    ensure_worker(Path(project.root).parent)
    return queue_job(project.root, kind, params=params, title=title)


# ------------------------------------------------------------------------------------------------ the worker
def _projects(workspace: Path) -> list[Path]:
    from core.workflow.project import MANIFEST

    if not workspace.is_dir():
        return []
    return sorted(p for p in workspace.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists())


def _next_queued(workspace: Path) -> tuple[Path, str] | None:
    """The oldest queued worker job of any project in the workspace."""
    from core.workflow.jobs import list_jobs

    found = []
    for root in _projects(workspace):
        for rec in list_jobs(root):
            if rec.runner == "worker" and rec.status == "queued":
                found.append((rec.id, root))
    if not found:
        return None
    job_id, root = min(found)
    return root, job_id


def run_worker(workspace: str | os.PathLike, *, once: bool = False, poll_s: float = 1.0,
               idle_exit_s: float | None = None, should_stop: Callable[[], bool] | None = None,
               say: Callable[[str], None] = print) -> int:
    """Run queued jobs of every project in ``workspace``, one at a time, until stopped (with ``once``, until the
    queue is empty; with ``idle_exit_s``, after that many seconds with nothing queued). Returns the number of jobs
    run.

    Raises
    ------
    ReactomoError
        If another worker already serves this workspace.
    """
    import threading

    from core.atomic import BusyError, atomic_write_json, writer_lock
    from core.workflow.jobs import _iso, _now, claim_job, requeue_interrupted, run_claimed
    from core.workflow.project import open_project

    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    stop = should_stop or (lambda: False)
    try:
        lock = writer_lock(workspace / LOCK_TARGET, what=f"the worker of the workspace {workspace}")
        lock.__enter__()
    except BusyError:
        raise ReactomoError(f"A worker already runs for the workspace {workspace}; one is enough.") from None
    state: dict[str, Any] = {"pid": os.getpid(), "started": _iso(_now()), "heartbeat": _iso(_now()), "job": None}
    beat_stop = threading.Event()

    def beat() -> None:
        while True:
            state["heartbeat"] = _iso(_now())
            try:
                atomic_write_json(workspace / STATE_NAME, state)
            except OSError as exc:
                log.warning("worker heartbeat failed: %s", exc)
            if beat_stop.wait(BEAT_S):
                return

    beater = threading.Thread(target=beat, name="worker-heartbeat", daemon=True)
    beater.start()
    _SERVING.add(workspace.resolve())
    n = 0
    try:
        say(f"Reactomo worker {os.getpid()} serving {workspace}.")
        for root in _projects(workspace):
            for job_id in requeue_interrupted(root):
                say(f"job {job_id} in {root.name}: put back in the queue to resume")
        idle_since = time.monotonic()
        while not stop():
            nxt = _next_queued(workspace)
            if nxt is None:
                if once or (idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s):
                    break
                time.sleep(poll_s)
                continue
            root, job_id = nxt
            rec = claim_job(root, job_id)
            if rec is None:
                continue
            state["job"] = {"project": root.name, "id": rec.id, "kind": rec.kind}
            say(f"job {rec.id} ({rec.kind}, {root.name}) started (attempt {rec.attempts})")
            try:
                project = open_project(root.name, workspace=workspace)
                fn = job_function(project, rec.kind, rec.params)
            except ReactomoError as exc:
                fn = _fail_with(str(exc))
            final = run_claimed(root, rec, fn)
            say(f"job {rec.id} {final.status}" + (f": {final.error}" if final.error else ""))
            state["job"] = None
            n += 1
            idle_since = time.monotonic()
    finally:
        _SERVING.discard(workspace.resolve())
        beat_stop.set()
        beater.join(timeout=5)
        try:
            (workspace / STATE_NAME).unlink()
        except OSError:
            pass
        lock.__exit__(None, None, None)
    return n


def _fail_with(sentence: str) -> Callable:
    def fn(ctx):
        raise ReactomoError(sentence)

    return fn
