"""A streamed training source as the Keras modes read it (``pl.Data(train=...)``).

Keras 3's ``fit`` takes a ``tf.data.Dataset``, a torch ``DataLoader`` and a ``PyDataset``
on every backend, each through its own ``DataAdapter``: those go in as they are (Keras'
documented conversion). A map-style torch ``Dataset``, a generator function and arrays on
disk are read as numpy batches by their adapter (``protolab.data``) and handed to ``fit`` as
a Python generator with the epoch's length, one pass of the source per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

from protolab.backends._base import TrainSettings
from protolab.data import Source, Stream

__all__ = ["keras_source"]

_NATIVE = ("dataloader", "tf.data", "pydataset")  # kinds Keras' fit adapts itself


def keras_source(stream: Stream, train: TrainSettings) -> tuple[object, bool]:
    """What ``fit`` trains on, and whether ``fit`` needs ``steps_per_epoch`` (a cap, or a
    generator of every epoch); otherwise fit reads the source to its end each epoch, as
    it does for the user (given a count, Keras keeps one iterator across epochs)."""
    src = stream.source
    if src.kind in _NATIVE:
        return src.obj, stream.steps_per_epoch is not None
    src.batch_size, src.seed = train.batch_size, train.seed
    return _epochs(src), True


def _epochs(src: Source) -> Iterator[object]:
    """Epoch after epoch of batches: fit reads ``steps_per_epoch`` of them per epoch."""
    while True:
        for x, y in src.batches():
            yield x if y is None else (x, y)
