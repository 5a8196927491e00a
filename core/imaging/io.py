"""Reading and writing scans: lazy 3D volumes from TIFF files, discovery of time steps, labels files.

A *scan* is one time step of the experiment: a greyscale volume with axes ``(z, y, x)`` stored either as one
multi-page TIFF (kind ``"stack"``, one page per z slice) or as a folder of 2D TIFF slices (kind ``"slices"``,
one file per z slice, in natural order). Scans are large (up to ~16 GB), so :class:`Volume` never loads a whole
scan unless :meth:`Volume.read` is called: uncompressed contiguous stacks are memory-mapped (any slice is a
strided read), everything else is decoded one page (or one slice file) at a time.

Every problem with the input is raised as a :class:`~core.errors.ReactomoError` whose message is one sentence
naming what was found and what would work; no tifffile or numpy exception escapes this module.

Supported data types: ``uint8``, ``uint16`` and ``float32``.
"""

from __future__ import annotations

import difflib
import glob
import logging
import os
import re
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile

from core.atomic import atomic_write_with
from core.errors import ReactomoError

__all__ = [
    "SUPPORTED_DTYPES",
    "TIFF_SUFFIXES",
    "ScanInfo",
    "Volume",
    "open_volume",
    "discover_scans",
    "series_scan_paths",
    "check_inside_roots",
    "check_volume_values",
    "read_tiff_volume",
    "write_volume",
    "write_labels",
    "read_labels",
    "grey_histograms",
    "natural_key",
]

log = logging.getLogger(__name__)

#: Data types a scan may have.
SUPPORTED_DTYPES = ("uint8", "uint16", "float32")
#: File name endings recognised as TIFF (compared case-insensitively).
TIFF_SUFFIXES = (".tif", ".tiff")
#: Compression schemes accepted by :func:`write_volume` (``None`` = uncompressed, memory-mappable).
COMPRESSIONS = (None, "zlib", "zstd", "lzw")

_KINDS = ("stack", "slices")
_AXIS_NAMES = {0: "z", 1: "y", 2: "x"}
_SUPPORTED_TEXT = "uint8, uint16 or float32"
_GLOB_CHARS = re.compile(r"[*?\[]")
# tifffile logs (instead of raising) when an IFD chain or a shaped series does not fit the file: a truncated file.
_CORRUPT_LOG_WORDS = ("offset", "reshape", "truncat", "corrupt")


# ---------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------
def natural_key(s: str) -> list:
    """Sort key that orders embedded numbers by value, ignoring case: ``"t2"`` before ``"t10"``.

    Parameters
    ----------
    s : str
        Any text, e.g. a file name or path.

    Returns
    -------
    list
        Alternating ``str`` and ``int`` parts (always starting with a ``str``), so two keys compare part by part.

    Examples
    --------
    >>> sorted(["t10", "t2", "T1"], key=natural_key)
    ['T1', 't2', 't10']
    """
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(s))]


def _is_tiff_name(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(TIFF_SUFFIXES)


def _is_hidden(name: str) -> bool:
    # Dot files include the temporary files of core.atomic and macOS "._" resource forks.
    return name.startswith(".")


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(v)) for v in shape) + ")"


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _value_text(value: float | int) -> str:
    v = float(value)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.6g}"


def _sniff(path: Path) -> str:
    """A short description of what a non-TIFF file looks like, from its first bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return "an unreadable file"
    if not head:
        return "an empty file"
    signatures = [
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"BM", "a BMP image"),
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"\x89HDF", "an HDF5 file"),
        (b"\x93NUMPY", "a NumPy .npy file"),
    ]
    for magic, what in signatures:
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown format"
    if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "a text file"
    return "binary data of an unknown format"


def _check_path_kind(path: Path, *, want: Literal["file", "dir", "any"] = "any") -> os.stat_result:
    """Stat ``path`` and refuse what does not exist, is not a regular file/folder, or is the wrong one of those."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ReactomoError(
                f"The path {path} is a symbolic link to {os.readlink(path)}, which does not exist; fix the link or "
                "give the real location of the scans."
            ) from None
        raise ReactomoError(
            f"The path {path} does not exist; check the spelling, or give a folder, a glob such as "
            "/data/exp1/*.tif, or a TIFF file."
        ) from None
    except PermissionError:
        raise ReactomoError(
            f"The path {path} cannot be read (permission denied); ask its owner to make it readable for the "
            "account running Reactomo."
        ) from None
    except OSError as exc:
        raise ReactomoError(
            f"The path {path} cannot be read ({exc.strerror or exc}); check the disk or the network "
            "share."
        ) from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise ReactomoError(
            f"The path {path} is not a regular file or folder (it is a pipe, socket or device); give a TIFF file or "
            "a folder of TIFF files."
        )
    if want == "file" and stat.S_ISDIR(st.st_mode):
        raise ReactomoError(
            f"The path {path} is a folder, not a TIFF file; open it as a folder of 2D slices, or give one "
            "multi-page TIFF file."
        )
    if want == "dir" and not stat.S_ISDIR(st.st_mode):
        raise ReactomoError(
            f"The path {path} is a file, not a folder of 2D TIFF slices; open it as one multi-page TIFF "
            "instead."
        )
    return st


def _read_error(path: Path, exc: BaseException) -> ReactomoError:
    """Translate an exception raised while reading ``path`` into one user sentence."""
    if isinstance(exc, ReactomoError):
        return exc
    if isinstance(exc, PermissionError):
        return ReactomoError(
            f"The file {path} cannot be read (permission denied); ask its owner to make it readable for the account "
            "running Reactomo."
        )
    if isinstance(exc, FileNotFoundError):
        return ReactomoError(
            f"The file {path} disappeared while it was being read; check that nothing moves or deletes the "
            "scans."
        )
    if isinstance(exc, MemoryError):
        return ReactomoError(
            f"Reading {path} needs more memory than is free; read it slice by slice or on a larger "
            "machine."
        )
    detail = f"{type(exc).__name__}: {exc}".strip()
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return ReactomoError(
        f"The file {path} is truncated or corrupt and could not be decoded ({detail}); copy or export it again."
    )


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn any exception raised inside the block into a :class:`ReactomoError` about ``path``."""
    try:
        yield
    except ReactomoError:
        raise
    except Exception as exc:
        raise _read_error(path, exc) from exc


class _LogCapture(logging.Handler):
    """Collects tifffile's warnings raised by this thread while a file is being parsed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    logger = logging.getLogger("tifffile")
    handler = _LogCapture()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


# ---------------------------------------------------------------------------------------------------------------
# Opening one TIFF file: header parsing and validation
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Tiff:
    """An open TIFF file and its first image series, validated as readable (not truncated)."""

    path: Path
    tif: tifffile.TiffFile
    series: Any  # tifffile.TiffPageSeries
    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype | None
    rgb: bool
    dataoffset: int | None  # offset of contiguous uncompressed data, or None

    def close(self) -> None:
        self.tif.close()


def _truncated(path: Path, messages: list[str]) -> ReactomoError | None:
    """The error for a file whose page list points past its end, judged from tifffile's log messages."""
    bad = [m for m in messages if any(w in m.lower() for w in _CORRUPT_LOG_WORDS)]
    if not bad:
        return None
    log.debug("%s: tifffile reported %s", path, bad)
    return ReactomoError(
        f"The file {path} is truncated or corrupt (its list of pages points past the end of the file); copy or "
        "export it again."
    )


def _open_tiff(path: Path) -> _Tiff:
    """Open ``path`` with tifffile and check that its first series fits inside the file."""
    st = _check_path_kind(path, want="file")
    messages: list[str] = []
    tif = None
    try:
        with _tifffile_log() as messages:
            tif = tifffile.TiffFile(path)
            series = tif.series[0] if tif.series else None
            if series is None:
                raise ReactomoError(f"The file {path} is a TIFF file without any image; export the scan again.")
            shape = tuple(int(v) for v in series.shape)
            dataoffset = series.dataoffset
            # Loading the last page's header also walks the page list, which is where truncation shows.
            last = series[len(series) - 1] if dataoffset is None and len(series) else None
        err = _truncated(path, messages)
        if err is not None:
            raise err
        dtype = np.dtype(series.dtype.name) if series.dtype is not None else None
        expected_end = None
        if dataoffset is not None and dtype is not None:
            expected_end = int(dataoffset) + int(np.prod(shape)) * dtype.itemsize
        elif last is not None and len(last.dataoffsets):
            expected_end = max(int(o) + int(n) for o, n in zip(last.dataoffsets, last.databytecounts))
        if expected_end is not None and expected_end > st.st_size:
            raise ReactomoError(
                f"The file {path} is truncated: it holds {st.st_size} bytes but its header describes image data up "
                f"to byte {expected_end}; copy or export it again."
            )
        photometric = getattr(tif.pages.first, "photometric", None)
        rgb = "S" in series.axes or photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
        if len(tif.series) > 1:
            log.warning("%s holds %d image series; only the first (shape %s) is used.", path, len(tif.series), shape)
        return _Tiff(path, tif, series, shape, series.axes, dtype, bool(rgb), dataoffset)
    except BaseException as exc:
        if tif is not None:
            tif.close()
        if isinstance(exc, ReactomoError) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, tifffile.TiffFileError) and ("not a TIFF" in str(exc) or st.st_size < 8):
            raise ReactomoError(
                f"The file {path} is not a TIFF file (it looks like {_sniff(path)}); save the scan as a TIFF "
                "(e.g. in Fiji: File > Save As > Tiff) and open it again."
            ) from None
        raise (_truncated(path, messages) or _read_error(path, exc)) from None


def _check_volume_header(t: _Tiff, *, ndim: int) -> None:
    """Refuse colour images, wrong dimensionality and unsupported dtypes (``ndim`` = 3 for stacks, 2 for slices)."""
    if t.rgb:
        n = t.shape[t.axes.index("S")] if "S" in t.axes and len(t.axes) == len(t.shape) else 3
        raise ReactomoError(
            f"The file {t.path} is a colour image with {n} channels per pixel (shape {_shape_text(t.shape)}); "
            "convert it to greyscale (e.g. in Fiji: Image > Type > 16-bit) and save it again."
        )
    if len(t.shape) != ndim:
        if ndim == 3 and len(t.shape) == 2:
            raise ReactomoError(
                f"The file {t.path} holds one 2D image of shape {_shape_text(t.shape)}, not a 3D volume; put the 2D "
                "slices of each time step in one folder and open the folder (or save the scan as one multi-page TIFF)."
            )
        if ndim == 2 and len(t.shape) == 3:
            raise ReactomoError(
                f"The file {t.path} holds a 3D volume of shape {_shape_text(t.shape)}, not a 2D slice; open each "
                "multi-page TIFF as its own time step instead of as a folder of slices."
            )
        raise ReactomoError(
            f"The file {t.path} holds a {len(t.shape)}D image with axes {t.axes} and shape {_shape_text(t.shape)}; "
            f"Reactomo expects one greyscale {'volume (z, y, x)' if ndim == 3 else 'slice (y, x)'} per file, so save "
            "each time step (and channel) as its own file."
        )
    if any(v <= 0 for v in t.shape):
        raise ReactomoError(
            f"The file {t.path} holds an empty image of shape {_shape_text(t.shape)}; export the scan "
            "again."
        )
    if t.dtype is None or t.dtype.name not in SUPPORTED_DTYPES:
        got = "an unknown data type" if t.dtype is None else f"{t.dtype.name} data"
        raise ReactomoError(
            f"The file {t.path} holds {got}; Reactomo reads {_SUPPORTED_TEXT} scans, so convert it (e.g. in Fiji: "
            "Image > Type > 16-bit or 32-bit) and save it again."
        )


def _probe(path: Path) -> tuple[tuple[int, ...], str]:
    """Shape (2D or 3D) and dtype name of a TIFF file's first series after the colour/dtype checks; headers only."""
    t = _open_tiff(path)
    try:
        _check_volume_header(t, ndim=len(t.shape) if len(t.shape) in (2, 3) else 3)
        return t.shape, t.dtype.name  # type: ignore[union-attr]
    finally:
        t.close()


def _tiff_files(folder: Path) -> list[Path]:
    """The visible TIFF files directly inside ``folder``, in natural order."""
    try:
        entries = list(os.scandir(folder))
    except PermissionError:
        raise ReactomoError(
            f"The folder {folder} cannot be listed (permission denied); ask its owner to make it readable for the "
            "account running Reactomo."
        ) from None
    except OSError as exc:
        raise ReactomoError(
            f"The folder {folder} cannot be listed ({exc.strerror or exc}); check the disk or the network "
            "share."
        ) from None
    files = []
    for e in entries:
        if _is_hidden(e.name) or not _is_tiff_name(e.name):
            continue
        try:
            if e.is_file():
                files.append(Path(e.path))
        except OSError:
            continue
    return sorted(files, key=lambda p: natural_key(p.name))


def _subfolders(folder: Path) -> list[Path]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    dirs = []
    for e in entries:
        try:
            if not _is_hidden(e.name) and e.is_dir():
                dirs.append(Path(e.path))
        except OSError:
            continue
    return sorted(dirs, key=lambda p: natural_key(p.name))


def _voxel_size_from(tif: tifffile.TiffFile) -> float | None:
    """The voxel size in um written by :func:`write_volume` (tifffile shaped metadata), else ImageJ spacing in um."""
    try:
        meta = tif.shaped_metadata
        if meta and meta[0].get("voxel_size_um") is not None:
            v = float(meta[0]["voxel_size_um"])
            return v if np.isfinite(v) and v > 0 else None
        ij = tif.imagej_metadata
        if ij and str(ij.get("unit", "")).lower() in ("micron", "um", "µm", "\\u00b5m") and ij.get("spacing"):
            v = float(ij["spacing"])
            return v if np.isfinite(v) and v > 0 else None
    except Exception:  # metadata is a convenience; a broken description must not stop the scan from opening
        return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# ScanInfo and Volume
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanInfo:
    """One time step as discovered on disk.

    Attributes
    ----------
    path : str
        Absolute path: a multi-page TIFF file (kind ``"stack"``) or a folder of 2D TIFF slices (kind ``"slices"``).
    kind : {"stack", "slices"}
    name : str
        Step name: the file name without its TIFF suffix, or the folder name.
    shape : tuple of int
        ``(z, y, x)`` in voxels.
    dtype : str
        One of :data:`SUPPORTED_DTYPES`.
    """

    path: str
    kind: Literal["stack", "slices"]
    name: str
    shape: tuple[int, int, int]
    dtype: str

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ReactomoError(
                f"Scan kind {self.kind!r} is not known; use 'stack' (one multi-page TIFF) or 'slices' "
                "(a folder of 2D TIFFs)."
            )
        shape = self.shape
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) != 3 or not all(
            _is_int(v) and int(v) > 0 for v in shape
        ):
            raise ReactomoError(f"Scan shape {shape!r} is not a (z, y, x) triple of positive integers; give three sizes.")
        object.__setattr__(self, "shape", tuple(int(v) for v in shape))
        object.__setattr__(self, "path", os.fspath(self.path))

    def to_dict(self) -> dict:
        """JSON-ready fields: ``{"path", "kind", "name", "shape" (list of 3 ints), "dtype"}``."""
        return {"path": self.path, "kind": self.kind, "name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScanInfo:
        """Inverse of :meth:`to_dict`; extra keys are ignored, missing ones are an error."""
        if not isinstance(d, Mapping):
            raise ReactomoError(
                "A scan record must be a mapping with path, kind, name, shape and dtype; got "
                f"{type(d).__name__}."
            )
        missing = [k for k in ("path", "kind", "name", "shape", "dtype") if k not in d]
        if missing:
            raise ReactomoError(f"The scan record lacks {', '.join(missing)}; give path, kind, name, shape and dtype.")
        return cls(
            path=str(d["path"]), kind=d["kind"], name=str(d["name"]), shape=tuple(d["shape"]), dtype=str(d["dtype"])
        )


class Volume:
    """A lazy, read-only view of one scan; use as a context manager or call :meth:`close`.

    Nothing but headers is read on opening. Uncompressed contiguous stacks are memory-mapped, so a slice in any
    orientation reads only the bytes it needs; compressed stacks are decoded one page per z slice; folders of
    slices read one file per z slice. Returned arrays are new, writeable, native-byte-order arrays.

    Attributes
    ----------
    path : Path
        The TIFF file (``"stack"``) or folder of slices (``"slices"``).
    kind : {"stack", "slices"}
    name : str
        File name without TIFF suffix, or folder name.
    shape : tuple of int
        ``(z, y, x)`` in voxels.
    dtype : numpy.dtype
        ``uint8``, ``uint16`` or ``float32``.
    nbytes : int
        Size of the whole volume in memory, in bytes.
    voxel_size_um : float or None
        Voxel size stored in the file (by :func:`write_volume`, or ImageJ spacing in microns); None if unknown.
    is_memmapped : bool
        True when slices are strided reads of a memory map (uncompressed contiguous stack).

    Parameters
    ----------
    path : str or Path
    kind : {"stack", "slices"}, optional
        Default: ``"slices"`` for a folder, ``"stack"`` for a file.
    """

    def __init__(self, path: str | os.PathLike, *, kind: str | None = None) -> None:
        path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        if kind is None:
            st = _check_path_kind(path)
            kind = "slices" if stat.S_ISDIR(st.st_mode) else "stack"
        if kind not in _KINDS:
            hint = difflib.get_close_matches(str(kind), _KINDS, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ReactomoError(
                f"Scan kind {kind!r} is not known{extra}; use 'stack' (one multi-page TIFF) or 'slices' (a folder of "
                "2D TIFFs)."
            )
        self.path: Path = path
        self.kind: Literal["stack", "slices"] = kind  # type: ignore[assignment]
        self.name: str = path.name if kind == "slices" else _stem(path)
        self.voxel_size_um: float | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._tiff: _Tiff | None = None
        self._mm: np.memmap | None = None
        self._files: list[Path] = []
        if kind == "stack":
            self._open_stack()
        else:
            self._open_slices()
        self.nbytes: int = int(np.prod(self.shape)) * self.dtype.itemsize
        log.debug(
            "opened %s volume %s shape=%s dtype=%s memmap=%s", kind, path, self.shape, self.dtype, self.is_memmapped
        )

    # -- opening -----------------------------------------------------------------------------------------------
    def _open_stack(self) -> None:
        t = _open_tiff(self.path)
        try:
            _check_volume_header(t, ndim=3)
            self.shape: tuple[int, int, int] = t.shape  # type: ignore[assignment]
            self.dtype: np.dtype = t.dtype  # type: ignore[assignment]
            self.voxel_size_um = _voxel_size_from(t.tif)
            if t.dataoffset is not None:
                with _reading(self.path):
                    self._mm = np.memmap(
                        self.path,
                        dtype=np.dtype(t.tif.byteorder + self.dtype.char),
                        mode="r",
                        offset=int(t.dataoffset),
                        shape=self.shape,
                    )
                t.close()  # the memory map holds its own handle
            else:
                self._tiff = t
        except BaseException:
            t.close()
            raise

    def _open_slices(self) -> None:
        _check_path_kind(self.path, want="dir")
        files = _tiff_files(self.path)
        if not files:
            raise ReactomoError(
                f"The folder {self.path} holds no TIFF files (.tif/.tiff); give a folder of 2D TIFF slices."
            )
        t = _open_tiff(files[0])
        try:
            _check_volume_header(t, ndim=2)
            self.voxel_size_um = _voxel_size_from(t.tif)
        finally:
            t.close()
        self._files = files
        self._slice_shape: tuple[int, int] = t.shape  # type: ignore[assignment]
        self.shape = (len(files), *t.shape)  # type: ignore[assignment]
        self.dtype = t.dtype  # type: ignore[assignment]

    # -- context manager and basics ----------------------------------------------------------------------------
    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("memmap" if self.is_memmapped else "paged")
        return f"Volume({str(self.path)!r}, kind={self.kind!r}, shape={self.shape}, dtype={self.dtype.name}, {state})"

    @property
    def is_memmapped(self) -> bool:
        """True when slices are strided reads of a memory map."""
        return self._mm is not None

    def close(self) -> None:
        """Release the file handle or memory map; further reads raise :class:`ReactomoError`. Idempotent."""
        self._closed = True
        self._mm = None
        if self._tiff is not None:
            with self._lock:
                self._tiff.close()
            self._tiff = None

    def _check_open(self) -> None:
        if self._closed:
            raise ReactomoError(
                f"The volume {self.path} has been closed; open it again with open_volume before "
                "reading."
            )

    # -- reading -----------------------------------------------------------------------------------------------
    def _block(self, z0: int, z1: int, ysel: int | slice, xsel: int | slice) -> np.ndarray:
        """Voxels ``[z0:z1, ysel, xsel]`` as a new native array (integer selectors drop their axis)."""
        self._check_open()
        if self._mm is not None:
            with _reading(self.path):
                return np.array(self._mm[z0:z1, ysel, xsel], dtype=self.dtype)
        out: np.ndarray | None = None
        for i, z in enumerate(range(z0, z1)):
            part = self._page(z, full=isinstance(ysel, slice) and isinstance(xsel, slice), ysel=ysel, xsel=xsel)
            if out is None:
                out = np.empty((z1 - z0, *part.shape), dtype=self.dtype)
            out[i] = part
        assert out is not None
        return out

    def _page(self, z: int, *, full: bool, ysel: int | slice, xsel: int | slice) -> np.ndarray:
        if self.kind == "stack":
            assert self._tiff is not None
            if isinstance(ysel, int):
                row = self._strip_row(z, ysel)
                if row is not None:
                    return row[xsel]
            with self._lock, _reading(self.path):
                page = self._tiff.series[z].asarray()
            if page.shape != self.shape[1:]:
                raise ReactomoError(
                    f"Page {z} of {self.path} has shape {_shape_text(page.shape)} but the volume's slices are "
                    f"{_shape_text(self.shape[1:])}; export the scan again with equal-sized slices."
                )
            return page[ysel, xsel]
        return _read_slice_file(self._files[z], self._slice_shape, self.dtype, self._files[0], ysel, xsel, whole=full)

    def _strip_row(self, z: int, y: int) -> np.ndarray | None:
        """Row ``y`` of page ``z`` decoded from its strip alone (an XZ slice of a compressed stack then decodes
        ~1/n_strips of each page); None when the page is not simply stripped, so the caller decodes it whole."""
        assert self._tiff is not None
        ny, nx = self.shape[1:]
        with self._lock, _reading(self.path):
            page = self._tiff.series[z]
            key = getattr(page, "keyframe", None) or page
            rps = int(getattr(key, "rowsperstrip", 0) or 0)
            if key.is_tiled or not 0 < rps < ny or len(page.dataoffsets) != -(-ny // rps):
                return None
            if getattr(key, "samplesperpixel", 1) != 1:
                return None
            i = y // rps
            fh = self._tiff.tif.filehandle
            fh.seek(int(page.dataoffsets[i]))
            data = fh.read(int(page.databytecounts[i]))
            segment = key.decode(data, i, jpegtables=getattr(key, "jpegtables", None))[0]
        if segment is None or segment.size % nx:
            return None
        rows = segment.reshape(-1, nx)
        return np.asarray(rows[y - i * rps], dtype=self.dtype) if y - i * rps < len(rows) else None

    def slice(self, axis: int, index: int) -> np.ndarray:
        """One 2D slice through the volume.

        Parameters
        ----------
        axis : {0, 1, 2}
            0: XY slice at z = index, shape ``(y, x)``; 1: XZ slice at y = index, shape ``(z, x)``;
            2: YZ slice at x = index, shape ``(z, y)``.
        index : int
            Position along ``axis``, from 0 to ``shape[axis] - 1``.

        Returns
        -------
        ndarray, 2D, of :attr:`dtype`

        Raises
        ------
        ReactomoError
            If ``axis`` or ``index`` is out of range, or the file cannot be decoded.
        """
        if not _is_int(axis) or int(axis) not in _AXIS_NAMES:
            raise ReactomoError(
                f"Axis {axis!r} does not exist; use 0 (XY slice at a z), 1 (XZ slice at a y) or 2 (YZ slice at an "
                "x)."
            )
        axis = int(axis)
        n = self.shape[axis]
        if not _is_int(index) or not 0 <= int(index) < n:
            raise ReactomoError(
                f"Slice index {index!r} is outside {self.name} along axis {axis} ({_AXIS_NAMES[axis]}), which has "
                f"{n} slices; give an index from 0 to {n - 1}."
            )
        index = int(index)
        if axis == 0:
            return self._block(index, index + 1, slice(None), slice(None))[0]
        if axis == 1:
            return self._block(0, self.shape[0], index, slice(None))
        return self._block(0, self.shape[0], slice(None), index)

    def slab(self, z0: int, z1: int) -> np.ndarray:
        """XY slices ``z0`` (inclusive) to ``z1`` (exclusive), shape ``(z1 - z0, y, x)``, of :attr:`dtype`.

        Raises
        ------
        ReactomoError
            Unless ``0 <= z0 < z1 <= shape[0]``.
        """
        nz = self.shape[0]
        if not (_is_int(z0) and _is_int(z1) and 0 <= int(z0) < int(z1) <= nz):
            raise ReactomoError(
                f"The slab z0={z0!r}, z1={z1!r} is not inside {self.name}, which has {nz} slices; give integers with "
                f"0 <= z0 < z1 <= {nz}."
            )
        return self._block(int(z0), int(z1), slice(None), slice(None))

    def block(self, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Voxels ``[z0:z1, y0:y1, x0:x1]`` (end exclusive) as a new array of :attr:`dtype`; only those pages are read.

        Raises
        ------
        ReactomoError
            Unless every range is inside the volume and not empty.
        """
        bounds = (z0, z1, y0, y1, x0, x1)
        if not all(_is_int(v) for v in bounds) or not all(
                0 <= int(lo) < int(hi) <= n for lo, hi, n in zip(bounds[0::2], bounds[1::2], self.shape)):
            raise ReactomoError(f"The block {list(bounds)} is not inside {self.name}, whose shape is "
                                f"{'x'.join(map(str, self.shape))} (z, y, x); give ranges inside it.")
        return self._block(int(z0), int(z1), slice(int(y0), int(y1)), slice(int(x0), int(x1)))

    def read(self) -> np.ndarray:
        """The whole volume, shape ``(z, y, x)``, of :attr:`dtype` (needs :attr:`nbytes` of memory)."""
        self._check_open()
        if self._tiff is not None:
            with self._lock, _reading(self.path):
                data = self._tiff.series.asarray()
            if data.shape != self.shape:
                raise ReactomoError(
                    f"The file {self.path} decoded to shape {_shape_text(data.shape)} instead of "
                    f"{_shape_text(self.shape)}; it is truncated or corrupt, so copy or export it again."
                )
            return np.asarray(data, dtype=self.dtype)
        return self._block(0, self.shape[0], slice(None), slice(None))

    def sample(self, *, max_voxels: int = 2_000_000, max_slices: int = 32, seed: int = 0) -> np.ndarray:
        """Voxel values for histograms and statistics, without reading the whole volume.

        Up to ``max_slices`` evenly spaced XY slices are read; from them at most ``max_voxels`` values are drawn at
        random (without replacement), spread evenly over the slices.

        Parameters
        ----------
        max_voxels : int
            Upper bound on the number of values returned (>= 1).
        max_slices : int
            Upper bound on the number of XY slices read (>= 1).
        seed : int
            Seed of the random subsampling; the same seed gives the same sample.

        Returns
        -------
        ndarray, 1D, of :attr:`dtype`
            At most ``max_voxels`` values (NaN and inf are kept as they are).
        """
        for name, value in (("max_voxels", max_voxels), ("max_slices", max_slices)):
            if not _is_int(value) or int(value) < 1:
                raise ReactomoError(f"{name} is {value!r}; give a positive integer.")
        nz, ny, nx = self.shape
        zs = _even_indices(nz, int(max_slices))
        per_slice = ny * nx
        total = min(int(max_voxels), per_slice * len(zs))
        quota = np.full(len(zs), total // len(zs), dtype=np.int64)
        quota[: total % len(zs)] += 1
        rng = np.random.default_rng(seed)
        parts = []
        for z, q in zip(zs, quota):
            if q == 0:
                continue
            values = self.slice(0, int(z)).ravel()
            parts.append(values if q >= values.size else values[rng.choice(values.size, size=int(q), replace=False)])
        return np.concatenate(parts) if parts else np.empty(0, dtype=self.dtype)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(TIFF_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return path.stem or name


def _even_indices(n: int, k: int) -> np.ndarray:
    """Up to ``k`` distinct evenly spaced integers in ``[0, n)``, always including both ends when ``k >= 2``."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def _read_slice_file(
    path: Path,
    shape: tuple[int, int],
    dtype: np.dtype,
    first: Path,
    ysel: int | slice,
    xsel: int | slice,
    *,
    whole: bool,
) -> np.ndarray:
    """``[ysel, xsel]`` of one 2D slice file, checked against the step's slice shape and dtype."""
    t = _open_tiff(path)
    try:
        if t.rgb or len(t.shape) != 2:
            _check_volume_header(t, ndim=2)
        if t.shape != shape:
            raise ReactomoError(
                f"The slice {path} has shape {_shape_text(t.shape)} but the first slice {first.name} has shape "
                f"{_shape_text(shape)}; all slices of a step must have the same size."
            )
        if t.dtype != dtype:
            got = t.dtype.name if t.dtype is not None else "an unknown type"
            raise ReactomoError(
                f"The slice {path} holds {got} data but the first slice {first.name} holds {dtype.name}; all slices "
                "of a step must have the same data type."
            )
        with _reading(path):
            if t.dataoffset is not None and not whole:
                # Only the bytes of one row or column are touched.
                mm = np.memmap(
                    path, dtype=np.dtype(t.tif.byteorder + dtype.char), mode="r", offset=int(t.dataoffset), shape=shape
                )
                return np.array(mm[ysel, xsel], dtype=dtype)
            page = t.series.asarray()
        if page.shape != shape:
            raise _read_error(path, ValueError(f"decoded shape {page.shape} differs from the header's {shape}"))
        return np.asarray(page[ysel, xsel], dtype=dtype)
    finally:
        t.close()


def open_volume(path: str | os.PathLike, *, kind: str | None = None) -> Volume:
    """Open one scan lazily (headers only).

    Parameters
    ----------
    path : str or Path
        A multi-page TIFF file or a folder of 2D TIFF slices.
    kind : {"stack", "slices"}, optional
        Default: ``"slices"`` for a folder, ``"stack"`` for a file.

    Returns
    -------
    Volume
        Close it (or use ``with``) when done.

    Raises
    ------
    ReactomoError
        If the path does not exist, is not a (readable, complete) TIFF, is colour, is not 3D, or has an unsupported
        data type.
    """
    return Volume(path, kind=kind)


def read_tiff_volume(path: str | os.PathLike) -> np.ndarray:
    """Read a whole scan into memory: ``open_volume(path).read()``, shape ``(z, y, x)``."""
    with open_volume(path) as vol:
        return vol.read()


# ---------------------------------------------------------------------------------------------------------------
# Discovery of time steps
# ---------------------------------------------------------------------------------------------------------------
def check_inside_roots(path: str | os.PathLike, allowed_roots: Sequence[str | os.PathLike] | None) -> Path:
    """Resolve ``path`` (symbolic links and ``..``) and refuse it unless it lies inside one of ``allowed_roots``.

    Parameters
    ----------
    path : str or Path
    allowed_roots : sequence of paths, or None
        None means no restriction; an empty sequence allows nothing.

    Returns
    -------
    Path
        The resolved absolute path.

    Raises
    ------
    ReactomoError
        If the resolved path is outside every root.
    """
    given = os.path.expanduser(os.fspath(path))
    resolved = Path(given).resolve(strict=False)
    if allowed_roots is None:
        return resolved
    if isinstance(allowed_roots, (str, os.PathLike)):
        allowed_roots = [allowed_roots]
    roots = [Path(os.path.expanduser(os.fspath(r))).resolve(strict=False) for r in allowed_roots]
    if not roots:
        raise ReactomoError(
            f"No data root is configured, so the path {given} cannot be opened; ask the administrator to set "
            "REACTOMO_DATA_ROOT."
        )
    if any(resolved == r or resolved.is_relative_to(r) for r in roots):
        return resolved
    shown = given if str(resolved) == given else f"{given} (which resolves to {resolved})"
    raise ReactomoError(
        f"The path {shown} is outside the allowed data root(s) {', '.join(str(r) for r in roots)}; ask the "
        "administrator to add it to REACTOMO_DATA_ROOT."
    )


def _stack_step(given: Path, real: Path, shape: tuple[int, ...], dtype: str) -> ScanInfo:
    if len(shape) == 2:
        raise ReactomoError(
            f"The file {given} holds one 2D image of shape {_shape_text(shape)}, not a 3D volume; put the 2D slices of "
            "each time step in one folder and open the folder (or save the scan as one multi-page TIFF)."
        )
    return ScanInfo(path=str(real), kind="stack", name=_stem(given), shape=shape, dtype=dtype)  # type: ignore[arg-type]


def _slices_step(given: Path, real: Path, files: list[Path], allowed_roots: Sequence | None) -> ScanInfo:
    """One "slices" step: a sample of headers (both ends included) is checked, so a mixed-up folder is caught
    without opening thousands of files; any other odd file is reported, by name, when it is read."""
    if allowed_roots is not None:
        for f in files:
            check_inside_roots(f, allowed_roots)
    first = files[0]
    first_shape, first_dtype = _probe(first)
    for i in _even_indices(len(files), 16)[1:]:
        f = files[int(i)]
        shape, dtype = _probe(f)
        if len(shape) != len(first_shape):
            three, two = (f, first) if len(shape) == 3 else (first, f)
            raise ReactomoError(
                f"The folder {given} mixes 3D volumes (e.g. {three.name}) with 2D slices (e.g. {two.name}); put the "
                "multi-page TIFFs and the folders of slices in separate places."
            )
        if shape != first_shape or dtype != first_dtype:
            raise ReactomoError(
                f"The slice {f} is {_shape_text(shape)} {dtype} but the first slice {first.name} is "
                f"{_shape_text(first_shape)} {first_dtype}; all slices of a step must have the same size and type."
            )
    if len(first_shape) == 3:
        raise ReactomoError(
            f"The folder {given} holds 3D volumes (e.g. {first.name}), not 2D slices; give the folder that holds "
            "them, or a glob of the TIFF files, so that each file is one time step."
        )
    return ScanInfo(
        path=str(real), kind="slices", name=given.name or real.name, shape=(len(files), *first_shape), dtype=first_dtype
    )  # type: ignore[arg-type]


def _folder_steps(given: Path, real: Path, allowed_roots: Sequence | None) -> list[ScanInfo]:
    files = _tiff_files(real)
    if files:
        first_shape, _ = _probe(files[0])
        if len(first_shape) == 2:
            return [_slices_step(given, real, files, allowed_roots)]
        steps = []
        for f in files:
            f_real = check_inside_roots(f, allowed_roots)
            shape, dtype = _probe(f_real)
            if len(shape) != 3:
                raise ReactomoError(
                    f"The folder {given} mixes 3D volumes (e.g. {files[0].name}) with 2D slices (e.g. {f.name}); "
                    "put the multi-page TIFFs and the folders of slices in separate places."
                )
            steps.append(_stack_step(f, f_real, shape, dtype))
        return steps
    subdirs = [(d, _tiff_files(d)) for d in _subfolders(real)]
    subdirs = [(d, fs) for d, fs in subdirs if fs]
    if not subdirs:
        raise ReactomoError(
            f"The folder {given} holds no TIFF files (.tif/.tiff) and no sub-folders of TIFF slices; give the "
            "folder that holds the scans."
        )
    return [_slices_step(d, check_inside_roots(d, allowed_roots), fs, allowed_roots) for d, fs in subdirs]


def series_scan_paths(source: str | os.PathLike, *, allowed_roots: Sequence[str | os.PathLike] | None = None) -> list[str]:
    """The steps of a series to segment, where a scan that cannot be read fails alone instead of refusing the series.

    Like :func:`discover_scans`, except for a folder of multi-page TIFFs in which some files cannot be read (a
    truncated header, a file still being copied): then every TIFF of the folder is a step, so the readable ones are
    segmented and each unreadable one fails with its own sentence. Every other problem (and a folder in which no
    file, or every file, reads) is refused as :func:`discover_scans` refuses it.
    """
    try:
        return [s.path for s in discover_scans(source, allowed_roots=allowed_roots)]
    except ReactomoError as refused:
        text = os.path.expanduser(os.fspath(source).strip() if isinstance(source, str) else os.fspath(source))
        if _GLOB_CHARS.search(text) and not os.path.lexists(text):
            raise
        folder = Path(os.path.abspath(text))
        if not folder.is_dir():
            raise
        real = check_inside_roots(folder, allowed_roots)
        files = _tiff_files(real)
        shapes = []
        for f in files:
            try:
                shapes.append(_probe(check_inside_roots(f, allowed_roots))[0])
            except ReactomoError:
                continue
        if not shapes or len(shapes) == len(files) or any(len(sh) != 3 or sh != shapes[0] for sh in shapes):
            raise refused from None
        return [str(f) for f in files]


def _glob_steps(pattern: str, allowed_roots: Sequence | None) -> list[ScanInfo]:
    fixed = pattern[: _GLOB_CHARS.search(pattern).start()]  # type: ignore[union-attr]
    check_inside_roots(os.path.dirname(fixed) or ".", allowed_roots)
    matches = sorted(glob.glob(pattern), key=natural_key)
    if not matches:
        raise ReactomoError(
            f"The pattern {pattern} matches no files or folders; check the folder and the pattern (e.g. "
            "/data/exp1/*.tif)."
        )
    steps = []
    for m in matches:
        given = Path(os.path.abspath(m))
        real = check_inside_roots(m, allowed_roots)
        if os.path.isdir(real):
            files = _tiff_files(real)
            if not files:
                log.info("skipping %s: no TIFF files inside", given)
                continue
            steps.append(_slices_step(given, real, files, allowed_roots))
        elif os.path.isfile(real) and _is_tiff_name(m):
            shape, dtype = _probe(real)
            if len(shape) == 2:
                raise ReactomoError(
                    f"The pattern {pattern} matches {given}, which holds one 2D image of shape {_shape_text(shape)}, "
                    "not a 3D volume; to open a folder of 2D slices as one step, give the folder itself."
                )
            steps.append(_stack_step(given, real, shape, dtype))
        else:
            log.info("skipping %s: not a TIFF file or a folder", given)
    if not steps:
        raise ReactomoError(
            f"The pattern {pattern} matches {len(matches)} path(s) but no TIFF files (.tif/.tiff) or folders of "
            "TIFF slices; change the pattern."
        )
    return steps


def discover_scans(
    source: str | os.PathLike,
    *,
    allowed_roots: Sequence[str | os.PathLike] | None = None,
) -> list[ScanInfo]:
    """Find the time steps at ``source``, one :class:`ScanInfo` each, in natural order (``t2`` before ``t10``).

    ===============================================  ===========================================================
    ``source``                                       steps
    ===============================================  ===========================================================
    a TIFF file                                      one ``"stack"`` step
    a glob (``*``, ``?``, ``[``)                     each match: a multi-page TIFF or a folder of 2D slices
    a folder of multi-page (3D) TIFFs                each file is a ``"stack"`` step
    a folder of single-page (2D) TIFFs               the folder is one ``"slices"`` step
    a folder of sub-folders of 2D TIFFs              each sub-folder is a ``"slices"`` step
    ===============================================  ===========================================================

    Only headers are read. Hidden files (names starting with ``.``) are ignored.

    Parameters
    ----------
    source : str or Path
    allowed_roots : sequence of paths, optional
        When given, the resolved source and every step (symbolic links and ``..`` resolved) must lie inside one
        of these folders.

    Returns
    -------
    list of ScanInfo
        With absolute, resolved paths; all steps share one shape ``(z, y, x)`` and dtype.

    Raises
    ------
    ReactomoError
        For a missing, unreadable, out-of-root or non-TIFF source, colour, 2D-where-3D, unsupported-dtype or
        corrupt files, a folder without TIFFs, a mix of 2D and 3D files, or steps of different shape or dtype.
    """
    text = os.path.expanduser(os.fspath(source).strip() if isinstance(source, str) else os.fspath(source))
    if not text:
        raise ReactomoError("No scan path was given; enter a folder, a glob such as /data/exp1/*.tif, or a TIFF file.")
    if _GLOB_CHARS.search(text) and not os.path.lexists(text):
        steps = _glob_steps(text, allowed_roots)
    else:
        real = check_inside_roots(text, allowed_roots)
        given = Path(os.path.abspath(text))
        st = _check_path_kind(given)
        if stat.S_ISDIR(st.st_mode):
            steps = _folder_steps(given, real, allowed_roots)
        else:
            if not _is_tiff_name(text):
                raise ReactomoError(
                    f"The file {given} is not a TIFF file (.tif/.tiff); give a multi-page TIFF, a folder of TIFF "
                    "slices, or a glob such as /data/exp1/*.tif."
                )
            steps = [_stack_step(given, real, *_probe(real))]
    _make_names_unique(steps)
    first = steps[0]
    for s in steps[1:]:
        if s.shape != first.shape or s.dtype != first.dtype:
            raise ReactomoError(
                f"Step '{s.name}' is {_shape_text(s.shape)} {s.dtype} but step '{first.name}' is "
                f"{_shape_text(first.shape)} {first.dtype}; all time steps must have the same shape and data type."
            )
    log.info("discovered %d step(s) at %s: shape %s %s", len(steps), text, first.shape, first.dtype)
    return steps


def _make_names_unique(steps: list[ScanInfo]) -> None:
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.name] = counts.get(s.name, 0) + 1
    for i, s in enumerate(steps):
        if counts[s.name] > 1:
            steps[i] = ScanInfo(s.path, s.kind, f"{Path(s.path).parent.name}/{s.name}", s.shape, s.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Value checks and histograms
# ---------------------------------------------------------------------------------------------------------------
def check_volume_values(volume: Volume, *, max_slices: int = 64) -> None:
    """Refuse a scan whose values cannot be a measurement, looking at up to ``max_slices`` evenly spaced XY slices.

    Parameters
    ----------
    volume : Volume
    max_slices : int
        Number of XY slices inspected (all of them when the scan has fewer).

    Raises
    ------
    ReactomoError
        If a float scan holds NaN or infinite values, or every inspected voxel has the same value.
    """
    if not _is_int(max_slices) or int(max_slices) < 1:
        raise ReactomoError(f"max_slices is {max_slices!r}; give a positive integer.")
    lo, hi = np.inf, -np.inf
    is_float = np.issubdtype(volume.dtype, np.floating)
    for z in _even_indices(volume.shape[0], int(max_slices)):
        img = volume.slice(0, int(z))
        if is_float:
            n_nan = int(np.count_nonzero(np.isnan(img)))
            if n_nan:
                raise ReactomoError(
                    f"The scan '{volume.name}' holds NaN values ({n_nan} in slice z={int(z)}); replace them with a "
                    "number (e.g. 0) when reconstructing or exporting, and open it again."
                )
            n_inf = int(np.count_nonzero(np.isinf(img)))
            if n_inf:
                raise ReactomoError(
                    f"The scan '{volume.name}' holds infinite values ({n_inf} in slice z={int(z)}); clip or replace "
                    "them when reconstructing or exporting, and open it again."
                )
        lo = min(lo, float(img.min()))
        hi = max(hi, float(img.max()))
    if lo == hi:
        raise ReactomoError(
            f"In the scan '{volume.name}' every voxel is {_value_text(lo)}; this is not a scan, so check that the "
            "reconstruction finished and that the right file was chosen."
        )


def grey_histograms(
    volumes: Sequence[Volume],
    *,
    bins: int = 256,
    value_range: tuple[float, float] | None = None,
    max_voxels_per_step: int = 1_000_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Grey-value histograms of several steps on one shared axis, from a sample of each (see :meth:`Volume.sample`).

    Parameters
    ----------
    volumes : sequence of Volume
        One per time step.
    bins : int
        Number of bins (>= 1).
    value_range : (float, float), optional
        ``(low, high)`` grey values of the outer bin edges. Default: the 0.01 and 99.99 percentiles of all steps'
        samples pooled, so every step shares one x axis and rare outliers do not squash the plot.
    max_voxels_per_step : int
        Sample size per step.
    seed : int
        Step ``i`` is sampled with seed ``seed + i``.

    Returns
    -------
    edges : ndarray, shape (bins + 1,), float64
        Bin edges in grey values.
    counts : ndarray, shape (n_steps, bins), float64
        Fraction of each step's in-range, finite samples in each bin; each row sums to 1 (a row of zeros when a
        step has no value inside the range). Values outside the range and NaN/inf are left out.
    """
    if len(volumes) == 0:
        raise ReactomoError("No volumes were given for the histograms; open at least one time step.")
    if not _is_int(bins) or int(bins) < 1:
        raise ReactomoError(f"bins is {bins!r}; give a positive integer such as 256.")
    if value_range is not None:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError):
            raise ReactomoError(
                f"value_range is {value_range!r}; give two numbers (low, high) with low < "
                "high."
            ) from None
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ReactomoError(f"value_range is {value_range!r}; give two finite numbers (low, high) with low < high.")
    samples = []
    for i, vol in enumerate(volumes):
        s = vol.sample(max_voxels=max_voxels_per_step, seed=seed + i)
        if np.issubdtype(s.dtype, np.floating):
            s = s[np.isfinite(s)]
        samples.append(s)
    if value_range is None:
        pooled = _pooled_subsample(samples, limit=4_000_000, seed=seed)
        if pooled.size == 0:
            raise ReactomoError(
                "The volumes hold no finite grey values, so no histogram can be drawn; check the "
                "scans."
            )
        lo, hi = (float(v) for v in np.percentile(pooled, [0.01, 99.99]))
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        else:  # a margin, so the peaks of rare phases at either end are drawn whole
            pad = 0.05 * (hi - lo)
            lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, int(bins) + 1)
    counts = np.zeros((len(volumes), int(bins)), dtype=np.float64)
    for i, s in enumerate(samples):
        h, _ = np.histogram(s, bins=edges)
        total = h.sum()
        if total:
            counts[i] = h / total
        else:
            log.warning("step %d has no grey values inside [%g, %g]", i, lo, hi)
    return edges, counts


def _pooled_subsample(samples: list[np.ndarray], *, limit: int, seed: int) -> np.ndarray:
    """All samples concatenated as float64, randomly thinned so no more than ``limit`` values are kept."""
    total = sum(s.size for s in samples)
    if total <= limit:
        return np.concatenate([s.astype(np.float64) for s in samples]) if samples else np.empty(0)
    rng = np.random.default_rng(seed)
    frac = limit / total
    parts = []
    for s in samples:
        k = int(s.size * frac)
        if k:
            parts.append(s[rng.choice(s.size, size=k, replace=False)].astype(np.float64))
    return np.concatenate(parts) if parts else np.empty(0)


# ---------------------------------------------------------------------------------------------------------------
# Writing volumes and labels
# ---------------------------------------------------------------------------------------------------------------
def _check_tiff_target(path: str | os.PathLike, what: str) -> Path:
    p = Path(os.path.expanduser(os.fspath(path)))
    if not _is_tiff_name(p):
        raise ReactomoError(
            f"The {what} file name {p.name!r} does not end in .tif or .tiff; give a TIFF file name such as "
            "t000.tif."
        )
    if p.is_dir():
        raise ReactomoError(
            f"The {what} path {p} is a folder; give a TIFF file name inside it, such as "
            f"{p / 't000.tif'}."
        )
    return p


def _check_voxel_size(voxel_size_um: float | None) -> float | None:
    if voxel_size_um is None:
        return None
    try:
        v = float(voxel_size_um)
    except (TypeError, ValueError):
        v = float("nan")
    if not (np.isfinite(v) and v > 0):
        raise ReactomoError(f"The voxel size is {voxel_size_um!r}; give a positive number of micrometres such as 2.75.")
    return v


def _write_tiff(path: Path, data: np.ndarray, *, voxel_size_um: float | None, compression: str | None) -> Path:
    metadata: dict[str, Any] = {"axes": "ZYX"}
    kwargs: dict[str, Any] = {}
    if voxel_size_um is not None:
        metadata["voxel_size_um"] = voxel_size_um
        # TIFF resolution is pixels per unit; centimetre is the finest standard unit.
        kwargs.update(resolution=(1e4 / voxel_size_um, 1e4 / voxel_size_um), resolutionunit="CENTIMETER")
    if compression is not None:
        kwargs["compression"] = compression

    def writer(tmp: Path) -> None:
        tifffile.imwrite(tmp, data, photometric="minisblack", metadata=metadata, **kwargs)

    try:
        return atomic_write_with(path, writer)
    except OSError as exc:
        raise ReactomoError(
            f"The file {path} could not be written ({exc.strerror or exc}); check the folder exists, is writable "
            "and has free space."
        ) from None


def write_volume(
    path: str | os.PathLike,
    volume: np.ndarray,
    *,
    voxel_size_um: float | None = None,
    compression: str | None = None,
) -> Path:
    """Write a volume atomically as a multi-page TIFF, one page per z slice.

    Uncompressed files are contiguous, so :func:`open_volume` memory-maps them (fast slices in every orientation).

    Parameters
    ----------
    path : str or Path
        Destination ending in ``.tif``/``.tiff``; its folder is created if missing.
    volume : ndarray, shape (z, y, x), uint8, uint16 or float32
        Not modified.
    voxel_size_um : float, optional
        Voxel edge length in micrometres, stored in the file's metadata and resolution tags.
    compression : {None, "zlib", "zstd", "lzw"}
        None (default) writes uncompressed, memory-mappable data.

    Returns
    -------
    Path
    """
    p = _check_tiff_target(path, "volume")
    if not isinstance(volume, np.ndarray):
        raise ReactomoError(f"The volume must be a numpy array of shape (z, y, x); got {type(volume).__name__}.")
    if volume.ndim != 3 or volume.size == 0:
        raise ReactomoError(f"The volume has shape {_shape_text(volume.shape)}; give a non-empty 3D array (z, y, x).")
    if volume.dtype.name not in SUPPORTED_DTYPES:
        raise ReactomoError(
            f"The volume has dtype {volume.dtype.name}; give {_SUPPORTED_TEXT} data (e.g. volume.astype(np.uint16) "
            "after rescaling)."
        )
    if compression not in COMPRESSIONS:
        options = [c for c in COMPRESSIONS if c]
        hint = difflib.get_close_matches(str(compression), options, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ReactomoError(
            f"Compression {compression!r} is not supported{extra}; use None (uncompressed) or one of "
            f"{', '.join(options)}."
        )
    vs = _check_voxel_size(voxel_size_um)
    data = np.ascontiguousarray(volume)
    out = _write_tiff(p, data, voxel_size_um=vs, compression=compression)
    log.debug("wrote %s %s %s compression=%s", out, data.shape, data.dtype, compression)
    return out


def write_labels(path: str | os.PathLike, labels: np.ndarray, *, voxel_size_um: float | None = None) -> Path:
    """Write a label volume atomically as a zlib-compressed multi-page uint8 TIFF.

    Parameters
    ----------
    path : str or Path
        Destination ending in ``.tif``/``.tiff``.
    labels : ndarray, shape (z, y, x), uint8
        Phase codes (0 = unlabelled). Other dtypes are refused rather than silently cast.
    voxel_size_um : float, optional
        Voxel edge length in micrometres.

    Returns
    -------
    Path
    """
    p = _check_tiff_target(path, "labels")
    if not isinstance(labels, np.ndarray):
        raise ReactomoError(f"Labels must be a numpy uint8 array of shape (z, y, x); got {type(labels).__name__}.")
    if labels.dtype != np.uint8:
        raise ReactomoError(
            f"Labels must be uint8 phase codes; got {labels.dtype.name}, so convert with labels.astype(np.uint8) "
            "after checking every code is between 0 and 255."
        )
    if labels.ndim != 3 or labels.size == 0:
        raise ReactomoError(
            f"Labels must be a non-empty 3D array (z, y, x); got shape {_shape_text(labels.shape)} (add an axis with "
            "labels[np.newaxis] for a single slice)."
        )
    vs = _check_voxel_size(voxel_size_um)
    return _write_tiff(p, np.ascontiguousarray(labels), voxel_size_um=vs, compression="zlib")


def read_labels(
    path: str | os.PathLike,
    *,
    shape: tuple[int, int, int] | None = None,
    codes: Sequence[int] | None = None,
) -> np.ndarray:
    """Read a label volume written by :func:`write_labels` (or any uint8 3D TIFF) and check it.

    Parameters
    ----------
    path : str or Path
    shape : (int, int, int), optional
        The scan's ``(z, y, x)`` shape the labels must have.
    codes : sequence of int, optional
        The phase codes of the phase table; every voxel must be 0 or one of them.

    Returns
    -------
    ndarray, shape (z, y, x), uint8

    Raises
    ------
    ReactomoError
        If the file is not a uint8 3D TIFF, has another shape, or holds codes outside ``codes``.
    """
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    t = _open_tiff(p)
    try:
        if not t.rgb and len(t.shape) == 2:
            raise ReactomoError(
                f"The labels file {p} holds one 2D image of shape {_shape_text(t.shape)}; labels are a 3D volume "
                "(z, y, x): save them as one multi-page TIFF with a page per slice (the Label page's download is one)."
            )
        if not t.rgb and len(t.shape) == 3 and (t.dtype is None or t.dtype != np.uint8):
            got = t.dtype.name if t.dtype is not None else "an unknown type"
            raise ReactomoError(
                f"The labels file {p} holds {got} data; labels are 8-bit phase codes: save them as 8-bit (in Fiji, "
                "Image > Type > 8-bit without scaling)."
            )
    finally:
        t.close()
    with open_volume(p, kind="stack") as vol:
        labels = vol.read()
    if shape is not None and tuple(int(v) for v in shape) != labels.shape:
        raise ReactomoError(
            f"The labels file {p} has shape {_shape_text(labels.shape)} but the scan has shape "
            f"{_shape_text(shape)}; use labels made for this scan."
        )
    if codes is not None:
        allowed = {0, *(int(c) for c in codes)}
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
        bad = [int(v) for v in present if int(v) not in allowed]
        if bad:
            listed = ", ".join(str(v) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
            table = ", ".join(str(c) for c in sorted(allowed - {0}))
            raise ReactomoError(
                f"The labels file {p} holds code(s) {listed} that are not in the phase table (0 = unlabelled, then "
                f"{table or 'none'}); relabel those voxels or add the phases to the table."
            )
    return labels
