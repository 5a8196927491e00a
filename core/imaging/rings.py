"""Ring artefacts measured on a scan and removed from every slice, in polar coordinates around the rotation axis.

Why
---
A miscalibrated detector column (a scintillator blemish, a stale flat field) adds the same error to one line of
every projection; filtered back projection turns it into a ring centred on the rotation axis, a half-ring for a 180°
scan, one to a few pixels wide with dark flanks from the ramp filter. Its amplitude can match the gypsum-bassanite
contrast (on the benchmark family, rings of 900-1800 grey against a contrast of 1300-1900), so a forest taught from
scribbles reads a bright ring across gypsum as bassanite, and the network learns it from the forest. When only the
reconstruction is at hand the standard cure works in polar coordinates (Sijbers & Postnov 2004, Phys. Med. Biol. 49
N247; TomoPy's ``remove_ring``): a ring is a narrow feature along the radius that stays the same along its arc.

How
---
:func:`fit_rings` measures the rings of one scan once; :meth:`Rings.image` is then subtracted from every slice.

1. Background: each slice is sampled on a polar grid (1 pixel of radius, 1° of angle); a running median over
   ``radial_width`` pixels along the radius is the background, smooth, so it interpolates back to the pixels
   without blurring anything narrow. Each pixel's residual is its value minus that background: exact at the
   pixel, so a ring one pixel wide keeps its height.
2. Rings: the residuals are pooled in bins of ``dr`` pixels of radius and ``sector_deg`` degrees of angle, over
   the slices read (up to ``max_slices``, evenly spaced), and each bin's median taken. A detector column's ring
   lies at the same place on every slice, while a grain, a pore or a lath changes from slice to slice, so the median
   over slices keeps the ring and drops the rock. A running median along the arc, over at least ``arc_sectors``
   sectors and ``arc_px`` pixels of arc (near the axis a sector is short), of the sectors that hold pixels at that
   radius, then drops what one sector alone holds.
3. Noise gate: a median of ``n`` samples of noise ``sigma`` has a noise of about ``1.25 sigma / sqrt(n)``; a bin
   under ``gate`` times that (``sigma`` robustly measured on all residuals, ``n`` the bin's samples) is set to 0,
   so a scan without rings is left as it is instead of being given arcs of filtered noise.
4. Left alone: bins within the radial median's reach of an edge that most slices share at one radius (the signed
   step of the background, median over the slices and the sector, over ``edge`` × sigma: a cylindrical sample's
   outline or a container's wall, whose blur would pass for a ring), bins nearer the axis than ``min_radius``, and
   everything outside the inscribed circle (the field of view; in the corners a circle is cut into short arcs).

The axis is the slice's centre, ``((ny - 1) / 2, (nx - 1) / 2)``, as reconstructions are made. What it assumes: a
ring lies at the same radius on the slices read (a detector column's defect, the usual cause); a ring on a few
slices only falls under the median and is left in place, never made worse.

The settings are physical rather than tuned: a defect spans 1-3 detector columns blurred by the detector, so an
11-pixel median along the radius leaves it whole; bins of 1/4 pixel of radius follow a ring's profile. The arc
(10° sectors, a median over at least 5 of them and 40 px) and the gate were set by how close the corrected scans of
one tuning variant of the benchmark family (v06) came to the same scans made without rings (``bench/screen_rings.py``),
never by the segmentation or the internal standard. Measured there: the rings' RMS on the voxels they move by over
300 grey fell from 791 to 191 grey at the first step and from 767 to 341 at the last; elsewhere 88 -> 87 and
85 -> 95; on the ring-free twin 26 px of a slice move by over 100 grey. On the tuning half's whole workflow
(``bench/results/ring-removal-rules.txt``) it is the default since 2026-12-07 (:data:`RINGS`).
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.ndimage import map_coordinates, median_filter

from core.errors import ReactomoError

__all__ = ["RING_DEFAULTS", "RINGS", "RING_MODES", "Rings", "fit_rings", "ring_settings", "check_rings_mode", "open_scan",
           "with_rings", "model_rings", "rings_summary", "ring_corrected_class"]

#: The filter's settings (see the module docstring for why these values).
RING_DEFAULTS: dict[str, float] = {"radial_width": 11, "dr": 0.25, "sector_deg": 10.0, "arc_sectors": 5, "arc_px": 40.0,
                                   "gate": 3.0, "edge": 4.0, "min_radius": 4.0, "max_slices": 64}
#: What the workflow does with rings: "remove" (measure and subtract them) or "keep" (read the scans as they are).
RING_MODES = ("remove", "keep")
#: The default of ``run``, ``train``, ``rf`` and new projects (``segment`` and ``watch`` read scans as the model card says;
#: see the README's benchmark and ``bench/results/ring-removal-rules.txt`` for the choice).
RINGS = "remove"
_N_THETA = 360
_MAX_VOXELS = 16_000_000  # residuals pooled at most (with their bins and sort order, about 0.4 GB at most)


def check_rings_mode(mode: Any) -> str:
    """``mode`` if it is one of :data:`RING_MODES`; otherwise a :class:`ReactomoError` naming them."""
    if mode not in RING_MODES:
        raise ReactomoError(f"The rings setting is {mode!r}; use 'remove' (measure ring artefacts and subtract them) "
                            "or 'keep' (read the scans as they are).")
    return str(mode)


def ring_settings(**changes: Any) -> dict[str, float]:
    """The ring filter's settings, :data:`RING_DEFAULTS` with ``changes``, checked; raises :class:`ReactomoError`."""
    s: dict[str, Any] = {**RING_DEFAULTS}
    for k, v in changes.items():
        if k not in s:
            raise ReactomoError(f"The ring filter has no setting {k!r}; choose from {', '.join(RING_DEFAULTS)}.")
        s[k] = v

    def whole(name: str, lo: int, hi: int) -> int:
        v = s[name]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not float(v).is_integer() \
                or not lo <= v <= hi:
            raise ReactomoError(f"The ring filter's {name.replace('_', ' ')} must be a whole number from {lo} to {hi}; got {v!r}.")
        return int(v)

    def number(name: str, lo: float, hi: float) -> float:
        v = s[name]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not lo <= float(v) <= hi:
            raise ReactomoError(f"The ring filter's {name.replace('_', ' ')} must be a number from {lo:g} to {hi:g}; got {v!r}.")
        return float(v)

    return {"radial_width": whole("radial_width", 3, 101), "dr": number("dr", 0.05, 2.0),
            "sector_deg": number("sector_deg", 1.0, 90.0), "arc_sectors": whole("arc_sectors", 1, 36),
            "arc_px": number("arc_px", 0.0, 1e4),
            "gate": number("gate", 0.0, 20.0), "edge": number("edge", 0.5, 1000.0), "min_radius": number("min_radius", 0.0, 1e6),
            "max_slices": whole("max_slices", 1, 100_000)}


@lru_cache(maxsize=8)
def _grids(ny: int, nx: int, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polar sample points (y, x) of a slice, each pixel's (angle index, radius) for the way back, and the radii."""
    r_max = math.hypot(max(cy, ny - 1 - cy), max(cx, nx - 1 - cx))
    radii = np.arange(int(math.ceil(r_max)) + 2, dtype=np.float64)
    theta = np.arange(_N_THETA) * (2.0 * math.pi / _N_THETA)
    py = cy + radii[None, :] * np.sin(theta)[:, None]
    px = cx + radii[None, :] * np.cos(theta)[:, None]
    yy, xx = np.meshgrid(np.arange(ny) - cy, np.arange(nx) - cx, indexing="ij")
    back = np.stack([(np.arctan2(yy, xx) % (2.0 * math.pi)) * (_N_THETA / (2.0 * math.pi)), np.hypot(yy, xx)])
    pts = np.stack([py, px]).astype(np.float32)
    back = back.astype(np.float32)
    for a in (pts, back):
        a.setflags(write=False)
    return pts, back, radii


def _residual(slice2d: np.ndarray, pts: np.ndarray, back: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel minus the running median along the radius (the smooth background), float32; and the background's
    step across the median's reach on the polar grid, ``bg(r + w/2) - bg(r - w/2)`` (an edge, where it is large)."""
    polar = map_coordinates(slice2d, pts, order=1, mode="nearest")
    bg = median_filter(polar, size=(1, width), mode="nearest")
    h = width // 2
    step = np.zeros_like(bg)
    step[:, h:-h] = bg[:, 2 * h:] - bg[:, : -2 * h]
    bg = np.concatenate([bg, bg[:1]], axis=0)  # 360° interpolates towards 0°
    return slice2d - map_coordinates(bg, back, order=1, mode="nearest"), step


class Rings:
    """The ring artefacts measured on one scan (:func:`fit_rings`): subtract :meth:`image` from every slice.

    Attributes
    ----------
    shape : (int, int)
        ``(y, x)`` of the slices.
    settings : dict
        The filter's settings (:data:`RING_DEFAULTS`).
    table : ndarray (sectors, radius bins) float32
        The ring's grey value per bin (0 where no ring was found).
    slices : list of int
        The slices the rings were measured on.
    """

    def __init__(self, shape: tuple[int, int], settings: dict[str, float], table: np.ndarray, slices: list[int]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.settings = dict(settings)
        self.table = table
        self.slices = list(slices)
        self._image: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Rings(shape={self.shape}, bins_with_rings={int(np.count_nonzero(self.table))})"

    def image(self) -> np.ndarray:
        """The rings as a slice (float32 ``(y, x)``, read-only), the same on every slice of the scan."""
        if self._image is None:
            s = self.settings
            ny, nx = self.shape
            _, back, _ = _grids(ny, nx, (ny - 1) / 2.0, (nx - 1) / 2.0)
            sector = (back[0] * (360.0 / _N_THETA) / s["sector_deg"]).astype(np.int64) % self.table.shape[0]
            rbin = np.minimum((back[1] / s["dr"]).astype(np.int64), self.table.shape[1] - 1)
            img = self.table[sector, rbin].astype(np.float32)
            img.setflags(write=False)
            self._image = img
        return self._image

    def summary(self) -> dict[str, Any]:
        """JSON-able description: settings, slices read, bins found, the largest ring's grey value, pixels moved."""
        img = self.image()
        return {"settings": dict(self.settings), "slices_read": len(self.slices),
                "bins_with_rings": int(np.count_nonzero(self.table)),
                "largest_grey": round(float(np.abs(self.table).max(initial=0.0)), 1),
                "pixels_moved_over_100_grey": int(np.count_nonzero(np.abs(img) > 100.0))}

    def apply(self, data: np.ndarray, *, ysel: Any = slice(None), xsel: Any = slice(None)) -> np.ndarray:
        """``data`` (slices ``(..., y, x)`` cut by ``ysel``/``xsel``) with the rings subtracted, in its own dtype.

        Integer scans are rounded and clipped to their range, so every later step reads the same kind of values.
        """
        ring = self.image()[ysel, xsel]
        arr = np.asarray(data)
        out = arr.astype(np.float32) - ring
        if arr.dtype.kind in "ui":
            info = np.iinfo(arr.dtype)
            np.rint(out, out=out)
            np.clip(out, info.min, info.max, out=out)
        return out.astype(arr.dtype, copy=False)


def fit_rings(volume: Any, **settings: Any) -> Rings:
    """Measure the ring artefacts of one scan (see the module docstring).

    Parameters
    ----------
    volume : ndarray (z, y, x) or a lazy volume with ``shape`` and ``slice(0, z)``
        The scan as reconstructed.
    **settings
        :data:`RING_DEFAULTS` to change.

    Raises
    ------
    ReactomoError
        A volume that is not 3D, slices smaller than 16 x 16; bad settings. Values that are not finite are measured
        around (taken as the slice's median) and stay what they are when the rings are subtracted.
    """
    s = ring_settings(**settings)
    shape = tuple(int(v) for v in volume.shape)
    if len(shape) != 3 or min(shape[1:]) < 16:
        raise ReactomoError(f"Rings are measured on a scan of slices at least 16 x 16 pixels; got shape {shape}.")
    nz, ny, nx = shape
    n_read = max(1, min(nz, s["max_slices"], _MAX_VOXELS // (ny * nx)))
    zs = sorted({int(round(v)) for v in np.linspace(0, nz - 1, n_read)})
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    pts, back, radii = _grids(ny, nx, cy, cx)
    res = np.empty((len(zs), ny, nx), dtype=np.float32)
    steps = np.empty((len(zs),) + pts.shape[1:], dtype=np.float32)
    for i, z in enumerate(zs):
        sl = np.asarray(volume[z] if isinstance(volume, np.ndarray) else volume.slice(0, z), dtype=np.float32)
        finite = np.isfinite(sl)
        if not finite.all():  # measured around them; refusing NaN or infinity is the normalisation's call, with its sentence
            sl = np.where(finite, sl, np.float32(np.median(sl[finite])) if finite.any() else np.float32(0.0))
        res[i], steps[i] = _residual(sl, pts, back, s["radial_width"])
    n_sec = max(1, int(round(360.0 / s["sector_deg"])))
    n_bin = int(float(back[1].max()) / s["dr"]) + 2
    sector = (back[0] * (360.0 / _N_THETA) / s["sector_deg"]).astype(np.int64) % n_sec
    rbin = (back[1] / s["dr"]).astype(np.int64)
    label = np.broadcast_to((sector * n_bin + rbin).ravel().astype(np.int32), (len(zs), ny * nx)).ravel()
    values = res.ravel()
    order = np.lexsort((values, label))  # by bin, then by value: a bin's median is its middle element(s)
    lab_sorted, val_sorted = label[order], values[order]
    del order, res
    bins = np.arange(n_sec * n_bin)
    lo, hi = np.searchsorted(lab_sorted, bins), np.searchsorted(lab_sorted, bins, side="right")
    count = hi - lo
    has = count > 0
    mid_lo = np.where(has, lo + (count - 1) // 2, 0)
    mid_hi = np.where(has, lo + count // 2, 0)
    table = np.where(has, 0.5 * (val_sorted[mid_lo] + val_sorted[mid_hi]), 0.0).astype(np.float32)
    sigma = 1.4826 * float(np.median(np.abs(val_sorted))) if val_sorted.size else 0.0
    noise = 1.2533 * sigma / np.sqrt(np.maximum(count, 1))
    table = table.reshape(n_sec, n_bin)
    has = has.reshape(n_sec, n_bin)
    # the median along the arc of the sectors that hold pixels at this radius (near the axis, few do), over at least
    # arc_sectors sectors and at least arc_px pixels of arc (near the axis a sector is short, and a lath is not)
    r_bin = (np.arange(n_bin) + 0.5) * s["dr"]
    k_bin = np.maximum(int(s["arc_sectors"]), np.ceil(s["arc_px"] / np.maximum(r_bin * math.radians(s["sector_deg"]), 1e-6)))
    k_bin = np.minimum(k_bin.astype(np.int64), n_sec)
    held = np.where(has, table, np.nan)
    smoothed = np.zeros_like(table)
    import warnings

    for k in np.unique(k_bin):
        cols = k_bin == k
        if k <= 1:
            smoothed[:, cols] = table[:, cols]
            continue
        part = held[:, cols]
        window = np.stack([np.roll(part, shift, axis=0) for shift in range(-(int(k) // 2), int(k) - int(k) // 2)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a window of empty bins: all-NaN, set to 0 below
            smoothed[:, cols] = np.nanmedian(window, axis=0)
    table = np.where(has & np.isfinite(smoothed), smoothed, 0.0).astype(np.float32)
    table[np.abs(table) < s["gate"] * noise.reshape(n_sec, n_bin)] = 0.0
    table[~has] = 0.0
    # an edge at the same radius on most slices (a cylindrical sample's outline, a container wall) is no ring: its
    # blur would be taken for one, so the bins within the median's reach of such a step are left alone
    edge = np.median(steps, axis=0)  # (angle, radius): the step most slices share, with its sign (rock's cancel)
    of_sector = (np.arange(_N_THETA) * 360.0 / _N_THETA // s["sector_deg"]).astype(np.int64) % n_sec
    per_sector = np.abs(np.stack([np.median(edge[of_sector == j], axis=0) for j in range(n_sec)]))
    h = s["radial_width"] // 2
    near = np.maximum.reduce([np.roll(per_sector, d, axis=1) for d in range(-h, h + 1)]) > s["edge"] * sigma
    r_idx = np.minimum(np.rint((np.arange(n_bin) + 0.5) * s["dr"]).astype(np.int64), per_sector.shape[1] - 1)
    table[near[:, r_idx]] = 0.0
    # inside the reconstruction's field of view only: the circle the slice holds whole (beyond it, in the corners,
    # a circle is cut into short arcs and a reconstruction is often not valid)
    table[:, (r_bin < s["min_radius"]) | (r_bin > min(cy, cx) + 0.5)] = 0.0
    table.setflags(write=False)
    return Rings(shape=(ny, nx), settings=s, table=table, slices=zs)


# ---------------------------------------------------------------------------------------------------------------
# scans read with their rings removed
# ---------------------------------------------------------------------------------------------------------------
_FITTED: dict[tuple, Rings] = {}
_FITTED_MAX = 32


def _fitted(vol: Any, settings: dict[str, float]) -> Rings:
    """:func:`fit_rings` of an opened scan, remembered by file, size, modification time and settings."""
    import os

    try:
        st = os.stat(vol.path)
        key = (str(vol.path), vol.kind, st.st_size, st.st_mtime_ns, tuple(sorted(settings.items())))
    except OSError:
        key = None
    if key is not None and key in _FITTED:
        return _FITTED[key]
    if min(vol.shape[1:]) < 16:  # too small a slice to tell a ring from the rock: read as it is
        rings = Rings((vol.shape[1], vol.shape[2]), settings, np.zeros((1, 1), np.float32), [])
    else:
        rings = fit_rings(_RawView(vol), **settings)
    if key is not None:
        if len(_FITTED) >= _FITTED_MAX:
            _FITTED.pop(next(iter(_FITTED)))
        _FITTED[key] = rings
    return rings


class _RawView:
    """The raw slices of a ring-corrected volume (what :func:`fit_rings` measures), read past the correction."""

    def __init__(self, vol: Any) -> None:
        self._vol, self.shape = vol, vol.shape

    def slice(self, axis: int, index: int) -> np.ndarray:
        from core.imaging.io import Volume

        assert axis == 0
        return Volume._block(self._vol, int(index), int(index) + 1, slice(None), slice(None))[0]


def _make_corrected_class():
    from core.imaging.io import Volume

    class RingCorrectedVolume(Volume):
        """A scan read with its ring artefacts removed (:func:`open_scan`); the rings are measured on first read.

        Everything a :class:`core.imaging.io.Volume` reads (slices in every orientation, slabs, blocks, samples, the
        whole volume) comes with :meth:`Rings.image` subtracted, in the scan's own dtype.
        """

        def __init__(self, path: Any, *, kind: str | None = None, settings: dict[str, float] | None = None) -> None:
            super().__init__(path, kind=kind)
            self.ring_settings = ring_settings(**(settings or {}))
            self._rings: Rings | None = None
            self._fit_lock = threading.Lock()

        def __repr__(self) -> str:
            return "RingCorrected" + super().__repr__()

        @property
        def rings(self) -> Rings:
            """The rings of this scan (measured now if not yet)."""
            with self._fit_lock:
                if self._rings is None:
                    self._rings = _fitted(self, self.ring_settings)
            return self._rings

        def _block(self, z0: int, z1: int, ysel: Any, xsel: Any) -> np.ndarray:
            return self.rings.apply(super()._block(z0, z1, ysel, xsel), ysel=ysel, xsel=xsel)

        def read(self) -> np.ndarray:
            whole = super().read()  # a paged stack decodes itself whole; otherwise it came through _block above
            return self.rings.apply(whole) if self._tiff is not None else whole

    return RingCorrectedVolume


_CLASS: Any = None


def ring_corrected_class() -> Any:
    """The :class:`core.imaging.io.Volume` subclass that reads scans with their rings removed."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _make_corrected_class()
    return _CLASS


def open_scan(path: Any, *, kind: str | None = None, rings: str = "keep", settings: dict[str, float] | None = None) -> Any:
    """Open a scan lazily, as :func:`core.imaging.io.open_volume` does, with its rings removed when ``rings="remove"``.

    Raises
    ------
    ReactomoError
        A bad ``rings`` mode or settings (before the file is opened), or anything ``open_volume`` refuses.
    """
    from core.imaging.io import open_volume

    mode = check_rings_mode(rings)
    if mode == "keep":
        return open_volume(path, kind=kind)
    checked = ring_settings(**(settings or {}))
    return ring_corrected_class()(path, kind=kind, settings=checked)


def with_rings(vol: Any, rings: str) -> tuple[Any, bool]:
    """``vol`` read as ``rings`` says: ``(volume, opened)``; ``opened`` is True when a new volume was opened here
    (close it when done). An array is corrected in memory; a volume already read that way is returned as it is."""
    mode = check_rings_mode(rings)
    cls = ring_corrected_class()
    if mode == "keep":
        if isinstance(vol, cls):
            from core.imaging.io import open_volume

            return open_volume(vol.path, kind=vol.kind), True
        return vol, False
    if isinstance(vol, np.ndarray):
        return fit_rings(vol).apply(vol), False
    if isinstance(vol, cls):
        return vol, False
    return cls(vol.path, kind=vol.kind), True


def model_rings(spec: Any) -> str:
    """How a model's scans were read: its card's normalisation ``"rings"`` (``"keep"`` for models made before it)."""
    mode = spec.get("rings", "keep") if isinstance(spec, dict) else "keep"
    return check_rings_mode(mode)


def rings_summary(vol: Any) -> dict[str, Any] | None:
    """What was removed from a scan opened by :func:`open_scan` (:meth:`Rings.summary`), or None if nothing was."""
    cls = ring_corrected_class()
    return vol.rings.summary() if isinstance(vol, cls) else None
