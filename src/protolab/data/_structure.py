"""Several inputs and several outputs: ``x`` and ``y`` as dicts (or tuples) of arrays.

A Keras Functional model with three named inputs and two heads, a LightningModule whose
``training_step`` unpacks ``(x1, x2), (y1, y2)``: their data is a *structure* of arrays, one
level deep (a dict by name, or a tuple by position), every leaf with one row per sample.
It is fed to the model as it is: Keras matches dict keys to its inputs' and outputs' names,
a LightningModule receives the same structure per batch (as tensors).

Each leaf goes through the same dtype contract as a single array: an input is float32 (or
int64 token ids), a target int64 class indices (classification head) or float32 values
(regression head). A structure's split is by rows, the same rows in every leaf. Only a
model that trains itself can take it (its own ``fit``/``training_step`` knows what each
head means); protolab scores it by what the model logs (per-head metrics under Keras' or
the module's names) and ``val/loss``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from protolab.errors import DataError

__all__ = [
    "Structure",
    "Tree",
    "check_tree",
    "concat",
    "is_tree",
    "leaves",
    "map_tree",
    "rows",
    "tree_names",
]

Tree = np.ndarray | dict[str, np.ndarray] | tuple[np.ndarray, ...]
T = TypeVar("T")


def is_tree(value: object) -> bool:
    """A dict, or a tuple/list of arrays (several inputs or outputs; a list of numbers is
    one array written as a list, and is refused as such)."""
    if isinstance(value, Mapping):
        return True
    return (
        isinstance(value, tuple | list)
        and all(getattr(v, "ndim", 0) > 0 or isinstance(v, Mapping) for v in value)
        and bool(value)
    )


def leaves(tree: object) -> list[np.ndarray]:
    if isinstance(tree, Mapping):
        return [tree[k] for k in tree]
    if isinstance(tree, tuple | list):
        return list(tree)
    return [tree]  # type: ignore[list-item]


def tree_names(tree: object, what: str) -> list[str]:
    """The leaves' names: dict keys, or ``what0, what1 ...`` by position."""
    if isinstance(tree, Mapping):
        return [str(k) for k in tree]
    if isinstance(tree, tuple | list):
        return [f"{what}{i}" for i in range(len(tree))]
    return [what]


def map_tree(fn: Callable[[np.ndarray], T], tree: object) -> T | dict[str, T] | tuple[T, ...]:
    """``fn`` on every leaf, the structure kept (dict stays dict, list becomes tuple)."""
    if isinstance(tree, Mapping):
        return {str(k): fn(v) for k, v in tree.items()}
    if isinstance(tree, tuple | list):
        return tuple(fn(v) for v in tree)
    return fn(tree)  # type: ignore[arg-type]


def rows(tree: object) -> int:
    return len(leaves(tree)[0])


def concat(trees: Sequence[object]) -> Tree:
    """Batches of one structure, concatenated leaf by leaf."""
    first = trees[0]
    if isinstance(first, Mapping):
        return {str(k): np.concatenate([t[k] for t in trees]) for k in first}  # type: ignore[index]
    if isinstance(first, tuple | list):
        return tuple(np.concatenate([t[i] for t in trees]) for i in range(len(first)))  # type: ignore[index]
    return np.concatenate(trees)  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class Structure:
    """Training and validation data of a model with several inputs or outputs."""

    x_train: Tree
    y_train: Tree | None
    x_val: Tree
    y_val: Tree | None

    @property
    def inputs(self) -> list[str]:
        return tree_names(self.x_train, "x")

    @property
    def outputs(self) -> list[str]:
        return [] if self.y_train is None else tree_names(self.y_train, "y")

    def describe(self) -> str:
        """``inputs a (12,), b (3,) -> outputs cls int64, reg (1,)`` for tags and messages."""

        def one(tree: object, what: str) -> str:
            names = tree_names(tree, what)
            return ", ".join(
                f"{n} {tuple(a.shape[1:])} {a.dtype}"
                for n, a in zip(names, leaves(tree), strict=True)
            )

        out = "none" if self.y_train is None else one(self.y_train, "y")
        return f"inputs {one(self.x_train, 'x')} -> outputs {out}"


def check_tree(
    tree: object, where: str, key: str, leaf: Callable[[np.ndarray, str], np.ndarray]
) -> Tree:
    """Every leaf checked by ``leaf`` (the single-array contract), one row count for all."""
    if isinstance(tree, Mapping) and not all(isinstance(k, str) and k for k in tree):
        raise DataError(f"{where}: {key} is a dict; its keys must be names, got {list(tree)[:6]}")
    if not leaves(tree):
        raise DataError(f"{where}: {key} is empty; give one array per input or output")
    names = tree_names(tree, key)
    for name, value in zip(names, leaves(tree), strict=True):
        if not hasattr(value, "__array__"):
            raise DataError(
                f"{where}: {key}['{name}'] is a {type(value).__name__}; allowed: an array"
            )
    checked = map_tree(lambda a: a, tree)
    named = dict(zip(names, leaves(checked), strict=True))
    out = {n: leaf(np.asarray(a), f"{key}['{n}']") for n, a in named.items()}
    counts = {n: len(a) for n, a in out.items()}
    if len(set(counts.values())) > 1:
        raise DataError(
            f"{where}: {key}'s arrays have different row counts {counts}; one row per "
            "sample in each"
        )
    if isinstance(checked, dict):
        return dict(zip(checked, out.values(), strict=True))
    return tuple(out.values()) if isinstance(checked, tuple) else next(iter(out.values()))
