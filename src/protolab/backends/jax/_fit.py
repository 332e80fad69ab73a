"""A compiled ``keras.Model`` on the JAX mode: its own ``fit``, under ``jax.jit``.

The model is built (and compiled by the user's builder) in this mode's worker process,
where Keras runs on JAX; ``fit`` then jits its train step (``jit_compile=True``: the mode
is XLA, whatever the user's compile resolved). The shared part, the fit and its timing
callback, is ``backends/_keras_fit.py``.
"""

from __future__ import annotations

import os

import jax

from protolab.backends._base import DeviceInfo, Job
from protolab.backends._keras_fit import KerasFit, native_keras, user_model
from protolab.backends._peak import cpu_name
from protolab.backends.jax import core

__all__ = ["JaxFit", "fit_program"]


def fit_program(backend: str, job: Job) -> JaxFit | None:
    """The job's program when its model is a compiled ``keras.Model``, else None (the
    whole-epoch program trains it)."""
    node = native_keras(job.arch)
    if node is None:
        return None
    model = user_model(node, job)
    if model is None:
        return None
    return JaxFit(backend, job, node, model, jit=True)


class JaxFit(KerasFit):
    """The user's ``fit`` with Keras on JAX."""

    loop = "fit-jax"

    def device(self) -> DeviceInfo:
        kind = core.device_kind()
        name = cpu_name() if kind == "cpu" else str(jax.devices()[0].device_kind)
        threads = 1 if "multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "") else 0
        return DeviceInfo(kind, name, threads or (os.cpu_count() or 1), core.gemm)

    def tags(self) -> dict[str, str]:
        return {**super().tags(), "device": str(jax.devices()[0])}
