"""TensorFlow: the Arch as a Keras 3 model, trained by whole-epoch graphs, with or without XLA.

Same file names as every backend package: ``core`` (framework set-up), ``nn`` (the Arch
as a native model), ``trainer`` (the programs), ``export`` (the trained-model handle). This
file only declares the backends, so naming them imports no framework.
"""

from __future__ import annotations

from typing import ClassVar

from protolab.backends._base import Backend, Job, Program

__all__ = ["GraphBackend", "XlaBackend"]


class XlaBackend(Backend):
    """Static: a whole epoch as one XLA-compiled program (``tf.function(jit_compile=True)``)."""

    name: ClassVar[str] = "keras"
    family = "static"
    modules = ("tensorflow", "keras")
    env_defaults: ClassVar[dict[str, str]] = {"TF_CPP_MIN_LOG_LEVEL": "3"}  # quiet C++ logs
    environ: ClassVar[dict[str, str]] = {"KERAS_BACKEND": "tensorflow"}
    jit: ClassVar[bool] = True

    def program(self, job: Job) -> Program:
        from protolab.backends.tensorflow.trainer import TFProgram

        return TFProgram(self.name, job, jit=self.jit)

    def release(self) -> None:
        """Drop Keras' global graph state so 100 trials do not grow memory.

        A trial's compiled programs are closures over its model; they form reference
        cycles, so the collector runs before the session is cleared.
        """
        import gc

        import keras

        gc.collect()
        keras.backend.clear_session(free_memory=True)
        keras.mixed_precision.set_global_policy("float32")


class GraphBackend(XlaBackend):
    """Static without XLA: the same whole-epoch program run as a TensorFlow graph."""

    name: ClassVar[str] = "tf-graph"
    jit: ClassVar[bool] = False
