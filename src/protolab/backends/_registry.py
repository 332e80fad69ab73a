"""Backend names -> implementations, family aliases, and plugins (no framework imports here).

A backend is registered as ``"package.module:Class"`` and imported on first use, so listing
or validating names costs nothing and selecting one family never imports the other's
framework. Third-party backends register through the ``protolab.backends`` entry-point
group (``name = "pkg.module:Class"``) and then work in configs, sweeps and reports with no
edit to protolab.

Family aliases let a config ask for "the fastest way to run this model in each family"
instead of naming modes: ``dynamic`` and ``static`` pick, per architecture, the family's
fastest mode after a short calibration; ``auto`` means both.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Literal

from protolab._frameworks import KERAS, TORCH, check_framework
from protolab.errors import ConfigError

if TYPE_CHECKING:
    from protolab.backends._base import Backend

__all__ = [
    "ALIASES",
    "FAMILIES",
    "NAMES",
    "BackendInfo",
    "backend_info",
    "backend_names",
    "check_backend_names",
    "default_backends",
    "expand_aliases",
    "family_members",
    "fork_safe_modules",
    "get_backend",
    "keeps_programs",
    "load_backends",
    "register_backend",
]

Family = Literal["dynamic", "static"]
FAMILIES: tuple[Family, ...] = ("dynamic", "static")
ALIASES: dict[str, tuple[Family, ...]] = {
    "dynamic": ("dynamic",),
    "static": ("static",),
    "auto": ("dynamic", "static"),
}
_ENTRY_POINTS = "protolab.backends"


@dataclass(frozen=True)
class BackendInfo:
    """What the registry knows of a backend without importing its framework."""

    name: str
    target: str  # "package.module:Class"
    family: Family
    mode: str  # a few words for tables and the UI ("eager", "whole-epoch XLA" ...)
    eager: bool = False  # the reference every compiled mode's break-even is measured against
    calibrate: bool = True  # a candidate when an alias picks the family's fastest mode
    builds: str = ""  # the framework whose builder makes its model (custom layers need it)

    def __post_init__(self) -> None:
        if self.builds:
            check_framework(self.builds)


_T, _K = TORCH, KERAS
_BUILTIN = (
    BackendInfo(
        "lightning", "protolab.backends.torch:EagerBackend", "dynamic", "eager", True, builds=_T
    ),
    # Not an alias candidate: inductor's compile costs 10-30 s per model on a CPU, more than
    # most research trials save with it; name it to measure it (benchmarks/ rows have it).
    BackendInfo(
        "torch-compile",
        "protolab.backends.torch:CompiledBackend",
        "dynamic",
        "compiled",
        calibrate=False,
        builds=_T,
    ),
    BackendInfo(
        "tf-graph", "protolab.backends.tensorflow:GraphBackend", "static", "graph", builds=_K
    ),
    BackendInfo("keras", "protolab.backends.tensorflow:XlaBackend", "static", "XLA", builds=_K),
    BackendInfo("jax", "protolab.backends.jax:JaxBackend", "static", "jit", builds=_K),
)
_REGISTRY: dict[str, BackendInfo] = {b.name: b for b in _BUILTIN}
_INSTANCES: dict[str, Backend] = {}
_DEFAULT = ("lightning",)


def register_backend(
    name: str,
    target: str,
    family: Family | None = None,
    mode: str = "",
    *,
    eager: bool = False,
    calibrate: bool = True,
) -> None:
    """Register ``"package.module:Class"`` under ``name`` (imported on first use).

    ``family`` defaults to the class's own ``family`` (which imports the module now).
    """
    if name in ALIASES:
        raise ValueError(f"{name!r} is a family alias; pick another backend name")
    if family is None:
        family = _load_class(target).family
    _REGISTRY[name] = BackendInfo(name, target, family, mode or name, eager, calibrate)
    _INSTANCES.pop(name, None)


@cache
def _plugins_loaded() -> bool:
    """Register entry-point backends once per process (cheap: metadata only)."""
    for ep in importlib.metadata.entry_points(group=_ENTRY_POINTS):
        if ep.name not in _REGISTRY:
            register_backend(ep.name, ep.value)
    return True


def backend_names() -> list[str]:
    """Every registered backend, built-ins first in registry order (stable for tables)."""
    _plugins_loaded()
    return list(_REGISTRY)


def backend_info(name: str) -> BackendInfo:
    _plugins_loaded()
    info = _REGISTRY.get(name)
    if info is None:
        raise ConfigError(
            f"backends: unknown backend {name!r}; allowed: {', '.join(backend_names())}"
            f" or an alias: {', '.join(ALIASES)}"
        )
    return info


def default_backends() -> list[str]:
    return list(_DEFAULT)


def check_backend_names(names: list[str]) -> None:
    """Raise ValueError naming what is allowed when a name is neither a backend nor an alias."""
    allowed = backend_names()
    for name in names:
        if name not in _REGISTRY and name not in ALIASES:
            raise ValueError(
                f"unknown backend {name!r}; allowed: {', '.join(allowed)}, "
                f"or a family alias: {', '.join(ALIASES)}"
            )


class _Names:
    """The registry as a config sees it (``protolab.config.BackendNames``): handed to
    ``load_config`` so the config checks backend names without importing a backend."""

    def default_backends(self) -> list[str]:
        return default_backends()

    def check_backend_names(self, names: list[str]) -> None:
        check_backend_names(names)


NAMES = _Names()


def family_members(family: Family, frameworks: tuple[str, ...] | None = None) -> list[str]:
    """The backends an alias may pick from for ``family`` (that build with ``frameworks``)."""
    return [
        n
        for n in backend_names()
        if _REGISTRY[n].family == family
        and _REGISTRY[n].calibrate
        and (frameworks is None or not _REGISTRY[n].builds or _REGISTRY[n].builds in frameworks)
    ]


def keeps_programs(names: list[str]) -> bool:
    """Whether any of these backends (or aliases) is static: its framework keeps every
    program it compiled for the life of the process, so a long-lived worker grows."""
    families = [n if n in FAMILIES else backend_info(n).family for n in expand_aliases(names)]
    return "static" in families


def fork_safe_modules(names: list[str]) -> list[str]:
    """What ``sweep --workers`` may import once before forking its workers: the modules
    of these backends (or of every mode an alias may pick) that are safe to fork after."""
    members = [
        m for n in expand_aliases(names) for m in (family_members(n) if n in FAMILIES else [n])
    ]
    out: list[str] = []
    for name in members:
        cls = _load_class(backend_info(name).target)
        if cls.fork_safe and not cls.needs_own_process():
            out += [m for m in cls.modules if m not in out]
    return out


def expand_aliases(names: list[str]) -> list[str]:
    """Aliases -> family names (``auto`` -> dynamic, static); backend names stay as they are."""
    out: list[str] = []
    for name in names:
        for item in ALIASES.get(name, (name,)):
            if item not in out:
                out.append(item)
    return out


def _load_class(target: str) -> type[Backend]:
    module_name, _, cls_name = target.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module_name), cls_name)
    return cls


def get_backend(name: str) -> Backend:
    """The (per-process, reused) backend instance for ``name``; imports it lazily.

    A backend that needs its own process (``Backend.process_env``: Keras' backend is fixed
    per process) is handed out as a proxy that runs it in a worker process, under the same
    :class:`Backend` contract.
    """
    if name not in _INSTANCES:
        cls = _load_class(backend_info(name).target)
        if cls.needs_own_process():
            from protolab.backends._process import ProcessBackend

            _INSTANCES[name] = ProcessBackend(name, cls)
        else:
            _INSTANCES[name] = cls()
    return _INSTANCES[name]


def load_backends(names: Iterable[str]) -> None:
    """Import every named backend's framework, then wait until all are in.

    A worker-process backend starts first and imports while this process imports the
    others (the overlap saves start-up time); the wait keeps that import out of every
    timed job.
    """
    backends = sorted((get_backend(name) for name in names), key=lambda b: not b.loads_elsewhere)
    for backend in backends:
        backend.load()
    for backend in backends:
        backend.wait_loaded()
