"""Training backends: every way of running a model, behind one small contract and a registry.

Each backend package has the same file names (``core``, ``nn``, ``trainer``, ``export``), as
Keras 3 keeps ``backend/<name>/``. Backends are resolved by name through a registry of
import paths, so selecting one never imports another's framework and listing them imports
none. A plugin registers by entry point (group ``protolab.backends``) or
:func:`register_backend`, and then works in configs, sweeps and reports unchanged.

Importing this package is nearly free (``protolab.arch`` imports the framework names from
it): the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from protolab._frameworks import FRAMEWORKS, KERAS, TORCH, check_framework

if TYPE_CHECKING:
    from protolab.backends._base import (
        Backend,
        DeviceInfo,
        EpochClose,
        EpochFit,
        EpochHook,
        Hardware,
        HardwareSettings,
        Job,
        JobResult,
        OwnLoop,
        Program,
        TrainedModel,
        TrainSettings,
    )
    from protolab.backends._compile_cache import (
        DEFAULT_MAX_BYTES,
        FolderUsage,
        clear_compile_cache,
        compile_cache_root,
        compile_cache_usage,
        configure_compile_cache,
        parse_size,
        trim_compile_cache,
    )
    from protolab.backends._env import environment_tags
    from protolab.backends._exportable import (
        EXPORT_META,
        META,
        ExportableModel,
        all_formats,
        backend_formats,
        load_exported,
        load_trained,
        read_meta,
        write_checkpoint,
    )
    from protolab.backends._optimizers import optimizer_frameworks
    from protolab.backends._own import check_own_job, trains_itself
    from protolab.backends._registry import (
        ALIASES,
        FAMILIES,
        NAMES,
        BackendInfo,
        backend_info,
        backend_names,
        default_backends,
        expand_aliases,
        family_members,
        fork_safe_modules,
        get_backend,
        keeps_programs,
        load_backends,
        register_backend,
    )
    from protolab.backends._threads import pin_loaded_frameworks

__all__ = [
    "ALIASES",
    "DEFAULT_MAX_BYTES",
    "EXPORT_META",
    "FAMILIES",
    "FRAMEWORKS",
    "KERAS",
    "META",
    "NAMES",
    "TORCH",
    "Backend",
    "BackendInfo",
    "DeviceInfo",
    "EpochClose",
    "EpochFit",
    "EpochHook",
    "ExportableModel",
    "FolderUsage",
    "Hardware",
    "HardwareSettings",
    "Job",
    "JobResult",
    "OwnLoop",
    "Program",
    "TrainSettings",
    "TrainedModel",
    "all_formats",
    "backend_formats",
    "backend_info",
    "backend_names",
    "check_framework",
    "check_own_job",
    "clear_compile_cache",
    "compile_cache_root",
    "compile_cache_usage",
    "configure_compile_cache",
    "default_backends",
    "environment_tags",
    "expand_aliases",
    "family_members",
    "fork_safe_modules",
    "get_backend",
    "keeps_programs",
    "load_backends",
    "load_exported",
    "load_trained",
    "optimizer_frameworks",
    "parse_size",
    "pin_loaded_frameworks",
    "read_meta",
    "register_backend",
    "trains_itself",
    "trim_compile_cache",
    "write_checkpoint",
]

# the contract needs NumPy and the registry importlib.metadata: neither loads on import
_LAZY = {
    **dict.fromkeys(
        (
            "EXPORT_META",
            "META",
            "ExportableModel",
            "all_formats",
            "backend_formats",
            "load_exported",
            "load_trained",
            "read_meta",
            "write_checkpoint",
        ),
        "protolab.backends._exportable",
    ),
    "environment_tags": "protolab.backends._env",
    **dict.fromkeys(
        (
            "DEFAULT_MAX_BYTES",
            "FolderUsage",
            "clear_compile_cache",
            "compile_cache_root",
            "compile_cache_usage",
            "configure_compile_cache",
            "parse_size",
            "trim_compile_cache",
        ),
        "protolab.backends._compile_cache",
    ),
    "check_own_job": "protolab.backends._own",
    "trains_itself": "protolab.backends._own",
    **dict.fromkeys(
        (
            "Backend",
            "DeviceInfo",
            "EpochClose",
            "EpochFit",
            "EpochHook",
            "Hardware",
            "HardwareSettings",
            "Job",
            "JobResult",
            "OwnLoop",
            "Program",
            "TrainedModel",
            "TrainSettings",
        ),
        "protolab.backends._base",
    ),
    **dict.fromkeys(
        (
            "ALIASES",
            "FAMILIES",
            "NAMES",
            "BackendInfo",
            "backend_info",
            "backend_names",
            "default_backends",
            "expand_aliases",
            "family_members",
            "fork_safe_modules",
            "get_backend",
            "keeps_programs",
            "load_backends",
            "register_backend",
        ),
        "protolab.backends._registry",
    ),
    "optimizer_frameworks": "protolab.backends._optimizers",
    "pin_loaded_frameworks": "protolab.backends._threads",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
