"""The whole workflow without a browser (``python -m core run``): scribbles -> random forest -> U-Net -> segment.

Stages, each timed and recorded in ``RUNDIR/run.json`` with every parameter, the library versions and
fingerprints of the input files:

1. random-forest ground truth of the scribbled slices of the label step (:func:`core.labelling.forest.ground_truth_from_scribbles`),
   and of more slices of it for the U-Net (``RunConfig.extra_slices``) -> ``RUNDIR/ground_truth.tif``;
2. a U-Net trained on those slices (never validated on the extra ones) (the shipped model's recipe, ``scripts/make_demo_model.sh``; each slice with its
   neighbours as input channels) -> ``RUNDIR/model/``; right after training, the cleaning is chosen from the ground
   truth of the labelled slices alone (:func:`core.network.inference.choose_model_cleaning`) and stored in the model card;
3. every scan segmented and cleaned with it (:func:`core.segmentation.series.segment_series`) -> ``RUNDIR/segmentations/<scan>.tif``,
   ``RUNDIR/phase_volumes.csv``;
4. the analysis (:func:`core.analysis.results.analyze`): the internal standard, pore sizes, growth ->
   ``RUNDIR/molar_evolution.csv``, ``pore_check.csv``, ``inert.csv``, ``pore_sizes.csv``, ``growth.csv``,
   ``summary.json``, ``report.html``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.labelling.forest import TIME_CONTEXT as FOREST_TIME_CONTEXT
from core.labelling.forest import ALL_SLICES, AUTO_SLICES, EXTRA_PIXELS, EXTRA_SLICES, check_extra_memory, extra_slices

from core.atomic import atomic_write_json
from core.errors import ReactomoError

__all__ = ["RunConfig", "run_workflow", "fingerprint", "extra_slices", "EXTRA_SLICES", "ALL_SLICES", "AUTO_SLICES",
           "EXTRA_PIXELS"]


@dataclass(frozen=True)
class RunConfig:
    """Settings of :func:`run_workflow` (the CLI's options)."""

    scans: str
    scribbles: str
    label_step: int
    out: str
    epochs: int = 40
    device: str = "auto"
    seed: int = 0
    voxel_size_um: float | None = None
    interval_s: float | None = None
    workers: int = 1
    scheduler: str | None = None
    clean: bool = True
    cleaning: str = "auto"  # "auto" (chosen from the ground truth of the labelled slices), "study" or "off"
    min_sizes: tuple[tuple[str, int], ...] = ()  # (phase name, px) overriding the chosen island sizes
    rim_px: int | None = None
    tile: int = 1024
    overlap: float = 0.25
    batch_size: int = 2
    cpu_amp: bool | None = None
    tta: str = "none"  # test-time augmentation at inference: "none", "flips" or "dihedral"
    z_sigma: float = 0.7  # slices over which the class probabilities are averaged before labelling (0 = off)
    band: float = 0.02
    width: int = 16
    depth: int = 4
    context: int = 0  # neighbouring slices on each side fed to the U-Net (0 = one slice; 1 = 2.5D, three slices)
    loss: str = "ce+dice"  # the U-Net's loss: "ce", "dice" or "ce+dice"
    class_weights: str = "sqrt"  # cross-entropy weights by phase frequency: "none", "sqrt" or "balanced"
    edge_px: int = 0  # the forest's labels within this many pixels of a phase boundary are not trained on (0 = all)
    edge_phases: tuple[str, ...] = ()  # only boundaries touching these phases count as edges (empty = every boundary)
    # share of the augmented training patches that get thin laths of the product painted into the reactant and of
    # the reactant into the product, with the contrast and edge blur measured on the labels (core.network.train.
    # paint_thin; 0 = off; None = core.network.train.THIN_EXAMPLES)
    thin_examples: float | None = None
    # soft labels at the reactant/product boundary: training pixels of the pair whose forest split (the product's
    # share) lies in [s, 1 - s] are drawn from that split every epoch (core.network.train.draw_soft); 0 = off; None =
    # core.network.train.SOFT_LABELS
    soft_labels: float | None = None
    # also jitter the training patches' grey values by a random gain and offset (core.network.train, "intensity"):
    # the residual drift between steps that the normalisation leaves (off by default)
    intensity_augment: bool = False
    # more labelled steps, as (scribbles TIFF, step index) pairs: each step gets its own forest ground truth and the
    # U-Net learns from all of them (a second labelling at the other end of the reaction, where laths look different)
    more_labels: tuple[tuple[str, int], ...] = ()
    # phases whose edge in the forest's ground truth is redrawn from the scan by linear unmixing before the U-Net
    # learns from it, and in the U-Net's labels (core.labelling.partial_volume): phase names or the role words pore and
    # inert; None = the pores, then the inert phases (the inert phases since 2026-12-06, the pores too since 13:00
    # UTC the same day, each chosen on the accuracy family's tuning half by scores against the truth); () = none
    partial_volume: tuple[str, ...] | None = None
    # how the band of a redrawn edge reads the phase around it (core.labelling.partial_volume.matrix_codes):
    # "beyond" (the reactant's and products' labels there re-read from beyond the band), "nearest" (kept);
    # None = core.labelling.partial_volume.EDGE_BACKGROUND
    edge_background: str | None = None
    # label the steps together along each voxel's most probable history (core.segmentation.temporal; on by default
    # since 2026-12-06, chosen on the accuracy family's tuning half against the truth)
    temporal: bool = True
    # with temporal: each step's split between reactant and product first matched to the network's expected split
    # (core.segmentation.temporal.matched_offsets); None = core.segmentation.temporal.MATCH_VOLUMES
    match_volumes: bool | None = None
    # time steps on each side of a labelled step whose scans the forest also reads (the same features of the same
    # slices; core.labelling.forest.ground_truth_from_scribbles, neighbours) when the scans are aligned; 0 = the
    # labelled step alone
    forest_time_context: int = FOREST_TIME_CONTEXT
    # ring artefacts: "remove" (measured on each scan and subtracted before the forest and the network read it;
    # core.imaging.rings), "keep"; None = core.imaging.rings.RINGS
    rings: str | None = None
    # time steps on each side whose same slice the U-Net also reads as input channels, each scan normalised on its own
    # (the scans must be aligned; a step beyond the series' ends, or of a series that is not aligned, is read as the
    # scan itself, as the network learns from training copies where a neighbour is left out); None =
    # core.network.inference.TIME_CONTEXT. Recorded in the model card's normalisation, so `segment` reads the same.
    time_context: int | None = None
    time_dropout: float = 0.2  # share of the training copies in which each neighbouring step is left out (replaced)
    # the U-Net kept is the average of the weights of this many epochs of lowest validation loss (core.network.train,
    # average_epochs; 0 = the best epoch's; None = core.network.train.AVERAGE_EPOCHS, the default since 2026-12-07)
    average_epochs: int | None = None
    # the learning rate is multiplied by core.network.train.LR_DROP_FACTOR after this many epochs without a lower
    # validation loss (core.network.train, lr_drop_patience; 0 = constant; None = core.network.train.LR_DROP_PATIENCE)
    lr_drop: int | None = None
    # the training's arithmetic on a CPU: None = bfloat16 where native, True = bfloat16, False = float32; "default" =
    # core.network.train.CPU_AMP
    train_cpu_amp: bool | None | str = "default"
    # U-Nets trained apart (seeds seed, seed + 1, ...; the same held-out slices) whose class probabilities are averaged
    # (core.network.train.train_ensemble); None = core.network.train.ENSEMBLE
    ensemble: int | None = None
    # unscribbled slices of each labelled step that the forest also labels and the U-Net trains on, never validated on
    # (extra_slices; each epoch draws as many patches as the scribbled training slices give, from all of them);
    # 0 = none, ALL_SLICES = all, AUTO_SLICES = as many as EXTRA_PIXELS holds; None = EXTRA_SLICES
    extra_slices: int | None = None


def _time_context_steps(scans: list[Any], k: int, reach: int) -> dict[str, Any]:
    """The steps whose scans stand in the U-Net's time channels for step ``k`` (offsets ``-reach .. -1, 1 .. reach``):
    the step itself beyond the series' ends and, for every offset, when the scans around are not aligned."""
    from core.network.inference import time_offsets
    from core.segmentation.temporal import aligned_neighbours

    around = aligned_neighbours(scans, k, reach)
    steps = [min(max(k + o, 0), len(scans) - 1) for o in time_offsets(reach)]
    if not around["applied"]:
        reason = str(around["reason"] or "").replace("the forest to read", "the U-Net to read")
        return {"steps": [k] * len(steps), "reason": reason}
    return {"steps": steps, "reason": None}


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Size, modification time and SHA-256 of the first MiB of a file (or of a folder's first file)."""
    p = Path(path)
    target = p if p.is_file() else next(iter(sorted(q for q in p.iterdir() if q.is_file())), p)
    st = target.stat()
    h = hashlib.sha256()
    if target.is_file():
        with open(target, "rb") as f:
            h.update(f.read(1 << 20))
    return {"path": str(p.resolve()), "bytes": st.st_size, "mtime": int(st.st_mtime), "sha256_first_mib": h.hexdigest()}


def run_workflow(
    config: RunConfig,
    *,
    on_message: Callable[[str], None] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Run every stage and write ``config.out``; returns the summary stored in ``run.json["summary"]``.

    Raises
    ------
    ReactomoError
        Bad inputs (checked before anything is written) or a stage that cannot go on.
    """
    import torch

    from core.network.bundle import save_bundle
    from core.labelling.forest import ForestConfig, ground_truth_from_scribbles
    from core.imaging.io import open_volume, read_labels, write_labels
    from core.imaging.normalise import apply_normalisation, fit_normalisation
    from core.phases import DEFAULT_PHASES, Reaction
    from core.segmentation.postprocess import cleaning
    from core.segmentation.temporal import aligned_neighbours
    from core.network.inference import InferenceConfig, context_slices
    from core.segmentation.series import segment_series, versions
    from core.analysis.results import AnalysisConfig, analyze
    from core.network.train import (AVERAGE_EPOCHS, CPU_AMP, ENSEMBLE, GEOMETRY, LR_DROP_PATIENCE, SOFT_LABELS,
                                    THIN_EXAMPLES, TrainConfig, check_ensemble, soft_split, train_ensemble)
    from core.network.unet import UNetConfig, build_unet, select_device

    say = on_message or (lambda m: None)
    progress = on_progress or (lambda f, m: None)
    t_all = time.perf_counter()
    out = Path(config.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReactomoError(f"The output folder {out} already exists and is not empty; choose a new folder.")
    from core.errors import check_writable

    existed = out.exists()
    check_writable(out, what="the output folder")  # a read-only or vanished disk is said now, not after training
    if not existed:
        out.rmdir()
    from core.imaging.io import discover_scans  # same discovery as `segment`

    scans = [s.path for s in discover_scans(config.scans)]
    if not 0 <= config.label_step < len(scans):
        raise ReactomoError(f"--label-step {config.label_step} is not a step of these {len(scans)} scans; give 0 to {len(scans) - 1}.")
    if not 1 <= config.epochs <= 100:
        raise ReactomoError(f"epochs must be from 1 to 100; got {config.epochs}.")
    phases, reaction = DEFAULT_PHASES, Reaction()
    inference = InferenceConfig(tile=config.tile, overlap=config.overlap, batch_size=config.batch_size, device=config.device,
                                cpu_amp=config.cpu_amp, tta=config.tta, z_sigma=config.z_sigma)
    inference.validate()
    from core.network.inference import TIME_CONTEXT

    tcx = TIME_CONTEXT if config.time_context is None else config.time_context
    if isinstance(tcx, bool) or not isinstance(tcx, int) or not 0 <= tcx <= 3:
        raise ReactomoError(f"The U-Net's time context must be 0 to 3 steps on each side; got {tcx!r}.")
    tc = TrainConfig(patch_size=64, stride_ratio=0.5, batch_size=16, max_epochs=config.epochs, patience=8,
                     val_fraction=0.25, loss=config.loss, class_weights=config.class_weights, optimizer="adam", lr=2e-3,
                     seed=config.seed, edge_px=config.edge_px,
                     edge_codes=tuple(phases.by_name(n).code for n in config.edge_phases),
                     thin_p=THIN_EXAMPLES if config.thin_examples is None else config.thin_examples,
                     thin_pair=(int(reaction.reactant), int(reaction.product)),
                     soft_labels=SOFT_LABELS if config.soft_labels is None else config.soft_labels,
                     transforms=GEOMETRY + (("intensity",) if config.intensity_augment else ()),
                     time_channels=2 * tcx, time_dropout=config.time_dropout if tcx else 0.0,
                     average_epochs=AVERAGE_EPOCHS if config.average_epochs is None else config.average_epochs,
                     lr_drop_patience=LR_DROP_PATIENCE if config.lr_drop is None else config.lr_drop,
                     cpu_amp=CPU_AMP if config.train_cpu_amp == "default" else config.train_cpu_amp)
    members = check_ensemble(ENSEMBLE if config.ensemble is None else config.ensemble, config.seed)  # before any write
    # soft labels need the forest's split of every training pixel, kept for the scribbled slices only: with them the
    # default is no extra slices (said below), and asking for both is refused
    n_extra = ((0 if tc.soft_labels else EXTRA_SLICES) if config.extra_slices is None else config.extra_slices)
    extra_slices(1, [], [], n_extra)  # a bad count is refused here, before any write
    if n_extra and tc.soft_labels:
        raise ReactomoError("Extra slices and soft labels do not go together (the forest's split is kept for the "
                            "scribbled slices only); give --extra-slices 0 with --soft-labels.")
    fcx = config.forest_time_context
    if isinstance(fcx, bool) or not isinstance(fcx, int) or not 0 <= fcx <= 3:
        raise ReactomoError(f"The forest's time context must be 0 to 3 steps on each side; got {fcx!r}.")
    if isinstance(config.context, bool) or not isinstance(config.context, int) or not 0 <= config.context <= 3:
        raise ReactomoError(f"context must be 0 to 3 neighbouring slices on each side; got {config.context!r}.")
    uc = UNetConfig(n_classes=len(phases), width=config.width, depth=config.depth,
                    in_channels=2 * config.context + 1 + 2 * tcx)
    uc.validate()
    fc = ForestConfig(seed=config.seed)
    from core.segmentation.postprocess import CLEANING_MODES

    mode = config.cleaning if config.clean else "off"
    if mode not in CLEANING_MODES:
        raise ReactomoError(f"The cleaning is {mode!r}; use one of {', '.join(CLEANING_MODES)}.")
    cleaning(phases, config.min_sizes, config.rim_px)  # checks the names and sizes before anything is written
    timings: dict[str, float] = {}
    interval, interval_source = config.interval_s, "--interval"
    if interval is None:
        from core.workflow.data import dataset_interval

        found = dataset_interval(config.scans)
        interval, interval_source = (found[0], found[1]) if found else (None, None)
    if interval is None:
        say("   no step times (no --interval, no dataset.json beside the scans): the kinetics (JMAK fit, growth rate) "
            "are left out; the internal standard and pore sizes do not need times")
    else:
        say(f"   step times: every {interval:g} s (from {interval_source})")
    labelled = [(str(config.scribbles), int(config.label_step))] + [(str(p), int(k)) for p, k in config.more_labels]
    seen_steps: set[int] = set()
    for path, k in labelled:
        if not 0 <= k < len(scans):
            raise ReactomoError(f"--label-step {k} is not a step of these {len(scans)} scans; give 0 to {len(scans) - 1}.")
        if k in seen_steps:
            raise ReactomoError(f"Step {k} is labelled twice; give each labelled step one scribbles file.")
        seen_steps.add(k)
    from core.labelling.partial_volume import EDGE_BACKGROUND, matrix_codes, redraw_partial_volume, resolve_codes

    pv_codes = resolve_codes(phases, config.partial_volume)  # an unknown name is refused here, before any write
    from core.imaging.rings import RINGS, check_rings_mode, open_scan, rings_summary

    rings = check_rings_mode(RINGS if config.rings is None else config.rings)  # refused here, before any write
    edge_background = EDGE_BACKGROUND if config.edge_background is None else config.edge_background
    matrix = matrix_codes(phases, edge_background)  # a bad mode is refused here, before any write
    matrix = matrix if pv_codes else []
    # every scribbles file is read and checked before anything is written
    brushed: list[tuple[str, int, np.ndarray, list[int]]] = []
    for i, (path, k) in enumerate(labelled):
        with open_volume(scans[k]) as vol:
            scribbles = read_labels(path, shape=vol.shape, codes=phases.codes)
            if i == 0:
                voxel_size = config.voxel_size_um or vol.voxel_size_um or 2.75
        zs = [int(z) for z in np.flatnonzero(scribbles.reshape(scribbles.shape[0], -1).any(axis=1))]
        if not zs:
            raise ReactomoError(f"The scribbles {path} label no voxel (every value is 0); brush some phases first.")
        present = set(np.unique(scribbles[zs]).tolist()) - {0}
        missing = [p.name for p in phases if p.code not in present]
        if missing and i == 0:
            raise ReactomoError(f"The scribbles have no {', '.join(missing)}; brush every phase at least once.")
        if len(present) < 2:
            raise ReactomoError(f"The scribbles {path} of step {k} hold one phase only; a forest needs two or more.")
        brushed.append((path, k, scribbles, zs))
    # the held-out slices are chosen over the scribbled slices of every labelled step in order (as train_unet splits
    # them), so the extra slices can keep away from them
    from core.network.train import split_slices

    n_scribbled = sum(len(b[3]) for b in brushed)
    held = (split_slices(n_scribbled, val_fraction=tc.val_fraction, seed=tc.held_out_seed)[1] if n_scribbled >= 2
            else [0])
    mores, first = [], 0  # each labelled step's extra slices, chosen (and their memory checked) before any write
    for _, _, scribbles, zs in brushed:
        held_here = [zs[i - first] for i in held if first <= i < first + len(zs)]
        first += len(zs)
        plane = int(scribbles.shape[1]) * int(scribbles.shape[2])
        more = extra_slices(scribbles.shape[0], zs, held_here, n_extra, plane_px=plane) if n_extra else []
        check_extra_memory(len(more), plane, what="--extra-slices")
        mores.append(more)
    out.mkdir(parents=True, exist_ok=True)
    if tc.soft_labels and config.extra_slices is None and EXTRA_SLICES:
        say("   soft labels: the U-Net trains on the scribbled slices only (the forest's split is kept for those)")
    stacks: list[np.ndarray] = []
    extra_images: list[np.ndarray] = []
    extra_labels: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    softs: list[np.ndarray] = []
    forests: list[dict[str, Any]] = []
    time_read: list[dict[str, Any]] = []
    neighbour_norms: dict[int, dict[str, Any]] = {}  # a time context's other steps, each normalised on its own, once
    norm = None
    for i, (path, k, scribbles, zs) in enumerate(brushed):
        # 1. random forest, one per labelled step (each learns the look of its own step)
        say(f"1/4 random forest on {len(zs)} scribbled slices of step {k} ...")
        t0 = time.perf_counter()
        with open_scan(scans[k], rings=rings) as vol:
            scan = vol.read()
            if i == 0:  # one intensity normalisation, the label step's: the same one the model applies to every step
                norm = {**fit_normalisation(vol, seed=config.seed), "rings": rings}
            removed = rings_summary(vol)
        if removed is not None:
            say(f"   ring artefacts of step {k} removed: {removed['pixels_moved_over_100_grey']:,} px of a slice moved by "
                f"over 100 grey, the largest ring {removed['largest_grey']:,.0f} grey")
        around = aligned_neighbours(scans, k, config.forest_time_context)
        if around["applied"]:
            say(f"   the forest also reads step{'s' if len(around['steps']) > 1 else ''} "
                f"{', '.join(str(t) for t in around['steps'])} (the same slices, aligned)")
        elif config.forest_time_context:
            say(f"   the forest reads step {k} alone: {around['reason']}")
        more = mores[i]
        if more:
            say(f"   the forest also labels {len(more)} unscribbled slices of step {k} for the U-Net to train on")
        with contextlib.ExitStack() as opened:
            near = {off: opened.enter_context(open_scan(scans[t], rings=rings))
                    for off, t in zip(around["offsets"], around["steps"])}
            rf = ground_truth_from_scribbles(scan, scribbles, forest_config=fc, phases=phases, neighbours=near,
                                             keep_probabilities=bool(tc.soft_labels), also=more,
                                             on_progress=lambda f, m: progress(0.1 * (i + f) / len(brushed), f"random forest: {m}"))
        timings["random_forest_s"] = timings.get("random_forest_s", 0.0) + time.perf_counter() - t0
        gt, redrawn = rf.labels, []
        for code in pv_codes:  # edges taught from the scan, not from the forest's halo
            gt, pv = redraw_partial_volume(scan, gt, code, slices=sorted(zs + more), matrix=matrix)
            redrawn.append(pv)
            if pv["applied"]:
                around_it = (f", {pv['matrix_relabelled']} px of its band re-read from beyond it" if matrix else "")
                say(f"   {phases.by_code(code).name}'s edge redrawn from the scan: {pv['before']} -> {pv['after']} px "
                    f"on the labelled slices{around_it}")
        write_labels(out / ("ground_truth.tif" if i == 0 else f"ground_truth_step{k}.tif"), gt, voxel_size_um=voxel_size)
        read = _time_context_steps(scans, k, tcx) if tcx else None

        def inputs(where: list[int]) -> np.ndarray:
            """The network's input of these slices: the slice (with its neighbours), and with a time context the
            same slice of the steps around, each normalised on its own (the scan itself where none is)."""
            own = apply_normalisation(context_slices(scan, where, 2 * config.context + 1), norm)
            if not tcx:
                return own
            if own.ndim == 3:
                own = own[:, None]
            extra = []
            for t in read["steps"]:
                if t == k:
                    extra.append(own[:, config.context])
                    continue
                with open_scan(scans[t], rings=rings) as other:
                    if t not in neighbour_norms:  # fitted once per step, reused for the extra slices
                        neighbour_norms[t] = fit_normalisation(other, seed=config.seed)
                    other_norm = neighbour_norms[t]
                    extra.append(apply_normalisation(np.stack([np.asarray(other.slice(0, z)) for z in where]), other_norm))
            return np.concatenate([own, np.stack(extra, axis=1)], axis=1)

        stacks.append(inputs(zs))
        if tcx:
            time_read.append({"step": k, **read})
            say(f"   the U-Net also reads step{'s' if len(set(read['steps']) - {k}) != 1 else ''} "
                f"{', '.join(str(t) for t in read['steps'] if t != k) or 'none'} beside step {k}"
                + (f" ({read['reason']})" if read["reason"] else ""))
        targets.append(gt[zs])
        if more:
            extra_images.append(inputs(more))
            extra_labels.append(gt[more])
        if tc.soft_labels:  # the forest's own split between reactant and product; the brushed pixels stay as brushed
            softs.append(soft_split(rf.probabilities, rf.forest.classes, (int(reaction.reactant), int(reaction.product)),
                                    keep=scribbles[list(rf.slices)] != 0))
        forests.append({"step": k, "scribbles": fingerprint(path), "slices": zs, "extra_slices": more, "rings_removed": removed,
                        "fractions": {str(c): v for c, v in rf.fractions.items()}, "partial_volume": redrawn,
                        "time_context": around})
        del scan, rf
    zs = forests[0]["slices"]
    images = np.concatenate(stacks) if len(stacks) > 1 else stacks[0]
    gt_labels = np.concatenate(targets) if len(targets) > 1 else targets[0]
    soft = (np.concatenate(softs) if len(softs) > 1 else softs[0]) if softs else None
    extra = (np.concatenate(extra_images), np.concatenate(extra_labels)) if extra_images else None
    del stacks, targets, softs, extra_images, extra_labels
    # 2. U-Net
    if members > 1:
        say(f"2/4 {members} U-Nets (seeds {config.seed} to {config.seed + members - 1}, probabilities averaged), up to "
            f"{config.epochs} epochs each on {select_device(config.device)} ...")
    else:
        say(f"2/4 U-Net, up to {config.epochs} epochs on {select_device(config.device)} ...")
    t0 = time.perf_counter()

    def on_epoch(h: dict) -> None:
        who = f"net {h['member']} " if members > 1 else ""
        say(f"   {who}epoch {h['epoch']:3d}  train {h['train_loss']:.4f}  val {h['val_loss']:.4f}  ({h['seconds']:.1f} s)")

    trained = train_ensemble(lambda: build_unet(uc), images, gt_labels, members=members, config=tc, phases=phases,
                             device=config.device, on_epoch=on_epoch, soft=soft, extra=extra,
                             on_progress=lambda f, m: progress(0.1 + 0.5 * f, f"U-Net: {m}"))
    model, result = trained.model, trained.members[0]
    timings["train_s"] = time.perf_counter() - t0
    best = {**result.kept, "val_dice": trained.val_dice}  # the weights saved, validated on the held-out slices
    from core.network.train import averaged_sentence

    for i, r in enumerate(trained.members):
        if r.averaged:
            say(f"   {'network ' + str(i + 1) + ': ' if members > 1 else ''}{averaged_sentence(r)}")
    if members > 1:
        from core.network.train import dice_text

        say("   averaged network on the held-out slices: Dice "
            + ", ".join(f"{n} {dice_text(v)}" for n, v in trained.val_dice.items() if v is not None))
    from core.network.train import quality_warning

    poor = quality_warning(best["val_dice"])  # never called a success: said here, kept in run.json
    if poor:
        say(f"   warning: {poor}")
    # the cleaning, chosen from the ground truth of the held-out labelled slices only (never from the internal standard)
    from core.segmentation.postprocess import cleaning_for
    from core.network.inference import choose_model_cleaning
    from core.network.train import held_out

    xv, yv, where = held_out(images, gt_labels, tc)  # scored where the network never trained
    choice = choose_model_cleaning(model, xv, yv, phases=phases, class_codes=phases.codes, device=config.device,
                                   where=where, tta=config.tta)
    post, cleaning_why = cleaning_for(mode, phases, {"cleaning": choice.to_dict(phases)}, min_sizes=config.min_sizes,
                                      rim_px=config.rim_px)
    say(f"   cleaning: {cleaning_why}")
    # every network of an ensemble: its seed, epochs, validation (the first's history is the card's "history")
    from core.network.train import member_records as records

    member_records = records(trained)
    model_dir = save_bundle(out / "model", model, config=uc, phases=phases,
                            normalisation={**norm, **({"time_context": tcx} if tcx else {})},
                            training={"config": tc.to_dict(), "device": result.device, "precision": result.precision,
                                      "history": result.history,
                          **({"thin_examples": result.thin} if result.thin else {}),
                          **({"soft_labels": result.soft} if result.soft else {}),
                          **({"members": member_records} if members > 1 else {})},
                            provenance={"scan": fingerprint(scans[config.label_step]), "ground_truth": "random forest of the scribbles",
                                        "scribbles": fingerprint(config.scribbles), "slices": zs, "step": config.label_step,
                                        "labelled_steps": [{"step": f["step"], "slices": f["slices"]} for f in forests]},
                            metrics={"best_epoch": result.best_epoch, "val_loss": best["val_loss"], "val_dice": best["val_dice"],
                                     **({"networks": members} if members > 1 else {}),
                                     "epochs": len(result.history), "stopped_early": result.stopped_early,
                                     **({"averaged_epochs": result.averaged_epochs} if result.averaged_epochs else {}),
                         **({"averaging": result.averaged} if result.averaged else {}),
                                     "seconds": result.seconds},
                            seed=config.seed, cleaning=choice.to_dict(phases), ensemble_seeds=trained.seeds if members > 1 else None)
    # 3. segment every step
    say(f"3/4 segmenting {len(scans)} steps ...")
    t0 = time.perf_counter()
    times = [i * interval for i in range(len(scans))] if interval is not None else None
    series = segment_series(model_dir, scans, out / "segmentations", phases=phases, times_s=times, voxel_size_um=voxel_size,
                            inference=inference, postprocess=post, cleaning_source=cleaning_why,
                            partial_volume=pv_codes, temporal=config.temporal, edge_background=edge_background,
                            match_volumes=config.match_volumes,
                            scheduler=config.scheduler, workers=config.workers,
                            on_progress=lambda f, m: progress(0.6 + 0.38 * f, f"segment: {m}"),
                            on_step=lambda o: say(f"   step {o.step:3d} {o.status} {o.error}".rstrip()))
    timings["segment_s"] = time.perf_counter() - t0
    together = series.record.get("temporal") or {}
    if together:
        from core.segmentation.temporal import describe

        say(f"   {describe(together)}")
    shutil.copyfile(out / "segmentations" / "phase_volumes.csv", out / "phase_volumes.csv")
    if series.failed:
        raise ReactomoError(f"{len(series.failed)} step(s) failed to segment ({', '.join(str(o.step) for o in series.failed)}); "
                            f"the first: {series.failed[0].error}")
    # 4. analysis: the internal standard, pore sizes, growth (core.analysis.results), report.html
    say("4/4 analysis: internal standard, pore sizes, growth ...")
    t0 = time.perf_counter()
    check_error = ""
    rows: list[dict] = []
    verdict: dict = {}
    try:
        analysis = analyze(out / "segmentations", out, config=AnalysisConfig(voxel_size_um=voxel_size, interval_s=interval,
                                                                           band=config.band, seed=config.seed),
                         phases=phases, reaction=reaction, on_progress=lambda f, m: progress(0.98 + 0.02 * f, f"analysis: {m}"),
                         extra={"run": str(out)})
        rows, verdict = analysis["rows"], analysis["summary"]["verdict"]
    except ReactomoError as exc:  # e.g. a model that finds no reactant: the run is kept, the check says why it failed
        check_error = str(exc)
        say(f"   analysis not possible: {check_error}")
    timings["analysis_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all
    summary = {"steps_done": len(series.done), "inside_band": sum(r["inside_band"] for r in rows), "band_pct": 100 * config.band,
               "max_abs_deviation_pct": max((abs(r["deviation_pct"]) for r in rows), default=None),
               "internal_standard_error": check_error, "seconds": timings["total_s"],
               # the verdict over every check (None when the analysis was not possible)
               "verdict_passed": verdict.get("passed"), "failed_checks": list(verdict.get("failed") or []),
               "verdict_sentence": verdict.get("sentence", "")}
    atomic_write_json(out / "run.json", {
        "format": "reactomo.run", "format_version": 1, "config": asdict(config), "voxel_size_um": voxel_size,
        "interval_s": interval, "interval_source": interval_source,
        "versions": versions(), "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "inputs": {"scans": [fingerprint(s) for s in scans], "scribbles": fingerprint(config.scribbles),
                   "more_scribbles": [f["scribbles"] for f in forests[1:]]},
        "random_forest": {"config": asdict(fc), "slices": zs, "fractions": forests[0]["fractions"],
                          "steps": forests},
        # the phases whose edges were redrawn, in order, as codes and names (config.partial_volume None = the default)
        # and how their bands read the phase around them (the matrix phases re-read from beyond the band, or none)
        # how many unscribbled slices of each labelled step the U-Net also trained on (the slices are in
        # random_forest.steps[].extra_slices): the count resolved from config.extra_slices (-1 all, -2 auto)
        "extra_slices": {"count": n_extra, "auto_pixels": EXTRA_PIXELS},
        "partial_volume": {"codes": pv_codes, "phases": [phases.by_code(c).name for c in pv_codes],
                           "edge_background": edge_background if pv_codes else None, "matrix": matrix},
        "unet": {"config": uc.to_dict(), "train": tc.to_dict(), "time_context": {"reach": tcx, "training": time_read}, "device": result.device,
                 "precision": result.precision, "best_epoch": result.best_epoch,
                 "epochs": len(result.history), "val_dice": best["val_dice"], "quality_warning": poor,
                 "averaged": result.averaged,
                 "ensemble": {"members": members, "seeds": trained.seeds,
                              "networks": [{k: v for k, v in m.items() if k != "history"} for m in member_records],
                              "val_dice_held_out": trained.val_dice}},
        "cleaning": {"mode": mode, "used": post.to_dict() if post is not None else None, "sentence": cleaning_why,
                     "chosen_from_ground_truth": choice.to_dict(phases),
                     "independent_of": "the internal standard and every other check of the reaction (not looked at)"},
        # ring artefacts: removed from every scan before the forest and the network read it, or kept (the mode is in
        # the model card's normalisation too, so `segment` reads new scans the same way)
        "rings": {"mode": rings, "label_step": forests[0].get("rings_removed")},
        "segmentation": series.record, "internal_standard": rows, "verdict": verdict, "summary": summary,
    })
    progress(1.0, "done")
    return {**summary, "verdict": verdict}  # the caller prints every check; run.json keeps the verdict once
