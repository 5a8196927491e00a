"""Random-forest pixel classification: the ground truth for the network, from a few brushed slices.

The workflow of the study (SPEC.md step 3): a user brushes each phase on a few XY slices of one time step; a
random forest trained on the brushed pixels' features (:mod:`core.labelling.features`) labels those slices completely.

- :func:`train_forest` trains on the brushed pixels only (label 0 = unlabelled is ignored). Rare phases (pores,
  celestite: a few per cent) are protected twice: at most ``max_pixels_per_class`` pixels are drawn per phase
  (seeded), and the drawn pixels are weighted so that each phase's total weight is proportional to
  ``n_brushed ** (1 - class_balance)``: 1 = every phase weighs the same ("balanced"), 0 = as brushed, 0.5 (the
  default) = square-root balancing, which lifts rare phases without letting them swallow the boundaries of the
  common ones.
- :func:`predict_forest` labels whole slices and returns the class probabilities; ``uncertainty = 1 - max
  probability``. The probabilities are refined by a guided filter that follows the slice's own edges (He et al.,
  2013): inside a region of even grey value they are averaged over a few pixels (less speckle), across a real edge
  they are not (boundaries stay sharp).
- :func:`save_forest` / :func:`load_forest`: a skops file (no pickle; only the listed types are accepted) plus a
  JSON sidecar with the settings, the phase table, the class codes, versions, counts and a SHA-256 of the skops
  file, so a changed or corrupt file and a classifier made for another phase table are refused.
- :func:`ground_truth_from_scribbles`: all of it for a scan and its scribbles (what the page and the CLI call).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from core import __version__
from core.atomic import atomic_write_bytes, atomic_write_json
from core.errors import ReactomoError
from core.labelling.features import FeatureConfig, FeatureStack, guided_filter_stats, intensity_reference, volume_features
from core.phases import DEFAULT_PHASES, PhaseTable

__all__ = [
    "ALL_SLICES",
    "AUTO_SLICES",
    "EXTRA_PIXELS",
    "EXTRA_SLICES",
    "extra_slices",
    "check_extra_memory",
    "ForestConfig",
    "TrainedForest",
    "Prediction",
    "GroundTruthResult",
    "train_forest",
    "predict_forest",
    "save_forest",
    "load_forest",
    "ground_truth_from_scribbles",
    "sidecar_path",
]

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]

#: The only types a classifier file may hold beyond skops' own safe defaults (numpy arrays, sklearn estimators).
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
_FORMAT = "reactomo.forest"
_FORMAT_VERSION = 1
_CHUNK = 1 << 15  # pixels per prediction chunk: its features and probabilities stay in the CPU cache
_FEATURE_MEMORY = 2 << 30  # keep all slices' features in memory up to this many bytes; recompute beyond


def _noop(fraction: float, message: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForestConfig:
    """How the forest is trained and how its probabilities are refined. Frozen: hashable, usable as a cache key.

    Attributes
    ----------
    n_trees : int
        Number of trees (1-500). Prediction time grows linearly with it; with good features and the edge-aware
        refinement, a few trees are enough (see bench/bench_forest.py).
    max_depth : int or None
        Depth limit of every tree (None = grow until pure). Limits prediction time and over-fitting to the
        brushed pixels.
    min_samples_leaf : int
        Fewest training pixels in a leaf.
    max_features : float
        Fraction of the features tried at each split (0-1]; 0 means ``sqrt(n_features)``, scikit-learn's default.
    max_pixels_per_class : int
        At most this many brushed pixels per phase are drawn for training (seeded); 0 = use all.
    class_balance : float
        0-1: each phase's total training weight is proportional to ``n_brushed ** (1 - class_balance)``
        (1 = balanced, 0 = as brushed).
    refine_radius : int
        Radius in pixels of the edge-aware refinement of the probabilities (0 = off).
    refine_eps : float
        Edges whose contrast is below about ``sqrt(refine_eps)`` of the normalised intensity range are smoothed
        across (the scale is that of :mod:`core.labelling.features`: 0 and 1 are the 0.5 and 99.5 percentile grey values).
    seed : int
        Seed of the pixel draw and of the trees.
    """

    n_trees: int = 4
    max_depth: int | None = 12
    min_samples_leaf: int = 1
    max_features: float = 0.0
    max_pixels_per_class: int = 4000
    class_balance: float = 0.5
    refine_radius: int = 2
    refine_eps: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`ReactomoError` (one sentence naming the value and what would work) for a bad config."""

        def _int(name: str, lo: int, hi: int, *, none_ok: bool = False) -> None:
            v = getattr(self, name)
            if v is None and none_ok:
                return
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                extra = " or None" if none_ok else ""
                raise ReactomoError(f"Forest {name} is {v!r}; use a whole number from {lo} to {hi}{extra}.")

        def _num(name: str, lo: float, hi: float) -> None:
            v = getattr(self, name)
            ok = not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float, np.integer, np.floating))
            if not ok or not math.isfinite(v) or not lo <= v <= hi:
                raise ReactomoError(f"Forest {name} is {v!r}; use a number from {lo:g} to {hi:g}.")

        _int("n_trees", 1, 500)
        _int("max_depth", 1, 64, none_ok=True)
        _int("min_samples_leaf", 1, 10_000)
        _num("max_features", 0.0, 1.0)
        _int("max_pixels_per_class", 0, 10_000_000)
        _num("class_balance", 0.0, 1.0)
        _int("refine_radius", 0, 16)
        _num("refine_eps", 1e-8, 1.0)
        _int("seed", 0, 2**32 - 1)

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ForestConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ReactomoError`; the result is validated."""
        if not isinstance(d, dict):
            raise ReactomoError(f"A forest config is a mapping of settings; got {type(d).__name__}.")
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ReactomoError(f"Unknown forest setting(s) {sorted(unknown)}; allowed settings are {sorted(allowed)}.")
        cfg = cls(**d)
        cfg.validate()
        return cfg


# ---------------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class TrainedForest:
    """A trained pixel classifier and everything needed to reuse it.

    Attributes
    ----------
    classifier : sklearn.ensemble.RandomForestClassifier
        The fitted forest (any fitted classifier with ``predict_proba`` and ``classes_`` also works).
    classes : tuple of int
        Phase codes of the probability planes, ascending (the classifier's ``classes_``).
    feature_names : tuple of str
        Names of the features it was trained on, in order.
    feature_config : FeatureConfig or None
        The feature settings (None when trained on plain arrays).
    config : ForestConfig
    phases : PhaseTable
        The phase table the codes refer to.
    brushed_pixels : dict
        ``{code: brushed pixels}`` available for training.
    training_pixels : dict
        ``{code: pixels drawn}`` actually used.
    created : str
        ISO 8601 time of training (UTC).
    versions : dict
        Versions of reactomo, scikit-learn, numpy and skops.
    reference : (float, float) or None
        Grey values mapped to 0 and 1 by the features (for the record: new scans get their own).
    """

    classifier: Any
    classes: tuple[int, ...]
    feature_names: tuple[str, ...]
    feature_config: FeatureConfig | None
    config: ForestConfig
    phases: PhaseTable
    brushed_pixels: dict[int, int]
    training_pixels: dict[int, int]
    created: str
    versions: dict[str, str]
    reference: tuple[float, float] | None = None
    _tables: list | None = field(default=None, repr=False, compare=False)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def importances(self) -> list[tuple[str, float]]:
        """``(feature name, importance)`` sorted from most to least important (mean decrease in impurity, sum 1)."""
        imp = getattr(self.classifier, "feature_importances_", None)
        if imp is None:
            return []
        pairs = [(n, float(v)) for n, v in zip(self.feature_names, imp)]
        return sorted(pairs, key=lambda p: -p[1])

    def metadata(self) -> dict[str, Any]:
        """The JSON sidecar's content (without the checksum)."""
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "created": self.created,
            "versions": dict(self.versions),
            "classes": [int(c) for c in self.classes],
            "class_names": [self.phases.by_code(c).name for c in self.classes],
            "feature_names": list(self.feature_names),
            "feature_config": self.feature_config.to_dict() if self.feature_config is not None else None,
            "forest_config": self.config.to_dict(),
            "phases": self.phases.to_dict(),
            "brushed_pixels": {str(k): int(v) for k, v in self.brushed_pixels.items()},
            "training_pixels": {str(k): int(v) for k, v in self.training_pixels.items()},
            "seed": int(self.config.seed),
            "reference": list(self.reference) if self.reference is not None else None,
        }

    def tables(self) -> list[tuple[Any, np.ndarray]]:
        """Per tree: the low-level tree and its leaf probabilities as float32 ``(n_nodes, n_classes)``."""
        if self._tables is None:
            trees = getattr(self.classifier, "estimators_", None)
            tables = []
            if trees is not None:
                for est in trees:
                    tree = getattr(est, "tree_", None)
                    if tree is None or getattr(tree, "n_outputs", 1) != 1:
                        tables = []
                        break
                    value = np.asarray(tree.value[:, 0, :], dtype=np.float64)
                    value = value / np.maximum(value.sum(axis=1, keepdims=True), 1e-300)
                    tables.append((tree, value.astype(np.float32)))
            self._tables = tables
        return self._tables


class Prediction(NamedTuple):
    """The classifier's answer for one slice: ``labels, probabilities = predict_forest(...)``.

    Attributes
    ----------
    labels : ndarray, uint8, shape (y, x)
        Phase code of the most probable class of every pixel.
    probabilities : ndarray, float32, shape (n_classes, y, x)
        Class probabilities (sum 1 per pixel), planes in the order of ``TrainedForest.classes``.
    """

    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def uncertainty(self) -> np.ndarray:
        """``1 - max probability``, float32 ``(y, x)``, from 0 (sure) to ``1 - 1/n_classes`` (a coin toss)."""
        return _uncertainty(self.probabilities)


def _uncertainty(probabilities: np.ndarray) -> np.ndarray:
    out = probabilities.max(axis=0)
    np.subtract(np.float32(1.0), out, out=out)
    return out


@dataclass
class GroundTruthResult:
    """The random-forest ground truth of a scan's scribbled slices.

    Attributes
    ----------
    labels : ndarray, uint8, shape (z, y, x)
        Full labels on every slice that has scribbles (and on those ``also`` named), 0 elsewhere.
    slices : tuple of int
        The labelled z indices, ascending (the scribbled ones and those ``also`` named).
    uncertainty : ndarray, float32, shape (len(slices), y, x)
        ``1 - max probability`` on those slices.
    forest : TrainedForest
    fractions : dict
        ``{code: fraction}`` of the scribbled slices' pixels given to each phase (sums to 1).
    seconds : dict
        Wall time of each stage: ``features``, ``train``, ``predict`` and ``total``.
    probabilities : ndarray or None
        float32 ``(len(slices), n_classes, y, x)`` when asked for (``keep_probabilities=True``).
    """

    labels: np.ndarray
    slices: tuple[int, ...]
    uncertainty: np.ndarray
    forest: TrainedForest
    fractions: dict[int, float]
    seconds: dict[str, float]
    probabilities: np.ndarray | None = None

    def uncertainty_volume(self) -> np.ndarray:
        """Uncertainty as float32 ``(z, y, x)``: on the labelled slices, NaN (not computed) elsewhere."""
        out = np.full(self.labels.shape, np.nan, dtype=np.float32)
        for i, z in enumerate(self.slices):
            out[z] = self.uncertainty[i]
        return out


# ---------------------------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------------------------
def _check_phases(phases: Any) -> PhaseTable:
    if not isinstance(phases, PhaseTable):
        raise ReactomoError(f"phases must be a PhaseTable; got {type(phases).__name__}.")
    return phases


def _check_forest_config(config: Any) -> ForestConfig:
    if not isinstance(config, ForestConfig):
        raise ReactomoError(f"config must be a ForestConfig; got {type(config).__name__}.")
    config.validate()
    return config


def _check_label_array(labels: Any, what: str) -> np.ndarray:
    if not isinstance(labels, np.ndarray):
        raise ReactomoError(f"The {what} must be a numpy array of phase codes; got {type(labels).__name__}.")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ReactomoError(f"The {what} must hold whole-number phase codes (uint8); got {labels.dtype.name} values.")
    return labels


def _codes_present(labels: np.ndarray) -> dict[int, int]:
    """``{code: count}`` of the non-zero codes in ``labels``."""
    brushed = labels[labels != 0]  # scribbles are sparse: count only the brushed pixels
    if brushed.dtype.itemsize == 1 and brushed.dtype.kind == "u":
        counts = np.bincount(brushed, minlength=256)
        return {int(c): int(counts[c]) for c in np.flatnonzero(counts)}
    values, counts = np.unique(brushed, return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts)}


def _check_codes(present: dict[int, int], phases: PhaseTable, what: str) -> None:
    bad = sorted(c for c in present if c not in phases.codes)
    if bad:
        listed = ", ".join(str(c) for c in bad[:10])
        raise ReactomoError(
            f"The {what} hold code(s) {listed} that are not in the phase table (0 = unlabelled, then "
            f"{', '.join(str(c) for c in phases.codes)}); relabel those pixels or add the phases to the table."
        )
    if not present:
        raise ReactomoError(f"The {what} hold no brushed pixels (every value is 0); brush at least two phases first.")
    if len(present) < 2:
        (code,) = present
        name = phases.by_code(code).name
        raise ReactomoError(
            f"The {what} hold only one phase ({name}, code {code}); brush at least one more phase so the classifier "
            "has something to tell apart."
        )


def _as_stacks(features: Any) -> list[FeatureStack | np.ndarray]:
    if isinstance(features, (FeatureStack, np.ndarray)):
        return [features]
    if isinstance(features, (list, tuple)) and features and all(isinstance(f, (FeatureStack, np.ndarray)) for f in features):
        return list(features)
    raise ReactomoError(
        f"features must be a FeatureStack, a float32 array (n_features, y, x) or a list of them; got {type(features).__name__}."
    )


def _data(f: FeatureStack | np.ndarray) -> np.ndarray:
    data = f.data if isinstance(f, FeatureStack) else f
    if not isinstance(data, np.ndarray) or data.ndim < 2 or data.dtype.kind != "f":
        got = f"{data.dtype.name} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ReactomoError(f"Features must be a float array (n_features, y, x); got a {got}.")
    return data


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------
#: Sub-packages of scikit-learn's vendored array-API shims that import a whole array library when merely imported
#: (torch alone is about 1.3 s). skops builds its list of trusted estimator names at import time with
#: ``sklearn.utils.all_estimators()``, whose ``pkgutil.walk_packages`` imports every package to look inside it, even
#: the ``externals`` it then ignores. Hiding these shims during that one import leaves the trusted list unchanged
#: (``externals`` is never searched for estimators; tests/test_forest.py compares the lists) and spares a CLI user
#: the torch import on every ``rf``.
_HEAVY_SHIMS = tuple(f"sklearn.externals.array_api_compat.{name}" for name in ("torch", "cupy", "dask", "jax", "paddle"))


def _skops_io():
    """``skops.io``, imported without the array libraries that scikit-learn's package walk would drag in."""
    import sys

    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    hidden = [name for name in _HEAVY_SHIMS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # importing it raises ImportError, which walk_packages skips
    try:
        import skops.io as sio
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return sio


def _versions() -> dict[str, str]:
    import sklearn
    import skops

    return {"reactomo": __version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__, "skops": skops.__version__}


def _draw(y: np.ndarray, config: ForestConfig) -> tuple[np.ndarray, np.ndarray, dict[int, int], dict[int, int]]:
    """Seeded per-phase draw of training rows and their weights (see the module notes)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 7]))
    classes = np.unique(y)
    idx_parts, w_parts = [], []
    brushed, used = {}, {}
    cap = config.max_pixels_per_class
    for c in classes:
        rows = np.flatnonzero(y == c)
        n = rows.size
        if cap and n > cap:
            rows = np.sort(rng.choice(rows, size=cap, replace=False))
        mass = float(n) ** (1.0 - config.class_balance)
        idx_parts.append(rows)
        w_parts.append(np.full(rows.size, mass / rows.size))
        brushed[int(c)], used[int(c)] = int(n), int(rows.size)
    idx = np.concatenate(idx_parts)
    w = np.concatenate(w_parts)
    w *= w.size / w.sum()  # mean weight 1: min_samples_leaf etc. keep their meaning
    return idx, w, brushed, used


def train_forest(
    features: FeatureStack | np.ndarray | Sequence[FeatureStack | np.ndarray],
    labels: np.ndarray | Sequence[np.ndarray],
    *,
    config: ForestConfig = ForestConfig(),
    phases: PhaseTable = DEFAULT_PHASES,
    classifier: Any | None = None,
    n_jobs: int | None = None,
    on_progress: Progress | None = None,
) -> TrainedForest:
    """Train a pixel classifier on the brushed pixels (label 0 is ignored).

    Parameters
    ----------
    features : FeatureStack, ndarray (n_features, y, x), or a list of them
        Features of one or several slices (all with the same features).
    labels : ndarray (y, x) of int, or a list of them (one per feature stack), or (n_slices, y, x)
        Brushed phase codes, 0 = unlabelled; not modified.
    config : ForestConfig
    phases : PhaseTable
        Every non-zero code must be one of its codes.
    classifier : estimator, optional
        Any unfitted scikit-learn-style classifier with ``fit(X, y, sample_weight)`` and ``predict_proba``; the
        default is a ``RandomForestClassifier`` built from ``config``.
    n_jobs : int, optional
        Threads (default: all CPU cores). Results do not depend on it.
    on_progress : callable, optional
        ``on_progress(fraction, message)``.

    Returns
    -------
    TrainedForest

    Raises
    ------
    ReactomoError
        No brushed pixels, only one phase brushed, codes outside the phase table, labels and features of
        different shapes, different features on different slices, NaN features, or a bad config.
    """
    progress = on_progress or _noop
    config = _check_forest_config(config)
    phases = _check_phases(phases)
    stacks = _as_stacks(features)
    if isinstance(labels, np.ndarray) and labels.ndim == 3 and len(stacks) == labels.shape[0] and len(stacks) > 1:
        label_list = list(labels)
    elif isinstance(labels, np.ndarray):
        label_list = [labels]
    elif isinstance(labels, (list, tuple)):
        label_list = list(labels)
    else:
        raise ReactomoError(f"labels must be a numpy array of phase codes or a list of them; got {type(labels).__name__}.")
    if len(label_list) != len(stacks):
        raise ReactomoError(f"Got {len(stacks)} feature stack(s) but {len(label_list)} label array(s); give one label array per slice.")
    first = stacks[0]
    names = first.names if isinstance(first, FeatureStack) else tuple(f"feature {i}" for i in range(_data(first).shape[0]))
    fconf = first.config if isinstance(first, FeatureStack) else None
    reference = first.reference if isinstance(first, FeatureStack) else None
    present: dict[int, int] = {}
    for i, (f, lab) in enumerate(zip(stacks, label_list)):
        lab = _check_label_array(lab, "scribbles")
        data = _data(f)
        if data.shape[1:] != lab.shape:
            raise ReactomoError(
                f"The scribbles of slice {i} have shape {lab.shape} but its features are {data.shape[1:]}; give "
                "labels made for the same slice."
            )
        if data.shape[0] != len(names) or (isinstance(f, FeatureStack) and f.names != names):
            raise ReactomoError(f"The features of slice {i} differ from those of the first slice; compute all slices with one FeatureConfig.")
        for c, n in _codes_present(lab).items():
            present[c] = present.get(c, 0) + n
    _check_codes(present, phases, "scribbles")

    progress(0.05, "Collecting brushed pixels")
    rows, ys = [], []
    for f, lab in zip(stacks, label_list):
        mask = lab != 0
        if mask.any():
            data = _data(f)
            rows.append(np.ascontiguousarray(data[:, mask].T, dtype=np.float32))
            ys.append(lab[mask].astype(np.int64))
    X = np.concatenate(rows)
    y = np.concatenate(ys)
    if not np.all(np.isfinite(X)):
        raise ReactomoError("Some features of the brushed pixels are NaN or infinite; check the scan for NaN values.")
    idx, w, brushed, used = _draw(y, config)
    if classifier is not None:
        from sklearn.base import clone

        classifier = clone(classifier)  # the caller's estimator stays unfitted and unchanged
    else:
        from sklearn.ensemble import RandomForestClassifier

        classifier = RandomForestClassifier(
            n_estimators=config.n_trees,
            max_depth=config.max_depth,
            min_samples_leaf=config.min_samples_leaf,
            max_features=config.max_features if config.max_features > 0 else "sqrt",
            n_jobs=n_jobs if n_jobs else -1,
            random_state=config.seed,
        )
    progress(0.2, f"Training on {idx.size:,} pixels of {len(brushed)} phases")
    t0 = time.perf_counter()
    if "sample_weight" in inspect.signature(classifier.fit).parameters:
        classifier.fit(X[idx], y[idx], sample_weight=w)
    else:  # a classifier without weights still gets the per-phase pixel cap
        classifier.fit(X[idx], y[idx])
    log.info("trained %s on %d pixels (%s) in %.2f s", type(classifier).__name__, idx.size, used, time.perf_counter() - t0)
    progress(1.0, "Classifier trained")
    classes = tuple(int(c) for c in classifier.classes_)
    return TrainedForest(
        classifier=classifier,
        classes=classes,
        feature_names=tuple(names),
        feature_config=fconf,
        config=config,
        phases=phases,
        brushed_pixels=brushed,
        training_pixels=used,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        versions=_versions(),
        reference=reference,
    )


# ---------------------------------------------------------------------------------------------------------------
# prediction
# ---------------------------------------------------------------------------------------------------------------
def _proba_planes(forest: TrainedForest, data: np.ndarray, n_jobs: int) -> np.ndarray:
    """Class probabilities float32 ``(n_classes, y, x)`` of a feature stack ``(n_features, y, x)``."""
    nf = data.shape[0]
    shape = data.shape[1:]
    n = int(np.prod(shape))
    X = data.reshape(nf, n).T  # (n, n_features) view: no transposing copy, trees read any strides
    k = len(forest.classes)
    out = np.empty((k, n), dtype=np.float32)
    tables = forest.tables()
    if X.dtype != np.float32:
        X = X.astype(np.float32)

    if tables:
        inv = np.float32(1.0 / len(tables))

        def work(i: int) -> None:
            xs = X[i : i + _CHUNK]
            acc = np.zeros((xs.shape[0], k), dtype=np.float32)
            for tree, value in tables:
                acc += value[tree.apply(xs)]
            acc *= inv
            out[:, i : i + _CHUNK] = acc.T
    else:  # any other classifier: its own predict_proba on contiguous chunks

        def work(i: int) -> None:
            xs = np.ascontiguousarray(X[i : i + _CHUNK])
            out[:, i : i + _CHUNK] = np.asarray(forest.classifier.predict_proba(xs), dtype=np.float32).T

    starts = range(0, n, _CHUNK)
    if n_jobs > 1 and n > _CHUNK:
        with ThreadPoolExecutor(n_jobs) as ex:
            list(ex.map(work, starts))
    else:
        for i in starts:
            work(i)
    return out.reshape(k, *shape)


def _refine(proba: np.ndarray, guide: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Edge-aware refinement: a guided filter of every class plane, then clip to [0, 1] and renormalise."""
    stats = guided_filter_stats(guide, radius=radius, eps=eps)
    out = np.empty_like(proba)
    for c in range(proba.shape[0] - 1):
        out[c] = stats.apply(proba[c])
    # the planes of a guided filter sum to the filter of the sum (1), so the last plane is the remainder
    out[-1] = 1.0 - out[:-1].sum(axis=0)
    np.clip(out, 0.0, 1.0, out=out)
    out /= np.maximum(out.sum(axis=0, keepdims=True), np.float32(1e-6))
    return out


def _n_jobs(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs <= 0:
        return os.cpu_count() or 1
    return int(n_jobs)


def predict_forest(
    forest: TrainedForest,
    features: FeatureStack | np.ndarray,
    *,
    guide: np.ndarray | None = None,
    n_jobs: int | None = None,
) -> Prediction:
    """Label every pixel of one slice.

    Parameters
    ----------
    forest : TrainedForest
    features : FeatureStack or ndarray, float32, shape (n_features, y, x)
        The slice's features, computed with the forest's feature settings.
    guide : ndarray, float32, shape (y, x), optional
        Image whose edges the refinement follows; default the stack's own ``guide`` (for a plain array without a
        guide, the refinement is skipped).
    n_jobs : int, optional
        Threads (default: all CPU cores). Results do not depend on it.

    Returns
    -------
    Prediction
        ``labels`` uint8 ``(y, x)`` and ``probabilities`` float32 ``(n_classes, y, x)``; ``.uncertainty`` is
        ``1 - max probability``.

    Raises
    ------
    ReactomoError
        If the features do not match those the forest was trained on.
    """
    if not isinstance(forest, TrainedForest):
        raise ReactomoError(f"forest must be a TrainedForest (from train_forest or load_forest); got {type(forest).__name__}.")
    (stack,) = _as_stacks(features)
    data = _data(stack)
    if data.ndim != 3:
        raise ReactomoError(f"Features of one slice are (n_features, y, x); got shape {data.shape}.")
    if isinstance(stack, FeatureStack) and stack.names != forest.feature_names:
        raise ReactomoError(
            f"These features ({stack.n_features}: {', '.join(stack.names[:3])}, ...) are not the {forest.n_features} the "
            "classifier was trained on; compute them with the classifier's feature settings."
        )
    if data.shape[0] != forest.n_features:
        raise ReactomoError(f"Got {data.shape[0]} feature planes but the classifier was trained on {forest.n_features}; compute them with the classifier's feature settings.")
    if guide is None and isinstance(stack, FeatureStack):
        guide = stack.guide
    proba = _proba_planes(forest, data, _n_jobs(n_jobs))
    r = forest.config.refine_radius
    if r > 0 and guide is not None and len(forest.classes) > 1:
        if guide.shape != data.shape[1:]:
            raise ReactomoError(f"The guide image has shape {guide.shape} but the features are {data.shape[1:]}; give the slice itself.")
        proba = _refine(proba, np.asarray(guide, dtype=np.float32), r, forest.config.refine_eps)
    lut = np.asarray(forest.classes, dtype=np.uint8)
    labels = lut[np.argmax(proba, axis=0)]
    return Prediction(labels, proba)


# ---------------------------------------------------------------------------------------------------------------
# saving and loading
# ---------------------------------------------------------------------------------------------------------------
def _savable() -> tuple[type, ...]:
    """Classifier types a file may hold (imported late: scikit-learn is slow to import)."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    return (RandomForestClassifier, ExtraTreesClassifier)


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a classifier file: ``classifier.skops`` -> ``classifier.json``."""
    return Path(path).with_suffix(".json")


def save_forest(path: str | os.PathLike, forest: TrainedForest) -> Path:
    """Save a classifier as a skops file plus its JSON sidecar (both written atomically).

    Parameters
    ----------
    path : path-like
        Destination ending in ``.skops``; the sidecar is the same name ending in ``.json``.
    forest : TrainedForest

    Returns
    -------
    Path
        ``path``.
    """
    sio = _skops_io()

    p = Path(path)
    if p.suffix != ".skops":
        raise ReactomoError(f"A classifier file must end in .skops; got {p.name}.")
    if not isinstance(forest, TrainedForest):
        raise ReactomoError(f"forest must be a TrainedForest; got {type(forest).__name__}.")
    if not isinstance(forest.classifier, _savable()):
        raise ReactomoError(
            f"Only random forests (and extra-trees) can be saved; this classifier is a {type(forest.classifier).__name__}."
        )
    data = sio.dumps(forest.classifier, compression=8)  # zipfile.ZIP_DEFLATED
    meta = forest.metadata()
    meta["file"] = p.name
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(p, data)
    atomic_write_json(sidecar_path(p), meta)
    log.info("saved classifier to %s (%d bytes)", p, len(data))
    return p


def _same_phases(a: PhaseTable, b: PhaseTable) -> bool:
    return [(p.code, p.name.strip().lower()) for p in a] == [(p.code, p.name.strip().lower()) for p in b]


def load_forest(path: str | os.PathLike, *, phases: PhaseTable | None = None) -> TrainedForest:
    """Load a classifier saved by :func:`save_forest`, refusing anything unsafe or inconsistent.

    Parameters
    ----------
    path : path-like
        The ``.skops`` file; its ``.json`` sidecar must lie beside it.
    phases : PhaseTable, optional
        The project's phase table: a classifier made for another table (other codes or names) is refused.

    Returns
    -------
    TrainedForest

    Raises
    ------
    ReactomoError
        Missing file or sidecar, a file changed since it was saved (checksum), a file holding types other than
        :data:`TRUSTED_TYPES` (skops refuses to load them), a corrupt file, or another phase table.
    """
    sio = _skops_io()

    p = Path(path)
    side = sidecar_path(p)
    if not p.is_file():
        raise ReactomoError(f"The classifier file {p} does not exist; train a classifier or give the path of a .skops file.")
    if not side.is_file():
        raise ReactomoError(f"The classifier file {p} has no sidecar {side.name} beside it; copy both files together.")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ReactomoError(f"The sidecar {side} is not valid JSON; copy it again or retrain the classifier.") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ReactomoError(f"The sidecar {side} is not a Reactomo classifier description; give the .json saved with the classifier.")
    data = p.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise ReactomoError(
            f"The classifier file {p} does not match the checksum in {side.name}: it was changed or damaged after saving, "
            "so retrain the classifier or get the original file."
        )
    try:
        saved_phases = PhaseTable.from_dict(meta["phases"])
        classes = tuple(int(c) for c in meta["classes"])
        names = tuple(str(n) for n in meta["feature_names"])
        fconf = FeatureConfig.from_dict(meta["feature_config"]) if meta.get("feature_config") is not None else None
        config = ForestConfig.from_dict(meta["forest_config"])
    except ReactomoError as exc:
        raise ReactomoError(f"The sidecar {side} holds invalid settings ({exc}); retrain the classifier.") from None
    except (KeyError, TypeError, ValueError):
        raise ReactomoError(f"The sidecar {side} lacks the classifier's settings; retrain the classifier.") from None
    if phases is not None and not _same_phases(_check_phases(phases), saved_phases):
        saved = ", ".join(f"{q.code} {q.name}" for q in saved_phases)
        ours = ", ".join(f"{q.code} {q.name}" for q in phases)
        raise ReactomoError(
            f"The classifier {p.name} was trained for another phase table ({saved}) than this project's ({ours}); "
            "retrain it on this project's labels."
        )
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception:
        raise ReactomoError(f"The classifier file {p} is corrupt (not a readable skops file); retrain the classifier.") from None
    unexpected = [t for t in untrusted if t not in TRUSTED_TYPES]
    if unexpected:
        raise ReactomoError(
            f"The classifier file {p} holds types that are not allowed ({', '.join(unexpected[:5])}); refusing to load "
            "it, retrain the classifier instead."
        )
    try:
        clf = sio.loads(data, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise ReactomoError(f"The classifier file {p} could not be loaded ({type(exc).__name__}); it is corrupt, so retrain the classifier.") from None
    if not isinstance(clf, _savable()):
        raise ReactomoError(f"The classifier file {p} holds a {type(clf).__name__}, not a random forest; retrain the classifier.")
    if tuple(int(c) for c in getattr(clf, "classes_", ())) != classes or int(getattr(clf, "n_features_in_", -1)) != len(names):
        raise ReactomoError(f"The classifier file {p} does not fit its sidecar (classes or features differ); copy both files together.")
    ref = meta.get("reference")
    return TrainedForest(
        classifier=clf,
        classes=classes,
        feature_names=names,
        feature_config=fconf,
        config=config,
        phases=saved_phases,
        brushed_pixels={int(k): int(v) for k, v in meta.get("brushed_pixels", {}).items()},
        training_pixels={int(k): int(v) for k, v in meta.get("training_pixels", {}).items()},
        created=str(meta.get("created", "")),
        versions={str(k): str(v) for k, v in meta.get("versions", {}).items()},
        reference=(float(ref[0]), float(ref[1])) if ref else None,
    )


# ---------------------------------------------------------------------------------------------------------------
# the whole step
# ---------------------------------------------------------------------------------------------------------------
#: Time steps on each side of the labelled step whose scans the forest also reads, where the scans are aligned
#: (``run``, ``ground-truth`` and the Ground truth page; :func:`core.segmentation.temporal.aligned_neighbours`).
TIME_CONTEXT = 0


def _check_neighbours(neighbours: Any, shape: tuple[int, ...]) -> list[tuple[int, Any]]:
    """``neighbours`` of :func:`ground_truth_from_scribbles` as sorted ``(offset, scan)`` pairs, each checked."""
    from core.imaging.io import Volume

    if not neighbours:
        return []
    if not isinstance(neighbours, Mapping):
        raise ReactomoError(f"neighbours must map step offsets to scans, e.g. {{-1: previous, 1: next}}; got {type(neighbours).__name__}.")
    out = []
    for off, v in sorted(neighbours.items()):
        if isinstance(off, bool) or not isinstance(off, (int, np.integer)) or off == 0:
            raise ReactomoError(f"A neighbouring step's offset is {off!r}; give a non-zero whole number of steps, e.g. -1 or 1.")
        if not isinstance(v, (np.ndarray, Volume)):
            raise ReactomoError(f"The scan of step {int(off):+d} is a {type(v).__name__}; give a numpy array or an opened Volume.")
        if tuple(v.shape) != shape:
            raise ReactomoError(f"The scan of step {int(off):+d} has shape {tuple(v.shape)} but the labelled step's is {shape}; "
                                "neighbouring steps must be scans of the same size, aligned.")
        out.append((int(off), v))
    return out


def with_neighbours(own: FeatureStack, more: Sequence[tuple[int, FeatureStack]]) -> FeatureStack:
    """One slice's features followed by the same features of the same slice at neighbouring steps
    (``[(offset, stack), ...]``); the guide of the refinement stays this step's slice."""
    if not more:
        return own
    data = np.concatenate([own.data] + [st.data for _, st in more], axis=0)
    names = tuple(own.names) + tuple(f"{n} [step {off:+d}]" for off, st in more for n in st.names)
    return FeatureStack(data=data, names=names, guide=own.guide, z=own.z, config=own.config, reference=own.reference)


# how many unscribbled slices of a labelled step the forest also labels for the U-Net to train on (extra_slices;
# `run --extra-slices`, `ground-truth --extra-slices`, the Ground truth page): a count, or
ALL_SLICES = -1  # every slice that extra_slices allows
AUTO_SLICES = -2  # as many of them as EXTRA_PIXELS holds
# the pixels of extra slices "auto" takes per labelled step: 48 slices of 256 x 256, every slice of each scan of the
# accuracy family, where it was measured; a scan of bigger slices gets fewer (its memory and time stay bounded)
EXTRA_PIXELS = 48 * 256 * 256
# unscribbled slices of each labelled step that the forest also labels for the U-Net to train on (never validated on):
# 0 = the scribbled slices only; ALL_SLICES = all of them; AUTO_SLICES = as many as EXTRA_PIXELS holds (the default
# since 2026-12-07, 16:15 UTC, chosen on the accuracy family's tuning half with two seeds by the rule written first,
# bench/results/forest-slices-rules.txt: worst step higher on 10 of 12 runs, extent error 0.5 points lower)
EXTRA_SLICES = AUTO_SLICES


def extra_slices(n_slices: int, scribbled: list[int], held_out: list[int], count: int, *,
                 plane_px: int = 256 * 256) -> list[int]:
    """The unscribbled slices of a step to add to the U-Net's training, spread evenly over the stack.

    Never a scribbled slice, and never a held-out (validation) slice's neighbour (one on each side), so that the
    validation, and the choices scored on it, stay on slices the network did not see the like of. ``count``:
    how many (``ALL_SLICES`` = every one allowed; ``AUTO_SLICES`` = as many as :data:`EXTRA_PIXELS` holds at
    ``plane_px`` pixels a slice; 0 = none).

    Fewer than all are spaced evenly from the middle of equal shares of the stack, never at its ends first (the end
    slices of a real scan are often its worst).

    >>> extra_slices(12, [2, 6, 9], [6], 3)
    [1, 4, 10]
    >>> extra_slices(12, [2, 6, 9], [6], ALL_SLICES)
    [0, 1, 3, 4, 8, 10, 11]
    >>> extra_slices(12, [2, 6, 9], [6], AUTO_SLICES, plane_px=EXTRA_PIXELS // 2)
    [1, 10]
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < AUTO_SLICES:
        raise ReactomoError(f"The extra slices must be a count of 0 or more, all or auto; got {count!r}.")
    if count == AUTO_SLICES:
        count = EXTRA_PIXELS // max(1, int(plane_px))
    near = {z + d for z in held_out for d in (-1, 0, 1)}
    free = [z for z in range(int(n_slices)) if z not in set(scribbled) and z not in near]
    if count == ALL_SLICES or count >= len(free):
        return free
    if count == 0:
        return []
    at = np.unique(np.floor((np.arange(count) + 0.5) * len(free) / count).astype(int))
    return [free[i] for i in at]


# bytes a labelled pixel of the extra slices costs, forest to training: its uncertainty, grey value and label, and in
# the training patches (50 % overlap: four copies) its image and class index
EXTRA_BYTES_PER_PX = 64


def check_extra_memory(n_slices: int, plane_px: int, *, what: str) -> None:
    """Refuse, in one sentence naming ``what`` (the setting), extra slices whose labels would not fit the training's
    memory budget (``REACTOMO_MEMORY_BUDGET_GB``), before the forest spends its time on them. ``auto`` always fits."""
    need = int(n_slices) * int(plane_px) * EXTRA_BYTES_PER_PX
    if need <= EXTRA_PIXELS * EXTRA_BYTES_PER_PX:
        return
    from core.network.train import ENV_MEMORY_BUDGET, memory_budget_bytes

    budget = memory_budget_bytes()
    if need > budget:
        raise ReactomoError(f"{n_slices} extra slices of {plane_px:,} px would need about {need / 1e9:.1f} GB to label "
                            f"and train on, over the memory budget of {budget / 1e9:.1f} GB; ask for fewer with "
                            f"{what} (auto fits), or raise {ENV_MEMORY_BUDGET}.")


def ground_truth_from_scribbles(
    scan: np.ndarray | Any,
    scribbles: np.ndarray,
    *,
    feature_config: FeatureConfig = FeatureConfig(),
    forest_config: ForestConfig = ForestConfig(),
    phases: PhaseTable = DEFAULT_PHASES,
    keep_probabilities: bool = False,
    n_jobs: int | None = None,
    on_progress: Progress | None = None,
    neighbours: Mapping[int, np.ndarray | Any] | None = None,
    also: Sequence[int] = (),
) -> GroundTruthResult:
    """Train on the scribbles of a scan and label every scribbled slice completely (and the slices ``also`` names).

    Parameters
    ----------
    scan : ndarray (z, y, x) of uint8, uint16 or float32, or core.imaging.io.Volume
        One time step; not modified.
    scribbles : ndarray (z, y, x) of uint8
        Brushed phase codes (0 = unlabelled), same shape as ``scan``; not modified.
    feature_config : FeatureConfig
    forest_config : ForestConfig
    phases : PhaseTable
    keep_probabilities : bool
        Also return the class probabilities of the labelled slices.
    n_jobs : int, optional
        Threads (default: all CPU cores).
    on_progress : callable, optional
        ``on_progress(fraction, message)``.
    neighbours : mapping of int to scan, optional
        Scans of neighbouring time steps of the same (aligned) sample, keyed by their offset from this step (e.g.
        ``{-1: previous, 1: next}``). The forest then also reads the same features of the same slices in each of them
        (each scan normalised on its own), after this step's own: a voxel has a history, so a thin young lath is
        thicker one step later, and static structure (grain texture, ring artefacts) is the same at every step. The
        scribbles stay this step's. Each neighbour must have this scan's shape. Feature names get ``" [step +1]"``.
    also : sequence of int
        More slices to label with the same forest (e.g. for a network to train on); it never trains on them. The
        result's ``slices`` are then the scribbled ones and these, ascending; ``fractions`` stay the scribbled slices'.

    Returns
    -------
    GroundTruthResult

    Raises
    ------
    ReactomoError
        Scribbles of another shape, no scribbles, one phase only, codes outside the phase table, neighbours of
        another shape, or bad settings.

    Examples
    --------
    >>> from core.imaging.synthetic import DemoConfig, make_demo
    >>> exp = make_demo(DemoConfig(steps=2, shape=(16, 48, 48), seed=1))
    >>> gt = ground_truth_from_scribbles(exp.scans[exp.label_step], exp.scribbles)
    >>> gt.labels.shape, gt.slices == tuple(exp.label_slices)
    ((16, 48, 48), True)
    """
    progress = on_progress or _noop
    t_start = time.perf_counter()
    phases = _check_phases(phases)
    forest_config = _check_forest_config(forest_config)
    if not isinstance(feature_config, FeatureConfig):
        raise ReactomoError(f"feature_config must be a FeatureConfig; got {type(feature_config).__name__}.")
    feature_config.validate()
    from core.imaging.io import Volume

    if isinstance(scan, Volume):
        shape = tuple(scan.shape)
    elif isinstance(scan, np.ndarray):
        shape = scan.shape
        if scan.ndim != 3:
            raise ReactomoError(f"The scan must be a 3D volume (z, y, x); got shape {scan.shape}.")
    else:
        raise ReactomoError(f"The scan must be a numpy array (z, y, x) or an opened Volume; got {type(scan).__name__}.")
    scribbles = _check_label_array(scribbles, "scribbles")
    if scribbles.shape != tuple(shape):
        raise ReactomoError(
            f"The scribbles have shape {scribbles.shape} but the scan has shape {tuple(shape)}; give scribbles made on this scan."
        )
    present = _codes_present(scribbles)
    _check_codes(present, phases, "scribbles")
    others = _check_neighbours(neighbours, tuple(shape))
    zs = [int(z) for z in np.flatnonzero(scribbles.reshape(scribbles.shape[0], -1).any(axis=1))]
    extra = sorted({int(z) for z in also} - set(zs))
    bad = [z for z in extra if not 0 <= z < shape[0]]
    if bad:
        raise ReactomoError(f"The slices to label must lie in 0-{shape[0] - 1}; got {bad[0]}.")
    out_zs = sorted(zs + extra)  # every slice labelled: the scribbled ones first computed, all returned ascending
    nj = _n_jobs(n_jobs)
    seconds: dict[str, float] = {}

    progress(0.01, "Intensity range of the scan")
    reference = None
    if feature_config.normalise == "volume":
        reference = intensity_reference(scan, percentiles=feature_config.percentiles)
    # each neighbour normalised on its own, as each step is when it is segmented
    references = {off: intensity_reference(v, percentiles=feature_config.percentiles)
                  if feature_config.normalise == "volume" else None for off, v in others}
    plane_bytes = 4 * int(shape[1]) * int(shape[2]) * (feature_config.n_features * (1 + len(others)) + 1)
    keep = plane_bytes * len(zs) <= _FEATURE_MEMORY
    t0 = time.perf_counter()

    def stacks_for(batch: list[int], lo: float, hi: float) -> list[FeatureStack]:
        parts = 1 + len(others)
        own = volume_features(
            scan, batch, config=feature_config, reference=reference, n_jobs=nj,
            on_progress=lambda f, m: progress(lo + (hi - lo) * f / parts, m),
        )
        if not others:
            return own
        more = [volume_features(v, batch, config=feature_config, reference=references[off], n_jobs=nj,
                                on_progress=lambda f, m, j=j: progress(lo + (hi - lo) * (j + 1 + f) / parts,
                                                                       f"step {off:+d}: {m}"))
                for j, (off, v) in enumerate(others)]
        out = []
        for i in range(len(own)):  # one slice at a time, its parts let go as soon as they are joined
            out.append(with_neighbours(own[i], [(off, m[i]) for (off, _), m in zip(others, more)]))
            own[i] = None  # type: ignore[call-overload]
            for m in more:
                m[i] = None
        return out

    if keep:
        stacks = stacks_for(zs, 0.02, 0.45)
        train_inputs: list = stacks
        train_labels = [scribbles[z] for z in zs]
    else:  # too big to keep: keep only the brushed pixels' features, recompute the slices to predict them
        stacks = []
        train_inputs, train_labels = [], []
        for i, z in enumerate(zs):
            (st,) = stacks_for([z], 0.02 + 0.3 * i / len(zs), 0.02 + 0.3 * (i + 1) / len(zs))
            mask = scribbles[z] != 0
            train_inputs.append(np.ascontiguousarray(st.data[:, mask])[:, None, :])
            train_labels.append(scribbles[z][mask][None, :])
            names = st.names
        train_inputs = [FeatureStack(data=a, names=names, guide=np.zeros(a.shape[1:], np.float32), z=None,
                                     config=feature_config, reference=reference or (0.0, 1.0)) for a in train_inputs]
    seconds["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    forest = train_forest(train_inputs, train_labels, config=forest_config, phases=phases, n_jobs=nj,
                          on_progress=lambda f, m: progress(0.45 + 0.1 * f, m))
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    labels = np.zeros(shape, dtype=np.uint8)
    unc = np.empty((len(out_zs), int(shape[1]), int(shape[2])), dtype=np.float32)
    probs = (np.empty((len(out_zs), len(forest.classes), int(shape[1]), int(shape[2])), dtype=np.float32)
             if keep_probabilities else None)
    kept_at = {z: i for i, z in enumerate(zs)} if keep else {}  # the slices whose features are still at hand

    def label_slice(i: int) -> int:
        z = out_zs[i]
        st = stacks[kept_at[z]] if z in kept_at else with_neighbours(
            volume_features(scan, [z], config=feature_config, reference=reference, n_jobs=1)[0],
            [(off, volume_features(v, [z], config=feature_config, reference=references[off], n_jobs=1)[0])
             for off, v in others])
        # one slice per thread: every stage of the slice (trees, refinement) then runs in parallel
        pred = predict_forest(forest, st, n_jobs=1 if threads > 1 else nj)
        labels[z] = pred.labels
        unc[i] = _uncertainty(pred.probabilities)
        if probs is not None:
            probs[i] = pred.probabilities
        if z in kept_at:
            stacks[kept_at[z]] = None  # type: ignore[call-overload]  # free memory as we go
        return z

    # progress is reported from the calling thread only (a UI may not be updated from worker threads)
    # slices without kept features: each thread computes a slice's (and its neighbours') planes, as many as fit
    threads = min(nj, len(out_zs)) if keep and not extra else max(1, min(nj, len(out_zs), _FEATURE_MEMORY // max(plane_bytes, 1)))
    # the slices whose features are kept first, each letting its planes go: the extra slices' planes are computed
    # only when those are (nearly) all gone, so the two never add up to twice the feature budget
    order = sorted(range(len(out_zs)), key=lambda i: out_zs[i] not in kept_at)
    if threads > 1:
        with ThreadPoolExecutor(threads) as ex:
            for k, z in enumerate(ex.map(label_slice, order)):
                progress(0.55 + 0.45 * (k + 1) / len(out_zs), f"Labelled slice {z} ({k + 1} of {len(out_zs)})")
    else:
        for k, i in enumerate(order):
            z = label_slice(i)
            progress(0.55 + 0.45 * (k + 1) / len(out_zs), f"Labelled slice {z} ({k + 1} of {len(out_zs)})")
    seconds["predict"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start

    counts = np.bincount(labels[zs].reshape(-1), minlength=256)
    total = max(int(counts[1:].sum()), 1)
    fractions = {int(c): float(counts[c]) / total for c in forest.classes}
    log.info("ground truth of %d slices in %.2f s (%s)", len(out_zs), seconds["total"], {k: round(v, 2) for k, v in seconds.items()})
    return GroundTruthResult(
        labels=labels,
        slices=tuple(out_zs),
        uncertainty=unc,
        forest=forest,
        fractions=fractions,
        seconds=seconds,
        probabilities=probs,
    )
