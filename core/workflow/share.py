"""A project as one file a collaborator opens: export to an RO-Crate zip, and an import that trusts nothing in it.

``export_project`` writes ``NAME.reactomo.zip``::

    ro-crate-metadata.json       RO-Crate 1.1: the project as a Dataset, every file with its size and SHA-256
    reactomo-archive.json        the index the import checks: every file's size and SHA-256, the scans, the models
    index.html                   a page linking the reports and tables, for a collaborator who only unzips
    project.json                 the manifest, with the paths inside the project made relative
    labels/ ground_truth/        the brushed slices, the forest's ground truth (classifier as skops, never pickle)
    models/<name>/               every model the project used: card.json and weights.safetensors
    segmentations/<name>/        the record, phase_volumes.csv and labels.ome.zarr (OME-Zarr 0.5, phase names/colours)
    analysis/<name>/             the tables (CSV), summary.json and the self-contained HTML report
    renders/<name>/              the cached 3D views
    demo/, scans/                the scans only with ``with_scans`` (else referenced by path, size and checksum)

``import_project`` refuses, with one sentence and before anything is created, an archive whose entries leave the
archive (``..``, absolute paths, drive letters, links), whose sizes differ from the declared ones or expand like a
zip bomb, whose checksums do not match, that holds a kind of file a project never has (pickles above all: the forest
stays a skops file loaded with trusted types only, the weights stay safetensors), or whose phase table does not agree
with its models, classifier and label volumes. It unpacks into a hidden folder of the workspace and renames it into
place only when every check passed, so a refused or interrupted import leaves nothing.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import secrets
import shutil
import stat
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import ReactomoError

__all__ = ["export_project", "import_project", "import_upload", "export_bytes", "export_to_folder", "latest_export", "ExportResult", "ImportResult", "ARCHIVE_SUFFIX", "INDEX", "CRATE",
           "MAX_BYTES"]

ARCHIVE_SUFFIX = ".reactomo.zip"
INDEX = "reactomo-archive.json"
CRATE = "ro-crate-metadata.json"
FORMAT = "reactomo.archive"
FORMAT_VERSION = 1
#: Largest total the import unpacks (REACTOMO_IMPORT_MAX_GB overrides; free disk space bounds it too).
MAX_BYTES = 64 * 1024**3
MAX_ENTRIES = 200_000
MAX_INDEX_BYTES = 32 * 1024**2
#: An entry larger than BOMB_MIN_BYTES that expands more than BOMB_RATIO times is refused as a zip bomb: every large
#: file of a project (zarr chunks, TIFFs, weights) is already compressed or noisy and expands 1-5 times.
BOMB_RATIO = 200
BOMB_MIN_BYTES = 16 * 1024**2
_CHUNK = 1024 * 1024

#: File kinds a project holds, by suffix; anything else is refused on import.
_KINDS = {".json": "json", ".csv": "text", ".html": "text", ".txt": "text", ".md": "text", ".png": "png",
          ".tif": "tiff", ".tiff": "tiff", ".safetensors": "safetensors", ".skops": "skops", ".vtp": "vtk",
          ".ply": "mesh", ".stl": "mesh"}
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".joblib", ".npy", ".npz", ".ckpt", ".bin", ".dill"}
_SKIP_DIRS = {"jobs", "exports"}
_MEDIA = {"json": "application/json", "text": "text/plain", "png": "image/png", "tiff": "image/tiff",
          "safetensors": "application/octet-stream", "skops": "application/zip", "vtk": "application/xml",
          "mesh": "application/octet-stream", "zarr": "application/octet-stream"}


@dataclass
class ExportResult:
    path: Path
    files: int
    bytes_in: int
    bytes_out: int
    seconds: float
    scans_included: bool


@dataclass
class ImportResult:
    project: Any
    files: int
    bytes: int
    seconds: float
    scans_missing: list[str] = field(default_factory=list)

    @property
    def sentence(self) -> str:
        s = f"Imported project '{self.project.name}' ({self.files} files, {self.bytes / 1e6:.1f} MB) in {self.seconds:.1f} s."
        if self.scans_missing:
            n = len(self.scans_missing)
            s += (f" Its {n} scan{'s were' if n != 1 else ' was'} exported by reference and {'are' if n != 1 else 'is'} "
                  f"not on this server: copy {'them' if n != 1 else 'it'} to the project's scans/ folder or open the "
                  "scans again on the Data page; the results, report and 3D views are all there.")
        return s


# --------------------------------------------------------------------------------------------------- helpers
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _kind(rel: str) -> str | None:
    """The kind of an archive entry by its path, or None when a project never holds such a file."""
    p = PurePosixPath(rel)
    if ".ome.zarr" in rel and any(part.endswith(".ome.zarr") for part in p.parts[:-1]):
        if p.name == "zarr.json":
            return "json"
        inside = p.parts[[i for i, part in enumerate(p.parts) if part.endswith(".ome.zarr")][0] + 1:]
        if "c" in inside and all(part.isdigit() for part in inside[inside.index("c") + 1:]):
            return "zarr"
        return None
    return _KINDS.get(p.suffix.lower())


def _portable(obj: Any, mapping: list[tuple[str, str]]) -> Any:
    """``obj`` with every string that is a path under one of ``mapping``'s absolute folders rewritten relative."""
    if isinstance(obj, dict):
        return {k: _portable(v, mapping) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable(v, mapping) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        for prefix, repl in mapping:
            if obj == prefix:
                return repl
            if obj.startswith(prefix + "/"):
                rest = obj[len(prefix) + 1:]
                return f"{repl}/{rest}" if repl != "." else rest
    return obj


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.endswith((".lock", ".bak", ".tmp")) or ".tmp" in name


def _walk(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if not _hidden(f) and p.is_file() and not p.is_symlink():
                out.append(p)
    return out


def _free_name(taken: set[str], name: str) -> str:
    k, out = 2, name
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    taken.add(out)
    return out


# --------------------------------------------------------------------------------------------------- export
def export_project(project, out: str | os.PathLike, *, with_scans: bool = False,
                   on_progress: Callable[[float, str], None] | None = None) -> ExportResult:
    """Write ``project`` to ``out`` (a new ``.reactomo.zip``) as described in the module's docstring.

    Raises
    ------
    ReactomoError
        An output that exists or does not end in ``.reactomo.zip``, a folder that cannot be written, or a project
        file that cannot be read. Nothing is left at ``out`` then.
    """
    from core.segmentation.ome_zarr import export_labels
    from core.workflow.paths import segmentation_folder

    say = on_progress or (lambda f, m: None)
    t0 = time.perf_counter()
    out = Path(out)
    if not out.name.endswith(ARCHIVE_SUFFIX):
        raise ReactomoError(f"The archive's name {out.name!r} should end in {ARCHIVE_SUFFIX} (e.g. {project.name}{ARCHIVE_SUFFIX}).")
    if out.exists():
        raise ReactomoError(f"{out} already exists; choose another name for the archive.")
    if not out.parent.is_dir():
        raise ReactomoError(f"The folder {out.parent} does not exist; create it or choose another --out.")
    root = Path(project.root).resolve()
    m = json.loads(json.dumps(project.manifest))
    files: dict[str, Path] = {}  # archive path -> file on disk
    mapping: list[tuple[str, str]] = []

    # models: every bundle the project trained or segmented with, under models/<name>/
    model_dirs: dict[str, str] = {}
    taken: set[str] = set()
    wanted = [r.get("path") for r in m.get("models", []) if isinstance(r, dict)]
    wanted += [r.get("model") for r in m.get("segmentations", {}).values() if isinstance(r, dict)]
    for p in wanted:
        if not p or not (Path(p) / "card.json").is_file() or str(Path(p).resolve()) in model_dirs:
            continue
        src = Path(p).resolve()
        name = _free_name(taken, src.name)
        model_dirs[str(src)] = f"models/{name}"
        for f in ("card.json", "weights.safetensors"):
            if (src / f).is_file():
                files[f"models/{name}/{f}"] = src / f
    # segmentations: the record and tables; the label volumes as OME-Zarr (written below)
    segs: dict[str, Path] = {}
    for name in sorted(m.get("segmentations", {})):
        folder = segmentation_folder(project, name).resolve()
        if not folder.is_dir():
            continue
        segs[name] = folder
        mapping.append((str(folder), f"segmentations/{name}"))
        for f in _walk(folder):
            if f.suffix.lower() not in (".tif", ".tiff") and ".ome.zarr" not in str(f.relative_to(folder)):
                files[f"segmentations/{name}/{f.relative_to(folder).as_posix()}"] = f
    mapping += sorted(model_dirs.items(), key=lambda kv: -len(kv[0]))
    mapping.append((str(root), "."))
    # the project's own folders
    scans_inside = {(root / s["path"]).resolve() if not Path(s["path"]).is_absolute() else Path(s["path"]).resolve()
                    for s in m.get("scans", [])}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p.name)):
        if sub.name in _SKIP_DIRS or sub.name == "segmentations" or sub.name == "models":
            continue
        for f in _walk(sub):
            rel = f.relative_to(root).as_posix()
            is_scan = f.resolve() in scans_inside or any(f.resolve().is_relative_to(s) for s in scans_inside if s.is_dir())
            if is_scan and not with_scans:
                continue
            if _kind(rel) is None:
                continue  # never export what the import would refuse
            files[rel] = f
    # scans: by reference, or included
    scans_index = []
    for s in m.get("scans", []):
        path = project.resolve_path(s["path"]).resolve()
        entry = {"name": s["name"], "kind": s["kind"], "included": bool(with_scans)}
        try:
            first = path if path.is_file() else next(iter(sorted(q for q in path.iterdir() if q.is_file())))
            with open(first, "rb") as fh:
                entry.update({"bytes": first.stat().st_size, "sha256_first_mib": hashlib.sha256(fh.read(_CHUNK)).hexdigest()})
        except (OSError, StopIteration):
            entry["readable"] = False
        if with_scans and path.exists():
            if path.is_relative_to(root):
                rel = path.relative_to(root).as_posix()
            else:
                rel = "scans/" + _free_name(taken, path.name)
            for f in ([path] if path.is_file() else _walk(path)):
                sub = rel if f == path else f"{rel}/{f.relative_to(path).as_posix()}"
                files[sub] = f
            s["path"] = rel
        else:
            s["path"] = str(path)  # a reference: where the scan was
            entry["included"] = False
        entry["path"] = s["path"]
        scans_index.append(entry)
    m["scans"] = [dict(s) for s in m.get("scans", [])]
    portable = _portable({k: v for k, v in m.items() if k != "scans"}, mapping)
    portable["scans"] = m["scans"]

    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    staging = out.parent / f".{out.name}.{os.getpid()}.zarr-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        index_files: dict[str, dict[str, Any]] = {}
        bytes_in = 0
        # OME-Zarr of every segmentation, written beside the archive and added file by file
        for i, (name, folder) in enumerate(segs.items()):
            say(0.05 + 0.25 * i / max(1, len(segs)), f"labels of {name} as OME-Zarr")
            if not any(folder.glob("*.tif")):
                continue
            z = export_labels(folder, staging / name / "labels.ome.zarr", phases=project.phases())
            for f in _walk(z):
                files[f"segmentations/{name}/labels.ome.zarr/{f.relative_to(z).as_posix()}"] = f
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6, allowZip64=True) as zf:
            def put_bytes(rel: str, data: bytes) -> None:
                nonlocal bytes_in
                zf.writestr(zipfile.ZipInfo(rel, date_time=time.gmtime()[:6]), data, compress_type=zipfile.ZIP_DEFLATED)
                index_files[rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                bytes_in += len(data)

            put_bytes("project.json", (json.dumps(portable, indent=1, ensure_ascii=False) + "\n").encode())
            n = len(files)
            for i, rel in enumerate(sorted(files)):
                f = files[rel]
                if i % 50 == 0:
                    say(0.3 + 0.65 * i / max(1, n), f"{i} of {n} files")
                if rel.endswith(".json"):
                    try:
                        obj = json.loads(f.read_text(encoding="utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        continue  # a damaged record is not exported
                    put_bytes(rel, (json.dumps(_portable(obj, mapping), indent=1, ensure_ascii=False) + "\n").encode())
                    continue
                kind = _kind(rel)
                compress = zipfile.ZIP_STORED if kind in ("zarr", "png", "skops", "safetensors") else zipfile.ZIP_DEFLATED
                zf.write(f, rel, compress_type=compress)
                size = f.stat().st_size
                index_files[rel] = {"bytes": size, "sha256": _sha256_file(f)}
                bytes_in += size
            put_bytes("index.html", _index_html(project, portable, index_files).encode())
            index = {"format": FORMAT, "format_version": FORMAT_VERSION,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "reactomo_version": _version(), "project": project.name,
                     "conditions": dict(project.conditions()), "with_scans": bool(with_scans),
                     "scans": scans_index, "models": sorted(model_dirs.values()),
                     "segmentations": sorted(segs), "files": index_files}
            put_bytes(CRATE, (json.dumps(_crate(project, index), indent=1, ensure_ascii=False) + "\n").encode())
            index["files"] = dict(index_files)
            data = (json.dumps(index, indent=1, ensure_ascii=False) + "\n").encode()
            zf.writestr(zipfile.ZipInfo(INDEX, date_time=time.gmtime()[:6]), data, compress_type=zipfile.ZIP_DEFLATED)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReactomoError(f"The archive could not be written to {out.parent} ({exc.strerror or exc}); nothing was saved.") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(1.0, f"wrote {out.name}")
    return ExportResult(path=out, files=len(index_files), bytes_in=bytes_in, bytes_out=out.stat().st_size,
                        seconds=time.perf_counter() - t0, scans_included=bool(with_scans))


def export_to_folder(project, *, with_scans: bool = False,
                     on_progress: Callable[[float, str], None] | None = None) -> ExportResult:
    """Export into the project's ``exports/`` as ``<project>-<UTC time>.reactomo.zip`` (the home page's export job);
    only the newest three archives are kept."""
    from core.workflow.paths import export_folder

    folder = export_folder(project)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    result = export_project(project, folder / f"{project.name}-{stamp}{'-with-scans' if with_scans else ''}{ARCHIVE_SUFFIX}",
                            with_scans=with_scans, on_progress=on_progress)
    for old in sorted(folder.glob(f"*{ARCHIVE_SUFFIX}"), key=lambda p: p.stat().st_mtime)[:-3]:
        old.unlink(missing_ok=True)
    return result


def export_bytes(project, name: str) -> bytes:
    """The archive ``name`` of the project's ``exports/`` (for the home page's download button)."""
    from core.workflow.paths import export_folder

    if PurePosixPath(name).name != name or not name.endswith(ARCHIVE_SUFFIX):
        raise ReactomoError(f"{name!r} is not an export of this project.")
    try:
        return (export_folder(project) / name).read_bytes()
    except FileNotFoundError:
        raise ReactomoError(f"The export {name} is gone; export the project again.") from None


def latest_export(project) -> tuple[str, Path, int] | None:
    """The newest archive in the project's ``exports/``: (file name, path, bytes), or None."""
    from core.workflow.paths import export_folder

    try:
        files = sorted(export_folder(project).glob(f"*{ARCHIVE_SUFFIX}"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return None
    if not files:
        return None
    return files[-1].name, files[-1], files[-1].stat().st_size


def _version() -> str:
    from core import __version__

    return __version__


def _crate(project, index: dict[str, Any]) -> dict[str, Any]:
    """The RO-Crate 1.1 metadata: the root Dataset with every file (size, SHA-256, media type) and the scans."""
    files = index["files"]
    parts = [{"@id": rel} for rel in sorted(files)]
    graph: list[dict[str, Any]] = [
        {"@id": CRATE, "@type": "CreativeWork", "conformsTo": {"@id": "https://w3id.org/ro/crate/1.1"},
         "about": {"@id": "./"}},
        {"@id": "./", "@type": "Dataset", "name": f"Reactomo project {project.name}",
         "description": "Phase volumes over time from 4D micro-CT, checked by the reaction's chemistry (Reactomo).",
         "datePublished": index["created"], "hasPart": parts,
         **({"keywords": [f"{k}: {v}" for k, v in index["conditions"].items()]} if index["conditions"] else {}),
         **({"mentions": [{"@id": f"#scan-{s['name']}"} for s in index["scans"] if not s["included"]]}
            if any(not s["included"] for s in index["scans"]) else {})},
    ]
    for rel in sorted(files):
        kind = _kind(rel) or "text"
        media = "text/html" if rel.endswith(".html") else "text/csv" if rel.endswith(".csv") else _MEDIA.get(kind)
        graph.append({"@id": rel, "@type": "File", "contentSize": str(files[rel]["bytes"]), "sha256": files[rel]["sha256"],
                      "encodingFormat": media})
    for s in index["scans"]:
        if not s["included"]:
            graph.append({"@id": f"#scan-{s['name']}", "@type": "File", "name": f"scan {s['name']} (not included)",
                          "description": "Referenced by its path on the exporting machine, its size and the SHA-256 of "
                                         "its first MiB.", "contentSize": str(s.get("bytes", "")),
                          "identifier": s.get("sha256_first_mib", "")})
    return {"@context": "https://w3id.org/ro/crate/1.1/context", "@graph": graph}


def _index_html(project, manifest: dict[str, Any], files: dict[str, Any]) -> str:
    """A small page linking the archive's reports, tables and 3D views (opened from the unzipped folder)."""
    e = html.escape
    rows = []
    for rel in sorted(files):
        if rel.endswith((".html", ".csv")) and (rel.startswith(("analysis/", "renders/", "segmentations/"))):
            rows.append(f'<li><a href="{e(rel)}">{e(rel)}</a></li>')
    cond = "; ".join(f"{e(k)} {e(v)}" for k, v in project.conditions().items())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + e(project.name) + " (Reactomo)</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}</style></head><body>"
            f"<h1>{e(project.name)}</h1><p>A Reactomo project: {len(manifest.get('scans', []))} time steps"
            + (f"; {cond}" if cond else "") + ".</p><p>Open a report below, or import this archive into Reactomo "
            "(<code>python -m core import FILE --name NEW</code>, or the home page) to work on it.</p><ul>"
            + "".join(rows) + "</ul></body></html>\n")


# --------------------------------------------------------------------------------------------------- import
def _refuse(sentence: str) -> ReactomoError:
    return ReactomoError(f"{sentence} Nothing was imported.")


def _entry_name(info: zipfile.ZipInfo) -> str:
    """The checked, relative POSIX path of an entry (refuses paths that leave the archive and links)."""
    name = info.filename
    mode = (info.external_attr >> 16) & 0o170000
    if mode == stat.S_IFLNK:
        return _bad(f"The archive holds a link ({name!r}); a Reactomo archive never does, so it was refused.")
    if info.flag_bits & 0x1:
        return _bad(f"The archive's entry {name!r} is encrypted; a Reactomo archive never is.")
    if "\\" in name or "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return _bad(f"The archive's entry {name!r} has an absolute or foreign path; refused.")
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".", "") for p in parts) or not parts:
        return _bad(f"The archive's entry {name!r} points outside the archive (..); refused.")
    if mode not in (0, stat.S_IFREG, stat.S_IFDIR):
        return _bad(f"The archive's entry {name!r} is not a plain file; refused.")
    return name


def _bad(sentence: str):
    raise _refuse(sentence)


def _check_content(rel: str, kind: str, head: bytes, path: Path) -> None:
    """Refuse a file whose content is not what its name says (a pickle under any name above all)."""
    if kind != "zarr" and len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        _bad(f"The archive's file {rel} is a Python pickle, which could run code when loaded; refused.")
    if kind == "json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            _bad(f"The archive's file {rel} is not valid JSON; refused.")
    elif kind == "tiff" and head[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        _bad(f"The archive's file {rel} is not a TIFF; refused.")
    elif kind == "png" and head[:8] != b"\x89PNG\r\n\x1a\n":
        _bad(f"The archive's file {rel} is not a PNG; refused.")
    elif kind == "safetensors":
        try:
            n = int.from_bytes(head[:8], "little")
            if not 2 <= n <= 100 * 1024**2:
                raise ValueError
            with open(path, "rb") as fh:
                fh.seek(8)
                header = json.loads(fh.read(n).decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError, json.JSONDecodeError):
            _bad(f"The archive's file {rel} is not a safetensors file; refused.")
    elif kind == "skops" and head[:4] != b"PK\x03\x04":
        _bad(f"The archive's file {rel} is not a skops file; refused.")
    elif kind == "text":
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            _bad(f"The archive's file {rel} is not text; refused.")


def import_project(archive: str | os.PathLike, name: str, *, workspace: str | os.PathLike | None = None,
                   max_bytes: int | None = None, on_progress: Callable[[float, str], None] | None = None) -> ImportResult:
    """Create project ``name`` from an archive written by :func:`export_project`, after checking everything in it.

    Raises
    ------
    ReactomoError
        One sentence naming what was wrong (see the module's docstring); nothing is created then.
    """
    from core.workflow.project import open_project, project_exists, sanitize_name, workspace_dir

    say = on_progress or (lambda f, m: None)
    t0 = time.perf_counter()
    archive = Path(archive)
    safe = sanitize_name(name)
    ws = workspace_dir(workspace)
    if project_exists(safe, workspace=ws) or (ws / safe).exists():
        raise ReactomoError(f"A project called '{safe}' already exists; choose another name for the import.")
    if not archive.is_file():
        raise ReactomoError(f"There is no archive at {archive}; give the path of a .reactomo.zip file.")
    if not zipfile.is_zipfile(archive):
        raise _refuse(f"{archive.name} is not a zip archive (a Reactomo archive is a .reactomo.zip).")
    limit = int(max_bytes if max_bytes is not None else float(os.environ.get("REACTOMO_IMPORT_MAX_GB", MAX_BYTES / 1024**3)) * 1024**3)
    for stale in ws.glob(".import-*"):  # what a killed import left (a day old: never one still running)
        try:
            if time.time() - stale.stat().st_mtime > 86400:
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
        except OSError:
            pass
    staging = ws / f".import-{safe}-{secrets.token_hex(4)}"
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ENTRIES:
                _bad(f"The archive holds {len(infos)} entries, more than a project ever has ({MAX_ENTRIES}); refused.")
            entries: dict[str, zipfile.ZipInfo] = {}
            for info in infos:
                rel = _entry_name(info)
                if info.is_dir():
                    continue
                if rel in entries:
                    _bad(f"The archive holds {rel} twice; refused.")
                entries[rel] = info
            if INDEX not in entries:
                _bad(f"{archive.name} has no {INDEX}: it was not written by Reactomo's export.")
            if entries[INDEX].file_size > MAX_INDEX_BYTES:
                _bad(f"The archive's {INDEX} is {entries[INDEX].file_size / 1e6:.0f} MB, far more than an index needs; refused.")
            try:
                index = json.loads(zf.read(INDEX).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile, OSError):
                _bad(f"The archive's {INDEX} is damaged; refused.")
            if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("files"), dict):
                _bad(f"The archive's {INDEX} is not a Reactomo archive index; refused.")
            if not isinstance(index.get("format_version"), int) or index["format_version"] > FORMAT_VERSION:
                _bad(f"The archive was written by a newer Reactomo (format {index.get('format_version')!r}); upgrade to import it.")
            declared: dict[str, dict[str, Any]] = index["files"]
            for rel, info in entries.items():
                if rel == INDEX:
                    continue
                d = declared.get(rel)
                if not isinstance(d, dict) or not isinstance(d.get("bytes"), int) or not isinstance(d.get("sha256"), str):
                    _bad(f"The archive holds {rel}, which its index does not list; refused (it was changed after export).")
                if info.file_size != d["bytes"]:
                    _bad(f"The archive's {rel} is {info.file_size} bytes, not the {d['bytes']} its index declares; refused.")
                if info.file_size > BOMB_MIN_BYTES and info.file_size > BOMB_RATIO * max(1, info.compress_size):
                    _bad(f"The archive's {rel} expands {info.file_size // max(1, info.compress_size)} times "
                         f"(to {info.file_size / 1e6:.0f} MB): a zip bomb; refused.")
                if rel != CRATE and _kind(rel) is None:
                    suffix = PurePosixPath(rel).suffix.lower()
                    if suffix in _PICKLE_SUFFIXES:
                        _bad(f"The archive holds {rel}, a pickle-type file that could run code when loaded; refused.")
                    _bad(f"The archive holds {rel}, a kind of file a Reactomo project never has; refused.")
            missing = sorted(set(declared) - set(entries))
            if missing:
                _bad(f"The archive lacks {missing[0]}{f' and {len(missing) - 1} more files' if len(missing) > 1 else ''} "
                     "that its index lists; refused.")
            total = sum(int(i.file_size) for i in entries.values())
            if total > limit:
                _bad(f"The archive would unpack to {total / 1e9:.1f} GB, more than the {limit / 1e9:.1f} GB allowed; refused.")
            free = shutil.disk_usage(ws).free
            if total > free - 100 * 1024**2:
                _bad(f"The archive would unpack to {total / 1e9:.1f} GB, but the workspace has only {free / 1e9:.1f} GB free.")
            # unpack, bounded by the declared sizes and checked against the declared checksums
            staging.mkdir()
            n = len(entries)
            for i, (rel, info) in enumerate(sorted(entries.items())):
                if i % 50 == 0:
                    say(0.05 + 0.6 * i / max(1, n), f"checking {i} of {n} files")
                if rel == INDEX:
                    continue
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                want = declared[rel]
                h = hashlib.sha256()
                size = 0
                head = b""
                with zf.open(info) as src, open(dest, "wb") as dst:
                    while True:
                        block = src.read(_CHUNK)
                        if not block:
                            break
                        size += len(block)
                        if size > want["bytes"]:
                            _bad(f"The archive's {rel} expands beyond its declared {want['bytes']} bytes; refused.")
                        if len(head) < 16:
                            head += block[:16]
                        h.update(block)
                        dst.write(block)
                if size != want["bytes"] or h.hexdigest() != want["sha256"]:
                    _bad(f"The archive's {rel} does not match its checksum: it was changed or damaged after export; refused.")
                _check_content(rel, _kind(rel) or "json", head, dest)
            say(0.7, "checking the phase table, models and classifier")
            manifest, missing_scans = _checked_manifest(staging, safe, index, ws)
            _check_models_and_labels(staging, manifest)
            say(0.85, "restoring the label volumes")
            _restore_labels(staging, manifest)
            from core.atomic import atomic_write_json

            atomic_write_json(staging / "project.json", manifest)
            (staging / "index.html").unlink(missing_ok=True)
            (staging / CRATE).unlink(missing_ok=True)
            if (ws / safe).exists():
                raise ReactomoError(f"A project called '{safe}' appeared while importing; choose another name.")
            os.rename(staging, ws / safe)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _refuse(f"{archive.name} is a damaged zip archive ({exc}).") from None
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ReactomoError(f"The import could not be written to the workspace ({exc.strerror or exc}); nothing was imported.") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    project = open_project(safe, workspace=ws)
    say(1.0, f"imported {safe}")
    return ImportResult(project=project, files=len(entries) - 1, bytes=total, seconds=time.perf_counter() - t0,
                        scans_missing=missing_scans)


def import_upload(data, name: str, *, workspace: str | os.PathLike | None = None,
                  on_progress: Callable[[float, str], None] | None = None) -> ImportResult:
    """:func:`import_project` of an uploaded archive (bytes or a readable binary file such as Streamlit's
    ``UploadedFile``), streamed to a hidden file of the workspace in 8 MB chunks and removed afterwards."""
    from core.workflow.project import sanitize_name, workspace_dir

    ws = workspace_dir(workspace)
    sanitize_name(name)  # a bad name is refused before the upload is copied
    tmp = ws / f".import-upload-{secrets.token_hex(6)}{ARCHIVE_SUFFIX}"
    try:
        with open(tmp, "wb") as out:
            if isinstance(data, (bytes, bytearray, memoryview)):
                out.write(data)
            else:
                if hasattr(data, "seek"):
                    data.seek(0)
                for block in iter(lambda: data.read(8 * _CHUNK), b""):
                    out.write(block)
        return import_project(tmp, name, workspace=ws, on_progress=on_progress)
    except OSError as exc:
        raise ReactomoError(f"The upload could not be saved in the workspace ({exc.strerror or exc}); nothing was imported.") from None
    finally:
        tmp.unlink(missing_ok=True)


def _checked_manifest(staging: Path, name: str, index: dict[str, Any], ws: Path) -> tuple[dict[str, Any], list[str]]:
    """The archive's manifest, validated, renamed and re-rooted at the new project (absolute paths where the
    project keeps them), and the names of the referenced scans that are not on this server."""
    from core.workflow.project import _Invalid, _validate, data_roots

    try:
        m = _validate(json.loads((staging / "project.json").read_text(encoding="utf-8")))
    except FileNotFoundError:
        _bad("The archive has no project.json; refused.")
    except (_Invalid, ReactomoError) as exc:
        _bad(f"The archive's project.json is not a valid manifest ({str(exc).rstrip('.')}); refused.")
    root = ws / name
    m["name"] = name
    m["imported"] = {"from_project": index.get("project"), "exported": index.get("created"),
                     "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def inside(rel: object, what: str) -> str:
        p = PurePosixPath(str(rel))
        if p.is_absolute() or ".." in p.parts:
            _bad(f"The archive's manifest points {what} outside the project ({rel}); refused.")
        return str(root / p)

    def model_ref(rel: object) -> str:
        """A model the archive holds (models/<name>), re-rooted; "" for one it does not hold."""
        p = PurePosixPath(str(rel))
        if p.is_absolute() or ".." in p.parts or not (staging / p / "card.json").is_file():
            return ""
        return str(root / p)

    for key in ("segmentations", "analysis"):
        for rec in m[key].values():
            if not isinstance(rec, dict):
                continue
            for k in ("path", "segmentation"):
                if k in rec:
                    rec[k] = inside(rec[k], f"{key} {k}")
            if key == "segmentations" and rec.get("model"):
                rec["model"] = model_ref(rec["model"])
    for rec in m["models"]:
        if isinstance(rec, dict) and "path" in rec:
            rec["path"] = model_ref(rec["path"])
    roots = data_roots(workspace=ws)
    missing = []
    for s in m["scans"]:
        p = PurePosixPath(s["path"])
        if not p.is_absolute():
            inside(s["path"], "a scan")
            if not (staging / s["path"]).exists():
                missing.append(s["name"])
            continue
        real = Path(s["path"]).resolve()
        if not real.exists() or not any(real.is_relative_to(r) for r in roots):
            # a reference this server cannot (or may not) read: where the scan goes when copied in
            s["path"] = f"scans/{Path(s['path']).name}"
            missing.append(s["name"])
    if m.get("demo"):
        m["demo"] = {k: v for k, v in m["demo"].items()}
    return m, missing


def _check_models_and_labels(staging: Path, m: dict[str, Any]) -> None:
    """Every model card, classifier and label export agrees with the manifest's phase table; weights and classifier
    load without unpickling (safetensors; skops with trusted types)."""
    from core.phases import PhaseTable

    phases = PhaseTable.from_dict(m["phases"])
    table = {p.code: p.name for p in phases}
    models = staging / "models"
    for card in sorted(models.glob("*/card.json")) if models.is_dir() else []:
        from core.network.bundle import load_bundle

        try:
            load_bundle(card.parent, phases=phases)
        except ReactomoError as exc:
            _bad(f"The archive's model {card.parent.name} does not load ({str(exc).rstrip('.')}); refused.")
    for skops in sorted(staging.glob("ground_truth/**/*.skops")):
        from core.labelling.forest import load_forest

        try:
            load_forest(skops, phases=phases)
        except ReactomoError as exc:
            _bad(f"The archive's classifier {skops.relative_to(staging)} was refused ({str(exc).rstrip('.')}).")
    for z in sorted(staging.glob("segmentations/*/labels.ome.zarr")):
        try:
            attrs = json.loads((z / "zarr.json").read_text(encoding="utf-8"))["attributes"]["reactomo"]
            saved = {int(p["code"]): p["name"] for p in attrs["phases"]}
        except (OSError, KeyError, TypeError, ValueError):
            _bad(f"The archive's {z.relative_to(staging)} has no phase table; refused.")
        if saved != table:
            _bad(f"The archive's {z.relative_to(staging)} was made with another phase table ({saved}) than the "
                 f"project's ({table}); refused.")


def _restore_labels(staging: Path, m: dict[str, Any]) -> None:
    """Write every segmentation's label TIFFs back from its OME-Zarr (the form the pages and the CLI read)."""
    import numpy as np
    import zarr

    from core.imaging.io import write_labels

    for z in sorted(staging.glob("segmentations/*/labels.ome.zarr")):
        seg = z.parent
        g = zarr.open_group(str(z), mode="r")
        vs = float(g.attrs["reactomo"].get("voxel_size_um") or m["voxel_size_um"])
        for name in g.attrs["ome"]["labels"]:
            step = g[name]
            file = PurePosixPath(str(step.attrs.get("reactomo", {}).get("label_file") or f"{name}.tif")).name
            if not file.endswith(".tif"):
                _bad(f"The archive's label volume {name} names a file {file!r}; refused.")
            arr = np.asarray(step["0"][:])
            if arr.dtype != np.uint8 or arr.ndim != 3:
                _bad(f"The archive's label volume {name} is not a uint8 volume; refused.")
            write_labels(seg / file, arr, voxel_size_um=vs)
