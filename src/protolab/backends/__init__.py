"""Training backends: one module per execution model behind one small contract.

Backends are resolved by name through a registry of import paths, so selecting ``keras``
never imports torch and listing backends imports neither.
"""

from protolab.backends._base import (
    Backend,
    EpochHook,
    Job,
    JobResult,
    TrainSettings,
    backend_names,
    get_backend,
    register_backend,
)

__all__ = [
    "Backend",
    "EpochHook",
    "Job",
    "JobResult",
    "TrainSettings",
    "backend_names",
    "get_backend",
    "register_backend",
]
