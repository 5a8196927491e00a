"""A segmentation's label volumes as OME-Zarr 0.5, for napari, Fiji (MoBIE), webKnossos and other OME-NGFF readers.

Layout (OME-NGFF 0.5, Zarr v3)::

    LABELS.ome.zarr/            group; attrs {"ome": {"version": "0.5", "labels": ["t000", "t001", ...]}}
        t000/                   one label image per time step; attrs {"ome": {"version": "0.5",
                                  "multiscales": [axes z, y, x in micrometre, one dataset "0" scaled by the voxel size],
                                  "image-label": {"colors": phase colours, "properties": phase names, "source": ...}}}
            0/                  uint8 array of the step's phase codes, chunks of (64, 256, 256) voxels

Each step is its own array, chunked, so a viewer opens one step (one chunk at a time) without reading the others.
The phase colours and names are those of the project (``image-label``), so the labels look the same as on the pages.
Written into a temporary folder and renamed: the export is complete or absent. Steps are copied slab by slab, so a
2016^3 step never sits in memory whole.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import ReactomoError
from core.phases import PhaseTable

__all__ = ["export_labels", "export_labels_hdf5", "CHUNKS", "OME_VERSION"]

OME_VERSION = "0.5"
CHUNKS = (64, 256, 256)


def _rgba(colour: str) -> list[int]:
    c = colour.lstrip("#")
    return [int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255]


def export_labels(seg_dir: str | os.PathLike, out: str | os.PathLike, *, phases: PhaseTable | None = None,
                  chunks: tuple[int, int, int] = CHUNKS,
                  on_progress: Callable[[float, str], None] | None = None) -> Path:
    """Write every finished step of the segmentation in ``seg_dir`` to ``out`` (a new ``.ome.zarr`` folder).

    Parameters
    ----------
    seg_dir : path-like
        A segmentation folder (``segment``, ``run`` or the Segment page): its record names the steps and the phases.
    out : path-like
        The OME-Zarr folder to create; it must not exist.
    phases : PhaseTable, optional
        Overrides the record's phase table (names and colours).
    chunks : (z, y, x)
        Chunk shape of every step's array.

    Raises
    ------
    ReactomoError
        No segmentation there, no finished step, an output that exists, or a step that cannot be read.
    """
    import zarr

    from core.analysis.results import load_series
    from core.imaging.io import open_volume

    say = on_progress or (lambda f, m: None)
    out = Path(out)
    if out.exists():
        raise ReactomoError(f"{out} already exists; choose a new name for the OME-Zarr export.")
    if not out.name.endswith(".zarr"):
        raise ReactomoError(f"The export's name {out.name!r} should end in .ome.zarr (e.g. labels.ome.zarr).")
    if len(chunks) != 3 or any(not isinstance(c, int) or c < 1 for c in chunks):
        raise ReactomoError(f"Chunks must be three whole numbers (z, y, x); got {chunks!r}.")
    data = load_series(seg_dir, phases=phases)
    phases = data.phases
    vs = float(data.voxel_size_um)
    names = [f"t{int(k):03d}" for k in data.steps]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}-{os.getpid()}-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs["ome"] = {"version": OME_VERSION, "labels": names}
        colours = [{"label-value": p.code, "rgba": _rgba(p.colour)} for p in phases]
        props = [{"label-value": p.code, "name": p.name, **({"formula": p.formula} if getattr(p, "formula", None) else {})}
                 for p in phases]
        for i, (name, path, k) in enumerate(zip(names, data.paths, data.steps)):
            say(i / len(names), f"step {k}")
            with open_volume(path) as vol:
                if vol.dtype.kind not in "ui":
                    raise ReactomoError(f"{Path(path).name} is not a label volume ({vol.dtype}).")
                nz, ny, nx = (int(n) for n in vol.shape)
                g = root.create_group(name)
                arr = g.create_array("0", shape=(nz, ny, nx), dtype="uint8",
                                     chunks=tuple(min(c, n) for c, n in zip(chunks, (nz, ny, nx))), fill_value=0,
                                     dimension_names=("z", "y", "x"))
                step = max(1, min(chunks[0], nz))
                for z0 in range(0, nz, step):
                    z1 = min(nz, z0 + step)
                    arr[z0:z1] = vol.block(z0, z1, 0, ny, 0, nx)
            t = data.times_s[i] if i < len(data.times_s) else None
            g.attrs["ome"] = {
                "version": OME_VERSION,
                "multiscales": [{
                    "name": name,
                    "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
                    "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [vs, vs, vs]}]}],
                }],
                "image-label": {"version": OME_VERSION, "colors": colours, "properties": props},
            }
            g.attrs["reactomo"] = {"step": int(k), "time_s": t, "label_file": Path(path).name}
        root.attrs["reactomo"] = {"segmentation": Path(seg_dir).name, "steps": [int(k) for k in data.steps],
                                  "voxel_size_um": vs, "phases": phases.to_dict(),
                                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(1.0, f"{len(names)} step(s) written to {out.name}")
    return out


def export_labels_hdf5(seg_dir: str | os.PathLike, out: str | os.PathLike, *, phases: PhaseTable | None = None,
                       chunks: tuple[int, int, int] = CHUNKS,
                       on_progress: Callable[[float, str], None] | None = None) -> Path:
    """The same label volumes as one HDF5 file (for those who ask for HDF5: ilastik, Avizo/Amira, MATLAB, h5py).

    One gzip-compressed, chunked uint8 dataset per step (``/t000``, ``/t001``, ...) with ``element_size_um`` (z, y, x;
    the attribute Fiji's and ilastik's HDF5 readers take), ``step``, ``time_s`` and ``label_file``; the file's own
    attributes hold the phase table as JSON (``phases``) and ``label_names`` / ``label_colours`` per code. Written to a
    temporary name and renamed.
    """
    import json

    import h5py
    import numpy as np

    from core.analysis.results import load_series
    from core.imaging.io import open_volume

    say = on_progress or (lambda f, m: None)
    out = Path(out)
    if out.exists():
        raise ReactomoError(f"{out} already exists; choose a new name for the HDF5 export.")
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise ReactomoError(f"The export's name {out.name!r} should end in .h5 (or .ome.zarr for OME-Zarr).")
    data = load_series(seg_dir, phases=phases)
    phases = data.phases
    vs = float(data.voxel_size_um)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}-{os.getpid()}-tmp"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "reactomo.labels"
            f.attrs["phases"] = json.dumps(phases.to_dict())
            f.attrs["label_names"] = json.dumps({str(p.code): p.name for p in phases})
            f.attrs["label_colours"] = json.dumps({str(p.code): p.colour for p in phases})
            f.attrs["voxel_size_um"] = vs
            f.attrs["segmentation"] = Path(seg_dir).name
            for i, (path, k) in enumerate(zip(data.paths, data.steps)):
                name = f"t{int(k):03d}"
                say(i / len(data.steps), f"step {k}")
                with open_volume(path) as vol:
                    if vol.dtype.kind not in "ui":
                        raise ReactomoError(f"{Path(path).name} is not a label volume ({vol.dtype}).")
                    nz, ny, nx = (int(n) for n in vol.shape)
                    ds = f.create_dataset(name, shape=(nz, ny, nx), dtype="uint8", compression="gzip",
                                          chunks=tuple(min(c, n) for c, n in zip(chunks, (nz, ny, nx))))
                    step = max(1, min(chunks[0], nz))
                    for z0 in range(0, nz, step):
                        z1 = min(nz, z0 + step)
                        ds[z0:z1] = np.asarray(vol.block(z0, z1, 0, ny, 0, nx), dtype=np.uint8)
                t = data.times_s[i] if i < len(data.times_s) else None
                ds.attrs["element_size_um"] = [vs, vs, vs]
                ds.attrs["step"] = int(k)
                ds.attrs["time_s"] = float(t) if t is not None else float("nan")
                ds.attrs["label_file"] = Path(path).name
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReactomoError(f"The HDF5 file could not be written ({exc.strerror or exc}); nothing was saved.") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    say(1.0, f"{len(data.steps)} step(s) written to {out.name}")
    return out
