"""The Analysis step: the internal standard, pore sizes, growth rate, with uncertainty, exports and a report.

:func:`analyze` reads a segmentation folder (``<scan>.tif`` label files, with ``segmentation.json`` and
``phase_volumes.csv`` when Reactomo wrote it) and writes to ``out_dir``:

- ``molar_evolution.csv``: ``step, time_s, n_<reactant>_mol, n_<product>_mol, x, y, deviation_pct, inside_band``;
- ``pore_check.csv``, ``inert.csv``: the second and third checks;
- ``pore_sizes.csv``: porosity, connected porosity and pore sizes per step, with bootstrap intervals;
- ``pore_size_distribution.csv``: per step and diameter, the share of the pore volume at most that thick (local
  thickness) and the share of the pores at most that large (equivalent diameters), with bootstrap intervals;
- ``growth.csv``: product fraction, smoothed fraction and rate with its band per step; the JMAK fit in ``summary.json``;
- ``summary.json``: every number above plus the fits, verdicts, settings and versions;
- ``report.html``: one self-contained file (plotly.js inlined; opens offline) with every chart, its method, the
  settings, the model card summary and the verdicts.

Figures come from :mod:`core.analysis.analysis_charts`; the page draws the same ones.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json, atomic_write_text
from core.errors import ReactomoError
from core.phases import DEFAULT_PHASES, PhaseTable, Reaction

__all__ = ["AnalysisConfig", "SeriesData", "load_series", "analyze", "result_from_summary", "load_result", "figures",
           "report_html", "csv_text", "verdict_rows"]


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of :func:`analyze`.

    Attributes
    ----------
    voxel_size_um : float or None
        Voxel edge in µm (None: from the segmentation record, else 2.75).
    interval_s : float or None
        Seconds between steps when the record has no times.
    band : float
        Half-width of the internal-standard band (0.02 = ±2 %).
    pore_max_voxels : int
        Pore sizes are measured on a central sub-volume of at most this many voxels per step (local thickness
        needs ~8 bytes per voxel: the default 32 M is ~250 MB and ~1.5 s per step on 2 cores); porosity always uses
        every voxel.
    n_boot : int
        Bootstrap resamples of every interval.
    seed : int
    onset : {"first-step", "fitted"}
        JMAK onset ``t0``: the time of the first step (default: the first scan starts the experiment, as in
        α = 1 − exp(−(k t)^n)), or a fitted parameter. Measured on the demo run (U-Net segmentation, truth k = 2.47 /h,
        n = 2, α_max = 0.85): first-step gives k = 2.52 /h, n = 2.08 [1.98, 2.18], α_max = 0.843 [0.826, 0.861];
        fitted gives t0 = −183 s, n = 2.46 [2.19, 2.72], because 1 % of false product at the first step reads as
        an earlier start.
    """

    voxel_size_um: float | None = None
    interval_s: float | None = None
    band: float = 0.02
    pore_max_voxels: int = 32_000_000
    n_boot: int = 500
    seed: int = 0
    onset: str = "first-step"

    def validate(self) -> None:
        if self.onset not in ("first-step", "fitted"):
            raise ReactomoError(f"The JMAK onset must be 'first-step' or 'fitted'; got {self.onset!r}.")
        if self.voxel_size_um is not None and not (0 < float(self.voxel_size_um) <= 1000):
            raise ReactomoError(f"The voxel size must be between 0 and 1000 µm; got {self.voxel_size_um!r}.")
        if self.interval_s is not None and not (0 < float(self.interval_s) <= 1e7):
            raise ReactomoError(f"The interval must be a positive number of seconds; got {self.interval_s!r}.")
        check_band(self.band)
        if not 1000 <= int(self.pore_max_voxels) <= 10**10:
            raise ReactomoError(f"pore_max_voxels must be from 1000 to 1e10; got {self.pore_max_voxels!r}.")
        if not 50 <= int(self.n_boot) <= 100_000:
            raise ReactomoError(f"n_boot must be from 50 to 100000; got {self.n_boot!r}.")


@dataclass
class SeriesData:
    """A segmented series: per step its label file, time and voxel counts."""

    folder: Path
    steps: list[int]
    paths: list[Path]
    times_s: list[float | None]
    counts: list[dict[int, int]]
    phases: PhaseTable
    voxel_size_um: float
    record: dict[str, Any] | None = None
    model: dict[str, Any] = field(default_factory=dict)


def load_series(folder: str | os.PathLike, *, phases: PhaseTable | None = None, voxel_size_um: float | None = None,
                interval_s: float | None = None) -> SeriesData:
    """Read a segmentation folder: Reactomo's record when present, else every ``*.tif`` in natural order.

    Raises
    ------
    ReactomoError
        Missing folder, no label file, or no time information at all for a kinetic analysis is NOT an error
        (times stay None); a label file that is not uint8 is.
    """
    from core.imaging.io import natural_key, open_volume
    from core.segmentation.series import read_series_record

    folder = Path(folder)
    if not folder.is_dir():
        raise ReactomoError(f"The segmentation folder {folder} does not exist; give the --out folder of `segment` or `run`.")
    rec = read_series_record(folder)
    if rec is not None:
        phases = phases or PhaseTable.from_dict(rec["phases"])
        def where(s: dict) -> Path:
            # a step's label file lies in the segmentation's folder; its recorded path may be another machine's
            # (an imported or copied project), so the file of that name in this folder counts too
            p = Path(s["out_path"])
            return p if p.is_file() else folder / p.name

        done = [s for s in rec["steps"] if s.get("status") == "done" and where(s).is_file()]
        if not done:
            raise ReactomoError(f"No step of the segmentation in {folder} is done yet; segment the steps first.")
        steps = [int(s["step"]) for s in done]
        paths = [where(s) for s in done]
        times = [s.get("time_s") for s in done]
        counts = [{int(k): int(v) for k, v in s["counts"].items()} for s in done]
        vs = voxel_size_um or rec.get("voxel_size_um") or None
        model = rec.get("model", {})
    else:
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith(".")),
                       key=lambda p: natural_key(p.name))
        if not files:
            raise ReactomoError(f"The folder {folder} holds no label TIFF; give the folder `segment` wrote.")
        phases = phases or DEFAULT_PHASES
        steps, paths, times, counts = list(range(len(files))), files, [None] * len(files), []
        vs = voxel_size_um
        model = {}
        first_shape = None
        for p in files:
            with open_volume(p) as v:
                if v.dtype != np.uint8:
                    raise ReactomoError(f"{p.name} holds {v.dtype} values, not uint8 label codes; give label files.")
                first_shape = first_shape or (files[0].name, v.shape)
                if v.shape != first_shape[1]:  # steps of one experiment are one sample volume: same shape
                    raise ReactomoError(f"{p.name} has shape {v.shape} but {first_shape[0]} has {first_shape[1]}; the "
                                        "steps of one experiment must be label volumes of the same shape.")
                c = np.zeros(256, np.int64)
                for z0 in range(0, v.shape[0], 16):
                    c += np.bincount(v.slab(z0, min(z0 + 16, v.shape[0])).ravel(), minlength=256)
                counts.append({code: int(c[code]) for code in phases.codes})
                vs = vs or v.voxel_size_um
    if all(t is None for t in times) and interval_s is not None:
        times = [s * float(interval_s) for s in steps]
    return SeriesData(folder=folder, steps=steps, paths=paths, times_s=[None if t is None else float(t) for t in times],
                      counts=counts, phases=phases, voxel_size_um=float(vs or 2.75), record=rec, model=model)


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """CSV of rows (floats with 6 significant digits; None as empty)."""
    if not rows:
        return ""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (f"{v:.6g}" if isinstance(v, float) else v))
                    for k, v in r.items()})
    return buf.getvalue()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _block_counts(vol, pore_code: int, codes, *, blocks: int = 4, slab: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Pore and labelled voxel counts per sub-volume (2 along z, ``blocks`` along y and x), read slab by slab.

    ``vol`` is an open :class:`core.imaging.io.Volume` (or an ndarray): memory is one slab, whatever the volume's size.
    """
    lut = np.zeros(256, bool)
    lut[list(codes)] = True
    arr = vol if isinstance(vol, np.ndarray) else None
    nz, ny, nx = (arr.shape if arr is not None else vol.shape)
    zb = np.array_split(np.arange(nz), 2 if nz >= 2 else 1)
    ys, xs = np.array_split(np.arange(ny), blocks), np.array_split(np.arange(nx), blocks)
    pore_n = np.zeros((len(zb), blocks, blocks), np.int64)
    lab_n = np.zeros_like(pore_n)
    z_block = np.concatenate([np.full(b.size, i) for i, b in enumerate(zb)])
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        part = arr[z0:z1] if arr is not None else vol.slab(z0, z1)
        for b in np.unique(z_block[z0:z1]):
            rows = part[z_block[z0:z1] == b]
            for i, yy in enumerate(ys):
                for j, xx in enumerate(xs):
                    blk = rows[:, yy[0]:yy[-1] + 1, xx[0]:xx[-1] + 1]
                    pore_n[b, i, j] += int(np.count_nonzero(blk == pore_code))
                    lab_n[b, i, j] += int(np.count_nonzero(lut[blk]))
    return pore_n.ravel().astype(float), lab_n.ravel().astype(float)


def _block_bootstrap_porosity(labels, pore_code: int, codes, *, blocks: int = 4, n_boot: int = 500,
                              seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """95 % interval of the porosity from a bootstrap over sub-volumes (``blocks`` along y and x, 2 along z).

    Pores are spatially correlated, so voxels are not independent samples; blocks of the volume are closer to it.
    The interval says how much the porosity would vary for another piece of the same rock of this size. ``labels``
    is a 3D array or an open volume (read slab by slab).
    """
    pore_n, lab_n = _block_counts(labels, pore_code, codes, blocks=blocks)
    if lab_n.sum() == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pore_n), (n_boot, len(pore_n)))
    est = pore_n[idx].sum(1) / np.maximum(lab_n[idx].sum(1), 1)
    return float(np.quantile(est, 0.5 - level / 2)), float(np.quantile(est, 0.5 + level / 2))


def _central_region(vol, max_voxels: int | None) -> tuple[np.ndarray, bool]:
    """The central sub-volume of about ``max_voxels`` (same proportions) of an open volume, reading only its slices."""
    nz, ny, nx = vol.shape
    if max_voxels is None or nz * ny * nx <= max_voxels:
        return vol.slab(0, nz), False
    factor = (max_voxels / (nz * ny * nx)) ** (1.0 / 3.0)
    sl = []
    for n in (nz, ny, nx):
        m = max(1, min(n, int(n * factor)))
        start = (n - m) // 2
        sl.append(slice(start, start + m))
    return vol.slab(sl[0].start, sl[0].stop)[:, sl[1], sl[2]].copy(), True


def _fit_band(x: np.ndarray, y: np.ndarray, fit: dict, level: float = 0.95) -> dict:
    """Confidence band of the OLS mean line, for the chart."""
    from scipy import stats

    n = len(x)
    if n < 3 or not np.isfinite(fit.get("residual_sd", np.nan)):
        return {}
    gx = np.linspace(x.min(), x.max(), 50)
    sxx = float(((x - x.mean()) ** 2).sum())
    se = fit["residual_sd"] * np.sqrt(1 / n + (gx - x.mean()) ** 2 / sxx)
    tq = stats.t.ppf(0.5 + level / 2, n - 2)
    mid = fit["intercept"] + fit["slope"] * gx
    return {"band_x": gx, "band_low": mid - tq * se, "band_high": mid + tq * se}


def analyze(
    seg_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    config: AnalysisConfig = AnalysisConfig(),
    phases: PhaseTable | None = None,
    reaction: Reaction | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every analysis on a segmented series; write the files when ``out_dir`` is given. Returns the summary.

    Raises
    ------
    ReactomoError
        Bad folder, settings, or a series the internal standard cannot use (no reactant at the first step).
    """
    from core.analysis import kinetics, stoichiometry
    from core.analysis.pores import pore_size_table
    from core.imaging.io import open_volume

    config.validate()
    say = on_progress or (lambda f, m: None)
    t0 = time.perf_counter()
    data = load_series(seg_dir, phases=phases, voxel_size_um=config.voxel_size_um, interval_s=config.interval_s)
    phases = data.phases
    reaction = reaction or Reaction()
    reaction.check_against(phases)
    rp, pp = phases.by_code(reaction.reactant), phases.by_code(reaction.product)
    vs = data.voxel_size_um
    say(0.05, "internal standard")
    rows = stoichiometry.molar_evolution(data.counts, phases=phases, reaction=reaction, voxel_size_um=vs,
                                         times_s=data.times_s if all(t is not None for t in data.times_s) else None,
                                         band=config.band)
    for r, s in zip(rows, data.steps):
        r["step"] = s
    molar = [{"step": r["step"], "time_s": r["time_s"], f"n_{rp.name}_mol": r["n_reactant_mol"],
              f"n_{pp.name}_mol": r["n_product_mol"], "x": r["x"], "y": r["y"], "deviation_pct": r["deviation_pct"],
              "inside_band": r["inside_band"]} for r in rows]
    x = np.array([r["x"] for r in rows])
    y = np.array([r["y"] for r in rows])
    fit = stoichiometry.fit_line(x, y) if len(rows) >= 3 and np.ptp(x) > 0 else None
    if fit:
        fit = {**fit, **_fit_band(x, y, fit)}
    extent = stoichiometry.extent_two_ways(rows)
    times_ok = all(t is not None for t in data.times_s)
    tkw = {"times_s": data.times_s} if times_ok else {}
    pore_rows = stoichiometry.pore_check(data.counts, phases=phases, reaction=reaction, voxel_size_um=vs, band=config.band,
                                         **tkw)
    for r, s in zip(pore_rows, data.steps):
        r["step"] = s
    inert_rows = stoichiometry.inert_constancy(data.counts, phases=phases, reaction=reaction, voxel_size_um=vs,
                                               band=config.band, **tkw)
    for r in inert_rows:  # the step numbers of the segmentation, as in the other tables (rows are phase-major)
        r["step"] = data.steps[r["step"]]
    # one verdict over every check (the internal standard alone stays in verdict["internal_standard"])
    verdict = stoichiometry.overall_verdict(rows, pore_rows, inert_rows, band=config.band)
    # growth: product volume fraction of the labelled voxels
    total = np.array([sum(c.get(code, 0) for code in phases.codes) for c in data.counts], float)
    frac = np.array([c.get(reaction.product, 0) for c in data.counts], float) / np.maximum(total, 1)

    jmak = rate = None
    if times_ok and len(rows) >= 4:
        t = np.asarray(data.times_s, float)
        # the kinetic law describes the reaction extent: fit the extent from the product gain (x), which runs from 0
        # to the extent reached; a reaction that levels off below 1 gets a fitted plateau alpha_max (F-test, "auto")
        alpha = np.clip(x, 0, 1)
        try:
            onset = float(np.min(t)) if config.onset == "first-step" else None
            jmak = kinetics.fit_jmak(t, alpha, t0=onset, level=0.95, alpha_max="auto")
        except ReactomoError as exc:
            jmak = {"error": str(exc)}
        try:
            rate = kinetics.growth_rate(t, frac, n_boot=config.n_boot, seed=config.seed)
        except ReactomoError as exc:
            rate = {"error": str(exc)}
    growth_rows = []
    for i, s in enumerate(data.steps):
        row = {"step": s, "time_s": data.times_s[i], f"{pp.name}_fraction": float(frac[i]), "extent_x": float(x[i])}
        if rate and "error" not in rate:
            row.update(smoothed_fraction=float(rate["smoothed"][i]), rate_per_h=float(rate["rate"][i]),
                       rate_low_per_h=float(rate["rate_low"][i]), rate_high_per_h=float(rate["rate_high"][i]))
        growth_rows.append(row)
    say(0.3, "pore sizes")
    pore_code = reaction.pore

    porosity_ci: dict[int, tuple[float, float]] = {}

    cropped: dict[int, bool] = {}

    def labelled():
        # bounded memory on any volume size: the porosity blocks are counted slab by slab, and only the central
        # sub-volume of the pore sizes is held in memory
        for i, (s, p) in enumerate(zip(data.steps, data.paths)):
            say(0.3 + 0.6 * i / len(data.paths), f"pore sizes, step {s}")
            with open_volume(p) as vol:
                if vol.dtype != np.uint8:
                    raise ReactomoError(f"{Path(p).name} holds {vol.dtype} values, not uint8 label codes; give label files.")
                porosity_ci[s] = _block_bootstrap_porosity(vol, pore_code, phases.codes, n_boot=config.n_boot, seed=config.seed)
                lab, cropped[s] = _central_region(vol, config.pore_max_voxels)
            yield s, data.times_s[i], lab

    pore_sizes = pore_size_table(labelled(), voxel_size_um=vs, pore_code=pore_code, max_voxels=None,
                                 n_boot=config.n_boot, seed=config.seed)
    for r, counts in zip(pore_sizes, data.counts):
        r["porosity_ci_low"], r["porosity_ci_high"] = porosity_ci.get(r["step"], (float("nan"), float("nan")))
        r["subvolume"] = cropped.get(r["step"], False)
        labelled_n = sum(counts.get(c, 0) for c in phases.codes)
        if labelled_n:  # the porosity of every voxel of the step (pore sizes and connected porosity: the sub-volume)
            r["porosity"] = counts.get(pore_code, 0) / labelled_n
    summary = {
        "format": "reactomo.analysis", "format_version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "segmentation": str(data.folder), "config": asdict(config), "voxel_size_um": vs, "phases": phases.to_dict(),
        "reaction": asdict(reaction) if hasattr(reaction, "__dataclass_fields__") else str(reaction),
        "model": data.model, "model_card": _card_summary(data.model), "segmentation_settings": _segmentation_settings(data.record),
        "verdict": verdict, "fit": {k: v for k, v in (fit or {}).items() if not k.startswith("band_")},
        "jmak": {k: v for k, v in (jmak or {}).items() if not k.startswith("curve")},
        "rate_method": (rate or {}).get("method"), "molar_evolution": molar, "extent": extent, "pore_check": pore_rows,
        "inert": inert_rows, "pore_sizes": pore_sizes, "growth": growth_rows, **({"extra": extra} if extra else {}),
    }
    from core.segmentation.series import versions

    import importlib.metadata

    import numba

    try:
        edt_version = importlib.metadata.version("edt")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - edt is pinned; scipy's EDT stands in
        edt_version = "not installed (scipy EDT)"
    summary["versions"] = {**versions(), "numba": numba.__version__, "edt": edt_version}
    summary["seconds"] = time.perf_counter() - t0
    summary["rate"] = {k: v for k, v in (rate or {}).items() if k in ("method", "error")}
    result = result_from_summary(_jsonable(summary))
    if out_dir is not None:
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReactomoError(f"The output folder {out} cannot be created ({exc.strerror or exc}).") from None
        say(0.92, "writing the files and the report")
        atomic_write_text(out / "molar_evolution.csv", csv_text(molar))
        atomic_write_text(out / "pore_check.csv", csv_text(pore_rows))
        atomic_write_text(out / "inert.csv", csv_text(inert_rows))
        atomic_write_text(out / "pore_sizes.csv", csv_text([{k: v for k, v in r.items() if k not in DISTRIBUTIONS}
                                                             for r in pore_sizes]))
        atomic_write_text(out / "pore_size_distribution.csv", csv_text(distribution_rows(pore_sizes)))
        atomic_write_text(out / "growth.csv", csv_text(growth_rows))
        atomic_write_json(out / "summary.json", result["summary"])
        atomic_write_text(out / "report.html", report_html(result))
    say(1.0, "done")
    return result


#: The distributions of ``pore_size_distribution.csv``: summary key -> (measure, what the fraction counts).
DISTRIBUTIONS = {"lt_distribution": ("local thickness", "pore volume"),
                 "eqd_distribution": ("equivalent diameter of connected pores", "pores")}


def distribution_rows(pore_sizes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long table of the pore size distributions: one row per measure, step and diameter, with the cumulative share
    (of the pore volume for local thickness, of the pores for equivalent diameters) and its bootstrap interval."""
    out = []
    for key, (measure, weight) in DISTRIBUTIONS.items():
        for r in pore_sizes:
            d = r.get(key) or {}
            for dia, c, lo, hi in zip(d.get("diameter_um", []), d.get("cdf", []), d.get("cdf_low", []), d.get("cdf_high", [])):
                out.append({"measure": measure, "weighted_by": weight, "step": r["step"], "time_s": r.get("time_s"),
                            "diameter_um": dia, "cumulative_fraction": c, "ci_low": lo, "ci_high": hi})
    return out


def _card_summary(model: dict[str, Any]) -> dict[str, Any]:
    """What the report shows of the model bundle's card (training, validation scores), or {} when unreadable."""
    if not model or not model.get("path"):
        return {}
    from core.network.bundle import read_card

    try:
        card = read_card(model["path"])
    except (ReactomoError, OSError, ValueError):
        return {}
    tr = card.get("training") or {}
    cfg = tr.get("config") or {}
    met = card.get("metrics") or {}
    unet = card.get("unet") or {}
    return {"name": card.get("name"), "created": card.get("created"), "seed": card.get("seed"),
            "architecture": f"2D U-Net, width {unet.get('width')}, depth {unet.get('depth')}, {unet.get('norm')} norm, "
                            + ("one slice in" if int(unet.get("in_channels") or 1) == 1 else
                               f"{unet.get('in_channels')} neighbouring slices in (2.5D)"),
            "training": {k: cfg.get(k) for k in ("patch_size", "max_epochs", "loss", "class_weights", "optimizer", "lr",
                                                  "augment", "transforms") if k in cfg},
            "device": tr.get("device"), "epochs": met.get("epochs"), "best_epoch": met.get("best_epoch"),
            "val_dice": met.get("val_dice") or {}, "seconds": met.get("seconds"),
            "provenance": card.get("provenance") or {}}


def _steps_text(together: dict[str, Any]) -> str:
    """How the steps were labelled (core.segmentation.temporal), in words, for the report."""
    from core.segmentation.temporal import describe

    return describe(together)


def _segmentation_settings(record: dict[str, Any] | None) -> dict[str, Any]:
    """Inference and cleaning settings of the segmentation record (what shaped the labels), or {}."""
    if not record:
        return {}
    st = record.get("settings") or {}
    return {"inference": st.get("inference") or {}, "postprocess": st.get("postprocess") or {},
            "device": record.get("device"), "cleaning_source": record.get("cleaning_source"),
            "temporal": record.get("temporal") or {}, "partial_volume": st.get("partial_volume")}


def result_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Everything the figures and the report need, rebuilt from a ``summary.json`` (no label file is read).

    The page shows a saved analysis through this, and :func:`analyze` returns it, so both draw the same charts. A
    summary written before the verdict over every check (``summary["verdict"]`` without ``checks``) gets it here,
    judged from its stored rows with its band; the file is not changed.
    """
    from core.analysis import kinetics

    phases = PhaseTable.from_dict(summary["phases"])
    stored = summary.get("reaction")
    # the reaction the summary was written for (a summary of another reaction must not read back as gypsum ->
    # bassanite); summaries without one were written for the default reaction
    reaction = Reaction.from_dict(stored) if isinstance(stored, dict) else Reaction()
    rp, pp = phases.by_code(reaction.reactant), phases.by_code(reaction.product)
    molar = summary["molar_evolution"]
    rows = [{"step": r["step"], "time_s": r["time_s"], "n_reactant_mol": r.get(f"n_{rp.name}_mol"),
             "n_product_mol": r.get(f"n_{pp.name}_mol"), "x": r["x"], "y": r["y"], "deviation_pct": r["deviation_pct"],
             "inside_band": r["inside_band"]} for r in molar]
    old = summary.get("verdict") or {}
    upgraded = bool(rows and "checks" not in old)
    if upgraded:  # written before the verdict over every check: judge it from the stored numbers
        from core.analysis import stoichiometry

        band = float(old.get("band") or (summary.get("config") or {}).get("band") or 0.02)
        summary = {**summary, "verdict": _jsonable(stoichiometry.overall_verdict(
            rows, summary.get("pore_check") or [], summary.get("inert") or [], band=band))}
    fit = dict(summary.get("fit") or {}) or None
    if fit and len(rows) >= 3:
        fit.update(_fit_band(np.array([r["x"] for r in rows], float), np.array([r["y"] for r in rows], float), fit))
    jmak = dict(summary.get("jmak") or {}) or None
    times = [r["time_s"] for r in molar]
    if jmak and jmak.get("k") is not None and all(t is not None for t in times):
        ct = np.linspace(0, max(times), 200)
        if jmak.get("alpha_max") is None:  # summaries written before the plateau was fitted: classical JMAK
            jmak["alpha_max"] = 1.0
        # pointwise band by the delta method on the fit's covariance (NaN bounds when it is missing)
        curve, low, high = kinetics.jmak_band(ct, jmak)
        jmak["curve_t_s"], jmak["curve"] = ct, curve
        if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
            jmak["curve_low"], jmak["curve_high"] = low, high
    growth = summary.get("growth") or []
    rate = None
    if growth and all(g.get("rate_per_h") is not None for g in growth):
        rate = {"t_s": [g["time_s"] for g in growth], "rate": [g["rate_per_h"] for g in growth],
                "rate_low": [g["rate_low_per_h"] for g in growth], "rate_high": [g["rate_high_per_h"] for g in growth],
                "method": (summary.get("rate") or {}).get("method", "")}
    fraction = [g.get(f"{pp.name}_fraction") for g in growth]
    return {"summary": summary, "rows": rows, "fit": fit, "jmak": jmak, "rate": rate, "phases": phases, "times_s": times,
            "extent": summary.get("extent") or [], "pore_check": summary.get("pore_check") or [],
            "inert": summary.get("inert") or [], "pore_sizes": summary.get("pore_sizes") or [], "fraction": fraction,
            "verdict_upgraded": upgraded}


def report_bytes(folder: str | os.PathLike, result: dict[str, Any]) -> bytes | None:
    """The HTML report of a saved analysis to hand to a user, or None when there is none.

    The file on disk when it carries the verdict over every check; for an analysis written before that verdict (its
    report could be green while a check fails) the report is rendered again from ``result``, whose verdict
    :func:`result_from_summary` judged over every check. The file is not changed.
    """
    if result.get("verdict_upgraded"):
        return report_html(result).encode("utf-8")
    try:
        return (Path(folder) / "report.html").read_bytes()
    except OSError:
        return None


def load_result(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The result of a saved analysis folder (its ``summary.json``), or None when there is none."""
    p = Path(folder) / "summary.json"
    try:
        summary = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("format") != "reactomo.analysis":
        return None
    return result_from_summary(summary)


def figures(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(title, figure)`` of every chart of an :func:`analyze` result, in report order."""
    from core.analysis import analysis_charts as ac

    phases = result["phases"]
    times = result["times_s"]
    reaction = Reaction()
    rp, pp = phases.by_code(reaction.reactant), phases.by_code(reaction.product)
    band = band_of(result)
    out = [("Molar evolution (internal standard)", ac.molar_evolution_figure(result["rows"], fit=result["fit"], band=band,
                                                                              reactant=rp.name, product=pp.name)),
           ("Reaction extent, two estimates", ac.extent_figure(result["rows"], reactant=rp.name, product=pp.name))]
    ratio = 1 - pp.molar_volume_cm3_mol / rp.molar_volume_cm3_mol if pp.molar_volume_cm3_mol and rp.molar_volume_cm3_mol else 0.287
    n0 = result["rows"][0].get("n_reactant_mol") if result["rows"] else None
    v0 = float(n0) * rp.molar_volume_cm3_mol * 1000.0 if n0 and rp.molar_volume_cm3_mol else 0.0  # cm³ -> mm³
    out.append(("Pore-volume check", ac.pore_check_figure(result["pore_check"], band=band, ratio=ratio, initial_reactant_mm3=v0)))
    if result["inert"]:
        out.append(("Inert phase constancy", ac.inert_figure(result["inert"], band=band, phases=phases)))
    if result["pore_sizes"]:
        out.append(("Pore sizes", ac.pore_size_figure(result["pore_sizes"],
                                                      voxel_size_um=(result.get("summary") or {}).get("voxel_size_um"))))
        if any(r.get("lt_distribution") for r in result["pore_sizes"]):
            out.append(("Pore size distribution", ac.pore_distribution_figure(result["pore_sizes"])))
        if any(r.get("eqd_distribution") for r in result["pore_sizes"]):
            out.append(("Connected pore diameters", ac.pore_distribution_figure(result["pore_sizes"], key="eqd_distribution")))
        out.append(("Porosity", ac.porosity_figure(result["pore_sizes"])))
    if times and all(t is not None for t in times):
        jm = result["jmak"] if result["jmak"] and "error" not in result["jmak"] and result["jmak"].get("k") is not None else None
        rt = result["rate"] if result["rate"] and "error" not in result["rate"] else None
        out.append((f"{pp.name} growth", ac.growth_figure(times, result["fraction"], fit=jm, rate=rt, product=pp.name,
                                                          extent=[r["x"] for r in result["rows"]],
                                                          colour=pp.colour)))
    return out


def _kv_table(rows) -> str:
    return "<table>" + "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td style='text-align:left'>"
                               f"{html.escape(str(v))}</td></tr>" for k, v in rows) + "</table>"


def verdict_rows(verdict: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per check of a verdict (:func:`core.analysis.stoichiometry.overall_verdict`), for the page's and the report's
    table: ``check`` (label), ``name``, ``result`` ("pass", "FAIL" or "not evaluated"), ``value_pct``, ``limit_pct``,
    ``rule`` (the limit in words: the fit and the trend also pass on their intervals, so a value above the limit can
    pass), ``sentence``."""
    def rule(c: dict[str, Any]) -> str:
        lim = c.get("limit")
        if lim is None:
            return ""
        if c.get("name") == "fit_vs_theory":
            return f"≤ {lim:.2f} %, or the intervals contain −1 and 1"
        if c.get("name") == "trend":
            return f"≤ {lim:.2f} % over the run, or the slope's interval contains 0"
        return f"≤ {lim:.2f} %"

    out = []
    for c in verdict.get("checks") or []:
        ok = c.get("passed")
        out.append({"check": c.get("label") or c.get("name"), "name": c.get("name"),
                    "result": "pass" if ok is True else ("FAIL" if ok is False else "not evaluated"),
                    "value_pct": c.get("value"), "limit_pct": c.get("limit"), "rule": rule(c),
                    "sentence": c.get("sentence", "")})
    return out


def _checks_table(verdict: dict[str, Any]) -> str:
    """The checks of a verdict as an HTML table (check, value, limit, result, sentence)."""
    def num(x: Any, prefix: str = "") -> str:
        return "–" if x is None else f"{prefix}{float(x):.2f}"

    css = {"pass": "ok", "FAIL": "bad"}
    body = "".join(f"<tr><td style='text-align:left'>{html.escape(r['check'])} <code>{html.escape(str(r['name']))}</code></td>"
                   f"<td>{num(r['value_pct'])}</td><td>{html.escape(r['rule']) or '–'}</td>"
                   f"<td class='{css.get(r['result'], '')}'>{html.escape(r['result'])}</td>"
                   f"<td style='text-align:left'>{html.escape(r['sentence'])}</td></tr>" for r in verdict_rows(verdict))
    return ("<table class='checks'><tr><th style='text-align:left'>check</th><th>value (%)</th><th>passes when</th>"
            "<th>result</th><th style='text-align:left'>why</th></tr>"
            f"{body}</table><p class='method'>{html.escape(verdict.get('method', ''))}</p>") if body else ""


def report_html(result: dict[str, Any]) -> str:
    """One self-contained HTML page: every chart (plotly.js inlined once), its method, settings, model, verdicts."""
    import plotly.offline

    from core.analysis import analysis_charts as ac

    s = result["summary"]
    v = s["verdict"]
    # judged with a band chosen after the run: the run's own verdict stays on top, and a failed run is never green
    rv = s.get("run_verdict") or {}
    run_failed = [c for c in rv.get("checks") or [] if c.get("passed") is False]
    run_note = ""
    if run_failed:
        run_note = (f"<p class='verdict fail'>At the band of the run (±{100 * float(rv.get('band', s['config']['band'])):g} %), "
                    f"{len(run_failed)} of {len(rv.get('checks') or [])} checks fail: "
                    f"{html.escape(', '.join(c.get('label', c['name']) for c in run_failed))}. The verdict below uses a band "
                    f"chosen after the run.</p>")
    parts = []
    for i, (title, fig) in enumerate(figures(result)):
        body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{i}",
                           config={"displaylogo": False, "toImageButtonOptions": {"format": "svg"}})
        parts.append(f"<section><h2>{html.escape(title)}</h2>{body}<p class='method'>{html.escape(ac.method_of(fig))}</p></section>")
    def minutes(t):
        return "" if t is None else f"{t / 60:.1f}"

    rows = "".join(f"<tr><td>{r['step']}</td><td>{minutes(r['time_s'])}</td>"
                   f"<td>{r['x']:.4f}</td><td>{r['y']:.4f}</td><td>{r['deviation_pct']:+.2f}</td>"
                   f"<td class='{'ok' if r['inside_band'] else 'bad'}'>{'inside' if r['inside_band'] else 'OUTSIDE'}</td></tr>"
                   for r in result["rows"])
    model = s.get("model") or {}
    jm = s.get("jmak") or {}
    fit = s.get("fit") or {}

    def fmt_ci(ci, fmt=".4g"):  # an interval written with the precision of its estimate
        return f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci and None not in ci else "(n/a)"
    norm = model.get("normalisation") or {}
    model_rows = [("name", model.get("name", "(unknown)")),
                  ("weights SHA-256", str(model.get("weights_sha256", ""))[:16] + "…"),
                  ("class codes", ", ".join(str(c) for c in model.get("class_codes", []))),
                  ("normalisation", f"{norm.get('method', '?')} (upper percentile {norm.get('upper', '?')})")] if model else \
        [("model", "not recorded (label files without a Reactomo segmentation record)")]
    card = s.get("model_card") or {}
    card_html = ""
    if card:
        val = card.get("val_dice") or {}
        card_rows = [("created", card.get("created")), ("architecture", card.get("architecture")),
                     ("training", ", ".join(f"{k} {'/'.join(map(str, v)) if isinstance(v, list) else v}"
                                            for k, v in (card.get("training") or {}).items())),
                     ("epochs", f"{card.get('epochs')} (best {card.get('best_epoch')}), {card.get('device')}, "
                                f"{(card.get('seconds') or 0):.0f} s"),
                     ("seed", card.get("seed")),
                     ("validation Dice", ", ".join(f"{k} {v:.3f}" for k, v in val.items() if isinstance(v, (int, float)))
                      or "(not recorded)")]
        card_html = f"<h3>Model card</h3>{_kv_table(card_rows)}"
    seg = s.get("segmentation_settings") or {}
    if seg:
        inf, post = seg.get("inference") or {}, seg.get("postprocess") or {}
        ph = {str(p.code): p.name for p in result["phases"]}
        sizes = ", ".join(f"{ph.get(str(c), c)} < {v} px" for c, v in (post.get("min_sizes") or {}).items())
        rim = (f"{ph.get(str(post.get('rim_phase')), '?')} within {post.get('rim_px')} px of "
               f"{ph.get(str(post.get('rim_around')), '?')} relabelled"
               if post.get("rim_phase") is not None and post.get("rim_px") else "no rim relabelling")
        seg_rows = [("inference", f"tile {inf.get('tile')}, overlap {inf.get('overlap')}, {inf.get('blend')} blending, "
                                  f"batch {inf.get('batch_size')}, device {seg.get('device')}; probabilities averaged "
                                  f"over slices with σ {inf.get('z_sigma', 0)}"),
                    ("cleaning", ("off" if not post.get("enabled", bool(post)) else
                                  (f"islands removed ({post.get('connectivity')}): {sizes}" if sizes else "no island removal")
                                  + f"; {rim}")),
                    ("edges redrawn from the scan",
                     "(not recorded)" if seg.get("partial_volume") is None else
                     (", ".join(ph.get(str(c), str(c)) for c in seg["partial_volume"])
                      + " (linear unmixing, in this order, before the cleaning)" if seg["partial_volume"] else "none")),
                    ("cleaning chosen by", seg.get("cleaning_source") or "(not recorded)"),
                    ("steps", _steps_text(seg.get("temporal") or {}))]
        card_html += f"<h3>Segmentation</h3>{_kv_table(seg_rows)}"
    cfg = s["config"]
    band = band_of(result)
    band_text = f"±{100 * band:g} %" + ("" if abs(band - cfg["band"]) < 1e-12 else
                                        f" (chosen after the run; the run and its CSV files used ±{100 * cfg['band']:g} %)")
    settings_rows = [("voxel size", f"{s['voxel_size_um']:g} µm"), ("band", band_text),
                     ("pore sub-volume", f"at most {cfg['pore_max_voxels']:,} voxels per step"),
                     ("bootstrap resamples", str(cfg["n_boot"])), ("seed", str(cfg["seed"])),
                     ("interval", "from the segmentation" if cfg.get("interval_s") is None else f"{cfg['interval_s']:g} s"),
                     ("JMAK onset t0", "fitted" if cfg.get("onset") == "fitted" else "the first step's time")]
    kin = ""
    if jm and "error" not in jm and jm.get("k") is not None:
        kin = (f"<p>JMAK (Avrami) fit of the reaction extent: k = {jm['k'] * 3600:.4g} per hour "
               f"{fmt_ci([c * 3600 if c is not None else None for c in jm['k_ci']])}, n = {jm['n']:.3f} {fmt_ci(jm['n_ci'], '.3f')}"
               + (f", α_max = {jm['alpha_max']:.3f} {fmt_ci(jm.get('alpha_max_ci'), '.3f')}" if jm.get("alpha_max_fitted")
                  else f", α_max fixed at {jm.get('alpha_max') or 1.0:g}")
               + (f", half time (half of the plateau) {jm['half_time_s'] / 60:.1f} min" if jm.get("half_time_s") else "")
               + ". " + html.escape((jm.get("model_choice") or {}).get("reason") or "") + "</p>")
    elif jm.get("error"):
        kin = f"<p>Kinetic fit not possible: {html.escape(jm['error'])}</p>"
    fit_text = (f"<p>Fit of the measured points: slope {fit['slope']:.4f} {fmt_ci(fit.get('slope_ci'))}, intercept "
                f"{fit['intercept']:.4f} {fmt_ci(fit.get('intercept_ci'))} (theory: −1 and 1).</p>") if fit.get("slope") is not None else ""
    extra = s.get("extra") or {}
    seg_name = extra.get("segmentation_name") or Path(str(s.get("segmentation", ""))).name  # a name, never a path
    title = f"{extra['project']}: analysis report" if extra.get("project") else "Reactomo analysis report"
    cond = {k: v for k, v in (extra.get("conditions") or {}).items() if isinstance(v, str) and v}
    subtitle = " · ".join(x for x in (
        f"sample {cond['sample']}" if cond.get("sample") else "", f"segmentation {seg_name}",
        f"{len(result['rows'])} steps", f"voxel {s['voxel_size_um']:g} µm",
        f"analysed {str(s['created']).replace('T', ' ').rstrip('Z')} UTC", "made with Reactomo") if x)
    conditions = _kv_table([(k, cond[k]) for k in ("temperature", "pressure", "stress", "beamline", "notes")
                            if cond.get(k)]) if any(cond.get(k) for k in ("temperature", "pressure", "stress", "beamline",
                                                                           "notes")) else ""
    failed = [c for c in v.get("checks") or [] if c.get("passed") is False]
    lead = f"<strong>{len(failed)} of {len(v['checks'])} checks fail.</strong> " if failed else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
h1{{margin-bottom:0}} .sub{{color:#666;margin-top:.2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ddd;padding:4px 10px;text-align:right}} th{{background:#f4f4f4}} .ok{{color:#2a7a2a}}
.bad{{color:#c62828;font-weight:bold}} .verdict{{font-size:1.15em;padding:.6em 1em;border-radius:6px}}
.verdict.pass{{background:#e8f5e9;border-left:6px solid #2a7a2a}} .verdict.fail{{background:#ffebee;border-left:6px solid #c62828}}
.method{{color:#555;font-size:.9em}} pre{{background:#f7f7f7;padding:1em}}
section{{margin:2em 0}}</style>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head><body>
<h1>{html.escape(title)}</h1>
<p class="sub">{html.escape(subtitle)}</p>{conditions}
{run_note}<p class="verdict {'pass' if v.get('passed') is True and not run_failed else 'fail'}">{lead}{html.escape(v.get('sentence', ''))}</p>
{_checks_table(v)}{fit_text}{kin}
<table><tr><th>step</th><th>time (min)</th><th>x</th><th>y</th><th>deviation (%)</th><th>±{100 * band:g} % band</th></tr>{rows}</table>
{''.join(parts)}
<section><h2>Model</h2>{_kv_table(model_rows)}{card_html}</section>
<section><h2>Settings</h2>{_kv_table(settings_rows)}<h3>Library versions and processor</h3>{_kv_table(list((s.get('versions') or {}).items()))}</section>
</body></html>"""


MAX_BAND = 0.20
"""The widest band anything is judged with (±20 %, ten times the study's): the CLI, the API and the page alike."""


def check_band(band: Any) -> float:
    """``band`` as a float fraction in (0, :data:`MAX_BAND`], else a :class:`ReactomoError` in one sentence."""
    try:
        ok = not isinstance(band, (bool, str, bytes)) and 0.0 < float(band) <= MAX_BAND + 1e-12
    except (TypeError, ValueError):
        ok = False
    if not ok:  # NaN fails the comparison too
        raise ReactomoError(f"The band must be a fraction above 0 and at most {MAX_BAND:g} (0.02 = ±2 %, the study's); "
                            f"got {band!r}.")
    return float(band)


def band_of(result: dict[str, Any]) -> float:
    """The band a result is judged with: the one :func:`with_band` chose, else the analysis run's."""
    s = result["summary"]
    b = result.get("band") or (s.get("verdict") or {}).get("band") or s["config"]["band"]
    return float(b)


def with_band(result: dict[str, Any], band: float) -> dict[str, Any]:
    """The same analysis judged with another band, from the stored numbers only (no label file is read).

    Every band-dependent value is recomputed: each molar-evolution step's ``inside_band``
    (``|deviation_pct| <= 100·band``), the pore-check and inert-phase flags and the band named in their method
    sentences, and the verdict over every check (:func:`core.analysis.stoichiometry.overall_verdict`, with the internal
    standard alone in ``verdict["internal_standard"]``). ``result["band"]`` (and ``summary["verdict"]["band"]``)
    record the band used, which :func:`figures` and :func:`report_html` draw; ``summary["config"]["band"]`` stays
    the band of the run, i.e. of the files written to disk. The input is not modified.

    Raises
    ------
    ReactomoError
        ``band`` is not a number above 0 and at most :data:`MAX_BAND`.
    """
    import copy
    import re

    from core.analysis import stoichiometry

    band = check_band(band)
    tol = 1e-9  # percent; the verdict's own tolerance, so the flags and the count agree
    s = copy.deepcopy(result["summary"])

    def inside_pct(dev_pct: Any) -> bool:
        return dev_pct is not None and bool(np.isfinite(float(dev_pct))) and abs(float(dev_pct)) <= 100.0 * band + tol

    def retext(row: dict) -> None:
        if isinstance(row.get("method"), str):
            row["method"] = re.sub(r"band ±[0-9.eE+\-]+ %", f"band ±{100 * band:g} %", row["method"])

    for r in s.get("molar_evolution") or []:
        r["inside_band"] = inside_pct(r.get("deviation_pct"))
    rows = [{**r, "inside_band": inside_pct(r.get("deviation_pct"))} for r in result["rows"]]
    for r in s.get("pore_check") or []:
        dev = r.get("deviation")
        r["inside_band"] = dev is not None and bool(np.isfinite(float(dev))) and abs(float(dev)) <= band + 1e-12
        retext(r)
    first: dict[Any, float] = {}
    for r in s.get("inert") or []:
        key = r.get("code", r.get("phase"))
        vol = float(r["volume_mm3"]) if r.get("volume_mm3") is not None else float("nan")
        v0 = first.setdefault(key, vol)
        r["inside_band"] = (bool(abs(vol - v0) <= (band + 1e-12) * v0) if v0 > 0 else bool(vol == 0))
        retext(r)
    if rows:  # every check judged again (a deviation saved as null, i.e. NaN, counts as outside)
        if abs(band - float(s["config"]["band"])) > 1e-12:  # keep the verdict of record, at the run's band
            s.setdefault("run_verdict", copy.deepcopy(result["summary"].get("verdict")))
        else:
            s.pop("run_verdict", None)
        s["verdict"] = _jsonable(stoichiometry.overall_verdict(rows, s.get("pore_check") or [], s.get("inert") or [],
                                                               band=band))
    out = dict(result)
    out.update(summary=s, rows=rows, pore_check=s.get("pore_check") or [], inert=s.get("inert") or [], band=band)
    return out
