"""The Train step for a project: a U-Net trained on the project's accepted ground truth, saved as a model bundle.

One step, one name: ``pages/4_Train.py`` (as a job in the worker), ``python -m core train`` (on files) and this
module. The training itself is :func:`core.network.train.train_unet`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import ReactomoError
from core.network.train import ENSEMBLE, TrainConfig, held_out, member_records, train_ensemble
from core.network.unet import UNetConfig, build_unet

__all__ = ["train_project_model"]


def _fingerprint(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": path}
    h = hashlib.sha256()
    if p.is_file():
        with open(p, "rb") as f:
            h.update(f.read(1 << 20))
    return {"path": path, "bytes": st.st_size, "mtime": int(st.st_mtime), "sha256_first_mib": h.hexdigest()}


def train_project_model(
    project,
    *,
    name: str,
    unet_config: UNetConfig | None = None,
    train_config: TrainConfig | None = None,
    device: str = "auto",
    models_root: str | os.PathLike = "models",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    members: int = ENSEMBLE,
) -> Path:
    """Train a U-Net on the project's accepted ground truth and save it as the bundle ``models_root/name``.

    The images are the ground-truth slices of their step, normalised with :func:`core.imaging.normalise.fit_normalisation`
    of that step, and the slices the forest labelled beyond the scribbled ones (``extra_slices`` of the ground
    truth; those beside a held-out slice left out), trained on and never validated on
    (:func:`core.network.train.train_unet`, ``extra``). The bundle's card holds the normalisation, the training settings and history, the provenance
    (project, step, slices, scan fingerprints) and the validation metrics; a record is appended to the project
    manifest's ``models`` list. With ``members`` > 1 that many networks are trained apart (seeds ``seed``, ``seed + 1``,
    ...; one validation split) and saved as one ensemble whose probabilities are averaged
    (:func:`core.network.train.train_ensemble`).

    Returns
    -------
    Path
        The bundle folder.

    Raises
    ------
    ReactomoError
        No accepted ground truth, a bad or taken name, bad settings.
    """
    from core.network.bundle import check_bundle_name, save_bundle
    from core.workflow.ground_truth import load_accepted
    from core.imaging.normalise import apply_normalisation, fit_normalisation

    check_bundle_name(name)
    folder = Path(models_root) / name
    if folder.exists():
        raise ReactomoError(f"A model called '{name}' already exists in {folder.parent}; choose another name.")
    stored = load_accepted(project)
    if stored is None:
        raise ReactomoError("This project has no accepted ground truth yet; accept one on the Ground truth page first.")
    phases = project.phases()
    train_config = train_config or TrainConfig()
    unet_config = replace(unet_config or UNetConfig(), n_classes=len(phases))
    from core.network.inference import context_slices

    from core.network.train import split_slices

    # the forest's extra slices, but none beside a slice the training holds out (as `run` chooses them)
    n = len(stored.slices)
    held = [stored.slices[i] for i in split_slices(n, val_fraction=train_config.val_fraction,
                                                   seed=train_config.held_out_seed)[1]] if n >= 2 else list(stored.slices)
    near = {z + d for z in held for d in (-1, 0, 1)}
    keep = [i for i, z in enumerate(stored.extra_slices) if z not in near]
    more = [stored.extra_slices[i] for i in keep]
    with project.open_step(stored.step) as vol:
        norm = {**fit_normalisation(vol, seed=train_config.seed), "rings": project.rings()}  # segment reads scans so too
        raw = context_slices(vol, stored.slices, unet_config.in_channels)
        raw_more = context_slices(vol, more, unet_config.in_channels) if more else None
    images = apply_normalisation(raw, norm)
    extra = (apply_normalisation(raw_more, norm), stored.extra_labels[keep]) if more else None
    trained = train_ensemble(lambda: build_unet(unet_config), images, stored.labels, members=members,
                             config=train_config, phases=phases, device=device, on_epoch=on_epoch,
                             on_progress=on_progress, should_stop=should_stop, checkpoint_dir=checkpoint_dir,
                             resume=resume, extra=extra)
    model, result = trained.model, trained.members[0]
    if not result.history:
        raise ReactomoError("Training was stopped before the first epoch; nothing was saved.")
    n = len(trained.members)  # fewer than asked when stopped: the networks trained so far are kept, as one is
    scan = project.scans()[stored.step]
    best = {**result.kept, "val_dice": trained.val_dice}  # the saved weights' validation (the averaged network's)
    metrics = {"best_epoch": result.best_epoch, "val_loss": best["val_loss"], "val_dice": best["val_dice"],
               "epochs": len(result.history), "stopped_early": result.stopped_early, "cancelled": trained.cancelled,
               "seconds": trained.seconds, **({"averaged_epochs": result.averaged_epochs} if result.averaged_epochs else {}),
                         **({"averaging": result.averaged} if result.averaged else {}),
               **({"networks": n} if n > 1 else {}), **({"networks_asked": members} if n < members else {})}
    training = {"config": train_config.to_dict(), "device": result.device, "precision": result.precision,
                "history": result.history,
                **({"thin_examples": result.thin} if result.thin else {}),
                **({"members": member_records(trained)} if n > 1 else {})}
    provenance = {"project": project.name, "step": stored.step, "step_name": stored.step_name,
                  "slices": list(stored.slices), "extra_slices": more,
                  "ground_truth": stored.meta.get("kind", "random forest"),
                  "scan": _fingerprint(str(project.scan_path(stored.step))), "scan_shape": list(scan.shape)}
    from core.network.inference import choose_model_cleaning

    xv, yv, where = held_out(images, stored.labels, train_config)
    choice = choose_model_cleaning(model, xv, yv, phases=phases, class_codes=phases.codes, device=device, where=where)
    path = save_bundle(folder, model, config=unet_config, phases=phases, normalisation=norm, training=training,
                       provenance=provenance, metrics=metrics, seed=train_config.seed, cleaning=choice.to_dict(phases),
                       ensemble_seeds=trained.seeds if n > 1 else None)
    record = {"name": name, "path": str(Path(path).resolve()), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "step": stored.step, "slices": list(stored.slices), "val_loss": best["val_loss"], "val_dice": best["val_dice"],
              "cancelled": bool(trained.cancelled)}
    project.update(lambda m: m.setdefault("models", []).append(record))
    return path
