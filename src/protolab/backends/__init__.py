"""Training backends: every way of running a model, behind one small contract and a registry.

Each backend package has the same file names (``core``, ``nn``, ``trainer``, ``export``), as
Keras 3 keeps ``backend/<name>/``. Backends are resolved by name through a registry of
import paths, so selecting one never imports another's framework and listing them imports
none. A plugin registers by entry point (group ``protolab.backends``) or
:func:`register_backend`, and then works in configs, sweeps and reports unchanged.
"""

from protolab.backends._base import (
    Backend,
    DeviceInfo,
    EpochFit,
    EpochHook,
    Job,
    JobResult,
    Program,
    TrainedModel,
    TrainSettings,
)
from protolab.backends._registry import (
    ALIASES,
    FAMILIES,
    BackendInfo,
    backend_info,
    backend_names,
    default_backends,
    expand_aliases,
    family_members,
    get_backend,
    keeps_programs,
    register_backend,
)

__all__ = [
    "ALIASES",
    "FAMILIES",
    "Backend",
    "BackendInfo",
    "DeviceInfo",
    "EpochFit",
    "EpochHook",
    "Job",
    "JobResult",
    "Program",
    "TrainSettings",
    "TrainedModel",
    "backend_info",
    "backend_names",
    "default_backends",
    "expand_aliases",
    "family_members",
    "get_backend",
    "keeps_programs",
    "register_backend",
]
