"""Arrays a script's ``@pl.data`` function returns, turned into a :class:`Dataset`.

The function's result goes through the same code path as an ``.npz`` file (``from_arrays``
when it gives ``x``/``y``, so the val split is seeded and stratified the same way;
``from_split`` when it gives ``x_train``/``y_train``/``x_val``/``y_val``), so the dtype
contract and every check on a file hold for it too.

Without ``y`` the task is reconstruction: ``y`` is ``x`` itself, flattened per sample and
float32, so the task is regression on the inputs and the loss is the MSE against them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from protolab.data._dataset import Dataset, from_arrays, from_split
from protolab.data._stream import Data, Source, Stream, batch_arrays, source_of
from protolab.errors import DataError

__all__ = ["dataset_from_mapping"]

_SINGLE = ("x", "y")
_SPLIT = ("x_train", "y_train", "x_val", "y_val")
_TEST = ("x_test", "y_test")


def dataset_from_mapping(
    name: str,
    value: object,
    *,
    where: str,
    seed: int,
    val_fraction: float,
    remake: Callable[[], object] | None = None,
) -> Dataset:
    """``value`` as returned by ``@pl.data``: a dict of numpy arrays, as an .npz holds, or
    a :class:`Data` whose training source streams (``remake`` rebuilds that source in
    another process)."""
    if isinstance(value, Data):
        return dataset_from_data(name, value, where=where, seed=seed, remake=remake)
    source = type(value).__module__.split(".")[0]
    if source not in ("builtins", "numpy", "collections") and not isinstance(value, Mapping):
        raise DataError(
            f"{where} returned a {type(value).__module__}.{type(value).__qualname__}; a "
            "framework's data source goes in pl.Data(train=..., val=...); arrays as a dict "
            "({'x': ..., 'y': ...})"
        )
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise DataError(
            f"{where} must return a dict of numpy arrays ({{'x': ..., 'y': ...}} or "
            f"{{{', '.join(repr(k) for k in _SPLIT)}}}), but returned "
            f"{type(value).__name__}: {value!r:.80}"
        )
    keys = sorted(value)
    arrays = {k: _array(value[k], where, k) for k in keys}
    allowed = set(_SINGLE + _SPLIT + _TEST)
    unknown = [k for k in keys if k not in allowed]
    has_single, has_split = "x" in arrays, all(k in arrays for k in _SPLIT)
    if unknown or has_single == has_split:
        problem = f"unknown keys {unknown}" if unknown else "no complete key set"
        raise DataError(
            f"{where}: returned {problem} (keys {keys}); allowed: 'x' with an optional 'y' "
            f"(no 'y': reconstruct x), or {list(_SPLIT)}; each with optional {list(_TEST)}"
        )
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{where}: a test split needs both {list(_TEST)} (or neither)")
    if has_split:
        return from_split(name, *(arrays[k] for k in _SPLIT), where=where, test=test)
    x = arrays["x"]
    y = arrays.get("y")
    if y is None:  # reconstruction: the target is the input itself
        if test is not None:
            raise DataError(f"{where}: without 'y' a test split is 'x_test' alone; drop it")
        y = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    return from_arrays(name, x, y, where=where, seed=seed, val_fraction=val_fraction, test=test)


def dataset_from_data(
    name: str, data: Data, *, where: str, seed: int, remake: Callable[[], object] | None
) -> Dataset:
    """A streamed training source with validation (and test) arrays read from theirs.

    The first training batch stands for the training data's shapes and dtypes: it goes
    through the same checks as any array (``from_split``), beside the validation arrays, so
    task, classes and dtypes are read by one rule. A classification source's labels must
    already be ``0..K-1``: batches are fed as they come, so they cannot be re-encoded.
    """
    train = source_of(data.train, where, "pl.Data(train=...)")
    train.seed = seed
    steps = _steps(data.steps_per_epoch, where)
    x_peek, y_peek = _peek(train, where)
    x_val, y_val = _read(data.val, where, "val")
    if (y_peek is None) != (y_val is None):
        raise DataError(
            f"{where}: the training batches {'have no' if y_peek is None else 'have a'} y but "
            f"the validation data {'has none' if y_val is None else 'has one'}; both or neither"
        )
    test = None
    if data.test is not None:
        x_test, y_test = _read(data.test, where, "test")
        test = (x_test, _target(x_test, y_test))
    ds = from_split(
        name, x_peek, _target(x_peek, y_peek), x_val, _target(x_val, y_val),
        where=where, test=test,
    )  # fmt: skip
    _check_labels(ds, y_val, where)
    if steps is None and train.length() is None:
        with _reading(where, "train"):  # counted once: fit needs an epoch's length
            steps = sum(1 for _ in train.batches())
    stream = Stream(train, steps, remake, has_y=y_peek is not None)
    return dataclasses.replace(ds, stream=stream)


def _steps(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(
            f"{where}: pl.Data(steps_per_epoch={value!r}); allowed: an integer >= 1 or None"
        )
    return value


@contextmanager
def _reading(where: str, key: str) -> Iterator[None]:
    """The user's source raising (a bad transform, a missing file): one line naming it."""
    try:
        yield
    except DataError as e:
        if str(e).startswith(where):
            raise
        raise DataError(f"{where}: pl.Data({key}=...): {e}") from None
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:300]
        raise DataError(
            f"{where}: reading pl.Data({key}=...) raised {type(e).__name__}: {first}"
        ) from None


def _peek(train: Source, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    with _reading(where, "train"):
        first = train.peek()
    if first is None:
        raise DataError(f"{where}: pl.Data(train=...) gave no batch")
    return first


def _read(value: object, where: str, key: str) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(value, Mapping) and "x" in value:
        x, y = value["x"], value.get("y")
        return np.asarray(x), (None if y is None else np.asarray(y))
    with _reading(where, key):
        return batch_arrays(source_of(value, where, f"pl.Data({key}=...)"), where, key)


def _target(x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """No ``y``: the inputs are the target (reconstruction), as for arrays."""
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1) if y is None else y


def _check_labels(ds: Dataset, y_val: np.ndarray | None, where: str) -> None:
    if ds.task != "classification" or y_val is None:
        return
    raw = np.asarray(y_val)
    if raw.ndim == 1 and not np.array_equal(raw.astype(np.int64), ds.y_val):
        raise DataError(
            f"{where}: a streamed source's class labels must be 0..K-1 (they are fed to the "
            f"model as they come); got labels {np.unique(raw)[:8].tolist()}"
        )


def _array(value: object, where: str, key: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise DataError(
            f"{where}: '{key}' must be a numpy array, but got {type(value).__name__}; "
            "convert with np.asarray (a DataLoader or tf.data source is not taken yet)"
        )
    if value.ndim == 0:
        raise DataError(f"{where}: '{key}' is a scalar; need a batch axis (one row per sample)")
    return value
