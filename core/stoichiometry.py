"""The internal standard: moles of reactant and product per step, against the reaction's stoichiometry.

For reaction R1 (CaSO4·2H2O -> CaSO4·0.5H2O + 1.5 H2O) one mole of gypsum gives one mole of bassanite, so with
``n_i(t) = V_i(t) · rho_i / M_i`` (``V_i`` = voxel count × voxel volume) theory says
``n_product(t) = r · (n_reactant(0) − n_reactant(t))`` (``r`` = product per reactant, 1 for R1). Normalised by
``n_reactant(0)``: ``x = n_product / (r · n0)``, ``y = n_reactant / n0`` lie on ``y = 1 − x``. The deviation at step
``t`` is ``(n0 − n_reactant(t) − n_product(t) / r) / n0``; a step is inside the band when ``|deviation| <= band``
(the study: every point inside ±2 %). Phases and the reaction come from configuration (:mod:`core.phases`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.errors import ReactomoError
from core.phases import PhaseTable, Reaction

__all__ = ["moles", "molar_evolution"]


def moles(voxels: int | float, phase, voxel_size_um: float) -> float:
    """Moles of ``phase`` in ``voxels`` voxels of edge ``voxel_size_um`` µm: ``V · rho / M``."""
    if phase.mol_per_m3 is None:
        raise ReactomoError(f"The phase '{phase.name}' has no density and molar mass; set them in the phase table to count its moles.")
    if not voxel_size_um or voxel_size_um <= 0:
        raise ReactomoError(f"The voxel size must be a positive number of micrometres; got {voxel_size_um!r}.")
    return float(voxels) * (float(voxel_size_um) * 1e-6) ** 3 * phase.mol_per_m3


def molar_evolution(
    counts: Sequence[Mapping[int, int]],
    *,
    phases: PhaseTable,
    reaction: Reaction = Reaction(),
    voxel_size_um: float,
    times_s: Sequence[float] | None = None,
    band: float = 0.02,
) -> list[dict[str, Any]]:
    """One row per step: moles of reactant and product, the normalised point (x, y), the deviation and the verdict.

    Parameters
    ----------
    counts : sequence of mappings
        Voxel counts per phase code, one mapping per step in time order; the first step is the reference ``t = 0``.
    phases, reaction
        The phase table and the reaction (codes of reactant and product).
    voxel_size_um : float
    times_s : sequence of float, optional
    band : float
        Half-width of the band as a fraction (0.02 = ±2 %).

    Returns
    -------
    list of dict
        Keys ``step, time_s, n_reactant_mol, n_product_mol, x, y, deviation_pct, inside_band``.
    """
    if not counts:
        raise ReactomoError("No steps to compare with the reaction; segment at least one step first.")
    if not 0 < band < 1:
        raise ReactomoError(f"The band must be a fraction between 0 and 1 (0.02 = ±2 %); got {band!r}.")
    reaction.check_against(phases)
    rp, pp = phases.by_code(reaction.reactant), phases.by_code(reaction.product)
    r = float(reaction.product_per_reactant)
    n0 = moles(counts[0].get(reaction.reactant, 0), rp, voxel_size_um)
    if n0 <= 0:
        raise ReactomoError(f"The first step has no {rp.name}; the internal standard needs the reactant at t = 0.")
    rows = []
    for i, c in enumerate(counts):
        nr = moles(c.get(reaction.reactant, 0), rp, voxel_size_um)
        npd = moles(c.get(reaction.product, 0), pp, voxel_size_um)
        dev = (n0 - nr - npd / r) / n0
        rows.append({"step": i, "time_s": float(times_s[i]) if times_s is not None else None,
                     "n_reactant_mol": nr, "n_product_mol": npd, "x": npd / (r * n0), "y": nr / n0,
                     "deviation_pct": 100.0 * dev, "inside_band": bool(abs(dev) <= band)})
    return rows
