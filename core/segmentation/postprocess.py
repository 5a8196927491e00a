"""Cleaning a segmentation as the study did: small islands out, the false bassanite rim around celestite out.

Two steps, applied in this order by :func:`postprocess`:

1. **Rim** (:func:`clean_rim`). The partial-volume boundary between a dense phase (celestite) and a light one
   (gypsum) has the grey value of bassanite, so a thin false bassanite rim appears around every celestite grain.
   Rule: a voxel of ``rim_phase`` within ``width_px`` (Euclidean, in pixels; per XY slice for ``"2d"``) of the
   ``around`` phase is relabelled **if** the ``rim_phase`` component it belongs to lies mostly (>= 50 % of its
   voxels) inside that band. It takes the label of the nearest voxel that is neither ``rim_phase``, ``around``
   nor 0 (usually gypsum). Real bassanite grains that merely touch celestite have most of their voxels outside
   the band and are kept whole. A rim that is connected to such a large grain is part of the grain's component
   and is kept too (the rule errs on the side of keeping bassanite).
2. **Islands** (:func:`remove_islands`). Connected components of a listed phase smaller than its minimum size
   (study: bassanite < 100 px, pores < 8 px) take the label that surrounds them: the most frequent label of the
   voxels touching the island (its one-voxel outer ring, same connectivity), 0 and the island's own phase not
   counted; ties go to the lowest code. An island touching only 0 stays as it is.

Connectivity: ``"2d"`` works slice by slice in XY with 8-connected components (sizes in pixels, as the study);
``"3d"`` uses 26-connected components in the volume (sizes in voxels).

Arrays are uint8 label volumes ``(z, y, x)`` (or one ``(y, x)`` slice with ``"2d"``); functions return new
arrays and never modify their input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from core.errors import ReactomoError
from core.phases import PhaseTable

__all__ = [
    "Connectivity",
    "PostprocessConfig",
    "CleaningChoice",
    "default_postprocess",
    "cleaning",
    "choose_cleaning",
    "remove_islands",
    "clean_rim",
    "postprocess",
]

Connectivity = Literal["2d", "3d"]
_CONNECTIVITIES = ("2d", "3d")
_MAX_RIM_PX = 20
_CHUNK = 1 << 24  # voxels per chunk when counting


# -- checks ------------------------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_connectivity(connectivity: Any) -> str:
    if connectivity not in _CONNECTIVITIES:
        raise ReactomoError(f"connectivity must be '2d' (per XY slice) or '3d' (in the volume); got {connectivity!r}.")
    return connectivity


def _check_code(name: str, code: Any) -> int:
    if not _is_int(code) or not 1 <= code <= 255:
        raise ReactomoError(f"{name} must be a phase code from 1 to 255; got {code!r}.")
    return int(code)


def _check_min_sizes(min_sizes: Any) -> dict[int, int]:
    if not isinstance(min_sizes, Mapping):
        raise ReactomoError(f"min_sizes must map phase codes to minimum sizes, e.g. {{2: 100, 3: 8}}; got {min_sizes!r}.")
    out: dict[int, int] = {}
    for code, size in min_sizes.items():
        if isinstance(code, str) and code.strip().isdigit():  # keys come back as strings from JSON
            code = int(code)
        code = _check_code("Every key of min_sizes", code)
        if not _is_int(size) or size < 0:
            raise ReactomoError(f"The minimum size of phase {code} must be a whole number of pixels >= 0; got {size!r}.")
        out[code] = int(size)
    return out


def _as_volume(labels: Any, connectivity: str) -> tuple[np.ndarray, bool]:
    """The labels as a ``(z, y, x)`` uint8 view, and whether the input was one 2D slice."""
    a = np.asarray(labels)
    if a.dtype != np.uint8:
        raise ReactomoError(f"labels must be a uint8 array of phase codes; got dtype {a.dtype}.")
    if a.ndim == 3:
        return a, False
    if a.ndim == 2:
        if connectivity != "2d":
            raise ReactomoError(
                f"A single slice of shape {a.shape} can only be cleaned with connectivity '2d'; give a (z, y, x) volume for '3d'."
            )
        return a[np.newaxis], True
    raise ReactomoError(f"labels must be a (z, y, x) volume or a (y, x) slice; got shape {a.shape}.")


def _structure(connectivity: str) -> np.ndarray:
    """Full neighbourhood: 8-connected in each XY slice (no link across z) or 26-connected in 3D."""
    s = np.zeros((3, 3, 3), dtype=bool)
    if connectivity == "2d":
        s[1] = True
    else:
        s[:] = True
    return s


def _count(labels: np.ndarray) -> np.ndarray:
    """Voxels per code 0-255 (int64), in chunks: no int64 copy of a whole volume."""
    flat = labels.reshape(-1)
    out = np.zeros(256, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        out += np.bincount(flat[start : start + _CHUNK], minlength=256)
    return out


# -- config ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PostprocessConfig:
    """What :func:`postprocess` does.

    Attributes
    ----------
    min_sizes : dict of int to int
        Phase code -> smallest connected component kept, in pixels (``"2d"``) or voxels (``"3d"``); smaller
        ones take the surrounding label. Default (study, default phases): bassanite 100, pore 8.
    connectivity : {"2d", "3d"}
        ``"2d"``: per XY slice, 8-connected; ``"3d"``: 26-connected in the volume.
    rim_phase, rim_around : int or None
        The phase forming a false rim (bassanite, 2) around another phase (celestite, 4); None (both) = no rim
        rule.
    rim_px : int
        Width of the rim band in pixels, 0-20 (0 = no rim cleaning).
    enabled : bool
        False = :func:`postprocess` returns an unchanged copy.
    """

    min_sizes: dict[int, int] = field(default_factory=lambda: {2: 100, 3: 8})
    connectivity: Connectivity = "2d"
    rim_phase: int | None = 2
    rim_around: int | None = 4
    rim_px: int = 2
    enabled: bool = True

    def __post_init__(self) -> None:
        self.validate()
        object.__setattr__(self, "min_sizes", dict(sorted(_check_min_sizes(self.min_sizes).items())))

    def __hash__(self) -> int:  # the dict field would make the generated hash fail; configs are cache keys
        return hash((tuple(sorted(self.min_sizes.items())), self.connectivity, self.rim_phase, self.rim_around,
                     self.rim_px, self.enabled))

    def validate(self) -> None:
        """Raise :class:`ReactomoError` with one sentence if any value is out of range."""
        _check_min_sizes(self.min_sizes)
        _check_connectivity(self.connectivity)
        if (self.rim_phase is None) != (self.rim_around is None):
            raise ReactomoError(
                f"rim_phase and rim_around go together; got rim_phase={self.rim_phase!r} and rim_around={self.rim_around!r} "
                "(set both, or both to None for no rim rule)."
            )
        if self.rim_phase is not None:
            _check_code("rim_phase", self.rim_phase)
            _check_code("rim_around", self.rim_around)
            if self.rim_phase == self.rim_around:
                raise ReactomoError(
                    f"rim_phase and rim_around are both {self.rim_phase}; the rim must be a different phase from the one it surrounds."
                )
        if not _is_int(self.rim_px) or not 0 <= self.rim_px <= _MAX_RIM_PX:
            raise ReactomoError(f"rim_px must be a whole number of pixels from 0 to {_MAX_RIM_PX} (0 = off); got {self.rim_px!r}.")
        if not isinstance(self.enabled, (bool, np.bool_)):
            raise ReactomoError(f"enabled must be True or False; got {self.enabled!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (min_sizes keyed by the code as a string)."""
        return {
            "min_sizes": {str(c): s for c, s in self.min_sizes.items()},
            "connectivity": self.connectivity,
            "rim_phase": self.rim_phase,
            "rim_around": self.rim_around,
            "rim_px": self.rim_px,
            "enabled": bool(self.enabled),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PostprocessConfig":
        """Inverse of :meth:`to_dict`; missing keys take their defaults."""
        if not isinstance(d, Mapping):
            raise ReactomoError(f"A post-processing config is a dict; got {type(d).__name__}.")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ReactomoError(
                f"Unknown post-processing field(s) {sorted(unknown)}; allowed fields are {sorted(cls.__dataclass_fields__)}."
            )
        kwargs = dict(d)
        if "min_sizes" in kwargs:
            kwargs["min_sizes"] = _check_min_sizes(kwargs["min_sizes"])
        return cls(**kwargs)


def default_postprocess(phases: PhaseTable) -> PostprocessConfig:
    """The study's cleaning for a phase table, finding the phases by name.

    Bassanite islands < 100 px and pore islands < 8 px go; a 2-pixel bassanite rim around celestite goes. A
    table without a phase of that name gets no such rule (no rim rule unless it has both bassanite and
    celestite).

    Parameters
    ----------
    phases : PhaseTable

    Returns
    -------
    PostprocessConfig
    """
    by_name = {p.name.strip().lower(): p.code for p in phases}
    min_sizes = {by_name[n]: s for n, s in (("bassanite", 100), ("pore", 8)) if n in by_name}
    bas, cel = by_name.get("bassanite"), by_name.get("celestite")
    if bas is None or cel is None:
        return PostprocessConfig(min_sizes=min_sizes, rim_phase=None, rim_around=None)
    return PostprocessConfig(min_sizes=min_sizes, rim_phase=bas, rim_around=cel)


# -- islands -----------------------------------------------------------------------------------------------------
def _remove_islands_inplace(vol: np.ndarray, code: int, min_size: int, structure: np.ndarray) -> None:
    comp, n = ndimage.label(vol == code, structure=structure)
    if n == 0 or min_size <= 1:
        return
    sizes = np.bincount(comp.reshape(-1), minlength=n + 1)
    small = sizes < min_size
    small[0] = False
    if not small.any():
        return
    z, y, x = np.nonzero(small[comp])
    ids = comp[z, y, x]
    shape = np.array(vol.shape)
    # every (island, ring voxel) pair, by shifting the island voxels by each offset of the neighbourhood
    pair_id, pair_pos = [], []
    for dz, dy, dx in np.argwhere(structure) - 1:
        if dz == dy == dx == 0:
            continue
        nz, ny, nx = z + dz, y + dy, x + dx
        ok = (nz >= 0) & (nz < shape[0]) & (ny >= 0) & (ny < shape[1]) & (nx >= 0) & (nx < shape[2])
        nz, ny, nx, nid = nz[ok], ny[ok], nx[ok], ids[ok]
        lab = vol[nz, ny, nx]
        ok = (lab != code) & (lab != 0)
        pair_id.append(nid[ok])
        pair_pos.append(np.ravel_multi_index((nz[ok], ny[ok], nx[ok]), vol.shape))
    pid = np.concatenate(pair_id).astype(np.int64)
    pos = np.concatenate(pair_pos).astype(np.int64)
    new = np.full(n + 1, code, dtype=np.uint8)  # islands without a labelled neighbour stay
    if pid.size:
        # each ring voxel counts once per island, however many island voxels it touches
        key = np.unique(pid * vol.size + pos)
        pid = key // vol.size
        lab = vol.reshape(-1)[key % vol.size].astype(np.int64)
        pairs, votes = np.unique(pid * 256 + lab, return_counts=True)
        p_id, p_lab = pairs // 256, pairs % 256
        order = np.lexsort((p_lab, -votes, p_id))  # per island: most votes first, then lowest code
        p_id, p_lab = p_id[order], p_lab[order]
        first = np.ones(p_id.size, dtype=bool)
        first[1:] = p_id[1:] != p_id[:-1]
        new[p_id[first]] = p_lab[first]
    vol[z, y, x] = new[ids]


def remove_islands(
    labels: np.ndarray,
    min_sizes: Mapping[int, int],
    *,
    connectivity: Connectivity = "2d",
) -> np.ndarray:
    """Give small connected components of the listed phases the label that surrounds them.

    Parameters
    ----------
    labels : ndarray of uint8
        ``(z, y, x)`` label volume, or one ``(y, x)`` slice with ``"2d"``.
    min_sizes : dict of int to int
        Phase code -> smallest component kept (pixels for ``"2d"``, voxels for ``"3d"``); components of exactly
        that size stay. Phases are processed in increasing code order, each on the result of the previous.
    connectivity : {"2d", "3d"}
        8-connected per XY slice, or 26-connected in the volume.

    Returns
    -------
    ndarray of uint8
        A new array of the same shape. Each island smaller than its size takes the most frequent label of its
        one-voxel outer ring (0 and its own phase not counted, ties to the lowest code); an island whose ring
        holds only 0 stays.

    Raises
    ------
    ReactomoError
        If the labels are not uint8 ``(z, y, x)`` / ``(y, x)``, or a code, size or connectivity is invalid.

    Examples
    --------
    >>> a = np.ones((5, 5), np.uint8); a[2, 2] = 2
    >>> int(remove_islands(a, {2: 2})[2, 2])
    1
    """
    connectivity = _check_connectivity(connectivity)
    sizes = _check_min_sizes(min_sizes)
    vol, flat = _as_volume(labels, connectivity)
    out = vol.copy()
    structure = _structure(connectivity)
    for code in sorted(sizes):
        _remove_islands_inplace(out, code, sizes[code], structure)
    return out[0] if flat else out


# -- rim ---------------------------------------------------------------------------------------------------------
def _clean_rim_block(out: np.ndarray, rim_phase: int, around: int, width_px: int, structure: np.ndarray) -> None:
    """Rim rule on one block (one slice as ``(1, y, x)`` for 2d, the whole volume for 3d), in place."""
    near = out == around
    if not near.any():
        return
    rim = out == rim_phase
    if not rim.any():
        return
    band = ndimage.distance_transform_edt(~near) <= width_px
    band &= rim
    if not band.any():
        return
    comp, n = ndimage.label(rim, structure=structure)
    total = np.bincount(comp.reshape(-1), minlength=n + 1)
    inside = np.bincount(comp[band], minlength=n + 1)
    is_rim = 2 * inside >= total
    is_rim[0] = False
    todo = band & is_rim[comp]
    if not todo.any():
        return
    other = (out != rim_phase) & (out != around) & (out != 0)
    if not other.any():
        return  # nothing to take a label from: leave the rim
    idx = ndimage.distance_transform_edt(~other, return_distances=False, return_indices=True)
    where = np.nonzero(todo)
    out[where] = out[tuple(i[where] for i in idx)]


def clean_rim(
    labels: np.ndarray,
    *,
    rim_phase: int,
    around: int,
    width_px: int,
    connectivity: Connectivity = "2d",
) -> np.ndarray:
    """Relabel the thin false rim of ``rim_phase`` around ``around`` (bassanite around celestite).

    A voxel of ``rim_phase`` within ``width_px`` (Euclidean distance, per XY slice for ``"2d"``) of ``around``
    is relabelled when its ``rim_phase`` component (same connectivity) has >= 50 % of its voxels in that band;
    it takes the label of the nearest voxel that is neither ``rim_phase``, ``around`` nor 0 (so bassanite
    grains that merely touch celestite are kept). A slice (2d) or volume (3d) with no such other voxel is left
    unchanged.

    Parameters
    ----------
    labels : ndarray of uint8
        ``(z, y, x)`` label volume, or one ``(y, x)`` slice with ``"2d"``.
    rim_phase, around : int
        Codes of the rim phase and of the phase it surrounds (different).
    width_px : int
        Band width in pixels, 0-20; 0 returns an unchanged copy.
    connectivity : {"2d", "3d"}
        Per XY slice (8-connected components, 2D distances) or in the volume (26-connected, 3D distances).

    Returns
    -------
    ndarray of uint8
        A new array of the same shape.

    Raises
    ------
    ReactomoError
        If the labels are not uint8 ``(z, y, x)`` / ``(y, x)``, or a code, width or connectivity is invalid.
    """
    connectivity = _check_connectivity(connectivity)
    rim_phase, around = _check_code("rim_phase", rim_phase), _check_code("around", around)
    if rim_phase == around:
        raise ReactomoError(f"rim_phase and around are both {rim_phase}; the rim must be a different phase from the one it surrounds.")
    if not _is_int(width_px) or not 0 <= width_px <= _MAX_RIM_PX:
        raise ReactomoError(f"width_px must be a whole number of pixels from 0 to {_MAX_RIM_PX} (0 = off); got {width_px!r}.")
    vol, flat = _as_volume(labels, connectivity)
    out = vol.copy()
    if width_px > 0:
        structure = _structure(connectivity)
        if connectivity == "2d":
            for z in range(out.shape[0]):  # one slice at a time: 2D distances and bounded memory
                _clean_rim_block(out[z : z + 1], rim_phase, around, int(width_px), structure)
        else:
            _clean_rim_block(out, rim_phase, around, int(width_px), structure)
    return out[0] if flat else out


# -- both --------------------------------------------------------------------------------------------------------
def postprocess(
    labels: np.ndarray,
    config: PostprocessConfig,
    *,
    codes: Sequence[int],
) -> tuple[np.ndarray, dict[str, Any]]:
    """Clean a segmentation: the rim rule, then small islands (see the module docstring).

    Parameters
    ----------
    labels : ndarray of uint8
        ``(z, y, x)`` label volume, or one ``(y, x)`` slice with ``"2d"``.
    config : PostprocessConfig
        What to do; ``enabled=False`` returns an unchanged copy.
    codes : sequence of int
        The phase codes of the table (e.g. ``DEFAULT_PHASES.codes``): the codes counted in the report, and every
        code the config names must be one of them.

    Returns
    -------
    cleaned : ndarray of uint8
        A new array of the same shape.
    report : dict
        ``{"before": {code: voxels}, "after": {code: voxels}, "changed": voxels relabelled,
        "config": config.to_dict()}``.

    Raises
    ------
    ReactomoError
        If the labels are not uint8 ``(z, y, x)`` / ``(y, x)``, ``config`` is not a PostprocessConfig, or it
        names a code that is not in ``codes``.
    """
    if not isinstance(config, PostprocessConfig):
        raise ReactomoError(f"config must be a PostprocessConfig; got {type(config).__name__}.")
    try:
        code_list = [_check_code("Every code", c) for c in codes]
    except TypeError:
        raise ReactomoError(f"codes must be a list of phase codes from 1 to 255; got {codes!r}.") from None
    vol, flat = _as_volume(labels, config.connectivity)
    named = list(config.min_sizes) + [c for c in (config.rim_phase, config.rim_around) if c is not None]
    missing = sorted(set(named) - set(code_list))
    if missing:
        raise ReactomoError(f"The post-processing config names code(s) {missing} that are not phase codes {code_list}; fix the config or the phase table.")
    before = _count(vol)
    out = vol.copy()
    if config.enabled:
        if config.rim_phase is not None and config.rim_px > 0:
            out = clean_rim(out, rim_phase=config.rim_phase, around=config.rim_around, width_px=config.rim_px,
                            connectivity=config.connectivity)
        if config.min_sizes:
            out = remove_islands(out, config.min_sizes, connectivity=config.connectivity)
    after = _count(out)
    changed = 0
    if config.enabled:
        fa, fb = vol.reshape(-1), out.reshape(-1)
        for start in range(0, fa.size, _CHUNK):
            changed += int(np.count_nonzero(fa[start : start + _CHUNK] != fb[start : start + _CHUNK]))
    report = {
        "before": {c: int(before[c]) for c in code_list},
        "after": {c: int(after[c]) for c in code_list},
        "changed": changed,
        "config": config.to_dict(),
    }
    return (out[0] if flat else out), report


def cleaning(phases: PhaseTable, min_sizes: Sequence[tuple[str, int]] = (), rim_px: int | None = None, *,
             base: PostprocessConfig | None = None) -> PostprocessConfig:
    """``base`` (default: :func:`default_postprocess`) with some island sizes (by phase name) and the rim width replaced.

    ``min_sizes`` holds ``(phase name, pixels)`` pairs; 0 pixels removes the rule for that phase. Raises
    :class:`ReactomoError` for a name that is not in the phase table.
    """
    base = base if base is not None else default_postprocess(phases)
    sizes = dict(base.min_sizes)
    by_name = {p.name.lower(): p.code for p in phases}
    for name, px in min_sizes:
        code = by_name.get(str(name).strip().lower())
        if code is None:
            raise ReactomoError(f"There is no phase called '{name}' in the phase table ({', '.join(p.name for p in phases)}); check the spelling.")
        if isinstance(px, bool) or not isinstance(px, (int, np.integer)) or not 0 <= int(px) <= 1_000_000:
            raise ReactomoError(f"The island size of {name} must be a whole number of pixels from 0 to 1000000; got {px!r}.")
        if int(px) == 0:
            sizes.pop(code, None)
        else:
            sizes[code] = int(px)
    changes: dict[str, Any] = {"min_sizes": sizes}
    if rim_px is not None:
        changes["rim_px"] = rim_px
    return replace(base, **changes)


# -- choosing the cleaning without looking at the answer ---------------------------------------------------------
#: The island sizes (pixels, per XY slice) and rim widths :func:`choose_cleaning` tries by default. Bassanite sizes
#: are squares of 0-10 px sides (a 2.75 µm voxel: up to 27 µm), the study's 100 px included; pores up to the study's 8.
CANDIDATE_SIZES = {"bassanite": (0, 4, 9, 16, 25, 49, 100), "pore": (0, 4, 8, 16)}
CANDIDATE_RIMS = (0, 1, 2, 3)


@dataclass(frozen=True)
class CleaningChoice:
    """The cleaning :func:`choose_cleaning` picked, with the evidence.

    Attributes
    ----------
    config : PostprocessConfig
        The chosen cleaning (``"2d"`` connectivity, the study's rim rule between the same phases).
    agreement : float
        Mean Dice of the cleaned prediction with the reference over the reference's phases, at the chosen cleaning.
    uncleaned : float
        The same agreement without any cleaning.
    table : list of dict
        Every candidate tried: ``min_sizes`` (by phase name), ``rim_px``, ``agreement``.
    method : str
        One sentence: how the choice was made and on what.
    """

    config: PostprocessConfig
    agreement: float
    uncleaned: float
    table: list[dict[str, Any]]
    method: str

    def to_dict(self, phases: PhaseTable | None = None) -> dict[str, Any]:
        names = {p.code: p.name for p in phases} if phases is not None else {}
        return {"config": self.config.to_dict(),
                "min_sizes": {names.get(c, str(c)): s for c, s in self.config.min_sizes.items()},
                "rim_px": self.config.rim_px, "agreement": self.agreement, "uncleaned_agreement": self.uncleaned,
                "method": self.method, "candidates": self.table}


def _agreement(pred: np.ndarray, ref: np.ndarray, codes: Sequence[int]) -> float:
    """Mean Dice over the codes present in ``ref`` (pixels where ``ref`` is 0 are not scored)."""
    scored = ref != 0
    p, r = pred[scored], ref[scored]
    dice = []
    for c in codes:
        t = r == c
        if not t.any():
            continue
        q = p == c
        dice.append(2.0 * np.count_nonzero(t & q) / (np.count_nonzero(t) + np.count_nonzero(q)))
    return float(np.mean(dice)) if dice else float("nan")


def choose_cleaning(
    prediction: np.ndarray,
    reference: np.ndarray,
    *,
    phases: PhaseTable,
    sizes: Mapping[str, Sequence[int]] | None = None,
    rims: Sequence[int] = CANDIDATE_RIMS,
    tolerance: float = 1e-3,
    where: str = "the labelled slices",
) -> CleaningChoice:
    """Pick island sizes and the rim width from agreement with a reference on labelled slices -- never from a check.

    Every combination of the candidate sizes and rim widths cleans ``prediction`` slice by slice (``"2d"``, as
    :func:`postprocess`) and is scored by its mean Dice with ``reference`` over the phases the reference holds
    (pixels where the reference is 0 are not scored). The least cleaning whose agreement is within ``tolerance``
    of the best wins: cleaning has to earn its place. Nothing here looks at the internal standard, the pore-volume
    check or any other check of the reaction, so those stay independent checks of the result.

    Parameters
    ----------
    prediction : ndarray of uint8, (n, y, x)
        The network's uncleaned labels of the labelled slices.
    reference : ndarray of uint8, (n, y, x)
        What to agree with, e.g. the random forest's ground truth of the same slices where it is confident (0 =
        not scored).
    phases : PhaseTable
        Finds bassanite, pore and celestite by name (the study's rules); phases without a rule are not cleaned.
    sizes : mapping of phase name to sizes, optional
        Candidate island sizes per phase name (default :data:`CANDIDATE_SIZES`).
    rims : sequence of int
        Candidate rim widths in pixels (0 = no rim rule).
    tolerance : float
        Agreement within this of the best counts as equal (the least cleaning is taken).
    where : str
        A few words naming the scored slices, for the sentence in ``method``.

    Returns
    -------
    CleaningChoice

    Raises
    ------
    ReactomoError
        Arrays of other shapes or types, or a reference with nothing to score.
    """
    pred, _ = _as_volume(prediction, "2d")
    ref, _ = _as_volume(reference, "2d")
    if pred.shape != ref.shape:
        raise ReactomoError(f"The prediction {pred.shape} and the reference {ref.shape} must have the same shape.")
    if not ref.any():
        raise ReactomoError("The reference labels no pixel, so the cleaning cannot be chosen from it; label some slices first.")
    base = default_postprocess(phases)
    by_name = {p.name.strip().lower(): p.code for p in phases}
    grid = {by_name[n]: tuple(v) for n, v in (sizes or CANDIDATE_SIZES).items() if n.strip().lower() in by_name}
    rims = tuple(rims) if base.rim_phase is not None else (0,)
    codes = [p.code for p in phases]
    names = {p.code: p.name for p in phases}
    import itertools

    rows = []
    keys = sorted(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        min_sizes = {k: v for k, v in zip(keys, combo) if v > 0}
        for rim in rims:
            cfg = replace(base, min_sizes=min_sizes, rim_px=int(rim), connectivity="2d")
            cleaned, _ = postprocess(pred, cfg, codes=codes)
            rows.append({"min_sizes": {names[k]: int(v) for k, v in zip(keys, combo)}, "rim_px": int(rim),
                         "agreement": _agreement(cleaned, ref, codes), "_cfg": cfg,
                         "_amount": sum(combo) + 10 * int(rim)})
    uncleaned = _agreement(pred, ref, codes)
    best = max(r["agreement"] for r in rows)
    pick = min((r for r in rows if r["agreement"] >= best - tolerance), key=lambda r: (r["_amount"], -r["agreement"]))
    sizes_text = ", ".join(f"{n} < {v} px" for n, v in pick["min_sizes"].items() if v) or "no island removal"
    method = (f"Cleaning chosen by agreement with the ground truth of {where} (mean Dice over its phases, "
              f"{len(rows)} candidates, the least cleaning within {tolerance:g} of the best): {sizes_text}, rim "
              f"{pick['rim_px']} px; agreement {pick['agreement']:.4f} against {uncleaned:.4f} uncleaned. The internal "
              f"standard and the other checks were not looked at.")
    table = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    return CleaningChoice(config=pick["_cfg"], agreement=float(pick["agreement"]), uncleaned=uncleaned, table=table,
                          method=method)


#: How a segmentation's cleaning is chosen: ``"auto"`` (the cleaning stored with the model, chosen when it was
#: trained by agreement with its ground truth; the study's rules for a model saved without one), ``"study"`` (bassanite
#: < 100 px, pore < 8 px, a 2 px rim), ``"off"``.
CLEANING_MODES = ("auto", "study", "off")


def cleaning_for(
    mode: str,
    phases: PhaseTable,
    card: Mapping[str, Any] | None = None,
    *,
    min_sizes: Sequence[tuple[str, int]] = (),
    rim_px: int | None = None,
) -> tuple[PostprocessConfig | None, str]:
    """The cleaning a segmentation uses, and one sentence saying where it comes from.

    Parameters
    ----------
    mode : {"auto", "study", "off"}
        See :data:`CLEANING_MODES`.
    phases : PhaseTable
    card : dict, optional
        The model card; ``"auto"`` takes ``card["cleaning"]`` when present.
    min_sizes, rim_px
        Explicit island sizes by phase name and rim width, applied on top of the mode's (as :func:`cleaning`).

    Returns
    -------
    (PostprocessConfig or None, str)
        None with ``"off"``.

    Raises
    ------
    ReactomoError
        An unknown mode, a phase name not in the table, or a stored cleaning that does not fit the phase table.
    """
    if mode not in CLEANING_MODES:
        raise ReactomoError(f"The cleaning mode is {mode!r}; use one of {', '.join(CLEANING_MODES)}.")
    if mode == "off":
        return None, "No cleaning (the network's labels as they are)."
    stored = (card or {}).get("cleaning") if mode == "auto" else None
    if stored:
        try:
            base = PostprocessConfig.from_dict(stored["config"])
        except (KeyError, TypeError) as exc:
            raise ReactomoError(f"The model's stored cleaning cannot be read ({exc}); retrain the model or choose the study's cleaning.") from None
        codes = set(phases.codes)
        named = set(base.min_sizes) | {c for c in (base.rim_phase, base.rim_around) if c is not None}
        if not named <= codes:
            raise ReactomoError(f"The model's stored cleaning names phase codes {sorted(named - codes)} that are not in this phase table; choose the study's cleaning.")
        why = ("Cleaning stored with the model, chosen when it was trained by agreement with its ground-truth slices "
               "(never by the internal standard)")
    else:
        base = default_postprocess(phases)
        why = ("The study's cleaning" if mode == "study" else
               "The study's cleaning (this model was saved without a cleaning of its own; retrain it to get one)")
    post = cleaning(phases, min_sizes, rim_px, base=base)
    if min_sizes or rim_px is not None:
        why += ", with the sizes given by hand"
    by_code = {p.code: p.name for p in phases}
    text = ", ".join(f"{by_code.get(c, c)} < {v} px" for c, v in post.min_sizes.items()) or "no island removal"
    rim = f"rim {post.rim_px} px" if post.rim_phase is not None else "no rim rule"
    return post, f"{why}: {text}, {rim} ({post.connectivity})."
