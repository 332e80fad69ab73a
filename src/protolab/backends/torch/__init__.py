"""PyTorch: the Arch as an eager module (Lightning Fabric), or compiled with ``torch.compile``.

Same file names as every backend package: ``core`` (framework set-up), ``nn`` (the Arch
as a native model), ``trainer`` (the programs), ``export`` (the trained-model handle). This
file only declares the backends, so naming them imports no framework.
"""

from __future__ import annotations

from typing import ClassVar

from protolab.backends._base import Backend, Job, Program

__all__ = ["CompiledBackend", "EagerBackend"]


class EagerBackend(Backend):
    """Dynamic: eager PyTorch, each op dispatched from Python as it runs."""

    name: ClassVar[str] = "lightning"
    family = "dynamic"
    modules = ("torch", "lightning.fabric")
    # OpenMP threads that spin-wait collapse under any CPU contention (see protolab.cli);
    # takes effect only if torch is not loaded yet.
    env_defaults: ClassVar[dict[str, str]] = {"OMP_WAIT_POLICY": "PASSIVE"}
    max_devices = 1  # multi-device DDP trials are not wired yet

    def program(self, job: Job) -> Program:
        from protolab.backends.torch.trainer import EagerProgram

        return EagerProgram(self.name, job)


class CompiledBackend(EagerBackend):
    """Dynamic, compiled: the same loop with ``torch.compile`` (inductor) programs."""

    name: ClassVar[str] = "torch-compile"

    def program(self, job: Job) -> Program:
        from protolab.backends.torch.trainer import EagerProgram

        return EagerProgram(self.name, job, compiled=True)

    def release(self) -> None:
        """A finished trial's compiled graphs are never reused: drop them (bounded memory)."""
        import torch

        torch._dynamo.reset()
