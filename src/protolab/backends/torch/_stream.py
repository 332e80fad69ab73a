"""A streamed training source as the torch modes read it (``pl.Data(train=...)``).

A DataLoader is the user's and is used as it is: its workers, its sampler, its collate,
its augmentation. A map-style ``Dataset`` gets the DataLoader a PyTorch user writes by
default (``batch_size`` from the config, ``shuffle=True``, seeded). The other kinds (a
``tf.data`` pipeline, a Keras ``PyDataset``, a generator function, arrays on disk) are read
as numpy batches by their adapter and become tensors without a copy (``torch.from_numpy``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from protolab.backends._base import TrainSettings
from protolab.data import Source, Stream, map_tree

__all__ = ["torch_loader"]


def torch_loader(stream: Stream, train: TrainSettings) -> DataLoader[Any]:
    """The DataLoader a torch mode trains on, for this trial's settings."""
    src = stream.source
    if src.kind == "dataloader":
        loader = src.obj
        assert isinstance(loader, DataLoader)
        return loader
    if src.kind == "torch":
        generator = torch.Generator().manual_seed(train.seed)
        return DataLoader(
            src.obj,  # type: ignore[arg-type]
            batch_size=train.batch_size,
            shuffle=True,
            generator=generator,
        )
    src.batch_size, src.seed = train.batch_size, train.seed
    return DataLoader(_Batches(src), batch_size=None)


class _Batches(IterableDataset[Any]):
    """One epoch of the adapter's numpy batches per iteration, as tensors."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def __iter__(self) -> Iterator[Any]:
        for x, y in self.source.batches():
            xt = map_tree(_tensor, x)
            yield xt if y is None else (xt, map_tree(_tensor, y))


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(_writable(a))


def _writable(a: np.ndarray) -> np.ndarray:
    """A tensor may be written to: a read-only batch (tf.data's, a memory map's) is copied,
    any other is shared as it is."""
    return np.require(a, requirements=["C", "W"])
