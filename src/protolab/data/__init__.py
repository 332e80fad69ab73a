"""Datasets for protolab experiments: built-ins made in code, or the user's ``.npz``/``.csv``.

``load_dataset(spec)`` is the single entry point: a built-in name (see
:func:`dataset_names`) or a file path, relative to the experiment script's folder. Every
result honours one dtype contract so both backends see identical inputs: x is float32
(int64 for token sequences), classification y is int64 in ``[0, n_classes)``, regression y
is float32. Loading is seeded and deterministic: the same seed gives identical arrays.

A test split, when there is one (a built-in's fixed hold-out, a file's ``x_test``/``y_test``
or a CSV's ``split`` column), is on :attr:`Dataset.x_test`; sweeps never read it.

This package never imports a training framework; numpy is imported here, scikit-learn only
when a built-in that needs it is loaded.
"""

from __future__ import annotations

import importlib
import numbers
import sys
import types
from collections.abc import Callable
from pathlib import Path

from protolab.data._builtin import BUILTINS
from protolab.data._dataset import BUILTIN_TEST_FRACTION, Dataset, from_arrays
from protolab.data._declare import DataFn, collecting, declare
from protolab.data._files import SUFFIXES, load_file
from protolab.data._source import dataset_from_mapping
from protolab.data._stream import Data, Source, Stream
from protolab.data._structure import Structure, Tree, leaves, map_tree, rows
from protolab.errors import DataError

__all__ = [
    "BUILTIN_TEST_FRACTION",
    "Data",
    "DataFn",
    "Dataset",
    "Source",
    "Stream",
    "Structure",
    "Tree",
    "collecting",
    "dataset_from_mapping",
    "dataset_names",
    "leaves",
    "load_dataset",
    "map_tree",
    "rows",
]


def dataset_names() -> list[str]:
    """Names of the built-in datasets, sorted."""
    return sorted(BUILTINS)


def load_dataset(
    spec: str, base_dir: Path | None = None, *, seed: int = 0, val_fraction: float = 0.2
) -> Dataset:
    """Load a built-in by name, or a ``.npz``/``.csv`` file by path, with a seeded val split.

    Relative paths resolve against ``base_dir`` (the experiment script's folder; the working
    directory when None). ``val_fraction`` applies whenever we make the split (built-ins and
    ``x``/``y`` files); a file with ``x_train``/``x_val`` keeps the split it brings.
    Built-ins first hold out a test split (:data:`BUILTIN_TEST_FRACTION`, fixed seed).
    Raises :class:`~protolab.errors.DataError` with a one-line message for any bad input;
    how the data was read (one-hot targets) is one note line on stderr.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"dataset '{spec}': seed is {seed!r}; allowed: an integer >= 0")
    seed = int(seed)
    if spec in BUILTINS:
        x, y = BUILTINS[spec](seed)
        return from_arrays(
            spec,
            x,
            y,
            where=f"dataset '{spec}'",
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=BUILTIN_TEST_FRACTION,
        )
    if not _looks_like_path(spec):
        raise DataError(
            f"unknown dataset '{spec}'; built-ins: {', '.join(dataset_names())}; "
            f"a data file path must end in {' or '.join(SUFFIXES)}"
        )
    dataset = load_file(spec, base_dir, seed=seed, val_fraction=val_fraction)
    for note in dataset.notes:  # the user should know their targets were reinterpreted
        print(f"protolab: note: {note}", file=sys.stderr)
    return dataset


def _looks_like_path(spec: str) -> bool:
    """A spec with an extension or a folder part is a path (so a typo'd built-in is not)."""
    p = Path(spec)
    return bool(p.suffix) or len(p.parts) > 1 or spec.startswith(("~", "."))


class _DataPackage(types.ModuleType):
    """``pl.data`` is this package (the name is taken by it), so calling it declares the
    script's data function: ``@pl.data`` is :func:`declare`."""

    def __call__(self, fn: Callable[..., object]) -> DataFn:
        return declare(fn)

    def __reduce__(self) -> tuple[Callable[[str], types.ModuleType], tuple[str]]:
        """Pickled by name, as a module is: cloudpickle carries a script's function by
        value with the modules it reads, and knows only plain modules as modules."""
        return importlib.import_module, (self.__name__,)


sys.modules[__name__].__class__ = _DataPackage
