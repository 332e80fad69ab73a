"""Remaking a script's streamed training source in another process.

A DataLoader or a ``tf.data`` pipeline cannot travel to a mode's worker process (a
``tf.data.Dataset`` does not pickle; a DataLoader's workers belong to its process). What
travels is the recipe: the script's ``@pl.data`` function (pickled by value with the
experiment) and the values it drew from the trial's space; the worker calls it again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from protolab.data import Data, DataFn
from protolab.errors import DataError
from protolab.space import Space

__all__ = ["train_remaker"]


def train_remaker(fn: DataFn, values: Mapping[str, Any]) -> Callable[[], object]:
    """A picklable function that returns the training object ``fn`` makes for ``values``."""
    return functools.partial(_remade_train, fn, dict(values))


def _remade_train(fn: DataFn, values: dict[str, Any]) -> object:
    data = fn.call(Space(values=values))
    if not isinstance(data, Data):
        raise DataError(
            f"@data function '{fn.name}' returned pl.Data in the sweep's process but a "
            f"{type(data).__name__} in a mode's worker process; it must return the same kind"
        )
    return data.train
