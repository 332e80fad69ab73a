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
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeGuard

from protolab._tags import TAG
from protolab.checkpoint._store import Upload, store

if TYPE_CHECKING:
    from optuna.trial import TrialState

    from protolab.backends import ExportableModel, Job, JobResult

__all__ = ["CheckpointRun", "KeepContext", "begin_trial", "keep"]


# --- what keeping reads of the sweep (structurally: this package never imports it) --------


class _TrackingSettings(Protocol):
    @property
    def checkpoints(self) -> str: ...  # best | top_k | all | none
    @property
    def top_k(self) -> int: ...


class _Settings(Protocol):
    @property
    def tracking(self) -> _TrackingSettings: ...
    @property
    def backends(self) -> Sequence[str]: ...


class KeepContext(Protocol):
    """The study a checkpoint belongs to and how it ranks its trials."""

    @property
    def cfg(self) -> _Settings: ...
    @property
    def study_name(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def direction(self) -> str: ...  # maximize | minimize
    @property
    def constraints(self) -> Sequence[tuple[str, str, float]]: ...  # (metric, op, bound)
    @property
    def multi_objective(self) -> bool: ...


class _Finished(Protocol):
    @property
    def value(self) -> float | None: ...


class _Study(Protocol):
    def get_trials(
        self, deepcopy: bool = ..., states: Container[TrialState] | None = ...
    ) -> Sequence[_Finished]: ...


class _Trial(Protocol):
    """An Optuna trial, as far as the bar a checkpoint must beat needs it."""

    @property
    def number(self) -> int: ...
    @property
    def study(self) -> _Study: ...


class _Experiment(Protocol):
    @property
    def experiment_id(self) -> str: ...


class CheckpointRun(Protocol):
    """The child run a checkpoint is kept in."""

    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None: ...
    def call(self, fn: Callable[..., None], *args: object) -> None: ...


@dataclass
class _Running:
    key: tuple[str, str]
    value: float
    feasible: bool
    jobs: int = 0


_current: _Running | None = None  # the trial this process is running (one at a time)
_bar: tuple[tuple[str, str], float] | None = None  # (trial key, the k-th best value before it)


def begin_trial(ctx: KeepContext, trial: _Trial | None) -> None:
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


def _outside_best(ctx: KeepContext, trial: str, value: float) -> bool:
    """The trial's value is strictly worse than the k-th best noted at its start."""
    if _bar is None or _bar[0] != (ctx.study_name, trial) or math.isnan(value):
        return False
    return value < _bar[1] if ctx.direction == "maximize" else value > _bar[1]


def keep(
    ctx: KeepContext,
    tracker: _Experiment,
    run: CheckpointRun,
    job: Job,
    result: JobResult,
    tags: Mapping[str, str],
) -> None:
    """Checkpoint ``result.model`` into ``run`` under the study's policy (never raises).

    The upload is ``run.call``-ed: made by the tracking writer process, in order with the
    run's other writes (or here and now by an in-process tracker)."""
    tracking = ctx.cfg.tracking
    trial = str(tags.get(TAG.TRIAL, ""))
    if tracking.checkpoints == "none" or not trial.isdigit():
        return  # `protolab run` jobs are not trials of the study
    if tags.get(TAG.REPEAT, "0") != "0":
        return  # re-measurements of the same configuration: one checkpoint per mode
    model = result.model
    if not _exportable(model):
        return
    state = _trial_state(ctx, trial, result.metrics)
    state.jobs += 1
    if _outside_best(ctx, trial, state.value):
        run.set_tags({TAG.CHECKPOINT: "outside the best"})
        return
    t0 = time.perf_counter()
    directory = Path(tempfile.mkdtemp(prefix="protolab-checkpoint-"))
    try:
        from protolab.backends import write_checkpoint

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
    upload = _upload(ctx, tracker, int(trial), state)
    size = sum(p.stat().st_size for p in directory.iterdir())
    save_ms = (time.perf_counter() - t0) * 1e3
    run.log_metrics({"checkpoint/bytes": float(size), "checkpoint/save_ms": save_ms}, step=0)
    run.call(store, str(directory), upload)


def _upload(ctx: KeepContext, tracker: _Experiment, trial: int, state: _Running) -> Upload:
    """What the writer needs to store this checkpoint and rank the study's."""
    from protolab.backends import expand_aliases

    tracking = ctx.cfg.tracking
    return Upload(
        study=ctx.study_name,
        experiment_id=str(tracker.experiment_id or ""),
        # the study's id (a sweep's bound tracker): only its checkpoints are ranked
        study_id=str(getattr(tracker, "study_id", "") or ""),
        trial=trial,
        policy=tracking.checkpoints,
        top_k=tracking.top_k,
        value=state.value,
        direction=ctx.direction,
        feasible=state.feasible,
        done=state.jobs >= len(expand_aliases(list(ctx.cfg.backends))),
    )


def _exportable(model: object) -> TypeGuard[ExportableModel]:
    """A trained model that can write its weights (a mode without checkpoints cannot)."""
    return model is not None and hasattr(model, "save_checkpoint")


def _trial_state(ctx: KeepContext, trial: str, metrics: Mapping[str, float]) -> _Running:
    """The running trial's value and feasibility, taken from its first (lead) job."""
    global _current
    key = (ctx.study_name, trial)
    if _current is None or _current.key != key:
        value = float(metrics.get(ctx.metric, math.nan))
        _current = _Running(key, value, _feasible(ctx.constraints, metrics))
    return _current


def _feasible(constraints: Iterable[tuple[str, str, float]], metrics: Mapping[str, float]) -> bool:
    """Optuna's rule, as the sweep applies it: every ``metric <= bound`` (or >=) holds."""
    for metric, op, bound in constraints:
        value = metrics.get(metric, math.nan)
        if not (value <= bound if op == "<=" else value >= bound):
            return False
    return True
