"""Arrays a script's ``@pl.data`` function returns, turned into a :class:`Dataset`.

The function's result goes through the same code path as an ``.npz`` file (``from_arrays``
when it gives ``x``/``y``, so the val split is seeded and stratified the same way;
``from_split`` when it gives ``x_train``/``y_train``/``x_val``/``y_val``), so the dtype
contract and every check on a file hold for it too.

Without ``y`` the task is reconstruction: ``y`` is ``x`` itself, flattened per sample and
float32, so the task is regression on the inputs and the loss is the MSE against them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from protolab.data._dataset import Dataset, from_arrays, from_split
from protolab.errors import DataError

__all__ = ["dataset_from_mapping"]

_SINGLE = ("x", "y")
_SPLIT = ("x_train", "y_train", "x_val", "y_val")
_TEST = ("x_test", "y_test")


def dataset_from_mapping(
    name: str, value: object, *, where: str, seed: int, val_fraction: float
) -> Dataset:
    """``value`` as returned by ``@pl.data``: a dict of numpy arrays, as an .npz holds."""
    source = type(value).__module__.split(".")[0]
    if source not in ("builtins", "numpy", "collections") and not isinstance(value, Mapping):
        raise DataError(
            f"{where} returned a {type(value).__module__}.{type(value).__qualname__}: a "
            "framework's data source (a DataLoader, a tf.data.Dataset) is not taken yet; "
            "return numpy arrays as a dict ({'x': ..., 'y': ...})"
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


def _array(value: object, where: str, key: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise DataError(
            f"{where}: '{key}' must be a numpy array, but got {type(value).__name__}; "
            "convert with np.asarray (a DataLoader or tf.data source is not taken yet)"
        )
    if value.ndim == 0:
        raise DataError(f"{where}: '{key}' is a scalar; need a batch axis (one row per sample)")
    return value
