"""A compiled ``keras.Model`` on the TensorFlow modes: its own ``fit``, placed and measured.

``tf-graph`` trains it with ``jit_compile=False`` (TensorFlow graphs), ``keras`` with
``jit_compile=True`` (XLA): the mode decides, whatever the user's compile resolved (tags
``protolab.jit_compile`` and ``protolab.user_jit_compile``). The shared part, the fit and
its timing callback, is ``backends/_keras_fit.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import tensorflow as tf

from protolab.arch import Native
from protolab.backends._base import DeviceInfo, Job
from protolab.backends._keras_fit import KerasFit, native_keras, user_model
from protolab.backends._peak import cpu_name
from protolab.backends._threads import set_tf_threads
from protolab.backends.tensorflow import core
from protolab.errors import ArchError

__all__ = ["TFFit", "fit_program"]


def fit_program(backend: str, job: Job, jit: bool) -> TFFit | None:
    """The job's program when its model is a compiled ``keras.Model``, else None (the
    whole-epoch programs train it). Threads and devices are set before the build."""
    node = native_keras(job.arch)
    if node is None:
        return None
    core.configure()
    set_tf_threads(tf, job.hardware.threads)  # before the first TF op, or too late
    kind = _kind(job.hardware.accelerator)
    dev = "/cpu:0" if kind == "CPU" else f"/{kind.lower()}:0"
    with tf.device(dev):
        model = user_model(node, job)
    if model is None:
        return None
    return TFFit(backend, job, node, model, jit, kind, dev)


def _kind(accelerator: str) -> str:
    """``GPU`` or ``CPU``: where ``core.strategy`` would put one device (a TPU needs a
    strategy around the user's build and fit: not wired for a compiled model)."""
    if accelerator == "tpu":
        raise ArchError("pl.native: a compiled keras model does not train on a TPU yet")
    _, kind = core.strategy(accelerator, 1)
    return str(kind)


class TFFit(KerasFit):
    """The user's ``fit`` on one TensorFlow device, as a TF graph or under XLA."""

    def __init__(
        self,
        backend: str,
        job: Job,
        node: Native,
        model: keras.Model,
        jit: bool,
        kind: str,
        dev: str,
    ) -> None:
        super().__init__(backend, job, node, model, jit)
        self.kind, self.dev = kind, dev
        self.loop = "fit-xla" if jit else "fit-graph"

    @contextmanager
    def placed(self) -> Iterator[None]:
        with tf.device(self.dev):
            yield

    def device(self) -> DeviceInfo:
        if self.kind == "GPU":
            return DeviceInfo("cuda", core.gpu_name(), 0, core.gemm)
        threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
        return DeviceInfo("cpu", cpu_name(), threads, core.gemm)

    def measure(self) -> dict[str, float]:
        return {**super().measure(), "memory/peak_device_mb": core.peak_device_mb(self.kind)}

    def tags(self) -> dict[str, str]:
        return {
            **super().tags(),
            "device": self.dev,
            "tf_intra_threads": str(tf.config.threading.get_intra_op_parallelism_threads()),
        }
