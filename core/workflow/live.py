"""The live step (beamtime mode): segment each scan as it lands, update the checks, and raise alerts.

One step, one name: ``pages/9_Live.py`` (a job in the worker), ``python -m core watch`` and this module.

Each look at the scan folder (:class:`core.imaging.arrivals.Arrivals`) gives the complete scans in time order
(natural order of their names). A scan not segmented yet, or whose checksum changed since it was segmented (the
reconstruction wrote it again), is segmented with the model and its automatic cleaning by the same
:func:`core.segmentation.series.segment_series` a batch ``segment`` uses, into the same folder, once; then the
analysis of every finished step is made again by the same :func:`core.analysis.results.analyze` as a batch
``analyze``. So the live results *are* the batch results of the scans seen so far (tested), each scan labelled on its
own as it arrives, as ``segment --no-temporal`` does; a batch ``segment`` of the finished series labels the steps
together (:mod:`core.segmentation.temporal`).

Files, in the output folder (a segmentation folder like any other):

==========================  ====================================================================================
``<scan>.tif``, record      the labels and ``segmentation.json`` (:mod:`core.segmentation.series`)
``live/state.json``         settings, every scan's checksum and status, the status strip, the alerts
``live/alerts.log``         one line per alert: UTC time, kind, the sentence
``live/analysis/``          the analysis of the steps so far (``molar_evolution.csv``, ``summary.json``, ...)
``live/quick/``             quick mode only: the central slab of each scan, segmented first (labelled "quick")
==========================  ====================================================================================

Alerts (each one sentence with its number, raised once per step and kind): a step outside the internal standard's
band; an inert phase (celestite) whose volume drifts beyond the band; the model's confidence dropping (mean
max-probability below the reference scan's by more than :data:`CONFIDENCE_DROP`); grey values unlike those the
model was trained on (after the normalisation, the histogram's main peak moved by more than :data:`MEDIAN_SHIFT` of
the reference's peak-to-brightest gap, or more than :data:`OUTSIDE_SHARE` of the voxels brighter than any of the
reference's); scans no longer arriving (nothing new for :data:`STALL_FACTOR` × the interval).
The reference scan is the one the model was trained on when it is still there, else the first scan of the run.

Quick mode keeps pace when a whole scan takes longer than the interval: each scan's central slab of z slices,
sized from the measured speed to fit 80 % of the interval, is segmented first into ``live/quick/``; whole scans
follow, one per look, so the next arrivals' slabs never wait behind a whole scan for long. Quick and whole results are never mixed: each has its own folder, analysis and
label.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json, writer_lock
from core.errors import JobCancelled, ReactomoError

__all__ = ["LiveConfig", "Watcher", "run_live", "read_live_state", "live_project", "live_view", "LiveView",
           "CONFIDENCE_DROP", "OUTSIDE_SHARE", "STALL_FACTOR",
           "ALERT_KINDS", "MEDIAN_SHIFT"]

log = logging.getLogger(__name__)

#: Alert when a scan's mean max-probability is this much below the reference scan's.
CONFIDENCE_DROP = 0.05
#: Alert when more than this share of a scan's normalised grey values is brighter than the reference's brightest
#: (its 99.9 % quantile plus 10 % of the peak-to-there gap). Only the bright side: the reaction makes larger,
#: darker pores than the old ones (measured on the demo: up to 8 % of a late scan below the first scan's 0.1 %).
OUTSIDE_SHARE = 0.02
#: ... or when the histogram's main peak (the matrix) moves by more than this share of the reference's
#: peak-to-bright-tail (99.5 %) gap: the reaction itself moves it by the gypsum-bassanite contrast, 0.08-0.12 of the
#: gypsum-celestite gap; a changed contrast or offset that the normalisation does not undo moves it further.
MEDIAN_SHIFT = 0.25
#: Alert when no new scan has arrived for this many intervals.
STALL_FACTOR = 3.0
#: Slices sampled per scan for the confidence and the grey-value range.
QC_SLICES = 3
ALERT_KINDS = ("internal_standard", "inert_drift", "confidence", "histogram", "stalled", "failed", "disk")
STATE = "state.json"
ALERTS_LOG = "alerts.log"


@dataclass(frozen=True)
class LiveConfig:
    """Settings of a live run (the ``watch`` command's options; the Live page's form).

    Attributes
    ----------
    scans : str
        The folder the reconstruction writes into.
    model : str
        A model bundle folder.
    out : str
        The segmentation folder (labels, record, ``live/``).
    interval_s : float
        Expected seconds between scans (a step's time is its position × interval).
    complete, quiet_s, slices
        When a scan counts as complete (:mod:`core.imaging.arrivals`).
    quick : bool
        Segment each scan's central slab first (see the module).
    quick_slices : int or None
        The slab's thickness in slices; None sizes it from the measured speed (1 Mvoxel/s until measured).
    alert_command : str or None
        A command run with each alert's sentence as its last argument (no shell), e.g. a script posting to a chat.
    voxel_size_um : float or None
    band : float
        The internal standard's band (0.02 = ±2 %).
    poll_s : float
        Seconds between looks at the folder.
    inference : dict
        :class:`core.network.inference.InferenceConfig` fields.
    cleaning : {"auto", "study", "off"}
        The model's own cleaning (default), the study's, or none; ``min_sizes`` and ``rim_px`` set parts of it by
        hand (as for ``segment``).
    """

    scans: str
    model: str
    out: str
    interval_s: float = 60.0
    complete: str = "quiet"
    quiet_s: float = 2.0
    slices: int | None = None
    quick: bool = False
    alert_command: str | None = None
    voxel_size_um: float | None = None
    band: float = 0.02
    poll_s: float = 1.0
    inference: dict[str, Any] = field(default_factory=dict)
    cleaning: str = "auto"
    min_sizes: tuple[tuple[str, int], ...] = ()
    rim_px: int | None = None
    quick_slices: int | None = None

    def validate(self) -> None:
        for name, low, high in (("interval_s", 1.0, 86_400.0), ("poll_s", 0.05, 600.0), ("band", 0.001, 0.2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or not low <= v <= high:
                words = {"interval_s": "The arrival interval", "poll_s": "The polling interval", "band": "The band"}
                raise ReactomoError(f"{words[name]} is {v!r}; give a number from {low:g} to {high:g}.")
        if self.cleaning not in ("auto", "study", "off"):
            raise ReactomoError(f"The cleaning is {self.cleaning!r}; use auto, study or off.")
        if self.quick_slices is not None and (isinstance(self.quick_slices, bool) or not isinstance(self.quick_slices, int)
                                              or self.quick_slices < 1):
            raise ReactomoError(f"The quick slab is {self.quick_slices!r} slices; give a whole number of 1 or more.")
        if self.alert_command is not None and not shlex.split(self.alert_command):
            raise ReactomoError("The alert command is empty; give a program, e.g. 'scripts/post-to-chat.sh'.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_live_state(out: str | os.PathLike) -> dict[str, Any] | None:
    """The live state of a segmentation folder (``live/state.json``), or None when it has none."""
    try:
        return json.loads((Path(out) / "live" / STATE).read_text())
    except (OSError, ValueError):
        return None


def _utc(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Watcher:
    """One live run: call :meth:`look` repeatedly (or :func:`run_live`). Resumes from ``live/state.json``."""

    def __init__(self, config: LiveConfig, *, on_message: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        from core.imaging.arrivals import Arrivals
        from core.network.bundle import read_card
        from core.network.inference import InferenceConfig
        from core.phases import PhaseTable
        from core.segmentation.postprocess import cleaning_for

        config.validate()
        self.config = config
        self.say = on_message or (lambda m: None)
        self.clock = clock
        self.model_dir = Path(os.path.abspath(config.model))
        self.card = read_card(self.model_dir)
        self.phases = PhaseTable.from_dict(self.card["phases"])
        self.inference = InferenceConfig.from_dict(dict(config.inference))
        self.postprocess, self.cleaning_why = cleaning_for(config.cleaning, self.phases, self.card,
                                                           min_sizes=tuple(tuple(m) for m in config.min_sizes),
                                                           rim_px=config.rim_px)
        self.arrivals = Arrivals(config.scans, rule=config.complete, quiet_s=config.quiet_s, slices=config.slices,
                                 clock=time.monotonic)
        self.out = Path(config.out)
        self.live = self.out / "live"
        # a folder segmented before with another model or other settings is refused now, when the watch starts,
        # rather than when the next scan arrives (segment_series never mixes two segmentations in one series)
        from core.segmentation.series import folder_conflict

        conflict = folder_conflict(self.out, self.model_dir, phases=self.phases, voxel_size_um=config.voxel_size_um,
                                   inference=self.inference, postprocess=self.postprocess)
        if conflict:
            raise ReactomoError(conflict)
        try:
            self.live.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReactomoError(f"The output folder {self.out} cannot be created ({exc.strerror or exc}).") from None
        old = read_live_state(self.out) or {}
        self.scans: dict[str, dict[str, Any]] = old.get("scans") or {}
        self.alerts: list[dict[str, Any]] = old.get("alerts") or []
        self.qc: dict[str, Any] = old.get("qc") or {}
        self.status: dict[str, Any] = old.get("status") or {}
        self.last_arrival: float | None = self.status.get("last_arrival_epoch")
        self.started = clock()

    # ------------------------------------------------------------------ records
    def _save(self) -> None:
        state = {"format": "reactomo.live", "format_version": 1, "config": self.config.to_dict(),
                 "model": {"path": str(self.model_dir), "name": self.card.get("name", self.model_dir.name)},
                 "cleaning": self.cleaning_why, "scans": self.scans, "alerts": self.alerts, "qc": self.qc,
                 "status": self.status, "updated": _utc(self.clock())}
        try:
            atomic_write_json(self.live / STATE, state)
        except OSError as exc:
            from core.errors import filesystem_sentence

            self.say(f"Could not save the live state: {filesystem_sentence(exc, self.live)}")

    def alert(self, kind: str, sentence: str, *, step: int | None = None, scan: str | None = None,
              value: float | None = None, key: str | None = None) -> bool:
        """Record an alert once per ``key`` (default kind + scan); log it, tell the user, run the alert command."""
        key = key or f"{kind}:{scan or ''}"
        if any(a.get("key") == key for a in self.alerts):
            return False
        now = self.clock()
        a = {"time": _utc(now), "kind": kind, "step": step, "scan": scan, "value": value, "sentence": sentence, "key": key}
        self.alerts.append(a)
        self.say(f"ALERT: {sentence}")
        try:
            with open(self.live / ALERTS_LOG, "a", encoding="utf-8") as f:
                f.write(f"{a['time']}\t{kind}\t{sentence}\n")
        except OSError as exc:
            self.say(f"Could not write the alert log ({exc.strerror or exc}).")
        if self.config.alert_command:
            try:
                subprocess.run([*shlex.split(self.config.alert_command), sentence], timeout=30, check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError) as exc:
                self.say(f"The alert command failed: {exc}.")
        return True

    # ------------------------------------------------------------------ one look
    def look(self, *, should_stop: Callable[[], bool] | None = None,
             on_progress: Callable[[float, str], None] | None = None) -> int:
        """Look at the folder once, segment what is new or re-written, update the checks. Returns scans segmented."""
        from core.imaging.arrivals import scan_checksum

        now = self.clock()
        try:
            complete = self.arrivals.look()
        except OSError as exc:
            from core.errors import filesystem_sentence

            self.alert("disk", f"The scan folder cannot be read: {filesystem_sentence(exc, self.arrivals.folder)}",
                       key=f"disk:folder:{int(now // 600)}")
            return 0
        names = [p.name for p in complete]
        todo, redo = [], []
        for i, p in enumerate(complete):
            rec = self.scans.get(p.name)
            try:
                st = p.stat()
                stamp = [st.st_size, st.st_mtime_ns] if p.is_file() else list(self.arrivals.candidates[p.name].stamp)
            except (OSError, KeyError):
                continue
            if rec is None:
                self.last_arrival = now
                self.say(f"New scan {p.name}.")
                rec = self.scans[p.name] = {"first_seen": _utc(now), "status": "waiting", "attempts": 0}
            if rec.get("stamp") != stamp:
                sha = scan_checksum(p)
                if rec.get("sha256") and rec["sha256"] != sha and rec.get("status") == "done":
                    self.say(f"Scan {p.name} was written again (its checksum changed): segmenting it again.")
                    rec["status"], rec["rewritten"] = "waiting", int(rec.get("rewritten", 0)) + 1
                    rec["quick_done"] = False
                    redo.append(i)
                    self.last_arrival = now
                rec["stamp"], rec["sha256"] = stamp, sha
            if rec.get("status") == "done":
                continue
            if rec.get("status") == "failed" and now < float(rec.get("retry_after", 0)):
                continue
            todo.append(i)
        self._status(names, len(todo))
        if not todo:
            self._stall_check(now)
            self._save()
            return 0
        done = self._segment(complete, todo, redo, should_stop=should_stop, on_progress=on_progress)
        self._analyse()
        self._status(names, 0)
        self._save()
        return done

    def _times(self, n: int) -> list[float]:
        return [i * float(self.config.interval_s) for i in range(n)]

    def _segment(self, complete: list[Path], todo: list[int], redo: list[int], *, should_stop, on_progress) -> int:
        from core.segmentation.series import segment_series

        voxel = self.config.voxel_size_um
        count = 0
        if self.config.quick:
            self._segment_quick(complete, todo, redo, should_stop=should_stop)
            if any(not self.scans[complete[i].name].get("quick_done") for i in todo):
                return count  # a quick slab failed: it is retried first
            # whole scans one per look, so the next arrivals' quick slabs come first
            todo, redo = todo[:1], [i for i in redo if i in todo[:1]]

        def on_step(o) -> None:
            name = Path(o.scan).name
            rec = self.scans.setdefault(name, {})
            rec["attempts"] = int(rec.get("attempts", 0)) + 1
            rec["step"] = o.step
            if o.status == "done":
                rec.update(status="done", segmented=_utc(self.clock()), seconds=round(o.seconds, 2),
                           mvoxel_per_s=o.mvoxel_per_s, error="", label_file=Path(o.out_path).name)
                self.status["last_segmented"] = name
                self.status.setdefault("seconds_per_scan", [])
                self.status["seconds_per_scan"] = (self.status["seconds_per_scan"] + [round(o.seconds, 2)])[-5:]
                self.say(f"Segmented {name} (step {o.step}) in {o.seconds:.1f} s.")
                self._qc(Path(o.scan), o.step)
            else:
                delay = min(600.0, 30.0 * 2 ** (rec["attempts"] - 1))
                rec.update(status="failed", error=o.error, retry_after=self.clock() + delay)
                self.alert("failed", f"Scan {name} could not be segmented and is skipped for now (retried in "
                                     f"{delay:.0f} s): {o.error}", scan=name, step=o.step,
                           key=f"failed:{name}:{rec['attempts']}")
            self._save()

        try:
            segment_series(self.model_dir, complete, self.out, phases=self.phases, times_s=self._times(len(complete)),
                           voxel_size_um=voxel, inference=self.inference, postprocess=self.postprocess,
                           steps=todo, redo=redo, on_step=on_step, should_stop=should_stop, on_progress=on_progress,
                           cleaning_source=self.cleaning_why, extra={"live": True})
        except JobCancelled:
            raise
        except OSError as exc:
            from core.errors import filesystem_sentence

            self.alert("disk", f"Segmenting stopped: {filesystem_sentence(exc, self.out)}; it goes on when there is room.",
                       key=f"disk:{int(self.clock() // 600)}")
        self._sync_from_record()
        count += sum(1 for i in todo if self.scans.get(complete[i].name, {}).get("status") == "done")
        return count

    def _sync_from_record(self) -> None:
        """Steps the segmentation record has done that this state does not know of: the watcher was killed after a
        label file and its record were written, before its own state was. They are done, not to be done again."""
        from core.segmentation.series import read_series_record

        record = read_series_record(self.out) or {}
        for s in record.get("steps", []):
            rec = self.scans.get(Path(s.get("scan", "")).name)
            if rec is not None and s.get("status") == "done" and rec.get("status") != "done":
                rec.update(status="done", step=int(s["step"]), seconds=s.get("seconds"), error="",
                           mvoxel_per_s=s.get("mvoxel_per_s"), label_file=Path(s["out_path"]).name,
                           attempts=max(1, int(rec.get("attempts", 0))), recovered=True)

    def _quick_slices(self, shape: tuple[int, ...]) -> int:
        """Slices of a quick slab: what the measured speed segments in 80 % of the interval (at least 1)."""
        if self.config.quick_slices:
            return int(min(shape[0], self.config.quick_slices))
        speeds = [r.get("mvoxel_per_s") for r in self.scans.values() if r.get("mvoxel_per_s")]
        speeds += [r.get("quick_mvoxel_per_s") for r in self.scans.values() if r.get("quick_mvoxel_per_s")]
        mvs = float(np.median(speeds)) if speeds else 1.0
        per_slice = shape[1] * shape[2] / 1e6
        return int(max(1, min(shape[0], 0.8 * self.config.interval_s * mvs / per_slice)))

    def _segment_quick(self, complete: list[Path], todo: list[int], redo: list[int], *, should_stop) -> int:
        from core.imaging.io import open_volume
        from core.segmentation.series import segment_series

        waiting = [i for i in todo if not self.scans[complete[i].name].get("quick_done")]
        if not waiting:
            return 0
        with open_volume(complete[waiting[0]]) as vol:
            shape = tuple(vol.shape)
        n = self._quick_slices(shape)
        z0 = (shape[0] - n) // 2
        done = 0

        def on_step(o) -> None:
            nonlocal done
            rec = self.scans.setdefault(Path(o.scan).name, {})
            if o.status == "done":
                rec.update(quick_done=True, quick_seconds=round(o.seconds, 2), quick_mvoxel_per_s=o.mvoxel_per_s,
                           quick_slices=[z0, z0 + n])
                done += 1
            self._save()

        try:
            segment_series(self.model_dir, complete, self.live / "quick", phases=self.phases,
                           times_s=self._times(len(complete)), voxel_size_um=self.config.voxel_size_um,
                           inference=self.inference, postprocess=self.postprocess, steps=waiting,
                           redo=[i for i in redo if i in waiting], z_range=(z0, z0 + n), on_step=on_step, should_stop=should_stop,
                           cleaning_source=self.cleaning_why, extra={"live": True, "quick": True})
        except ReactomoError as exc:  # e.g. a slab size that changed: the quick record is remade
            self.say(f"Quick mode: {exc}")
        if done:
            self._analyse(quick=True)
        return 0

    # ------------------------------------------------------------------ checks and alerts
    def _analyse(self, *, quick: bool = False) -> None:
        from core.analysis.results import AnalysisConfig, analyze

        seg = self.live / "quick" if quick else self.out
        out = self.live / ("quick-analysis" if quick else "analysis")
        try:
            result = analyze(seg, out, config=AnalysisConfig(voxel_size_um=self.config.voxel_size_um,
                                                             band=self.config.band), phases=self.phases)
        except ReactomoError as exc:
            self.status["analysis_note" if not quick else "quick_analysis_note"] = str(exc)
            return
        except OSError as exc:
            from core.errors import filesystem_sentence

            self.alert("disk", f"The live analysis could not be saved: {filesystem_sentence(exc, out)}",
                       key=f"disk:analysis:{int(self.clock() // 600)}")
            return
        self.status["analysis_note" if not quick else "quick_analysis_note"] = ""
        if quick:
            return
        summary = result["summary"]
        from core.segmentation.series import read_series_record

        record = read_series_record(self.out) or {}
        names = {int(r["step"]): Path(r["scan"]).name for r in record.get("steps", []) if "step" in r and "scan" in r}
        for k, n in names.items():  # a late scan shifts the step numbers of the later ones
            if n in self.scans:
                self.scans[n]["step"] = k
        pct = 100.0 * self.config.band
        for r in summary.get("molar_evolution") or []:
            if r.get("inside_band") is False:
                k = int(r["step"])
                self.alert("internal_standard",
                           f"Step {k} ({names.get(k, '?')}) is outside the internal standard's ±{pct:g} % band: "
                           f"deviation {r['deviation_pct']:+.2f} %.", step=k, scan=names.get(k),
                           value=float(r["deviation_pct"]), key=f"internal_standard:{names.get(k)}")
        for r in summary.get("inert") or []:
            if r.get("inside_band") is False:
                k = int(r["step"])
                self.alert("inert_drift",
                           f"{str(r['phase']).capitalize()} volume at step {k} ({names.get(k, '?')}) drifted "
                           f"{100 * r['change_vs_first']:+.2f} % from the first step (it takes no part in the reaction; "
                           f"band ±{pct:g} %).", step=k, scan=names.get(k), value=100 * float(r["change_vs_first"]),
                           key=f"inert_drift:{r['phase']}:{names.get(k)}")

    def _reference(self) -> dict[str, Any] | None:
        """Confidence and grey-value range of the reference scan (the model's training scan, else the first scan)."""
        if self.qc.get("reference"):
            return self.qc["reference"]
        scan = (self.card.get("provenance") or {}).get("scan")
        path = scan.get("path") if isinstance(scan, dict) else scan if isinstance(scan, str) else None
        if path and Path(path).exists():
            try:
                ref = {k: v for k, v in self._measure(Path(path)).items() if k != "sample"}
                ref.update(scan=str(path), why="the scan the model was trained on")
                self.qc["reference"] = ref
                return ref
            except (ReactomoError, OSError) as exc:
                log.info("reference scan %s not usable: %s", path, exc)
        return None

    def _measure(self, scan: Path) -> dict[str, Any]:
        """Mean max-probability, share of uncertain pixels and normalised grey-value quantiles of a few slices."""
        from core.imaging.normalise import apply_normalisation, fit_normalisation
        from core.network.inference import InferenceConfig, context_slices, input_channels, load_model_cached, predict_slices

        model, card = load_model_cached(self.model_dir, phases=self.phases, device="cpu")
        spec = card.get("normalisation") or {}
        from core.imaging.rings import model_rings, open_scan

        with open_scan(scan, rings=model_rings(spec)) as vol:  # read as the model reads every scan
            norm = fit_normalisation(vol, method=spec.get("method", "bright-tail"), upper=float(spec.get("upper", 99.0)))
            nz = vol.shape[0]
            zs = sorted({int(round(z)) for z in np.linspace(nz * 0.25, nz * 0.75, QC_SLICES)})
            ch = input_channels(model)
            images = apply_normalisation(context_slices(vol, zs, ch), norm).astype(np.float32)
        probs = predict_slices(model, images, config=InferenceConfig(device="cpu", tile=self.inference.tile),
                               class_codes=card["class_codes"], return_probabilities=True)
        pmax = probs.max(axis=1)
        grey = images if images.ndim == 3 else images[:, ch // 2]
        sample = grey.ravel()[:: max(1, grey.size // 2_000_000)]
        q = np.quantile(sample, [0.001, 0.995, 0.999])
        from scipy.ndimage import gaussian_filter1d

        counts, edges = np.histogram(sample, bins=256, range=(float(q[0]), float(q[2])))
        peak = int(np.argmax(gaussian_filter1d(counts.astype(float), 2.0)))
        mode = float(0.5 * (edges[peak] + edges[peak + 1]))
        return {"confidence": float(pmax.mean()), "uncertain_share": float((pmax < 0.6).mean()),
                "high": float(q[2]) + 0.1 * float(q[2] - mode), "peak": mode, "bright": float(q[1]), "sample": sample}

    def _qc(self, scan: Path, step: int) -> None:
        try:
            m = self._measure(scan)
        except (ReactomoError, OSError) as exc:
            self.say(f"No confidence check for {scan.name}: {exc}")
            return
        ref = self._reference()
        if ref is None:
            ref = {k: v for k, v in m.items() if k != "sample"}
            ref.update(scan=str(scan), why="the first scan of this run (the model's training scan is not here)")
            self.qc["reference"] = ref
        outside = float((m["sample"] > ref["high"]).mean())  # brighter than anything the model saw
        span = max(ref["bright"] - ref["peak"], 1e-6)
        shift = (m["peak"] - ref["peak"]) / span  # in units of the matrix-to-bright-tail gap
        row = {"step": step, "confidence": round(m["confidence"], 4), "uncertain_share": round(m["uncertain_share"], 4),
               "outside_share": round(outside, 4), "peak_shift": round(shift, 4)}
        self.qc.setdefault("scans", {})[scan.name] = row
        drop = ref["confidence"] - m["confidence"]
        if drop > CONFIDENCE_DROP:
            self.alert("confidence",
                       f"The model is less sure of scan {scan.name} (step {step}): mean confidence {m['confidence']:.3f} "
                       f"against {ref['confidence']:.3f} on the reference scan ({100 * m['uncertain_share']:.1f} % of "
                       "pixels under 0.6); check its labels.", step=step, scan=scan.name, value=m["confidence"])
        if outside > OUTSIDE_SHARE or abs(shift) > MEDIAN_SHIFT:
            self.alert("histogram",
                       f"The grey values of scan {scan.name} (step {step}) moved away from those the model was trained "
                       f"on: the main peak moved {100 * shift:+.0f} % of the gap from it to the brightest phase and "
                       f"{100 * outside:.1f} % are brighter than any it saw, after the normalisation; label a slice of "
                       "it and retrain.",
                       step=step, scan=scan.name, value=shift if abs(shift) > MEDIAN_SHIFT else outside)

    def _stall_check(self, now: float) -> None:
        if self.last_arrival is None:
            return
        quiet = now - self.last_arrival
        limit = STALL_FACTOR * float(self.config.interval_s)
        if quiet > limit:
            self.alert("stalled", f"No new scan for {quiet:.0f} s ({quiet / self.config.interval_s:.1f} intervals of "
                                  f"{self.config.interval_s:g} s): are the scans still arriving?",
                       value=quiet, key=f"stalled:{len(self.scans)}")

    def _status(self, names: list[str], queue: int) -> None:
        per = self.status.get("seconds_per_scan") or []
        sps = float(np.median(per)) if per else None
        nxt = self.last_arrival + self.config.interval_s if self.last_arrival is not None else None
        self.status.update({
            "last_seen": names[-1] if names else None, "scans_complete": len(names),
            "scans_segmented": sum(1 for r in self.scans.values() if r.get("status") == "done"),
            "being_written": self.arrivals.incomplete, "queue": queue + len(self.arrivals.incomplete),
            "seconds_per_scan_median": sps, "interval_s": float(self.config.interval_s),
            "keeps_up": None if sps is None else bool(sps <= self.config.interval_s),
            "last_arrival_epoch": self.last_arrival, "last_arrival": _utc(self.last_arrival) if self.last_arrival else None,
            "next_expected": _utc(nxt) if nxt is not None else None, "checked": _utc(self.clock()),
            "quick": bool(self.config.quick),
        })


def run_live(config: LiveConfig, *, should_stop: Callable[[], bool] | None = None,
             on_message: Callable[[str], None] | None = None, on_progress: Callable[[float, str], None] | None = None,
             idle_exit_s: float | None = None, once: bool = False,
             on_update: Callable[["Watcher"], None] | None = None) -> dict[str, Any]:
    """Watch ``config.scans`` until stopped (or once, or after ``idle_exit_s`` with nothing new); returns the state.

    One watcher per output folder: a second one is refused with a sentence (the lock dies with its process)."""
    stop = should_stop or (lambda: False)
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReactomoError(f"The output folder {out} cannot be created ({exc.strerror or exc}).") from None
    with writer_lock(out / "live", what=f"the live run in {out}"):
        w = Watcher(config, on_message=on_message)
        last_work = time.monotonic()
        while True:
            if stop():
                break
            n = w.look(should_stop=stop, on_progress=on_progress)
            if n:
                last_work = time.monotonic()
                if on_update is not None:
                    on_update(w)
            if once:
                # a scan still in its quiet window is waited for, up to a minute
                if not w.arrivals.incomplete or time.monotonic() - last_work > 60:
                    break
            if idle_exit_s is not None and time.monotonic() - last_work > idle_exit_s and not w.arrivals.incomplete:
                break
            if on_progress:
                on_progress(0.0, f"watching: {w.status.get('scans_segmented', 0)} scans segmented")
            deadline = time.monotonic() + config.poll_s
            while time.monotonic() < deadline and not stop():
                time.sleep(min(0.2, config.poll_s))
        w._save()
        return read_live_state(out) or {}


# ------------------------------------------------------------------------------------------------ for a project
#: An alert command the administrator allows for the Live page (a page never takes a command from a user).
ENV_ALERT_COMMAND = "REACTOMO_ALERT_COMMAND"


def live_start_problem(project, scans: str | os.PathLike, interval_s: float) -> str | None:
    """Why a live run of ``scans`` with ``interval_s`` between scans cannot go into ``project``, or None.

    The project's time series becomes the scans segmented so far, at ``interval_s`` apart: a project holding other
    scans, or the same scans at other times, would be changed without a word (its kinetics with it)."""
    have = project.scans()
    if not have:
        return None
    folder = Path(scans).resolve()
    if any(Path(project.scan_path(i)).resolve().parent != folder for i in range(len(have))):
        return (f"Project '{project.name}' already holds scans from another folder; start a live run in a new project "
                "(its scans will be the ones that arrive).")
    times = project.times_s()
    if all(abs(t - i * float(interval_s)) <= 1e-6 * max(1.0, abs(t)) for i, t in enumerate(times)):
        return None
    gap = project.interval_s()
    regular = all(abs(t - i * gap) <= 1e-6 * max(1.0, abs(t)) for i, t in enumerate(times))
    now = f"has its steps {gap:g} s apart" if regular else "has its own step times (set on the Data page)"
    return (f"Project '{project.name}' {now}, and this live run says {float(interval_s):g} s between scans: it would "
            f"change the time of every step, and the kinetics made from them. "
            + (f"Give {gap:g} s between scans, " if regular else "") + "or start the live run in a new project.")


def live_project(project, *, name: str, scans: str | os.PathLike, model_dir: str | os.PathLike,
                 interval_s: float = 60.0, complete: str = "quiet", quiet_s: float = 2.0, slices: int | None = None,
                 quick: bool = False, inference: dict[str, Any] | None = None, poll_s: float = 1.0,
                 should_stop: Callable[[], bool] | None = None, on_message: Callable[[str], None] | None = None,
                 on_progress: Callable[[float, str], None] | None = None, idle_exit_s: float | None = None,
                 once: bool = False) -> dict[str, Any]:
    """Watch ``scans`` for a project: labels go to its segmentation ``name``; after each scan the project's time
    series is the scans segmented so far, so the Segment, Analysis and 3D pages and the report work during the
    experiment and after it, as for any project. The alert command is the administrator's (``REACTOMO_ALERT_COMMAND``).

    Refused with a sentence when the project already holds other scans than this folder's, or these scans at other
    times (:func:`live_start_problem`)."""
    from core.imaging.io import discover_scans
    from core.workflow.paths import segmentation_folder
    from core.workflow.project import sanitize_name

    clean = sanitize_name(name)
    folder = Path(scans).resolve()
    problem = live_start_problem(project, folder, interval_s)
    if problem:
        raise ReactomoError(problem)
    out = segmentation_folder(project, clean)
    config = LiveConfig(scans=str(folder), model=str(Path(model_dir).resolve()), out=str(out), interval_s=interval_s,
                        complete=complete, quiet_s=quiet_s, slices=slices, quick=quick, poll_s=poll_s,
                        alert_command=os.environ.get(ENV_ALERT_COMMAND) or None,
                        voxel_size_um=project.voxel_size_um(), inference=dict(inference or {}))
    config.validate()

    def mark(status: str) -> None:
        def fn(m: dict[str, Any]) -> None:
            rec = m.setdefault("segmentations", {}).get(clean, {})
            rec.update({"name": clean, "path": str(out), "model": config.model, "model_name": Path(config.model).name,
                        "status": status, "live": {"scans": str(folder), "interval_s": interval_s, "quick": quick},
                        "updated": _utc()})
            m["segmentations"][clean] = rec
        project.update(fn)

    seen: list[str] = []

    def on_update(watcher: Watcher) -> None:
        from core.segmentation.series import read_series_record

        record = read_series_record(out) or {}
        done = [Path(s["scan"]) for s in sorted(record.get("steps", []), key=lambda s: s["step"])
                if s.get("status") == "done"]
        names = [str(p) for p in done]
        if names == seen:
            return
        infos = [discover_scans(p)[0] for p in done]
        project.set_scans(infos, times_s=[i * float(interval_s) for i in range(len(infos))])
        seen[:] = names

    mark("live")
    try:
        state = run_live(config, should_stop=should_stop, on_message=on_message, on_progress=on_progress,
                         idle_exit_s=idle_exit_s, once=once, on_update=on_update)
    except JobCancelled:
        mark("stopped")
        raise
    except BaseException:
        mark("failed")
        raise
    mark("stopped")
    return state


@dataclass
class LiveView:
    """What the Live page shows of a live run: its state and the latest analysis rows (whole and quick)."""

    state: dict[str, Any]
    molar: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    verdict: dict[str, Any] | None
    quick_molar: list[dict[str, Any]]

    @property
    def status(self) -> dict[str, Any]:
        return self.state.get("status") or {}

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return list(reversed(self.state.get("alerts") or []))


def live_view(project, name: str) -> LiveView | None:
    """The live state and results of segmentation ``name`` of a project, or None when it has no live run."""
    from core.workflow.paths import segmentation_folder

    out = segmentation_folder(project, name)
    state = read_live_state(out)
    if state is None:
        return None

    def summary(folder: Path) -> dict[str, Any]:
        try:
            return json.loads((folder / "summary.json").read_text())
        except (OSError, ValueError):
            return {}

    from core.workflow.paths import phase_volume_rows

    whole, quick = summary(out / "live" / "analysis"), summary(out / "live" / "quick-analysis")
    try:
        volumes = phase_volume_rows(project, name)
    except ReactomoError:
        volumes = []
    return LiveView(state=state, molar=whole.get("molar_evolution") or [], volumes=volumes,
                    verdict=whole.get("verdict"), quick_molar=quick.get("molar_evolution") or [])
