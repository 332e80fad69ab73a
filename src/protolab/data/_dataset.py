"""The :class:`Dataset` record and the one pipeline every source goes through.

Built-ins and user files all end in :func:`from_arrays` (one array set, we take a seeded
validation split) or :func:`from_split` (the user gave the split). Funnelling everything
through one place is what makes the dtype contract hold for both backends: x is float32
(or int64 token ids), classification y is int64 in ``[0, n_classes)``, regression y is
float32. Errors are :class:`DataError` with one line naming where, what, and what is allowed.

A test split is optional: a file brings it (``x_test``/``y_test``), a built-in holds one out
with a fixed seed (:data:`BUILTIN_TEST_FRACTION`). The sweep never reads it; ``protolab run``
scores the trained model on it once. Targets are read by one rule (:func:`read_targets`):
one-hot rows become class indices, shapes that could mean two things are refused.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from protolab.data._stream import Stream
from protolab.data._structure import Structure, leaves
from protolab.errors import DataError

__all__ = [
    "BUILTIN_TEST_FRACTION",
    "Dataset",
    "Task",
    "from_arrays",
    "from_split",
    "read_targets",
    "split_indices",
]

Task = Literal["classification", "regression"]

#: A classification target with more distinct labels than this share of the samples (and more
#: than ``_MIN_SUSPECT_CLASSES`` of them) is almost surely a regression target written as
#: integers; training a classifier on it would waste a whole sweep, so we stop and say so.
_MAX_CLASS_SHARE = 0.5
_MIN_SUSPECT_CLASSES = 20

#: Share of a built-in's samples held out as its test split, before the validation split.
#: Chosen with :data:`_TEST_SEED`, not the study's seed, so a study's seed moves train/val
#: but never moves a fixed dataset's (digits') test rows into training.
BUILTIN_TEST_FRACTION = 0.15
_TEST_SEED = 0  # rng streams: 0 generates built-ins, 1 splits train/val, 2 holds out test

_ALLOWED_Y = (
    "allowed: (N,) class indices (integer) or values (float), (N, k) one-hot rows "
    "(classification), or (N, k) float values (regression)"
)


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
    x_test: np.ndarray | None = field(default=None)  # None: no test split
    y_test: np.ndarray | None = field(default=None)
    notes: tuple[str, ...] = field(default=())  # how the data was read (one-hot targets ...)
    # A training source that streams (pl.Data): then x_train/y_train are its first batch,
    # for shapes and dtypes only, and only the programs that read a stream may train on it.
    stream: Stream | None = field(default=None)
    # Several inputs or outputs (x, y as dicts or tuples of arrays): the model is fed
    # these; x_*/y_* then hold the first input and the first output (float32), for shapes.
    structure: Structure | None = field(default=None)

    def __post_init__(self) -> None:
        # Cheap guards against hand-built datasets that would break the contract silently.
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {self.task!r}")
        if (self.task == "classification") != (self.n_classes is not None):
            raise ValueError(
                f"n_classes must be set for classification and None for regression "
                f"(task={self.task!r}, n_classes={self.n_classes!r})"
            )
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError("x_test and y_test must be given together (or neither)")

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
        """The default objective: accuracy for classification, RMSE for regression; with
        several outputs, the validation loss (each head's metric is the model's to log)."""
        if self.structure is not None:
            return "val/loss"
        return "val/acc" if self.task == "classification" else "val/rmse"

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.x_val.shape[0])

    @property
    def n_test(self) -> int:
        """Samples in the test split; 0 when there is none."""
        return 0 if self.x_test is None else int(self.x_test.shape[0])

    @cached_property
    def fingerprint(self) -> str:
        """12 hex digits of sha256 over dtypes, shapes and bytes: tags runs with *which* data.

        Two runs with the same name but a changed file (or another seed's split) get different
        fingerprints, so results are never compared across silently different data.
        """
        h = hashlib.sha256()
        h.update(f"{self.task}:{self.n_classes}".encode())
        if self.stream is not None:  # its batches are drawn as it trains: its kind and peek
            h.update(f"stream:{self.stream.kind}".encode())
        if self.structure is not None:  # every leaf, not only the first
            s = self.structure
            for tree in (s.x_train, s.y_train, s.x_val, s.y_val):
                for a in leaves(tree) if tree is not None else ():
                    h.update(f"|{a.dtype.str}{a.shape}|".encode())
                    h.update(np.ascontiguousarray(a).tobytes())
        arrays = [self.x_train, self.y_train, self.x_val, self.y_val]
        if self.x_test is not None and self.y_test is not None:  # absent: the old fingerprint
            arrays += [self.x_test, self.y_test]
        for a in arrays:
            h.update(f"|{a.dtype.str}{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:12]


TestArrays = tuple[np.ndarray, np.ndarray]


def from_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    where: str,
    seed: int,
    val_fraction: float,
    test: TestArrays | None = None,
    test_fraction: float = 0.0,
) -> Dataset:
    """Validate one array set, infer the task from y, and take a seeded val split.

    Classification splits are stratified so every class keeps its share in validation.
    ``test`` is a test split the source brings; ``test_fraction`` > 0 instead holds one out
    (built-ins) with a fixed seed, before the validation split is taken from the rest.
    """
    x = _as_x(x, where, "x")
    task, y, notes = read_targets(y, where, "y")
    _check_lengths(x, y, where, "x", "y")
    xt = yt = None
    if test is not None:
        xt, yt, more = _test_arrays(test, x, y, task, where, "x")
        notes += more
    n_classes: int | None = None
    if task == "classification":
        encoded, n_classes = _encode_labels([y] if yt is None else [y, yt], where)
        y, yt = encoded[0], (encoded[1] if yt is not None else None)
    strata = y if task == "classification" else None
    if test_fraction:
        rest, held = split_indices(
            strata, len(y), seed=_TEST_SEED, val_fraction=test_fraction, where=where, stream=2
        )
        rest.sort()  # the train/val split below must not depend on this draw's order
        xt, yt, x, y = x[held], y[held], x[rest], y[rest]
        strata = y if task == "classification" else None
    train, val = split_indices(strata, len(y), seed=seed, val_fraction=val_fraction, where=where)
    return Dataset(name, x[train], y[train], x[val], y[val], task, n_classes, xt, yt, tuple(notes))


def from_split(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    where: str,
    test: TestArrays | None = None,
) -> Dataset:
    """Validate a split the user already made; labels are encoded over every split together."""
    xt, xv = _as_x(x_train, where, "x_train"), _as_x(x_val, where, "x_val")
    _check_same_x(xt, xv, where, "x_val", "x_train")
    task, yt, notes = read_targets(y_train, where, "y_train")
    task_val, yv, more = read_targets(y_val, where, "y_val", task)
    _check_same_task(task, task_val, y_train, y_val, where, "y_val")
    _check_lengths(xt, yt, where, "x_train", "y_train")
    _check_lengths(xv, yv, where, "x_val", "y_val")
    _check_same_y(yt, yv, where, "y_val")
    notes += more
    x_test = y_test = None
    if test is not None:
        x_test, y_test, more = _test_arrays(test, xt, yt, task, where)
        notes += more
    n_classes: int | None = None
    if task == "classification":
        ys = [yt, yv] if y_test is None else [yt, yv, y_test]
        encoded, n_classes = _encode_labels(ys, where)
        yt, yv = encoded[0], encoded[1]
        y_test = encoded[2] if y_test is not None else None
    return Dataset(name, xt, yt, xv, yv, task, n_classes, x_test, y_test, tuple(notes))


def _test_arrays(
    test: TestArrays,
    x_ref: np.ndarray,
    y_ref: np.ndarray,
    task: Task,
    where: str,
    ref_key: str = "x_train",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate ``x_test``/``y_test`` against the training arrays: same sample shape and task."""
    x = _as_x(test[0], where, "x_test")
    _check_same_x(x_ref, x, where, "x_test", ref_key)
    task_test, y, notes = read_targets(test[1], where, "y_test", task)
    _check_same_task(task, task_test, y_ref, test[1], where, "y_test")
    _check_lengths(x, y, where, "x_test", "y_test")
    _check_same_y(y_ref, y, where, "y_test")
    return x, y, notes


def _check_same_x(ref: np.ndarray, x: np.ndarray, where: str, key: str, ref_key: str) -> None:
    if ref.shape[1:] != x.shape[1:] or ref.dtype != x.dtype:
        raise DataError(
            f"{where}: {ref_key} samples are {ref.shape[1:]} {ref.dtype} but {key} samples are "
            f"{x.shape[1:]} {x.dtype}; both must have the same per-sample shape and kind"
        )


def _check_same_task(
    task: Task, other: Task, y_ref: np.ndarray, y: np.ndarray, where: str, key: str
) -> None:
    if task != other:
        raise DataError(
            f"{where}: the training target is {np.asarray(y_ref).dtype} ({task}) but {key} "
            f"is {np.asarray(y).dtype} ({other}); use integer dtype in both for "
            f"classification or float for regression"
        )


def _check_same_y(ref: np.ndarray, y: np.ndarray, where: str, key: str) -> None:
    if ref.shape[1:] != y.shape[1:]:
        raise DataError(
            f"{where}: training targets are {ref.shape[1:]} per sample but {key} targets are "
            f"{y.shape[1:]}; they must match"
        )


def split_indices(
    y: np.ndarray | None,
    n: int,
    *,
    seed: int,
    val_fraction: float,
    where: str,
    stream: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) index arrays; stratified by class when ``y`` is given.

    ``round(n * val_fraction)`` samples go to validation, spread over classes by largest
    remainder so the total is exact. Both index arrays are shuffled so neither set is sorted
    by class (some backends batch without reshuffling validation). ``stream`` keeps the
    test hold-out's draws apart from the validation split's.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{where}: val_fraction is {val_fraction!r}; allowed: 0 < val_fraction < 1")
    n_val = _round_half_up(n * val_fraction)
    if n_val < 1 or n - n_val < 1:
        raise DataError(
            f"{where}: {n} samples are too few for a validation split of {val_fraction:g}; "
            f"need at least {_min_samples(val_fraction)} (one train and one validation sample)"
        )
    rng = np.random.default_rng([seed, stream])  # stream 0 generates built-ins
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


def read_targets(
    y: np.ndarray, where: str, key: str, task: Task | None = None
) -> tuple[Task, np.ndarray, list[str]]:
    """The task, the target array in the contract, and notes on how it was read.

    The rule: integer (or bool) targets are classification, float targets regression;
    ``(N, k)`` rows that are all one-hot (0/1, each summing to 1, any dtype) are class
    indices, with a note. Anything that could mean two things is refused rather than
    guessed: ``(N, k)`` integers that are not one-hot, float 0/1 columns with rows summing
    to other than 1 (multi-hot: several labels per sample, which protolab does not train),
    and three or more axes. A silent k-output regression on labels would waste a sweep.
    ``task`` is the training target's, for validation and test targets: a few val rows of
    a float regression target may look one-hot or 0/1 by chance, and are values then.
    """
    arr = np.asarray(y)
    if task == "regression" and arr.dtype.kind == "f":
        if arr.ndim > 2:
            raise DataError(
                f"{where}: {key} has shape {arr.shape} and dtype {arr.dtype}, which is "
                f"ambiguous as a target; {_ALLOWED_Y}"
            )
        return task, _as_y(arr, task, where, key), []
    if _is_one_hot(arr):
        k = int(arr.shape[1])
        note = (
            f"{where}: {key} has one-hot rows {arr.shape} {arr.dtype}; "
            f"read as class indices 0..{k - 1} (classification)"
        )
        return "classification", _as_y(arr.argmax(axis=1), "classification", where, key), [note]
    task = _infer_task(arr, where, key)
    _check_target_shape(arr, where, key)
    return task, _as_y(arr, task, where, key), []


def _is_one_hot(y: np.ndarray) -> bool:
    """``(N, k>=2)`` numeric rows of 0s and a single 1 each."""
    if y.ndim != 2 or y.shape[1] < 2 or y.shape[0] == 0 or y.dtype.kind not in "biuf":
        return False
    binary = bool(((y == 0) | (y == 1)).all())
    return binary and bool((y.sum(axis=1) == 1).all())


def _check_target_shape(y: np.ndarray, where: str, key: str) -> None:
    """Refuse target shapes with two readings (see :func:`read_targets`), naming the shape."""
    got = f"{key} has shape {y.shape} and dtype {y.dtype}"
    if y.ndim > 2:
        raise DataError(f"{where}: {got}, which is ambiguous as a target; {_ALLOWED_Y}")
    if y.ndim != 2 or y.shape[1] < 2 or y.dtype.kind not in "biuf" or y.shape[0] == 0:
        return
    if y.dtype.kind in "biu":
        raise DataError(
            f"{where}: {got}: integer columns that are not one-hot rows (several labels per "
            f"sample are not supported); {_ALLOWED_Y}"
        )
    if bool(((y == 0) | (y == 1)).all()):
        raise DataError(
            f"{where}: {got}: 0/1 columns whose rows do not sum to 1 (multi-hot: several "
            f"labels per sample, not supported; not taken as regression); {_ALLOWED_Y}"
        )


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
