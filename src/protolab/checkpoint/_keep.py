"""Keep a finished job's trained weights (sweep side): serialise here, upload in the writer.

Called once per finished (not pruned, not failed) job of a sweep trial, after its timings
are taken: the weights go to a temporary folder (a few ms; the one cost in this process)
and the tracking writer process uploads them and applies ``tracking.checkpoints`` in order
with the run's other writes, so the trial never waits on the store.

A trial's value is its lead mode's metric (what Optuna optimises): the lead runs first, so
the value is remembered from the trial's first job and carried by every mode's checkpoint.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protolab._tags import TAG

__all__ = ["begin_trial", "keep"]

Send = Callable[..., None]


@dataclass
class _Trial:
    key: tuple[str, str]
    value: float
    feasible: bool
    jobs: int = 0


_current: _Trial | None = None  # the trial this process is running (one at a time)
_bar: tuple[tuple[str, str], float] | None = None  # (trial key, the k-th best value before it)


def begin_trial(ctx: Any, trial: Any) -> None:
    """Note, as ``trial`` starts, the value its checkpoint must beat to be worth uploading.

    A trial worse than ``top_k`` trials already COMPLETE can never rank among the best k
    (more trials only push it further out), so its checkpoint would be uploaded only to be
    dropped by the pruning that follows: its job skips the save, the upload, the ranking
    search and the delete. Only for one objective without constraints, where a trial's
    Optuna value is the checkpoint's rank.
    """
    global _bar, _current
    _bar, _current = None, None  # a new trial: its value comes from its first job
    keep_n = {"best": 1, "top_k": ctx.cfg.tracking.top_k}.get(ctx.cfg.tracking.checkpoints)
    if trial is None or keep_n is None or ctx.multi_objective or ctx.constraints:
        return
    import optuna

    done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    values = sorted(
        (t.value for t in done if t.value is not None and not math.isnan(t.value)),
        reverse=ctx.direction == "maximize",
    )
    if len(values) >= keep_n:
        _bar = ((ctx.study_name, str(trial.number)), values[keep_n - 1])


def _outside_best(ctx: Any, trial: str, value: float) -> bool:
    """The trial's value is strictly worse than the k-th best noted at its start."""
    if _bar is None or _bar[0] != (ctx.study_name, trial) or math.isnan(value):
        return False
    return value < _bar[1] if ctx.direction == "maximize" else value > _bar[1]


def keep(ctx: Any, tracker: Any, run: Any, job: Any, result: Any, tags: dict[str, str]) -> None:
    """Checkpoint ``result.model`` into ``run`` under the study's policy (never raises)."""
    tracking = ctx.cfg.tracking
    trial = str(tags.get(TAG.TRIAL, ""))
    if tracking.checkpoints == "none" or not trial.isdigit():
        return  # `protolab run` jobs are not trials of the study
    if tags.get(TAG.REPEAT, "0") != "0":
        return  # re-measurements of the same configuration: one checkpoint per mode
    model = result.model
    send = _sender(run)
    if send is None or model is None or not hasattr(model, "save_checkpoint"):
        return
    state = _trial_state(ctx, trial, result.metrics)
    state.jobs += 1
    if _outside_best(ctx, trial, state.value):
        run.set_tags({TAG.CHECKPOINT: "outside the best"})
        return
    t0 = time.perf_counter()
    directory = Path(tempfile.mkdtemp(prefix="protolab-checkpoint-"))
    try:
        from protolab.backends._exportable import write_checkpoint

        write_checkpoint(
            model,
            directory,
            job.arch,
            job.dataset,
            study=ctx.study_name,
            trial=int(trial),
            metric=ctx.metric,
            value=state.value,
        )
    except Exception as e:
        shutil.rmtree(directory, ignore_errors=True)
        print(
            f"protolab: trial {trial}: checkpoint not kept: {type(e).__name__}: {e}",
            file=sys.stderr,
        )
        return
    from protolab.backends import expand_aliases
    from protolab.checkpoint._store import Upload, store

    upload = Upload(
        study=ctx.study_name,
        experiment_id=str(getattr(tracker, "experiment_id", "") or ""),
        trial=int(trial),
        policy=tracking.checkpoints,
        top_k=tracking.top_k,
        value=state.value,
        direction=ctx.direction,
        feasible=state.feasible,
        done=state.jobs >= len(expand_aliases(list(ctx.cfg.backends))),
    )
    size = sum(p.stat().st_size for p in directory.iterdir())
    save_ms = (time.perf_counter() - t0) * 1e3
    run.log_metrics({"checkpoint/bytes": float(size), "checkpoint/save_ms": save_ms}, step=0)
    send(store, str(directory), upload)


def _sender(run: Any) -> Send | None:
    """How to have ``fn(client, run_id, *args)`` called for this run: by the writer process
    (in order with the run's writes), or here with an in-process tracker."""
    call = getattr(run, "call", None)
    if callable(call):
        return call
    client, run_id = getattr(run, "client", None), getattr(run, "run_id", None)
    if client is None or not run_id:
        return None  # a tracker that stores nothing (tests)

    def inline(fn: Callable[..., None], *args: Any) -> None:
        fn(client, run_id, *args)

    return inline


def _trial_state(ctx: Any, trial: str, metrics: dict[str, float]) -> _Trial:
    """The running trial's value and feasibility, taken from its first (lead) job."""
    global _current
    key = (ctx.study_name, trial)
    if _current is None or _current.key != key:
        value = float(metrics.get(ctx.metric, math.nan))
        _current = _Trial(key, value, _feasible(ctx.constraints, metrics))
    return _current


def _feasible(constraints: Any, metrics: dict[str, float]) -> bool:
    """Optuna's rule, as the sweep applies it: every ``metric <= bound`` (or >=) holds."""
    for metric, op, bound in constraints:
        value = metrics.get(metric, math.nan)
        if not (value <= bound if op == "<=" else value >= bound):
            return False
    return True
