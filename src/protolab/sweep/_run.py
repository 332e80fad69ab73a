"""One configuration trained on every configured backend, each as its own MLflow child run.

Shared by sweep trials and ``protolab run``: the same function, so a rerun of the best
trial is logged exactly like the trial it reproduces.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from protolab._tags import ATTR, TAG
from protolab.backends import (
    Hardware,
    Job,
    JobResult,
    TrainSettings,
    backend_info,
    expand_aliases,
    get_backend,
)
from protolab.backends._calibrate import Choice, resolve
from protolab.backends._env import environment_tags
from protolab.space import Space
from protolab.sweep._callbacks import TrialCallback
from protolab.sweep._context import SweepContext, sample_train
from protolab.sweep._deadline import TIMEOUT, TrialTimeout
from protolab.sweep._pbt import KeepState, drop_copies, pbt_job, pbt_tags, segment_epochs
from protolab.tracking._types import RunLog, Tracker

if TYPE_CHECKING:
    from optuna.trial import Trial

    from protolab.arch import Arch
    from protolab.config import Config
    from protolab.data import Dataset

__all__ = [
    "Outcome",
    "TrialFn",
    "fail_reason",
    "make_settings",
    "mode_tags",
    "run_artifacts",
    "run_once",
    "trial_function",
]

# An asked trial in, what it produced out; raises as the trial ends otherwise (pruned,
# failed, interrupted). The sweep loop knows nothing else of what a trial does.
TrialFn = Callable[["Trial"], "Outcome"]


@runtime_checkable
class _Stoppable(Protocol):
    """A mode that runs its jobs in worker processes of its own, and can stop them."""

    def close(self) -> None: ...


# Trial user attrs that become MLflow tags (lineage, retries, warm starts).
_LINEAGE_ATTRS = (
    ATTR.RETRY_OF,
    ATTR.ATTEMPT,
    ATTR.PARENT_TRIAL,
    ATTR.ENQUEUED,
    ATTR.WORKER,
    ATTR.CUDA_VISIBLE_DEVICES,
)


@dataclass
class Outcome:
    """What one configuration produced: per-backend results and the value to optimise."""

    params: dict[str, Any]
    arch_hash: str = ""
    results: dict[str, JobResult] = field(default_factory=dict)
    values: list[float] = field(default_factory=list)  # one per objective, lead backend
    constraints: dict[str, float] = field(default_factory=dict)  # <= 0 means feasible

    @property
    def value(self) -> float:
        return self.values[0]


_OOM_MARKS = ("out of memory", "can't allocate memory", "failed to allocate", "oom when allocating")


def fail_reason(e: BaseException) -> str:
    """One line for the ``protolab.fail_reason`` tag; the traceback goes to an artifact.

    Out-of-memory errors come as several types (MemoryError, torch's RuntimeError and
    OutOfMemoryError, TensorFlow's ResourceExhaustedError): they all start with
    ``out of memory:`` so a sweep's failures can be grouped by cause.
    """
    if isinstance(e, TrialTimeout):
        return TIMEOUT
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    name = type(e).__name__
    oom = isinstance(e, MemoryError) or name in ("OutOfMemoryError", "ResourceExhaustedError")
    if oom or any(mark in text.lower() for mark in _OOM_MARKS):
        return f"out of memory: {name}: {text}"[:500]
    return f"{name}: {text}" if text else name


def trial_function(
    ctx: SweepContext, tracker: Tracker, callbacks: Sequence[TrialCallback] = ()
) -> TrialFn:
    """The sweep's objective, opaque to its loop: an asked trial in, its :class:`Outcome`
    out, its runs named ``t{number}-{backend}`` (as Optuna's ``func(trial)``)."""

    pbt = ctx.cfg.study.sampler == "pbt"
    if pbt:  # each segment's final state goes to its run, for the members that continue it
        callbacks = [*callbacks, KeepState()]

    def run_trial(trial: Trial) -> Outcome:
        out = run_once(ctx, tracker, trial, f"t{trial.number}", callbacks=callbacks)
        if pbt:
            tracker.sync()  # the state is in the store before any worker hears it is done
        return out

    return run_trial


def run_once(
    ctx: SweepContext,
    tracker: Tracker,
    trial: Trial | None,
    label: str,
    *,
    values: dict[str, Any] | None = None,
    extra_tags: dict[str, str] | None = None,
    callbacks: Sequence[TrialCallback] = (),
) -> Outcome:
    """Build the sampled Arch and train it on each backend, as runs ``{label}-{backend}``.

    ``trial`` is an Optuna trial (sweeps) or None with ``values`` (fixed runs). Any exception
    (bad Arch, user code, NaN, pruning, interrupt) ends every open child run in the right
    state and propagates, so callers decide the trial's fate. ``callbacks`` hear each job's
    start, epochs, own seconds (its wall time less the epoch hooks; pruned and failed jobs
    included) and completed result; an ``on_epoch`` that raises stops the trial there.
    """
    cfg = ctx.cfg
    out = Outcome(params={})
    base_tags = _base_tags(ctx, label, trial, extra_tags)
    arch, settings, dataset = _build(ctx, tracker, trial, values, label, base_tags, out)
    lineage = _lineage(trial)
    if lineage:
        base_tags[TAG.MUTATION] = lineage["change"]
    job = Job(arch, dataset, settings, Hardware.of(cfg.hardware), ctx.scores)
    artifacts = run_artifacts(ctx, arch, lineage)
    t0 = time.perf_counter()
    modes = resolve(list(cfg.backends), job)  # aliases: each family's fastest mode
    if any(c is not None for _, c in modes):  # calibration trains: job time
        calibration_s = time.perf_counter() - t0
        for cb in callbacks:
            cb.on_job_end(calibration_s)
    base_tags[TAG.ARCH_HASH] = arch.hash
    repeats = cfg.study.repeat
    for r in range(repeats):  # interleaved: every mode once per round
        for i, (name, choice) in enumerate(modes):
            tags = mode_tags(name, choice, base_tags)
            if repeats > 1:
                tags[TAG.REPEAT] = str(r)
            run_name = f"{label}-{name}" + (f"-r{r}" if repeats > 1 else "")
            lead = i == 0 and r == 0  # Optuna hears the first mode
            mode_job = pbt_job(ctx, tracker, trial, job, name, save=r == 0)  # PBT: state
            try:
                result = _run_mode(
                    ctx, tracker, mode_job, run_name, tags, out.params, artifacts, lead, callbacks
                )
            finally:
                drop_copies(mode_job)
            if r == 0:
                out.results[name] = result
    _objective(ctx, out, out.results[modes[0][0]].metrics)
    return out


def _build(
    ctx: SweepContext,
    tracker: Tracker,
    trial: Trial | None,
    values: dict[str, Any] | None,
    label: str,
    base_tags: dict[str, str],
    out: Outcome,
) -> tuple[Arch, TrainSettings, Any]:
    """Sample the Arch, the training settings and the data (a ``@pl.data`` that takes
    ``space``) into ``out``; a failure is recorded once per backend (nothing trained) and
    raised."""
    arch_space = Space(trial, values)
    train_space = Space(trial, values, prefix="train.")
    cfg = ctx.cfg
    try:
        arch = ctx.experiment.build(arch_space)
        dataset = ctx.trial_dataset(arch_space)
        train = sample_train(cfg.train, train_space)
        epochs = segment_epochs(ctx, trial)  # a PBT segment trains ready_epochs
        settings = make_settings(ctx, train, arch_space.train_settings, epochs=epochs)
        out.arch_hash = arch.hash
    except (Exception, TrialTimeout) as e:  # a builder or data function over the deadline
        out.params = _params(arch_space, train_space, cfg)
        _record_unbuilt(ctx, tracker, label, base_tags, out.params, e)
        raise
    out.params = _params(arch_space, train_space, cfg)
    return arch, settings, dataset


def _record_unbuilt(
    ctx: SweepContext,
    tracker: Tracker,
    label: str,
    tags: dict[str, str],
    params: dict[str, Any],
    e: BaseException,
) -> None:
    """A trial whose Arch or settings could not be made: one FAILED run per backend, with
    the traceback, so the failure shows wherever that mode's runs are looked at."""
    for b in ctx.cfg.backends:
        run = tracker.child(f"{label}-{b}", {**tags, TAG.BACKEND: b}, params)
        run.log_text(traceback.format_exc(), "traceback.txt")
        run.end("FAIL", fail_reason(e))


def _base_tags(
    ctx: SweepContext, label: str, trial: Trial | None, extra: dict[str, str] | None
) -> dict[str, str]:
    """The tags every run of this trial carries: what ran, on which data, with which code,
    and the trial's lineage (retries, parents, warm starts, the worker that ran it)."""
    attrs = trial.user_attrs if trial is not None else {}
    tags = {
        TAG.STUDY: ctx.study_name,
        TAG.TRIAL: label.removeprefix("t"),
        TAG.SCRIPT_HASH: ctx.script_hash,
        TAG.CONFIG_HASH: ctx.config_hash,
        TAG.METRIC: ctx.metric,
        TAG.DATA: str(ctx.dataset.name),
        **{f"{TAG.PREFIX}{k}": v for k, v in environment_tags(ctx.script_path).items()},
        **{k: str(v) for k, v in attrs.items() if k in _LINEAGE_ATTRS},
        **pbt_tags(trial),  # member, generation, inherited_from: tN
        **(extra or {}),
    }
    if len(expand_aliases(list(ctx.cfg.backends))) > 1 or ctx.cfg.study.repeat > 1:
        tags[TAG.PAIR] = f"{ctx.study_name}/{label}"  # the runs of one paired configuration
    return tags


def mode_tags(name: str, choice: Choice | None, base: dict[str, str]) -> dict[str, str]:
    """Which mode a run is, as tags (the report and the UI group by these)."""
    info = backend_info(name)
    tags = {
        **base,
        TAG.BACKEND: name,
        TAG.FAMILY: info.family,
        TAG.MODE: info.mode,
        TAG.EAGER: str(info.eager).lower(),
    }
    if choice is not None:
        tags[TAG.AUTO] = choice.tag
        tags[TAG.CALIBRATION] = choice.summary
    return tags


def _run_mode(
    ctx: SweepContext,
    tracker: Tracker,
    job: Job,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, Any],
    artifacts: dict[str, str],
    lead: bool,
    callbacks: Sequence[TrialCallback],
) -> JobResult:
    """One job on one mode as one child run, ended in the state the job reached."""
    name = tags[TAG.BACKEND]
    backend = get_backend(name)
    mode_params = {"backend": name, "family": tags[TAG.FAMILY], "mode": tags[TAG.MODE]}
    run = tracker.child(run_name, tags, {**params, **mode_params})
    run.log_texts(artifacts)
    run.log_metrics(_model_metrics(job.arch, job.dataset), step=0)  # pruned runs have them
    hook_s = [0.0]  # time inside on_epoch: the sweep's, not the job's

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        t0 = time.perf_counter()
        try:
            run.log_metrics(metrics, step=epoch)
            for cb in callbacks:
                cb.on_epoch(name, epoch, metrics)
        finally:
            hook_s[0] += time.perf_counter() - t0

    for cb in callbacks:
        cb.on_job_start(name, lead)
    t_job = time.perf_counter()
    try:
        result = backend.run(job, on_epoch)
    except BaseException as e:
        if isinstance(e, TrialTimeout) and isinstance(backend, _Stoppable):
            backend.close()  # its worker process may be the one that hangs: kill it
        _end_failed(run, e)
        raise
    finally:
        job_s = time.perf_counter() - t_job - hook_s[0]
        for cb in callbacks:
            cb.on_job_end(job_s)
        backend.release()
    curves = result.history[-1] if result.history else {}  # already logged per epoch
    # One-off figures (compile, import, medians) at step 0: a point, not a curve's end.
    run.log_metrics({k: v for k, v in result.metrics.items() if k not in curves}, step=0)
    run.set_tags({f"{TAG.PREFIX}{k}": v for k, v in result.tags.items()})
    for cb in callbacks:  # checkpoints: weights saved here, uploaded/pruned by the writer
        cb.on_job_result(run, job, result, tags)
    run.end("COMPLETE")
    return result


def _objective(ctx: SweepContext, out: Outcome, lead: dict[str, float]) -> None:
    """The values Optuna optimises (lead mode, first round) and the constraint slacks."""
    wanted = [m for m, _ in ctx.objectives] + [m for m, _, _ in ctx.constraints]
    missing = [m for m in wanted if m not in lead]
    if missing:
        raise KeyError(
            f"metric {missing[0]!r} was not measured; available: {', '.join(sorted(lead))}"
        )
    out.values = [lead[m] for m, _ in ctx.objectives]
    # Optuna's convention: a constraint value <= 0 is feasible.
    out.constraints = {
        f"{m} {op} {bound:g}": (lead[m] - bound if op == "<=" else bound - lead[m])
        for m, op, bound in ctx.constraints
    }


def run_artifacts(ctx: SweepContext, arch: Arch, lineage: dict[str, Any]) -> dict[str, str]:
    """What every child run of this configuration uploads (one batch)."""
    artifacts = {
        "arch.json": json.dumps(arch.to_dict(), indent=2),
        "arch.txt": _summary(arch, ctx.dataset),
        f"config/{ctx.config_path.name}": ctx.config_path.read_text(),
        "config/resolved.json": ctx.cfg.model_dump_json(indent=2),
        f"script/{ctx.script_path.name}": ctx.script_path.read_text(),
    }
    if lineage:
        artifacts["lineage.json"] = json.dumps(lineage, indent=2, default=str)
    return artifacts


def _lineage(trial: Trial | None) -> dict[str, Any]:
    """Parent and changed choices of a mutated trial (evolution), for a tag and an artifact."""
    if trial is None or ATTR.PARENT_TRIAL not in trial.user_attrs:
        return {}
    from protolab.samplers import format_diff, mutation_diff

    parent_number = int(trial.user_attrs[ATTR.PARENT_TRIAL])
    parent = trial.study.trials[parent_number]
    diff = mutation_diff(parent.params, trial.params)
    return {
        "parent_trial": parent_number,
        "change": format_diff(parent.params, trial.params),
        "diff": {k: {"parent": old, "child": new} for k, (old, new) in diff.items()},
        "parent_value": parent.values,
    }


def _end_failed(run: RunLog, e: BaseException) -> None:
    import optuna

    if isinstance(e, optuna.TrialPruned):
        run.end("PRUNED")
    elif isinstance(e, (KeyboardInterrupt, SystemExit)):
        run.end("INTERRUPTED", "interrupted")
    else:
        run.log_text("".join(traceback.format_exception(e)), "traceback.txt")
        run.end("FAIL", fail_reason(e))


def _params(arch_space: Space, train_space: Space, cfg: Config) -> dict[str, Any]:
    """Every sampled value plus the train settings (the script's ``space.train`` last), as
    MLflow params."""
    train = {f"train.{k}": v for k, v in cfg.train.model_dump(mode="json").items()}
    train.update({f"train.{k}": v for k, v in train_space.values.items()})
    train.update({f"train.{k}": v for k, v in arch_space.train_settings.items()})
    return {**arch_space.values, **train, "study.seed": cfg.study.seed}


def make_settings(
    ctx: SweepContext,
    train: dict[str, Any],
    script: dict[str, Any],
    *,
    epochs: int,
    max_steps: int | None = None,
) -> TrainSettings:
    """One job's TrainSettings: the config's sampled ``train`` values, then what the script
    set with ``space.train`` (checked against the config's rules once more, together)."""
    from pydantic import ValidationError

    from protolab.backends._base import EarlyStopping
    from protolab.config import Choice as ConfigChoice
    from protolab.config import Range, TrainConfig
    from protolab.errors import SpaceError

    cfg = ctx.cfg.train
    for key in script:
        if isinstance(getattr(cfg, key), (Range, ConfigChoice)):
            raise SpaceError(
                f"space.train({key}=...): train.{key} is searched by the config; "
                "search it in one place (the config or the script)"
            )
    if script:
        try:  # cross-field rules: a script-set schedule or optimizer against their options
            TrainConfig.model_validate({**cfg.model_dump(), **script})
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            raise SpaceError(f"space.train: train.{where}: {msg}") from None
    t = {**train, **script}
    es = cfg.early_stopping
    return TrainSettings(
        epochs=epochs,
        batch_size=int(t["batch_size"]),
        optimizer=str(t["optimizer"]),
        lr=float(t["lr"]),
        weight_decay=float(t["weight_decay"]),
        seed=ctx.cfg.study.seed,
        max_steps=max_steps,
        schedule=str(t["schedule"]),
        schedule_options=cfg.schedule_options.given(),
        grad_clip=None if t["grad_clip"] is None else float(t["grad_clip"]),
        early_stopping=None
        if es is None
        else EarlyStopping(
            es.metric, es.patience, es.min_delta, es.resolved_mode(), es.restore_best_weights
        ),
        label_smoothing=float(t["label_smoothing"]),
        loss=str(t["loss"]),
        custom_loss=ctx.experiment.loss,
        optimizer_options=cfg.optimizer_options.given(),
        drop_last=bool(t["drop_last"]),
        max_total_steps=t["max_steps"],
        custom_optimizer=ctx.experiment.optimizer,
    )


def _model_metrics(arch: Arch, dataset: Dataset) -> dict[str, float]:
    """``model/params`` and ``model/flops_per_sample`` from the Arch (none if it cannot build)."""
    try:
        info = arch.infer(dataset.input_shape, dataset.input_dtype)
    except Exception:  # the backend's build reports why, as the trial's failure
        return {}
    return {
        "model/params": float(info.params),
        "model/flops_per_sample": float(info.flops_per_sample),
    }


def _summary(arch: Arch, dataset: Dataset) -> str:
    try:
        return str(arch.summary(dataset.input_shape, dataset.input_dtype))
    except Exception as e:  # an unbuildable Arch still gets its description logged
        return f"{arch!r}\n\ncannot infer shapes: {e}"
