"""What a trial tells the rest of the sweep while it runs: hooks, not arguments.

The sweep loop asks Optuna for a trial, calls one trial function (``run_once``), and tells
Optuna the outcome, as Optuna's own ``_run_trial`` does. Everything else that happens
along the way (the live display, the count of seconds spent training, checkpoint keeping,
intermediate values for the pruner) is a :class:`TrialCallback` in a list handed to both:
the loop calls the trial hooks, the trial function the job hooks, each callback in order.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from protolab._signals import shielded
from protolab.checkpoint import begin_trial, keep
from protolab.tracking._types import RunLog, Tracker

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import Trial

    from protolab.backends import Job, JobResult
    from protolab.samplers import VectorPruner
    from protolab.sweep._context import SweepContext

__all__ = [
    "Display",
    "KeepCheckpoints",
    "ReportToPruner",
    "ReportVectors",
    "ShowProgress",
    "TimeJobs",
    "TrialCallback",
]


class TrialCallback(Protocol):
    """Hooks around one trial; subclass it and override the ones you need (the rest do
    nothing: their bodies are real no-ops, not ``...``, so a subclass inherits them). Any
    object with these methods serves, structurally.

    ``on_epoch`` may raise (``optuna.TrialPruned``): the trial stops there, as it would in
    the job. Time spent in ``on_epoch`` is the sweep's, not the job's (see ``on_job_end``).
    """

    def on_trial_start(self, trial: Trial) -> None:
        """The loop asked for ``trial`` and is about to run it (its heartbeat is on)."""
        return None

    def on_job_start(self, backend: str, lead: bool) -> None:
        """A job starts on ``backend``; ``lead``: the first mode's first round, the one
        whose values Optuna hears."""
        return None

    def on_epoch(self, backend: str, epoch: int, metrics: dict[str, float]) -> None:
        """``backend``'s job finished ``epoch`` (its metrics already logged to the run)."""
        return None

    def on_job_end(self, seconds: float) -> None:
        """A job (or an alias's calibration) ended, pruned and failed included, after
        ``seconds`` of its own: its wall time less the epoch hooks."""
        return None

    def on_job_result(
        self, run: RunLog, job: Job, result: JobResult, tags: Mapping[str, str]
    ) -> None:
        """A job completed: ``run`` is still open (ended COMPLETE right after)."""
        return None

    def on_trial_done(self, trial: Trial) -> None:
        """The trial's jobs ended (completed, pruned or failed) and Optuna hears it next:
        the place to write what a callback held back to the study (a write here overlaps
        the tracking writer ending the trial's runs, which the COMPLETE tell waits for)."""
        return None

    def on_trial_end(
        self, number: int, state: str, value: float | None, reason: str, feasible: bool
    ) -> None:
        """Optuna was told the trial's end (COMPLETE, PRUNED or FAIL)."""
        return None


class Display(Protocol):
    """Live progress of a sweep (the terminal, or nothing)."""

    def start(self, ctx: SweepContext, study: Study) -> None: ...
    def trial_started(self, number: int) -> None: ...
    def epoch(self, backend: str, epoch: int, metrics: dict[str, float]) -> None: ...
    def trial_finished(
        self, number: int, state: str, value: float | None, reason: str, feasible: bool = True
    ) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


class ShowProgress(TrialCallback):
    """The display follows each trial: started, every epoch, finished."""

    def __init__(self, display: Display) -> None:
        self.display = display

    def on_trial_start(self, trial: Trial) -> None:
        self.display.trial_started(trial.number)

    def on_epoch(self, backend: str, epoch: int, metrics: dict[str, float]) -> None:
        self.display.epoch(backend, epoch, metrics)

    def on_trial_end(
        self, number: int, state: str, value: float | None, reason: str, feasible: bool
    ) -> None:
        self.display.trial_finished(number, state, value, reason, feasible)


class TimeJobs(TrialCallback):
    """Seconds spent inside backend jobs (import, build, compile, train, eval): what the
    sweep's ``sweep/overhead_frac`` is measured against."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_job_end(self, seconds: float) -> None:
        self.seconds.append(seconds)

    @property
    def total(self) -> float:
        return sum(self.seconds)


class ReportToPruner(TrialCallback):
    """Each epoch's value of the lead job to Optuna, whole; prune when the pruner says so
    (never after the last epoch: the work is done, keep the result).

    With no pruner (``NopPruner``) nothing reads the values while the trial runs, so they
    are held and written when the trial is done (``on_trial_done``: while the tracking
    writer ends its runs), or every ``LIVE_EVERY_S`` of a long trial: each is a study-store
    write (a synced journal append) that would otherwise lengthen the epoch's end.
    """

    LIVE_EVERY_S = 3.0

    def __init__(self, metric: str, epochs: int) -> None:
        self.metric, self.epochs = metric, epochs
        self._trial: Trial | None = None
        self._lead = False
        self._prunes = True
        self._held: dict[int, float] = {}
        self._written_at = 0.0

    def on_trial_start(self, trial: Trial) -> None:
        import optuna

        self._trial, self._lead, self._held = trial, False, {}
        self._prunes = not isinstance(trial.study.pruner, optuna.pruners.NopPruner)
        self._written_at = time.monotonic()

    def on_job_start(self, backend: str, lead: bool) -> None:
        self._lead = lead

    def on_epoch(self, backend: str, epoch: int, metrics: dict[str, float]) -> None:
        trial = self._trial
        if not self._lead or trial is None or self.metric not in metrics:
            return
        if not self._prunes:
            self._held[epoch] = float(metrics[self.metric])
            if time.monotonic() - self._written_at >= self.LIVE_EVERY_S:
                self.on_trial_done(trial)
            return
        import optuna

        with shielded():
            trial.report(metrics[self.metric], epoch)
            prune = epoch < self.epochs and trial.should_prune()
        if prune:
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    def on_trial_done(self, trial: Trial) -> None:
        if trial is not self._trial:
            return
        held, self._held = self._held, {}
        self._written_at = time.monotonic()
        with shielded():
            for epoch, value in sorted(held.items()):
                trial.report(value, epoch)


# Objectives measured only at a job's end, and the per-epoch metric that stands for them:
# time/step_ms is the median step time over epochs 2.. (docs/metrics.md), so at epoch e it
# is the median of time/epoch_step_ms over epochs 2..e (epoch 1 alone at epoch 1).
_EPOCH_STANDS_FOR = {"time/step_ms": "time/epoch_step_ms"}


class ReportVectors(TrialCallback):
    """Several objectives: each epoch's objective vector of the lead job, stored on the
    trial (``protolab.curve.<epoch>``, read by every worker through the study's storage),
    then judged by ``pruner`` (:mod:`protolab.samplers`); never after the last epoch.

    An objective the epoch does not measure is stored as None, which the rule never
    prunes on (``model/params``, known to the trained program only).
    """

    def __init__(self, metrics: list[str], epochs: int, pruner: VectorPruner) -> None:
        self.metrics, self.epochs, self.pruner = metrics, epochs, pruner
        self._trial: Trial | None = None
        self._lead = False
        self._seen: dict[str, list[float]] = {}

    def on_trial_start(self, trial: Trial) -> None:
        self._trial, self._lead = trial, False

    def on_job_start(self, backend: str, lead: bool) -> None:
        self._lead, self._seen = lead, {}

    def vector(self, metrics: dict[str, float]) -> list[float | None]:
        """This epoch's value of each objective (its stand-in's running median, if any)."""
        out: list[float | None] = []
        for m in self.metrics:
            if m in metrics:
                out.append(float(metrics[m]))
                continue
            stand_in = _EPOCH_STANDS_FOR.get(m)
            seen = self._seen.setdefault(m, [])
            if stand_in is not None and stand_in in metrics:
                seen.append(float(metrics[stand_in]))
            out.append(statistics.median(seen[1:] or seen) if seen else None)
        return out

    def on_epoch(self, backend: str, epoch: int, metrics: dict[str, float]) -> None:
        trial = self._trial
        if not self._lead or trial is None:
            return
        import optuna

        from protolab.samplers import curve_key

        vector = self.vector(metrics)
        with shielded():
            trial.set_user_attr(curve_key(epoch), vector)
            stop = epoch < self.epochs and self.pruner.prune_vector(
                trial.study, trial.number, epoch, vector
            )
        if stop:
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")


class KeepCheckpoints(TrialCallback):
    """A completed job's trained weights, kept under ``tracking.checkpoints``
    (:mod:`protolab.checkpoint`)."""

    def __init__(self, ctx: SweepContext, tracker: Tracker) -> None:
        self.ctx, self.tracker = ctx, tracker

    def on_trial_start(self, trial: Trial) -> None:
        begin_trial(self.ctx, trial)

    def on_job_result(
        self, run: RunLog, job: Job, result: JobResult, tags: Mapping[str, str]
    ) -> None:
        keep(self.ctx, self.tracker, run, job, result, tags)
