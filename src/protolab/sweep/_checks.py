"""Checks of a prepared sweep context: what the config, the script, the dataset and the
stores say together, before anything is written.

They live here, beside their inputs, because each needs more than the config: the loaded
experiment (its choices, its loss), the dataset's task, the backends' frameworks, the
stores' paths. The config stays rules only. Everything here reads and never writes, so a
mistake knowable up front is exit 2, not ten failed trials.
"""

from __future__ import annotations

import sys
from typing import Any

from protolab._format import short
from protolab._stores import check_storage_url, check_tracking_uri, default_tracking_uri
from protolab.arch import CustomLayer, build_custom
from protolab.backends import (
    ALIASES,
    FAMILIES,
    Hardware,
    Job,
    backend_info,
    backend_names,
    check_own_job,
    expand_aliases,
    family_members,
    optimizer_frameworks,
    trains_itself,
)
from protolab.config import Choice, Range, check_hardware, metric_task_problem
from protolab.errors import ArchError, ConfigError, ScriptError, SpaceError, StorageError
from protolab.space import Space
from protolab.sweep._context import SweepContext, sample_train
from protolab.sweep._run import make_settings

__all__ = [
    "check_context",
    "check_metrics",
    "check_own_training",
    "check_pbt",
    "check_train_task",
    "check_values",
]


def check_context(ctx: SweepContext) -> None:
    """Everything knowable before training, given a prepared sweep context (read-only)."""
    check_hardware(ctx.cfg.hardware, str(ctx.config_path))
    check_own_training(ctx)
    check_stream(ctx)
    check_pbt(ctx)
    check_metrics(ctx)
    problem = check_train_task(ctx)  # train options this dataset / script cannot run
    if problem:
        raise ConfigError(f"{ctx.config_path}: train.{problem}")
    try:
        check_storage_url(ctx.cfg.study.storage)
        check_tracking_uri(ctx.cfg.tracking.uri, default_tracking_uri())
    except StorageError as e:
        raise StorageError(f"{ctx.config_path}: {e}") from None


def check_own_training(ctx: SweepContext) -> None:
    """A model that trains itself (a LightningModule, a compiled keras.Model) ignores the
    config's optimizer, lr, loss and schedule: a config that sets them is exit 2 here, not
    a failed trial each time (each backend's own rule says which settings; the dry run's
    values stand for the trials')."""
    arch_space, train_space = Space(), Space(prefix="train.")
    try:
        arch = ctx.experiment.build(arch_space)
        train = sample_train(ctx.cfg.train, train_space)
    except Exception:  # the script's own error: the dry run or the trial reports it
        return
    natives = [n for n in arch.layers if isinstance(n, CustomLayer)]
    if len(natives) != 1 or len(arch.layers) != 1:
        return  # only a whole model trains itself
    node, shape = natives[0], ctx.dataset.input_shape
    for framework in node.frameworks():
        if framework not in sys.modules:
            continue  # the script never imported it: its builder cannot have run
        try:
            model = build_custom(node, framework, shape, ctx.dataset.structure is not None)
        except Exception:  # the trial reports a builder that fails
            continue
        if not trains_itself(framework, model):
            continue
        settings = make_settings(ctx, train, arch_space.train_settings, epochs=1)
        job = Job(arch, ctx.dataset, settings, Hardware.of(ctx.cfg.hardware), ctx.scores)
        try:
            check_own_job(framework, job)
        except ArchError as e:
            raise ConfigError(f"{ctx.config_path}: {e} (in {ctx.script_path.name})") from None


def check_stream(ctx: SweepContext) -> None:
    """A streamed training source (``pl.Data(train=...)``) or data with several inputs or
    outputs trains only models that train themselves (their framework's loop reads it); a
    config that pairs it with a mode whose model protolab trains (whole-epoch programs over
    one x array and one y array on the device) is exit 2."""
    stream, structure = ctx.dataset.stream, ctx.dataset.structure
    if stream is None and structure is None:
        return
    if stream is not None:
        _check_own_batches(ctx, stream.kind)
    what = f"pl.Data(train=<{stream.kind}>)" if stream else "several inputs or outputs"
    takes = _self_training_frameworks(ctx)
    if takes is None:
        return  # the script's own error: the dry run reports it
    modes = expand_aliases(list(ctx.cfg.backends))
    refused = [m for m in modes if backend_info(m).builds not in takes]
    if refused:
        taken = [m for m in backend_names() if backend_info(m).builds in takes] or ["none"]
        raise ConfigError(
            f"{ctx.config_path}: backends: {', '.join(refused)} cannot train on the script's "
            f"{what}: such data feeds a model that trains itself (a LightningModule, a "
            "compiled keras.Model), and protolab's own programs keep one x array and one y "
            f"array on the device; modes that take it here: {', '.join(taken)}"
        )


def check_pbt(ctx: SweepContext) -> None:
    """A pbt member hands its weights and optimizer state to the next segment through
    protolab's own programs: a model that trains itself under its framework's loop (a
    LightningModule, a compiled keras.Model) keeps its state where protolab cannot carry
    it, and several devices would have every rank write the one state: exit 2 up front,
    not a failed first segment."""
    if ctx.cfg.study.sampler != "pbt":
        return
    where = f"{ctx.config_path}: study.sampler: pbt"
    if ctx.cfg.hardware.devices != 1:
        raise ConfigError(
            f"{where} hands one device's state from member to member; allowed: "
            f"hardware.devices 1, but got {ctx.cfg.hardware.devices}"
        )
    takes = _self_training_frameworks(ctx)
    if not takes:
        return
    modes = expand_aliases(list(ctx.cfg.backends))
    refused = [m for m in modes if backend_info(m).builds in takes]
    if refused:
        raise ConfigError(
            f"{where} cannot carry the state of a model that trains itself ({', '.join(takes)}"
            f" under its own loop, in backends {', '.join(refused)}); allowed: an Arch of "
            "protolab layers (or a custom layer inside one), or another sampler"
        )


#: sources that make their own batches: train.batch_size does not reach them
_SELF_BATCHING = ("dataloader", "tf.data", "pydataset", "generator")


def _check_own_batches(ctx: SweepContext, kind: str) -> None:
    """A source that batches itself ignores ``train.batch_size``: a config that searches
    it, or writes another size than the source's, would log a batch it never trained."""
    train = ctx.cfg.train
    if kind not in _SELF_BATCHING or "batch_size" not in train.model_fields_set:
        return
    own = len(ctx.dataset.x_train)  # the source's first batch
    if isinstance(train.batch_size, Range | Choice) or train.batch_size != own:
        raise ConfigError(
            f"{ctx.config_path}: train.batch_size={short(train.batch_size)} does not reach "
            f"the script's pl.Data(train=<{kind}>): it makes its own batches (its first has "
            f"{own}); drop train.batch_size from the config, or set the size in the source"
        )


def _self_training_frameworks(ctx: SweepContext) -> set[str] | None:
    """The frameworks whose builder makes a model that trains itself (None: unknown)."""
    try:
        arch = ctx.experiment.build(Space())
    except Exception:
        return None
    natives = [n for n in arch.layers if isinstance(n, CustomLayer)]
    if len(natives) != 1 or len(arch.layers) != 1:
        return set()
    found: set[str] = set()
    for framework in natives[0].frameworks():
        if framework not in sys.modules:
            continue
        try:
            several = ctx.dataset.structure is not None
            model = build_custom(natives[0], framework, ctx.dataset.input_shape, several)
        except Exception:
            return None
        if trains_itself(framework, model):
            found.add(framework)
    return found


def check_values(ctx: SweepContext, values: dict[str, Any], source: str) -> None:
    """Fixed values (``--params``, ``--best``) must be names this script and config take.

    A name the space never asks for would be ignored silently (a typo, or a parameter
    renamed since the best trial ran) and a value outside the current range would fail
    only after the run exists; both are refused here, with the names that are allowed.
    """
    arch, train = Space(values=values), Space(values=values, prefix="train.")
    try:
        ctx.experiment.build(arch)
        ctx.trial_dataset(arch)  # a @pl.data that takes space: its choices are names too
        sample_train(ctx.cfg.train, train)
    except SpaceError as e:
        raise SpaceError(f"{source}: {e}") from None
    except Exception:  # the script's own error or an impossible Arch: the run reports it
        return
    taken = {*arch.values, *(f"train.{k}" for k in train.values)}
    unknown = sorted(k for k in values if k not in taken)
    if unknown:
        allowed = ", ".join(sorted(taken)) or "none (the script declares no choices)"
        fixed = [k for k in unknown if k.startswith("train.")]
        hint = (
            f"; {fixed[0]} is a fixed value in the config, set it there"
            if fixed and fixed[0].removeprefix("train.") in type(ctx.cfg.train).model_fields
            else ""
        )
        raise SpaceError(
            f"{source}: {short(unknown[0], 80)} is not a choice of experiment "
            f"'{ctx.experiment.name}' ({ctx.script_path}) with these values; "
            f"allowed: {allowed}{hint}"
        )


def check_metrics(ctx: SweepContext) -> None:
    """Every objective and constraint must be a metric this dataset can produce."""
    task = ctx.dataset.task
    study = ctx.cfg.study
    for i, (metric, _) in enumerate(ctx.objectives):
        problem = metric_task_problem(metric, task)
        if problem is None:
            continue
        if study.objectives:
            raise ConfigError(f"{ctx.config_path}: study.objectives.{i}.metric: {problem}")
        raise ScriptError(f"{ctx.script_path}: @experiment(metric={metric!r}): {problem}")
    for i, (metric, _, _) in enumerate(ctx.constraints):
        problem = metric_task_problem(metric, task)
        if problem is not None:
            raise ConfigError(f"{ctx.config_path}: study.constraints.{i}: {problem}")


def _choices(v: Any) -> list[Any]:
    return list(v.choices) if isinstance(v, Choice) else [v]


def check_train_task(ctx: SweepContext) -> str | None:
    """Why ``ctx.cfg.train`` cannot run on this study (None when it can): a loss or an
    early-stopping metric the dataset cannot produce, or a custom loss a mode lacks.

    ``ctx`` is a prepared sweep context (its dataset, scores, experiment and backends).
    """
    train, task, scores = ctx.cfg.train, ctx.dataset.task, tuple(ctx.scores)
    losses, smooth = _choices(train.loss), train.label_smoothing
    if task != "classification" and "cross_entropy" in losses:
        return (
            "loss: cross_entropy needs a classification dataset, but got loss=cross_entropy "
            "on a regression dataset; allowed: auto, mse, mae, huber, custom"
        )
    if smooth not in (0, 0.0) and (
        task != "classification" or set(losses) - {"auto", "cross_entropy"}
    ):
        return (
            f"label_smoothing: applies to cross_entropy on classification only, but got "
            f"label_smoothing={short(smooth)} with loss {'/'.join(losses)} on a {task} dataset"
        )
    problem = _custom_loss_problem(ctx, losses) or _optimizer_problem(ctx)
    if problem:
        return problem
    es = train.early_stopping
    if es is not None:
        problem = _unmeasured(es.metric, "early_stopping.metric", task, scores)
    monitor = train.schedule_options.monitor
    if not problem and monitor is not None and "reduce_on_plateau" in _choices(train.schedule):
        problem = _unmeasured(monitor, "schedule_options.monitor", task, scores)
    return problem


def _unmeasured(metric: str, where: str, task: str, scores: tuple[str, ...]) -> str | None:
    """Why a per-epoch ``metric`` (early stopping's, a plateau's monitor) is never measured."""
    problem = metric_task_problem(metric, task)
    if problem:
        return f"{where}: {problem}"
    measured = ["train/loss", "val/loss", "val/acc" if task == "classification" else "val/rmse"]
    measured += [f"val/{s}" for s in scores]
    if metric not in measured:
        return (
            f"{where}: {metric!r} is not measured by this study (add "
            f"{metric.removeprefix('val/')} to `metrics:`); measured: {', '.join(measured)}"
        )
    return None


def _custom_loss_problem(ctx: SweepContext, losses: list[Any]) -> str | None:
    """``loss: custom`` needs the script's protolab.Loss, with a function per framework used."""
    loss = getattr(ctx.experiment, "loss", None)
    if "custom" in losses and loss is None:
        return (
            "loss: 'custom' needs @experiment(loss=protolab.Loss(...)) in the script, but "
            f"{ctx.script_path} gives none; allowed: auto, cross_entropy, mse, mae, huber"
        )
    if loss is None or not set(losses) & {"auto", "custom"}:
        return None
    for name in ctx.cfg.backends:
        builds = None if name in ALIASES else backend_info(name).builds
        if builds and getattr(loss, builds, None) is None:
            return (
                f"loss: the script's protolab.Loss has no {builds}= function, but backend "
                f"{name!r} trains with {builds}; add {builds}=fn to the Loss"
            )
    return None


def _optimizer_problem(ctx: SweepContext) -> str | None:
    """An optimizer a configured mode's framework lacks (lion on PyTorch), or a custom one the
    script does not give (or gives and the config never uses)."""
    names, given = _choices(ctx.cfg.train.optimizer), getattr(ctx.experiment, "optimizer", None)
    if "custom" in names and given is None:
        return (
            "optimizer: 'custom' needs @experiment(optimizer=protolab.Optimizer(...)) in the "
            f"script, but {ctx.script_path} gives none"
        )
    if given is not None and "custom" not in names:
        return (
            f"optimizer: the script gives protolab.Optimizer, but train.optimizer is "
            f"{'/'.join(map(str, names))}, so it would never train; set train.optimizer: custom"
        )
    for name in names:
        takes = optimizer_frameworks(str(name))
        if name == "custom":  # the script's factories: one per framework a mode trains with
            takes = tuple(f for f in takes if getattr(given, f, None) is not None)
        for backend in expand_aliases(list(ctx.cfg.backends)):
            members = family_members(backend) if backend in FAMILIES else [backend]
            builds = {backend_info(m).builds for m in members}
            if "" in builds or builds & set(takes):
                continue  # a plugin's framework is unknown; an alias picks a member that can
            modes = [n for n in backend_names() if backend_info(n).builds in takes]
            what = (
                f"protolab.Optimizer has no {'/'.join(builds)}="
                if name == "custom"
                else (f"{name} has no {'/'.join(builds)} implementation")
            )
            return (
                f"optimizer: {what}, but backend {backend!r} trains with {'/'.join(builds)}; "
                f"{name} trains on {', '.join(modes)}"
            )
    return None
