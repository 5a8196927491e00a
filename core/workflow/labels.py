"""Brushed labels: sparse per-slice label images stored in the project, saved as they are drawn.

A *label* is a phase code on one pixel of an XY slice (``0`` = unlabelled, other codes from the project's phase
table, see :mod:`core.phases`). Users brush a few slices of one or more time steps; only the slices that carry
labels are stored, one small file each::

    <project>/labels/<step name>/z<index:05d>.tif      2D uint8 (y, x), zlib-compressed, written atomically

and the manifest's ``labels`` section lists them (``{"<step name>": {"slices": [z, ...]}}``), changed under the
project lock together with the file. A slice cleared to all zeros is removed from the list and its file deleted,
so a step with no labels left disappears from the section (and the home checklist shows "no labels").

Time steps are addressed by index (as in :meth:`core.workflow.project.Project.scans`), stored by name, so labels follow
their scan if steps are reordered; labels of a step name that is no longer among the scans are ignored.

Examples
--------
Slice 6 of step 3 reads as zeros until it is labelled; ``set`` saves ``<project>/labels/t003/z00006.tif``.

>>> store = LabelStore(project)          # doctest: +SKIP
>>> lab = store.get(3, 6)                # doctest: +SKIP
>>> lab[10:14, 20:40] = BASSANITE        # doctest: +SKIP
>>> store.set(3, 6, lab)                 # doctest: +SKIP
>>> store.counts()[BASSANITE]            # doctest: +SKIP
PhaseCount(pixels=80, slices=1)

The Label page brushes through :func:`stroke_labels` (canvas RGBA to codes), :meth:`LabelStore.paint` (returns an
:class:`Edit`) and :meth:`LabelStore.revert` (undo).
"""

from __future__ import annotations

import logging
import numbers
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from core.atomic import atomic_write_with
from core.errors import ReactomoError

if TYPE_CHECKING:
    from core.workflow.project import Project

__all__ = [
    "LABELS_DIR",
    "PhaseCount",
    "Edit",
    "LabelStore",
    "suggest_slices",
    "import_demo_scribbles",
    "eraser_colour",
    "stroke_labels",
    "read_canvas_png",
]

log = logging.getLogger(__name__)

#: Folder inside a project that holds the brushed labels.
LABELS_DIR = "labels"



@dataclass(frozen=True)
class PhaseCount:
    """How much of one phase is labelled.

    Attributes
    ----------
    pixels : int
        Labelled pixels of the phase, over every labelled slice of every step.
    slices : int
        Number of (step, slice) pairs holding at least one pixel of the phase.
    """

    pixels: int
    slices: int


@dataclass(frozen=True, eq=False)
class Edit:
    """One change to one labelled slice, enough to undo it (see :meth:`LabelStore.revert`).

    Attributes
    ----------
    step, z : int
        Time step index and XY slice index.
    index : ndarray of int64, shape (n,)
        Flat indices into the ``(y, x)`` slice of the pixels that changed.
    before, after : ndarray of uint8, shape (n,)
        Their codes before and after the change.
    """

    step: int
    z: int
    index: np.ndarray
    before: np.ndarray
    after: np.ndarray

    @property
    def pixels(self) -> int:
        """Number of pixels changed."""
        return int(self.index.size)

    def added(self) -> dict[int, int]:
        """Pixels per code written by the change (code 0 = erased), e.g. ``{2: 140}``."""
        codes, n = np.unique(self.after, return_counts=True)
        return {int(c): int(k) for c, k in zip(codes, n)}


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


def _codes_text(codes: Sequence[int]) -> str:
    codes = list(codes)
    return ", ".join(str(int(c)) for c in codes[:10]) + (" ..." if len(codes) > 10 else "")


def suggest_slices(n_slices: int, depth: int) -> list[int]:
    """Evenly spaced z indices to label, away from the ends of the volume.

    The ``n_slices`` slices split the span from the first to the last slice into ``n_slices + 1`` equal gaps, so
    the first and last suggestions are one gap away from the top and bottom faces (where reconstructions are
    poorest).

    Parameters
    ----------
    n_slices : int
        How many slices to suggest (>= 1); at most ``depth`` are returned.
    depth : int
        Number of XY slices of the scan (its ``z`` size, >= 1).

    Returns
    -------
    list of int
        Distinct, increasing z indices in ``[0, depth)``.

    Examples
    --------
    >>> suggest_slices(4, 16)
    [3, 6, 9, 12]
    >>> suggest_slices(13, 400)[:3]
    [29, 57, 86]
    """
    if not _is_int(depth) or int(depth) < 1:
        raise ReactomoError(f"The depth is {depth!r}; give the number of XY slices of the scan (a positive integer).")
    if not _is_int(n_slices) or int(n_slices) < 1:
        raise ReactomoError(f"The number of slices to suggest is {n_slices!r}; give a positive integer such as 13.")
    depth, n = int(depth), min(int(n_slices), int(depth))
    if n == depth:
        return list(range(depth))
    picks = [min(depth - 1, max(0, int((i + 1) * (depth - 1) / (n + 1) + 0.5))) for i in range(n)]
    out: list[int] = []
    for z in picks:  # rounding can collide on shallow volumes: take the next free index
        while z in out and z < depth - 1:
            z += 1
        if z not in out:
            out.append(z)
    return sorted(out)


# A small memo of per-file code histograms, keyed on a digest of the file's bytes (small: zlib-compressed labels):
# the counter on the Label page recounts every labelled slice after each stroke, and only one slice has changed.
_HIST_MEMO: OrderedDict[bytes, np.ndarray] = OrderedDict()
_HIST_MEMO_SIZE = 512
_HIST_LOCK = threading.Lock()  # the dashboard serves several sessions from threads of one process


def _file_histogram(path: Path) -> np.ndarray | None:
    import hashlib

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    key = hashlib.blake2b(raw, digest_size=16).digest()
    with _HIST_LOCK:
        hist = _HIST_MEMO.get(key)
        if hist is not None:
            _HIST_MEMO.move_to_end(key)
            return hist
    hist = np.bincount(_read_slice_file(path, raw).ravel(), minlength=256).astype(np.int64)
    with _HIST_LOCK:
        _HIST_MEMO[key] = hist
        while len(_HIST_MEMO) > _HIST_MEMO_SIZE:
            _HIST_MEMO.popitem(last=False)
    return hist


def _read_slice_file(path: Path, raw: bytes | None = None) -> np.ndarray:
    """A stored label slice (from ``path``, or its bytes ``raw``) as a 2D uint8 array, or a ReactomoError."""
    import io

    try:
        data = tifffile.imread(io.BytesIO(raw) if raw is not None else path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder error means the file is damaged
        raise ReactomoError(
            f"The label file {path} cannot be read ({type(exc).__name__}: {exc}); clear that slice and label it again."
        ) from None
    if data.ndim != 2 or data.dtype != np.uint8:
        raise ReactomoError(
            f"The label file {path} holds a {data.dtype} array of shape {_shape_text(data.shape)}, not a 2D uint8 "
            "label slice; clear that slice and label it again."
        )
    return data


def _write_slice_file(path: Path, labels: np.ndarray) -> None:
    def writer(tmp: Path) -> None:
        tifffile.imwrite(tmp, labels, photometric="minisblack", compression="zlib")

    try:
        atomic_write_with(path, writer)
    except OSError as exc:
        raise ReactomoError(
            f"The label slice {path} could not be written ({exc.strerror or exc}); check that the project folder is "
            "writable and has free space."
        ) from None


class LabelStore:
    """The brushed labels of one project, read from and written to the project folder on every call.

    Nothing is kept in memory between calls, so several tabs (or the CLI) can use the same project; every change
    is a read-modify-write of one slice file together with the manifest, under the project lock.

    Reading: :meth:`slices`, :meth:`step_slices`, :meth:`get`, :meth:`counts`, :meth:`volume`. Writing: :meth:`set`,
    :meth:`clear`, :meth:`paint`, :meth:`revert`. Files: :meth:`export_tiff`, :meth:`import_tiff`.

    Parameters
    ----------
    project : core.workflow.project.Project
        The project whose labels these are.
    """

    def __init__(self, project: Project) -> None:
        from core.workflow.project import Project

        if not isinstance(project, Project):
            raise ReactomoError(f"A LabelStore needs a Project; got {type(project).__name__}.")
        self.project = project

    def __repr__(self) -> str:
        return f"LabelStore({self.project.name!r})"

    # -- paths and checks --------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """``<project>/labels``."""
        return self.project.root / LABELS_DIR

    def _scans(self, manifest: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        m = manifest if manifest is not None else self.project.manifest
        return m["scans"]

    def _step(self, step: object, manifest: dict[str, Any] | None = None) -> tuple[int, str, tuple[int, int, int]]:
        """(index, name, shape) of a time step, or a ReactomoError that says which steps exist."""
        scans = self._scans(manifest)
        n = len(scans)
        if not _is_int(step) or not 0 <= int(step) < n:  # type: ignore[call-overload]
            where = f"0 to {n - 1}" if n else "none yet; open scans on the Data page first"
            raise ReactomoError(f"Time step {step!r} does not exist; the project has {n} steps ({where}).")
        s = scans[int(step)]  # type: ignore[call-overload]
        name = str(s["name"])
        if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ReactomoError(f"The step name {name!r} cannot be used as a folder name; rename the scan file.")
        return int(step), name, tuple(int(v) for v in s["shape"])  # type: ignore[call-overload, return-value]

    def _z(self, z: object, depth: int, name: str) -> int:
        if not _is_int(z) or not 0 <= int(z) < depth:  # type: ignore[call-overload]
            raise ReactomoError(f"Slice z = {z!r} is outside step '{name}', which has {depth} XY slices (z = 0 to {depth - 1}).")
        return int(z)  # type: ignore[call-overload]

    def slice_path(self, step: int, z: int) -> Path:
        """Where slice ``z`` of time step ``step`` is (or would be) stored."""
        _, name, shape = self._step(step)
        return self.root / name / f"z{self._z(z, shape[0], name):05d}.tif"

    def _check_codes(self, labels: np.ndarray, what: str) -> np.ndarray:
        """``labels`` as uint8 after checking its codes against the phase table (the error names the bad codes)."""
        if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
            raise ReactomoError(
                f"{what} has dtype {labels.dtype}; labels are integer phase codes (uint8: 0 = unlabelled, then the "
                "codes of the phase table)."
            )
        codes = self.project.phases().codes
        allowed = {0, *codes}
        if labels.size and labels.dtype != np.uint8:
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi > 255:
                bad = sorted({v for v in (lo, hi) if v < 0 or v > 255})
                raise ReactomoError(
                    f"{what} holds code(s) {_codes_text(bad)}, which are not in the phase table (0 = unlabelled, then "
                    f"{_codes_text(sorted(codes))}); use only those codes."
                )
            labels = labels.astype(np.uint8)
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
        bad = [int(v) for v in present if int(v) not in allowed]
        if bad:
            raise ReactomoError(
                f"{what} holds code(s) {_codes_text(bad)}, which are not in the phase table (0 = unlabelled, then "
                f"{_codes_text(sorted(codes))}); use only those codes, or add the phases on the Data page."
            )
        return labels

    # -- reading -----------------------------------------------------------------------------------------------
    def slices(self) -> list[tuple[int, int]]:
        """Every labelled slice as ``(step index, z)``, sorted; steps no longer among the scans are left out."""
        m = self.project.manifest
        index = {s["name"]: i for i, s in enumerate(m["scans"])}
        out = []
        for name, entry in m["labels"].items():
            if name in index and isinstance(entry, dict):
                out.extend((index[name], int(z)) for z in entry.get("slices", []))
        return sorted(out)

    def step_slices(self, step: int) -> list[int]:
        """The labelled z indices of one time step, sorted."""
        i, _, _ = self._step(step)
        return [z for s, z in self.slices() if s == i]

    def get(self, step: int, z: int) -> np.ndarray:
        """The labels of XY slice ``z`` of time step ``step``.

        Returns
        -------
        ndarray, shape (y, x), uint8
            Phase codes, 0 = unlabelled; all zeros for a slice with no labels. A new array (safe to modify).

        Raises
        ------
        ReactomoError
            If the step or slice does not exist, or the stored file is damaged or no longer fits the scan.
        """
        m = self.project.manifest
        _, name, shape = self._step(step, m)
        return self._stored(m, name, self._z(z, shape[0], name), shape)

    def _stored(self, m: dict[str, Any], name: str, z: int, shape: tuple[int, int, int]) -> np.ndarray:
        """Slice ``z`` of step ``name`` as the manifest ``m`` lists it (zeros when not listed)."""
        listed = z in (m["labels"].get(name) or {}).get("slices", [])
        path = self.root / name / f"z{z:05d}.tif"
        if not listed:
            return np.zeros(shape[1:], dtype=np.uint8)
        try:
            data = _read_slice_file(path)
        except FileNotFoundError:
            log.warning("Project '%s': label slice %s is listed but missing; reading it as unlabelled.", self.project.name, path)
            return np.zeros(shape[1:], dtype=np.uint8)
        if data.shape != shape[1:]:
            raise ReactomoError(
                f"The labels of step '{name}' slice z = {z} have shape {_shape_text(data.shape)} but the scan's slices "
                f"are {_shape_text(shape[1:])}; they were made for other scans, so clear the slice and label it again."
            )
        return np.array(data)

    def counts(self) -> dict[int, PhaseCount]:
        """Labelled pixels and slices of every phase of the phase table.

        Returns
        -------
        dict of int to PhaseCount
            Keyed by phase code, one entry per phase in the table (zero counts included), in table order. Codes
            stored in a slice but no longer in the table are not counted.
        """
        m = self.project.manifest
        codes = _table_codes(m)
        pixels = dict.fromkeys(codes, 0)
        slices = dict.fromkeys(codes, 0)
        names = {s["name"] for s in m["scans"]}
        for name, entry in m["labels"].items():
            if name not in names or not isinstance(entry, dict):
                continue
            for z in entry.get("slices", []):
                hist = _file_histogram(self.root / name / f"z{int(z):05d}.tif")
                if hist is None:
                    continue
                for c in codes:
                    if hist[c]:
                        pixels[c] += int(hist[c])
                        slices[c] += 1
        return {c: PhaseCount(pixels[c], slices[c]) for c in codes}

    def volume(self, step: int) -> np.ndarray:
        """The labels of a whole time step as one volume (0 on every slice without labels).

        Memory: the volume is ``z × y × x`` bytes (a 2016³ scan gives 8.2 GB, the study's 400 × 736 × 800
        sub-volume 236 MB). For training, read only the labelled slices with :meth:`slices` and :meth:`get`.

        Returns
        -------
        ndarray, shape (z, y, x), uint8
        """
        i, _, shape = self._step(step)
        out = np.zeros(shape, dtype=np.uint8)
        for z in self.step_slices(i):
            out[z] = self.get(i, z)
        return out

    # -- writing -----------------------------------------------------------------------------------------------
    def set(self, step: int, z: int, labels2d: np.ndarray) -> None:
        """Store the labels of XY slice ``z`` of time step ``step`` (replacing what was there).

        The file is written atomically (a failed write leaves the previous labels), and the manifest lists the
        slice; an all-zero ``labels2d`` clears the slice (see :meth:`clear`). ``labels2d`` is not modified.

        Parameters
        ----------
        step : int
            Time step index.
        z : int
            XY slice index within the step.
        labels2d : ndarray, shape (y, x), integer
            Phase codes: 0 (unlabelled) or codes of the project's phase table. Stored as uint8.

        Raises
        ------
        ReactomoError
            If the step or slice does not exist, the shape is not the scan's ``(y, x)``, or a code is not in the
            phase table (the message names the codes); nothing is written then.
        """
        _, name, shape = self._step(step)
        self._z(z, shape[0], name)
        if not isinstance(labels2d, np.ndarray):
            raise ReactomoError(f"Labels must be a numpy array of shape (y, x); got {type(labels2d).__name__}.")
        if labels2d.shape != shape[1:]:
            raise ReactomoError(
                f"The labels have shape {_shape_text(labels2d.shape)} but the slices of step '{name}' are "
                f"{_shape_text(shape[1:])} (y × x); give one label per pixel of the slice."
            )
        data = np.ascontiguousarray(self._check_codes(labels2d, "The labels"))
        self._rewrite(step, z, lambda current: data, read=False)

    def _rewrite(self, step: int, z: int, change, *, read: bool = True) -> None:
        """Read-modify-write slice ``z`` of ``step`` under the project lock.

        ``change(current)`` gets the stored slice (zeros when ``read`` is False) and returns the new slice (uint8,
        codes already checked); an all-zero result removes the slice's file and manifest entry. Holding the lock
        for the whole read-modify-write keeps strokes from two browser tabs on one slice from losing each other.
        """
        _, name, shape = self._step(step)
        z = self._z(z, shape[0], name)
        path = self.root / name / f"z{z:05d}.tif"

        def apply(m: dict[str, Any]) -> None:
            if self._step(step, m)[1:] != (name, shape):  # the scans changed since the checks above
                raise ReactomoError(f"The scans of this project changed while saving labels of step '{name}'; try again.")
            current = self._stored(m, name, z, shape) if read else np.zeros(shape[1:], np.uint8)
            new = change(current)
            if new.any():
                _write_slice_file(path, np.ascontiguousarray(new, dtype=np.uint8))
                entry = m["labels"].setdefault(name, {"slices": []})
                entry["slices"] = sorted({*(int(v) for v in entry.get("slices", [])), z})
            else:
                _drop(m, name, [z])
                path.unlink(missing_ok=True)

        self.project.update(apply)
        log.debug("Project '%s': saved labels %s", self.project.name, path)

    def clear(self, step: int, z: int) -> Edit | None:
        """Remove the labels of XY slice ``z`` of time step ``step`` (its file and its manifest entry).

        Returns
        -------
        Edit or None
            What was removed (give it to :meth:`revert` to bring it back), or ``None`` if the slice had no labels
            (or its stored file could not be read, in which case it is removed all the same).
        """
        removed: list[Edit] = []

        def change(current: np.ndarray) -> np.ndarray:
            index = np.flatnonzero(current)
            if index.size:
                removed.append(Edit(int(step), int(z), index, current.ravel()[index], np.zeros(index.size, np.uint8)))
            return np.zeros_like(current)

        try:
            self._rewrite(step, z, change)
        except ReactomoError:
            if not self._readable(step, z):  # a damaged or foreign file: remove it without reading it
                self._rewrite(step, z, lambda current: current, read=False)
                return None
            raise
        return removed[-1] if removed else None

    def _readable(self, step: int, z: int) -> bool:
        try:
            self.get(step, z)
            return True
        except ReactomoError:
            return False

    # -- brushing ----------------------------------------------------------------------------------------------
    def paint(self, step: int, z: int, strokes: np.ndarray, *, origin: tuple[int, int] = (0, 0)) -> Edit | None:
        """Paint brushed pixels into slice ``z`` of time step ``step`` and save the slice.

        The slice is read, changed and written under the project lock, so strokes from several tabs on one slice
        are all kept.

        Parameters
        ----------
        step, z : int
            Time step index and XY slice index.
        strokes : ndarray, shape (rows, cols), integer
            What the brush did on a window of the slice: ``-1`` = untouched, ``0`` = erased, a phase code =
            painted with that phase (see :func:`stroke_labels`).
        origin : (int, int)
            ``(y, x)`` of the window's top-left pixel in the slice; the window must lie inside the slice.

        Returns
        -------
        Edit or None
            The pixels that changed, with their old and new codes (for :meth:`revert`); ``None`` when nothing
            changed (nothing is written then).
        """
        if not isinstance(strokes, np.ndarray) or strokes.ndim != 2:
            raise ReactomoError(f"Strokes must be a 2D numpy array (rows, cols); got {type(strokes).__name__}.")
        _, name, shape = self._step(step)
        z = self._z(z, shape[0], name)
        ny, nx = shape[1:]
        y0, x0 = (int(v) for v in origin)
        rows, cols = strokes.shape
        if not (0 <= y0 and 0 <= x0 and y0 + rows <= ny and x0 + cols <= nx):
            raise ReactomoError(
                f"A {rows}×{cols} window at (y, x) = ({y0}, {x0}) does not fit inside the {ny}×{nx} slices of step "
                f"'{name}'; move the window inside the slice."
            )
        touched = strokes >= 0
        if not touched.any():
            return None
        self._check_codes(np.where(touched, strokes, 0).astype(np.int64), "The strokes")

        def changes(current: np.ndarray):
            window = current[y0 : y0 + rows, x0 : x0 + cols]
            r, c = np.nonzero(touched & (window != strokes))
            return window, r, c

        if changes(self.get(step, z))[1].size == 0:  # nothing to do: leave the files and the manifest alone
            return None
        edits: list[Edit] = []

        def change(current: np.ndarray) -> np.ndarray:
            window, r, c = changes(current)
            index = np.ravel_multi_index((r + y0, c + x0), (ny, nx))
            edits.append(Edit(int(step), z, index, window[r, c].copy(), strokes[r, c].astype(np.uint8)))
            window[r, c] = edits[-1].after
            return current

        self._rewrite(step, z, change)
        return edits[-1] if edits[-1].pixels else None

    def revert(self, edit: Edit) -> None:
        """Undo an :class:`Edit`: put its pixels back to their old codes and save the slice.

        Pixels changed since by someone else are set back too (the edit is applied as recorded).
        """
        if not isinstance(edit, Edit):
            raise ReactomoError(f"Only an Edit from paint() or clear() can be reverted; got {type(edit).__name__}.")
        ny, nx = self._step(edit.step)[2][1:]
        if edit.index.size and int(edit.index.max()) >= ny * nx:
            raise ReactomoError("That change was made on slices of another size; it cannot be undone here.")

        def change(current: np.ndarray) -> np.ndarray:
            current.reshape(-1)[edit.index] = edit.before
            return current

        self._rewrite(edit.step, edit.z, change)

    # -- undo journal: survives a reload, a server restart and another browser --------------------------------
    def _undo_path(self, step: int, z: int) -> Path:
        _, name, shape = self._step(step)
        return self.root / name / ".undo" / f"z{self._z(z, shape[0], name):05d}.npz"

    def undo_history(self, step: int, z: int) -> list[Edit]:
        """The saved changes of one slice that can be undone, oldest first (an unreadable journal is empty)."""
        path = self._undo_path(step, z)
        try:
            with np.load(path, allow_pickle=False) as d:
                lengths = d["lengths"].astype(np.int64)
                cuts = np.concatenate([[0], np.cumsum(lengths)])
                return [Edit(int(step), int(z), d["index"][a:b].astype(np.int64), d["before"][a:b], d["after"][a:b])
                        for a, b in zip(cuts[:-1], cuts[1:])]
        except (OSError, ValueError, KeyError):
            return []

    def _save_undo(self, step: int, z: int, edits: list[Edit]) -> None:
        path = self._undo_path(step, z)
        if not edits:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        from core.atomic import atomic_write_with

        def writer(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, lengths=np.array([e.pixels for e in edits], np.int64),
                         index=np.concatenate([e.index for e in edits]).astype(np.int64),
                         before=np.concatenate([e.before for e in edits]).astype(np.uint8),
                         after=np.concatenate([e.after for e in edits]).astype(np.uint8))

        atomic_write_with(path, writer)

    def push_undo(self, edit: Edit, *, keep: int = 50) -> None:
        """Remember ``edit`` so that :meth:`undo` can take it back later (the newest ``keep`` per slice)."""
        self._save_undo(edit.step, edit.z, (self.undo_history(edit.step, edit.z) + [edit])[-keep:])

    def undo(self, step: int, z: int) -> Edit | None:
        """Take back the newest remembered change of a slice; returns it, or None when there is none."""
        history = self.undo_history(step, z)
        if not history:
            return None
        self.revert(history[-1])
        self._save_undo(step, z, history[:-1])
        return history[-1]

    def forget_undo(self, step: int, z: int) -> None:
        """Drop a slice's remembered changes (after an import replaced its labels, they no longer apply)."""
        self._save_undo(step, z, [])

    # -- label TIFF import and export --------------------------------------------------------------------------
    def export_tiff(self, path: str | os.PathLike, step: int) -> Path:
        """Write the labels of time step ``step`` as one label TIFF (see :func:`core.imaging.io.write_labels`).

        The file is a zlib-compressed multi-page uint8 TIFF, shape ``(z, y, x)``, 0 = unlabelled, with the
        project's voxel size; it needs :meth:`volume`'s memory while writing.

        Returns
        -------
        Path
        """
        from core.imaging.io import write_labels

        return write_labels(path, self.volume(step), voxel_size_um=self.project.voxel_size_um())

    def import_tiff(self, path: str | os.PathLike, step: int, *, replace: bool = True) -> list[int]:
        """Bring a label TIFF (``(z, y, x)`` uint8, 0 = unlabelled) into time step ``step``.

        The whole file is checked first (a readable, greyscale uint8 3D TIFF of the scan's shape whose codes are
        all in the phase table); only then is anything written. Only slices holding labels are stored.

        Parameters
        ----------
        path : path-like
            The label TIFF (it needs ``z × y × x`` bytes of memory while it is read).
        step : int
            Time step index the labels belong to.
        replace : bool
            True: the step's labels become exactly the file's (slices without labels in the file are cleared).
            False: the file's labelled pixels are painted over the stored labels; pixels that are 0 in the file
            keep what they had.

        Returns
        -------
        list of int
            The z indices whose labels changed or were stored.

        Raises
        ------
        ReactomoError
            If the file is not a label TIFF for this scan (wrong shape, codes outside the table, colour image,
            not a TIFF, ...) or holds no labels at all; nothing is changed then.
        """
        from core.imaging.io import read_labels

        i, name, shape = self._step(step)
        labels = read_labels(path, shape=shape, codes=self.project.phases().codes)
        filled = np.flatnonzero(labels.reshape(shape[0], -1).any(axis=1))
        if filled.size == 0:
            raise ReactomoError(
                f"The labels file {Path(path).name} holds no labels (every voxel is 0); nothing was imported."
            )
        before = set(self.step_slices(i))
        current = {int(z): self.get(i, int(z)) for z in filled if int(z) in before} if not replace else {}
        new: dict[int, np.ndarray] = {}
        for z in (int(v) for v in filled):
            if not replace and z in current:
                merged = current[z].copy()
                mask = labels[z] > 0
                merged[mask] = labels[z][mask]
                if np.array_equal(merged, current[z]):
                    continue
                new[z] = merged
            else:
                new[z] = np.ascontiguousarray(labels[z])
        dropped = sorted(before - {int(v) for v in filled}) if replace else []

        def apply(m: dict[str, Any]) -> None:
            self._step(i, m)
            for z, data in new.items():
                _write_slice_file(self.root / name / f"z{z:05d}.tif", data)
            entry = m["labels"].setdefault(name, {"slices": []})
            entry["slices"] = sorted({*(int(v) for v in entry.get("slices", [])), *new})
            if dropped:
                _drop(m, name, dropped)
                for z in dropped:
                    (self.root / name / f"z{z:05d}.tif").unlink(missing_ok=True)

        self.project.update(apply)
        log.info("Project '%s': imported labels of %d slice(s) of step '%s' from %s", self.project.name, len(new), name, path)
        return sorted(set(new) | set(dropped))


def _table_codes(manifest: dict[str, Any]) -> tuple[int, ...]:
    """Phase codes of a manifest's phase table, in table order."""
    from core.phases import PhaseTable

    return PhaseTable.from_dict(manifest["phases"]).codes


def _drop(m: dict[str, Any], name: str, zs: Sequence[int]) -> None:
    """Remove slices ``zs`` of step ``name`` from the manifest's labels section (and the step if none remain)."""
    entry = m["labels"].get(name)
    if not isinstance(entry, dict):
        return
    left = sorted(int(v) for v in entry.get("slices", []) if int(v) not in set(zs))
    if left:
        entry["slices"] = left
    else:
        del m["labels"][name]


def import_demo_scribbles(project: Project) -> tuple[int, list[int]]:
    """Bring the demo experiment's scribbles (``demo/scribbles.tif``) into the project's labels.

    The scribbles belong to the demo's label step; they are painted over any labels already there (pixels
    without a scribble keep their labels).

    Returns
    -------
    (int, list of int)
        The label step and the z indices that received scribbles.

    Raises
    ------
    ReactomoError
        If the project holds no demo experiment, or its scribbles file is missing or does not fit the scans.
    """
    demo = project.demo()
    if not demo or not demo.get("scribbles"):
        raise ReactomoError(
            f"Project '{project.name}' does not hold the demo experiment, so it has no demo scribbles; load the demo "
            "on the home page."
        )
    path = project.resolve_path(demo["scribbles"])
    if not path.is_file():
        raise ReactomoError(f"The demo's scribbles file {path} is missing; generate the demo again on the Data page.")
    step = int(demo.get("label_step", 0))
    changed = LabelStore(project).import_tiff(path, step, replace=False)
    return step, changed


# ---------------------------------------------------------------------------------------------------------------
# From brush strokes drawn in a browser to label codes
# ---------------------------------------------------------------------------------------------------------------
#: Colours the eraser may be drawn in, most visible over a grey slice first.
_ERASER_CANDIDATES = ("#ff00ff", "#00ffff", "#ffff00", "#ffffff", "#000000", "#7f00ff")


def _rgb(colour: str) -> tuple[int, int, int]:
    if not isinstance(colour, str) or not re.fullmatch(r"#[0-9a-fA-F]{6}", colour):
        raise ReactomoError(f"Colour {colour!r} is not a #rrggbb colour such as '#4c78a8'.")
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def eraser_colour(phase_colours: Sequence[str]) -> str:
    """A colour for eraser strokes that no phase uses, far enough from every phase colour to be told apart.

    Parameters
    ----------
    phase_colours : sequence of str
        ``#rrggbb`` colours of the phases (e.g. ``[p.colour for p in project.phases()]``).

    Returns
    -------
    str
        Magenta (``#ff00ff``) unless a phase colour is within 100 RGB units of it; otherwise the candidate
        farthest from every phase colour.
    """
    used = np.array([_rgb(c) for c in phase_colours], dtype=np.float64).reshape(-1, 3)

    def distance(c: str) -> float:
        return float(np.min(np.linalg.norm(used - np.array(_rgb(c)), axis=1))) if used.size else 1e9

    first = _ERASER_CANDIDATES[0]
    if distance(first) >= 100:
        return first
    return max(_ERASER_CANDIDATES, key=distance)


def stroke_labels(rgba: np.ndarray, *, zoom: int, palette: dict[int, str]) -> np.ndarray:
    """Turn an RGBA image of brush strokes, drawn at ``zoom`` × the scan's resolution, into label codes.

    The image holds only the strokes (transparent elsewhere), as a drawing canvas returns them. Each scan pixel is
    a ``zoom × zoom`` block of the image: it counts as brushed when the block's mean alpha is above 0.5, and its
    code is the palette entry whose colour is nearest (in RGB) to the block's alpha-weighted mean colour, so the
    antialiased edges of a stroke and the blend where two strokes meet go to the nearest phase.

    Parameters
    ----------
    rgba : ndarray, shape (rows × zoom, cols × zoom, 4), uint8
        The strokes; extra rows/columns beyond a multiple of ``zoom`` are ignored. An RGB image (no alpha) is
        refused, since every pixel of it would count as brushed.
    zoom : int
        Display zoom (>= 1): canvas pixels per scan pixel along each axis.
    palette : dict of int to str
        Code to ``#rrggbb`` colour the strokes were drawn in; code 0 is the eraser.

    Returns
    -------
    ndarray, shape (rows, cols), int16
        ``-1`` where nothing was brushed, else the code (0 = erased).

    Examples
    --------
    >>> img = np.zeros((4, 4, 4), np.uint8)
    >>> img[:2, :2] = (245, 133, 24, 255)          # one scan pixel brushed orange at zoom 2
    >>> stroke_labels(img, zoom=2, palette={2: "#f58518", 0: "#ff00ff"}).tolist()
    [[2, -1], [-1, -1]]
    """
    if not isinstance(rgba, np.ndarray) or rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        got = f"{rgba.dtype} array of shape {_shape_text(rgba.shape)}" if isinstance(rgba, np.ndarray) else type(rgba).__name__
        raise ReactomoError(f"Strokes must be an RGBA uint8 image of shape (rows, cols, 4); got a {got}.")
    if not _is_int(zoom) or int(zoom) < 1:
        raise ReactomoError(f"The zoom is {zoom!r}; give a whole number of canvas pixels per scan pixel (1, 2, 3, ...).")
    if not palette:
        raise ReactomoError("The palette is empty; give the colour of every phase (and of the eraser, code 0).")
    k = int(zoom)
    rows, cols = rgba.shape[0] // k, rgba.shape[1] // k
    if rows == 0 or cols == 0:
        raise ReactomoError(f"The strokes image of shape {_shape_text(rgba.shape[:2])} is smaller than one {k}×{k} scan pixel.")
    blocks = rgba[: rows * k, : cols * k].astype(np.float32).reshape(rows, k, cols, k, 4)
    alpha = blocks[..., 3] / 255.0
    weight = alpha.sum(axis=(1, 3))
    brushed = weight / (k * k) > 0.5
    out = np.full((rows, cols), -1, dtype=np.int16)
    if not brushed.any():
        return out
    rgb = (blocks[..., :3] * alpha[..., None]).sum(axis=(1, 3))[brushed] / weight[brushed][:, None]
    codes = np.array(list(palette), dtype=np.int16)
    colours = np.array([_rgb(palette[int(c)]) for c in codes], dtype=np.float32)
    nearest = np.argmin(((rgb[:, None, :] - colours[None, :, :]) ** 2).sum(axis=2), axis=1)
    out[brushed] = codes[nearest]
    return out


def read_canvas_png(data_uri: str) -> np.ndarray:
    """Decode a ``data:image/png;base64,...`` URI (what a drawing canvas returns) to an RGBA uint8 array.

    Returns
    -------
    ndarray, shape (rows, cols, 4), uint8
    """
    import base64
    import binascii
    import io

    from PIL import Image, UnidentifiedImageError

    if not isinstance(data_uri, str) or not data_uri.startswith("data:image/") or ";base64," not in data_uri:
        raise ReactomoError("The drawing did not arrive as a PNG data URI; draw the stroke again.")
    try:
        raw = base64.b64decode(data_uri.split(";base64,", 1)[1], validate=False)
        with Image.open(io.BytesIO(raw)) as img:
            return np.asarray(img.convert("RGBA"))
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise ReactomoError(f"The drawing could not be decoded ({exc}); draw the stroke again.") from None
