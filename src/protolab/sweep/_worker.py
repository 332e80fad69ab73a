"""The sweep loop: ask Optuna for a trial, train it on each backend, tell Optuna, repeat.

``study.n_trials`` counts the study's finished (complete or pruned) trials in total, so the
loop tops the study up: rerunning a command after a crash or an interrupt finishes it, and
several workers on one study stop together at exactly ``n_trials``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protolab._tags import ATTR, TAG
from protolab.errors import ConfigError, ProtolabError, StorageError
from protolab.sweep import _lease
from protolab.sweep._binding import check_binding, own_id
from protolab.sweep._callbacks import (
    Display,
    KeepCheckpoints,
    ReportToPruner,
    ReportVectors,
    ShowProgress,
    TimeJobs,
    TrialCallback,
)
from protolab.sweep._context import SweepContext
from protolab.sweep._deadline import TIMEOUT, TrialTimeout, can_time_trials, trial_deadline
from protolab.sweep._lease import Interrupted, deferred, shielded
from protolab.sweep._run import Outcome, TrialFn, fail_reason, trial_function
from protolab.sweep._store_file import StudyStoreLost
from protolab.sweep._warm import warm_start_params
from protolab.tracking._types import Tracker
from protolab.tracking._writer import StoreWriteError

if TYPE_CHECKING:
    from optuna import Study
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial, Trial

__all__ = ["Interrupted", "SweepFailed", "SweepSummary", "sweep"]


class SweepFailed(ProtolabError):
    """Too many trials failed in a row: the experiment, not the search, needs fixing."""


# A trial that raised one of these failed on the machine's disk, not on the model.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


# Another worker failed this trial while it ran: its heartbeat was late (a starved host).
_REAPED_ALIVE = "failed by another worker (heartbeat late; raise study.heartbeat_s); retried"

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
    pareto: list[int] = field(default_factory=list)  # best trials (the front, if several)
    wall_s: float = 0.0
    train_s: float = 0.0  # inside backend jobs (import, build, compile, train, eval)
    trials: list[FrozenTrial] = field(default_factory=list)  # for the table
    recycled: bool = False  # stopped for a fresh process (hardware.recycle_after), not done


def open_study(ctx: SweepContext, storage: BaseStorage, display: Display | None = None) -> Study:
    """Create or load the study; a rerun that changes what is optimised is a config error."""
    import optuna

    from protolab.sweep._study import make_pruner

    cfg = ctx.cfg.study
    directions = [d for _, d in ctx.objectives]
    study = optuna.create_study(
        storage=storage,
        study_name=ctx.study_name,
        pruner=make_pruner(cfg.pruner, cfg.pruner_options, ctx.objectives),
        directions=directions,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    metrics = [m for m, _ in ctx.objectives]
    seed_sampler(ctx, study, _lease.worker_index() or 0)
    if cfg.sampler == "evolution" and display is not None:
        from protolab.sweep._study import evolution_note

        note = evolution_note(cfg.sampler_options, cfg.n_trials)
        if note:
            display.note(note)
    _note_script_change(study, ctx, display)
    study.set_user_attr(ATTR.OBJECTIVES, metrics)
    study.set_user_attr(ATTR.METRIC, ctx.metric)
    return study


def seed_sampler(ctx: SweepContext, study: Study, index: int) -> None:
    """Give ``study`` this worker's sampler, seeded from ``study.seed`` and what came before.

    A resumed study must not replay the draws of its first run: the seed moves on with the
    trials already there (still reproducible for one worker). Workers started together
    differ by their ``index``; one that joins while others run adds its pid, so concurrent
    workers explore different points.
    """
    import optuna

    from protolab.sweep._study import make_sampler

    cfg = ctx.cfg.study
    trials = study.get_trials(deepcopy=False)
    running = any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    seed = cfg.seed + 1_000_003 * len(trials) + 7_919 * index + (os.getpid() if running else 0)
    study.sampler = make_sampler(
        cfg.sampler, seed % 2**32, cfg.sampler_options, ctx.grid, n_trials=cfg.n_trials
    )


def join_study(ctx: SweepContext, study: Study) -> None:
    """Under the study's locks: a worker with no index from its environment takes the
    order in which it opened the study as one (the first keeps ``open_study``'s seed)."""
    if _lease.worker_index() is None:
        joined = _lease.join_count(study)
        if joined:
            seed_sampler(ctx, study, joined)


def _check_existing(ctx: SweepContext, storage: BaseStorage) -> None:
    """Refuse to resume a study the current config or script cannot continue (read-only).

    Optuna cannot change what a study optimises, nor the list of a categorical choice
    (``space.choice``) once trials used it; numeric ranges may change freely.
    """
    import optuna

    if ctx.study_name not in optuna.get_all_study_names(storage):
        return
    study = optuna.load_study(study_name=ctx.study_name, storage=storage)
    have = [d.name.lower() for d in study.directions]
    directions = [d for _, d in ctx.objectives]
    metrics = [m for m, _ in ctx.objectives]
    recorded = study.user_attrs.get(ATTR.OBJECTIVES, metrics)
    if have != directions or recorded != metrics:
        raise ConfigError(
            f"{ctx.config_path}: study '{ctx.study_name}' already exists and optimises "
            f"{recorded} ({', '.join(have)}), but the config asks for {metrics} "
            f"({', '.join(directions)}); use another study.name"
        )
    seen: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        seen.update(t.distributions)
    categorical = optuna.distributions.CategoricalDistribution
    for name, d in ctx.distributions.items():
        old = seen.get(name)
        if (
            d.kind == "choice"
            and isinstance(old, categorical)
            and tuple(old.choices) != tuple(d.choices)
        ):
            raise ConfigError(
                f"{ctx.script_path}: choice '{name}' changed from {list(old.choices)} to "
                f"{list(d.choices)}, but study '{ctx.study_name}' already sampled it and "
                "Optuna cannot change a choice list within a study; use a new study.name "
                "(or a new name for the choice)"
            )


def _note_script_change(study: Study, ctx: SweepContext, display: Display | None) -> None:
    """Say so when the script or config changed since the study's earlier trials.

    Every trial records the hashes it ran with (user attrs and MLflow tags), so the report
    can split trials by script version and before/after an edit is one comparison away.
    """
    versions = (
        ("script", ATTR.SCRIPT_HASHES, ctx.script_hash),
        ("config", ATTR.CONFIG_HASHES, ctx.config_hash),
    )
    for kind, key, now in versions:
        seen = list(study.user_attrs.get(key, []))
        if seen and seen[-1] != now and display is not None:
            display.note(
                f"the experiment {kind} changed since this study's earlier trials "
                f"({seen[-1]} -> {now}); both versions are recorded and "
                "`protolab report` compares them"
            )
        if not seen or seen[-1] != now:
            study.set_user_attr(key, [*seen, now])


def sweep(
    ctx: SweepContext, display: Display, warm_from: str | None = None, new_study: bool = False
) -> SweepSummary:
    """Run (or resume) the study of ``ctx`` until it holds ``n_trials`` finished trials.

    ``warm_from`` (a study name or an MLflow run id) enqueues its best configurations first.
    ``new_study``: the study store lost or replaced the study whose runs MLflow holds, and
    the user says to start it over (sweep/_binding.py); otherwise that is exit 2.
    """
    import optuna

    from protolab._stores import default_storage_path
    from protolab.sweep._checks import check_context

    check_context(ctx)  # hardware, metrics, store paths: exit 2 before any store is written
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    warm = warm_start_params(ctx, warm_from) if warm_from else []
    lock = _lease.lock_path(ctx.cfg.study.storage, default_storage_path())
    timing = TimeJobs()
    storage, tracker = _open_stores(ctx, timing)
    study = _enter_study(ctx, storage, tracker, display, lock, warm, new_study)
    summary = SweepSummary(ctx.study_name, ctx.metric, ctx.direction)
    status, failing = "FINISHED", True
    callbacks = _callbacks(ctx, tracker, display, timing)
    display.start(ctx, study)
    if ctx.cfg.study.trial_timeout_s is not None and not can_time_trials():
        display.note("study.trial_timeout_s is not applied: it needs SIGALRM and the main thread")
    try:
        _loop(ctx, study, tracker, display, summary, callbacks, lock, t_start)
        failing = False
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except StoreWriteError:
        status = "FAILED"
        raise
    except (OSError, optuna.exceptions.StorageInternalError) as e:  # an Optuna write failed
        status = "FAILED"  # between trials (asking, reaping): the same one line as in one
        raise StoreWriteError(
            f"study.storage: a write failed: {fail_reason(e)}; {_kept_until(study)}"
        ) from None
    finally:
        display.stop()
        summary.wall_s = time.perf_counter() - t_start
        summary.train_s = timing.total
        _finish(study, tracker, summary, ctx.direction, status, failing)
    return summary


def _callbacks(
    ctx: SweepContext, tracker: Tracker, display: Display, timing: TimeJobs
) -> list[TrialCallback]:
    """What a sweep's trials tell, in this order: the display, the job clock, checkpoint
    keeping, and the pruner's reports, last: a prune raised there ends the epoch."""
    callbacks: list[TrialCallback] = [ShowProgress(display), timing, KeepCheckpoints(ctx, tracker)]
    if not ctx.multi_objective:  # Optuna's report/should_prune take one value
        callbacks.append(ReportToPruner(ctx.metric, ctx.cfg.train.epochs))
    else:  # each epoch's objective vector, judged by protolab's own pruner
        from protolab.sweep._study import vector_pruner

        cfg = ctx.cfg.study
        pruner = vector_pruner(cfg.pruner, cfg.pruner_options, ctx.objectives)
        if pruner is not None:
            metrics = [m for m, _ in ctx.objectives]
            callbacks.append(ReportVectors(metrics, ctx.cfg.train.epochs, pruner))
    return callbacks


def _open_stores(ctx: SweepContext, timing: TimeJobs) -> tuple[BaseStorage, Tracker]:
    """The study's storage and the tracker, the frameworks imported meanwhile (timed).

    Remote stores are checked first: an unreachable server must not leave a freshly
    created local store behind. Local files are created only once both are known good.
    """
    from protolab._stores import default_storage_path, local_store_file, open_storage
    from protolab.report import study_notes as notes
    from protolab.sweep._storage import LeasedStorage
    from protolab.tracking import open_tracker, wait_open

    cfg = ctx.cfg.study
    tracking_lock = _lease.lock_path(ctx.tracking_uri, default_storage_path())
    try:
        if tracking_lock is None:
            tracker = open_tracker(ctx, describe=notes, bind_later=True)
        watch = local_store_file(cfg.storage, default_storage_path())
        with _lease.creation_lock(cfg.storage):  # fresh PostgreSQL: one creates the tables
            storage = LeasedStorage(open_storage(cfg.storage), cfg.storage, watch=watch)
        # the trials it asks for are created with these: one study write, not one per attr
        storage.stamp_new_trials(_trial_attrs(ctx))
        _lease.tune_heartbeat(storage, cfg.heartbeat_s)
        _check_existing(ctx, storage)  # a study that cannot be resumed as configured: exit 2
        if tracking_lock is not None:  # a fresh local store: one process creates it
            tracker = open_tracker(
                ctx, lock=tracking_lock, wait=False, describe=notes, bind_later=True
            )
        # The frameworks import while the tracking writer opens its store (other core).
        timing.on_job_end(_load_backends(ctx.cfg.backends))
        return storage, wait_open(tracker)
    except StorageError as e:
        raise StorageError(f"{ctx.config_path}: {e}") from None


def _enter_study(
    ctx: SweepContext,
    storage: BaseStorage,
    tracker: Tracker,
    display: Display,
    lock: Path | None,
    warm: list[tuple[dict[str, Any], str]],
    new_study: bool = False,
) -> Study:
    """Open the study as one step under its locks: check that both stores hold the same
    study (exit 2 before any write if not), seed this worker, reap dead workers' trials,
    end the runs their trials' ends left RUNNING, enqueue the warm start's configurations."""
    with _lease.file_lock(lock):
        study_id, adopt = check_binding(ctx, storage, tracker, new_study)
        study = open_study(ctx, storage, display)
        with _lease.study_lock(study):  # across hosts, on PostgreSQL
            tracker.bind(own_id(study, study_id), adopt)  # the parent run: of this study
            join_study(ctx, study)
            _lease.reap(study, tracker, ctx.cfg.study.max_retries)
            _end_runs_of_finished_trials(study, tracker)
            for params, label in warm:  # skip_if_exists: rerunning the command adds nothing
                study.enqueue_trial(params, user_attrs={ATTR.ENQUEUED: label}, skip_if_exists=True)
    return study


def _end_runs_of_finished_trials(study: Study, tracker: Tracker) -> None:
    """A finished trial's MLflow runs may not have been ended: a store failure stopped it
    (the disk that failed may hold the tracking store too), or the end of a run was the
    write that failed (a trial that failed for another reason meanwhile, a pruned one).
    End every run still RUNNING whose trial the study store says finished, in the state
    and with the reason it recorded, so none stays RUNNING once the command is rerun."""
    import optuna

    State = optuna.trial.TrialState
    names = {State.COMPLETE: "COMPLETE", State.PRUNED: "PRUNED", State.FAIL: "FAIL"}
    finished = {
        t.number: (names[t.state], str(t.user_attrs.get(ATTR.FAIL_REASON, "")))
        for t in study.get_trials(deepcopy=False, states=tuple(names))
    }
    if finished:
        tracker.end_finished(finished)


def _finish(
    study: Study,
    tracker: Tracker,
    summary: SweepSummary,
    direction: str,
    status: str,
    failing: bool,
) -> None:
    """Sweep totals to the parent run, then end it (every write landed, or one error).

    While another error propagates (an interrupt, a failed write), this one's own errors
    are dropped: the user gets the first, once.
    """
    try:
        _summarise(study, summary)
        tracker.log_parent(_sweep_metrics(summary), {TAG.DIRECTION: direction})
    except Exception:
        if not failing:
            raise
    try:
        tracker.end(status)
    except StoreWriteError:
        if not failing:
            raise


def _load_backends(names: Sequence[str]) -> float:
    """Import the backends' frameworks now; return the seconds it took.

    Meanwhile the tracking writer process imports MLflow and opens its store, so neither
    waits for the other. The jobs report the import as ``time/import_s`` as before, and the
    seconds count as the jobs' own (not sweep overhead), as they did inside the first job.
    """
    from protolab.backends import FAMILIES, expand_aliases, family_members, load_backends

    t0 = time.perf_counter()
    load_backends(  # an alias loads every mode it may pick
        member
        for name in expand_aliases(list(names))
        for member in (family_members(name) if name in FAMILIES else [name])
    )
    return time.perf_counter() - t0


# Set by `sweep --workers` (hardware.recycle_after): after that many trials with a static
# backend a worker stops with EXIT_RECYCLE, and the launcher starts a fresh one in its place.
RECYCLE_ENV = "PROTOLAB_RECYCLE_AFTER"
EXIT_RECYCLE = 75  # EX_TEMPFAIL: "try again", which is what the launcher does


def _recycle_due(ctx: SweepContext, summary: SweepSummary) -> bool:
    from protolab.backends import keeps_programs

    limit = os.environ.get(RECYCLE_ENV, "")
    if not limit.isdigit() or summary.started_here < int(limit):
        return False
    return keeps_programs(list(ctx.cfg.backends))


def _loop(
    ctx: SweepContext,
    study: Study,
    tracker: Tracker,
    display: Display,
    summary: SweepSummary,
    callbacks: Sequence[TrialCallback],
    lock: Path | None,
    t_start: float,
) -> None:
    """Ask, run, tell until the study is full (or a stop rule says so): the one loop.

    What a trial does is one opaque function (:func:`~protolab.sweep._run.trial_function`);
    what the sweep hears of it along the way are ``callbacks``, which it shares."""
    run_trial = trial_function(ctx, tracker, callbacks)
    failed_in_a_row, last_reason = 0, ""
    while not _stop_here(ctx, study, display, summary, t_start, failed_in_a_row, last_reason):
        # count + ask atomically (never more than n_trials), and whole (see shielded)
        trial, running = _ask_whole(ctx, study, tracker, lock)
        if trial is None:
            if _lease.wait_for_others(study, running):  # one may be dead on another host
                continue
            return
        reason = _one_trial(ctx, study, tracker, summary, trial, run_trial, callbacks)
        if reason is None:
            failed_in_a_row = 0
        elif reason:  # "" is a trial another worker reaped: not this configuration's fault
            failed_in_a_row, last_reason = failed_in_a_row + 1, reason


def _stop_here(
    ctx: SweepContext,
    study: Study,
    display: Display,
    summary: SweepSummary,
    t_start: float,
    failed_in_a_row: int,
    last_reason: str,
) -> bool:
    """The stop rules checked before each ask (saying which one stopped the sweep)."""
    cfg = ctx.cfg.study
    if _recycle_due(ctx, summary):
        display.note(
            f"this worker ran {summary.started_here} static trials "
            "(hardware.recycle_after): a fresh one takes over"
        )
        summary.recycled = True
        return True
    if cfg.timeout_s is not None and time.perf_counter() - t_start > cfg.timeout_s:
        display.note(f"timeout of {cfg.timeout_s:g} s reached; not starting more trials")
        return True
    if failed_in_a_row >= cfg.max_failures:
        raise SweepFailed(
            f"stopping: the last {failed_in_a_row} trials failed (study.max_failures="
            f"{cfg.max_failures}); last reason: {last_reason}"
        )
    if hasattr(study.sampler, "is_exhausted") and study.sampler.is_exhausted(study):
        display.note("the grid is exhausted: every combination has run")
        return True
    return False


def _one_trial(
    ctx: SweepContext,
    study: Study,
    tracker: Tracker,
    summary: SweepSummary,
    trial: Trial,
    run_trial: TrialFn,
    callbacks: Sequence[TrialCallback],
) -> str | None:
    """Run one asked trial and tell its end: None when it completed or was pruned, its
    failure reason when it failed, "" when another worker reaped it meanwhile."""
    import optuna

    State = optuna.trial.TrialState
    try:  # from here on, an interrupt fails this trial (retried), never leaves it RUNNING
        summary.started_here += 1
        with _lease.heartbeat(study, trial), trial_deadline(ctx.cfg.study.trial_timeout_s):
            for cb in callbacks:
                cb.on_trial_start(trial)
            out = run_trial(trial)
    except TrialTimeout as e:  # stopped (its runs ended FAILED, its process killed): go on
        _done(callbacks, trial)
        with shielded():
            trial.set_user_attr(ATTR.FAIL_REASON, TIMEOUT)
            study.tell(trial, state=State.FAIL)
        _ended(callbacks, trial.number, "FAIL", None, f"{TIMEOUT}: {e}")
        return TIMEOUT
    except optuna.TrialPruned as e:
        _done(callbacks, trial)
        with shielded():
            study.tell(trial, state=State.PRUNED)
        _ended(callbacks, trial.number, "PRUNED", None, str(e))
        return None
    except KeyboardInterrupt:
        with deferred():  # a second Ctrl-C exits after this write, not inside it
            _tell_failed(study, trial, "interrupted", ctx.cfg.study.max_retries)
        raise
    except optuna.exceptions.UpdateFinishedTrialError:  # reaped while alive
        _ended(callbacks, trial.number, "FAIL", None, _REAPED_ALIVE)
        return ""
    except Exception as e:
        if _store_failed(e):  # the disk or a store, not the model: stop, retry it later
            _stop_on_store_failure(study, trial, tracker, e, ctx.cfg.study.max_retries)
        reason = fail_reason(e)
        _done(callbacks, trial)
        with shielded():
            trial.set_user_attr(ATTR.FAIL_REASON, reason)
            study.tell(trial, state=State.FAIL)
        _ended(callbacks, trial.number, "FAIL", None, reason)
        return reason
    try:  # outside the handlers above: the trial ran; a failed write here stops the sweep
        with shielded():  # done work is kept: an interrupt waits for the tell
            _tell_complete(ctx, study, trial, tracker, out, callbacks)
    except optuna.exceptions.UpdateFinishedTrialError:
        _ended(callbacks, trial.number, "FAIL", None, _REAPED_ALIVE)
        return ""
    feasible = all(v <= 0 for v in out.constraints.values())
    note = "" if feasible else "infeasible"
    _ended(callbacks, trial.number, "COMPLETE", out.value, note, feasible)
    return None


def _done(callbacks: Sequence[TrialCallback], trial: Trial) -> None:
    """The trial's jobs ended: callbacks write what they held (best effort on a failed
    trial's way out: the store may be what failed, and the tell says so)."""
    with contextlib.suppress(Exception):
        for cb in callbacks:
            cb.on_trial_done(trial)


def _ended(
    callbacks: Sequence[TrialCallback],
    number: int,
    state: str,
    value: float | None,
    reason: str,
    feasible: bool = True,
) -> None:
    """Optuna was told: every callback hears how the trial ended."""
    for cb in callbacks:
        cb.on_trial_end(number, state, value, reason, feasible)


def _ask_whole(
    ctx: SweepContext, study: Study, tracker: Tracker, lock: Path | None
) -> tuple[Trial | None, int]:
    """:func:`_ask` under the store lock, never cut; an interrupt meanwhile is raised after
    it, and fails the new trial (retried) rather than leaving it RUNNING."""
    trial = None
    try:
        with _lease.file_lock(lock), _lease.study_lock(study), shielded():
            trial, running = _ask(ctx, study, tracker)
    except KeyboardInterrupt:
        if trial is not None:
            with deferred():
                _tell_failed(study, trial, "interrupted", ctx.cfg.study.max_retries)
        raise
    return trial, running


def _tell_complete(
    ctx: SweepContext,
    study: Study,
    trial: Trial,
    tracker: Tracker,
    out: Outcome,
    callbacks: Sequence[TrialCallback] = (),
) -> None:
    """COMPLETE only once the trial's MLflow runs are written (ended, flushed); a write that
    failed fails the trial instead (retried by the next run) and stops the sweep.

    The trial's other study writes (its metrics, constraints, held intermediate values)
    come first: they do not finish it, and they overlap the writer ending its runs."""
    metrics = {
        b: {k: r.metrics[k] for k in (*_KEY_METRICS, ctx.metric) if k in r.metrics}
        for b, r in out.results.items()
    }
    trial.set_user_attr(ATTR.METRICS, metrics)
    for key, value in out.constraints.items():
        trial.set_constraint(key, value)
    for cb in callbacks:
        cb.on_trial_done(trial)
    try:
        tracker.sync()  # the writer process's tracker waits; the inline one has nothing to
    except StoreWriteError as e:
        _stop_on_store_failure(study, trial, tracker, e, ctx.cfg.study.max_retries)
    study.tell(trial, out.values if ctx.multi_objective else out.value)


def _store_failed(e: BaseException) -> bool:
    """A trial's error that is the store's or the disk's (full, gone, read-only)."""
    if isinstance(e, StoreWriteError):
        return True
    return isinstance(e, OSError) and e.errno in _DISK_ERRNOS


def _tell_failed(study: Study, trial: Trial, reason: str, max_retries: int) -> None:
    """Fail ``trial`` for a reason that is not the model's, and enqueue it again."""
    import optuna

    trial.set_user_attr(ATTR.FAIL_REASON, reason)
    frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
    _lease.retry(study, frozen, max_retries)


def _stop_on_store_failure(
    study: Study, trial: Trial, tracker: Tracker, e: BaseException, max_retries: int
) -> None:
    """Fail the trial (best effort: that store may be the one that failed) and raise the
    one error that stops the sweep (exit 1)."""
    if isinstance(e, StudyStoreLost):  # nothing more to write there: it would be a new file
        with contextlib.suppress(Exception):
            tracker.fail_running_children(trial.number, "study store lost")
        raise e
    cause = str(e) if isinstance(e, StoreWriteError) else f"a write failed: {fail_reason(e)}"
    with contextlib.suppress(Exception):
        _tell_failed(study, trial, f"store write failed: {cause}"[:500], max_retries)
    with contextlib.suppress(Exception):
        tracker.fail_running_children(trial.number, "store write failed")
    raise StoreWriteError(
        f"{cause}; stopped after trial {trial.number}: every trial finished before it is "
        "kept, and this one is retried when the command is rerun"
    ) from None


def _kept_until(study: Study) -> str:
    """What a store failure between trials leaves: every finished trial is kept."""
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    try:
        last = max((t.number for t in study.get_trials(deepcopy=False, states=done)), default=-1)
    except Exception:  # the store that failed may not answer reads either
        last = -1
    where = f"after trial {last}" if last >= 0 else "before any trial finished"
    return (
        f"stopped {where}: every trial finished before it is kept, and the command resumes "
        "the study when rerun"
    )


def _ask(ctx: SweepContext, study: Study, tracker: Tracker) -> tuple[Trial | None, int]:
    """Reap dead workers' trials, then a new trial, or (None, trials still RUNNING) when
    the study is full. Call under the store lock: count and ask are one step."""
    import optuna

    State = optuna.trial.TrialState
    _lease.reap(study, tracker, ctx.cfg.study.max_retries)  # a worker gone mid-study
    active = study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED, State.RUNNING))
    if len(active) >= ctx.cfg.study.n_trials:
        return None, sum(t.state == State.RUNNING for t in active)
    with warnings.catch_warnings():  # we run Optuna's heartbeat thread ourselves
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask()
    _lease.beat(study, trial)
    have = trial.user_attrs  # a new trial is created with them (_open_stores), a queued one not
    for key, value in _trial_attrs(ctx).items():
        if have.get(key) != value:
            trial.set_user_attr(key, value)
    if _lease.leased(study) and _lease.surplus(study, trial, ctx.cfg.study.n_trials):
        trial.set_user_attr(ATTR.FAIL_REASON, _lease.SURPLUS)
        study.tell(trial, state=State.FAIL)  # never run, never retried
        return None, 1
    return trial, 0


def _trial_attrs(ctx: SweepContext) -> dict[str, str]:
    """The user attrs every trial this worker runs carries: the worker, the script's hash."""
    return {**_lease.worker_attrs(), ATTR.SCRIPT_HASH: ctx.script_hash}


def _sweep_metrics(summary: SweepSummary) -> dict[str, float]:
    metrics = {
        "sweep/trials_complete": float(summary.complete),
        "sweep/trials_pruned": float(summary.pruned),
        "sweep/trials_failed": float(summary.failed),
        "sweep/wall_s": summary.wall_s,
        "sweep/trials_per_min": 60 * summary.started_here / max(summary.wall_s, 1e-9),
        "sweep/overhead_frac": 1.0 - summary.train_s / max(summary.wall_s, 1e-9),
    }
    if summary.best_value is not None:
        metrics["sweep/best_value"] = summary.best_value
    return metrics


def _summarise(study: Study, summary: SweepSummary) -> None:
    import optuna

    State = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    summary.trials = trials
    summary.complete = sum(t.state == State.COMPLETE for t in trials)
    summary.pruned = sum(t.state == State.PRUNED for t in trials)
    summary.failed = sum(t.state == State.FAIL for t in trials)
    if not summary.complete:
        return
    if len(study.directions) > 1:
        summary.pareto = sorted(t.number for t in study.best_trials)
        return
    try:
        best = study.best_trial
    except ValueError:  # constraints: no feasible trial yet
        return
    summary.best_number, summary.best_value = best.number, best.value
    summary.best_params = dict(best.params)
    summary.pareto = [best.number]


def best_params(ctx: SweepContext) -> dict[str, Any]:
    """The best finished trial's values, for ``protolab run --best``."""
    import optuna

    from protolab._stores import journal_path, open_storage

    journal = journal_path(ctx.cfg.study.storage)
    if journal is not None and not journal.is_file():  # opening would create an empty one
        raise ConfigError(
            f"--best: study '{ctx.study_name}' does not exist yet ({journal} is absent); "
            "run `protolab sweep` first"
        )
    try:
        study = optuna.load_study(
            study_name=ctx.study_name, storage=open_storage(ctx.cfg.study.storage)
        )
    except KeyError:
        raise ConfigError(
            f"--best: study '{ctx.study_name}' does not exist yet; run `protolab sweep` first"
        ) from None
    try:
        best = study.best_trial
    except ValueError:
        raise ConfigError(f"--best: study '{ctx.study_name}' has no complete trial yet") from None
    _refuse_inherited(ctx, best.number, best.user_attrs)
    return dict(best.params)


def _refuse_inherited(ctx: SweepContext, number: int, attrs: dict[str, Any]) -> None:
    """A population-based trial trained on from another trial's weights with settings that
    moved between segments: its values trained from scratch are another training, so
    ``--best`` refuses rather than train it (its own weights are in its run)."""
    from protolab.samplers import INHERITED_ATTR

    source = attrs.get(INHERITED_ATTR)
    if source is None:
        return
    raise ConfigError(
        f"--best: study '{ctx.study_name}' is population-based: its best trial t{number} "
        f"continued t{source}'s weights and optimizer state, so its values trained from "
        "scratch would train something else; its trained state is in its run (`protolab "
        "lineage` shows the line), or pass its values with --params to train them anew"
    )
