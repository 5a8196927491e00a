"""The 3D step: a block of a segmentation's step as phase surfaces, pictures, exports and 3D numbers, cached.

One step, one name: ``pages/7_3D.py`` (as a job in the worker), ``python -m core render`` and this module.

- :func:`render_labels`: a label TIFF (and optionally its grey-value scan) to a folder: ``<phase>.vtp`` and ``.ply``
  (µm; ``.stl`` is made on demand by :meth:`RenderResult.surfaces_zip`), ``view.png``, ``view.html``
  (self-contained, offline), ``volume.png`` (grey values, when given),
  ``numbers.csv`` and ``objects.csv`` (:mod:`core.render.morphology`) and ``render.json`` (settings, triangle
  counts, bounds in µm, the numbers, the method, versions, seconds). Written into a temporary folder and renamed,
  so a cache entry is complete or absent.
- :func:`render_segmentation`: the same for step ``k`` of a project's segmentation, cached in
  ``renders/<segmentation>/t<k>-<key>/``. The key hashes the label file (size and mtime), the block, the factor,
  the phases, their colours and opacities and the triangle budget, so the second time a slider lands on a step
  it is read back instead of meshed. :func:`cached_render` only looks.
- :func:`numbers_over_time`: the 3D numbers of the same block at every segmented step (objects, volume
  distribution, surface area, specific surface, the largest pore cluster's share), cached in
  ``renders/<segmentation>/numbers-<key>.json`` and ``.csv``; :func:`cached_numbers_over_time` only looks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.atomic import _UMASK, atomic_write_json, atomic_write_text
from core.errors import ReactomoError
from core.phases import PhaseTable
from core.render.surfaces import RenderConfig, check_block, default_block

__all__ = ["RenderResult", "render_labels", "render_segmentation", "cached_render", "render_key", "label_shape",
           "voxel_size", "RENDER_FILES", "NumbersOverTime", "numbers_over_time", "cached_numbers_over_time", "OVER_TIME_COLUMNS"]

FORMAT = "reactomo.render"
#: Files of a render folder besides the surfaces.
RENDER_FILES = ("render.json", "view.png", "view.html", "numbers.csv", "objects.csv")


@dataclass
class RenderResult:
    """A finished render: its folder, its record (``render.json``) and whether it came from the cache."""

    folder: Path
    record: dict[str, Any]
    cached: bool = False

    @property
    def html(self) -> Path:
        return self.folder / "view.html"

    @property
    def png(self) -> Path:
        return self.folder / "view.png"

    @property
    def volume_png(self) -> Path | None:
        p = self.folder / "volume.png"
        return p if p.exists() else None

    @property
    def numbers(self) -> list[dict[str, Any]]:
        return list(self.record.get("numbers") or [])

    def surface_files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.suffix in (".vtp", ".ply", ".stl"))

    # what a page shows or offers for download (pages never open a result file themselves)
    def html_text(self) -> str:
        """The self-contained interactive view."""
        return self.html.read_text(encoding="utf-8")

    def file_bytes(self, name: str) -> bytes | None:
        """One file of the render by name (``view.png``, ``volume.png``, ``numbers.csv``, ``objects.csv``), or None."""
        if name not in RENDER_FILES + ("volume.png",):
            raise ReactomoError(f"{name!r} is not a file of a render; use one of {', '.join(RENDER_FILES)}, volume.png.")
        try:
            return (self.folder / name).read_bytes()
        except OSError:
            return None

    def surfaces_zip(self) -> bytes:
        """Every surface (.vtp, .ply, .stl in µm) and the numbers in one zip, for collaborators."""
        import zipfile

        import pyvista as pv

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in self.surface_files() + [self.folder / n for n in ("numbers.csv", "objects.csv", "render.json")]:
                if p.exists():
                    z.write(p, p.name)
            for p in self.surface_files():
                if p.suffix == ".vtp" and not p.with_suffix(".stl").exists():
                    with tempfile.TemporaryDirectory() as t:
                        stl = Path(t) / f"{p.stem}.stl"
                        pv.read(p).save(stl, binary=True)
                        z.write(stl, stl.name)
        return buf.getvalue()

    def caption(self) -> str:
        """What is shown: block bounds in voxels and µm, factor, triangles per phase."""
        r = self.record
        b, bz, by, bx = r["block"], r["bounds_um"]["z"], r["bounds_um"]["y"], r["bounds_um"]["x"]
        kept = r.get("volume_kept") or {}
        tri = ", ".join(f"{k} {v:,}" + (f" ({kept[k] * 100:.1f} % of its voxel volume)" if k in kept else "")
                        for k, v in r["triangles"].items())
        return (f"Block z {b[0]}-{b[1]}, y {b[2]}-{b[3]}, x {b[4]}-{b[5]} voxels ({bz[1] - bz[0]:.0f} × "
                f"{by[1] - by[0]:.0f} × {bx[1] - bx[0]:.0f} µm), factor {r['settings']['factor']}; "
                f"triangles: {tri or 'none'}; made in {r.get('seconds', 0):.1f} s{' (cached)' if self.cached else ''}.")


def _versions() -> dict[str, str]:
    import fast_simplification
    import numpy
    import pyvista
    import vtk

    import core

    return {"reactomo": core.__version__, "numpy": numpy.__version__, "pyvista": pyvista.__version__,
            "vtk": vtk.vtkVersion.GetVTKVersion(), "fast-simplification": getattr(fast_simplification, "__version__", "?")}


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def render_labels(labels_path: str | os.PathLike, out_dir: str | os.PathLike, config: RenderConfig | None = None, *,
                  voxel_size_um: float, phases: PhaseTable, grey_path: str | os.PathLike | None = None,
                  grey_offset: tuple[int, int, int] = (0, 0, 0), on_progress: Callable[[float, str], None] | None = None,
                  extra: dict[str, Any] | None = None, caption: str = "") -> RenderResult:
    """Render a block of the label volume at ``labels_path`` into ``out_dir`` (created; must not hold a render).

    ``grey_path`` is the scan the labels were segmented from; ``grey_offset`` the (z, y, x) voxel of the scan at
    the label volume's ``[0, 0, 0]`` (a segmentation of a region of interest starts inside its scan).
    """
    import numpy as np

    from core.imaging.io import open_volume
    from core.render.morphology import METHOD, block_numbers, object_rows
    from core.render.surfaces import RENDER_FORMATS, build_surfaces, downsample_labels, interface_area_um2, save_surfaces
    from core.render.views import save_html, save_png, scene, volume_png

    t0 = time.perf_counter()
    report = on_progress or (lambda f, m: None)
    config = config or RenderConfig()
    if not voxel_size_um or not np.isfinite(voxel_size_um) or voxel_size_um <= 0:
        raise ReactomoError(f"The voxel size must be a positive number of µm; got {voxel_size_um!r}.")
    unknown = [c for c in config.phases if c not in phases.codes]
    if unknown:
        raise ReactomoError(f"Phase code(s) {unknown} are not in the phase table (codes {list(phases.codes)}).")
    out_dir = Path(out_dir)
    if (out_dir / "render.json").exists():
        raise ReactomoError(f"{out_dir} already holds a render; choose another output folder.")
    report(0.01, "Reading the block")
    with open_volume(labels_path) as vol:
        if vol.dtype.kind not in "ui":
            raise ReactomoError(f"{Path(labels_path).name} is not a label volume (it holds {vol.dtype} values); "
                                "give the label TIFF of a segmentation.")
        shape = vol.shape
        block = check_block(config.block or default_block(shape, factor=config.factor), shape, config.factor)
        labels = vol.block(*block)
    labels = downsample_labels(labels, config.factor)
    spacing = float(voxel_size_um) * config.factor
    z0, _, y0, _, x0, _ = block
    origin = ((z0 + config.factor / 2) * voxel_size_um, (y0 + config.factor / 2) * voxel_size_um,
              (x0 + config.factor / 2) * voxel_size_um)  # centre of the first (downsampled) voxel, (z, y, x)
    bounds = (x0 * voxel_size_um, (x0 + labels.shape[2] * config.factor) * voxel_size_um,
              y0 * voxel_size_um, (y0 + labels.shape[1] * config.factor) * voxel_size_um,
              z0 * voxel_size_um, (z0 + labels.shape[0] * config.factor) * voxel_size_um)
    surfaces = build_surfaces(labels, config, spacing_um=spacing, origin_um=origin, phases=phases,
                              on_progress=lambda f, m: report(0.05 + 0.55 * f, m))
    report(0.62, "3D numbers")
    areas = {c: interface_area_um2(surfaces[c], labels == c, spacing) for c in config.phases}
    numbers = block_numbers(labels, config.phases, phases=phases, voxel_size_um=spacing, surface_areas_um2=areas)
    objects = [r for c in config.phases
               for r in object_rows(labels, c, voxel_size_um=spacing, phase_name=phases.by_code(c).name)]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700: a team's server shares the project
    try:
        report(0.7, "Saving the surfaces")
        save_surfaces(surfaces, tmp, phases, formats=RENDER_FORMATS)
        report(0.78, "Picture and interactive view")
        opacity = {c: config.opacity_of(c) for c in config.phases}
        text = caption or f"block z {block[0]}-{block[1]}, y {block[2]}-{block[3]}, x {block[4]}-{block[5]}"
        plotter = scene(surfaces, phases, bounds_um=bounds, opacity=opacity, caption=text)
        try:
            save_png(plotter, tmp / "view.png")
            save_html(plotter, tmp / "view.html")
        finally:
            plotter.close()
        grey_file = None
        if grey_path is not None:
            report(0.9, "Volume rendering of the grey values")
            gz, gy, gx = grey_offset
            with open_volume(grey_path) as g:
                grey = g.block(z0 + gz, block[1] + gz, y0 + gy, block[3] + gy, x0 + gx, block[5] + gx)
            if config.factor > 1:
                f = config.factor
                grey = grey[::f, ::f, ::f]
            volume_png(grey, tmp / "volume.png", spacing_um=spacing, bounds_um=bounds, caption=text)
            grey_file = str(grey_path)
        atomic_write_text(tmp / "numbers.csv", _csv(numbers))
        atomic_write_text(tmp / "objects.csv", _csv(objects))
        record = {
            "format": FORMAT, "format_version": 1, "labels": str(labels_path), "grey": grey_file,
            "shape": list(shape), "block": list(block), "block_shape": list(labels.shape),
            "settings": config.to_dict(), "voxel_size_um": float(voxel_size_um), "mesh_voxel_um": spacing,
            "bounds_um": {"x": list(bounds[0:2]), "y": list(bounds[2:4]), "z": list(bounds[4:6])},
            "triangles": {phases.by_code(c).name: int(m.n_cells) for c, m in surfaces.items()},
            "volume_kept": {phases.by_code(c).name: float(m.field_data["volume_kept"][0])
                            for c, m in surfaces.items() if "volume_kept" in m.field_data},
            "numbers": numbers, "method": METHOD, "phases": phases.to_dict(), "versions": _versions(),
            "seconds": round(time.perf_counter() - t0, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(extra or {}),
        }
        atomic_write_json(tmp / "render.json", record)
        os.replace(tmp, out_dir) if not out_dir.exists() else _replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report(1.0, f"Rendered in {record['seconds']:.1f} s")
    return RenderResult(out_dir, record, cached=False)


def _replace_folder(tmp: Path, out_dir: Path) -> None:
    """``out_dir`` exists (empty, or a user's folder without a render): move the files in, one by one."""
    for p in tmp.iterdir():
        os.replace(p, out_dir / p.name)
    tmp.rmdir()


# ------------------------------------------------------------------------------------------------ for a project
def render_key(label_file: Path, config: RenderConfig, phases: PhaseTable, voxel_size_um: float) -> str:
    """The cache key of a render: the label file's size and mtime, the settings, the phase colours, the voxel size."""
    try:
        st = label_file.stat()
        stamp = [st.st_size, st.st_mtime_ns]
    except OSError:
        stamp = None
    blob = json.dumps({"file": stamp, "config": config.to_dict(), "voxel": voxel_size_um,
                       "colours": {p.code: p.colour for p in phases}, "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _step_source(project, name: str, step: int) -> tuple[Path, Path | None, tuple[int, int, int], float, PhaseTable]:
    from core.phases import PhaseTable
    from core.workflow.paths import segmentation_record

    rec = segmentation_record(project, name)
    if rec is None:
        raise ReactomoError(f"Project '{project.name}' has no segmentation called '{name}' with a record; segment it "
                            "first on the Segment page.")
    steps = {int(s["step"]): s for s in rec.get("steps", []) if isinstance(s, dict) and "step" in s}
    done = sorted(k for k, s in steps.items() if s.get("status") == "done")
    if step not in steps or steps[step].get("status") != "done":
        raise ReactomoError(f"Step {step} of segmentation '{name}' is not segmented (done: "
                            f"{', '.join(map(str, done)) or 'none'}); choose a segmented step.")
    settings = rec.get("settings") or {}
    z_range, region = settings.get("z_range"), settings.get("region")
    offset = (int(z_range[0]) if z_range else 0, int(region[0]) if region else 0, int(region[2]) if region else 0)
    scan = Path(steps[step]["scan"]) if steps[step].get("scan") else None
    voxel = rec.get("voxel_size_um") or project.voxel_size_um()
    phases = PhaseTable.from_dict(rec["phases"]) if rec.get("phases") else project.phases()
    return Path(steps[step]["out_path"]), scan if scan and scan.exists() else None, offset, float(voxel), phases


def voxel_size(project, name: str) -> float:
    """The voxel size (µm) the 3D views of segmentation ``name`` are meshed with (:func:`core.workflow.paths.
    segmentation_voxel_size`: its record's, else the project's)."""
    from core.workflow.paths import segmentation_voxel_size

    return segmentation_voxel_size(project, name)


def label_shape(project, name: str, step: int) -> tuple[int, int, int]:
    """The (z, y, x) shape of step ``step``'s label volume (headers only), for choosing a block."""
    from core.imaging.io import open_volume

    labels, *_ = _step_source(project, name, step)
    with open_volume(labels) as vol:
        return tuple(int(n) for n in vol.shape)


def _folder(project, name: str, step: int, key: str) -> Path:
    from core.workflow.paths import render_folder

    return render_folder(project, name) / f"t{step:03d}-{key}"


def cached_render(project, name: str, step: int, config: RenderConfig | None = None) -> RenderResult | None:
    """The cached render of step ``step`` of segmentation ``name`` with these settings, or None (nothing is made)."""
    config = config or RenderConfig()
    try:
        labels, _, _, voxel, phases = _step_source(project, name, step)
    except ReactomoError:
        return None
    folder = _folder(project, name, step, render_key(labels, config, phases, voxel))
    try:
        record = json.loads((folder / "render.json").read_text())
    except (OSError, ValueError):
        return None
    return RenderResult(folder, record, cached=True)


def render_segmentation(project, name: str, step: int, config: RenderConfig | None = None, *,
                        on_progress: Callable[[float, str], None] | None = None) -> RenderResult:
    """Render a block of step ``step`` of the project's segmentation ``name``; cached (see the module)."""
    config = config or RenderConfig()
    hit = cached_render(project, name, step, config)
    if hit is not None:
        if on_progress:
            on_progress(1.0, "From the cache")
        return hit
    labels, scan, offset, voxel, phases = _step_source(project, name, step)
    folder = _folder(project, name, step, render_key(labels, config, phases, voxel))
    times = project.times_s()
    when = f", t = {times[step]:g} s" if step < len(times) else ""
    return render_labels(labels, folder, config, voxel_size_um=voxel, phases=phases, grey_path=scan,
                         grey_offset=offset, on_progress=on_progress,
                         extra={"project": project.name, "segmentation": name, "step": step},
                         caption=f"{project.name} / {name}, step {step}{when}")


# ------------------------------------------------------------------------------------------ numbers over time
#: The numbers that can be followed over time: column -> (label, unit).
OVER_TIME_COLUMNS: dict[str, tuple[str, str]] = {
    "volume_fraction": ("Share of the block", ""),
    "objects": ("Objects", "count"),
    "object_volume_median_um3": ("Median object volume", "µm³"),
    "equivalent_diameter_median_um": ("Median equivalent diameter", "µm"),
    "surface_area_mm2": ("Surface area", "mm²"),
    "specific_surface_per_mm": ("Specific surface", "mm²/mm³"),
    "largest_cluster_share": ("Largest pore cluster's share", ""),
}


@dataclass
class NumbersOverTime:
    """The 3D numbers of one block at every segmented step: its record and whether it came from the cache."""

    path: Path
    record: dict[str, Any]
    cached: bool = False

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row per step and phase: ``step``, ``time_s``, ``phase`` and the numbers of :mod:`core.render.morphology`."""
        return list(self.record.get("rows") or [])

    def csv_text(self) -> str:
        return _csv(self.rows)

    def caption(self) -> str:
        r = self.record
        b = r["block"]
        return (f"Block z {b[0]}-{b[1]}, y {b[2]}-{b[3]}, x {b[4]}-{b[5]} voxels, factor {r['settings']['factor']}, "
                f"{len(r['steps'])} step{'s' if len(r['steps']) != 1 else ''}; made in {r.get('seconds', 0):.1f} s{' (cached)' if self.cached else ''}.")


def _over_time_sources(project, name: str) -> list[tuple[int, Path, float, PhaseTable]]:
    from core.workflow.paths import segmentation_record

    rec = segmentation_record(project, name)
    if rec is None:
        raise ReactomoError(f"Project '{project.name}' has no segmentation called '{name}' with a record; segment it "
                            "first on the Segment page.")
    done = sorted(int(s["step"]) for s in rec.get("steps", [])
                  if isinstance(s, dict) and "step" in s and s.get("status") == "done")
    if not done:
        raise ReactomoError(f"Segmentation '{name}' has no segmented step yet; segment it first on the Segment page.")
    out = []
    for k in done:
        labels, _, _, voxel, phases = _step_source(project, name, k)
        out.append((k, labels, voxel, phases))
    return out


def _over_time_key(sources, config: RenderConfig) -> str:
    stamps = []
    for k, labels, voxel, phases in sources:
        try:
            st = labels.stat()
            stamps.append([k, st.st_size, st.st_mtime_ns, voxel])
        except OSError:
            stamps.append([k, None, None, voxel])
    # only what changes the numbers: the block, the factor, the phases (not colours, opacities or the triangle budget)
    blob = json.dumps({"steps": stamps, "block": config.block, "factor": config.factor, "phases": list(config.phases),
                       "v": 1}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _over_time_path(project, name: str, key: str) -> Path:
    from core.workflow.paths import render_folder

    return render_folder(project, name) / f"numbers-{key}.json"


def cached_numbers_over_time(project, name: str, config: RenderConfig | None = None) -> NumbersOverTime | None:
    """The cached numbers over time of segmentation ``name`` with these settings, or None (nothing is computed).

    A step segmented again, or a step added, changes the key: the old numbers are not shown as current."""
    config = config or RenderConfig()
    try:
        sources = _over_time_sources(project, name)
    except ReactomoError:
        return None
    path = _over_time_path(project, name, _over_time_key(sources, config))
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return NumbersOverTime(path, record, cached=True)


def numbers_over_time(project, name: str, config: RenderConfig | None = None, *,
                      on_progress: Callable[[float, str], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> NumbersOverTime:
    """The 3D numbers of one block of segmentation ``name`` at every segmented step, cached (see the module).

    The block and factor are those of ``config`` (the default central block when it has none), the same at every
    step, so the numbers are comparable over time; the surface areas come from the same smoothed surface-nets
    surfaces as the view, before any triangle reduction. Written as ``numbers-<key>.json`` (settings, block, rows,
    method, versions) and ``numbers-<key>.csv``.
    """
    import numpy as np

    from core.errors import JobCancelled
    from core.imaging.io import open_volume
    from core.render.morphology import METHOD
    from core.render.surfaces import block_surface_numbers, downsample_labels

    config = config or RenderConfig()
    report = on_progress or (lambda f, m: None)
    hit = cached_numbers_over_time(project, name, config)
    if hit is not None:
        report(1.0, "From the cache")
        return hit
    t0 = time.perf_counter()
    sources = _over_time_sources(project, name)
    key = _over_time_key(sources, config)
    times = project.times_s()
    rows: list[dict[str, Any]] = []
    block = shape = None
    spacing = None
    for i, (k, labels_path, voxel, phases) in enumerate(sources):
        if should_stop is not None and should_stop():
            raise JobCancelled("Stopped before every step's 3D numbers were computed; nothing was saved.")
        report(i / len(sources), f"Step {k}: 3D numbers ({i + 1} of {len(sources)})")
        unknown = [c for c in config.phases if c not in phases.codes]
        if unknown:
            raise ReactomoError(f"Phase code(s) {unknown} are not in the phase table (codes {list(phases.codes)}).")
        with open_volume(labels_path) as vol:
            if vol.dtype.kind not in "ui":
                raise ReactomoError(f"{labels_path.name} is not a label volume (it holds {vol.dtype} values).")
            if shape is None:
                shape = tuple(int(n) for n in vol.shape)
                block = check_block(config.block or default_block(shape, factor=config.factor), shape, config.factor)
            elif tuple(vol.shape) != shape:
                raise ReactomoError(f"Step {k} of '{name}' has shape {tuple(vol.shape)}, unlike step {sources[0][0]}'s "
                                    f"{shape}; the same block cannot be followed over time.")
            labels = downsample_labels(vol.block(*block), config.factor)
        spacing = float(voxel) * config.factor
        when = float(times[k]) if k < len(times) and times[k] is not None and np.isfinite(times[k]) else None
        for row in block_surface_numbers(labels, config.phases, phases=phases, spacing_um=spacing):
            rows.append({"step": k, "time_s": when, **row})
    record = {"format": "reactomo.numbers-over-time", "format_version": 1, "project": project.name,
              "segmentation": name, "steps": [s[0] for s in sources], "shape": list(shape), "block": list(block),
              "settings": {"block": config.block, "factor": config.factor, "phases": list(config.phases)},
              "mesh_voxel_um": spacing, "rows": rows, "method": METHOD, "versions": _versions(),
              "seconds": round(time.perf_counter() - t0, 2),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = _over_time_path(project, name, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path.with_suffix(".csv"), _csv(rows))
    atomic_write_json(path, record)
    report(1.0, f"3D numbers of {len(sources)} step{'s' if len(sources) != 1 else ''} in {record['seconds']:.1f} s")
    return NumbersOverTime(path, record, cached=False)
