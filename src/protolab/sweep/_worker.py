"""The sweep loop: ask Optuna for a trial, train it on each backend, tell Optuna, repeat.

``study.n_trials`` counts the study's finished (complete or pruned) trials in total, so the
loop tops the study up: rerunning a command after a crash or an interrupt finishes it, and
several workers on one study stop together at exactly ``n_trials``.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from protolab.errors import ConfigError, StorageError
from protolab.sweep._context import SweepContext
from protolab.sweep._run import fail_reason, run_once

__all__ = ["SweepSummary", "sweep"]

_KEY_METRICS = ("time/step_ms", "time/compile_s", "time/first_step_s", "time/trial_s")


@dataclass
class SweepSummary:
    study: str
    metric: str
    direction: str
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    started_here: int = 0
    best_number: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    train_s: float = 0.0  # inside backend jobs (import, build, compile, train, eval)
    trials: list[Any] = field(default_factory=list)  # optuna FrozenTrials, for the table


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _reap_dead_local_workers(study: Any, tracker: Any) -> int:
    """Fail RUNNING trials whose worker process on this host no longer exists.

    A local lease: journal storages have no heartbeat, so a SIGKILLed worker would leave its
    trial RUNNING forever and the study could never be topped up. The trial's MLflow runs
    are ended FAILED too, so nothing is left RUNNING.
    """
    import optuna

    host = socket.gethostname()
    reaped = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = str(t.user_attrs.get("protolab.worker", ""))
        h, _, pid = owner.rpartition(":")
        if h != host or not pid.isdigit() or _alive(int(pid)):
            continue
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        study._storage.set_trial_user_attr(t._trial_id, "protolab.fail_reason", "worker died")
        tracker.fail_running_children(t.number, "worker died")
        reaped += 1
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_study(ctx: SweepContext, storage: Any) -> Any:
    """Create or load the study; a rerun with another direction is a config error."""
    import optuna

    from protolab.sweep._study import make_pruner, make_sampler

    study = optuna.create_study(
        storage=storage,
        study_name=ctx.study_name,
        pruner=make_pruner(ctx.cfg.study.pruner),
        direction=ctx.direction,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    # A resumed study must not replay the draws of its first run: the sampler's seed moves
    # on with the trials already there (still reproducible for one worker). A worker that
    # joins while others run adds its pid so concurrent workers explore different points.
    trials = study.get_trials(deepcopy=False)
    running = any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    seed = ctx.cfg.study.seed + 1_000_003 * len(trials) + (os.getpid() if running else 0)
    study.sampler = make_sampler(ctx.cfg.study.sampler, seed % 2**32)
    have = study.direction.name.lower()
    if have != ctx.direction:
        raise ConfigError(
            f"study '{ctx.study_name}' already exists and {have}s, but metric "
            f"{ctx.metric!r} asks to {ctx.direction}; use another study.name"
        )
    if "protolab.metric" not in study.user_attrs:
        study.set_user_attr("protolab.metric", ctx.metric)
    return study


def sweep(ctx: SweepContext, display: Any) -> SweepSummary:
    """Run (or resume) the study of ``ctx`` until it holds ``n_trials`` finished trials."""
    import optuna

    from protolab.sweep._study import open_storage
    from protolab.tracking import open_tracker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    State = optuna.trial.TrialState
    cfg = ctx.cfg.study
    t_start = time.perf_counter()
    try:  # both stores are opened (and checked) before either is written
        storage = open_storage(cfg.storage)
        tracker = open_tracker(ctx)
    except StorageError as e:
        raise StorageError(f"{ctx.config_path}: {e}") from None
    study = open_study(ctx, storage)
    _reap_dead_local_workers(study, tracker)
    summary = SweepSummary(ctx.study_name, ctx.metric, ctx.direction)
    max_failures = cfg.max_failures if cfg.max_failures is not None else cfg.n_trials
    failures_here = 0
    job_seconds: list[float] = []
    display.start(ctx, study)
    try:
        while True:
            trials = study.get_trials(
                deepcopy=False, states=(State.COMPLETE, State.PRUNED, State.RUNNING)
            )
            if len(trials) >= cfg.n_trials:
                break
            if cfg.timeout_s is not None and time.perf_counter() - t_start > cfg.timeout_s:
                display.note(f"timeout of {cfg.timeout_s:g} s reached; not starting more trials")
                break
            if failures_here >= max_failures:
                display.note(
                    f"stopping: {failures_here} trials failed in this run (study.max_failures)"
                )
                break
            trial = study.ask()
            trial.set_user_attr("protolab.worker", _worker_id())
            label = f"t{trial.number}"
            summary.started_here += 1
            display.trial_started(trial.number)

            def report(value: float, epoch: int, trial: Any = trial) -> None:
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")

            try:
                out = run_once(
                    ctx,
                    tracker,
                    trial,
                    label,
                    report=report,
                    progress=display.epoch,
                    job_seconds=job_seconds,
                )
            except optuna.TrialPruned as e:
                study.tell(trial, state=State.PRUNED)
                display.trial_finished(trial.number, "PRUNED", None, str(e))
            except (KeyboardInterrupt, SystemExit):
                trial.set_user_attr("protolab.fail_reason", "interrupted")
                study.tell(trial, state=State.FAIL)
                raise
            except Exception as e:
                failures_here += 1
                reason = fail_reason(e)
                trial.set_user_attr("protolab.fail_reason", reason)
                study.tell(trial, state=State.FAIL)
                display.trial_finished(trial.number, "FAIL", None, reason)
            else:
                trial.set_user_attr("protolab.arch_hash", out.arch_hash)
                trial.set_user_attr(
                    "protolab.metrics",
                    {
                        b: {k: r.metrics[k] for k in (*_KEY_METRICS, ctx.metric) if k in r.metrics}
                        for b, r in out.results.items()
                    },
                )
                study.tell(trial, out.value)
                display.trial_finished(trial.number, "COMPLETE", out.value, "")
    finally:
        display.stop()
        summary.wall_s = time.perf_counter() - t_start
        summary.train_s = sum(job_seconds)
        _summarise(study, summary)
        tracker.log_parent(
            {
                "sweep/trials_complete": summary.complete,
                "sweep/trials_pruned": summary.pruned,
                "sweep/trials_failed": summary.failed,
                "sweep/wall_s": summary.wall_s,
                "sweep/trials_per_min": 60 * summary.started_here / max(summary.wall_s, 1e-9),
                "sweep/overhead_frac": 1.0 - summary.train_s / max(summary.wall_s, 1e-9),
                **(
                    {"sweep/best_value": summary.best_value}
                    if summary.best_value is not None
                    else {}
                ),
            },
            {"protolab.metric": ctx.metric, "protolab.direction": ctx.direction},
        )
        tracker.end()
    return summary


def _summarise(study: Any, summary: SweepSummary) -> None:
    import optuna

    State = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    summary.trials = trials
    summary.complete = sum(t.state == State.COMPLETE for t in trials)
    summary.pruned = sum(t.state == State.PRUNED for t in trials)
    summary.failed = sum(t.state == State.FAIL for t in trials)
    if summary.complete:
        best = study.best_trial
        summary.best_number, summary.best_value = best.number, best.value
        summary.best_params = dict(best.params)


def best_params(ctx: SweepContext) -> dict[str, Any]:
    """The best finished trial's values, for ``protolab run --best``."""
    import optuna

    from protolab.sweep._study import open_storage

    try:
        study = optuna.load_study(
            study_name=ctx.study_name, storage=open_storage(ctx.cfg.study.storage)
        )
    except KeyError:
        raise ConfigError(
            f"--best: study '{ctx.study_name}' does not exist yet; run `protolab sweep` first"
        ) from None
    try:
        return dict(study.best_trial.params)
    except ValueError:
        raise ConfigError(f"--best: study '{ctx.study_name}' has no complete trial yet") from None
