"""Model bundles: a trained U-Net saved as a folder the registry can list, load, rename and delete.

A bundle is a folder ``models/NAME/`` holding

- ``weights.safetensors``: the model's state dict (:func:`safetensors.torch.save_file`); loading never unpickles.
- ``card.json``: everything needed to use and judge the model::

    {"format": "reactomo.unet", "format_version": 1, "name": ..., "created": ISO-8601 UTC,
     "unet": UNetConfig.to_dict(), "phases": PhaseTable.to_dict(), "class_codes": [code of output 0, 1, ...],
     "normalisation": {...}, "training": {...}, "provenance": {...}, "metrics": {...},
     "versions": {"torch", "numpy", "safetensors", "reactomo", "cpu", "cpu_capability"}, "seed": int,
     "weights_sha256": hex digest of weights.safetensors}

  An ensemble (:class:`core.network.unet.UNetEnsemble`, several networks of one config whose probabilities are
  averaged) adds ``"ensemble": {"members": n, "seeds": [...]}`` and holds every member's tensors under
  ``members.<i>.``; its card has ``format_version`` 2, so a Reactomo that cannot average networks refuses it by
  its version instead of failing on the tensors. A single network's card keeps version 1.

The normalisation, training, provenance and metrics dicts are opaque here: they are stored as the trainer gives
them (they must be JSON-able). A bundle is written into a hidden temporary folder and renamed into place, so a
half-written bundle never appears under its name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
from safetensors.torch import load_file, save_file

import core
from core.atomic import atomic_write_json, move_to_trash
from core.errors import ReactomoError
from core.network.hardware import machine
from core.phases import PhaseTable
from core.network.unet import UNet, UNetConfig, UNetEnsemble, members_of

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "BundleSummary",
    "save_bundle",
    "load_bundle",
    "read_card",
    "list_bundles",
    "rename_bundle",
    "delete_bundle",
    "check_bundle_name",
    "ensemble_members",
]

log = logging.getLogger(__name__)

FORMAT = "reactomo.unet"
FORMAT_VERSION = 2  # the newest this Reactomo reads and writes (2: an ensemble; a single network is still written as 1)
WEIGHTS = "weights.safetensors"
CARD = "card.json"
TRASH = ".trash"


def _read_umask() -> int:
    # Read once at import (os.umask can only be read by setting it), before any worker threads exist.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_bundle_name(name: str) -> str:
    """Return ``name`` if it is a safe bundle name, else raise :class:`ReactomoError`.

    A name is 1-100 characters of letters, digits, ``-``, ``_`` and ``.``, starting with a letter or digit (so no
    hidden folders, no ``..`` and no path separators).
    """
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ReactomoError(
            f"Model name {name!r} is not allowed; use 1-100 letters, digits, '-', '_' or '.', starting with a letter "
            f"or digit, e.g. 'demo-unet_v2'."
        )
    return name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _phase_key(phases: PhaseTable) -> list[tuple[int, str]]:
    # Codes and names decide compatibility; colours and constants may be edited without retraining.
    return [(p.code, p.name.strip().lower()) for p in phases]


def _describe(phases: PhaseTable) -> str:
    return "[" + ", ".join(f"{p.code} {p.name}" for p in phases) + "]"


def _check_fits(state: dict[str, torch.Tensor], config: UNetConfig, *, what: str, members: int = 1) -> None:
    """Raise unless ``state`` has exactly the tensor names and shapes of a UNet built from ``config`` (of an ensemble
    of ``members`` of them when ``members`` > 1)."""
    one = {k: tuple(v.shape) for k, v in UNet(config).state_dict().items()}
    expected = one if members == 1 else {f"members.{i}.{k}": v for i in range(members) for k, v in one.items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or extra or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if extra:
            detail.append(f"{len(extra)} unexpected (e.g. {extra[0]!r})")
        if wrong:
            detail.append(f"{len(wrong)} of the wrong shape (e.g. {wrong[0]!r}: {got[wrong[0]]} instead of {expected[wrong[0]]})")
        raise ReactomoError(
            f"The {what} do not fit the U-Net config {config.to_dict()}: tensors {', '.join(detail)}; "
            f"save the model with the config it was built from."
        )


@dataclass(frozen=True)
class BundleSummary:
    """One line of the model registry.

    Attributes
    ----------
    name : str
        Folder name under the registry root.
    created : str
        ISO-8601 UTC time the bundle was saved.
    n_classes : int
        Number of output classes (phases).
    phases : tuple of str
        Phase names in output order.
    metrics : dict
        Validation metrics as the trainer stored them.
    size_bytes : int
        Total size of the bundle's files.
    cleaning : dict
        The cleaning chosen for the model from its ground truth (``card["cleaning"]``), or {} for a model saved
        without one.
    members : int
        Networks whose probabilities the model averages (1 for a single U-Net).
    rings : {"remove", "keep"}
        How the model reads a scan's ring artefacts, as it was trained (``card["normalisation"]["rings"]``; "keep"
        for models made before ring removal).
    """

    name: str
    created: str
    n_classes: int
    phases: tuple[str, ...]
    metrics: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    size_bytes: int = 0
    cleaning: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    members: int = 1
    rings: str = "keep"


def save_bundle(
    folder: str | os.PathLike,
    model: torch.nn.Module,
    *,
    config: UNetConfig,
    phases: PhaseTable,
    normalisation: dict[str, Any],
    training: dict[str, Any],
    provenance: dict[str, Any],
    metrics: dict[str, Any],
    seed: int,
    overwrite: bool = False,
    cleaning: dict[str, Any] | None = None,
    ensemble_seeds: list[int] | None = None,
) -> Path:
    """Save ``model`` and its card as the bundle folder ``folder`` (e.g. ``models/demo``).

    Parameters
    ----------
    folder : path-like
        The bundle folder; its name must pass :func:`check_bundle_name`. Its parent is created if missing.
    model : torch.nn.Module
        A :class:`UNet` (or any module with the same state dict) built from ``config``, or a
        :class:`UNetEnsemble` of such networks (saved with every member; the card gets ``"ensemble"``).
    config : UNetConfig
        The architecture; ``config.n_classes`` must equal ``len(phases)``.
    phases : PhaseTable
        Phase table the model was trained for; output class ``i`` is ``phases.codes[i]``.
    normalisation, training, provenance, metrics : dict
        JSON-able dicts stored verbatim in the card.
    seed : int
        Seed the training run used.
    overwrite : bool
        Replace an existing bundle of that name (default: refuse).
    cleaning : dict, optional
        The cleaning chosen for this model from its own ground truth (:meth:`core.segmentation.postprocess.CleaningChoice.to_dict`),
        stored as ``card["cleaning"]``; segmentation with the automatic cleaning uses it.
    ensemble_seeds : list of int, optional
        For an ensemble, the seed each member was trained with (default ``seed, seed + 1, ...``).

    Returns
    -------
    Path
        The bundle folder.

    Raises
    ------
    ReactomoError
        Bad name, existing bundle without ``overwrite``, config/phase mismatch, weights that do not fit the
        config, or card fields that are not JSON-able.
    """
    folder = Path(folder)
    name = check_bundle_name(folder.name)
    if not isinstance(config, UNetConfig):
        raise ReactomoError(f"save_bundle needs a UNetConfig as config; got {type(config).__name__}.")
    if not isinstance(phases, PhaseTable):
        raise ReactomoError(f"save_bundle needs a PhaseTable as phases; got {type(phases).__name__}.")
    if config.n_classes != len(phases):
        raise ReactomoError(
            f"The U-Net has {config.n_classes} output classes but the phase table has {len(phases)} phases "
            f"{_describe(phases)}; build the network with n_classes={len(phases)}."
        )
    for label, d in (("normalisation", normalisation), ("training", training), ("provenance", provenance), ("metrics", metrics)):
        if not isinstance(d, dict):
            raise ReactomoError(f"The bundle's {label} must be a dict; got {type(d).__name__}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ReactomoError(f"The bundle's seed must be an integer; got {seed!r}.")
    if folder.exists() and not overwrite:
        raise ReactomoError(f"A model called '{name}' already exists in {folder.parent}; choose another name or pass overwrite=True.")

    members = members_of(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _check_fits(state, config, what="model's weights", members=members)
    card: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if members > 1 else 1,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "unet": config.to_dict(),
        "phases": phases.to_dict(),
        "class_codes": list(phases.codes),
        "normalisation": normalisation,
        "training": training,
        "provenance": provenance,
        "metrics": metrics,
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "safetensors": safetensors.__version__,
            "reactomo": core.__version__,
            **{k: v for k, v in machine().items() if k in ("cpu", "cpu_capability")},
        },
        "seed": int(seed),
    }
    if members > 1:
        seeds = ensemble_seeds if ensemble_seeds is not None else [int(seed) + i for i in range(members)]
        if len(seeds) != members or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in seeds):
            raise ReactomoError(f"The ensemble has {members} networks but its seeds are {seeds!r}; give one integer per network.")
        card["ensemble"] = {"members": members, "seeds": [int(v) for v in seeds]}
    if cleaning is not None:
        if not isinstance(cleaning, dict):
            raise ReactomoError(f"The bundle's cleaning must be a dict; got {type(cleaning).__name__}.")
        card["cleaning"] = cleaning
    try:
        json.dumps(card, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ReactomoError(f"The model card cannot be written as JSON ({exc}); pass plain numbers, strings, lists and dicts.") from None

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=folder.parent))
    try:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        card["weights_sha256"] = _sha256(tmp / WEIGHTS)
        atomic_write_json(tmp / CARD, card)
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the folder a plain mkdir's permissions
        if folder.exists():
            # Move the old bundle aside first so the name always holds one whole bundle.
            aside = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=folder.parent))
            os.rmdir(aside)
            os.replace(folder, aside)
            os.replace(tmp, folder)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved model bundle %s (%d classes)", folder, config.n_classes)
    return folder


def read_card(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked card of the bundle ``folder`` (format, version and fields; weights are not read).

    Raises
    ------
    ReactomoError
        Missing or unreadable card, another format, or a newer ``format_version`` than this Reactomo reads.
    """
    folder = Path(folder)
    path = folder / CARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReactomoError(f"{folder} is not a model bundle: it has no {CARD}; pick a folder saved by Reactomo's trainer.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReactomoError(f"The model card {path} cannot be read ({exc}); re-save or re-train the model.") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        got = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise ReactomoError(f"{path} has format {got!r}, not {FORMAT!r}; pick a model bundle saved by Reactomo.")
    version = card.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ReactomoError(f"{path} has format_version {version!r}; a Reactomo model card has a positive integer version.")
    if version > FORMAT_VERSION:
        raise ReactomoError(
            f"The model {folder.name} has card format_version {version}, newer than the {FORMAT_VERSION} this "
            f"Reactomo reads; update Reactomo to load it."
        )
    needed = ("unet", "phases", "class_codes", "weights_sha256")
    missing = [k for k in needed if k not in card]
    if missing:
        raise ReactomoError(f"The model card {path} lacks {missing}; re-save the model with Reactomo's trainer.")
    return card


def load_bundle(
    folder: str | os.PathLike, *, phases: PhaseTable | None = None, device: str | torch.device = "cpu"
) -> tuple[UNet, dict[str, Any]]:
    """Load a bundle's network (in eval mode) and its card, never unpickling anything.

    Parameters
    ----------
    folder : path-like
        The bundle folder.
    phases : PhaseTable, optional
        The project's phase table; when given, the model must have been trained for the same codes and names
        in the same order.
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    model : UNet or UNetEnsemble
        In eval mode on ``device`` (an ensemble when the card says ``"ensemble"``); output class ``i`` is phase code ``card["class_codes"][i]``.
    card : dict
        The model card (see the module docstring).

    Raises
    ------
    ReactomoError
        Missing/unreadable card, other format, newer format_version, checksum mismatch (tampered or damaged
        weights), weights that do not fit the config, or a different phase table.
    """
    folder = Path(folder)
    card = read_card(folder)
    config = UNetConfig.from_dict(card["unet"])
    trained = PhaseTable.from_dict(card["phases"])
    if list(card["class_codes"]) != list(trained.codes) or config.n_classes != len(trained):
        raise ReactomoError(
            f"The model card of {folder.name} is inconsistent: class codes {card['class_codes']} and "
            f"{config.n_classes} classes for phases {_describe(trained)}; re-save the model."
        )
    if phases is not None and _phase_key(phases) != _phase_key(trained):
        raise ReactomoError(
            f"This model was trained for phases {_describe(trained)} but the project has {_describe(phases)}; "
            f"use a model trained for this phase table or retrain."
        )
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ReactomoError(f"The model {folder.name} has no {WEIGHTS}; the bundle is incomplete, re-save it.")
    digest = _sha256(weights)
    if digest != card["weights_sha256"]:
        raise ReactomoError(
            f"The weights of model {folder.name} do not match their checksum in the card (SHA-256 {digest[:12]}... "
            f"instead of {str(card['weights_sha256'])[:12]}...), so they were changed or damaged; re-save or re-train it."
        )
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise ReactomoError(f"The weights file {weights} cannot be read as safetensors ({exc}); re-save the model.") from None
    members = ensemble_members(card)
    _check_fits(state, config, what=f"weights of model {folder.name}", members=members)
    model = UNet(config) if members == 1 else UNetEnsemble([UNet(config) for _ in range(members)])
    model.load_state_dict(state, strict=True)
    model.to(torch.device(device)).eval()
    log.info("loaded model bundle %s on %s", folder, device)
    return model, card


def ensemble_members(card: dict[str, Any]) -> int:
    """How many networks a bundle averages: its card's ``ensemble.members`` (1 for a single network)."""
    spec = card.get("ensemble")
    if spec is None:
        return 1
    n = spec.get("members") if isinstance(spec, dict) else None
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 16:
        raise ReactomoError(f"The model card's ensemble is {spec!r}; it must say how many networks it averages (2 to 16).")
    return n


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def list_bundles(root: str | os.PathLike) -> list[BundleSummary]:
    """Summaries of the bundles under ``root``, sorted by name; unreadable folders are skipped with a warning.

    Hidden folders (``.trash``, half-written ``.NAME.*.tmp``) are not bundles.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for sub in sorted(root.iterdir()):
        if not sub.is_dir() or sub.name.startswith(".") or not (sub / CARD).exists():
            continue
        try:
            card = read_card(sub)
            names = tuple(PhaseTable.from_dict(card["phases"]).names)
            members = ensemble_members(card)
        except ReactomoError as exc:
            log.warning("skipping model folder %s: %s", sub, exc)
            continue
        out.append(
            BundleSummary(
                name=sub.name,
                created=str(card.get("created", "")),
                n_classes=len(card["class_codes"]),
                phases=names,
                metrics=dict(card.get("metrics") or {}),
                size_bytes=_size(sub),
                cleaning=dict(card.get("cleaning") or {}),
                members=members,
                rings=_rings_of(card),
            )
        )
    return out


def _rings_of(card: dict[str, Any]) -> str:
    from core.imaging.rings import model_rings

    try:
        return model_rings(card.get("normalisation"))
    except ReactomoError:
        return "keep"


def _existing(root: Path, name: str) -> Path:
    folder = root / check_bundle_name(name)
    if not (folder / CARD).is_file():
        have = [b.name for b in list_bundles(root)]
        raise ReactomoError(f"There is no model called '{name}' in {root}; the models there are {have}.")
    return folder


def rename_bundle(root: str | os.PathLike, old: str, new: str) -> Path:
    """Rename the bundle ``root/old`` to ``root/new`` (the card's ``name`` follows); returns the new folder.

    Raises
    ------
    ReactomoError
        Bad names, no bundle ``old``, or ``new`` already taken.
    """
    root = Path(root)
    src = _existing(root, old)
    dst = root / check_bundle_name(new)
    if dst.exists():
        raise ReactomoError(f"A model called '{new}' already exists in {root}; choose another name or delete it first.")
    os.rename(src, dst)
    card = json.loads((dst / CARD).read_text(encoding="utf-8"))
    card["name"] = new
    atomic_write_json(dst / CARD, card)
    log.info("renamed model %s -> %s", old, new)
    return dst


def delete_bundle(root: str | os.PathLike, name: str) -> Path:
    """Move the bundle ``root/name`` to ``root/.trash/`` (recoverable by hand); returns where it went."""
    root = Path(root)
    src = _existing(root, name)
    dst = move_to_trash(src, root / TRASH, name=name)
    log.info("moved model %s to %s", name, dst)
    return dst
