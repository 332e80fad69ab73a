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

from protolab.data._dataset import (
    Dataset,
    _as_x,
    _as_y,
    _infer_task,
    from_arrays,
    from_split,
    split_indices,
)
from protolab.data._stream import Data, Source, Stream, batch_arrays, source_of
from protolab.data._structure import (
    Structure,
    Tree,
    check_tree,
    is_tree,
    leaves,
    map_tree,
    rows,
    tree_names,
)
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
            f"{{{', '.join(repr(k) for k in _SPLIT)}}}) or pl.Data(train=..., val=...), but "
            "returned "
            f"{type(value).__name__}: {value!r:.80}"
        )
    keys = sorted(value)
    if any(is_tree(v) for v in value.values()):
        return _structured_mapping(name, value, where=where, seed=seed, val_fraction=val_fraction)
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
    stream = Stream(train, None, remake, has_y=y_peek is not None)
    if is_tree(x_peek) or is_tree(y_peek):
        if data.test is not None:
            raise DataError(
                f"{where}: pl.Data(test=...) with several inputs or outputs is not taken"
            )
        ds = structured(name, x_peek, y_peek, x_val, y_val, where=where)
        return dataclasses.replace(ds, stream=_counted(stream, steps, where))
    test = None
    if data.test is not None:
        x_test, y_test = _read(data.test, where, "test")
        test = (_plain(x_test), _target(x_test, y_test))
    ds = from_split(
        name, _plain(x_peek), _target(x_peek, y_peek), _plain(x_val), _target(x_val, y_val),
        where=where, test=test,
    )  # fmt: skip
    _check_labels(ds, None if y_val is None else _plain(y_val), where)
    return dataclasses.replace(ds, stream=_counted(stream, steps, where))


def _counted(stream: Stream, steps: int | None, where: str) -> Stream:
    """The stream with its epoch length: the cap, else counted once when the source has
    no length (fit needs one)."""
    if steps is None and stream.source.length() is None:
        with _reading(where, "train"):
            steps = sum(1 for _ in stream.source.batches())
    return dataclasses.replace(stream, steps_per_epoch=steps)


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


def _peek(train: Source, where: str) -> tuple[Tree, Tree | None]:
    with _reading(where, "train"):
        first = train.peek()
    if first is None:
        raise DataError(f"{where}: pl.Data(train=...) gave no batch")
    return first


def _read(value: object, where: str, key: str) -> tuple[Tree, Tree | None]:
    if isinstance(value, Mapping) and "x" in value:
        x, y = value["x"], value.get("y")
        return map_tree(np.asarray, x), (None if y is None else map_tree(np.asarray, y))
    with _reading(where, key):
        return batch_arrays(source_of(value, where, f"pl.Data({key}=...)"), where, key)


def _plain(tree: Tree) -> np.ndarray:
    assert isinstance(tree, np.ndarray)  # a structure took the other branch
    return tree


def _target(x: Tree, y: Tree | None) -> np.ndarray:
    """No ``y``: the inputs are the target (reconstruction), as for arrays."""
    assert isinstance(x, np.ndarray) and (y is None or isinstance(y, np.ndarray))
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


def _structured_mapping(
    name: str, value: Mapping[str, object], *, where: str, seed: int, val_fraction: float
) -> Dataset:
    """``{"x": {...}, "y": {...}}`` (a seeded split of rows) or the four split keys, with
    dicts or tuples of arrays for several inputs or outputs."""
    keys = sorted(value)
    if all(k in value for k in _SPLIT) and set(keys) <= set(_SPLIT):
        split = [value[k] for k in _SPLIT]
        return structured(name, *split, where=where)
    if "x" not in value or set(keys) - {"x", "y"}:
        raise DataError(
            f"{where}: returned keys {keys} with several inputs or outputs; allowed: 'x' "
            f"with an optional 'y', or {list(_SPLIT)} (no test split)"
        )
    x, y = value["x"], value.get("y")
    x, y = _arrays_of(x, where, "x"), None if y is None else _arrays_of(y, where, "y")
    n = rows(x)
    if y is not None:
        _same_rows(x, y, where)
    train, val = split_indices(None, n, seed=seed, val_fraction=val_fraction, where=where)

    def take(tree: object, idx: np.ndarray) -> Tree:
        return map_tree(lambda a: np.asarray(a)[idx], tree)

    y_tr = None if y is None else take(y, train)
    y_va = None if y is None else take(y, val)
    return structured(name, take(x, train), y_tr, take(x, val), y_va, where=where)


def _arrays_of(tree: object, where: str, key: str) -> Tree:
    """Every leaf a numpy array with a batch axis, one row count: checked before a split
    takes rows from them."""
    names = tree_names(tree, key)
    for name, a in zip(names, leaves(tree), strict=True):
        if not isinstance(a, np.ndarray) or a.ndim == 0:
            raise DataError(
                f"{where}: {key}['{name}'] is a {type(a).__name__}; allowed: a numpy array "
                "with one row per sample"
            )
    counts = {n: len(a) for n, a in zip(names, leaves(tree), strict=True)}
    if len(set(counts.values())) > 1:
        raise DataError(
            f"{where}: {key}'s arrays have different row counts {counts}; one row per "
            "sample in each"
        )
    return map_tree(lambda a: a, tree)


def structured(
    name: str, x_tr: object, y_tr: object, x_va: object, y_va: object, *, where: str
) -> Dataset:
    """A Dataset of several inputs or outputs: every leaf checked by the single-array
    contract, validation leaves named and shaped as training's. Its plain arrays hold the
    first input and the first output (float32), for shapes only: programs that train
    protolab's own layers refuse it."""

    def as_x(a: np.ndarray, key: str) -> np.ndarray:
        return _as_x(a, where, key)

    def as_target(a: np.ndarray, key: str) -> np.ndarray:
        return _as_target(a, where, key)

    xt = check_tree(x_tr, where, "x", as_x)
    xv = check_tree(x_va, where, "x_val", as_x)
    _same_leaves(xt, xv, where, "x")
    yt = yv = None
    if (y_tr is None) != (y_va is None):
        raise DataError(f"{where}: y is given for training or validation only; both or neither")
    if y_tr is not None:
        yt = check_tree(y_tr, where, "y", as_target)
        yv = check_tree(y_va, where, "y_val", as_target)
        _same_leaves(yt, yv, where, "y")
        _same_rows(xt, yt, where)
    first_x, first_xv = leaves(xt)[0], leaves(xv)[0]
    head = leaves(yt)[0] if yt is not None else first_x
    head_v = leaves(yv)[0] if yv is not None else first_xv
    return Dataset(
        name, first_x, _flat(head), first_xv, _flat(head_v), "regression",
        structure=Structure(xt, yt, xv, yv),
    )  # fmt: skip


def _as_target(a: np.ndarray, where: str, key: str) -> np.ndarray:
    """One head's target: int64 class indices >= 0, or float32 values."""
    task = _infer_task(a, where, key)
    out = _as_y(a, task, where, key)
    if task == "classification" and len(out) and int(out.min()) < 0:
        raise DataError(f"{where}: {key} has negative label {int(out.min())}; allowed: labels >= 0")
    return out


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).reshape(len(a), -1)


def _same_leaves(train: Tree, val: Tree, where: str, key: str) -> None:
    names_t, names_v = tree_names(train, key), tree_names(val, key)
    shapes_t = [a.shape[1:] for a in leaves(train)]
    shapes_v = [a.shape[1:] for a in leaves(val)]
    if names_t != names_v or shapes_t != shapes_v:
        raise DataError(
            f"{where}: validation {key} is {dict(zip(names_v, shapes_v, strict=True))} but "
            f"training {key} is {dict(zip(names_t, shapes_t, strict=True))}; the same names "
            "and per-sample shapes in both"
        )


def _same_rows(x: Tree, y: Tree, where: str) -> None:
    if rows(x) != rows(y):
        raise DataError(
            f"{where}: x has {rows(x)} rows but y has {rows(y)}; one row per sample in both"
        )
