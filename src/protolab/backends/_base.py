"""The contract every backend implements, and the name -> backend registry.

A backend turns one :class:`Job` (an Arch, a dataset, train settings, hardware) into a
:class:`JobResult` (final metrics + per-epoch history), calling an epoch hook after every
epoch. The hook is how sweeps report intermediate values, log curves and prune; the backend
knows nothing of Optuna or MLflow, so a long-lived process (``protolab watch``) or a
benchmark can call :meth:`Backend.run` repeatedly with any hook.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from protolab.errors import ArchError, ConfigError

if TYPE_CHECKING:
    from protolab.arch import Arch
    from protolab.config import HardwareConfig
    from protolab.data import Dataset

__all__ = [
    "Backend",
    "EpochHook",
    "Job",
    "JobResult",
    "TrainSettings",
    "backend_names",
    "check_output",
    "get_backend",
    "perf_metrics",
    "register_backend",
]

# Called after each epoch with (epoch starting at 1, that epoch's metrics). It may raise
# (e.g. optuna.TrialPruned) to stop the job; backends must let that propagate.
EpochHook = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainSettings:
    """Resolved (sampled) train settings of one job."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Job:
    """Everything a backend needs to train one model once."""

    arch: Arch
    dataset: Dataset
    train: TrainSettings
    hardware: HardwareConfig


@dataclass
class JobResult:
    """What a job measured: final scalars (contract names) and the per-epoch curves."""

    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


class Backend(abc.ABC):
    """One way of executing an Arch: dynamic (eager) or static (compiled graph)."""

    name: ClassVar[str]
    family: ClassVar[Literal["dynamic", "static"]]

    @abc.abstractmethod
    def run(self, job: Job, on_epoch: EpochHook | None = None) -> JobResult:
        """Build, train and evaluate ``job``; call ``on_epoch`` after each epoch."""

    def load(self) -> None:  # noqa: B027 - a hook that does nothing by default
        """Import the framework now, timed once per process; no-op by default.

        ``run`` imports what it needs itself. A sweep calls this early so the import
        overlaps other start-up work; jobs still report it as ``time/import_s``.
        """

    def release(self) -> None:  # noqa: B027 - a hook that does nothing by default
        """Free framework state between trials (caches, graphs); no-op by default."""


_DTYPES = {"32": "float32", "bf16": "bfloat16", "16": "float16"}


def perf_metrics(
    flops_per_sample: float,
    samples_per_s: float,
    kind: str,
    name: str,
    precision: str,
    threads: int,
) -> dict[str, float]:
    """Achieved training TFLOP/s and MFU against the device's measured peak.

    Training FLOPs are taken as 3x the forward FLOPs (forward + ~2x for the backward pass).
    """
    from protolab.backends._peak import peak_tflops

    peak = peak_tflops(kind, name, _DTYPES[precision], threads)
    tflops = 3.0 * flops_per_sample * samples_per_s / 1e12
    return {
        "device/peak_tflops": peak,
        "perf/tflops": tflops,
        "perf/mfu": tflops / peak if peak > 0 else float("nan"),
    }


def check_output(got: tuple[int, ...], want: tuple[int, ...], data: str) -> None:
    """The Arch's last layer must produce what the dataset's targets need."""
    if tuple(got) != tuple(want):
        raise ArchError(
            f"the Arch outputs shape {tuple(got)}, but data '{data}' needs {tuple(want)}: "
            f"end the Arch with Dense({want[-1]})"
        )


_REGISTRY: dict[str, str] = {
    "lightning": "protolab.backends._lightning:LightningBackend",
    "keras": "protolab.backends._keras:KerasBackend",
}
_INSTANCES: dict[str, Backend] = {}


def register_backend(name: str, target: str) -> None:
    """Register ``"package.module:Class"`` under ``name`` (imported on first use)."""
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The (per-process, reused) backend instance for ``name``; imports it lazily."""
    if name not in _INSTANCES:
        target = _REGISTRY.get(name)
        if target is None:
            raise ConfigError(
                f"backends: unknown backend {name!r}; allowed: {', '.join(backend_names())}"
            )
        module_name, _, cls_name = target.partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        _INSTANCES[name] = cls()
    return _INSTANCES[name]
