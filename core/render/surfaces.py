"""Phase surfaces of a block of a label volume, in µm: surface nets, volume-preserving smoothing, reduction.

- :class:`RenderConfig`: the block (z/y/x voxel range, or a box in µm with :func:`block_from_um`), the downsampling
  factor, the phases, the triangle budget, the opacity per phase. :func:`default_block` is a central block small
  enough to stay fluid in a browser.
- :func:`phase_surface`: one phase's closed surface. VTK's surface nets (``pyvista`` ``contour_labels``) without
  its own smoothing, then windowed-sinc (Taubin) smoothing, which does not shrink. Measured on this machine: the
  built-in smoothing of surface nets shrank 3-voxel bassanite laths by 8 % and small pores by 19 % of their voxel
  volume, a ball of radius 2.5 voxels by 71 %; Taubin smoothing keeps all of them within 2.5 % (tests/test_render.py
  checks 5 % on balls, slabs and the demo). The block's faces close the surface, so its volume is defined.
- :func:`build_surfaces`: every chosen phase, reduced with ``fast-simplification`` (5-7x faster than VTK's own
  decimation, STACK.md) to a shared triangle budget, split between phases by their size.
- :func:`save_surfaces`: ``<phase>.vtp``, ``.ply`` and ``.stl``, coordinates in µm.

Never a whole 2016³ step: a block or a factor bounds the work (:data:`MAX_BLOCK_VOXELS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import core.render  # noqa: F401  (sets the headless EGL window before vtk loads)
from core.errors import ReactomoError
from core.phases import PhaseTable

__all__ = [
    "RenderConfig",
    "MAX_BLOCK_VOXELS",
    "DEFAULT_BLOCK_EDGE",
    "default_block",
    "block_from_um",
    "check_block",
    "downsample_labels",
    "phase_surface",
    "build_surfaces",
    "save_surfaces",
    "SURFACE_FORMATS",
    "RENDER_FORMATS",
    "interface_area_um2",
    "block_surface_numbers",
]

#: The largest block meshed at once, in voxels after downsampling (320³): a 256³ block meshes in ~3 s here.
MAX_BLOCK_VOXELS = 320**3
#: Edge of the default central block, in voxels: small enough that the view stays fluid in a browser.
DEFAULT_BLOCK_EDGE = 128
SURFACE_FORMATS = ("vtp", "ply", "stl")
#: What a render writes at once; STL is made from the .vtp when asked for (it is the largest and least used).
RENDER_FORMATS = ("vtp", "ply")
#: Windowed-sinc smoothing of the surface nets: iterations and pass band (volume kept within 2.5 %, measured).
SMOOTH_ITERATIONS = 20
SMOOTH_PASS_BAND = 0.1


@dataclass(frozen=True)
class RenderConfig:
    """What to mesh and how.

    Attributes
    ----------
    phases : tuple of int
        Phase codes to show (default: bassanite and pores, the study's Fig. 6).
    block : tuple of 6 int or None
        ``(z0, z1, y0, y1, x0, x1)`` in voxels of the label volume, end exclusive; None: :func:`default_block`.
    factor : int
        Downsampling factor (1 = every voxel); a block of ``factor``³ voxels becomes one by majority.
    max_triangles : int
        Triangle budget of all surfaces together after reduction.
    opacity : dict code -> float
        Opacity per phase in the pictures (default 1; gypsum, when shown, 0.15 as faint context).
    """

    phases: tuple[int, ...] = (2, 3)
    block: tuple[int, int, int, int, int, int] | None = None
    factor: int = 1
    max_triangles: int = 300_000
    opacity: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.phases or not all(isinstance(c, (int, np.integer)) and int(c) > 0 for c in self.phases):
            raise ReactomoError(f"Pick at least one phase to show (positive phase codes); got {list(self.phases)!r}.")
        object.__setattr__(self, "phases", tuple(sorted({int(c) for c in self.phases})))
        if not isinstance(self.factor, (int, np.integer)) or not 1 <= int(self.factor) <= 16:
            raise ReactomoError(f"The downsampling factor must be a whole number from 1 to 16; got {self.factor!r}.")
        if not isinstance(self.max_triangles, (int, np.integer)) or not 1_000 <= int(self.max_triangles) <= 2_000_000:
            raise ReactomoError("The triangle budget must be from 1,000 to 2,000,000 (a browser stays fluid up to about "
                                f"500,000); got {self.max_triangles!r}.")
        if self.block is not None:
            b = tuple(self.block)
            if len(b) != 6 or not all(isinstance(v, (int, np.integer)) for v in b):
                raise ReactomoError(f"A block is six whole numbers z0 z1 y0 y1 x0 x1; got {list(b)!r}.")
            object.__setattr__(self, "block", tuple(int(v) for v in b))
        op = {}
        for code, value in dict(self.opacity).items():
            v = float(value)
            if not 0.0 <= v <= 1.0 or not math.isfinite(v):
                raise ReactomoError(f"Opacity must be from 0 to 1; got {value!r} for phase code {code}.")
            op[int(code)] = v
        object.__setattr__(self, "opacity", op)

    def opacity_of(self, code: int) -> float:
        return self.opacity.get(int(code), 0.15 if int(code) == 1 else 1.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = list(self.phases)
        d["block"] = list(self.block) if self.block is not None else None
        d["opacity"] = {str(k): v for k, v in sorted(self.opacity.items())}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RenderConfig:
        try:
            return cls(phases=tuple(d.get("phases", (2, 3))), block=tuple(d["block"]) if d.get("block") else None,
                       factor=int(d.get("factor", 1)), max_triangles=int(d.get("max_triangles", 300_000)),
                       opacity={int(k): float(v) for k, v in (d.get("opacity") or {}).items()})
        except (TypeError, ValueError, AttributeError) as exc:
            raise ReactomoError(f"These 3D settings are not valid ({exc}).") from None


def default_block(shape: Sequence[int], *, edge: int = DEFAULT_BLOCK_EDGE, factor: int = 1) -> tuple[int, ...]:
    """A central block of at most ``edge * factor`` voxels per axis (the whole axis when it is shorter)."""
    out: list[int] = []
    for n in shape:
        size = min(int(n), edge * factor)
        start = (int(n) - size) // 2
        out += [start, start + size]
    return tuple(out)


def block_from_um(box_um: Sequence[float], voxel_size_um: float) -> tuple[int, ...]:
    """A box ``(z0, z1, y0, y1, x0, x1)`` in µm from the volume's corner, as a voxel block (rounded outwards)."""
    if len(box_um) != 6 or not all(math.isfinite(float(v)) for v in box_um):
        raise ReactomoError(f"A box in µm is six numbers z0 z1 y0 y1 x0 x1; got {list(box_um)!r}.")
    if not voxel_size_um or voxel_size_um <= 0:
        raise ReactomoError(f"The voxel size must be positive to place a box in µm; got {voxel_size_um!r}.")
    out: list[int] = []
    for lo, hi in zip(box_um[0::2], box_um[1::2]):
        out += [int(math.floor(float(lo) / voxel_size_um)), int(math.ceil(float(hi) / voxel_size_um))]
    return tuple(out)


def check_block(block: Sequence[int], shape: Sequence[int], factor: int = 1) -> tuple[int, ...]:
    """The block, checked against the volume's shape and the size limit; one sentence when it does not fit."""
    b = tuple(int(v) for v in block)
    for axis, (lo, hi, n) in enumerate(zip(b[0::2], b[1::2], shape)):
        name = "zyx"[axis]
        if not (0 <= lo <= n and 0 <= hi <= n):
            raise ReactomoError(f"The block's {name} range {lo}-{hi} is outside the segmentation, which has {n} voxels "
                                f"along {name} (0-{n}); choose a range inside it.")
        if hi <= lo:
            raise ReactomoError(f"The block's {name} range {lo}-{hi} is {'empty' if hi == lo else 'reversed'}; give "
                                f"{name}0 below {name}1.")
    for axis, (lo, hi) in enumerate(zip(b[0::2], b[1::2])):
        if math.ceil((hi - lo) / factor) < 2:  # a surface needs two voxels each way (one slice has no inside)
            name = "zyx"[axis]
            thick = f"{hi - lo} voxel{'s' if hi - lo != 1 else ''} thick" + (
                f" ({math.ceil((hi - lo) / factor)} after downsampling by {factor})" if factor > 1 else "")
            raise ReactomoError(f"The block's {name} range {lo}-{hi} is {thick}; a 3D view needs at least 2 voxels "
                                f"along each axis{' after downsampling' if factor > 1 else ''}; widen it.")
    voxels = math.prod(math.ceil((hi - lo) / factor) for lo, hi in zip(b[0::2], b[1::2]))
    if voxels > MAX_BLOCK_VOXELS:
        edge = round(voxels ** (1 / 3))
        raise ReactomoError(f"The block is {voxels:,} voxels (about {edge}³) after downsampling by {factor}, more than "
                            f"the {MAX_BLOCK_VOXELS:,} (320³) meshed at once; choose a smaller block or a larger factor.")
    return b


def downsample_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """Majority vote over ``factor``³ cells (ties go to the lower code); the edges keep partial cells."""
    if factor == 1:
        return labels
    z, y, x = labels.shape
    pz, py, px = (-z) % factor, (-y) % factor, (-x) % factor
    padded = np.pad(labels, ((0, pz), (0, py), (0, px)), mode="edge")
    codes = np.unique(labels)
    shape = (padded.shape[0] // factor, factor, padded.shape[1] // factor, factor, padded.shape[2] // factor, factor)
    counts = np.stack([(padded == c).reshape(shape).sum(axis=(1, 3, 5)) for c in codes])
    return codes[np.argmax(counts, axis=0)].astype(labels.dtype)


def _image(mask: np.ndarray, spacing: float, origin: Sequence[float]):
    import pyvista as pv

    img = pv.ImageData(dimensions=mask.shape[::-1], spacing=(spacing,) * 3, origin=tuple(origin)[::-1])
    img.point_data["mask"] = np.ascontiguousarray(mask, dtype=np.uint8).ravel()
    return img


def phase_surface(mask: np.ndarray, *, spacing_um: float, origin_um: Sequence[float] = (0.0, 0.0, 0.0),
                  closed: bool = True, smooth: bool = True):
    """The surface of the voxels where ``mask`` is true, as a triangle ``pyvista.PolyData`` in µm (x, y, z).

    ``origin_um`` is the (z, y, x) position of voxel ``[0, 0, 0]``'s centre. ``closed`` closes the surface at the
    block's faces (its volume is then the phase's volume in the block); ``closed=False`` leaves the cut faces open
    (its area is then the phase's interface area inside the block). An empty mask gives an empty mesh.
    """
    import pyvista as pv

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ReactomoError(f"A 3D mask is needed for a surface; got shape {mask.shape}.")
    if not mask.any():
        return pv.PolyData()
    surf = _image(mask, spacing_um, origin_um).contour_labels(
        select_inputs=[1], pad_background=closed, smoothing=False, output_mesh_type="triangles")
    if smooth and surf.n_cells:
        surf = surf.smooth_taubin(n_iter=SMOOTH_ITERATIONS, pass_band=SMOOTH_PASS_BAND)
    for name in list(surf.cell_data):
        del surf.cell_data[name]
    return surf


def build_surfaces(labels: np.ndarray, config: RenderConfig, *, spacing_um: float, origin_um: Sequence[float],
                   on_progress: Callable[[float, str], None] | None = None,
                   phases: PhaseTable | None = None) -> dict[int, Any]:
    """Closed, smoothed surfaces of ``config.phases`` in a label block, reduced to ``config.max_triangles`` in all.

    Returns ``{code: PolyData}`` (empty meshes for phases absent from the block). The budget is split between the
    phases in proportion to their unreduced triangle counts; a mesh already under its share is kept as it is. A
    strong reduction costs small objects some volume (the demo's celestite grains: 3 % at 80 %, 7 % at 90 %, 15 % at
    95 %, measured), so each mesh carries ``field_data["volume_kept"]``, its enclosed volume over the phase's voxel
    volume, which the render records and the page shows: the budget is kept, and what it cost is said.
    """
    import fast_simplification

    report = on_progress or (lambda f, m: None)
    names = {p.code: p.name for p in phases} if phases is not None else {}
    raw: dict[int, Any] = {}
    for i, code in enumerate(config.phases):
        report(0.1 + 0.6 * i / len(config.phases), f"Surface of {names.get(code, f'phase {code}')}")
        raw[code] = phase_surface(labels == code, spacing_um=spacing_um, origin_um=origin_um)
        if raw[code].n_cells:
            raw[code].field_data["area_um2"] = [float(raw[code].area)]  # before any reduction (see interface_area_um2)
    total = sum(m.n_cells for m in raw.values())
    out: dict[int, Any] = {}
    for i, (code, mesh) in enumerate(raw.items()):
        report(0.7 + 0.25 * i / len(raw), f"Reducing {names.get(code, f'phase {code}')}")
        share = config.max_triangles * mesh.n_cells / total if total else 0
        if mesh.n_cells > share > 0 and mesh.n_cells > 100:
            reduced = fast_simplification.simplify_mesh(mesh, target_reduction=1.0 - share / mesh.n_cells)
            if reduced.n_cells:
                reduced.field_data["area_um2"] = mesh.field_data["area_um2"]
                mesh = reduced
        voxels = int((labels == code).sum())
        if mesh.n_cells and voxels:
            mesh.field_data["volume_kept"] = [float(mesh.volume / (voxels * spacing_um**3))]
        out[code] = mesh
    return out


def interface_area_um2(mesh, mask: np.ndarray, spacing_um: float) -> float:
    """The area of a phase's surface inside its block: the closed surface's area less the cut faces on the block's
    six faces (phase voxels on a face × one voxel face each), without meshing the open surface a second time.

    The area is the smoothed surface's before any triangle reduction (``field_data["area_um2"]``, set by
    :func:`build_surfaces`), so it does not depend on the triangle budget and a view's numbers equal those of
    :func:`block_surface_numbers` for the same block."""
    if not mesh.n_cells:
        return 0.0
    cut = sum(int(np.count_nonzero(f)) for f in (mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1]))
    area = float(mesh.field_data["area_um2"][0]) if "area_um2" in mesh.field_data else float(mesh.area)
    return max(area - cut * spacing_um**2, 0.0)


def block_surface_numbers(labels: np.ndarray, codes: Sequence[int], *, phases: PhaseTable,
                          spacing_um: float) -> list[dict[str, Any]]:
    """The 3D numbers of a label block (:func:`core.render.morphology.block_numbers`) with surface areas from the
    same smoothed surface-nets surfaces a view shows, without reducing or saving them (for the numbers over time)."""
    from core.render.morphology import block_numbers

    areas = {}
    for code in codes:
        mask = labels == code
        areas[code] = interface_area_um2(phase_surface(mask, spacing_um=spacing_um), mask, spacing_um)
    return block_numbers(labels, codes, phases=phases, voxel_size_um=spacing_um, surface_areas_um2=areas)


def save_surfaces(surfaces: dict[int, Any], folder: str | Path, phases: PhaseTable,
                  formats: Sequence[str] = SURFACE_FORMATS) -> list[Path]:
    """Write ``<phase name>.<fmt>`` for every non-empty surface (µm coordinates); returns the files written.

    Each file is written to a temporary name in ``folder`` and renamed, so a crash never leaves half a mesh.
    """
    from core.atomic import atomic_write_with

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for code, mesh in surfaces.items():
        if not mesh.n_cells:
            continue
        name = phases.by_code(code).name
        for fmt in formats:
            if fmt not in SURFACE_FORMATS:
                raise ReactomoError(f"Surfaces are exported as {', '.join(SURFACE_FORMATS)}; got {fmt!r}.")
            target = atomic_write_with(folder / f"{name}.{fmt}", lambda tmp, m=mesh: m.save(str(tmp), binary=True))
            written.append(target)
    return written
