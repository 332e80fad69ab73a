"""TensorFlow: the Arch as a Keras 3 model, trained by whole-epoch graphs, with or without XLA.

Same file names as every backend package: ``core`` (framework set-up), ``nn`` (the Arch
as a native model), ``trainer`` (the programs), ``export`` (the trained-model handle). This
file only declares the backends, so naming them imports no framework.
"""

from __future__ import annotations

import os
from typing import ClassVar

from protolab.backends._base import Backend, EpochHook, Job, JobResult, Program
from protolab.backends._process import ProcessBackend

# Set in a worker whose TensorFlow starts with this many logical CPU devices (core.configure)
CPU_DEVICES_ENV = "PROTOLAB_TF_CPU_DEVICES"

__all__ = ["GraphBackend", "XlaBackend"]


class XlaBackend(Backend):
    """Static: a whole epoch as one XLA-compiled program (``tf.function(jit_compile=True)``)."""

    name: ClassVar[str] = "keras"
    family = "static"
    modules = ("tensorflow", "keras")
    env_defaults: ClassVar[dict[str, str]] = {"TF_CPP_MIN_LOG_LEVEL": "3"}  # quiet C++ logs
    environ: ClassVar[dict[str, str]] = {"KERAS_BACKEND": "tensorflow"}
    jit: ClassVar[bool] = True
    _replicas: ProcessBackend | None = None  # the worker with logical CPU devices, if any

    def run(self, job: Job, on_epoch: EpochHook | None = None) -> JobResult:
        """One device, or GPUs: in this process, as always. Several CPU devices: in a worker.

        A MirroredStrategy over the CPU needs logical CPU devices, which TensorFlow only
        creates when it starts; this process's TensorFlow may be running already, so such
        jobs train in a worker started with them (behind the same contract, like jax).
        """
        devices = job.hardware.devices
        if devices == 1 or CPU_DEVICES_ENV in os.environ or not _on_cpu(job):
            return super().run(job, on_epoch)
        worker = self._replicas
        if worker is None or worker.env.get(CPU_DEVICES_ENV) != str(devices):
            if worker is not None:
                worker.close()
            worker = ProcessBackend(self.name, type(self), {CPU_DEVICES_ENV: str(devices)})
            self._replicas = worker
        return worker.run(job, on_epoch)

    def program(self, job: Job) -> Program:
        from protolab.backends.tensorflow._fit import fit_program
        from protolab.backends.tensorflow.trainer import TFProgram

        # a compiled keras.Model trains by its own fit; everything else by our programs
        return fit_program(self.name, job, self.jit) or TFProgram(self.name, job, jit=self.jit)

    def release(self) -> None:
        """Drop Keras' global graph state so 100 trials do not grow memory.

        A trial's compiled programs are closures over its model; they form reference
        cycles, so the collector runs before the session is cleared.
        """
        import gc

        import keras

        if self._replicas is not None:
            self._replicas.release()
        gc.collect()
        keras.backend.clear_session(free_memory=True)
        keras.mixed_precision.set_global_policy("float32")


class GraphBackend(XlaBackend):
    """Static without XLA: the same whole-epoch program run as a TensorFlow graph."""

    name: ClassVar[str] = "tf-graph"
    jit: ClassVar[bool] = False


def _on_cpu(job: Job) -> bool:
    """Whether ``job`` trains on the CPU (``auto`` without a GPU), as ``core.strategy`` picks."""
    accelerator = job.hardware.accelerator
    if accelerator != "auto":
        return accelerator == "cpu"
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")
