"""The 3D numbers beside a 3D view, per phase of a block: objects, their volumes, surface area, percolation.

Method (also written under the tables by :data:`METHOD`):

- **Objects** are connected components of a phase's voxels with face connectivity (6 neighbours), so two crystals
  touching only at an edge or a corner count as two. Objects cut by the block's faces are counted and flagged
  (``touches_block_edge``): their true size is unknown.
- **Volume** is the voxel count × voxel volume (µm³; the downsampled voxel when a factor is used).
- **Surface area** is the area of the phase's smoothed surface-nets surface inside the block (the block's cut
  faces excluded), which avoids the ~50 % overestimate of counting voxel faces. **Specific surface** is that area
  over the phase's volume, in mm²/mm³ (= 1/mm).
- **Percolation** (pores): the share of pore voxels in the largest connected pore cluster, and the axes along
  which that cluster joins two opposite faces of the block.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from core.phases import PhaseTable

__all__ = ["METHOD", "phase_numbers", "block_numbers", "object_rows"]

METHOD = ("Objects: connected voxels of a phase (face connectivity, 6 neighbours); objects cut by the block's faces "
          "are flagged. Volume: voxel count × voxel volume. Surface area: the smoothed surface-nets surface inside "
          "the block (cut faces excluded); specific surface = area / volume in mm²/mm³. Percolation: share of pore "
          "voxels in the largest connected pore cluster, and the axes along which it joins opposite block faces.")

_FACE = ndimage.generate_binary_structure(3, 1)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    lab, n = ndimage.label(mask, structure=_FACE)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    edge = np.zeros(n + 1, bool)
    for face in (lab[0], lab[-1], lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1]):
        edge[np.unique(face)] = True
    return lab, n, sizes, edge[1:]


def phase_numbers(labels: np.ndarray, code: int, *, voxel_size_um: float, surface_area_um2: float | None = None,
                  pore: bool = False) -> dict[str, Any]:
    """The 3D numbers of phase ``code`` in a label block (see the module's method).

    ``surface_area_um2`` is the area of the phase's open surface in the block (:func:`core.render.surfaces.phase_surface`
    with ``closed=False``); None leaves the surface columns empty. ``pore`` adds the percolation columns.
    """
    mask = labels == code
    voxel_um3 = float(voxel_size_um) ** 3
    n_vox = int(mask.sum())
    volume_mm3 = n_vox * voxel_um3 * 1e-9
    row: dict[str, Any] = {"code": int(code), "voxels": n_vox, "volume_mm3": volume_mm3,
                           "volume_fraction": n_vox / mask.size if mask.size else 0.0}
    lab, n, sizes, edge = _components(mask)
    vols = sizes * voxel_um3
    row.update({
        "objects": int(n),
        "objects_touching_block_edge": int(edge.sum()),
        "object_volume_median_um3": float(np.median(vols)) if n else None,
        "object_volume_p90_um3": float(np.percentile(vols, 90)) if n else None,
        "object_volume_max_um3": float(vols.max()) if n else None,
        "equivalent_diameter_median_um": float(np.median((6 * vols / np.pi) ** (1 / 3))) if n else None,
    })
    if surface_area_um2 is not None:
        area_mm2 = float(surface_area_um2) * 1e-6
        row["surface_area_mm2"] = area_mm2
        row["specific_surface_per_mm"] = area_mm2 / volume_mm3 if volume_mm3 > 0 else None
    else:
        row["surface_area_mm2"] = row["specific_surface_per_mm"] = None
    if pore:
        if n:
            big = int(np.argmax(sizes)) + 1
            row["largest_cluster_share"] = float(sizes[big - 1] / n_vox)
            spans = []
            for axis, name in enumerate("zyx"):
                lo = np.take(lab, 0, axis=axis)
                hi = np.take(lab, -1, axis=axis)
                if (lo == big).any() and (hi == big).any():
                    spans.append(name)
            row["largest_cluster_spans"] = "".join(spans) or "none"
        else:
            row["largest_cluster_share"] = None
            row["largest_cluster_spans"] = "none"
    return row


def block_numbers(labels: np.ndarray, codes, *, phases: PhaseTable, voxel_size_um: float,
                  surface_areas_um2: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """:func:`phase_numbers` for every code, with the phase's name; pores (role ``pore``) get percolation."""
    rows = []
    for code in codes:
        p = phases.by_code(code)
        row = phase_numbers(labels, code, voxel_size_um=voxel_size_um, pore=p.role == "pore",
                            surface_area_um2=(surface_areas_um2 or {}).get(code))
        rows.append({"phase": p.name, **row})
    return rows


def object_rows(labels: np.ndarray, code: int, *, voxel_size_um: float, phase_name: str = "") -> list[dict[str, Any]]:
    """One row per object of phase ``code``: its voxels, volume (µm³), equivalent diameter and whether it is cut."""
    lab, n, sizes, edge = _components(labels == code)
    v = float(voxel_size_um) ** 3
    return [{"phase": phase_name or str(code), "object": i + 1, "voxels": int(s), "volume_um3": float(s * v),
             "equivalent_diameter_um": float((6 * s * v / np.pi) ** (1 / 3)), "touches_block_edge": bool(e)}
            for i, (s, e) in enumerate(zip(sizes, edge))]
