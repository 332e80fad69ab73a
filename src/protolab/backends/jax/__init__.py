"""Keras 3 on JAX: the Arch as a Keras model, trained by a jitted whole-epoch ``fori_loop``.

Same file names as every backend package: ``core`` (framework set-up), ``nn`` (the Arch
as a native model), ``trainer`` (the programs), ``export`` (the trained-model handle).

Keras' backend is fixed when Keras is imported, so this mode always runs in a worker
process of its own (``process_env``): the registry hands out a proxy with the same
contract, and a sweep can put it beside the TensorFlow modes transparently.
"""

from __future__ import annotations

from typing import ClassVar

from protolab.backends._base import Backend, Job, Program

__all__ = ["JaxBackend"]


class JaxBackend(Backend):
    """Static: Keras on JAX, a whole epoch as one XLA program (``jax.jit`` of a loop)."""

    name: ClassVar[str] = "jax"
    family = "static"
    modules = ("jax", "keras")
    process_env: ClassVar[dict[str, str]] = {"KERAS_BACKEND": "jax"}
    environ: ClassVar[dict[str, str]] = {"KERAS_BACKEND": "jax"}
    max_devices = 1  # the Keras distribution API is not wired yet

    def program(self, job: Job) -> Program:
        from protolab.backends.jax import core

        core.set_threads(job.hardware.threads)  # before the process's first computation
        from protolab.backends.jax._fit import fit_program
        from protolab.backends.jax.trainer import JaxProgram

        # a compiled keras.Model trains by its own fit; everything else by our program
        return fit_program(self.name, job) or JaxProgram(self.name, job)

    def release(self) -> None:
        import gc

        import keras

        gc.collect()
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")
