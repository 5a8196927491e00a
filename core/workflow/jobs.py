"""Background jobs: long work (training, segmenting a series) that survives page reloads.

A job lives in a folder ``<root>/jobs/<job id>/`` of a project folder ``root``:

==============  ==========================================================================================
``job.json``    the record (:class:`JobRecord`), always rewritten atomically so a reader never sees half of it
``events.jsonl`` one JSON object per line appended by the job (e.g. per-epoch metrics); a trailing partial
                line is ignored by readers
``cancel``      marker file; its presence asks the job to stop
==============  ==========================================================================================

The work function ``fn(ctx)`` runs in a daemon thread of this process and reports through its
:class:`JobContext` (``ctx.progress(fraction, message)``, ``ctx.event({...})``, ``ctx.cancelled()``). While it
runs, a heartbeat refreshes the record every :data:`HEARTBEAT_S` seconds; a record still "running" whose
heartbeat is older than :data:`STALE_AFTER_S`, or whose process is gone, is reported (and written back) as
"interrupted", so after a server restart the page shows what happened instead of a job that never ends.

Example
-------
>>> def work(ctx):                                        # doctest: +SKIP
...     for epoch in range(10):
...         if ctx.cancelled():
...             raise JobCancelled()
...         ctx.event({"epoch": epoch, "train_loss": 0.1})
...         ctx.progress((epoch + 1) / 10, f"epoch {epoch + 1}/10")
...     return {"model": "model.pt"}
>>> handle = start_job(project_dir, "train", work, params={"epochs": 10})   # doctest: +SKIP
>>> handle.wait().status                                   # doctest: +SKIP
'done'
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from core.atomic import atomic_write_json
from core.errors import JobCancelled, ReactomoError

__all__ = [
    "JobCancelled",
    "JobContext",
    "JobHandle",
    "JobRecord",
    "JobStatus",
    "list_jobs",
    "read_events",
    "read_job",
    "request_cancel",
    "running_job",
    "start_job",
    "queue_job",
    "claim_job",
    "run_claimed",
    "requeue_interrupted",
]

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running")

#: Seconds between record writes from ``ctx.progress`` (a call reaching fraction 1 always writes).
PROGRESS_INTERVAL_S = 0.5
#: Seconds between heartbeat refreshes of a running job's record.
HEARTBEAT_S = 2.0
#: A running record whose heartbeat is older than this many seconds is reported "interrupted".
STALE_AFTER_S = 30.0

RECORD_NAME = "job.json"
EVENTS_NAME = "events.jsonl"
CANCEL_NAME = "cancel"

# Runners alive in this process, by job folder; a record claiming this pid but absent here is an orphan.
_RUNNERS: dict[Path, "_Runner"] = {}
_REGISTRY_LOCK = threading.Lock()
# Serialises "is one running? then create" so two starts cannot both pass the check.
_START_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------------------ the record
def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="microseconds")


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class JobRecord:
    """What ``job.json`` holds: one job's identity, state and outcome.

    Attributes
    ----------
    id, kind, title : str
        Sortable id (UTC timestamp + random suffix), kind of work (``"train"``, ``"segment"``...), label.
    params : dict
        JSON-able parameters the job was started with.
    status : {"queued", "running", "done", "failed", "cancelled", "interrupted"}
    progress : float
        Fraction done, 0 to 1.
    message : str
        Last progress message.
    created, started, updated, finished : str or None
        ISO 8601 UTC times.
    eta_s : float or None
        Estimated seconds left, from the progress rate; None until meaningful.
    result : dict or None
        JSON-able result of a finished job.
    error : str or None
        One sentence for the user when the job failed or was interrupted.
    pid : int or None
        Process running the job.
    heartbeat : str or None
        ISO time the runner last proved it was alive.
    runner : {"thread", "worker"}
        Where it runs: a thread of the process that started it, or the worker process (``python -m core worker``)
        that claims it from the queue (:func:`queue_job`).
    attempts : int
        How many times a worker has started it (a job interrupted by a killed worker is started again, resuming).
    """

    id: str
    kind: str
    title: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    status: JobStatus = "queued"
    progress: float = 0.0
    message: str = ""
    created: str | None = None
    started: str | None = None
    updated: str | None = None
    finished: str | None = None
    eta_s: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    pid: int | None = None
    heartbeat: str | None = None
    runner: str = "thread"
    attempts: int = 0

    @property
    def is_active(self) -> bool:
        """True while the job is queued or running."""
        return self.status in ACTIVE_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-able dict (the content of ``job.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobRecord":
        """Build a record from :meth:`to_dict` output; unknown keys are ignored.

        Raises
        ------
        ReactomoError
            If ``data`` is not a dict, lacks ``id``/``kind`` or has an unknown status.
        """
        if not isinstance(data, dict):
            raise ReactomoError(f"A job record must be a JSON object; got {type(data).__name__}.")
        missing = [k for k in ("id", "kind") if k not in data]
        if missing:
            raise ReactomoError(f"The job record lacks {', '.join(missing)}; it cannot be read.")
        names = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in data.items() if k in names})
        if rec.status not in STATUSES:
            raise ReactomoError(f"Job {rec.id} has unknown status {rec.status!r}; expected one of {', '.join(STATUSES)}.")
        return rec


def _jobs_dir(root: str | os.PathLike) -> Path:
    return Path(root) / "jobs"


def _job_folder(root: str | os.PathLike, job_id: str) -> Path:
    if not job_id or "/" in job_id or "\\" in job_id or job_id in (".", ".."):
        raise ReactomoError(f"{job_id!r} is not a job id; use an id from list_jobs.")
    return _jobs_dir(root) / job_id


def _new_job_id() -> str:
    return _now().strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def _check_json(obj: Any, what: str) -> None:
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ReactomoError(f"The {what} must be JSON-able (plain dicts, lists, strings, finite numbers); {exc}.") from None


def _write_record(folder: Path, rec: JobRecord) -> None:
    atomic_write_json(folder / RECORD_NAME, rec.to_dict())


def _load_record(folder: Path) -> JobRecord:
    path = folder / RECORD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReactomoError(f"No job {folder.name!r} in {folder.parent}; use an id from list_jobs.") from None
    except (OSError, ValueError) as exc:
        raise ReactomoError(f"The record of job {folder.name!r} cannot be read ({exc}).") from None
    return JobRecord.from_dict(data)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _orphan_reason(folder: Path, rec: JobRecord, stale_after_s: float) -> str | None:
    """Why an active record no longer has a runner behind it, or None if it may still be running."""
    if not rec.is_active:
        return None
    if rec.runner == "worker" and rec.status == "queued":
        return None  # waiting in the queue for a worker, which may not be running yet
    if rec.pid == os.getpid():
        with _REGISTRY_LOCK:
            runner = _RUNNERS.get(folder.resolve())
        if runner is None:
            return "its runner is no longer alive in this server"
        return None  # our own live runner: its heartbeat thread keeps the record fresh
    if rec.pid is None or not _pid_alive(rec.pid):
        return "the process running it has stopped"
    beat = _parse_iso(rec.heartbeat or rec.updated or rec.created)
    if beat is None or (_now() - beat).total_seconds() > stale_after_s:
        return "its process stopped reporting"
    return None


def _revive_if_waiting(folder: Path, rec: JobRecord) -> None:
    """A worker job still queued after a grace period may have lost its worker (one that exited idle just as the
    job was written, or never started): start one. The reader is a page or the CLI polling the job."""
    born = _parse_iso(rec.created)
    if born is not None and (_now() - born).total_seconds() > QUEUE_GRACE_S:
        revive_queue(folder.parent.parent)


def _resolve(folder: Path, rec: JobRecord, stale_after_s: float) -> JobRecord:
    if rec.runner == "worker" and rec.status == "queued":
        _revive_if_waiting(folder, rec)
        return rec
    reason = _orphan_reason(folder, rec, stale_after_s)
    if reason is None:
        return rec
    now = _iso(_now())
    rec = replace(
        rec,
        status="interrupted",
        eta_s=None,
        updated=now,
        finished=now,
        error=f"The job was interrupted because {reason}; start it again to resume.",
    )
    try:
        _write_record(folder, rec)
    except OSError as exc:  # a read-only project still gets the right answer
        log.warning("Could not mark job %s interrupted: %s", rec.id, exc)
    return rec


# ------------------------------------------------------------------------------------------------ the worker process
# Where a workspace's worker process is found and started. It lives here, below core.workflow.worker (which runs the
# worker's loop and re-exports these), because reading a queued job may have to start a worker (:func:`read_job`).
STATE_NAME = ".worker.json"
#: A worker whose heartbeat is older than this is taken for dead (and a page starts another).
DEAD_AFTER_S = 20.0
#: A worker a page (or scripts/app.sh) started exits after this many seconds with nothing queued; the next job
#: starts another. So a stopped dashboard leaves no process behind for long, and a job it was running finishes.
IDLE_EXIT_S = 1800
#: A queued job read after waiting this many seconds with no worker alive gets one (see :func:`revive_queue`).
QUEUE_GRACE_S = 10.0
#: Workspaces this process serves as their worker.
_SERVING: set[Path] = set()


def worker_status(workspace: str | os.PathLike) -> dict[str, Any] | None:
    """The workspace's worker (``pid``, ``started``, ``heartbeat``, ``job``) when it is alive, else None."""
    path = Path(workspace) / STATE_NAME
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid, beat = state.get("pid"), _parse_iso(state.get("heartbeat"))
    if not isinstance(pid, int) or not _pid_alive(pid) or beat is None:
        return None
    if (_now() - beat).total_seconds() > DEAD_AFTER_S:
        return None
    return state


def ensure_worker(workspace: str | os.PathLike) -> bool:
    """Start a worker for ``workspace`` when none is alive; True if one was started.

    It runs as its own session (``start_new_session``), so stopping the web server does not stop it, with its log
    in ``<workspace>/worker.log``.
    """
    workspace = Path(workspace)
    if worker_status(workspace) is not None:
        return False
    root = Path(__file__).resolve().parents[2]  # the repository: ``python -m core`` runs from there
    env = {**os.environ, "REACTOMO_WORKSPACE": str(workspace)}
    with open(workspace / "worker.log", "ab") as logf:
        child = subprocess.Popen([sys.executable, "-m", "core", "--workspace", str(workspace), "worker", "--idle-exit",
                                  str(IDLE_EXIT_S)], cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=logf, start_new_session=True)
    # Until its first heartbeat (a second or two of imports), the child stands for the worker: a page polling a
    # queued job in the meantime must not start another one.
    now = _iso(_now())
    atomic_write_json(workspace / STATE_NAME, {"pid": child.pid, "started": now, "heartbeat": now, "job": None,
                                               "starting": True})
    return True


def revive_queue(project_root: str | os.PathLike) -> bool:
    """Start a worker for the workspace of ``project_root`` when it is a project of a workspace and no worker is
    alive; for a queued job found waiting longer than :data:`QUEUE_GRACE_S`. True if one was started."""
    from core.workflow.project import MANIFEST

    root = Path(project_root)
    if not (root / MANIFEST).exists():  # not a project the worker would serve
        return False
    if root.parent.resolve() in _SERVING:  # the worker itself, looking at its queue
        return False
    try:
        return ensure_worker(root.parent)
    except OSError as exc:  # a read-only workspace: the page still shows the record
        log.warning("Could not start a worker for %s: %s", root.parent, exc)
        return False


# ------------------------------------------------------------------------------------------------ public reads
def read_job(root: str | os.PathLike, job_id: str, *, stale_after_s: float | None = None) -> JobRecord:
    """Read one job's record, marking it "interrupted" if its runner is gone.

    Parameters
    ----------
    root : path-like
        Project folder holding ``jobs/``.
    job_id : str
        The job's id.
    stale_after_s : float, optional
        Heartbeat age after which a running job counts as interrupted; default :data:`STALE_AFTER_S`.

    Returns
    -------
    JobRecord

    Raises
    ------
    ReactomoError
        If the job does not exist or its record cannot be read.
    """
    folder = _job_folder(root, job_id)
    rec = _load_record(folder)
    return _resolve(folder, rec, STALE_AFTER_S if stale_after_s is None else stale_after_s)


def list_jobs(
    root: str | os.PathLike, *, kind: str | None = None, stale_after_s: float | None = None
) -> list[JobRecord]:
    """All jobs of a project, newest first; unreadable records are skipped with a warning.

    Parameters
    ----------
    root : path-like
        Project folder holding ``jobs/``.
    kind : str, optional
        Keep only jobs of this kind.
    stale_after_s : float, optional
        As in :func:`read_job`.
    """
    base = _jobs_dir(root)
    if not base.is_dir():
        return []
    out: list[JobRecord] = []
    for folder in sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
        if not (folder / RECORD_NAME).exists():
            continue
        try:
            rec = read_job(root, folder.name, stale_after_s=stale_after_s)
        except ReactomoError as exc:
            log.warning("Skipping job folder %s: %s", folder, exc)
            continue
        if kind is None or rec.kind == kind:
            out.append(rec)
    return out


def running_job(root: str | os.PathLike, kind: str) -> JobRecord | None:
    """The queued or running job of ``kind`` in ``root``, or None."""
    for rec in list_jobs(root, kind=kind):
        if rec.is_active:
            return rec
    return None


def read_events(root: str | os.PathLike, job_id: str, *, since: int = 0) -> list[dict[str, Any]]:
    """Events a job has appended, skipping the first ``since`` (pass the count already seen).

    A trailing line without its newline is still being written and is left for the next read; a complete line
    that is not a JSON object is skipped with a warning.
    """
    if since < 0:
        raise ReactomoError(f"since must be 0 or more; got {since}.")
    path = _job_folder(root, job_id) / EVENTS_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")[:-1]  # the last piece is either empty or a partial line
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(lines[since:], start=since):
        try:
            obj = json.loads(raw)
        except ValueError:
            log.warning("Job %s: events line %d is not JSON; skipped.", job_id, i + 1)
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def request_cancel(root: str | os.PathLike, job_id: str) -> None:
    """Ask a job to stop by creating its ``cancel`` marker (no effect on a finished job).

    Raises
    ------
    ReactomoError
        If the job does not exist.
    """
    rec = read_job(root, job_id)
    if rec.is_active:
        (_job_folder(root, job_id) / CANCEL_NAME).touch()


# ------------------------------------------------------------------------------------------------ running
class JobContext:
    """What a work function receives: progress and event reporting, the cancel flag, its folder and params.

    Attributes
    ----------
    folder : Path
        The job's folder, for checkpoints and outputs.
    params : dict
        The parameters the job was started with (a copy).
    """

    def __init__(self, runner: "_Runner") -> None:
        self._runner = runner
        self.folder: Path = runner.folder
        self.params: dict[str, Any] = json.loads(json.dumps(runner.record.params))

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress ``fraction`` (clamped to 0-1) with a short message.

        The record is written at most every :data:`PROGRESS_INTERVAL_S` seconds, and always when the fraction
        reaches 1; in between, the heartbeat carries the latest value to disk.

        Raises
        ------
        ReactomoError
            If ``fraction`` is not a finite number.
        """
        try:
            f = float(fraction)
        except (TypeError, ValueError):
            raise ReactomoError(f"Progress must be a number from 0 to 1; got {fraction!r}.") from None
        if not math.isfinite(f):
            raise ReactomoError(f"Progress must be a number from 0 to 1; got {fraction!r}.")
        self._runner.set_progress(min(max(f, 0.0), 1.0), str(message))

    def event(self, data: dict[str, Any]) -> None:
        """Append one JSON-able dict as a line of ``events.jsonl`` (flushed, so readers see whole lines).

        Raises
        ------
        ReactomoError
            If ``data`` is not a JSON-able dict.
        """
        if not isinstance(data, dict):
            raise ReactomoError(f"A job event must be a dict; got {type(data).__name__}.")
        try:
            line = json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ReactomoError(f"A job event must be JSON-able with finite numbers; {exc}.") from None
        self._runner.append_event(line)

    def cancelled(self) -> bool:
        """True once a cancel was requested (the ``cancel`` marker exists)."""
        return (self.folder / CANCEL_NAME).exists()

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if a cancel was requested; a convenient checkpoint in loops."""
        if self.cancelled():
            raise JobCancelled()


class _Runner:
    """Owns one job's in-memory record and every write of it (progress, heartbeat, outcome)."""

    def __init__(self, folder: Path, record: JobRecord, fn: Callable[[JobContext], Any]) -> None:
        self.folder = folder
        self.record = record
        self.fn = fn
        self.lock = threading.Lock()
        self.events_lock = threading.Lock()
        self.stop = threading.Event()
        self.last_write = 0.0
        self.t_start = time.monotonic()
        self.thread = threading.Thread(target=self.run, name=f"job-{record.kind}-{record.id}", daemon=True)
        self.beat = threading.Thread(target=self.heartbeat, name=f"job-heartbeat-{record.id}", daemon=True)

    # --- writes, always under self.lock
    def _write(self, **changes: Any) -> None:
        now = _iso(_now())
        self.record = replace(self.record, updated=now, heartbeat=now, **changes)
        _write_record(self.folder, self.record)
        self.last_write = time.monotonic()

    def set_progress(self, fraction: float, message: str) -> None:
        with self.lock:
            if self.stop.is_set():
                return
            elapsed = time.monotonic() - self.t_start
            eta = None
            if fraction >= 1.0:
                eta = 0.0
            elif fraction >= 0.01 and elapsed > 0:
                eta = round(elapsed * (1.0 - fraction) / fraction, 1)
            self.record = replace(self.record, progress=fraction, message=message, eta_s=eta)
            if fraction >= 1.0 or time.monotonic() - self.last_write >= PROGRESS_INTERVAL_S:
                self._write()

    def append_event(self, line: str) -> None:
        with self.events_lock, open(self.folder / EVENTS_NAME, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()

    def heartbeat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            with self.lock:
                if self.stop.is_set():
                    return
                try:
                    self._write()
                except OSError as exc:
                    log.warning("Job %s: heartbeat write failed: %s", self.record.id, exc)

    def _finish(self, status: str, *, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        with self.lock:
            self.stop.set()
            changes: dict[str, Any] = dict(status=status, result=result, error=error, finished=_iso(_now()))
            if status == "done":
                changes.update(progress=1.0, eta_s=0.0)
            else:
                changes.update(eta_s=None)
            self._write(**changes)

    # --- the thread body
    def run(self) -> None:
        rec = self.record
        try:
            ctx = JobContext(self)
            if ctx.cancelled():
                self._finish("cancelled")
                return
            with self.lock:
                self.t_start = time.monotonic()
                self._write(status="running", started=_iso(_now()))
            self.beat.start()
            log.info("Job %s (%s) started.", rec.id, rec.kind)
            try:
                result = self.fn(ctx)
            except JobCancelled:
                self._finish("cancelled")
                return
            except ReactomoError as exc:
                self._finish("failed", error=str(exc))
                return
            except OSError as exc:  # a full disk, a read-only or vanished folder: its sentence, as the CLI says it
                from core.errors import filesystem_sentence

                log.warning("Job %s (%s): file-system fault: %s", rec.id, rec.kind, exc)
                self._finish("failed", error=filesystem_sentence(exc))
                return
            except Exception as exc:  # noqa: BLE001 - the job must end with a record, whatever happened
                log.exception("Job %s (%s) failed unexpectedly.", rec.id, rec.kind)
                self._finish("failed", error=f"Unexpected error ({type(exc).__name__}: {exc}); see the server log.")
                return
            if ctx.cancelled():
                self._finish("cancelled")
                return
            if result is not None and not isinstance(result, dict):
                self._finish("failed", error=f"The job returned a {type(result).__name__}; it must return a dict or None.")
                return
            try:
                _check_json(result, "job result")
            except ReactomoError as exc:
                self._finish("failed", error=str(exc))
                return
            self._finish("done", result=result)
            log.info("Job %s (%s) done.", rec.id, rec.kind)
        except Exception:  # noqa: BLE001 - a failing record write must not leave the job registered forever
            log.exception("Job %s (%s): could not record its outcome.", rec.id, rec.kind)
        finally:
            self.stop.set()
            with _REGISTRY_LOCK:
                _RUNNERS.pop(self.folder.resolve(), None)


class JobHandle:
    """A started job: its id and folder, and ways to read, cancel and wait for it.

    Attributes
    ----------
    root : Path
        Project folder.
    id : str
        Job id.
    folder : Path
        ``<root>/jobs/<id>``.
    """

    def __init__(self, root: str | os.PathLike, job_id: str, *, _thread: threading.Thread | None = None) -> None:
        self.root = Path(root)
        self.id = job_id
        self.folder = _job_folder(root, job_id)
        self._thread = _thread

    def __repr__(self) -> str:
        return f"JobHandle(id={self.id!r}, folder={str(self.folder)!r})"

    def record(self) -> JobRecord:
        """The job's current record (see :func:`read_job`)."""
        return read_job(self.root, self.id)

    def events(self, *, since: int = 0) -> list[dict[str, Any]]:
        """The job's events (see :func:`read_events`)."""
        return read_events(self.root, self.id, since=since)

    def cancel(self) -> None:
        """Ask the job to stop (see :func:`request_cancel`)."""
        request_cancel(self.root, self.id)

    def wait(self, timeout: float | None = None) -> JobRecord:
        """Block until the job ends or ``timeout`` seconds pass; return the record (still active on timeout)."""
        if self._thread is not None:
            self._thread.join(timeout)
            return self.record()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rec = self.record()
            if not rec.is_active or (deadline is not None and time.monotonic() >= deadline):
                return rec
            time.sleep(0.05)


def start_job(
    root: str | os.PathLike,
    kind: str,
    fn: Callable[[JobContext], dict[str, Any] | None],
    *,
    params: dict[str, Any] | None = None,
    title: str = "",
) -> JobHandle:
    """Create a job record and run ``fn(ctx)`` in a background thread of this process.

    Parameters
    ----------
    root : path-like
        Project folder; the job goes in ``<root>/jobs/<job id>/``.
    kind : str
        Kind of work, e.g. ``"train"`` or ``"segment"``; only one job per ``(root, kind)`` runs at a time.
    fn : callable
        ``fn(ctx: JobContext) -> dict | None``. Returning ends the job "done" with that result (or "cancelled"
        if a cancel was requested); raising :class:`JobCancelled` ends it "cancelled"; a
        :class:`ReactomoError` ends it "failed" with its sentence; any other exception ends it "failed" and is
        logged with its traceback.
    params : dict, optional
        JSON-able parameters, stored in the record and given to ``fn`` as ``ctx.params``.
    title : str
        Label shown to the user.

    Returns
    -------
    JobHandle

    Raises
    ------
    ReactomoError
        If ``kind`` is empty, ``params`` is not a JSON-able dict, or a job of this kind is already running.
    """
    if not isinstance(kind, str) or not kind.strip():
        raise ReactomoError(f"A job kind must be a non-empty string such as 'train'; got {kind!r}.")
    if not callable(fn):
        raise ReactomoError(f"A job needs a callable work function; got {type(fn).__name__}.")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ReactomoError(f"Job params must be a dict; got {type(params).__name__}.")
    _check_json(params, "job params")
    with _START_LOCK:
        busy = running_job(root, kind)
        if busy is not None:
            name = f"'{busy.title}' " if busy.title else ""
            raise ReactomoError(
                f"A {kind} job {name}({busy.id}) is already {busy.status}; wait for it or cancel it first."
            )
        job_id = _new_job_id()
        folder = _job_folder(root, job_id)
        folder.mkdir(parents=True)
        now = _iso(_now())
        rec = JobRecord(
            id=job_id, kind=kind, title=str(title), params=params, status="queued",
            created=now, updated=now, heartbeat=now, pid=os.getpid(),
        )
        runner = _Runner(folder, rec, fn)
        with _REGISTRY_LOCK:
            _RUNNERS[folder.resolve()] = runner
        try:
            _write_record(folder, rec)
        except BaseException:
            with _REGISTRY_LOCK:
                _RUNNERS.pop(folder.resolve(), None)
            raise
        runner.thread.start()
    return JobHandle(root, job_id, _thread=runner.thread)


# ------------------------------------------------------------------------------------------------ the queue
#: A job interrupted this many times (its worker killed each time) is not started again.
MAX_ATTEMPTS = 3


def queue_job(root: str | os.PathLike, kind: str, *, params: dict[str, Any] | None = None, title: str = "") -> JobHandle:
    """Put a job in the project's queue for the worker process (``python -m core worker``); nothing runs here.

    The record is written "queued" with ``runner="worker"``; a worker claims it (:func:`claim_job`), runs the work
    function registered for ``kind`` (:mod:`core.workflow.worker`) and writes its progress and outcome to the same record,
    so a page reads a queued job exactly as a thread's.

    Raises
    ------
    ReactomoError
        If ``kind`` is empty, ``params`` is not a JSON-able dict, or a job of this kind is already queued or running
        in this project (one writer per project step: the second is refused with a sentence and writes nothing).
    """
    if not isinstance(kind, str) or not kind.strip():
        raise ReactomoError(f"A job kind must be a non-empty string such as 'train'; got {kind!r}.")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ReactomoError(f"Job params must be a dict; got {type(params).__name__}.")
    _check_json(params, "job params")
    from core.atomic import writer_lock

    base = _jobs_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    # across processes (two servers, a server and a CLI): the check and the write are one step
    with _START_LOCK, writer_lock(base / f"queue-{kind}", what=f"the {kind} queue", wait_s=10.0):
        busy = running_job(root, kind)
        if busy is not None:
            name = f"'{busy.title}' " if busy.title else ""
            raise ReactomoError(f"A {kind} job {name}({busy.id}) is already {busy.status}; wait for it or cancel it first.")
        job_id = _new_job_id()
        folder = _job_folder(root, job_id)
        folder.mkdir(parents=True)
        now = _iso(_now())
        rec = JobRecord(id=job_id, kind=kind, title=str(title), params=params, status="queued", created=now,
                        updated=now, heartbeat=now, pid=None, runner="worker")
        _write_record(folder, rec)
    return JobHandle(root, job_id)


def claim_job(root: str | os.PathLike, job_id: str) -> JobRecord | None:
    """Take a queued worker job for this process: its record becomes "running" with our pid. None if another
    worker took it first, or it is no longer queued (cancelled meanwhile)."""
    from core.atomic import BusyError, writer_lock

    folder = _job_folder(root, job_id)
    try:
        with writer_lock(folder / RECORD_NAME, what=f"job {job_id}"):
            rec = _load_record(folder)
            if rec.runner != "worker" or rec.status != "queued":
                return None
            now = _iso(_now())
            rec = replace(rec, status="running", pid=os.getpid(), updated=now, heartbeat=now, attempts=rec.attempts + 1)
            _write_record(folder, rec)
            return rec
    except BusyError:
        return None


def run_claimed(root: str | os.PathLike, rec: JobRecord, fn: Callable[[JobContext], dict[str, Any] | None]) -> JobRecord:
    """Run a claimed job's work function here, in this thread, with its heartbeat; return the final record."""
    folder = _job_folder(root, rec.id)
    runner = _Runner(folder, rec, fn)
    with _REGISTRY_LOCK:
        _RUNNERS[folder.resolve()] = runner
    runner.run()
    return _load_record(folder)


def requeue_interrupted(root: str | os.PathLike) -> list[str]:
    """Put back in the queue the worker jobs of ``root`` that a killed worker left (running under a dead process,
    or already marked "interrupted"), so that a restarted worker resumes them. Only the newest job of each kind is
    put back (a later one, such as a Resume pressed on the page, supersedes it), and a job interrupted
    :data:`MAX_ATTEMPTS` times stays interrupted. Returns the ids put back."""
    from core.atomic import BusyError, writer_lock

    back = []
    newest: set[str] = set()
    for rec in list_jobs(root):  # newest first; reading marks a running job under a dead process "interrupted"
        first_of_kind = rec.kind not in newest
        newest.add(rec.kind)
        if not first_of_kind:  # a later job of the same kind (e.g. a Resume pressed on the page) supersedes it
            continue
        if rec.runner != "worker" or rec.status != "interrupted" or rec.attempts >= MAX_ATTEMPTS:
            continue
        folder = _job_folder(root, rec.id)
        if (folder / CANCEL_NAME).exists():
            continue
        try:
            with writer_lock(folder / RECORD_NAME, what=f"job {rec.id}"):
                now = _iso(_now())
                again = replace(_load_record(folder), status="queued", pid=None, error=None, finished=None, updated=now,
                                heartbeat=now, message="waiting to resume after the worker stopped")
                _write_record(folder, again)
                back.append(rec.id)
        except BusyError:
            continue
    return back
