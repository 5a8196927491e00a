"""Scans arriving in a folder during an experiment: which of them are complete, and a checksum of each.

A beamline's reconstruction writes one scan per time step into a folder: a multi-page TIFF, or a sub-folder of 2D
slices. A file still being written must never be read as a whole scan. What tells us a scan is complete (measured
on these machines, see ../shared/STACK.md, "Watching a folder"):

==============  =================================================================================================
rule            a scan is complete when ...
==============  =================================================================================================
``"quiet"``     (default) its size and modification time (for a folder of slices: the slice count, their total size
                and newest time) have not changed for ``quiet_s`` seconds over successive looks, **and** it reads
                completely (every page's data lies inside the file). Works on NFS/CIFS, where no file event
                arrives, and for a writer that reopens the file.
``"rename"``    it has its final name: the writer writes under a temporary name (``.name``, ``name.part``,
                ``name.tmp``, ...) and renames it when done, the recommended way (one atomic step); it must also
                read completely.
``"marker"``    a marker file ``<name>.done`` (or ``<stem>.done``) stands beside it, and it reads completely.
``"slices"``    a folder holds ``slices`` 2D slices (at least), and each of them reads completely.
==============  =================================================================================================

Temporary names are never scans: names starting with ``.`` or ``~`` and names ending with ``.part``, ``.tmp``,
``.partial``, ``.filepart``, ``.crdownload`` or ``.writing``; nor are marker files.

Polling, not file events: inotify fires "created" at 0 bytes and "closed" several times for a writer that reopens
its file, and sees nothing on network file systems; a look every second costs one ``scandir``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import ReactomoError

__all__ = ["RULES", "TEMPORARY_SUFFIXES", "MARKER_SUFFIX", "Arrivals", "Candidate", "reads_completely", "scan_checksum",
           "is_temporary"]

RULES = ("quiet", "rename", "marker", "slices")
TEMPORARY_SUFFIXES = (".part", ".tmp", ".partial", ".filepart", ".crdownload", ".writing")
MARKER_SUFFIX = ".done"
_TIFF = (".tif", ".tiff")
_CHUNK = 8 << 20


def is_temporary(name: str) -> bool:
    """A name a writer uses while it writes (never a scan)."""
    low = name.lower()
    return name.startswith((".", "~")) or low.endswith(TEMPORARY_SUFFIXES)


def _is_tiff(name: str) -> bool:
    return name.lower().endswith(_TIFF)


def _slice_files(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.is_file() and _is_tiff(e.name) and not is_temporary(e.name))
    except OSError:
        return []


def _file_end(path: Path) -> tuple[int, int]:
    """(bytes the TIFF's pages need, bytes the file has); raises on a header that cannot be read."""
    import tifffile

    size = path.stat().st_size
    with tifffile.TiffFile(path) as tf:
        series = tf.series[0] if tf.series else None
        off = getattr(series, "dataoffset", None) if series is not None else None
        if off is not None:  # contiguous data (ImageJ hyperstacks, tifffile's own writes): one block
            return int(off) + int(series.nbytes), size
        end = 0
        for page in tf.pages:
            offs, counts = page.dataoffsets, page.databytecounts
            if offs:
                end = max(end, max(int(o) + int(c) for o, c in zip(offs, counts)))
        return end, size


def reads_completely(path: str | os.PathLike) -> bool:
    """True when every page of a TIFF (or every slice of a folder of slices) lies whole inside its file.

    Only headers and offsets are read, not the pixels (a 2016³ scan is 16 GB)."""
    p = Path(path)
    files = _slice_files(p) if p.is_dir() else [p]
    if not files:
        return False
    try:
        for f in files:
            need, have = _file_end(f)
            if need <= 0 or need > have:
                return False
    except Exception:  # a header still being written, or not a TIFF yet
        return False
    return True


def scan_checksum(path: str | os.PathLike) -> str:
    """SHA-256 of a scan's bytes (of each slice's name and bytes, in order, for a folder of slices)."""
    p = Path(path)
    h = hashlib.sha256()
    files = _slice_files(p) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


@dataclass
class Candidate:
    """A scan seen in the folder: its path, what it is, its stamp and since when the stamp has not changed."""

    path: Path
    kind: str  # "stack" or "slices"
    stamp: tuple
    since: float
    complete: bool = False


class Arrivals:
    """Looks at a folder and says which scans in it are complete (see the module for the rules).

    Parameters
    ----------
    folder : path-like
        Where the reconstruction writes the scans.
    rule : {"quiet", "rename", "marker", "slices"}
    quiet_s : float
        For ``"quiet"``: how long a scan must stay unchanged (0.2-3600 s).
    slices : int, optional
        For ``"slices"``: the number of 2D slices of a complete scan.
    clock : callable
        Seconds (monotonic); tests give their own.
    """

    def __init__(self, folder: str | os.PathLike, *, rule: str = "quiet", quiet_s: float = 2.0,
                 slices: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if rule not in RULES:
            raise ReactomoError(f"The completeness rule is {rule!r}; use one of {', '.join(RULES)}.")
        if not isinstance(quiet_s, (int, float)) or not 0.2 <= float(quiet_s) <= 3600:
            raise ReactomoError(f"The quiet window is {quiet_s!r} s; give 0.2 to 3600 seconds.")
        if rule == "slices" and (not isinstance(slices, int) or isinstance(slices, bool) or slices < 1):
            raise ReactomoError("The 'slices' rule needs the number of slices of a complete scan (--slices N).")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ReactomoError(f"The scan folder {self.folder} does not exist or is not a folder.")
        self.rule, self.quiet_s, self.slices, self.clock = rule, float(quiet_s), slices, clock
        self.candidates: dict[str, Candidate] = {}

    def _entries(self) -> list[tuple[str, Path, str]]:
        out = []
        with os.scandir(self.folder) as it:
            for e in it:
                if is_temporary(e.name) or e.name.lower().endswith(MARKER_SUFFIX):
                    continue
                if e.is_file() and _is_tiff(e.name):
                    out.append((e.name, Path(e.path), "stack"))
                elif e.is_dir():
                    out.append((e.name, Path(e.path), "slices"))
        return out

    @staticmethod
    def _stamp(path: Path, kind: str) -> tuple:
        if kind == "stack":
            st = path.stat()
            return (st.st_size, st.st_mtime_ns)
        files = _slice_files(path)
        sts = [f.stat() for f in files]
        return (len(files), sum(s.st_size for s in sts), max((s.st_mtime_ns for s in sts), default=0))

    def _marked(self, name: str, path: Path) -> bool:
        stem = name[: -len(path.suffix)] if path.suffix else name
        return any((self.folder / f"{n}{MARKER_SUFFIX}").exists() for n in {name, stem})

    def look(self) -> list[Path]:
        """One look at the folder; the complete scans, in natural order (``t2`` before ``t10``).

        A scan that changes after it was complete (written again) is incomplete until it is complete again."""
        from core.imaging.io import natural_key

        now = self.clock()
        seen: dict[str, Candidate] = {}
        for name, path, kind in self._entries():
            try:
                stamp = self._stamp(path, kind)
            except OSError:  # vanished between the listing and the look
                continue
            old = self.candidates.get(name)
            cand = old if old is not None and old.stamp == stamp and old.kind == kind else Candidate(path, kind, stamp, now)
            if kind == "slices" and stamp[0] == 0:
                cand.complete = False
            elif self.rule == "quiet":
                cand.complete = cand.complete or (now - cand.since >= self.quiet_s and reads_completely(path))
            elif self.rule == "rename":
                cand.complete = cand.complete or reads_completely(path)
            elif self.rule == "marker":
                cand.complete = cand.complete or (self._marked(name, path) and reads_completely(path))
            else:  # slices
                cand.complete = cand.complete or (kind == "slices" and stamp[0] >= self.slices and reads_completely(path))
            seen[name] = cand
        self.candidates = seen
        return [c.path for n, c in sorted(seen.items(), key=lambda kv: natural_key(kv[0])) if c.complete]

    @property
    def incomplete(self) -> list[str]:
        """Names seen at the last look that are not complete yet (still being written, or waiting for their marker)."""
        return sorted(n for n, c in self.candidates.items() if not c.complete)
