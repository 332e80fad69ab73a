"""TensorFlow set-up shared by the graph and XLA modes: devices, strategies, probes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import tensorflow as tf

__all__ = [
    "configure",
    "fits_on_device",
    "gemm",
    "gpu_name",
    "peak_device_mb",
    "strategy",
]

_DEVICE_FRACTION = 0.25  # whole-epoch loop only when the data uses < 25 % of device memory
_configured = False


def configure() -> None:
    """Once per process: GPU memory growth (so TF leaves memory to torch), quiet logs.

    Every trial builds new programs on purpose (a new architecture each time), so TF's
    "retracing" warnings are noise here.
    """
    global _configured
    if _configured:
        return
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "0":
        tf.get_logger().setLevel("ERROR")
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # already initialised: too late, harmless
            tf.config.experimental.set_memory_growth(gpu, True)
    _split_cpu(int(os.environ.get("PROTOLAB_TF_CPU_DEVICES", "1")))
    _configured = True


def _split_cpu(n: int) -> None:
    """``n`` logical CPU devices (a MirroredStrategy's replicas on a CPU-only machine).

    Only possible before TensorFlow initialises, so the worker that sets
    ``PROTOLAB_TF_CPU_DEVICES`` calls this before its first op; elsewhere ``n`` is 1.
    """
    if n <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    config = [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    try:
        tf.config.set_logical_device_configuration(cpu, config)
    except RuntimeError as e:
        raise RuntimeError(
            f"hardware.devices={n} on the CPU needs {n} logical CPU devices, which TensorFlow "
            f"creates only before it initialises, but it already has: {e}"
        ) from None


def strategy(accelerator: str, devices: int) -> tuple[Any, str]:
    """A tf.distribute strategy for the hardware config, and the device kind it runs on."""
    gpus = tf.config.list_logical_devices("GPU")
    if accelerator == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver), "TPU"
    if accelerator in ("gpu", "auto") and gpus:
        if devices > 1:
            if len(gpus) < devices:
                raise RuntimeError(f"hardware.devices={devices}, but {len(gpus)} GPUs are visible")
            return tf.distribute.MirroredStrategy([g.name for g in gpus[:devices]]), "GPU"
        return tf.distribute.OneDeviceStrategy(gpus[0].name), "GPU"
    if accelerator == "gpu":
        raise RuntimeError("hardware.accelerator='gpu', but TensorFlow sees no GPU")
    if devices > 1:  # replicas on logical CPU devices (configure(): a worker of their own)
        cpus = tf.config.list_logical_devices("CPU")
        if len(cpus) < devices:
            raise RuntimeError(
                f"hardware.devices={devices} on the CPU needs {devices} logical CPU devices, "
                f"but TensorFlow has {len(cpus)}; the TensorFlow backends' run() starts a "
                "worker with them (PROTOLAB_TF_CPU_DEVICES)"
            )
        return tf.distribute.MirroredStrategy([c.name for c in cpus[:devices]]), "CPU"
    return tf.distribute.OneDeviceStrategy("/cpu:0"), "CPU"


def fits_on_device(kind: str, nbytes: int) -> bool:
    if kind == "CPU":
        return True
    try:
        info = tf.config.experimental.get_memory_info(f"{kind}:0")
        total = info.get("limit") or info.get("peak") or 0
    except (ValueError, RuntimeError):
        return True
    return not total or nbytes < _DEVICE_FRACTION * total


def gpu_name() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return str(details.get("device_name", "GPU"))


def peak_device_mb(kind: str) -> float:
    if kind == "CPU":
        return 0.0
    try:
        return float(tf.config.experimental.get_memory_info(f"{kind}:0")["peak"]) / 2**20
    except (ValueError, RuntimeError, KeyError):
        return 0.0


def gemm(n: int, dtype: str) -> Callable[[], None]:
    """One synchronous n x n matmul (the MFU peak probe), in TensorFlow."""
    a = tf.random.normal((n, n), dtype=getattr(tf, dtype))
    b = tf.random.normal((n, n), dtype=getattr(tf, dtype))

    def run() -> None:
        tf.linalg.matmul(a, b).numpy()

    return run
