"""Compiled programs kept between the jobs of one warm process (``protolab watch``).

A sweep builds every job afresh: each trial is a new architecture, and a reused program
would hide the compile time a trial is meant to measure. A warm process reruns the *same*
model after small edits, so there the compiled programs are kept, keyed by what determines
them (architecture hash, data shapes and dtypes, batch, steps per epoch, mode, optimizer,
precision, hardware), and a job that matches an entry only resets the weights and assigns
the new hyperparameters (the learning rate is a variable of the programs, not a constant
traced into them). A config-only edit (lr, epochs, seed) then reruns without compiling.

The cache is off unless ``PROTOLAB_PROGRAM_CACHE`` holds a size (entries per mode; the
variable also reaches a backend's worker process). It is a small LRU: the oldest entry is
dropped, and collected, when a new one would exceed the size, so memory does not grow edit
after edit. Every program reports ``protolab.compiles`` (programs traced or compiled during
the job) and ``protolab.program_cache`` (``hit``, ``miss`` or ``off``).
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from protolab.backends._base import Job

__all__ = ["ENV", "ProgramCache", "cache_size", "job_key"]

ENV = "PROTOLAB_PROGRAM_CACHE"
T = TypeVar("T")


def cache_size() -> int:
    """Entries kept per mode (0: the cache is off)."""
    try:
        return max(int(os.environ.get(ENV, "0") or 0), 0)
    except ValueError:
        return 0


def job_key(backend: str, job: Job, *extra: Hashable) -> tuple[Hashable, ...]:
    """What determines a job's compiled programs; ``extra`` adds what only the mode knows.

    Not in the key: the learning rate (a variable), epochs and the seed (arguments of the
    programs or initial values), and the data's values (only its shapes are traced).
    """
    ds, tr, hw = job.dataset, job.train, job.hardware
    return (
        backend,
        job.arch.hash,
        ds.task,
        tuple(ds.x_train.shape),
        str(ds.x_train.dtype),
        tuple(ds.y_train.shape),
        str(ds.y_train.dtype),
        tuple(ds.x_val.shape),
        tr.batch_size,
        tr.max_steps,
        tr.optimizer,
        tr.weight_decay,
        hw.precision,
        hw.accelerator,
        hw.devices,
        hw.threads,
        _custom_code(job.arch.layers),
        *extra,
    )


def _custom_code(layers: tuple[object, ...]) -> tuple[str, ...]:
    """Fingerprints of the user code that builds the Arch's custom layers (nested too).

    A custom layer's builders live in the user's script: editing one changes the model
    without changing the Arch hash (its fields), so the source file is part of the key.
    """
    from protolab.arch._custom import CustomLayer

    out: list[str] = []
    for item in layers:
        if isinstance(item, CustomLayer):
            out.append(_source_hash(type(item)))
        inner = getattr(item, "layers", None)
        if isinstance(inner, tuple):
            out += _custom_code(inner)
    return tuple(out)


def _source_hash(cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else ""
    except OSError:
        digest = ""
    return f"{cls.__qualname__}:{digest or id(cls)}"


class ProgramCache(Generic[T]):
    """A small LRU of compiled programs, off when :func:`cache_size` is 0."""

    def __init__(self) -> None:
        self._entries: OrderedDict[Hashable, T] = OrderedDict()

    def get(self, key: Hashable) -> T | None:
        if cache_size() == 0:
            return None
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: T) -> None:
        size = cache_size()
        if size == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        evicted = False
        while len(self._entries) > size:
            self._entries.popitem(last=False)
            evicted = True
        if evicted:  # compiled programs are closures over their model: reference cycles
            gc.collect()

    def clear(self) -> None:
        self._entries.clear()
        gc.collect()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def status(hit: bool) -> str:
        """The ``protolab.program_cache`` tag of a job."""
        if cache_size() == 0:
            return "off"
        return "hit" if hit else "miss"
