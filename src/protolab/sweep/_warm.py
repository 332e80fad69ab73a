"""Warm starts: the best configurations of an earlier study (or one run) as the first trials."""

from __future__ import annotations

import re
from typing import Any

import yaml

from protolab._stores import redact
from protolab.errors import ConfigError
from protolab.sweep._context import SweepContext

__all__ = ["warm_start_params"]

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_TOP = 3  # best trials taken from a single-objective study


def _from_run(ctx: SweepContext, run_id: str) -> list[tuple[dict[str, Any], str]]:
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    uri = ctx.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"--from: no MLflow run {run_id}: there is no store at {uri} yet")
    try:
        run = MlflowClient(ctx.tracking_uri).get_run(run_id)
    except Exception:
        raise ConfigError(f"--from: no MLflow run {run_id} in {redact(ctx.tracking_uri)}") from None
    params: dict[str, Any] = {}
    for key, text in run.data.params.items():
        if key.startswith("study.") or (key.startswith("train.") and key not in ctx.distributions):
            continue  # fixed settings, not sampled choices
        value = yaml.safe_load(text) if text else text
        dist = ctx.distributions.get(key)
        if dist is not None:
            try:
                value = dist.validate(key, value)
            except Exception:
                continue  # the range changed since: let the sampler choose this one
        params[key] = value
    return [(params, f"run:{run_id}")]


def _from_study(ctx: SweepContext, name: str) -> list[tuple[dict[str, Any], str]]:
    import optuna

    from protolab._stores import describe_storage, journal_path, open_storage

    journal = journal_path(ctx.cfg.study.storage)
    fresh = journal is not None and not journal.is_file()  # opening would create it
    storage = None if fresh else open_storage(ctx.cfg.study.storage)
    names = [] if storage is None else optuna.get_all_study_names(storage)
    if name not in names:
        where = describe_storage(ctx.cfg.study.storage)
        raise ConfigError(
            f"--from: {name!r} is neither a study in {where} (have: {', '.join(names) or 'none'})"
            " nor an MLflow run id (32 hex characters)"
        )
    assert storage is not None  # the study exists, so its store does
    source = optuna.load_study(study_name=name, storage=storage)
    if len(source.directions) > 1:
        best = list(source.best_trials)
    else:
        done = source.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        maximize = source.direction == optuna.study.StudyDirection.MAXIMIZE
        best = sorted(done, key=lambda t: float(t.values[0]), reverse=maximize)[:_TOP]
    return [(dict(t.params), f"{name}#t{t.number}") for t in best]


def warm_start_params(ctx: SweepContext, source: str) -> list[tuple[dict[str, Any], str]]:
    """(params, label) pairs to enqueue, read before anything is written (bad input: exit 2)."""
    return _from_run(ctx, source) if _RUN_ID.match(source) else _from_study(ctx, source)
