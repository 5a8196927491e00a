"""The project store: a project is one folder in a workspace, and all of its state is one ``project.json``.

Layout of a workspace::

    <workspace>/
        <project name>/
            project.json        the manifest (schema 1), rewritten atomically on every change
            project.json.bak    a copy of the last good manifest, used if project.json is ever unreadable
            project.lock        the inter-process lock taken for every read-modify-write
            scans/              uploaded TIFFs (other scans stay where they are)
        .trash/                 deleted projects, moved here as ``<name>-<UTC timestamp>``

The workspace is ``<repo root>/workspace`` unless the environment variable ``REACTOMO_WORKSPACE`` or an explicit
``workspace=`` argument says otherwise. Nothing lives in memory between calls: every accessor reads the manifest
afresh and every mutator is a locked read-modify-write, so a page reload, a server restart or a second browser tab
loses nothing.

Manifest (schema 1)::

    {"schema": 1, "name": "...", "created": "ISO-8601 UTC", "updated": "...", "reactomo_version": "0.1.0",
     "voxel_size_um": 2.75, "interval_s": 60.0, "times_mode": "interval" | "explicit",
     "scans": [{"name": "t000", "path": "...", "kind": "stack", "shape": [z, y, x], "dtype": "uint16",
                "time_s": 0.0}],
     "phases": [...], "reaction": {...}, "roi": null | {"z": [z0, z1], "y": [y0, y1], "x": [x0, x1]},
     "demo": null | {...}, "rings": "remove" | "keep" (absent: "keep"), "labels": {}, "ground_truth": {}, "models": [], "segmentations": {}, "analysis": {}}

Paths inside the project folder are stored relative to it (so a project folder can be moved or shared), paths
outside it as absolute paths. ROI ranges are half-open voxel ranges ``[start, end)`` in ``(z, y, x)`` order.

Examples
--------
>>> p = create_project("gypsum run 3", workspace=tmp)        # doctest: +SKIP
>>> p.name                                                   # doctest: +SKIP
'gypsum_run_3'
>>> p.set_voxel_size(2.75)                                   # doctest: +SKIP
>>> [s.done for s in p.status()]                             # doctest: +SKIP
[False, False, False, False, False, False]
"""

from __future__ import annotations

import copy
import json
import logging
import math
import numbers
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from core.atomic import _try_lock, _unlock, atomic_write_text, move_to_trash  # the lock primitives: one copy
from core.errors import ReactomoError
from core.phases import DEFAULT_PHASES, DEFAULT_REACTION, PhaseTable, Reaction

if TYPE_CHECKING:  # core.imaging.io is imported lazily at run time so this module imports on its own
    from core.imaging.io import ScanInfo, Volume

__all__ = [
    "SCHEMA",
    "MANIFEST",
    "Project",
    "ProjectSummary",
    "StepStatus",
    "workspace_dir",
    "data_roots",
    "sanitize_name",
    "create_project",
    "open_project",
    "list_projects",
    "delete_project",
    "project_exists",
]

log = logging.getLogger(__name__)

SCHEMA = 1
MANIFEST = "project.json"
BACKUP = "project.json.bak"
LOCK = "project.lock"
TRASH = ".trash"
#: Bytes read at a time when an upload is streamed to disk.
UPLOAD_CHUNK = 8 * 1024 * 1024
SCANS_DIR = "scans"

ENV_WORKSPACE = "REACTOMO_WORKSPACE"
#: Free-text experiment conditions a project records for its report (the Data page, ``data --condition``).
CONDITION_FIELDS = ("sample", "temperature", "pressure", "stress", "beamline", "notes")
CONDITION_MAX = 300
ENV_DATA_ROOT = "REACTOMO_DATA_ROOT"

_REPO_ROOT = Path(__file__).resolve().parents[2]
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_NAME_HINT = "use letters, digits, '-', '_' and '.' (up to 64 characters, not starting with '.')"
_TIFF_SUFFIXES = (".tif", ".tiff")
_KINDS = ("stack", "slices")
_AXES = ("z", "y", "x")
_VOXEL_RANGE_UM = (0.01, 1000.0)
_INTERVAL_RANGE_S = (0.001, 1.0e7)
_LOCK_TIMEOUT_S = 30.0

# Sections later workflow steps fill; a missing one (older manifest) is read as its empty default.
_SECTIONS: dict[str, Callable[[], Any]] = {
    "labels": dict,
    "ground_truth": dict,
    "models": list,
    "segmentations": dict,
    "analysis": dict,
}

_held = threading.local()  # roots whose lock this thread holds, to refuse a nested update()
_open_tx = threading.local()  # roots with a transaction open in this thread -> _Transaction


@dataclass
class _Transaction:
    """Changes made inside :meth:`Project.transaction`: the working manifest and the edits to replay."""

    work: dict[str, Any]
    edits: list[Callable[[dict[str, Any]], None]]


def _transactions() -> dict[str, _Transaction]:
    """This thread's open transactions (a forked child starts with none: its parent's are not its own)."""
    if getattr(_open_tx, "pid", None) != os.getpid():
        _open_tx.pid, _open_tx.by_root = os.getpid(), {}
    return _open_tx.by_root


def _held_roots() -> set[str]:
    """Roots whose lock (or update) this thread holds, to refuse a nested update() instead of deadlocking."""
    if getattr(_held, "pid", None) != os.getpid():
        _held.pid, _held.roots = os.getpid(), set()
    return _held.roots


# ---------------------------------------------------------------------------------------------------------------
# Small records
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProjectSummary:
    """One row of the project list.

    Attributes
    ----------
    name : str
        Project (folder) name.
    created, updated : str
        ISO-8601 UTC timestamps from the manifest.
    n_steps : int
        Number of time steps (scans).
    path : str
        The project folder (text, so that the summary is JSON-ready with ``dataclasses.asdict``).
    """

    name: str
    created: str
    updated: str
    n_steps: int
    path: str


@dataclass(frozen=True)
class StepStatus:
    """One line of the home-page checklist.

    Attributes
    ----------
    key : str
        ``"data"``, ``"labels"``, ``"ground_truth"``, ``"model"``, ``"segmentation"``, ``"evaluation"`` or
        ``"analysis"``.
    title : str
        Title shown to users.
    done : bool
        Whether the step has saved results.
    detail : str
        One line on what is there, or what to do next.
    """

    key: str
    title: str
    done: bool
    detail: str
    optional: bool = False


# ---------------------------------------------------------------------------------------------------------------
# Workspace, data roots, names
# ---------------------------------------------------------------------------------------------------------------
def workspace_dir(workspace: str | os.PathLike | None = None) -> Path:
    """The workspace folder, created on demand.

    Parameters
    ----------
    workspace : path-like, optional
        Explicit workspace. Without it, the environment variable ``REACTOMO_WORKSPACE`` is used if set and
        non-empty, else ``<repo root>/workspace``.

    Returns
    -------
    Path
        The absolute, resolved workspace folder (it exists).

    Raises
    ------
    ReactomoError
        If the folder cannot be created or is not a folder.
    """
    if workspace is None:
        env = os.environ.get(ENV_WORKSPACE, "").strip()
        workspace = env if env else _REPO_ROOT / "workspace"
    path = Path(workspace).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ReactomoError(f"Workspace {str(path)!r} is a file, not a folder; point {ENV_WORKSPACE} at a folder.") from None
    except OSError as exc:
        raise ReactomoError(
            f"Workspace {str(path)!r} cannot be created ({exc.strerror or exc}); set {ENV_WORKSPACE} to a writable folder."
        ) from None
    return path.resolve()


def data_roots(*, workspace: str | os.PathLike | None = None) -> list[Path]:
    """Folders that scans may be opened from by a server-side path.

    A shared server sets ``REACTOMO_DATA_ROOT`` (folders separated by ``os.pathsep``, e.g.
    ``/data/beamline:/scratch``) so that users of the dashboard can open their data and nothing else on the
    machine. Without it, a personal install may open files from the workspace and the home folder.

    Parameters
    ----------
    workspace : path-like, optional
        Workspace to include when ``REACTOMO_DATA_ROOT`` is not set (see :func:`workspace_dir`).

    Returns
    -------
    list of Path
        Absolute, resolved folders (not necessarily existing when given by the environment).
    """
    env = os.environ.get(ENV_DATA_ROOT, "")
    if env.strip():
        roots = [Path(p.strip()).expanduser().resolve() for p in env.split(os.pathsep) if p.strip()]
        if roots:
            return roots
    return [workspace_dir(workspace), Path.home().resolve()]


def _show(value: object, limit: int = 80) -> str:
    """``repr`` of a user value, shortened so that an error sentence stays readable."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def sanitize_name(name: str) -> str:
    """Check a project name and return it as stored (surrounding whitespace dropped, spaces turned into ``_``).

    A project name is 1 to 64 ASCII letters, digits, ``-``, ``_`` and ``.``, not starting with ``.``; so it
    can never be ``.``/``..``, hold a slash, backslash, drive letter or NUL, or point outside the workspace.

    Parameters
    ----------
    name : str
        Name as typed by the user, e.g. ``"gypsum run 3"``.

    Returns
    -------
    str
        The folder name, e.g. ``"gypsum_run_3"``.

    Raises
    ------
    ReactomoError
        If the name is not allowed.

    Examples
    --------
    >>> sanitize_name(" gypsum run 3 ")
    'gypsum_run_3'
    """
    if not isinstance(name, str):
        raise ReactomoError(f"Project name {_show(name)} is not text; {_NAME_HINT}.")
    cleaned = name.strip().replace(" ", "_")
    if not cleaned:  # blank: its repr would read as an empty pair of quotes in a page
        raise ReactomoError(f"The name is empty; {_NAME_HINT}.")
    if not _NAME_RE.match(cleaned) or cleaned.startswith(".") or cleaned in (".", ".."):
        raise ReactomoError(f"Project name {_show(name)} is not allowed; {_NAME_HINT}.")
    return cleaned


def _sanitize_filename(filename: str) -> str:
    """Reduce an uploaded file's name to a safe TIFF file name in the project's ``scans`` folder."""
    if not isinstance(filename, str) or not filename.strip():
        raise ReactomoError(f"Upload name {_show(filename)} is empty; upload a .tif or .tiff file with a name.")
    base = re.split(r"[\\/]", filename.strip())[-1].replace(" ", "_")
    base = re.sub(r"[^A-Za-z0-9_.\-]", "_", base).lstrip(".")
    stem, dot, suffix = base.rpartition(".")
    if not dot or f".{suffix.lower()}" not in _TIFF_SUFFIXES or not stem.strip("._-"):
        raise ReactomoError(f"Upload {_show(filename)} is not a TIFF file name; upload .tif or .tiff files.")
    stem = stem[:100]
    return f"{stem}.{suffix.lower()}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _stamp() -> str:
    """A UTC timestamp safe in a file name, e.g. ``20250101T120000.123Z``."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z"


def _plain(x: float) -> str:
    """A limit as people write it: 0.001, 10,000,000 (never 1e+07)."""
    return f"{x:,.0f}" if abs(x) >= 1e5 and float(x).is_integer() else f"{x:g}"


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh", 8: "eighth",
            9: "ninth", 10: "tenth"}.get(n, f"{n}th" if 10 <= n % 100 <= 20 else f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}")


def _real(value: object, what: str, lo: float, hi: float, unit: str, example: str) -> float:
    """A finite number in ``[lo, hi]`` or a ReactomoError naming ``what`` and the range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or not lo <= float(value) <= hi:
        raise ReactomoError(f"{what} {_show(value)} is not allowed; give a number from {_plain(lo)} to {_plain(hi)} {unit} "
                            f"(e.g. {example}).")
    return float(value)


def _voxel_size(value: object) -> float:
    return _real(value, "Voxel size", *_VOXEL_RANGE_UM, "µm", "2.75")


def _interval(value: object) -> float:
    return _real(value, "Scan interval", *_INTERVAL_RANGE_S, "s", "60")


def _version() -> str:
    try:
        from core import __version__

        return __version__
    except ImportError:  # pragma: no cover - core/__init__ always defines it
        return "0.0.0"


# ---------------------------------------------------------------------------------------------------------------
# Manifest validation, reading and writing
# ---------------------------------------------------------------------------------------------------------------
class _Invalid(Exception):
    """A manifest problem, as a phrase to put inside a sentence."""


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


def _validate(m: object) -> dict[str, Any]:
    """Check the structure of a manifest and fill sections missing from older files; raise :class:`_Invalid`."""
    if not isinstance(m, dict):
        raise _Invalid(f"it holds a {type(m).__name__}, not an object")
    schema = m.get("schema")
    if not _is_int(schema):
        raise _Invalid(f"its 'schema' is {_show(schema)}, not {SCHEMA}")
    if schema > SCHEMA:
        raise ReactomoError(
            f"The manifest has schema {schema}, newer than this Reactomo understands ({SCHEMA}); upgrade Reactomo to open it."
        )
    if schema != SCHEMA:
        raise _Invalid(f"its 'schema' is {schema}, not {SCHEMA}")
    for key in ("name", "created", "updated"):
        if not isinstance(m.get(key), str) or not m[key]:
            raise _Invalid(f"its '{key}' is {_show(m.get(key))}, not a non-empty text")
    for key in ("voxel_size_um", "interval_s"):
        if not _is_num(m.get(key)) or not m[key] > 0:
            raise _Invalid(f"its '{key}' is {_show(m.get(key))}, not a positive number")
    m.setdefault("reactomo_version", _version())
    m.setdefault("times_mode", "interval")
    if m["times_mode"] not in ("interval", "explicit"):
        raise _Invalid(f"its 'times_mode' is {_show(m['times_mode'])}, not 'interval' or 'explicit'")
    scans = m.get("scans")
    if not isinstance(scans, list):
        raise _Invalid(f"its 'scans' is {_show(scans)}, not a list")
    first_shape: list[int] | None = None
    last_time = -math.inf
    for i, s in enumerate(scans):
        if not isinstance(s, dict):
            raise _Invalid(f"scan {i} is {_show(s)}, not an object")
        for key in ("name", "path", "dtype"):
            if not isinstance(s.get(key), str) or not s[key]:
                raise _Invalid(f"scan {i} has '{key}' {_show(s.get(key))}, not a non-empty text")
        if s.get("kind") not in _KINDS:
            raise _Invalid(f"scan {i} has kind {_show(s.get('kind'))}, not 'stack' or 'slices'")
        shape = s.get("shape")
        if not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(v) and v > 0 for v in shape):
            raise _Invalid(f"scan {i} has shape {_show(shape)}, not three positive integers")
        if first_shape is None:
            first_shape = shape
        elif shape != first_shape:
            raise _Invalid(f"scan {i} has shape {_shape_text(shape)}, unlike scan 0 ({_shape_text(first_shape)})")
        t = s.get("time_s")
        if not _is_num(t) or not t > last_time:
            raise _Invalid(f"scan {i} has time {_show(t)} s, not a finite time after the previous scan's")
        last_time = t
    if not isinstance(m.get("phases"), list):
        raise _Invalid(f"its 'phases' is {_show(m.get('phases'))}, not a list")
    if not isinstance(m.get("reaction"), dict):
        raise _Invalid(f"its 'reaction' is {_show(m.get('reaction'))}, not an object")
    try:
        PhaseTable.from_dict(m["phases"])
        Reaction.from_dict(m["reaction"])
    except (ReactomoError, TypeError) as exc:
        raise _Invalid(f"its phases or reaction are invalid ({str(exc).rstrip('.')})") from None
    m.setdefault("roi", None)
    if m["roi"] is not None:
        try:
            m["roi"] = _check_roi(m["roi"], first_shape)
        except ReactomoError as exc:
            raise _Invalid(f"its region of interest is invalid ({str(exc).rstrip('.')})") from None
    m.setdefault("demo", None)
    if m["demo"] is not None and not isinstance(m["demo"], dict):
        raise _Invalid(f"its 'demo' is {_show(m['demo'])}, not an object or null")
    for key, default in _SECTIONS.items():
        m.setdefault(key, default())
        if not isinstance(m[key], type(default())):
            raise _Invalid(f"its '{key}' is a {type(m[key]).__name__}, not a {type(default()).__name__}")
    return m


def _read_one(path: Path) -> dict[str, Any]:
    """Read and validate one manifest file; raise :class:`_Invalid` with the reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Invalid(f"{path.name} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _Invalid(f"{path.name} cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Invalid(f"{path.name} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    try:
        return _validate(data)
    except _Invalid as exc:
        raise _Invalid(f"{path.name} is not a Reactomo manifest: {exc}") from None


def _load(root: Path) -> tuple[dict[str, Any], bool]:
    """The manifest of ``root`` and whether it came from the backup (with a logged warning)."""
    try:
        return _read_one(root / MANIFEST), False
    except _Invalid as main_exc:
        try:
            m = _read_one(root / BACKUP)
        except _Invalid as bak_exc:
            raise ReactomoError(
                f"Project '{root.name}' cannot be opened because {main_exc} and {bak_exc}; "
                f"restore {MANIFEST} in {root} from a copy, or delete the project."
            ) from None
        log.warning("Project '%s': %s; using the backup %s instead.", root.name, main_exc, BACKUP)
        return m, True


def _write(root: Path, m: dict[str, Any]) -> None:
    """Write the manifest atomically, then the same text as the backup (a crash between leaves both readable)."""
    text = json.dumps(m, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    atomic_write_text(root / MANIFEST, text)
    atomic_write_text(root / BACKUP, text)


def _keep_corrupt(root: Path) -> None:
    """Move an unreadable manifest aside as ``project.json.corrupt-<stamp>`` so it can still be inspected."""
    bad = root / MANIFEST
    if bad.exists():
        aside = root / f"{MANIFEST}.corrupt-{_stamp()}"
        os.replace(bad, aside)
        log.warning("Project '%s': kept the unreadable manifest as %s.", root.name, aside.name)


@contextmanager
def _locked(root: Path, *, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the project's inter-process lock (``fcntl.flock`` on ``project.lock``; ``msvcrt`` on Windows)."""
    timeout_s = _LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    held = _held_roots()
    key = str(root)
    if not (root / MANIFEST).exists() and not (root / BACKUP).exists():
        raise ReactomoError(f"Project '{root.name}' no longer exists at {root}; open or create a project again.")
    if key in held:
        raise RuntimeError(f"Project '{root.name}' is already locked by this thread; do not call update() inside update().")
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.001
        while not _try_lock(fd):
            if time.monotonic() > deadline:
                raise ReactomoError(
                    f"Project '{root.name}' stayed locked by another process for {timeout_s:g} s; try again in a moment."
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            _unlock(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# Checks shared by mutators
# ---------------------------------------------------------------------------------------------------------------
def _check_roi(roi: object, shape: Sequence[int] | None) -> dict[str, list[int]]:
    """Validate a region of interest against a ``(z, y, x)`` shape and return it as ``{axis: [start, end]}``."""
    if not isinstance(roi, Mapping):
        raise ReactomoError(
            f"A region of interest is {{'z': [z0, z1], 'y': [y0, y1], 'x': [x0, x1]}} or None; got {_show(roi)}."
        )
    keys = set(roi)
    if keys != set(_AXES):
        raise ReactomoError(f"A region of interest needs exactly the axes 'z', 'y' and 'x'; got {sorted(map(str, keys))}.")
    if shape is None:
        raise ReactomoError("The project has no scans yet; set the scans before a region of interest.")
    out: dict[str, list[int]] = {}
    for axis, size in zip(_AXES, shape):
        rng = roi[axis]
        if (
            isinstance(rng, (str, bytes, Mapping))
            or not hasattr(rng, "__len__")
            or len(rng) != 2
            or not all(_is_int(v) for v in rng)
        ):
            raise ReactomoError(f"The region of interest on axis {axis} is {_show(rng)}; give two integers [start, end).")
        start, end = int(rng[0]), int(rng[1])
        if not 0 <= start < end <= size:
            raise ReactomoError(
                f"The region of interest on axis {axis} is [{start}, {end}) but the scans are {_shape_text(shape)} (z×y×x); "
                f"give 0 <= start < end <= {size} on {axis}."
            )
        out[axis] = [start, end]
    return out


def _check_times(times: object, n: int) -> list[float]:
    """Times in seconds: ``n`` finite numbers, strictly increasing."""
    if isinstance(times, (str, bytes, Mapping)) or not hasattr(times, "__len__"):  # lists, tuples, numpy arrays
        raise ReactomoError(f"Times must be a list of {n} numbers in seconds; got {_show(times)}.")
    values = list(times)  # type: ignore[call-overload]
    if len(values) != n:
        raise ReactomoError(f"There are {len(values)} times for {n} scans; give one time in seconds per scan.")
    out: list[float] = []
    for i, t in enumerate(values):
        if not _is_num(t):
            raise ReactomoError(f"The {_ordinal(i + 1)} time (step {i}) is {_show(t)}; give every scan a finite time in "
                                "seconds.")
        if out and not float(t) > out[-1]:
            raise ReactomoError(f"The {_ordinal(i + 1)} time (step {i}), {float(t):g} s, is not after the {_ordinal(i)} "
                                f"({out[-1]:g} s); times must strictly increase.")
        out.append(float(t))
    return out


def _scan_fields(scan: object, i: int) -> dict[str, Any]:
    """The manifest fields of a :class:`~core.imaging.io.ScanInfo` (or a mapping with the same keys), validated."""
    get = scan.get if isinstance(scan, Mapping) else (lambda k, d=None: getattr(scan, k, d))
    path, kind, name, shape, dtype = (get(k) for k in ("path", "kind", "name", "shape", "dtype"))
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ReactomoError(f"Scan {i} has path {_show(path)}; give each scan the path of its TIFF file or folder.")
    if kind not in _KINDS:
        raise ReactomoError(f"Scan {i} has kind {_show(kind)}; use 'stack' (one multi-page TIFF) or 'slices' (a folder of 2D TIFFs).")
    if not isinstance(name, str) or not name.strip():
        raise ReactomoError(f"Scan {i} has name {_show(name)}; give each scan a non-empty name.")
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) != 3 or not all(
        _is_int(v) and v > 0 for v in shape
    ):
        raise ReactomoError(f"Scan '{name}' has shape {_show(shape)}; a scan is a (z, y, x) volume of three positive sizes.")
    if not isinstance(dtype, str) or not dtype:
        raise ReactomoError(f"Scan '{name}' has dtype {_show(dtype)}; give the data type as text, e.g. 'uint16'.")
    return {"name": name, "path": str(path), "kind": kind, "shape": [int(v) for v in shape], "dtype": dtype}


# ---------------------------------------------------------------------------------------------------------------
# The project
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Project:
    """A handle on one project folder; every read goes to ``project.json``, every change is a locked rewrite of it.

    Get one from :func:`create_project` or :func:`open_project`. The handle is small and hashable, so it can key
    a cache. Mutators validate their input inside the locked read-modify-write, before anything is written:
    bad input raises :class:`ReactomoError` and changes nothing.

    Attributes
    ----------
    root : Path
        The project folder.
    name : str
        The project name (the folder's name).
    """

    root: Path
    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- the manifest ------------------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        """A fresh, validated copy of the manifest (changing it changes nothing on disk; use :meth:`update`).

        Inside :meth:`transaction` (same thread) it includes the changes made so far in the transaction.
        """
        tx = _transactions().get(str(self.root))
        if tx is not None:
            return copy.deepcopy(tx.work)
        return _load(self.root)[0]

    @contextmanager
    def transaction(self) -> Iterator[Project]:
        """Group several changes into one write: all of them are saved, or none.

        Inside the block (in this thread) every mutator validates and applies its change to a working copy that
        :attr:`manifest` and the accessors read; nothing is written yet and the lock is not held, so slow work
        (discovering scans) does not block other tabs. When the block ends, the recorded changes are replayed on
        the freshly read manifest under the lock and written once, so concurrent edits by others are kept. If the
        block raises, or a replayed change no longer applies, nothing is written. A nested ``transaction()``
        joins the outer one.

        Yields
        ------
        Project
            This project.

        Examples
        --------
        >>> with project.transaction():                  # doctest: +SKIP
        ...     project.set_voxel_size(1.5)
        ...     project.set_interval(0)                  # raises: the voxel size is not saved either
        """
        open_tx = _transactions()
        key = str(self.root)
        if key in open_tx:
            yield self
            return
        open_tx[key] = _Transaction(work=_load(self.root)[0], edits=[])
        try:
            yield self
        except BaseException:
            open_tx.pop(key, None)
            raise
        tx = open_tx.pop(key)
        if tx.edits:

            def replay(m: dict[str, Any]) -> None:
                for edit in tx.edits:
                    edit(m)

            self.update(replay)

    def update(self, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Change the manifest under the project lock: read it, let ``fn`` edit it in place, validate, write.

        Parameters
        ----------
        fn : callable
            Receives the manifest dict and changes it in place (its return value is ignored). If it raises,
            nothing is written and the exception propagates.

        Returns
        -------
        dict
            The manifest as written (``updated`` set to now).

        Raises
        ------
        ReactomoError
            If the edited manifest is invalid or cannot be stored as JSON (nothing is written).
        RuntimeError
            If called from inside another ``update`` of the same project in the same thread.
        """
        tx = _transactions().get(str(self.root))
        if tx is not None:  # inside transaction(): apply to the working copy, write at the end
            if str(self.root) in _held_roots():
                raise RuntimeError(f"Project '{self.name}' is already being updated; do not call update() inside update().")
            work = self._apply(tx.work, fn)
            tx.work = work
            tx.edits.append(fn)
            return copy.deepcopy(work)
        with _locked(self.root):
            current, from_backup = _load(self.root)
            work = self._apply(current, fn)
            if from_backup:
                _keep_corrupt(self.root)
            _write(self.root, work)
            return copy.deepcopy(work)

    def _apply(self, current: dict[str, Any], fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """``fn`` applied to a copy of ``current``, stamped and validated (``current`` is left as it was)."""
        work = copy.deepcopy(current)
        held = _held_roots()
        key = str(self.root)
        nested = key in held
        held.add(key)  # a mutator called from inside fn would otherwise deadlock or be lost
        try:
            fn(work)
        finally:
            if not nested:
                held.discard(key)
        work["updated"] = _now()
        try:
            _validate(work)
            json.dumps(work, allow_nan=False)
        except _Invalid as exc:
            raise ReactomoError(f"That change would make the manifest invalid ({exc}); nothing was saved.") from None
        except (TypeError, ValueError) as exc:
            raise ReactomoError(f"That change cannot be stored as JSON ({exc}); nothing was saved.") from None
        return work

    # -- paths -------------------------------------------------------------------------------------------------
    def store_path(self, path: str | os.PathLike) -> str:
        """How ``path`` is written in the manifest: relative (POSIX) inside the project folder, else absolute.

        A relative ``path`` is taken relative to the project folder.
        """
        p = Path(path).expanduser()
        if not p.is_absolute():
            p = self.root / p
        p = p.resolve()
        root = self.root.resolve()
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            return str(p)

    def resolve_path(self, stored: str) -> Path:
        """The absolute path of a path as stored in the manifest (see :meth:`store_path`)."""
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    def scan_path(self, i: int) -> Path:
        """Absolute path of the scan of time step ``i`` (0-based)."""
        scans = self.manifest["scans"]
        return self.resolve_path(scans[self._index(i, len(scans))]["path"])

    @staticmethod
    def _index(i: object, n: int) -> int:
        if not _is_int(i) or not 0 <= int(i) < n:  # type: ignore[call-overload]
            where = f"0 to {n - 1}" if n else "none yet; open scans on the Data page first"
            raise ReactomoError(f"Time step {_show(i)} does not exist; the project has {n} steps ({where}).")
        return int(i)  # type: ignore[call-overload]

    # -- scans and times ---------------------------------------------------------------------------------------
    def scans(self) -> list[ScanInfo]:
        """The scans, one per time step, in time order, with absolute paths."""
        from core.imaging.io import ScanInfo

        return [
            ScanInfo(
                path=str(self.resolve_path(s["path"])),
                kind=s["kind"],
                name=s["name"],
                shape=tuple(s["shape"]),
                dtype=s["dtype"],
            )
            for s in self.manifest["scans"]
        ]

    def times_s(self) -> list[float]:
        """Time of each step in seconds."""
        return [float(s["time_s"]) for s in self.manifest["scans"]]

    def set_scans(self, scans: Sequence[ScanInfo], *, times_s: Sequence[float] | None = None) -> list[str]:
        """Replace the time series.

        Parameters
        ----------
        scans : sequence of ScanInfo
            One scan per time step, in time order; all the same ``(z, y, x)`` shape and dtype. An empty sequence
            clears the series. Relative paths are taken relative to the project folder.
        times_s : sequence of float, optional
            Time of each step in seconds: finite and strictly increasing. Default: ``i * interval_s``, kept in
            step with :meth:`set_interval`.

        Raises
        ------
        ReactomoError
            If a scan, the shapes/dtypes or the times are invalid (nothing changes).

        Returns
        -------
        list of str
            What the new scans made obsolete, one sentence each: the demo's record (truth, scribbles) when they are
            not the demo's own scans, a region of interest made for scans of another shape (both are cleared).
        """
        if isinstance(scans, (str, bytes, Mapping)) or not isinstance(scans, Sequence):
            raise ReactomoError(f"Scans must be a list of ScanInfo, one per time step; got {type(scans).__name__}.")
        entries = [_scan_fields(s, i) for i, s in enumerate(scans)]
        for e in entries[1:]:
            if e["shape"] != entries[0]["shape"] or e["dtype"] != entries[0]["dtype"]:
                raise ReactomoError(
                    f"Scan '{e['name']}' is {_shape_text(e['shape'])} {e['dtype']} but scan '{entries[0]['name']}' is "
                    f"{_shape_text(entries[0]['shape'])} {entries[0]['dtype']}; every time step must have the same shape and dtype."
                )
        explicit = None if times_s is None else _check_times(times_s, len(entries))
        for e in entries:
            e["path"] = self.store_path(e["path"])

        notes: list[str] = []
        demo_root = Path(self.root).resolve()

        def apply(m: dict[str, Any]) -> None:
            notes.clear()
            old_shape = m["scans"][0]["shape"] if m["scans"] else None
            times = explicit if explicit is not None else [i * m["interval_s"] for i in range(len(entries))]
            m["scans"] = [{**e, "time_s": t} for e, t in zip(entries, times)]
            m["times_mode"] = "interval" if explicit is None else "explicit"
            demo = m.get("demo")
            if demo and entries:
                folder = (demo_root / str(demo.get("folder") or "demo") / "scans").resolve()
                if not all(folder in Path(self.resolve_path(e["path"])).resolve().parents for e in entries):
                    m["demo"] = None  # its truth and scribbles belong to other scans
                    notes.append("These are not the demo's scans, so the demo's known truth and scribbles no longer "
                                 "apply: the project is no longer the demo experiment.")
            if m["roi"] is not None:
                new_shape = entries[0]["shape"] if entries else None
                try:
                    _check_roi(m["roi"], new_shape)
                    fits = old_shape is None or list(old_shape) == list(new_shape or [])
                except ReactomoError:
                    fits = False
                if not fits:
                    r = m["roi"]
                    notes.append(f"The region of interest (z {r['z'][0]}-{r['z'][1]}, y {r['y'][0]}-{r['y'][1]}, "
                                 f"x {r['x'][0]}-{r['x'][1]}) was set on scans of another shape; it was cleared.")
                    m["roi"] = None

        self.update(apply)
        for note in notes:
            log.info("Project '%s': %s", self.name, note)
        return list(notes)

    def set_times(self, times_s: Sequence[float] | None) -> None:
        """Set the time of each step in seconds (finite, strictly increasing); ``None`` goes back to ``i * interval_s``."""
        n = len(self.manifest["scans"])
        explicit = None if times_s is None else _check_times(times_s, n)

        def apply(m: dict[str, Any]) -> None:
            if len(m["scans"]) != n:
                raise ReactomoError(f"The scans changed while setting times ({n} became {len(m['scans'])}); try again.")
            times = explicit if explicit is not None else [i * m["interval_s"] for i in range(n)]
            for s, t in zip(m["scans"], times):
                s["time_s"] = t
            m["times_mode"] = "interval" if explicit is None else "explicit"

        self.update(apply)

    def voxel_size_um(self) -> float:
        """Edge length of a voxel in micrometres."""
        return float(self.manifest["voxel_size_um"])

    def set_voxel_size(self, um: float) -> None:
        """Set the voxel edge length in micrometres (finite, 0.01 to 1000 µm)."""
        value = _voxel_size(um)
        self.update(lambda m: m.__setitem__("voxel_size_um", value))

    def conditions(self) -> dict[str, str]:
        """The experiment's conditions as the user wrote them (:data:`CONDITION_FIELDS`), for the report."""
        c = self.manifest.get("conditions") or {}
        return {k: str(c[k]) for k in CONDITION_FIELDS if isinstance(c.get(k), str) and c[k].strip()}

    def set_conditions(self, values: dict[str, str]) -> None:
        """Set free-text conditions (sample, temperature, pressure, stress, beamline, notes); empty text clears one.

        Only the known fields, each at most :data:`CONDITION_MAX` characters of printable text."""
        clean: dict[str, str] = {}
        for k, v in values.items():
            if k not in CONDITION_FIELDS:
                raise ReactomoError(f"'{k}' is not an experiment condition; use one of {', '.join(CONDITION_FIELDS)}.")
            if not isinstance(v, str):
                raise ReactomoError(f"The {k} must be text; got {type(v).__name__}.")
            v = " ".join(v.split())
            if len(v) > CONDITION_MAX or any(not ch.isprintable() for ch in v):
                raise ReactomoError(f"The {k} must be printable text of at most {CONDITION_MAX} characters.")
            clean[k] = v

        def apply(m: dict[str, Any]) -> None:
            c = {k: v for k, v in (m.get("conditions") or {}).items() if k in CONDITION_FIELDS}
            c.update(clean)
            m["conditions"] = {k: v for k, v in c.items() if v}

        self.update(apply)

    def interval_s(self) -> float:
        """Nominal time between scans in seconds."""
        return float(self.manifest["interval_s"])

    def set_interval(self, s: float) -> None:
        """Set the nominal time between scans in seconds (0.001 s to 1e7 s).

        Step times that follow the interval (``times_mode == "interval"``) are recomputed; explicit times stay.
        """
        value = _interval(s)

        def apply(m: dict[str, Any]) -> None:
            m["interval_s"] = value
            if m["times_mode"] == "interval":
                for i, scan in enumerate(m["scans"]):
                    scan["time_s"] = i * value

        self.update(apply)

    def open_step(self, i: int, *, raw: bool = False) -> Volume:
        """Open the scan of time step ``i`` lazily, as the project reads it: with its ring artefacts removed when
        :meth:`rings` is ``"remove"`` (:func:`core.imaging.rings.open_scan`), unless ``raw``; close it when done."""
        from core.imaging.rings import open_scan

        scans = self.manifest["scans"]
        s = scans[self._index(i, len(scans))]
        return open_scan(self.resolve_path(s["path"]), kind=s["kind"], rings="keep" if raw else self.rings())

    def rings(self) -> str:
        """What the project does with ring artefacts: ``"remove"`` or ``"keep"`` (:mod:`core.imaging.rings`).

        New projects take :data:`core.imaging.rings.RINGS`; a project made before the setting existed reads its
        scans as they are (``"keep"``), as its labels and models were made."""
        from core.imaging.rings import check_rings_mode

        return check_rings_mode(self.manifest.get("rings", "keep"))

    def set_rings(self, mode: str) -> None:
        """Remove (``"remove"``) or keep (``"keep"``) the scans' ring artefacts from now on (labels already accepted
        stay; the ground truth's record says how its scans were read)."""
        from core.imaging.rings import check_rings_mode

        value = check_rings_mode(mode)
        self.update(lambda m: m.__setitem__("rings", value))

    # -- region of interest ------------------------------------------------------------------------------------
    def roi(self) -> dict[str, list[int]] | None:
        """The region of interest ``{"z": [z0, z1], "y": [y0, y1], "x": [x0, x1]}`` (half-open), or ``None``."""
        return self.manifest["roi"]

    def set_roi(self, roi: Mapping[str, Sequence[int]] | None) -> None:
        """Set (or with ``None`` clear) the region of interest; every range must lie within the scan shape."""

        def apply(m: dict[str, Any]) -> None:
            shape = m["scans"][0]["shape"] if m["scans"] else None
            m["roi"] = None if roi is None else _check_roi(roi, shape)

        self.update(apply)

    # -- phases and reaction -----------------------------------------------------------------------------------
    def phases(self) -> PhaseTable:
        """The phase table."""
        return PhaseTable.from_dict(self.manifest["phases"])

    def set_phases(self, table: PhaseTable, *, reaction: Reaction | None = None) -> None:
        """Replace the phase table, optionally with a new reaction that fits it.

        Raises
        ------
        ReactomoError
            If ``table`` is not a PhaseTable, or the (current or given) reaction does not fit it.
        """
        if not isinstance(table, PhaseTable):
            raise ReactomoError(f"Phases must be a PhaseTable; got {type(table).__name__}.")
        if reaction is not None and not isinstance(reaction, Reaction):
            raise ReactomoError(f"The reaction must be a Reaction; got {type(reaction).__name__}.")

        def apply(m: dict[str, Any]) -> None:
            r = reaction if reaction is not None else Reaction.from_dict(m["reaction"])
            try:
                r.check_against(table)
            except ReactomoError as exc:
                raise ReactomoError(
                    f"The reaction '{r.name}' does not fit the new phases ({str(exc).rstrip('.')}); "
                    "pass a matching reaction with set_phases(table, reaction=...)."
                ) from None
            m["phases"] = table.to_dict()
            m["reaction"] = r.to_dict()

        self.update(apply)

    def reaction(self) -> Reaction:
        """The reaction."""
        return Reaction.from_dict(self.manifest["reaction"])

    def set_reaction(self, r: Reaction) -> None:
        """Replace the reaction; it must fit the current phase table (:meth:`Reaction.check_against`)."""
        if not isinstance(r, Reaction):
            raise ReactomoError(f"The reaction must be a Reaction; got {type(r).__name__}.")

        def apply(m: dict[str, Any]) -> None:
            r.check_against(PhaseTable.from_dict(m["phases"]))
            m["reaction"] = r.to_dict()

        self.update(apply)

    # -- demo --------------------------------------------------------------------------------------------------
    def demo(self) -> dict[str, Any] | None:
        """What the demo generator recorded about this project, or ``None`` for real data."""
        return self.manifest["demo"]

    def set_demo(self, info: Mapping[str, Any] | None) -> None:
        """Record (or with ``None`` clear) the demo generator's parameters and truth; must be JSON-serialisable."""
        if info is not None and not isinstance(info, Mapping):
            raise ReactomoError(f"Demo information must be a dict or None; got {type(info).__name__}.")
        value = None if info is None else dict(info)
        self.update(lambda m: m.__setitem__("demo", value))

    # -- uploads -----------------------------------------------------------------------------------------------
    def import_upload(self, filename: str, data: bytes | BinaryIO) -> Path:
        """Save an uploaded TIFF into ``<project>/scans/`` after checking that it opens as a volume.

        The upload is streamed to a temporary file in the project in chunks of :data:`UPLOAD_CHUNK` bytes (a
        file object is never read whole into memory), which is opened with :func:`core.imaging.io.open_volume` and one slice
        read; only then is it moved into place. On failure the temporary file is removed, the error from
        :mod:`core.imaging.io` is raised, and nothing in the project changes. Uploading identical bytes under the same
        name again returns the existing file; different bytes under a taken name get ``<stem>-1.tif``, ...

        Parameters
        ----------
        filename : str
            The uploaded file's name (only its last component is used, made safe); must end in .tif or .tiff.
        data : bytes or binary file object
            The file's contents, or a readable binary file (Streamlit's ``UploadedFile``, an open file), read from
            its current position in chunks.

        Returns
        -------
        Path
            The saved file. The manifest is not changed: add the scan with :meth:`set_scans`.

        Raises
        ------
        ReactomoError
            If the name is not a TIFF name, the data is empty or unreadable, or the file does not open as a volume.
        """
        from core.imaging.io import open_volume

        safe = _sanitize_filename(filename)
        if isinstance(data, (bytes, bytearray, memoryview)):
            chunks: Iterator[bytes] = iter([data])
        elif hasattr(data, "read"):
            chunks = iter(lambda: data.read(UPLOAD_CHUNK), b"")
        else:
            raise ReactomoError(f"Upload '{safe}' must be bytes or a binary file; got {type(data).__name__}.")
        fd, tmp_name = tempfile.mkstemp(prefix=".upload-", suffix=Path(safe).suffix, dir=self.root)
        tmp = Path(tmp_name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    if not isinstance(chunk, (bytes, bytearray, memoryview)):
                        raise ReactomoError(f"Upload '{safe}' is not binary data; upload a multi-page TIFF volume.")
                    fh.write(chunk)
                    size += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            if not size:
                raise ReactomoError(f"Upload '{safe}' is empty; upload a multi-page TIFF volume.")
            try:
                with open_volume(tmp, kind="stack") as vol:
                    vol.slice(0, vol.shape[0] // 2)
            except ReactomoError as exc:  # name the user's file, not our temporary one
                text = str(exc).replace(str(tmp.resolve()), f"'{safe}'").replace(str(tmp), f"'{safe}'")
                raise ReactomoError(text) from None
            except Exception as exc:  # a reader error that core.imaging.io did not translate
                raise ReactomoError(
                    f"Upload '{safe}' does not open as a TIFF volume ({type(exc).__name__}: {exc}); upload a multi-page TIFF."
                ) from None
            with _locked(self.root):
                target = self._free_upload_name(safe, tmp)
                if target.exists():  # identical bytes already there
                    tmp.unlink()
                else:
                    target.parent.mkdir(exist_ok=True)
                    os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("Project '%s': saved upload %s (%d bytes).", self.name, target.relative_to(self.root), size)
        return target

    def _free_upload_name(self, safe: str, saved: Path) -> Path:
        """The first free ``<stem>[-k]<suffix>`` in scans/, or an existing file with the same bytes as ``saved``."""
        import filecmp

        folder = self.root / SCANS_DIR
        stem, suffix = Path(safe).stem, Path(safe).suffix
        for k in range(10_000):
            target = folder / (safe if k == 0 else f"{stem}-{k}{suffix}")
            if not target.exists():
                return target
            if target.is_file() and filecmp.cmp(target, saved, shallow=False):  # compares in chunks, not whole
                return target
        raise ReactomoError(f"There are too many uploads called '{safe}'; rename the file and upload it again.")

    # -- progress ----------------------------------------------------------------------------------------------
    def status(self) -> list[StepStatus]:
        """The workflow checklist in order: data, labels, ground truth, model, segmentation, analysis."""
        m = self.manifest
        scans = m["scans"]
        if scans:
            n = len(scans)
            detail = (
                f"{n} step{'s' if n != 1 else ''} of {_shape_text(scans[0]['shape'])} {scans[0]['dtype']}, "
                f"{m['voxel_size_um']:g} µm"
            )
            if m["roi"] is not None:
                detail += f"; region of interest {_shape_text([b - a for a, b in (m['roi'][k] for k in _AXES)])}"
            if m["demo"] is not None:
                detail += " (demo)"
        else:
            detail = "No scans yet; open scans or generate the demo on the Data page."

        def count(section: str, noun: str, todo: str, done: str = "saved") -> tuple[bool, str]:
            n = len(m[section])
            return (n > 0, f"{n} {noun}{'s' if n != 1 else ''} {done}" if n else todo)

        def labels_row() -> tuple[bool, str]:
            steps = {k: v.get("slices", []) for k, v in m["labels"].items() if isinstance(v, dict)}
            n = sum(len(v) for v in steps.values())
            if not n:
                return False, "No labels yet; brush a few slices on the Label page."
            return True, f"{n} labelled slice{'s' if n != 1 else ''} on {', '.join(sorted(steps))}"

        def ground_truth_row() -> tuple[bool, str]:
            gt = m["ground_truth"]
            if not gt:
                return False, "No ground truth yet; train the random forest on your labels."
            n = len(gt.get("slices", []))
            return True, f"{gt.get('kind', 'random forest')} on {n} slice{'s' if n != 1 else ''} of {gt.get('step_name', '?')}"

        def evaluation_row() -> tuple[bool, str]:
            reference = ("the demo's known truth" if m["demo"] is not None else
                         "the ground truth" if m["ground_truth"] else None)
            if not m["segmentations"]:
                return False, "Optional: score a segmentation against a reference, once there is one."
            if reference is None:
                return False, "Optional: score a segmentation against a labelled reference (none yet)."
            return False, f"Optional: score a segmentation against {reference}."

        def model_row() -> tuple[bool, str]:
            done, text = count("models", "model", "No model yet; train a U-Net on the ground truth (or segment with a "
                                                  "model of the registry).", done="trained in this project")
            used = sorted({str(v.get("model_name")) for v in m["segmentations"].values()
                           if isinstance(v, dict) and v.get("model_name")})
            if not done and used:  # segmented with a registry's model: not a step left undone
                return True, (f"None trained in this project; segmented with the registry's {', '.join(used[:3])}"
                              f"{' and others' if len(used) > 3 else ''}.")
            return done, text

        rows = [
            ("labels", "Labels", *labels_row()),
            ("ground_truth", "Ground truth", *ground_truth_row()),
            # the models trained in this project (the registry also lists the shipped ones and other projects')
            ("model", "Model", *model_row()),
            ("segmentation", "Segmentation", *count("segmentations", "segmentation", "No segmentation yet; segment the time steps with a model.")),
            ("evaluation", "Evaluation", *evaluation_row(), True),
            ("analysis", "Analysis", *count("analysis", "analysis result", "No analysis yet; run the analysis on a segmentation.")),
        ]
        return [StepStatus("data", "Data", bool(scans), detail)] + [StepStatus(*r) for r in rows]


# ---------------------------------------------------------------------------------------------------------------
# Workspace-level operations
# ---------------------------------------------------------------------------------------------------------------
def _has_manifest(root: Path) -> bool:
    return root.is_dir() and ((root / MANIFEST).is_file() or (root / BACKUP).is_file())


def project_exists(name: str, *, workspace: str | os.PathLike | None = None) -> bool:
    """Whether a project called ``name`` exists (a folder with a manifest); an invalid name raises ReactomoError."""
    safe = sanitize_name(name)
    return _has_manifest(workspace_dir(workspace) / safe)


def _rings_default() -> str:
    from core.imaging.rings import RINGS

    return RINGS


def create_project(
    name: str,
    *,
    workspace: str | os.PathLike | None = None,
    voxel_size_um: float = 2.75,
    interval_s: float = 60.0,
) -> Project:
    """Create an empty project with the default phases and reaction.

    Parameters
    ----------
    name : str
        Project name; see :func:`sanitize_name` (spaces become ``_``).
    workspace : path-like, optional
        See :func:`workspace_dir`.
    voxel_size_um : float
        Voxel edge length in micrometres (0.01 to 1000).
    interval_s : float
        Nominal time between scans in seconds.

    Returns
    -------
    Project

    Raises
    ------
    ReactomoError
        If the name is not allowed, a project of that name exists, or a setting is out of range.
    """
    safe = sanitize_name(name)
    voxel = _voxel_size(voxel_size_um)
    interval = _interval(interval_s)
    ws = workspace_dir(workspace)
    root = ws / safe
    try:
        root.mkdir()
    except FileExistsError:
        raise ReactomoError(f"A project (or folder) called '{safe}' already exists in {ws}; choose another name or open it.") from None
    except OSError as exc:  # a read-only, full or vanished workspace: one sentence for the page and the CLI
        from core.errors import filesystem_sentence

        raise ReactomoError(f"The project cannot be created: {filesystem_sentence(exc)}") from None
    now = _now()
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "name": safe,
        "created": now,
        "updated": now,
        "reactomo_version": _version(),
        "voxel_size_um": voxel,
        "interval_s": interval,
        "times_mode": "interval",
        "scans": [],
        "phases": DEFAULT_PHASES.to_dict(),
        "reaction": DEFAULT_REACTION.to_dict(),
        "roi": None,
        "demo": None,
        "rings": _rings_default(),
        **{key: default() for key, default in _SECTIONS.items()},
    }
    try:
        (root / LOCK).touch()
        _write(root, manifest)
    except BaseException as exc:
        for leftover in root.iterdir():
            leftover.unlink()
        root.rmdir()
        if isinstance(exc, OSError):
            from core.errors import filesystem_sentence

            raise ReactomoError(f"The project cannot be created: {filesystem_sentence(exc)}") from None
        raise
    log.info("Created project '%s' in %s.", safe, ws)
    return Project(root, safe)


def open_project(name: str, *, workspace: str | os.PathLike | None = None) -> Project:
    """Open an existing project.

    If ``project.json`` is unreadable but ``project.json.bak`` is good, the backup is restored (the bad file is
    kept as ``project.json.corrupt-<stamp>``) and a warning is logged.

    Raises
    ------
    ReactomoError
        If the name is not allowed, there is no such project, or neither manifest is readable.
    """
    safe = sanitize_name(name)
    ws = workspace_dir(workspace)
    root = ws / safe
    if not _has_manifest(root):
        names = [s.name for s in list_projects(workspace=ws)]
        hint = f"open one of {names}" if names else "create it first"
        raise ReactomoError(f"There is no project called '{safe}' in {ws}; {hint}.")
    _, from_backup = _load(root)
    if from_backup:
        with _locked(root):
            m, from_backup = _load(root)  # another process may have repaired it meanwhile
            if from_backup:
                _keep_corrupt(root)
                _write(root, m)
                log.warning("Project '%s': restored %s from %s.", safe, MANIFEST, BACKUP)
    return Project(root, safe)


def list_projects(*, workspace: str | os.PathLike | None = None) -> list[ProjectSummary]:
    """The projects in the workspace, most recently updated first.

    Folders without a manifest and the trash are skipped; a project whose manifests are both unreadable is
    skipped with a logged warning.
    """
    ws = workspace_dir(workspace)
    out: list[ProjectSummary] = []
    for root in sorted(ws.iterdir()):
        if root.name.startswith(".") or not _has_manifest(root):
            continue
        try:
            m, _ = _load(root)
        except ReactomoError as exc:
            log.warning("%s", exc)
            continue
        out.append(ProjectSummary(root.name, m["created"], m["updated"], len(m["scans"]), str(root)))
    out.sort(key=lambda s: s.updated, reverse=True)
    return out


def delete_project(name: str, *, workspace: str | os.PathLike | None = None) -> Path:
    """Move a project to ``<workspace>/.trash/<name>-<UTC timestamp>`` (nothing is erased) and return that path.

    Raises
    ------
    ReactomoError
        If the name is not allowed or there is no such project.
    """
    safe = sanitize_name(name)
    ws = workspace_dir(workspace)
    root = ws / safe
    if not _has_manifest(root):
        raise ReactomoError(f"There is no project called '{safe}' in {ws} to delete; check the name.")
    with _locked(root):  # wait for a write in progress to finish
        target = move_to_trash(root, ws / TRASH, name=safe)
    log.info("Moved project '%s' to %s.", safe, target)
    return target
