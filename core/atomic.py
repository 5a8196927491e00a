"""Atomic file writes: write to a temporary file in the same folder, flush to disk, then rename.

A reader (or a crash at any moment) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import ReactomoError

def _read_umask() -> int:
    # os.umask can only be read by setting it; done once at import, before any worker threads exist.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_with", "move_to_trash",
           "writer_lock", "remove_orphan_temporaries", "BusyError"]


class BusyError(ReactomoError):
    """Another writer holds the lock of what this one was about to write (its message is one sentence)."""


try:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


@contextmanager
def writer_lock(target: str | os.PathLike, *, what: str, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the one-writer lock of ``target`` (a file or folder), across processes, for the block.

    The lock is ``fcntl.flock`` on ``.<name>.lock`` beside ``target``; the operating system drops it when the
    holder exits, even by ``kill -9``, so a crash never leaves a step locked. A second writer waits up to ``wait_s``
    seconds, then gets :class:`BusyError` with one sentence naming ``what`` -- it never writes over the first.

    Parameters
    ----------
    target : path-like
        What is written (its folder is created if missing).
    what : str
        Words for the sentence, e.g. ``"the segmentation folder /p/seg"``.
    wait_s : float
        How long to wait for the other writer (0 = refuse at once).

    Yields
    ------
    Path
        The lock file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        deadline = time.monotonic() + wait_s
        delay = 0.005
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                raise BusyError(f"Another job is writing {what} right now; wait for it to finish, or write somewhere else.")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield lock
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def remove_orphan_temporaries(folder: str | os.PathLike, patterns: tuple[str, ...] = (".*.tmp*",)) -> list[str]:
    """Delete what a crashed writer left in ``folder``: files (or folders) matching ``patterns``.

    Call it only while holding the folder's :func:`writer_lock`: then no live writer owns any of them.
    Returns the names removed.
    """
    import shutil

    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for pattern in patterns:
        for p in folder.glob(pattern):
            if p.name.endswith(".lock"):
                continue
            try:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(p.name)
            except FileNotFoundError:
                pass
    return sorted(removed)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` to fill a temporary file, then move it onto ``path`` atomically.

    Parameters
    ----------
    path : path-like
        Destination. Its folder is created if missing.
    writer : callable
        Receives the temporary path (same folder, same suffix as ``path``) and writes the whole file there.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the file the permissions a plain open() would (0666 minus the umask).
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write_with(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN and inf are refused)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def move_to_trash(src: str | os.PathLike, trash: str | os.PathLike, *, name: str | None = None) -> Path:
    """Move ``src`` (file or folder) into the folder ``trash`` as ``<name>-<UTC time>`` (``-1``, ``-2``... if taken).

    Nothing a user made is deleted outright: it can be recovered from the trash by hand. Same file system only
    (a rename), so the move is atomic.
    """
    import datetime as _dt

    src, trash = Path(src), Path(trash)
    trash.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    base = f"{name or src.name}-{stamp}"
    dst = trash / base
    k = 1
    while dst.exists():
        dst = trash / f"{base}-{k}"
        k += 1
    os.rename(src, dst)
    return dst
