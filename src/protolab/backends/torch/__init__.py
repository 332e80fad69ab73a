"""PyTorch: the Arch as an eager module (Lightning Fabric), or compiled with ``torch.compile``.

Same file names as every backend package: ``core`` (framework set-up), ``nn`` (the Arch
as a native model), ``trainer`` (the programs), ``export`` (the trained-model handle). This
file only declares the backends, so naming them imports no framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from protolab.backends._base import Backend, EpochHook, Job, JobResult, Program

if TYPE_CHECKING:
    from protolab.backends.torch._ddp import DDPLauncher

__all__ = ["CompiledBackend", "EagerBackend"]


class EagerBackend(Backend):
    """Dynamic: eager PyTorch, each op dispatched from Python as it runs."""

    name: ClassVar[str] = "lightning"
    family = "dynamic"
    modules = ("torch", "lightning.fabric")
    fork_safe = True  # sweep --workers imports these once and forks the workers
    max_devices: ClassVar[int | None] = None  # several: DDP ranks protolab launches (_ddp)
    _launcher: DDPLauncher | None = None

    def run(self, job: Job, on_epoch: EpochHook | None = None) -> JobResult:
        """One device: in this process, as always. Several: DDP ranks of their own."""
        devices = job.hardware.devices
        if devices == 1:
            return super().run(job, on_epoch)
        from protolab.backends.torch._ddp import in_rank

        if in_rank():
            return super().run(job, on_epoch)
        if self.max_devices is not None and devices > self.max_devices:
            raise ValueError(
                f"hardware.devices: the {self.name} backend trains at most {self.max_devices} "
                f"device(s) per trial, but got devices={devices}; use the lightning backend"
            )
        if self._launcher is None:
            from protolab.backends.torch._ddp import DDPLauncher

            target = f"{type(self).__module__}:{type(self).__qualname__}"
            self._launcher = DDPLauncher(self.name, target)
        return self._launcher.run(job, on_epoch)

    def close(self) -> None:
        """Stop this mode's DDP ranks, if it started any (a trial over its time limit: the
        ranks may be what hangs); the next multi-device job starts new ones."""
        if self._launcher is not None:
            self._launcher.close()

    def program(self, job: Job) -> Program:
        from protolab.backends.torch.trainer import program

        return program(self.name, job)


class CompiledBackend(EagerBackend):
    """Dynamic, compiled: the same loop with ``torch.compile`` (inductor) programs."""

    name: ClassVar[str] = "torch-compile"
    # DDP over inductor graphs would compile once per rank (10-30 s each on a CPU) and
    # needs compiled-autograd hooks for the all-reduce: not wired, refused up front.
    max_devices: ClassVar[int | None] = 1

    def program(self, job: Job) -> Program:
        from protolab.backends.torch.trainer import program

        return program(self.name, job, compiled=True)

    def compile_cache_warm(self, job: Job) -> bool:
        """Whether the persistent compile cache holds ``job``'s compile: the aliases'
        calibration tries this mode then (warm, its compile costs a fraction of cold)."""
        from protolab.backends.torch.trainer import compile_cache_warm

        return compile_cache_warm(self.name, job)

    def release(self) -> None:
        """A finished trial's compiled graphs are never reused: drop them (bounded memory)."""
        import torch

        torch._dynamo.reset()
