"""The :class:`Dataset` record and the one pipeline every source goes through.

Built-ins and user files all end in :func:`from_arrays` (one array set, we take a seeded
validation split) or :func:`from_split` (the user gave the split). Funnelling everything
through one place is what makes the dtype contract hold for both backends: x is float32
(or int64 token ids), classification y is int64 in ``[0, n_classes)``, regression y is
float32. Errors are :class:`DataError` with one line naming where, what, and what is allowed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from protolab.errors import DataError

__all__ = ["Dataset", "Task", "from_arrays", "from_split", "split_indices"]

Task = Literal["classification", "regression"]

#: A classification target with more distinct labels than this share of the samples (and more
#: than ``_MIN_SUSPECT_CLASSES`` of them) is almost surely a regression target written as
#: integers; training a classifier on it would waste a whole sweep, so we stop and say so.
_MAX_CLASS_SHARE = 0.5
_MIN_SUSPECT_CLASSES = 20


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/validation arrays plus what a backend needs to size the model head and metric.

    Frozen so a loaded dataset can be handed to both backends without either changing what
    the other sees; ``eq=False`` because comparing arrays elementwise is not a useful ``==``
    (compare :attr:`fingerprint` instead).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: Task
    n_classes: int | None = field(default=None)

    def __post_init__(self) -> None:
        # Cheap guards against hand-built datasets that would break the contract silently.
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {self.task!r}")
        if (self.task == "classification") != (self.n_classes is not None):
            raise ValueError(
                f"n_classes must be set for classification and None for regression "
                f"(task={self.task!r}, n_classes={self.n_classes!r})"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape, without the batch axis (what a backend builds the model for)."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def input_dtype(self) -> str:
        """``"int64"`` for token-id sequences (feed an Embedding), else ``"float32"``."""
        return "int64" if self.x_train.dtype == np.int64 else "float32"

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the model's output per sample: logits per class, or the regression target."""
        if self.task == "classification":
            assert self.n_classes is not None
            return (self.n_classes,)
        return tuple(int(d) for d in self.y_train.shape[1:]) or (1,)

    @property
    def metric(self) -> str:
        """The default objective: accuracy for classification, RMSE for regression."""
        return "val/acc" if self.task == "classification" else "val/rmse"

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.x_val.shape[0])

    @cached_property
    def fingerprint(self) -> str:
        """12 hex digits of sha256 over dtypes, shapes and bytes: tags runs with *which* data.

        Two runs with the same name but a changed file (or another seed's split) get different
        fingerprints, so results are never compared across silently different data.
        """
        h = hashlib.sha256()
        h.update(f"{self.task}:{self.n_classes}".encode())
        for a in (self.x_train, self.y_train, self.x_val, self.y_val):
            h.update(f"|{a.dtype.str}{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:12]


def from_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    where: str,
    seed: int,
    val_fraction: float,
) -> Dataset:
    """Validate one array set, infer the task from y's dtype, and take a seeded val split.

    Classification splits are stratified so every class keeps its share in validation.
    """
    x = _as_x(x, where, "x")
    task = _infer_task(y, where, "y")
    y = _as_y(y, task, where, "y")
    _check_lengths(x, y, where, "x", "y")
    n_classes: int | None = None
    if task == "classification":
        (y,), n_classes = _encode_labels([y], where)
    train, val = split_indices(
        y if task == "classification" else None,
        len(y),
        seed=seed,
        val_fraction=val_fraction,
        where=where,
    )
    return Dataset(name, x[train], y[train], x[val], y[val], task, n_classes)


def from_split(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    where: str,
) -> Dataset:
    """Validate a split the user already made; labels are encoded over train and val together."""
    xt, xv = _as_x(x_train, where, "x_train"), _as_x(x_val, where, "x_val")
    if xt.shape[1:] != xv.shape[1:] or xt.dtype != xv.dtype:
        raise DataError(
            f"{where}: x_train samples are {xt.shape[1:]} {xt.dtype} but x_val samples are "
            f"{xv.shape[1:]} {xv.dtype}; both must have the same per-sample shape and kind"
        )
    task = _infer_task(y_train, where, "y_train")
    task_val = _infer_task(y_val, where, "y_val")
    if task != task_val:
        raise DataError(
            f"{where}: y_train is {y_train.dtype} ({task}) but y_val is {y_val.dtype} "
            f"({task_val}); use integer dtype in both for classification or float for regression"
        )
    yt, yv = _as_y(y_train, task, where, "y_train"), _as_y(y_val, task, where, "y_val")
    _check_lengths(xt, yt, where, "x_train", "y_train")
    _check_lengths(xv, yv, where, "x_val", "y_val")
    if yt.shape[1:] != yv.shape[1:]:
        raise DataError(
            f"{where}: y_train samples are {yt.shape[1:]} but y_val samples are {yv.shape[1:]}; "
            f"they must match"
        )
    n_classes: int | None = None
    if task == "classification":
        (yt, yv), n_classes = _encode_labels([yt, yv], where)
    return Dataset(name, xt, yt, xv, yv, task, n_classes)


def split_indices(
    y: np.ndarray | None, n: int, *, seed: int, val_fraction: float, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) index arrays; stratified by class when ``y`` is given.

    ``round(n * val_fraction)`` samples go to validation, spread over classes by largest
    remainder so the total is exact. Both index arrays are shuffled so neither set is sorted
    by class (some backends batch without reshuffling validation).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{where}: val_fraction is {val_fraction!r}; allowed: 0 < val_fraction < 1")
    n_val = _round_half_up(n * val_fraction)
    if n_val < 1 or n - n_val < 1:
        raise DataError(
            f"{where}: {n} samples are too few for a validation split of {val_fraction:g}; "
            f"need at least {_min_samples(val_fraction)} (one train and one validation sample)"
        )
    rng = np.random.default_rng([seed, 1])  # stream 1: splits; stream 0 generates built-ins
    if y is None:
        perm = rng.permutation(n)
        return perm[n_val:], perm[:n_val]
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * (n_val / n)
    take = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: n_val - int(take.sum())]] += 1
    val_parts, train_parts = [], []
    for cls, k in zip(classes, take, strict=True):
        members = rng.permutation(np.flatnonzero(y == cls))
        val_parts.append(members[:k])
        train_parts.append(members[k:])
    return rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(val_parts))


def _round_half_up(v: float) -> int:
    return math.floor(v + 0.5)


def _min_samples(val_fraction: float) -> int:
    n = 2
    while not (1 <= _round_half_up(n * val_fraction) <= n - 1):
        n += 1
    return n


def _as_x(x: np.ndarray, where: str, key: str) -> np.ndarray:
    """Coerce features to the contract: signed ints are token ids (int64), the rest float32.

    Unsigned ints and bools become float32 because uint8 is how images are usually stored;
    token ids are conventionally int32/int64. Values are not rescaled: that is the user's call.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"{where}: {key} has dtype {x.dtype}; allowed: numeric "
            f"(float, or signed integer token ids)"
        )
    if x.ndim == 0:
        raise DataError(f"{where}: {key} is a scalar; allowed: an array with one row per sample")
    if x.ndim == 1:
        x = x.reshape(-1, 1)  # one feature per sample
    if x.shape[0] == 0 or x.size == 0:
        raise DataError(f"{where}: {key} is empty (shape {x.shape}); need at least one sample")
    if x.dtype.kind == "i":
        if int(x.min()) < 0:
            raise DataError(
                f"{where}: {key} holds integer token ids but the smallest is {int(x.min())}; "
                f"token ids must be >= 0 (store features as float for non-token data)"
            )
        return np.ascontiguousarray(x, dtype=np.int64)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(
            f"{where}: {key} contains NaN or inf (first at index {tuple(int(i) for i in bad)}); "
            f"allowed: finite numbers only"
        )
    return x


def _infer_task(y: np.ndarray, where: str, key: str) -> Task:
    """Integer (or bool) targets mean classification, float targets regression."""
    kind = np.asarray(y).dtype.kind
    if kind in "biu":
        return "classification"
    if kind == "f":
        return "regression"
    raise DataError(
        f"{where}: {key} has dtype {np.asarray(y).dtype}; allowed: integer "
        f"(classification) or float (regression)"
    )


def _as_y(y: np.ndarray, task: Task, where: str, key: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 0:
        raise DataError(f"{where}: {key} is a scalar; allowed: one target per sample")
    if y.shape[0] == 0:
        raise DataError(f"{where}: {key} is empty; need at least one sample")
    if task == "classification":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
        if y.ndim != 1:
            raise DataError(
                f"{where}: {key} has shape {y.shape}; classification needs class indices of "
                f"shape (N,) (one-hot? use y.argmax(axis=1))"
            )
        return np.ascontiguousarray(y, dtype=np.int64)
    if y.ndim > 2:
        raise DataError(
            f"{where}: {key} has shape {y.shape}; regression targets must be (N,) or (N, k)"
        )
    y = np.ascontiguousarray(y, dtype=np.float32)
    if not np.isfinite(y).all():
        raise DataError(f"{where}: {key} contains NaN or inf; allowed: finite numbers only")
    return y


def _check_lengths(x: np.ndarray, y: np.ndarray, where: str, xk: str, yk: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{where}: {xk} has {x.shape[0]} samples but {yk} has {y.shape[0]}; "
            f"they must have the same length"
        )


def _encode_labels(ys: list[np.ndarray], where: str) -> tuple[list[np.ndarray], int]:
    """Map labels to ``0..K-1`` (sorted unique order) and return ``K``.

    Non-negative labels with gaps or an offset (``1..K``, ``{0, 5, 7}``) are remapped: accuracy
    does not care about label values, and refusing them would only make users reindex by hand.
    Negative labels are refused instead: ``-1`` usually means "unlabelled", and silently
    turning it into a class would train on noise.
    """
    labels = np.concatenate(ys)
    low = int(labels.min())
    if low < 0:
        raise DataError(
            f"{where}: classification target has negative label {low}; allowed: integer "
            f"labels >= 0 (-1 often marks unlabelled rows; drop them or use float for regression)"
        )
    classes = np.unique(labels)
    k = int(classes.size)
    if k < 2:
        raise DataError(
            f"{where}: classification target has a single class ({int(classes[0])}); "
            f"need at least 2 classes"
        )
    if k > _MIN_SUSPECT_CLASSES and k > _MAX_CLASS_SHARE * labels.size:
        raise DataError(
            f"{where}: integer target has {k} distinct values in {labels.size} samples, which "
            f"looks like regression; store the target as float (e.g. 3.0) for regression"
        )
    if classes[0] == 0 and classes[-1] == k - 1:
        return ys, k
    return [np.searchsorted(classes, y).astype(np.int64) for y in ys], k
