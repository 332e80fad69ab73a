"""Checks of the config against this machine: hardware that is not there is exit 2.

Everything here reads and never writes, without importing a framework, and runs before
any store is opened. Checks that need a loaded experiment, a dataset or a store live
beside those inputs (``protolab.sweep``'s checks, ``protolab._stores``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from protolab.config._model import HardwareConfig
from protolab.errors import ConfigError

__all__ = ["check_hardware", "visible_gpus"]


def visible_gpus() -> int | None:
    """GPUs this process can use, without importing a framework (None: cannot tell here)."""
    if not sys.platform.startswith("linux"):
        return None
    found = len(glob.glob("/dev/nvidia[0-9]*")) or int(os.path.exists("/dev/kfd"))
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and found:
        ids = []
        for part in env.split(","):  # CUDA stops at the first invalid id ("-1" hides all)
            if not part.strip() or part.strip().startswith("-"):
                break
            ids.append(part)
        found = min(found, len(ids))
    return found


def _has_tpu() -> bool | None:
    if not sys.platform.startswith("linux"):
        return None
    env = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "TPU_WORKER_ID")
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*")) or any(
        os.environ.get(k) for k in env
    )


def _bf16_problem(n_gpus: int) -> str | None:
    """A GPU older than Ampere (compute capability < 8.0) has no bfloat16 arithmetic."""
    smi = shutil.which("nvidia-smi")
    if smi is None or not n_gpus:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.strip().splitlines():
        name, _, cap = line.rpartition(",")
        try:
            if float(cap) < 8.0:
                return f"{name.strip()} (compute capability {cap.strip()}) has no bfloat16"
        except ValueError:
            continue
    return None


def check_hardware(hw: HardwareConfig, source: str) -> None:
    """Refuse an accelerator, device count or precision this machine does not have."""
    gpus = visible_gpus()
    seen = "CUDA_VISIBLE_DEVICES=" + os.environ["CUDA_VISIBLE_DEVICES"] if (
        "CUDA_VISIBLE_DEVICES" in os.environ
    ) else "no /dev/nvidia* device"  # fmt: skip
    if hw.accelerator == "gpu" and gpus == 0:
        raise ConfigError(
            f"{source}: hardware.accelerator: 'gpu' asked for, but this machine has no GPU "
            f"({seen}); allowed here: auto or cpu"
        )
    if hw.accelerator == "gpu" and gpus is not None and hw.devices > gpus:
        raise ConfigError(
            f"{source}: hardware.devices: {hw.devices} GPUs asked for, but this machine has "
            f"{gpus}; allowed here: 1..{gpus}"
        )
    if hw.accelerator == "tpu" and _has_tpu() is False:
        raise ConfigError(
            f"{source}: hardware.accelerator: 'tpu' asked for, but this machine has no TPU "
            f"(no /dev/accel* or /dev/vfio device, no TPU_NAME); allowed here: "
            f"{'auto, cpu or gpu' if gpus else 'auto or cpu'}"
        )
    on_gpu = hw.accelerator == "gpu" or (hw.accelerator == "auto" and bool(gpus))
    if hw.precision == "16" and hw.accelerator == "auto" and gpus == 0:
        raise ConfigError(
            f"{source}: hardware.precision: '16' (float16 mixed) needs a GPU, and this machine "
            "has none (accelerator 'auto' runs on the CPU); allowed here: '32' or 'bf16'"
        )
    if hw.precision == "bf16" and on_gpu and gpus:
        problem = _bf16_problem(gpus)
        if problem:
            raise ConfigError(
                f"{source}: hardware.precision: 'bf16' asked for, but {problem}; "
                "allowed here: '32' or '16'"
            )
