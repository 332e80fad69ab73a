"""Optuna storage, samplers and pruners, resolved from config names through small registries."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protolab.errors import StorageError

__all__ = ["describe_storage", "make_pruner", "make_sampler", "open_storage"]


def _samplers() -> dict[str, Callable[[int], Any]]:
    import optuna

    s = optuna.samplers
    return {
        "tpe": lambda seed: s.TPESampler(seed=seed, multivariate=True, group=True),
        "random": lambda seed: s.RandomSampler(seed=seed),
        "gp": lambda seed: s.GPSampler(seed=seed),
        "cmaes": lambda seed: s.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "nsga2": lambda seed: s.NSGAIISampler(seed=seed),
        "qmc": lambda seed: s.QMCSampler(seed=seed, warn_independent_sampling=False),
    }


def make_sampler(name: str, seed: int) -> Any:
    import optuna

    with warnings.catch_warnings():  # multivariate/group TPE are "experimental" but stable
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _samplers()[name](seed)


def make_pruner(name: str) -> Any:
    import optuna

    p = optuna.pruners
    factories: dict[str, Callable[[], Any]] = {
        "none": p.NopPruner,
        "median": lambda: p.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "percentile": lambda: p.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=1),
        "hyperband": lambda: p.HyperbandPruner(min_resource=1),
        "successive_halving": lambda: p.SuccessiveHalvingPruner(min_resource=1),
    }
    return factories[name]()


def default_storage_path(cwd: Path | None = None) -> Path:
    return (cwd or Path.cwd()) / "mlruns" / "optuna.journal"


def describe_storage(url: str | None) -> str:
    from protolab.tracking import redact

    return redact(url) if url else str(default_storage_path())


def open_storage(url: str | None) -> Any:
    """An Optuna storage for ``study.storage``.

    ``None`` is a journal file under ``mlruns/``: several times cheaper per trial than
    SQLite and safe for several local worker processes (file locks). RDB URLs
    (``sqlite:///``, ``postgresql://`` ...) and ``redis://`` journals serve many machines.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if url is None or url.endswith((".journal", ".log")):
        path = default_storage_path() if url is None else Path(url.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme == "redis":
        from optuna.storages.journal import JournalRedisBackend

        return JournalStorage(JournalRedisBackend(url))
    if scheme == "sqlite":
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" but long stable
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
    except ImportError:
        raise StorageError(
            f"study.storage: no database driver for {describe_storage(url)!r}; for PostgreSQL "
            "install it with: pip install 'protolab[postgres]'"
        ) from None
    except Exception as e:  # unreachable server, bad credentials
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(
            f"study.storage: cannot open {describe_storage(url)!r}: {type(e).__name__}: "
            f"{describe_storage(first)}"
        ) from None
