"""The one error type users see.

A :class:`ReactomoError` carries one clear sentence that names what was received and what would work. Pages show
``str(err)`` (never a traceback); the CLI prints it to stderr and exits with status 2. It subclasses
``ValueError`` so callers that only know the standard library still catch it.
"""

from __future__ import annotations


class ReactomoError(ValueError):
    """Bad input or a request that cannot be carried out; the message is one sentence for the user."""


# ------------------------------------------------------------------------------------------------ file-system faults
def filesystem_sentence(exc: OSError) -> str:
    """One sentence for a file-system fault (full disk, read-only or vanished folder, no permission).

    Pages show it, the CLI prints it and exits 2. Writers in Reactomo write to a temporary file and rename it, and
    remove the temporary file when the write fails, so the sentence can promise that nothing was left half-written.
    """
    import errno

    where = exc.filename if exc.filename else "a file"
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return (f"The disk is full: {where} could not be written; free some space (or write elsewhere) and run again. "
                "Nothing half-written was kept.")
    if code == errno.EROFS:
        return f"{where} is on a read-only disk; write to a folder on a disk you can write to."
    if code in (errno.EACCES, errno.EPERM):
        return f"Permission denied for {where}; choose a folder you can write to, or ask its owner for access."
    if code in (errno.ENOENT, errno.ENOTDIR):
        return f"{where} does not exist (was it moved or deleted while Reactomo was working?); check the path and run again."
    return f"The file system refused {where} ({exc.strerror or exc}); check the disk and the path, and run again."


def check_writable(folder, *, what: str = "the output folder", need_bytes: int = 0) -> None:
    """Before long work starts: make sure ``folder`` can be created and written, with room for ``need_bytes``.

    Creates ``folder`` (and its parents) if missing, writes and removes a small probe file, and compares the free
    space with ``need_bytes``. Raises :class:`ReactomoError` with one sentence; changes nothing else.
    """
    import os
    import shutil
    from pathlib import Path

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ReactomoError(f"{what.capitalize()} {folder} is a file; give a folder.")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".reactomo-write-test-{os.getpid()}"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise ReactomoError(f"{what.capitalize()} cannot be written: {filesystem_sentence(exc)}") from None
    if need_bytes > 0:
        free = shutil.disk_usage(folder).free
        if free < need_bytes:
            if created:
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise ReactomoError(f"{what.capitalize()} {folder} has {free / 1e6:.0f} MB free and this needs about "
                                f"{need_bytes / 1e6:.0f} MB; free some space or write elsewhere.")


class JobCancelled(Exception):
    """Raised by long work (a training, a segmentation, a job's function or :meth:`core.workflow.jobs.JobContext.check_cancelled`)
    to stop after a cancel request. Not a :class:`ReactomoError`: a cancel is not a failure."""
