"""``hardware.threads``: cap the CPU threads a trial's framework uses inside one op.

Why a knob and not only ``OMP_NUM_THREADS``: several local workers on one study (``protolab
sweep`` started more than once on the same config) share the machine's cores. With every
worker running an all-cores intra-op pool, small GEMMs thrash under contention (2 threads
per trial on 2 busy cores ran ~5x slower than 1). threads = cores / workers keeps each
worker on its own cores. Environment variables still work, but must be set before the
framework loads and are easy to forget; the config travels with the study.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

__all__ = ["pin_loaded_frameworks", "set_tf_threads", "set_torch_threads"]


def pin_loaded_frameworks(n: int | None) -> None:
    """Apply ``n`` now to each framework the experiment script already imported.

    A script that builds a compiled ``keras.Model`` or a ``tf.data`` pipeline starts
    TensorFlow's runtime in the sweep's own dry run, before any trial could set its pools:
    called right after the script is imported, this is the first setting TF sees. Imports
    nothing: a framework the script did not import is set by its trials as before.
    """
    if n is None:
        return
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "config"):
        set_tf_threads(tf, n)
    if "torch" in sys.modules:
        set_torch_threads(n)


def set_torch_threads(n: int | None) -> None:
    """Set torch's intra-op thread pool to ``n`` threads; ``None`` leaves torch's default.

    ``torch.set_num_threads`` may be called at any time, so every trial applies its own value.
    The inter-op pool is left alone: eager training does not use it, and
    ``torch.set_num_interop_threads`` raises once any inter-op work has started.
    """
    if n is None:
        return
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def set_tf_threads(tf: Any, n: int | None) -> None:
    """Set TensorFlow's intra- and inter-op thread pools to ``n``; ``None`` leaves the default.

    TF reads these only when its runtime initialises, i.e. before the first op runs in the
    process; afterwards the setters raise ``RuntimeError``. That error is swallowed here, so
    the first value wins for the process: a later trial asking for a different count trains
    with the pools already built rather than crashing (the ``tf_intra_threads`` tag records
    what TF actually uses). Within one sweep every trial has the same config, so in practice
    this only matters when one process runs jobs with different settings.
    """
    if n is None:
        return
    threading = tf.config.threading
    with contextlib.suppress(RuntimeError):  # runtime already initialised: first value wins
        threading.set_intra_op_parallelism_threads(n)
    with contextlib.suppress(RuntimeError):
        threading.set_inter_op_parallelism_threads(n)
