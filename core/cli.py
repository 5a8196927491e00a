"""Command line: ``python -m core <command> ...`` drives the same core functions as the pages.

Every user error is one sentence on stderr (``error: ...``) and exit status 2; nothing is changed. Success prints
short human-readable lines on stdout (``--json`` where a machine reads the result).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from core.errors import ReactomoError

log = logging.getLogger("core.cli")

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one sentence and exit status 2, like every other user error."""

    def error(self, message: str):  # type: ignore[override]
        sub = self.prog.removeprefix("python -m core").strip()
        hint = f"python -m core {sub} --help" if sub else "python -m core --help"
        raise ReactomoError(f"{message[0].upper()}{message[1:]} (see `{hint}`).")


def _progress_printer(quiet: bool):
    last = {"pct": -10}

    def on_progress(fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if not quiet and (pct >= last["pct"] + 10 or fraction >= 1.0):
            last["pct"] = pct
            print(f"[{pct:3d}%] {message}", file=sys.stderr, flush=True)

    return on_progress


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(t) for t in text.replace(";", ",").split(",") if t.strip()]
    except ValueError:
        raise ReactomoError(f"{what} must be numbers separated by commas; got '{text}'.") from None
    if not all(math.isfinite(v) for v in values):
        raise ReactomoError(f"{what} must be finite numbers; got '{text}'.")
    return values


# ---------------------------------------------------------------------------------------------------- commands
def _preflight(folder: Path, what: str, *, created_ok: bool = False) -> None:
    """Before long work: ``folder`` can be written (a read-only, vanished or full disk is one sentence, exit 2).

    A folder this check had to create is removed again (``created_ok``: the command creates it itself later), so
    a refused command changes nothing.
    """
    from core.errors import check_writable

    existed = folder.exists()
    check_writable(folder, what=what)
    if created_ok and not existed:
        try:
            folder.rmdir()
        except OSError:
            pass


def cmd_demo(args) -> int:
    from core.imaging.synthetic import write_demo

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReactomoError(f"The output folder {out} already exists and is not empty; choose a new folder.")
    config = _demo_config(args)
    _preflight(out, "the output folder", created_ok=True)
    dataset = write_demo(out, config, on_progress=_progress_printer(args.quiet))
    print(f"Demo experiment written to {out}: {len(dataset['steps'])} steps of {'×'.join(map(str, config.shape))} voxels, "
          f"label step {dataset['label_step']} (slices {dataset['label_slices']}).")
    return 0


def _demo_config(args):
    from core.imaging.synthetic import demo_config

    kwargs = {}
    if args.steps is not None:
        kwargs["steps"] = args.steps
    if args.shape is not None:
        kwargs["shape"] = tuple(args.shape)
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if getattr(args, "voxel_size", None) is not None:
        kwargs["voxel_size_um"] = args.voxel_size
    if getattr(args, "interval", None) is not None:
        kwargs["interval_s"] = args.interval
    if getattr(args, "imaging", None) is not None:
        kwargs["imaging"] = args.imaging
    return demo_config(**kwargs)


def cmd_demo_project(args) -> int:
    from core.workflow.data import create_demo_project

    config = _demo_config(args)
    project = create_demo_project(args.name, config=config, if_missing=args.if_missing, on_progress=_progress_printer(args.quiet))
    print(f"Project '{project.name}' is ready at {project.root} ({len(project.scans())} steps).")
    return 0


def cmd_project(args) -> int:
    from core.workflow.project import create_project, delete_project, list_projects, open_project

    if args.action == "list":
        rows = list_projects()
        if args.json:
            print(json.dumps([_summary_dict(r) for r in rows], indent=2))
        elif not rows:
            print("No projects yet: `python -m core demo-project` makes one with the demo experiment.")
        for r in rows if not args.json else []:
            d = _summary_dict(r)
            print(f"{d['name']:<24} {d.get('n_steps', 0):>4} steps   updated {d.get('updated', '')}")
        return 0
    if not args.name:
        raise ReactomoError(f"`project {args.action}` needs a project name.")
    if args.action == "create":
        project = create_project(args.name)
        print(f"Created project '{project.name}' at {project.root}.")
    elif args.action == "delete":
        moved = delete_project(args.name)
        print(f"Moved project '{args.name}' to {moved} (recoverable).")
    elif args.action == "show":
        project = open_project(args.name)
        status = project.status()
        if args.json:
            print(json.dumps({"name": project.name, "root": str(project.root), "manifest": project.manifest,
                              "status": [_status_dict(s) for s in status]}, indent=2, default=str))
        else:
            print(f"Project '{project.name}' at {project.root}")
            for s in status:
                d = _status_dict(s)
                print(f"  [{'x' if d['done'] else ' '}] {d['title']:<14} {d['detail']}")
    return 0


def _summary_dict(r) -> dict:
    if hasattr(r, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(r)
    return dict(r)


def _status_dict(s) -> dict:
    if hasattr(s, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(s)
    return dict(s)


def cmd_data(args) -> int:
    """Set a project's scans and acquisition settings (the Data page, headless)."""
    from core.workflow.data import register_scans
    from core.phases import PhaseTable
    from core.workflow.project import data_roots, open_project

    project = open_project(args.project)
    # Parse everything before touching the project, so bad input changes nothing.
    times = _floats(args.times, "--times") if args.times else None
    phases = None
    if args.phases:
        try:
            phases = PhaseTable.from_dict(json.loads(Path(args.phases).read_text()))
        except FileNotFoundError:
            raise ReactomoError(f"The phase table file {args.phases} does not exist.") from None
        except json.JSONDecodeError as exc:
            raise ReactomoError(f"The phase table file {args.phases} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    conditions = {}
    for item in args.condition:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ReactomoError(f"--condition takes KEY=TEXT, e.g. 'temperature=120 °C'; got '{item}'.")
        conditions[key.strip().lower()] = text
    roi = None
    if args.roi:
        z0, z1, y0, y1, x0, x1 = args.roi
        roi = {"z": [z0, z1], "y": [y0, y1], "x": [x0, x1]}
    with project.transaction():
        if conditions:
            project.set_conditions(conditions)
        if phases is not None:
            project.set_phases(phases)
        if args.voxel_size is not None:
            project.set_voxel_size(args.voxel_size)
        if args.interval is not None:
            project.set_interval(args.interval)
        if args.scans:
            opened = register_scans(project, args.scans, allowed_roots=data_roots(), times_s=times,
                                    check_values=not args.no_check, on_progress=_progress_printer(args.quiet))
            for note in opened.notes:
                print(note)
        elif times is not None:
            project.set_scans(project.scans(), times_s=times)
        if args.clear_roi:
            project.set_roi(None)
        elif roi is not None:
            project.set_roi(roi)
        if args.rings is not None:
            project.set_rings(args.rings)
    scans = project.scans()
    m = project.manifest
    shape = "×".join(map(str, scans[0].shape)) if scans else "-"
    print(f"Project '{project.name}': {len(scans)} steps of {shape} {scans[0].dtype if scans else ''}, "
          f"voxel {m['voxel_size_um']} µm, region {m.get('roi') or 'whole volume'}, ring artefacts "
          f"{'removed' if project.rings() == 'remove' else 'kept'}.")
    if project.conditions():
        print("Conditions: " + "; ".join(f"{k} {v}" for k, v in project.conditions().items()) + ".")
    return 0


def cmd_histograms(args) -> int:
    """Write the grey-value histogram of every step (the Data page chart) as CSV."""
    import numpy as np

    from core.atomic import atomic_write_text
    from core.workflow.data import step_histograms
    from core.workflow.project import open_project

    project = open_project(args.project)
    scans = project.scans()
    if not scans:
        raise ReactomoError(f"Project '{project.name}' has no scans yet; add them with `python -m core data {project.name} --scans PATH`.")
    edges, counts = step_histograms(scans, bins=args.bins)
    times = project.times_s()
    lines = ["step,name,time_s,bin_low,bin_high,fraction"]
    for i, s in enumerate(scans):
        for b in range(counts.shape[1]):
            lines.append(f"{i},{s.name},{times[i]:g},{edges[b]:.6g},{edges[b + 1]:.6g},{counts[i, b]:.6g}")
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
        print(f"Wrote {len(scans)} histograms of {counts.shape[1]} bins to {args.out}.")
    else:
        sys.stdout.write(text)
    peaks = edges[np.argmax(counts, axis=1)]
    log.info("histogram peaks per step: %s", peaks)
    return 0


# ------------------------------------------------------------------------------ random forest and thresholds
_RF_OUTPUTS = ("ground_truth.tif", "uncertainty.tif", "classifier.skops", "classifier.json")


def _phases_from(path: str | None):
    """The phase table of a JSON file (a list of phases), or the default table."""
    from core.phases import DEFAULT_PHASES, PhaseTable

    if not path:
        return DEFAULT_PHASES
    try:
        return PhaseTable.from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise ReactomoError(f"The phase table file {path} does not exist.") from None
    except json.JSONDecodeError as exc:
        raise ReactomoError(f"The phase table file {path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None


def _check_outputs(paths: list[Path], overwrite: bool) -> None:
    for p in paths:
        if p.exists() and (p.is_dir() or not overwrite):
            what = "is a folder" if p.is_dir() else "already exists"
            raise ReactomoError(f"{p} {what}; choose another output{'' if p.is_dir() else ' or add --overwrite'}.")


def _fractions_text(fractions: dict[int, float], phases) -> str:
    return ", ".join(f"{phases.by_code(c).name} {100 * f:.1f} %" for c, f in fractions.items())


def _forest_settings(args):
    """FeatureConfig and ForestConfig from the options shared by `rf` and `ground-truth` (validated)."""
    from core.labelling.features import FeatureConfig
    from core.labelling.forest import ForestConfig

    fkw: dict = {}
    if args.sigmas:
        fkw["sigmas"] = tuple(_floats(args.sigmas, "--sigmas"))
    if args.features:
        fkw["groups"] = tuple(g.strip() for g in args.features.split(",") if g.strip())
    if args.context_3d is not None:
        fkw["context_3d"] = args.context_3d
    rkw: dict = {}
    if args.trees is not None:
        rkw["n_trees"] = args.trees
    if getattr(args, "depth", None) is not None:
        rkw["max_depth"] = args.depth if args.depth > 0 else None
    if args.seed is not None:
        rkw["seed"] = args.seed
    feature_config, forest_config = FeatureConfig(**fkw), ForestConfig(**rkw)
    feature_config.validate()
    forest_config.validate()
    return feature_config, forest_config


def cmd_rf(args) -> int:
    """Random-forest ground truth of every scribbled slice of a scan (the Ground truth page, headless)."""
    import numpy as np

    from core.labelling.forest import ground_truth_from_scribbles, save_forest
    from core.imaging.io import read_labels, write_labels, write_volume

    phases = _phases_from(args.phases)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ReactomoError(f"The output {out} is a file; give a folder for the ground truth.")
    _check_outputs([out / name for name in _RF_OUTPUTS], args.overwrite)
    feature_config, forest_config = _forest_settings(args)
    _preflight(out, "the output folder", created_ok=True)  # before the forest is trained, not after
    from core.imaging.rings import RINGS, open_scan

    with open_scan(args.scan, rings=args.rings or RINGS) as scan:
        scribbles = read_labels(args.scribbles, shape=scan.shape, codes=phases.codes)
        result = ground_truth_from_scribbles(scan, scribbles, feature_config=feature_config, forest_config=forest_config,
                                             phases=phases, on_progress=_progress_printer(args.quiet))
        voxel = scan.voxel_size_um
    # everything is computed: only now is anything written (each file atomically)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    try:  # all three files or none: a full disk at the second never leaves the first behind
        for name, write in (("ground_truth.tif", lambda p: write_labels(p, result.labels, voxel_size_um=voxel)),
                            ("uncertainty.tif", lambda p: write_volume(p, result.uncertainty_volume(), voxel_size_um=voxel,
                                                                       compression="zlib")),
                            ("classifier.skops", lambda p: save_forest(p, result.forest))):
            write(out / name)
            written.append(out / name)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    print(f"Ground truth of {len(result.slices)} slice(s) {list(result.slices)} written to {out} "
          f"in {result.seconds['total']:.1f} s.")
    print(f"Phases: {_fractions_text(result.fractions, phases)}.")
    top = ", ".join(f"{n} {v:.2f}" for n, v in result.forest.importances()[:5])
    print(f"Most important features: {top}.")
    log.info("uncertainty: mean %.3f on the labelled slices", float(np.mean(result.uncertainty)))
    return 0


def _ranges_from_args(items, phases):
    from core.labelling.threshold import check_ranges

    triples = []
    for code, low, high in items:
        try:
            c = int(code)
        except ValueError:
            raise ReactomoError(f"--range needs CODE LOW HIGH with a whole-number code; got code '{code}'.") from None
        lo, hi = (_floats(v, "--range bounds")[0] if v.strip() else None for v in (low, high))
        if lo is None or hi is None:
            raise ReactomoError(f"--range {code} {low} {high}: give two numbers LOW HIGH.")
        triples.append((c, lo, hi))
    return check_ranges(triples, phases=phases)


def cmd_threshold(args) -> int:
    """The threshold baseline: manual grey ranges or multi-Otsu, on every slice or on the scribbled slices."""
    import numpy as np

    from core.imaging.io import open_volume, read_labels, write_labels
    from core.labelling.threshold import BRIGHTNESS_ORDER, otsu_ranges, threshold_ranges

    phases = _phases_from(args.phases)
    out = Path(args.out)
    _check_outputs([out], args.overwrite)
    if not out.name.lower().endswith((".tif", ".tiff")):
        raise ReactomoError(f"The output {out.name} must end in .tif; labels are written as a TIFF stack.")
    if bool(args.otsu) == bool(args.range):
        raise ReactomoError("Choose one method: --otsu, or one --range CODE LOW HIGH per phase.")
    order = BRIGHTNESS_ORDER
    if args.order:
        order = tuple(int(v) for v in _floats(args.order, "--order"))
    ranges = None if args.otsu else _ranges_from_args(args.range, phases)
    with open_volume(args.scan) as scan:
        if args.slices_from:
            marks = read_labels(args.slices_from, shape=scan.shape, codes=phases.codes)
            zs = [int(z) for z in np.flatnonzero(marks.reshape(marks.shape[0], -1).any(axis=1))]
            if not zs:
                raise ReactomoError(f"The labels file {args.slices_from} marks no slice (every value is 0); brush some slices first.")
        else:
            zs = list(range(scan.shape[0]))
        if ranges is None:
            # thresholds from the chosen slices (or a sample of the scan), ranges reaching the data type's limits
            sample = (np.concatenate([scan.slice(0, z).ravel() for z in zs]) if args.slices_from
                      else scan.sample(max_voxels=4_000_000))
            if scan.dtype.kind == "f":
                bounds = (-float(np.finfo(np.float32).max), float(np.finfo(np.float32).max))
            else:
                bounds = (0.0, float(np.iinfo(scan.dtype).max) + 1.0)
            ranges = otsu_ranges(sample, order=order, phases=phases, bounds=bounds)
        labels = np.zeros(scan.shape, dtype=np.uint8)
        for z in zs:
            labels[z] = threshold_ranges(scan.slice(0, z), ranges, phases=phases)
        voxel = scan.voxel_size_um
    write_labels(out, labels, voxel_size_um=voxel)
    counts = np.bincount(labels[zs].ravel(), minlength=256)
    total = max(int(counts.sum()), 1)
    fractions = {c: counts[c] / total for c in phases.codes if any(r.code == c for r in ranges)}
    print(f"Thresholded {len(zs)} slice(s) into {out}.")
    for r in ranges:
        print(f"  {phases.by_code(r.code).name:<12} [{r.low:g}, {r.high:g})")
    print(f"Phases: {_fractions_text(fractions, phases)}" + (f", unlabelled {100 * counts[0] / total:.1f} %." if counts[0] else "."))
    return 0


def _step_index(project, text: str | None) -> int | None:
    """A step given by index or by name (``3`` or ``t003``)."""
    if text is None:
        return None
    names = [s.name for s in project.scans()]
    if text in names:
        return names.index(text)
    try:
        i = int(text)
    except ValueError:
        raise ReactomoError(f"Step '{text}' is neither a step name ({', '.join(names[:3])}, ...) nor an index.") from None
    if not 0 <= i < len(names):
        raise ReactomoError(f"Step {i} does not exist; the project has steps 0 to {len(names) - 1}.")
    return i


def cmd_labels(args) -> int:
    """The Label page, headless: counts, import/export of label TIFFs, the demo's scribbles."""
    from core.workflow.labels import LabelStore, import_demo_scribbles
    from core.workflow.project import open_project

    project = open_project(args.project)
    store = LabelStore(project)
    if args.import_demo:
        step, zs = import_demo_scribbles(project)
        print(f"Imported the demo's scribbles into step {step} (slices {zs}).")
    step = _step_index(project, args.step)
    if args.import_tiff or args.export_tiff:
        if step is None:
            raise ReactomoError("Say which step the label file belongs to with --step (index or name).")
        if args.import_tiff:
            zs = store.import_tiff(args.import_tiff, step, replace=not args.merge)
            print(f"Imported labels on {len(zs)} slices of {project.scans()[step].name}.")
        if args.export_tiff:
            path = store.export_tiff(args.export_tiff, step)
            print(f"Wrote the labels of {project.scans()[step].name} to {path}.")
    counts = store.counts()
    for p in project.phases():
        c = counts.get(p.code)
        print(f"{p.name:<12} {getattr(c, 'pixels', 0):>10} px on {getattr(c, 'slices', 0)} slices")
    return 0


def _transforms(args) -> tuple[str, ...]:
    """The training patches' transforms: the geometric ones, and the grey-value jitter with ``--intensity-augment``."""
    from core.network.train import GEOMETRY

    return GEOMETRY + (("intensity",) if getattr(args, "intensity_augment", False) else ())


def cmd_ground_truth(args) -> int:
    """The Ground truth page, headless: train the forest on the project's labels, compare, accept."""
    from core.workflow.ground_truth import (accept_candidate, extra_slices_sentence, held_out_forest, load_candidate,
                                            partial_volume_sentence, redraw_outdated, threshold_comparison,
                                            time_context_sentence, train_candidate)
    from core.workflow.project import open_project

    project = open_project(args.project)
    if not args.accept_only:
        fcfg, rcfg = _forest_settings(args)
        cand = train_candidate(project, step=_step_index(project, args.step), feature_config=fcfg,
                               forest_config=rcfg, on_progress=_progress_printer(args.quiet),
                               time_context=args.forest_time_context, extra_slices=_extra_slices(args.extra_slices))
        print(f"Random forest on {len(cand.slices)} slices of {cand.step_name} in {cand.meta['seconds']['total']:.1f} s.")
        if tc := time_context_sentence(cand, project.scans()):
            print(tc)
        if pv := partial_volume_sentence(cand, project.phases()):
            print(pv)
        if more := extra_slices_sentence(cand):
            print(more)
        held = held_out_forest(project, cand)
        cmp = threshold_comparison(project, cand, method="otsu", held_out=held)
        names = {p.code: p.name for p in project.phases()}
        for key, where in (("dice_truth", "vs the demo truth"), ("dice_held_out", "on the held-out scribbles")):
            for method, dice in (cmp.get(key) or {}).items():
                text = ", ".join(f"{names[c]} {v:.3f}" for c, v in dice.items() if v == v)
                print(f"Dice {where}, {method}: {text}")
        if not cmp.get("dice_truth") and not cmp.get("dice_held_out"):
            text = ", ".join(f"{names[c]} {v:.3f}" for c, v in cmp["dice_vs_forest"].items() if v == v)
            print(f"Dice of multi-Otsu vs the forest (agreement, not quality): {text}")
        if held.by == "none" and held.note:
            print(held.note)
        if cmp["verdict"]["sentence"]:
            print(cmp["verdict"]["sentence"])
    elif load_candidate(project) is None:
        raise ReactomoError("There is no random-forest result to accept yet; run `python -m core ground-truth PROJECT` first.")
    if args.accept or args.accept_only:
        acc = accept_candidate(project)
        print(f"Accepted as the ground truth of '{project.name}': {len(acc.slices)} slices of {acc.step_name}.")
        if outdated := redraw_outdated(acc, project.phases()):
            print(outdated)
    return 0


# ---------------------------------------------------------------------------------------------------- U-Net
def _temporal_default() -> bool:
    from core.segmentation.temporal import DEFAULT

    return DEFAULT


def _temporal(args) -> bool:
    """``--temporal`` / ``--no-temporal``, or the default."""
    return _temporal_default() if args.temporal is None else bool(args.temporal)


def _match_volumes_default() -> bool:
    from core.segmentation.temporal import MATCH_VOLUMES

    return MATCH_VOLUMES


_MATCH_HELP = ("with --temporal: first match each step's split between the reactant and the product to the network's "
               "expected split (its class probabilities summed over the step), since the most probable class of each "
               "voxel gives less of a scarce phase than that sum (default: %s)")


def _thin_default() -> float:
    from core.network.train import THIN_EXAMPLES

    return THIN_EXAMPLES


def _thin(args) -> float:
    """``--thin-examples``, or the default: painted into augmented patches only, so 0 with ``--no-augment``."""
    if args.thin_examples is not None:
        return args.thin_examples
    return 0.0 if getattr(args, "no_augment", False) else _thin_default()


def _average_epochs_default() -> int:
    from core.network.train import AVERAGE_EPOCHS

    return AVERAGE_EPOCHS


#: the CPU arithmetic options of --precision (inference) and --train-precision (training), as the configs' cpu_amp
ARITHMETIC = {"auto": None, "bfloat16": True, "float32": False}


def _train_precision_default() -> str:
    from core.network.train import CPU_AMP

    return next(k for k, v in ARITHMETIC.items() if v is CPU_AMP)


def _train_precision(args) -> bool | None:
    """``--train-precision``: None (bfloat16 where the CPU has it natively), True (bfloat16) or False (float32)."""
    return ARITHMETIC[args.train_precision]


def _lr_drop_default() -> int:
    from core.network.train import LR_DROP_PATIENCE

    return LR_DROP_PATIENCE


def _soft_labels_default() -> float:
    from core.network.train import SOFT_LABELS

    return SOFT_LABELS


def _extra_slices(text: str | None) -> int | None:
    """``--extra-slices``: a count of 0 or more, ``all`` or ``auto``; None (not given) = the default, which soft
    labels turn off."""
    from core.workflow.run import ALL_SLICES, AUTO_SLICES

    if text is None:
        return None
    t = str(text).strip().lower()
    if t in ("all", "auto"):
        return ALL_SLICES if t == "all" else AUTO_SLICES
    try:
        n = int(t)
    except ValueError:
        n = -1
    if n < 0:
        raise ReactomoError(f"--extra-slices must be a count of 0 or more, all or auto; got {text!r}.")
    return n


def _extra_slices_default() -> str:
    from core.workflow.run import ALL_SLICES, AUTO_SLICES, EXTRA_SLICES

    return {ALL_SLICES: "all", AUTO_SLICES: "auto"}.get(EXTRA_SLICES, str(EXTRA_SLICES))


def _ensemble_default() -> int:
    from core.network.train import ENSEMBLE

    return ENSEMBLE


def _time_context_default() -> int:
    from core.network.inference import TIME_CONTEXT

    return TIME_CONTEXT


def _forest_time_context() -> int:
    from core.labelling.forest import TIME_CONTEXT

    return TIME_CONTEXT


def _edge_background_default() -> str:
    from core.labelling.partial_volume import EDGE_BACKGROUND

    return EDGE_BACKGROUND


def _rings_default() -> str:
    from core.imaging.rings import RINGS

    return RINGS


def rings_option(parser, what: str) -> None:
    """``--rings remove|keep`` (core.imaging.rings)."""
    parser.add_argument("--rings", choices=("remove", "keep"), default=None,
                        help=f"ring artefacts of the scans: remove (measured on each scan around the rotation axis and "
                             f"subtracted before {what} reads it; the model remembers it, so segment reads new scans the "
                             f"same way) or keep (default: %s)" % _rings_default())


def _partial_volume(text: str) -> tuple[str, ...] | None:
    """``--partial-volume``: "auto" (None: the pores, then the inert phases), "none" (()) or names and role words."""
    key = str(text or "").strip().lower()
    if key == "auto":
        return None
    if key in ("none", ""):
        return ()
    return tuple(_names(text))


def _partial_volume_codes(text: str, phases) -> list[int]:
    """``segment --partial-volume`` as phase codes (an unknown name is refused in a sentence)."""
    from core.labelling.partial_volume import resolve_codes

    return resolve_codes(phases, _partial_volume(text))


def _names(text: str) -> list[str]:
    """Comma-separated names, blanks dropped."""
    return [n.strip() for n in str(text or "").split(",") if n.strip()]


def cmd_train(args) -> int:
    """Train a U-Net on a scan and its ground-truth label TIFF and save it as a model bundle."""
    import numpy as np

    from core.network.bundle import check_bundle_name, save_bundle
    from core.imaging.io import read_labels
    from core.imaging.normalise import apply_normalisation, fit_normalisation
    from core.network.train import TrainConfig, check_ensemble, member_records, quality_warning, train_ensemble
    from core.network.unet import UNetConfig, build_unet, select_device

    phases = _phases_from(args.phases)
    members = check_ensemble(args.ensemble, args.seed)  # before the scan is read
    out = Path(args.out)
    check_bundle_name(out.name)
    if out.exists():
        raise ReactomoError(f"The model folder {out} already exists; choose another --out.")
    _preflight(out.parent, "the models folder", created_ok=True)  # before the epochs, not after them
    tc = TrainConfig(patch_size=args.patch, stride_ratio=args.stride_ratio, batch_size=args.batch,
                     max_epochs=args.epochs, patience=args.patience, val_fraction=args.val_fraction,
                     augment=not args.no_augment, loss=args.loss, class_weights=args.class_weights,
                     optimizer=args.optimizer, lr=args.lr, seed=args.seed, edge_px=args.edge_px,
                     edge_codes=tuple(phases.by_name(n).code for n in _names(args.edge_phases)),
                     thin_p=_thin(args), transforms=_transforms(args), average_epochs=args.average_epochs,
                     lr_drop_patience=args.lr_drop, cpu_amp=_train_precision(args))
    if not 0 <= args.context <= 3:
        raise ReactomoError(f"--context must be 0 to 3 neighbouring slices on each side; got {args.context}.")
    uc = UNetConfig(n_classes=len(phases), width=args.width, depth=args.depth, in_channels=2 * args.context + 1)
    uc.validate()
    device = select_device(args.device)
    from core.imaging.rings import RINGS, check_rings_mode, open_scan

    rings = check_rings_mode(args.rings or RINGS)
    with open_scan(args.scan, rings=rings) as scan:
        labels = read_labels(args.ground_truth, shape=scan.shape, codes=phases.codes)
        zs = [int(z) for z in np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))]
        if not zs:
            raise ReactomoError(f"The ground truth {args.ground_truth} labels no slice (every value is 0); give labels on some slices.")
        norm = {**fit_normalisation(scan, seed=args.seed), "rings": rings}
        from core.network.inference import context_slices

        images = apply_normalisation(context_slices(scan, zs, uc.in_channels), norm)
        scan_path = str(Path(args.scan).resolve())
    def on_epoch(r: dict) -> None:
        dice = ", ".join(f"{n} {v:.3f}" for n, v in r["val_dice"].items() if v is not None)
        who = f"net {r['member']} " if members > 1 else ""
        print(f"{who}epoch {r['epoch']:3d}  train {r['train_loss']:.4f}  val {r['val_loss']:.4f}  Dice {dice}  "
              f"({r['seconds']:.1f} s)", flush=True)

    trained = train_ensemble(lambda: build_unet(uc), images, labels[zs], members=members, config=tc, phases=phases,
                             device=device, on_epoch=on_epoch)
    model, result = trained.model, trained.members[0]
    best = {**result.kept, "val_dice": trained.val_dice}  # the saved weights' validation (the averaged network's)
    from core.network.train import averaged_sentence

    for i, r in enumerate(trained.members):
        if r.averaged:
            print(f"{'network ' + str(i + 1) + ': ' if members > 1 else ''}{averaged_sentence(r)}", flush=True)
    if members > 1:
        from core.network.train import dice_text

        print("averaged network on the held-out slices: Dice "
              + ", ".join(f"{n} {dice_text(v)}" for n, v in trained.val_dice.items() if v is not None), flush=True)
    from core.network.inference import choose_model_cleaning
    from core.network.train import held_out

    xv, yv, where = held_out(images, labels[zs], tc)  # scored where the network never trained
    choice = choose_model_cleaning(model, xv, yv, phases=phases, class_codes=phases.codes, device=device, where=where)
    print(f"cleaning for this model: {choice.method}", flush=True)
    save_bundle(out, model, config=uc, phases=phases, normalisation=norm, cleaning=choice.to_dict(phases),
                training={"config": tc.to_dict(), "device": result.device, "precision": result.precision,
                          "history": result.history,
                          **({"thin_examples": result.thin} if result.thin else {}),
                          **({"members": member_records(trained)} if members > 1 else {})},
                provenance={"scan": scan_path, "ground_truth": str(Path(args.ground_truth).resolve()), "slices": zs},
                metrics={"best_epoch": result.best_epoch, "val_loss": best["val_loss"], "val_dice": best["val_dice"],
                         "epochs": len(result.history), "stopped_early": result.stopped_early, "seconds": result.seconds,
                         **({"averaged_epochs": result.averaged_epochs} if result.averaged_epochs else {}),
                         **({"averaging": result.averaged} if result.averaged else {}),
                         **({"networks": members} if members > 1 else {})},
                seed=args.seed, ensemble_seeds=trained.seeds if members > 1 else None)
    if members > 1:
        print(f"Model saved to {out}: {members} U-Nets (seeds {', '.join(str(v) for v in trained.seeds)}) averaged, "
              f"best epochs {' and '.join(str(r.best_epoch) for r in trained.members)} of "
              f"{' and '.join(str(len(r.history)) for r in trained.members)}, {trained.seconds:.1f} s on {result.device} "
              f"in {result.precision}.")
    else:
        print(f"Model saved to {out}: best epoch {result.best_epoch} of {len(result.history)}"
              f"{' (stopped early)' if result.stopped_early else ''}, {result.seconds:.1f} s on {result.device} in {result.precision}.")
    if poor := quality_warning(best["val_dice"]):  # saved all the same (exit 0), but not called a success
        print(f"warning: {poor}", file=sys.stderr)
    return 0


def cmd_models(args) -> int:
    """List the model registry."""
    from core.network.bundle import list_bundles

    rows = list_bundles(args.root)
    if args.json:
        from dataclasses import asdict

        print(json.dumps([asdict(r) for r in rows], indent=2, default=str))
        return 0
    if not rows:
        print(f"No models in {args.root} yet: `python -m core train` makes one.")
    for r in rows:
        dice = r.metrics.get("val_dice") or {}
        text = ", ".join(f"{n} {v:.3f}" for n, v in dice.items() if isinstance(v, (int, float)))
        many = f"  ({r.members} networks averaged)" if r.members > 1 else ""
        print(f"{r.name:<24} {r.created:<26} {', '.join(r.phases):<36} val Dice {text or '-'}{many}")
    return 0


# ------------------------------------------------------------------------------------------- segment / run
def _inference_from(args):
    from core.network.inference import InferenceConfig

    cfg = InferenceConfig(tile=args.tile, overlap=args.overlap, batch_size=args.batch, device=args.device,
                          cpu_amp=_precision(args), tta=args.tta, z_sigma=args.z_sigma)
    cfg.validate()
    return cfg


def _precision(args) -> bool | None:
    """``--precision``: None (bfloat16 where the CPU has it natively), True (bfloat16) or False (float32)."""
    choice = getattr(args, "precision", "auto")
    if getattr(args, "bf16", False):
        choice = "bfloat16"
    return ARITHMETIC[choice]


def _cleaning_mode(items: list[str], no_clean: bool) -> str:
    """``--min-size auto|study`` (the mode; auto by default) or ``off`` with ``--no-clean``."""
    if no_clean:
        return "off"
    modes = [i.strip().lower() for i in items if "=" not in i]
    if len(set(modes)) > 1 or (modes and modes[0] not in ("auto", "study")):
        raise ReactomoError(f"--min-size takes 'auto', 'study' or PHASE=PIXELS, e.g. bassanite=100; got {', '.join(modes)}.")
    return modes[0] if modes else "auto"


def _min_sizes(items: list[str]) -> tuple[tuple[str, int], ...]:
    out = []
    for item in items:
        if item.strip().lower() in ("auto", "study"):
            continue
        name, sep, px = item.partition("=")
        try:
            value = int(px)
        except ValueError:
            value = None
        if not sep or not name.strip() or value is None:
            raise ReactomoError(f"--min-size takes PHASE=PIXELS, e.g. bassanite=100; got '{item}'.")
        out.append((name.strip(), value))
    return tuple(out)


def _scan_paths(source: str) -> list[str]:
    from core.imaging.io import discover_scans

    return [s.path for s in discover_scans(source)]


def _print_step(o) -> None:
    if o.status == "done":
        extra = f"  ({len(o.warnings)} warning{'s' if len(o.warnings) != 1 else ''}: {o.warnings[0]})" if o.warnings else ""
        print(f"step {o.step:3d}  {Path(o.scan).name:<24} done in {o.seconds:6.1f} s ({o.mvoxel_per_s:.2f} Mvoxel/s){extra}", flush=True)
    else:
        print(f"step {o.step:3d}  {Path(o.scan).name:<24} FAILED: {o.error}", flush=True)


def cmd_segment(args) -> int:
    """Segment every scan with a model bundle; label TIFFs and phase_volumes.csv in --out."""
    from core.network.bundle import read_card
    from core.phases import PhaseTable
    from core.segmentation.postprocess import cleaning_for
    from core.segmentation.series import segment_series

    card = read_card(args.model)
    phases = _phases_from(args.phases) if args.phases else PhaseTable.from_dict(card["phases"])
    from core.imaging.io import series_scan_paths

    scans = series_scan_paths(args.scans)  # a scan that cannot be read fails alone; the others are segmented
    times = None
    interval = args.interval
    if interval is None:
        from core.workflow.data import dataset_interval

        found = dataset_interval(args.scans)
        if found:
            interval = found[0]
            print(f"step times: every {interval:g} s (from {found[1]})", flush=True)
    if interval is not None:
        times = [i * float(interval) for i in range(len(scans))]
    post, why = cleaning_for(_cleaning_mode(args.min_size, args.no_clean), phases, card, min_sizes=_min_sizes(args.min_size),
                             rim_px=args.rim_px)
    print(why, flush=True)
    steps = [int(v) for v in _floats(args.steps, "--steps")] if args.steps else None
    redraw = _partial_volume_codes(args.partial_volume, phases)  # an unknown phase is refused before anything is made
    _preflight(Path(args.out), "the segmentation folder", created_ok=True)
    result = segment_series(args.model, scans, args.out, phases=phases, times_s=times, voxel_size_um=args.voxel_size,
                            inference=_inference_from(args), postprocess=post, steps=steps, scheduler=args.scheduler,
                            workers=args.workers, resume=not args.no_resume, on_step=_print_step, cleaning_source=why,
                            partial_volume=redraw, temporal=_temporal(args), edge_background=args.edge_background,
                            match_volumes=args.match_volumes,
                            on_progress=_progress_printer(args.quiet or args.scheduler is not None or args.workers > 1))
    together = result.record.get("temporal") or {}
    if together:
        from core.segmentation.temporal import describe

        print(describe(together), flush=True)
    n_done, n_fail = len(result.done), len(result.failed)
    print(f"{n_done} of {len(result.steps)} steps segmented into {args.out} in {result.seconds:.1f} s "
          f"({result.scheduler}); phase volumes in {Path(args.out) / 'phase_volumes.csv'}.")
    if n_fail:
        raise ReactomoError(f"{n_fail} step{'s' if n_fail != 1 else ''} failed ({', '.join(str(o.step) for o in result.failed)}); "
                            f"the first: {result.failed[0].error}")
    return 0


def cmd_evaluate(args) -> int:
    """Score a label TIFF (or a folder of steps) against a reference: 8 metrics per phase and averaged (and pooled)."""
    from core.workflow.evaluate import evaluate_files

    phases = _phases_from(args.phases)
    slices = [int(v) for v in _floats(args.slices, "--slices")] if args.slices else None
    pred_dir, truth_dir = Path(args.pred).is_dir(), Path(args.truth).is_dir()
    if pred_dir != truth_dir:
        raise ReactomoError("Give --pred and --truth both as label files or both as folders of label files (one per step).")
    if pred_dir:
        return _evaluate_folders(args, phases, slices)
    report = evaluate_files(args.pred, args.truth, codes=phases.codes, names=phases.names, slices=slices)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
        return 0
    _print_report(report)
    return 0


def _evaluate_folders(args, phases, slices) -> int:
    """Every step whose file name is in both folders, then all of them pooled (counts summed over the steps)."""
    from core.workflow.evaluate import evaluate_files
    from core.imaging.io import natural_key
    from core.segmentation.metrics import pool_reports

    def tiffs(folder):
        return {p.name: p for p in Path(folder).iterdir() if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith(".")}

    pred, truth = tiffs(args.pred), tiffs(args.truth)
    names = sorted(set(pred) & set(truth), key=natural_key)
    if not names:
        raise ReactomoError(f"No label file name is in both {args.pred} and {args.truth}; name the steps alike (e.g. t000.tif).")
    reports = {n: evaluate_files(pred[n], truth[n], codes=phases.codes, names=phases.names, slices=slices) for n in names}
    pooled = pool_reports(list(reports.values()))
    if args.json:
        print(json.dumps({"steps": {n: r.to_dict() for n, r in reports.items()}, "pooled": pooled.to_dict()}, indent=2,
                         allow_nan=False))
        return 0
    left_out = sorted((set(pred) ^ set(truth)), key=natural_key)
    print(f"Dice per step ({len(names)} files in both folders" + (f"; {len(left_out)} in one only, left out" if left_out else "") + ")")
    print(f"{'step':<16}" + "".join(f"{n[:10]:>11}" for n in phases.names) + f"{'average':>11}")
    for n, r in reports.items():
        cells = "".join(_cell(r.per_phase[c]["dice"], 11) for c in r.codes)
        print(f"{n[:16]:<16}{cells}{_cell(r.average['dice'], 11)}")
    print("(average: over the phases present in that step's reference)")
    print(f"\nAll {len(names)} steps pooled (voxel counts summed):")
    _print_report(pooled)
    return 0


def _cell(v, width: int) -> str:
    return f"{v:>{width}.4f}" if isinstance(v, float) and not math.isnan(v) else f"{'-':>{width}}"


def _print_report(report) -> None:
    from core.segmentation.metrics import METRICS

    short = {"volumetric_similarity": "vol.sim", "specificity": "specif.", "precision": "precis."}
    head = f"{'phase':<12}" + "".join(f"{short.get(m, m):>9}" for m in METRICS)
    print(head)
    for row in report.rows():
        cells = "".join(_cell(row[m], 9) for m in METRICS)
        print(f"{row['phase']:<12}{cells}")
    if report.absent:
        print(f"absent from both: {', '.join(report.names[report.codes.index(c)] for c in report.absent)}")
    print(report.average_note())


def cmd_analyze(args) -> int:
    """Internal standard, pore sizes and growth of a segmented series; CSVs, summary.json and report.html."""
    from core.analysis.results import AnalysisConfig, analyze

    by_project = args.project is not None or args.name is not None
    if by_project and (args.segmentations or args.out or args.phases):
        raise ReactomoError("Give either --project and --name, or --segmentations and --out (not both); a project "
                            "brings its own phase table.")
    if by_project and not (args.project and args.name):
        raise ReactomoError("Give both --project and --name (the project's segmentation to analyse).")
    if not by_project and not (args.segmentations and args.out):
        raise ReactomoError("Give --segmentations and --out, or --project and --name.")
    config = AnalysisConfig(voxel_size_um=args.voxel_size, interval_s=args.interval, band=args.band / 100.0,
                            pore_max_voxels=args.pore_max_voxels, n_boot=args.n_boot, seed=args.seed, onset=args.onset)
    if by_project:
        from core.workflow.project import open_project
        from core.workflow.analysis import analyse_segmentation
        from core.workflow.paths import analysis_folder

        project = open_project(args.project)
        args.out = str(analysis_folder(project, args.name))
        _preflight(Path(args.out), "the results folder", created_ok=True)
        result = analyse_segmentation(project, args.name, config=config, on_progress=_progress_printer(args.quiet))
    else:
        phases = _phases_from(args.phases) if args.phases else None
        _preflight(Path(args.out), "the results folder", created_ok=True)
        result = analyze(args.segmentations, args.out, config=config, phases=phases,
                         on_progress=_progress_printer(args.quiet))
    _print_verdict(result["summary"]["verdict"])
    jm = result["summary"].get("jmak") or {}
    if jm.get("k") is not None:
        am_ci = jm.get("alpha_max_ci") or [None, None]
        am = (f"alpha_max fixed at {jm.get('alpha_max') or 1.0:g}" if not jm.get("alpha_max_fitted") else
              f"alpha_max = {jm['alpha_max']:.3f}" + ("" if None in am_ci else f" [{am_ci[0]:.3f}, {am_ci[1]:.3f}]"))
        print(f"JMAK: k = {jm['k'] * 3600:.4g} /h [{jm['k_ci'][0] * 3600:.4g}, {jm['k_ci'][1] * 3600:.4g}], "
              f"n = {jm['n']:.3f} [{jm['n_ci'][0]:.3f}, {jm['n_ci'][1]:.3f}], {am}")
        if (jm.get("model_choice") or {}).get("reason"):
            print(jm["model_choice"]["reason"])
    print(f"Results in {args.out}: molar_evolution.csv, pore_check.csv, inert.csv, pore_sizes.csv, pore_size_distribution.csv, "
          f"growth.csv, summary.json, report.html.")
    if args.figures:
        # the results above are written and valid; a failed image export is reported apart, with exit status 1
        from core.analysis.results import figures
        from core.analysis.export import figure_images

        folder = Path(args.out) / "figures"
        try:
            images = figure_images(figures(result), args.figures, scale=args.figure_scale)
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in images.items():
                (folder / f"{name}.{args.figures}").write_bytes(data)
        except ReactomoError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"error: The images cannot be written to {folder} ({exc.strerror or exc}).", file=sys.stderr)
            return 1
        print(f"{len(images)} charts as {args.figures.upper()} in {folder}: {', '.join(images)}.")
    return 0


def _print_verdict(v: dict, reason: str = "") -> None:
    """The verdict over every check, then each check in one line (the same words as the page and the report)."""
    if not v:
        print(f"Verdict: NOT JUDGED. {reason or 'The analysis was not possible.'}")
        return
    print(f"Verdict: {'PASSED' if v.get('passed') else 'FAILED'}. {v['sentence']}")
    for c in v.get("checks") or []:
        mark = {True: "pass", False: "FAIL"}.get(c.get("passed"), "not evaluated")
        print(f"  {mark:<4}  {c['sentence']}")


def _render_phases(text: str | None, phases) -> tuple[int, ...]:
    if not text:
        return (2, 3)
    codes = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        codes.append(int(item) if item.isdigit() else phases.by_name(item).code)
    return tuple(codes)


def cmd_render(args) -> int:
    """Phase surfaces of a block of a segmentation in 3D: .vtp/.ply/.stl, view.png, view.html and the 3D numbers."""
    from core.phases import DEFAULT_PHASES
    from core.render.surfaces import RenderConfig, block_from_um

    by_project = args.project is not None or args.name is not None
    if args.over_time:
        return _render_over_time(args)
    if by_project and (args.segmentation or args.out):
        raise ReactomoError("Give either --project, --name and --step, or --segmentation and --out (not both).")
    if by_project and not (args.project and args.name and args.step is not None):
        raise ReactomoError("Give --project, --name and --step (the project's segmentation and the step to render).")
    if not by_project and not (args.segmentation and args.out):
        raise ReactomoError("Give --segmentation SEG.tif and --out OUTDIR, or --project, --name and --step.")
    if args.block and args.block_um:
        raise ReactomoError("Give the block in voxels (--block) or in µm (--block-um), not both.")
    if by_project:
        from core.workflow.project import open_project
        from core.workflow.render import render_segmentation

        project = open_project(args.project)
        phases = project.phases()
        voxel = args.voxel_size or project.voxel_size_um()
    else:
        phases = _phases_from(args.phases_file) if args.phases_file else DEFAULT_PHASES
        voxel = args.voxel_size or 2.75
    block = tuple(args.block) if args.block else (block_from_um(args.block_um, voxel) if args.block_um else None)
    config = RenderConfig(phases=_render_phases(args.phases, phases), block=block, factor=args.factor,
                          max_triangles=args.max_triangles)
    if by_project:
        result = render_segmentation(project, args.name, args.step, config, on_progress=_progress_printer(args.quiet))
    else:
        from core.workflow.render import render_labels

        _preflight(Path(args.out), "the output folder", created_ok=True)
        result = render_labels(args.segmentation, args.out, config, voxel_size_um=voxel, phases=phases,
                               grey_path=args.grey, on_progress=_progress_printer(args.quiet))
    rec = result.record
    b = rec["block"]
    print(f"Block z {b[0]}-{b[1]}, y {b[2]}-{b[3]}, x {b[4]}-{b[5]} (factor {rec['settings']['factor']}), "
          f"{rec['mesh_voxel_um']:g} µm voxels{' (from the cache)' if result.cached else ''}.")
    for row in rec["numbers"]:
        tri = rec["triangles"].get(row["phase"], 0)
        ss = row.get("specific_surface_per_mm")
        perc = (f", largest pore cluster {row['largest_cluster_share'] * 100:.1f} % (spans {row['largest_cluster_spans']})"
                if row.get("largest_cluster_share") is not None else "")
        print(f"{row['phase']}: {tri:,} triangles, {row['objects']:,} objects, {row['volume_mm3']:.4g} mm³, "
              f"specific surface {'–' if ss is None else f'{ss:.1f} mm²/mm³'}{perc}")
    print(f"Files in {result.folder}: {', '.join(p.name for p in sorted(result.folder.iterdir()) if not p.name.startswith('.'))}.")
    return 0


def _render_over_time(args) -> int:
    """``render --over-time``: the 3D numbers of one block at every segmented step of a project's segmentation."""
    from core.render.surfaces import RenderConfig, block_from_um
    from core.workflow.project import open_project
    from core.workflow.render import numbers_over_time

    if not (args.project and args.name) or args.segmentation or args.out or args.step is not None or args.grey:
        raise ReactomoError("--over-time needs --project and --name (and no --step, --segmentation, --out or --grey): "
                            "it follows one block through every segmented step.")
    if args.block and args.block_um:
        raise ReactomoError("Give the block in voxels (--block) or in µm (--block-um), not both.")
    project = open_project(args.project)
    phases = project.phases()
    voxel = args.voxel_size or project.voxel_size_um()
    block = tuple(args.block) if args.block else (block_from_um(args.block_um, voxel) if args.block_um else None)
    config = RenderConfig(phases=_render_phases(args.phases, phases), block=block, factor=args.factor,
                          max_triangles=args.max_triangles)
    result = numbers_over_time(project, args.name, config, on_progress=_progress_printer(args.quiet))
    rec = result.record
    b = rec["block"]
    print(f"Block z {b[0]}-{b[1]}, y {b[2]}-{b[3]}, x {b[4]}-{b[5]} (factor {rec['settings']['factor']}), "
          f"{len(rec['steps'])} step{'s' if len(rec['steps']) != 1 else ''}{' (from the cache)' if result.cached else ''}.")
    cols = ["volume_fraction", "objects", "specific_surface_per_mm", "largest_cluster_share"]
    heads = ["share of block", "objects", "specific surface mm²/mm³", "largest pore cluster"]
    print(f"{'step':>4} {'time (s)':>9} {'phase':<12} " + " ".join(f"{h:>24}" for h in heads))
    for r in result.rows:
        vals = []
        for c in cols:
            v = r.get(c)
            vals.append("–" if v is None else (f"{v * 100:.2f} %" if c in ("volume_fraction", "largest_cluster_share")
                                               else f"{v:,.4g}"))
        t = "–" if r.get("time_s") is None else f"{r['time_s']:g}"
        print(f"{r['step']:>4} {t:>9} {r['phase']:<12} " + " ".join(f"{v:>24}" for v in vals))
    print(f"Every number, with the method: {result.path.with_suffix('.csv')} and {result.path.name}.")
    return 0


def cmd_watch(args) -> int:
    """Beamtime mode: segment each scan as it lands in --scans, update the checks, raise alerts (Ctrl+C stops)."""
    from core.workflow.live import LiveConfig, run_live

    scans = os.path.expanduser(args.scans)
    if not Path(scans).is_dir():
        raise ReactomoError(f"The scan folder {scans} does not exist or is not a folder; give the folder the "
                            "reconstruction writes into.")
    if args.complete == "slices" and not args.slices:
        raise ReactomoError("--complete slices needs --slices N, the number of 2D slices of a complete scan.")
    if args.idle_exit is not None and not args.idle_exit >= 0:
        raise ReactomoError(f"--idle-exit must be 0 or more seconds; got {args.idle_exit}.")
    _preflight(Path(args.out), "the output folder", created_ok=True)
    inference = _inference_from(args)
    if args.workers != 1 or args.scheduler:
        raise ReactomoError("watch segments in its own process; --workers and --scheduler are for segment.")
    interval = 60.0 if args.interval is None else args.interval
    config = LiveConfig(scans=str(scans), model=args.model, out=args.out, interval_s=interval,
                        complete=args.complete, quiet_s=args.quiet_s, slices=args.slices, quick=args.quick,
                        alert_command=args.alert_command, voxel_size_um=args.voxel_size, band=args.band / 100.0,
                        poll_s=args.poll, inference=inference.to_dict(),
                        cleaning=_cleaning_mode(args.min_size, args.no_clean), min_sizes=_min_sizes(args.min_size),
                        rim_px=args.rim_px, quick_slices=args.quick_slices)
    state = run_live(config, on_message=lambda m: print(m, flush=True), once=args.once, idle_exit_s=args.idle_exit)
    st = state.get("status") or {}
    sps = st.get("seconds_per_scan_median")
    print(f"{st.get('scans_segmented', 0)} of {st.get('scans_complete', 0)} complete scans segmented"
          + (f"; {sps:.1f} s per scan against an interval of {interval:g} s: "
             f"{'keeps up' if st.get('keeps_up') else 'does NOT keep up (try --quick)'}" if sps else "")
          + f"; {len(state.get('alerts') or [])} alert(s) (live/alerts.log).")
    return 0


def cmd_export_labels(args) -> int:
    """A segmentation's label volumes as OME-Zarr 0.5 (one array per step, phase names and colours as image-label)."""
    from core.segmentation.ome_zarr import export_labels

    seg = Path(os.path.expanduser(args.segmentation))
    if not seg.is_dir():
        raise ReactomoError(f"The segmentation folder {seg} does not exist; give the --out folder of segment or run.")
    phases = _phases_from(args.phases) if args.phases else None
    if str(args.out).lower().endswith((".h5", ".hdf5")):
        from core.segmentation.ome_zarr import export_labels_hdf5

        out = export_labels_hdf5(seg, args.out, phases=phases, on_progress=_progress_printer(args.quiet))
        print(f"Wrote {out} (HDF5: one dataset per step, element_size_um, the phase names and colours as attributes).")
        return 0
    out = export_labels(seg, args.out, phases=phases, on_progress=_progress_printer(args.quiet))
    print(f"Wrote {out} (OME-Zarr 0.5: one label image per step, with the phase names and colours).")
    return 0


def cmd_export(args) -> int:
    """A project as one .reactomo.zip (RO-Crate) a collaborator opens or imports."""
    from core.workflow.project import open_project
    from core.workflow.share import export_project

    project = open_project(args.project)
    r = export_project(project, os.path.expanduser(args.out), with_scans=args.with_scans,
                       on_progress=_progress_printer(args.quiet))
    scans = "with its scans" if r.scans_included else "scans by reference (add --with-scans to include them)"
    print(f"Wrote {r.path} ({r.files} files, {r.bytes_in / 1e6:.1f} MB packed into {r.bytes_out / 1e6:.1f} MB, "
          f"{scans}) in {r.seconds:.1f} s.")
    return 0


def cmd_import(args) -> int:
    """A .reactomo.zip as a new project, after checking every file in it."""
    from core.workflow.share import import_project

    r = import_project(os.path.expanduser(args.archive), args.name,
                       on_progress=_progress_printer(args.quiet))
    print(r.sentence)
    return 0


def cmd_share(args) -> int:
    """Read-only share links of a project (and its edit link on a team server)."""
    from core.workflow.access import create_share_link, edit_key, link, revoke_share_links, share_links
    from core.workflow.project import open_project

    project = open_project(args.project)
    if args.revoke:
        n = revoke_share_links(project)
        print(f"Revoked {n} share link{'s' if n != 1 else ''} of '{project.name}'.")
        return 0
    if args.edit_link:
        print(f"Edit link of '{project.name}' (whoever holds it can change the project): "
              f"{link(args.base_url, project, key=edit_key(project))}")
        return 0
    if args.list:
        for s in share_links(project):
            print(f"{link(args.base_url, project, share=s['token'])}  (made {s['created']})")
        return 0
    token = create_share_link(project)
    print(f"Read-only link to '{project.name}': {link(args.base_url, project, share=token)}")
    return 0


def cmd_worker(args) -> int:
    """The worker process: claims the dashboard's queued jobs in every project of the workspace and runs them.

    Stopping it (Ctrl+C, SIGTERM, even kill -9) leaves a running job "interrupted"; the next worker resumes it."""
    from core.workflow.project import workspace_dir
    from core.workflow.worker import run_worker

    if not 0.05 <= args.poll <= 60:
        raise ReactomoError(f"--poll must be from 0.05 to 60 seconds; got {args.poll}.")
    if args.idle_exit is not None and not args.idle_exit >= 0:
        raise ReactomoError(f"--idle-exit must be 0 or more seconds; got {args.idle_exit}.")
    n = run_worker(workspace_dir(), once=args.once, poll_s=args.poll, idle_exit_s=args.idle_exit,
                   say=lambda m: print(m, flush=True))
    print(f"worker stopped after {n} job{'s' if n != 1 else ''}.", flush=True)
    return 0


def cmd_run(args) -> int:
    """The whole workflow without a browser: scribbles -> random forest -> U-Net -> segment -> clean -> check."""
    from core.workflow.run import RunConfig, run_workflow

    if len(args.scribbles) != len(args.label_step):
        raise ReactomoError(f"Give one --label-step for each --scribbles; got {len(args.scribbles)} scribbles files and "
                            f"{len(args.label_step)} steps.")
    config = RunConfig(scans=args.scans, scribbles=args.scribbles[0], label_step=args.label_step[0], out=args.out,
                       more_labels=tuple(zip(args.scribbles[1:], args.label_step[1:])),
                       epochs=args.epochs, device=args.device, seed=args.seed, voxel_size_um=args.voxel_size,
                       interval_s=args.interval, workers=args.workers, scheduler=args.scheduler, clean=not args.no_clean,
                       cleaning=_cleaning_mode(args.min_size, args.no_clean),
                       min_sizes=_min_sizes(args.min_size), rim_px=args.rim_px, context=args.context,
                       tile=args.tile, overlap=args.overlap, batch_size=args.batch, cpu_amp=_precision(args),
                       tta=args.tta, z_sigma=args.z_sigma, loss=args.loss, class_weights=args.class_weights, edge_px=args.edge_px,
                       edge_phases=tuple(_names(args.edge_phases)), thin_examples=_thin(args),
                       soft_labels=args.soft_labels, width=args.width, intensity_augment=bool(args.intensity_augment),
                       partial_volume=_partial_volume(args.partial_volume), temporal=_temporal(args),
                       match_volumes=args.match_volumes,
                       forest_time_context=args.forest_time_context, edge_background=args.edge_background,
                       rings=args.rings, time_context=args.time_context, average_epochs=args.average_epochs,
                       lr_drop=args.lr_drop, train_cpu_amp=_train_precision(args), ensemble=args.ensemble,
                       extra_slices=_extra_slices(args.extra_slices))
    summary = run_workflow(config, on_message=lambda m: print(m, flush=True),
                           on_progress=_progress_printer(args.quiet))
    if summary["internal_standard_error"]:
        check = f"internal standard not computed ({summary['internal_standard_error']})"
    else:
        check = (f"internal standard {summary['inside_band']} of {summary['steps_done']} steps inside ±{summary['band_pct']:g} % "
                 f"(largest deviation {summary['max_abs_deviation_pct']:.2f} %)")
    print(f"Run written to {args.out}: {summary['steps_done']} steps segmented, {check}, {summary['seconds']:.0f} s in all.")
    _print_verdict(summary.get("verdict") or {},
                   f"The analysis was not possible: {summary['internal_standard_error']}" if summary["internal_standard_error"] else "")
    return 0


# ---------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m core", description="Reactomo: phase volumes over time from 4D micro-CT, checked by the reaction's chemistry.")
    p.add_argument("--workspace", help="workspace folder holding the projects (default: ./workspace or $REACTOMO_WORKSPACE)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def demo_options(sp):
        sp.add_argument("--steps", type=int, help="number of time steps (default 10)")
        sp.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="voxels per step (default 40 256 256)")
        sp.add_argument("--seed", type=int, help="random seed (default 0)")
        sp.add_argument("--voxel-size", type=float, help="voxel size in µm (default 2.75)")
        sp.add_argument("--interval", type=float, help="seconds between steps (default 300)")
        sp.add_argument("--imaging", choices=("tomography", "fast"),
                        help="tomography (default): a simulated synchrotron scan of every step (forward projection, "
                             "photon noise, bad detector columns, filtered back projection); fast: noise and rings added "
                             "to the blurred truth (a few seconds)")

    d = sub.add_parser("demo", help="write the demo experiment (scans, truth, scribbles, dataset.json) to a folder")
    d.add_argument("out", help="output folder (new or empty)")
    demo_options(d)
    d.set_defaults(func=cmd_demo)

    dp = sub.add_parser("demo-project", help="create a project holding the demo experiment")
    dp.add_argument("--name", default="demo", help="project name (default: demo)")
    dp.add_argument("--if-missing", action="store_true", help="open the project if it already exists instead of failing")
    demo_options(dp)
    dp.set_defaults(func=cmd_demo_project)

    pr = sub.add_parser("project", help="list, create, show or delete projects")
    pr.add_argument("action", choices=["list", "create", "show", "delete"])
    pr.add_argument("name", nargs="?")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(func=cmd_project)

    da = sub.add_parser("data", help="set a project's scans, times, voxel size, phase table and region (the Data page)")
    da.add_argument("project")
    da.add_argument("--scans", help="a folder, a glob, or a multi-page TIFF; a folder of 2D slices is one step")
    da.add_argument("--voxel-size", type=float, help="voxel size in µm")
    da.add_argument("--interval", type=float, help="seconds between steps (times = step × interval)")
    da.add_argument("--times", help="explicit time of every step in seconds, comma-separated")
    da.add_argument("--roi", type=int, nargs=6, metavar=("Z0", "Z1", "Y0", "Y1", "X0", "X1"), help="region of interest, half-open voxel ranges")
    da.add_argument("--clear-roi", action="store_true", help="use the whole volume")
    da.add_argument("--phases", help="JSON file with the phase table (a list of phases)")
    da.add_argument("--no-check", action="store_true", help="skip the NaN/constant-image check of every step")
    da.add_argument("--rings", choices=("remove", "keep"), default=None,
                    help="ring artefacts: remove (measured on each scan and subtracted before the forest and the "
                         "network read it) or keep; new projects remove them")
    da.add_argument("--condition", action="append", default=[], metavar="KEY=TEXT",
                    help="an experiment condition for the report: sample, temperature, pressure, stress, beamline or "
                         "notes, e.g. --condition 'temperature=120 °C' (empty text clears it); repeatable")
    da.set_defaults(func=cmd_data)

    h = sub.add_parser("histograms", help="grey-value histogram of every step as CSV")
    h.add_argument("project")
    h.add_argument("--bins", type=int, default=256)
    h.add_argument("--out", help="CSV file (default: stdout)")
    h.set_defaults(func=cmd_histograms)

    rf = sub.add_parser("rf", help="random-forest ground truth of every scribbled slice of a scan")
    rf.add_argument("--scan", required=True, help="the scan: a multi-page TIFF or a folder of 2D TIFF slices")
    rf.add_argument("--scribbles", required=True, help="uint8 label TIFF of the same shape (0 = unlabelled)")
    rings_option(rf, "the forest")
    rf.add_argument("--out", required=True, help="output folder: ground_truth.tif, uncertainty.tif, classifier.skops/.json")
    rf.add_argument("--sigmas", help="feature scales in pixels, comma-separated (default 0.7,1,2,4)")
    rf.add_argument("--features", help="feature groups, comma-separated: intensity, gradient, structure, neighbourhood, "
                                       "morphology, edges (default intensity,neighbourhood,edges)")
    rf.add_argument("--trees", type=int, help="number of trees (default 4)")
    rf.add_argument("--depth", type=int, help="tree depth limit, 0 = none (default 12)")
    rf.add_argument("--seed", type=int, help="random seed (default 0)")
    rf.add_argument("--3d", dest="context_3d", action=argparse.BooleanOptionalAction, default=None,
                    help="3D context from neighbouring slices (default on; --no-3d for 2D features)")
    rf.add_argument("--phases", help="JSON file with the phase table (default: gypsum, bassanite, pore, celestite)")
    rf.add_argument("--overwrite", action="store_true", help="replace existing output files")
    rf.set_defaults(func=cmd_rf)

    th = sub.add_parser("threshold", help="threshold baseline: manual grey ranges or multi-Otsu")
    th.add_argument("--scan", required=True, help="the scan: a multi-page TIFF or a folder of 2D TIFF slices")
    th.add_argument("--out", required=True, help="output uint8 label TIFF (same shape as the scan)")
    th.add_argument("--otsu", action="store_true", help="multi-Otsu thresholds, classes mapped to phases by brightness")
    th.add_argument("--range", action="append", nargs=3, metavar=("CODE", "LOW", "HIGH"),
                    help="grey range LOW <= v < HIGH of phase CODE (repeat for every phase)")
    th.add_argument("--order", help="phase codes from darkest to brightest for --otsu (default 3,1,2,4)")
    th.add_argument("--slices-from", help="label TIFF: threshold only its labelled slices (0 elsewhere)")
    th.add_argument("--phases", help="JSON file with the phase table")
    th.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    th.set_defaults(func=cmd_threshold)

    lb = sub.add_parser("labels", help="a project's brushed labels: counts, import/export label TIFFs (the Label page)")
    lb.add_argument("project")
    lb.add_argument("--step", help="time step (index or name) for --import/--export")
    lb.add_argument("--import", dest="import_tiff", metavar="TIFF", help="label TIFF of the step (0 = unlabelled)")
    lb.add_argument("--merge", action="store_true", help="paint the imported labels over the stored ones")
    lb.add_argument("--export", dest="export_tiff", metavar="TIFF", help="write the step's labels as a label TIFF")
    lb.add_argument("--import-demo", action="store_true", help="bring in the demo experiment's scribbles")
    lb.set_defaults(func=cmd_labels)

    gt = sub.add_parser("ground-truth", help="random forest on a project's labels, compared with thresholds (the Ground truth page)")
    gt.add_argument("project")
    gt.add_argument("--step", help="labelled step to learn from (default: the one with most labelled slices)")
    gt.add_argument("--sigmas", help="feature scales in pixels, comma-separated")
    gt.add_argument("--features", help="feature groups, comma-separated")
    gt.add_argument("--trees", type=int)
    gt.add_argument("--seed", type=int)
    gt.add_argument("--3d", dest="context_3d", action=argparse.BooleanOptionalAction, default=None)
    gt.add_argument("--forest-time-context", type=int, default=_forest_time_context(),
                    help="time steps on each side of the labelled step whose scans the forest also reads, when the "
                         "scans are aligned (0 to 3, default %(default)s; the same as `run`)")
    gt.add_argument("--extra-slices", default=None, metavar="auto|all|N",
                    help="unscribbled slices of the step that the forest also labels for the U-Net to train on: a "
                         "count, all, or auto (as many as 3.1 Mpx hold); 0 = none (default %s; the same as "
                         "`run`)" % _extra_slices_default())
    gt.add_argument("--accept", action="store_true", help="accept the result as the project's ground truth")
    gt.add_argument("--accept-only", action="store_true", help="accept the last result without training again")
    gt.set_defaults(func=cmd_ground_truth)

    tr = sub.add_parser("train", help="train a U-Net on a scan and its ground-truth labels; save a model bundle")
    tr.add_argument("--scan", required=True, help="the scan: a multi-page TIFF or a folder of 2D TIFF slices")
    tr.add_argument("--ground-truth", required=True, help="uint8 label TIFF of the same shape (0 = not used)")
    tr.add_argument("--out", required=True, help="new model folder, e.g. models/NAME")
    tr.add_argument("--patch", type=int, default=64, help="patch size in pixels (default 64)")
    tr.add_argument("--stride-ratio", type=float, default=1.0, help="1.0 = side by side, 0.5 = 50 %% overlap")
    tr.add_argument("--batch", type=int, default=16)
    tr.add_argument("--epochs", type=int, default=50, help="maximum epochs, at most 100 (default 50)")
    tr.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (0 = off)")
    tr.add_argument("--val-fraction", type=float, default=0.2)
    tr.add_argument("--no-augment", action="store_true", help="no flips, rotations, shear or scale")
    def unet_options(sp):  # the U-Net's training options, the same on `train` and `run`
        sp.add_argument("--loss", default="ce+dice", help="the U-Net's loss: ce, dice or ce+dice (default ce+dice)")
        sp.add_argument("--class-weights", default="sqrt",
                        help="cross-entropy weights by phase frequency: none, sqrt or balanced (default sqrt)")
        sp.add_argument("--edge-px", type=int, default=0,
                        help="leave the ground truth's labels within this many pixels of a phase boundary out of the "
                             "U-Net's training (the forest never saw an edge; default 0: train on every label)")
        sp.add_argument("--edge-phases", default="",
                        help="with --edge-px, only boundaries touching these phases (comma-separated names, e.g. "
                             "celestite) count as edges (default: every boundary)")
        sp.add_argument("--context", type=int, default=0,
                        help="neighbouring slices on each side given to the U-Net with each slice (default 0: the "
                             "slice alone; 1: three slices, 2.5D)")
        sp.add_argument("--thin-examples", type=float, default=None,
                        help="share of the augmented training patches (0-1) that get thin laths of the product painted "
                             "into the reactant and of the reactant into the product, with the contrast and edge blur "
                             "measured on the labels: thin objects whose labels are right by construction (default "
                             f"{_thin_default()} with augmentation, chosen on the accuracy benchmark's tuning half; 0 "
                             "without)")
        sp.add_argument("--intensity-augment", action="store_true",
                        help="also jitter the training patches' grey values by a random gain and offset (the residual "
                             "drift between steps the normalisation leaves; default off)")
        sp.add_argument("--average-epochs", type=int, default=_average_epochs_default(),
                        help="keep the average of the weights of this many epochs of lowest validation loss, with the "
                             "batch-norm statistics measured again (weight averaging; 0 or 1: the best epoch alone; "
                             "default %(default)s)")
        sp.add_argument("--lr-drop", type=int, default=_lr_drop_default(),
                        help="multiply the learning rate by 0.3 after this many epochs without a lower validation loss "
                             "(0 = a constant learning rate; default %(default)s)")
        sp.add_argument("--train-precision", choices=("auto", "bfloat16", "float32"), default=_train_precision_default(),
                        help="the training's arithmetic on a CPU: auto = bfloat16 where the CPU has it natively "
                             "(AVX-512 BF16/AMX), else float32 (default %(default)s)")
        sp.add_argument("--ensemble", type=int, default=_ensemble_default(),
                        help="U-Nets trained apart (seeds --seed, --seed + 1, ...; the same held-out slices) whose class "
                             "probabilities are averaged when segmenting; each takes a whole training (default "
                             "%(default)s)")
        sp.add_argument("--seed", type=int, default=0)

    unet_options(tr)
    tr.add_argument("--optimizer", default="adam", help="adam, adamw or sgd")
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--width", type=int, default=16, help="channels of the first level")
    tr.add_argument("--depth", type=int, default=4, help="levels of the U-Net")
    tr.add_argument("--device", default="auto", help="auto, cpu or cuda")
    tr.add_argument("--phases", help="JSON file with the phase table (default: gypsum, bassanite, pore, celestite)")
    rings_option(tr, "the network")
    tr.set_defaults(func=cmd_train)

    def inference_options(sp):
        sp.add_argument("--tile", type=int, default=1024, help="tile side in pixels (default 1024: slices up to 1024 x 1024 whole)")
        sp.add_argument("--overlap", type=float, default=0.25, help="tile overlap as a fraction (default 0.25)")
        sp.add_argument("--batch", type=int, default=2, help="tiles per forward pass (default 2)")
        sp.add_argument("--device", default="auto", help="auto, cpu or cuda")
        sp.add_argument("--precision", choices=("auto", "bfloat16", "float32"), default="auto",
                        help="CPU arithmetic: auto (default) = bfloat16 where the CPU has it natively (AVX-512 BF16/AMX), else float32")
        sp.add_argument("--bf16", action="store_true", help="same as --precision bfloat16")
        sp.add_argument("--tta", choices=("none", "flips", "dihedral"), default="none",
                        help="test-time augmentation: average the predictions of the mirrored slices (flips: 4 passes) "
                             "or of the 8 symmetries of the square (dihedral); default none")
        sp.add_argument("--z-sigma", type=float, default=0.7, metavar="SLICES",
                        help="average each slice's class probabilities with its neighbours' by a Gaussian of this "
                             "sigma in slices before labelling (CT noise is independent from slice to slice); 0 = "
                             "off; default 0.7, chosen on the accuracy family's tuning half")
        sp.add_argument("--workers", type=int, default=1, help="Dask workers on this machine (>1 starts a LocalCluster)")
        sp.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://HOST:8786 (or 'local')")
        sp.add_argument("--no-clean", action="store_true", help="no island removal or celestite-rim cleaning")
        sp.add_argument("--min-size", action="append", default=[], metavar="auto|study|PHASE=PX",
                        help="how the cleaning is chosen: auto (default: the model's own, chosen when it was trained by "
                             "agreement with its ground-truth slices, never by the internal standard), study (bassanite "
                             "100 px, pore 8 px, rim 2 px), and/or PHASE=PX to set one phase's smallest island by hand "
                             "(0 = keep all); repeatable")
        sp.add_argument("--rim-px", type=int, default=None, help="width of the false bassanite rim removed around celestite (default: as chosen)")
        sp.add_argument("--voxel-size", type=float, default=None, help="voxel size in µm (for volumes in mm³)")
        sp.add_argument("--interval", type=float, default=None, help="seconds between scans (for time_s; default: interval_s of a dataset.json beside the scans, as the demo writes)")

    se = sub.add_parser("segment", help="segment every scan with a model; label TIFFs and phase_volumes.csv")
    se.add_argument("--model", required=True, help="model bundle folder, e.g. models/demo-unet")
    se.add_argument("--scans", required=True, help="folder, glob or file of the scans (one per time step)")
    se.add_argument("--out", required=True, help="output folder for <scan>.tif, phase_volumes.csv, segmentation.json")
    se.add_argument("--steps", help="only these step numbers, e.g. 0,5,9 (default all)")
    se.add_argument("--phases", help="JSON file with the project's phase table (default: the model's)")
    se.add_argument("--no-resume", action="store_true", help="segment again the steps already done with the same settings")
    se.add_argument("--partial-volume", default="auto",
                    help="phases whose edge is redrawn from the scan by linear unmixing before the cleaning: auto "
                         "(default: the pores, then the inert phases such as celestite), none, or comma-separated "
                         "phase names and the role words pore and inert")
    se.add_argument("--edge-background", choices=("beyond", "nearest"), default=None,
                    help="how the band of a redrawn edge reads the phase around it: beyond (the reactant's and "
                         "products' labels within it taken from the nearest such pixel beyond the band, since a "
                         "grain's blurred rim looks like another phase) or nearest (the classifier's labels kept) "
                         "(default: %s)" % _edge_background_default())
    se.add_argument("--temporal", action=argparse.BooleanOptionalAction, default=None,
                    help="label the steps together: each voxel follows its most probable history among those the reaction allows (the reactant may become the product or pore, nothing turns back); needs aligned scans and the whole series (default: %s)" % ("on" if _temporal_default() else "off"))
    se.add_argument("--match-volumes", action=argparse.BooleanOptionalAction, default=None,
                    help=_MATCH_HELP % ("on" if _match_volumes_default() else "off"))
    inference_options(se)
    se.set_defaults(func=cmd_segment)

    ev = sub.add_parser("evaluate", help="score a label TIFF (or a folder of steps) against a reference: 8 metrics per phase and averaged")
    ev.add_argument("--pred", required=True, help="predicted label TIFF (uint8 codes), or a folder of them (one per step)")
    ev.add_argument("--truth", required=True, help="reference label TIFF of the same shape (0 = not scored), or a folder "
                                                   "with the same file names: then Dice per step and all steps pooled")
    ev.add_argument("--slices", help="only these z slices, e.g. 4,12,20")
    ev.add_argument("--phases", help="JSON file with the phase table (default: gypsum, bassanite, pore, celestite)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.set_defaults(func=cmd_evaluate)

    an = sub.add_parser("analyze", help="internal standard, pore sizes, growth: CSVs and a self-contained HTML report")
    an.add_argument("--segmentations", help="folder of label TIFFs written by `segment` or `run` (with --out)")
    an.add_argument("--out", help="results folder (with --segmentations)")
    an.add_argument("--project", help="or: a project of the workspace, with --name; the analysis goes in the project "
                                      "(analysis/NAME) and is recorded there, as on the Analysis page")
    an.add_argument("--name", help="the project's segmentation to analyse (with --project)")
    an.add_argument("--voxel-size", type=float, default=None, help="voxel size in µm (default: from the segmentation, else 2.75)")
    an.add_argument("--interval", type=float, default=None, help="seconds between steps when the segmentation has no times")
    an.add_argument("--band", type=float, default=2.0, help="internal-standard band in percent (default 2)")
    an.add_argument("--pore-max-voxels", type=int, default=32_000_000, help="pore sizes on a central sub-volume of at most this many voxels (local thickness needs ~8 bytes per voxel: 32 M is ~250 MB and ~1.5 s per step on 2 cores)")
    an.add_argument("--n-boot", type=int, default=500, help="bootstrap resamples of every interval")
    an.add_argument("--seed", type=int, default=0)
    an.add_argument("--onset", choices=("first-step", "fitted"), default="first-step", help="JMAK onset t0: the first step's time (default) or fitted")
    an.add_argument("--phases", help="JSON file with the phase table (default: the segmentation's)")
    an.add_argument("--figures", choices=("png", "svg", "pdf"), default=None,
                    help="also write every chart to OUT/figures/<chart>.<format> with its method under the plot "
                         "(needs Chromium: Debian `apt install chromium`, or BROWSER_PATH). If only this export "
                         "fails, the CSVs and the report stay written and the exit status is 1 (2: nothing done)")
    an.add_argument("--figure-scale", type=float, default=2.0,
                    help="pixel density of PNG figures: 2 gives 2000 px wide images (default 2)")
    an.set_defaults(func=cmd_analyze)

    wa = sub.add_parser("watch", help="beamtime mode: segment each scan as it arrives in a folder, with live checks "
                                      "and alerts")
    wa.add_argument("--scans", required=True, help="the folder the reconstruction writes one scan per step into")
    wa.add_argument("--model", required=True, help="model bundle folder, e.g. models/NAME")
    wa.add_argument("--out", required=True, help="segmentation folder (labels, record, live/ with state, alerts, analysis)")
    wa.add_argument("--complete", choices=("quiet", "rename", "marker", "slices"), default="quiet",
                    help="when a scan counts as complete: unchanged for --quiet-s and fully readable (default), renamed "
                         "from a temporary name, a NAME.done marker beside it, or --slices slices in its folder")
    wa.add_argument("--quiet-s", type=float, default=2.0, help="quiet window in seconds (default 2)")
    wa.add_argument("--slices", type=int, help="slices of a complete scan (with --complete slices)")
    wa.add_argument("--quick", action="store_true",
                    help="keep pace: each scan's central slab first (sized from the measured speed), whole scans after")
    wa.add_argument("--quick-slices", type=int, help="the quick slab's thickness (default: sized from the measured speed)")
    wa.add_argument("--alert-command", help="run this command with each alert's sentence as its last argument")
    wa.add_argument("--band", type=float, default=2.0, help="internal standard band in %% (default 2)")
    wa.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the folder (default 1)")
    wa.add_argument("--once", action="store_true", help="segment what is complete now, then exit")
    wa.add_argument("--idle-exit", type=float, default=None, help="exit after this many seconds with nothing new")
    inference_options(wa)
    wa.set_defaults(func=cmd_watch)

    ru = sub.add_parser("run", help="the whole workflow headless: scribbles -> forest -> U-Net -> segment -> check")
    ru.add_argument("--scans", required=True, help="folder or glob of the scans (one per time step)")
    ru.add_argument("--scribbles", required=True, action="append",
                    help="uint8 label TIFF of brushed phase codes on the label step; repeat it with --label-step for "
                         "more labelled steps (each gets its own forest, the U-Net learns from all)")
    ru.add_argument("--label-step", type=int, required=True, action="append",
                    help="index of the scribbled step (one per --scribbles, in the same order)")
    ru.add_argument("--out", required=True, help="new output folder")
    ru.add_argument("--epochs", type=int, default=40, help="maximum U-Net epochs (default 40)")
    ru.add_argument("--temporal", action=argparse.BooleanOptionalAction, default=None,
                    help="label the steps together: each voxel follows its most probable history among those the "
                         "reaction allows (the reactant may become the product or pore, nothing turns back); needs "
                         "aligned scans (default: %s)" % ("on" if _temporal_default() else "off"))
    ru.add_argument("--match-volumes", action=argparse.BooleanOptionalAction, default=None,
                    help=_MATCH_HELP % ("on" if _match_volumes_default() else "off"))
    ru.add_argument("--forest-time-context", type=int, default=_forest_time_context(),
                    help="time steps on each side of the labelled step whose scans the random forest also reads (the "
                         "same features of the same slices: a thin young lath is thicker a step later, static rings "
                         "are the same at every step); needs aligned scans, else the labelled step alone "
                         "(0 to 3, default %(default)s)")
    unet_options(ru)
    ru.add_argument("--width", type=int, default=16,
                    help="channels of the U-Net's first level (default 16; fewer is faster, e.g. the networks of an "
                         "ensemble)")
    ru.add_argument("--extra-slices", default=None, metavar="auto|all|N",
                    help="unscribbled slices of each labelled step that the random forest also labels for the U-Net "
                         "to train on (spread over the stack; never a held-out slice or its neighbour; each epoch "
                         "draws as many patches as the scribbled slices give, from all of them): a count, all, or "
                         "auto (as many as 3.1 Mpx hold: every slice of a 48 x 256 x 256 scan, fewer of bigger "
                         "slices); 0 = the scribbled slices only (default %s; none with --soft-labels)"
                         % _extra_slices_default())
    ru.add_argument("--soft-labels", type=float, default=_soft_labels_default(),
                    help="soft labels at the reactant/product boundary: the U-Net's training pixels of the pair whose "
                         "forest split (the product's share) lies between S and 1 - S are labelled from that split, "
                         "drawn again every epoch, instead of the forest's guess taught as certain (0 to 0.5; 0 = "
                         "off; default %(default)s)")
    ru.add_argument("--time-context", type=int, default=None,
                    help="time steps on each side whose same slice the U-Net also reads as input channels (each scan "
                         "normalised on its own; needs aligned scans, else the scan itself stands in, as at the "
                         "series' ends); recorded in the model card so `segment` reads the same "
                         "(0 to 3, default %s)" % _time_context_default())
    ru.add_argument("--partial-volume", default="auto",
                    help="phases whose edge is redrawn from the scan by linear unmixing, in the forest's ground truth "
                         "before the U-Net learns it and in the U-Net's labels: auto (default: the pores, then the "
                         "inert phases such as celestite), none, or comma-separated phase names and the role words "
                         "pore and inert")
    ru.add_argument("--edge-background", choices=("beyond", "nearest"), default=None,
                    help="how the band of a redrawn edge reads the phase around it: beyond (the reactant's and "
                         "products' labels within it taken from the nearest such pixel beyond the band, since a "
                         "grain's blurred rim looks like another phase) or nearest (the classifier's labels kept) "
                         "(default: %s)" % _edge_background_default())
    rings_option(ru, "the forest and the network")
    inference_options(ru)
    ru.set_defaults(func=cmd_run)

    rd = sub.add_parser("render", help="3D: phase surfaces of a block of a segmentation, with a PNG, an offline "
                                       "interactive HTML view, .vtp/.ply/.stl in µm and the 3D numbers")
    rd.add_argument("--segmentation", help="label TIFF of one step (with --out)")
    rd.add_argument("--out", help="output folder (with --segmentation)")
    rd.add_argument("--project", help="or: a project of the workspace, with --name and --step; cached in the project "
                                      "(renders/NAME/) as on the 3D page")
    rd.add_argument("--name", help="the project's segmentation (with --project)")
    rd.add_argument("--step", type=int, help="the step to render (with --project)")
    rd.add_argument("--over-time", action="store_true",
                    help="with --project and --name, instead of --step: the 3D numbers of the same block at every "
                         "segmented step (a table, and a CSV cached in the project), without views")
    rd.add_argument("--phases", default="bassanite,pore", help="phases to show, names or codes (default bassanite,pore)")
    rd.add_argument("--block", type=int, nargs=6, metavar=("Z0", "Z1", "Y0", "Y1", "X0", "X1"),
                    help="voxel block, end exclusive (default: a central block of 128 voxels a side × factor)")
    rd.add_argument("--block-um", type=float, nargs=6, metavar=("Z0", "Z1", "Y0", "Y1", "X0", "X1"),
                    help="or the block as a box in µm from the volume's corner")
    rd.add_argument("--factor", type=int, default=1, help="downsampling factor for big scans (default 1)")
    rd.add_argument("--voxel-size", type=float, default=None, help="voxel size in µm (default: the project's, else 2.75)")
    rd.add_argument("--max-triangles", type=int, default=300_000, help="triangle budget of all surfaces (default 300000)")
    rd.add_argument("--grey", help="the scan the labels came from (same shape): adds volume.png, a volume rendering")
    rd.add_argument("--phases-file", help="JSON file with the phase table (default: gypsum, bassanite, pore, celestite)")
    rd.set_defaults(func=cmd_render)

    ex = sub.add_parser("export-labels", help="a segmentation's label volumes as OME-Zarr 0.5 for napari and other "
                                              "OME-NGFF viewers")
    ex.add_argument("segmentation", help="segmentation folder (the --out of segment or run)")
    ex.add_argument("--out", required=True, help="the new LABELS.ome.zarr folder (or LABELS.h5 for one HDF5 file)")
    ex.add_argument("--phases", help="JSON file with the phase table (default: the segmentation's)")
    ex.set_defaults(func=cmd_export_labels)

    xp = sub.add_parser("export", help="a project as one .reactomo.zip (RO-Crate): results, report, labels as OME-Zarr, "
                                       "models, checksums; scans by reference unless --with-scans")
    xp.add_argument("project", help="project name")
    xp.add_argument("--out", required=True, help="the new NAME.reactomo.zip")
    xp.add_argument("--with-scans", action="store_true", help="include the scans (default: referenced by path and checksum)")
    xp.set_defaults(func=cmd_export)

    im = sub.add_parser("import", help="a .reactomo.zip as a new project; a tampered or hostile archive is refused "
                                       "and creates nothing")
    im.add_argument("archive", help="the .reactomo.zip file")
    im.add_argument("--name", required=True, help="name of the new project")
    im.set_defaults(func=cmd_import)

    sh = sub.add_parser("share", help="a read-only link to a project for collaborators on this server; --revoke, "
                                      "--list, or --edit-link on a team server (REACTOMO_TEAM=1)")
    sh.add_argument("project", help="project name")
    g = sh.add_mutually_exclusive_group()
    g.add_argument("--revoke", action="store_true", help="revoke every share link of the project")
    g.add_argument("--list", action="store_true", help="list the live share links")
    g.add_argument("--edit-link", action="store_true", help="print the project's edit link (made on first use)")
    sh.add_argument("--base-url", default="http://127.0.0.1:8501", help="the dashboard's address (default http://127.0.0.1:8501)")
    sh.set_defaults(func=cmd_share)

    wk = sub.add_parser("worker", help="run the dashboard's queued jobs (training, segmentation, analysis, 3D meshing) beside the "
                                       "web server; scripts/app.sh starts it")
    wk.add_argument("--once", action="store_true", help="run what is queued, then exit (default: keep watching)")
    wk.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the queue (default 1)")
    wk.add_argument("--idle-exit", type=float, default=None,
                    help="exit after this many seconds with nothing queued (default: keep running)")
    wk.set_defaults(func=cmd_worker)

    mo = sub.add_parser("models", help="list the model registry")
    mo.add_argument("--root", default="models", help="registry folder (default: models)")
    mo.add_argument("--json", action="store_true")
    mo.set_defaults(func=cmd_models)
    return p


#: The options that name data to read; with ``REACTOMO_DATA_ROOT`` set, each must lie inside a data root.
_DATA_ARGS = ("archive", "scan", "scans", "scribbles", "ground_truth", "pred", "truth", "segmentations", "segmentation", "grey")


def _check_data_roots(args) -> None:
    """On a server whose administrator set ``REACTOMO_DATA_ROOT``, the CLI reads data only from there, as the pages
    do (symbolic links and ``..`` resolved; for a glob, the folder before its first wildcard)."""
    from core.workflow.project import ENV_DATA_ROOT, data_roots

    if not os.environ.get(ENV_DATA_ROOT, "").strip():
        return
    from core.imaging.io import check_inside_roots

    roots = data_roots()
    for name in _DATA_ARGS:
        value = getattr(args, name, None)
        for one in (value if isinstance(value, list) else [value]):  # `run --scribbles` may be given several times
            if not one:
                continue
            text = os.path.expanduser(str(one))
            cut = min((i for i, ch in enumerate(text) if ch in "*?["), default=None)
            if cut is not None:
                text = os.path.dirname(text[:cut]) or "."
            check_inside_roots(text, roots)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        if not args.verbose:  # tifffile logs its own ERROR lines for a file we then refuse with one sentence:
            tl = logging.getLogger("tifffile")  # they still reach core.imaging.io's capture (a handler on this logger),
            tl.propagate = False                # never the terminal
            if not any(isinstance(h, logging.NullHandler) for h in tl.handlers):
                tl.addHandler(logging.NullHandler())
        if args.workspace:
            os.environ["REACTOMO_WORKSPACE"] = str(Path(args.workspace).resolve())
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_USER_ERROR
        _check_data_roots(args)
        return int(args.func(args) or 0)
    except ReactomoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # a full disk, a read-only or vanished folder: one sentence, never a traceback
        from core.errors import filesystem_sentence

        print(f"error: {filesystem_sentence(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
