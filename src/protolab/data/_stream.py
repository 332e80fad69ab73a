"""Training data that streams: the user's own source, as it is.

``@pl.data`` may return ``pl.Data(train=..., val=...)`` where ``train`` is a framework's
source or arrays larger than memory. One :class:`Source` adapter per kind (as Keras 3 keeps
one ``DataAdapter`` per source kind); each mode asks for its own format in ``backends/``:

==============  ===========================================  ==================================
kind            what the user passes                         how it is read here (framework-free)
==============  ===========================================  ==================================
``dataloader``  a ``torch.utils.data.DataLoader``            iterated as is, tensors -> numpy
``torch``       a map-style ``torch.utils.data.Dataset``     batches of ``train.batch_size``
``tf.data``     a ``tf.data.Dataset`` (already batched)      ``as_numpy_iterator()``
``pydataset``   a ``keras.utils.PyDataset``                  ``ds[i]`` for ``i < len(ds)``
``generator``   a function returning an iterable of batches  called once per epoch
``arrays``      ``{"x": ..., "y": ...}``, e.g. memory-mapped   shuffled index batches per epoch
==============  ===========================================  ==================================

A batch is ``(x, y)`` or ``x`` alone (no ``y``: the model's loss reads the inputs, as an
autoencoder's or a language model's does). The validation (and test) data are read **once**
into arrays: every mode then scores the same rows the same way, and ``predict``, scores and
the report read them as they read any dataset's. The training source is what streams, epoch
after epoch, so augmentation is drawn afresh each epoch as in the user's own loop.

Nothing here imports a framework: an object's kind is read from its class's module name,
and tensors become numpy through ``__array__`` (``np.asarray``). The objects themselves
never cross a process: a mode in a worker process calls the ``@pl.data`` function again with
the trial's values (:attr:`Stream.remake`), so a ``tf.data`` pipeline is rebuilt there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from protolab._frameworks import KERAS
from protolab.data._structure import Tree, concat, leaves, map_tree, rows
from protolab.errors import DataError

__all__ = ["Data", "Source", "Stream", "batch_arrays", "source_of"]

Batch = tuple[Tree, Tree | None]  # (x, y); each an array, or a dict/tuple of arrays


@dataclass(frozen=True, eq=False)
class Data:
    """What ``@pl.data`` returns for data that streams.

    ``train``: a DataLoader, a torch Dataset, a ``tf.data.Dataset``, a Keras ``PyDataset``,
    a function that returns an iterable of batches (called once per epoch), or a dict of
    arrays (``np.load(path, mmap_mode="r")`` keeps them on disk). ``val`` (required: every
    score reads it) and ``test``: any of those, read once into memory. ``steps_per_epoch``
    caps an epoch (a source without a length, such as an endless generator, needs it).
    """

    train: object
    val: object
    test: object | None = None
    steps_per_epoch: int | None = None


@dataclass(eq=False)
class Source:
    """One training source, read as numpy batches; ``obj`` is the user's object, which a
    mode that takes it natively uses as it is."""

    kind: str
    obj: object
    batch_size: int = 32  # for kinds that are not batched already (torch Dataset, arrays)
    seed: int = 0
    _epochs: int = field(default=0, repr=False)

    def length(self) -> int | None:
        """Batches per epoch when the source knows it (``len``)."""
        if self.kind == "generator":
            return None
        if self.kind in ("torch", "arrays"):
            return math.ceil(_n_samples(self) / self.batch_size)
        try:
            n = len(self.obj)  # type: ignore[arg-type]
        except TypeError:
            return None
        return n if n >= 0 else None  # tf.data: -2 unknown, -1 infinite

    def peek(self) -> Batch | None:
        """The first batch (None: the source is empty), not counted as an epoch."""
        first = next(iter(self.batches()), None)
        self._epochs = 0
        return first

    def batches(self) -> Iterator[Batch]:
        """One epoch of ``(x, y)`` numpy batches (``y`` None when the source has none)."""
        self._epochs += 1
        for raw in _raw_batches(self, self._epochs):
            yield split_batch(raw, self.kind)


def _raw_batches(src: Source, epoch: int) -> Iterable[object]:
    obj = src.obj
    if src.kind == "tf.data":
        return obj.as_numpy_iterator()  # type: ignore[attr-defined]
    if src.kind == "pydataset":
        return (obj[i] for i in range(len(obj)))  # type: ignore[arg-type, index]
    if src.kind == "generator":
        return obj()  # type: ignore[operator]
    if src.kind in ("torch", "arrays"):
        return _index_batches(src, epoch)
    return obj  # type: ignore[return-value]  # a DataLoader: iterated as is


def _index_batches(src: Source, epoch: int) -> Iterator[object]:
    """Shuffled batches by index (seeded per epoch); sorted within a batch, so a memory-
    mapped array is read in ascending order."""
    n = _n_samples(src)
    order = np.random.default_rng([src.seed, epoch]).permutation(n)
    for lo in range(0, n, src.batch_size):
        idx = np.sort(order[lo : lo + src.batch_size])
        if src.kind == "arrays":
            arrays = src.obj
            assert isinstance(arrays, Mapping)
            y = arrays.get("y")
            yield (_take(arrays["x"], idx), None if y is None else _take(y, idx))
        else:
            samples = [src.obj[int(i)] for i in idx]  # type: ignore[index]
            yield _collate(samples)


def _collate(samples: list[object]) -> object:
    """A torch Dataset's samples stacked into one batch (``(x, y)`` pairs or ``x`` alone)."""
    first = samples[0]
    if isinstance(first, tuple | list):
        return tuple(np.stack([np.asarray(s[k]) for s in samples]) for k in range(len(first)))  # type: ignore[index]
    return np.stack([np.asarray(s) for s in samples])


def _take(tree: object, idx: np.ndarray) -> Tree:
    return map_tree(lambda a: np.asarray(a[idx]), tree)


def _n_samples(src: Source) -> int:
    if src.kind == "arrays":
        assert isinstance(src.obj, Mapping)
        return rows(src.obj["x"])
    return len(src.obj)  # type: ignore[arg-type]


def split_batch(raw: object, kind: str) -> Batch:
    """``(x, y)``, ``(x,)`` or ``x`` as numpy; ``x`` and ``y`` may each be a dict or a
    tuple of arrays (several inputs or outputs). A dict batch is ``x`` alone, by input
    name (as Keras reads one)."""
    if isinstance(raw, Mapping):
        return map_tree(np.asarray, raw), None
    parts = tuple(raw) if isinstance(raw, tuple | list) else (raw,)
    if not 1 <= len(parts) <= 2:
        raise DataError(
            f"a {kind} batch has {len(parts)} parts; allowed: (x, y) or x alone (sample "
            "weights as a third part are not taken)"
        )
    x = map_tree(np.asarray, parts[0])
    return x, (map_tree(np.asarray, parts[1]) if len(parts) == 2 else None)


def source_of(obj: object, where: str, key: str) -> Source:
    """The adapter for a user's object, by the module of its class (no framework import)."""
    kind = _kind(obj)
    if kind is None:
        raise DataError(
            f"{where}: {key} is a {type(obj).__module__}.{type(obj).__qualname__}; allowed: "
            "a torch DataLoader or Dataset, a tf.data.Dataset, a keras PyDataset, a function "
            "returning batches, or a dict of arrays ({'x': ..., 'y': ...})"
        )
    if kind == "arrays":
        _check_arrays(obj, where, key)
    return Source(kind, obj)


def _kind(obj: object) -> str | None:
    mods = [f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__]
    if any(m.startswith("torch.utils.data") and m.endswith(".DataLoader") for m in mods):
        return "dataloader"
    if any(m.startswith("torch.utils.data") and m.endswith(".Dataset") for m in mods):
        return "torch" if hasattr(obj, "__getitem__") and hasattr(obj, "__len__") else None
    if any(m.startswith("tensorflow.python.data") for m in mods):
        return "tf.data"
    if any(m.startswith(KERAS) and m.endswith("PyDataset") for m in mods):
        return "pydataset"
    if isinstance(obj, Mapping):
        return "arrays"
    if isinstance(obj, Iterator):
        return None  # a generator object runs once: one epoch, then nothing
    if callable(obj):
        return "generator"
    return None


def _check_arrays(obj: object, where: str, key: str) -> None:
    assert isinstance(obj, Mapping)
    unknown = sorted(set(obj) - {"x", "y"})
    if "x" not in obj or unknown:
        raise DataError(f"{where}: {key} has keys {sorted(obj)}; allowed: 'x' and an optional 'y'")
    for k, v in obj.items():
        if not all(isinstance(a, np.ndarray) and a.ndim > 0 for a in leaves(v)):
            raise DataError(
                f"{where}: {key}['{k}'] must be a numpy array with a batch axis (or a dict "
                "or tuple of them)"
            )
    if "y" in obj and rows(obj["y"]) != rows(obj["x"]):
        raise DataError(
            f"{where}: {key} has {rows(obj['x'])} x rows but {rows(obj['y'])} y rows; "
            "they must have the same length"
        )


def batch_arrays(src: Source, where: str, key: str) -> Batch:
    """Every batch of a (validation or test) source, concatenated: it is read once."""
    xs: list[Tree] = []
    ys: list[Tree] = []
    for x, y in src.batches():
        xs.append(x)
        if y is not None:
            ys.append(y)
    if not xs:
        raise DataError(f"{where}: {key} gave no batch; it must hold at least one sample")
    if ys and len(ys) != len(xs):
        raise DataError(f"{where}: {key} gives y in some batches but not in others")
    return concat(xs), (concat(ys) if ys else None)


@dataclass(frozen=True, eq=False)
class Stream:
    """A dataset's training source and how to remake it in another process.

    ``remake`` calls the ``@pl.data`` function again (with the trial's values) and returns
    its ``Data``'s training object; it travels pickled by value with the experiment, the
    source itself never does (a ``tf.data`` pipeline cannot be pickled).
    """

    source: Source
    steps_per_epoch: int | None
    remake: Callable[[], object] | None = field(default=None, repr=False)
    has_y: bool = True  # False: batches are x alone (the model's loss reads the inputs)

    @property
    def kind(self) -> str:
        return self.source.kind

    def steps(self) -> int | None:
        """Batches an epoch trains: the cap, else the source's length."""
        n = self.source.length()
        cap = self.steps_per_epoch
        return n if cap is None else (cap if n is None else min(cap, n))

    def __getstate__(self) -> dict[str, object]:
        state: dict[str, object] = dict(self.__dict__)
        if self.remake is not None:  # the recipe travels, not the source
            src = self.source
            state["source"] = Source(src.kind, None, src.batch_size, src.seed)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        src = state["source"]
        assert isinstance(src, Source)
        remake = state["remake"]
        if src.obj is None and callable(remake):
            src = Source(src.kind, remake(), src.batch_size, src.seed)
        self.__dict__.update(state)
        object.__setattr__(self, "source", src)
