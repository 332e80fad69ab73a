"""Everything a sweep or a single run needs, checked before any store is touched."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protolab._stores import default_tracking_uri
from protolab.arch import Native
from protolab.backends import pin_loaded_frameworks
from protolab.config import (
    Choice,
    Config,
    Range,
    TrainConfig,
    config_hash,
    infer_direction,
    logged_names_problem,
    metric_task_problem,
    parse_constraint,
    visible_gpus,
)
from protolab.errors import ArchError, ConfigError, DataError, ScriptError, SpaceError
from protolab.script import Experiment, load_experiment, script_hash, train_remaker
from protolab.space import Space

if TYPE_CHECKING:
    from protolab.arch import Arch

__all__ = ["SweepContext", "prepare", "sample_train"]


@dataclass(frozen=True)
class SweepContext:
    cfg: Config
    config_path: Path
    script_path: Path
    experiment: Experiment
    dataset: Any  # protolab.data.Dataset (imported lazily: numpy)
    metric: str  # the first objective: reported per epoch, shown in tables
    direction: str
    script_hash: str
    config_hash: str
    objectives: tuple[tuple[str, str], ...] = ()  # (metric, direction) for each objective
    constraints: tuple[tuple[str, str, float], ...] = ()  # (metric, "<=" | ">=", bound)
    distributions: dict[str, Any] = field(default_factory=dict)  # the dry run's choices
    scores: tuple[str, ...] = ()  # extra val/<name> scores every job logs (data/_scores.py)

    def trial_dataset(self, space: Space) -> Any:
        """The data a trial trains on: a ``@pl.data`` that takes ``space`` is called with
        the trial's (its choices join the trial's params); else the one loaded up front."""
        fn = self.experiment.data_fn
        if self.cfg.data is not None or fn is None or not fn.takes_space:
            return self.dataset
        return load_data(self.cfg, self.config_path, self.script_path, self.experiment, space)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def grid(self) -> dict[str, list[Any]] | None:
        from protolab.sweep._study import grid_space

        return grid_space(self.distributions) if self.cfg.study.sampler == "grid" else None

    @property
    def study_name(self) -> str:
        assert self.cfg.study.name is not None
        return self.cfg.study.name

    @property
    def tracking_uri(self) -> str:
        return self.cfg.tracking.uri or default_tracking_uri()


def sample_train(train: TrainConfig, space: Space) -> dict[str, Any]:
    """Resolve train settings: plain values pass through, ranges/choices are sampled."""
    out: dict[str, Any] = {}
    for name, value in train:
        if isinstance(value, Range):
            whole = name == "batch_size"
            if whole:
                step = int(value.step or 1)
                out[name] = space.int(
                    name, int(value.low), int(value.high), step=step, log=value.log
                )
            else:
                out[name] = space.float(name, value.low, value.high, step=value.step, log=value.log)
        elif isinstance(value, Choice):
            out[name] = space.choice(name, value.choices)
        else:
            out[name] = value
    return out


def load_data(
    cfg: Config, config_path: Path, script_path: Path, exp: Experiment, space: Space
) -> Any:
    """The config's ``data:`` (relative to the config), else the script's ``@pl.data``, else
    ``@pl.experiment(data=...)`` (relative to the script): the first one given wins."""
    from protolab.data import dataset_from_mapping, load_dataset

    seed = cfg.study.seed
    if cfg.data is not None:
        try:
            return load_dataset(cfg.data, base_dir=config_path.parent, seed=seed)
        except DataError as e:
            raise DataError(f"{config_path}: data: {e}") from None
    fn = exp.data_fn
    if fn is None:
        return load_dataset(exp.data, base_dir=script_path.parent, seed=seed)
    try:
        value = fn.call(space)
    except SystemExit as e:
        from protolab.script._loader import exit_error

        raise exit_error(e, str(script_path), f"@data function '{fn.name}'") from None
    except (ScriptError, SpaceError) as e:
        raise type(e)(f"{script_path}: {e}") from None
    except Exception as e:
        from protolab.script._loader import _user_frame

        raise ScriptError(
            f"{_user_frame(e, script_path)}: @data function '{fn.name}' raised "
            f"{type(e).__name__}: {e}"
        ) from None
    where = f"{script_path}: @data function '{fn.name}'"
    remake = train_remaker(fn, space.values)
    return dataset_from_mapping(
        fn.name, value, where=where, seed=seed, val_fraction=0.2, remake=remake
    )


def _check_buildable(cfg: Config, config_path: Path, script_path: Path, arch: Any) -> None:
    """A custom layer with one builder runs on its framework's modes only: refuse the rest."""
    from protolab.backends._calibrate import check_buildable

    try:
        check_buildable(list(cfg.backends), arch)
    except ArchError as e:
        raise ConfigError(f"{config_path}: {e} (in {script_path.name})") from None


def _scores(
    cfg: Config, exp: Experiment, objectives: tuple[tuple[str, str], ...], path: Path, ds: Any
) -> tuple[str, ...]:
    """The extra scores to compute: asked for, or named by an objective or constraint."""
    from protolab.data._scores import SCORES

    named = [m for m, _ in objectives] + [
        m for m, _, _ in map(parse_constraint, cfg.study.constraints)
    ]
    wanted = [*exp.metrics, *cfg.metrics, *(m.removeprefix("val/") for m in named)]
    scores = tuple(dict.fromkeys(n for n in wanted if n in SCORES))
    for name in scores:
        problem = metric_task_problem(f"val/{name}", ds.task)
        if problem:
            raise ConfigError(f"{path}: metrics: {problem}")
    if "auc" in scores and ds.n_classes != 2:
        raise ConfigError(
            f"{path}: metrics: auc is the binary ROC AUC, but data '{ds.name}' has "
            f"{ds.n_classes} classes; use f1, precision, recall or top5_acc"
        )
    return scores


def check_devices(cfg: Config, config_path: Path) -> None:
    """More devices per trial than the machine or a backend can give is refused up front.

    On the CPU a device is one core: a DDP rank (torch) or a logical CPU device
    (TensorFlow), so more than the cores this process may use would only contend. Family
    aliases are not checked here: they pick among the modes that can.
    """
    from protolab.backends import ALIASES, backend_names, get_backend

    devices = cfg.hardware.devices
    if devices > 1:
        _check_device_count(cfg, config_path)
    for name in cfg.backends:
        limit = None if name in ALIASES else get_backend(name).max_devices
        if limit is not None and devices > limit:
            able = [n for n in backend_names() if get_backend(n).max_devices is None]
            raise ConfigError(
                f"{config_path}: hardware.devices: the {name} backend trains at most {limit} "
                f"device(s) per trial for now, but got devices={devices}; use devices: 1, "
                f"or backends that can: {', '.join(able) or 'none'}"
            )


def _check_device_count(cfg: Config, config_path: Path) -> None:
    """``hardware.devices`` against the cores (CPU) or visible GPUs (``auto``) here."""
    hw = cfg.hardware
    gpus = visible_gpus()
    if hw.accelerator == "cpu" or (hw.accelerator == "auto" and gpus == 0):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
        if hw.devices > cores:
            raise ConfigError(
                f"{config_path}: hardware.devices: {hw.devices} CPU devices asked for (one "
                f"core each: a DDP rank or a logical TensorFlow device), but this machine "
                f"gives this process {cores} cores; allowed here: 1..{cores}"
            )
    elif hw.accelerator == "auto" and gpus is not None and hw.devices > gpus:
        raise ConfigError(
            f"{config_path}: hardware.devices: {hw.devices} GPUs asked for (accelerator "
            f"auto found GPUs), but this machine has {gpus}; allowed here: 1..{gpus}"
        )


def _dry_build(
    exp: Experiment, cfg: Config, script_path: Path, dry: Space, dry_train: Space
) -> Arch | None:
    """The experiment called once with default values; its errors name the user's line.
    A layer given an argument it does not take (an ArchError while the Arch is made) is
    refused here; an Arch whose shapes do not fit is only a failed trial later."""
    try:
        sample_train(cfg.train, dry_train)
        return exp.build(dry)
    except (ScriptError, SpaceError, ArchError) as e:
        raise type(e)(f"{script_path}: {e}") from None
    except Exception as e:
        from protolab.script._loader import _user_frame

        raise ScriptError(
            f"{_user_frame(e, script_path)}: experiment '{exp.name}' raised {type(e).__name__}: {e}"
        ) from None


def _check_logged(
    cfg: Config,
    config_path: Path,
    script_path: Path,
    arch: Arch | None,
    objectives: tuple[tuple[str, str], ...],
) -> None:
    """An objective or constraint named as a model logs it (``val_loss``) needs a native
    model, whose own training logs it (an unbuilt dry run: the trial will tell)."""
    native = arch is None or any(isinstance(n, Native) for n in arch.layers)
    found = logged_names_problem(
        [m for m, _ in objectives],
        [parse_constraint(c)[0] for c in cfg.study.constraints],
        native,
        bool(cfg.study.objectives),
    )
    if found is not None:
        raise ConfigError(f"{config_path if found[0] else script_path}: {found[1]}")


def _check_search(cfg: Config, config_path: Path, distributions: dict[str, Any]) -> None:
    """Build the sampler and pruner once now: bad options fail here, before any store."""
    from protolab.sweep._study import make_pruner, make_sampler

    study = cfg.study
    try:
        grid = None
        if study.sampler == "grid":
            from protolab.sweep._study import grid_space

            grid = grid_space(distributions)
        make_sampler(study.sampler, study.seed, study.sampler_options, grid)
        several = [
            (o.metric, o.direction or infer_direction(o.metric)) for o in study.objectives or []
        ]
        make_pruner(study.pruner, study.pruner_options, several)
    except ConfigError as e:
        raise ConfigError(f"{config_path}: {e}") from None


def prepare(cfg: Config, config_path: Path, script_path: Path) -> SweepContext:
    """Load the script and data and dry-run the experiment: bad input fails here, exit 2.

    The dry run calls the experiment with default values, which catches errors in the
    user's function (with file:line) before a study or an MLflow run exists, and a
    builder of custom code that hands back the same model twice. An Arch whose shapes do
    not fit is only a failed trial later (other values may fit), so it is not fatal here.
    """
    check_devices(cfg, config_path)
    exp = load_experiment(script_path)
    pin_loaded_frameworks(cfg.hardware.threads)  # before the dry run starts a runtime
    dry, dry_train = Space(), Space(prefix="train.")
    dataset = load_data(cfg, config_path, script_path, exp, dry)
    arch = _dry_build(exp, cfg, script_path, dry, dry_train)
    if arch is not None:
        _check_buildable(cfg, config_path, script_path, arch)
        several = dataset.structure is not None  # several inputs or outputs
        arch.check_builders(dataset.input_shape, dataset.input_dtype, several)
    metric, direction = exp.resolve_metric(dataset.metric)
    if cfg.study.objectives:
        objectives = tuple(
            (o.metric, o.direction or infer_direction(o.metric)) for o in cfg.study.objectives
        )
        metric, direction = objectives[0]
    else:
        objectives = ((metric, direction),)
    _check_logged(cfg, config_path, script_path, arch, objectives)
    distributions = {
        **dry.distributions,
        **{f"train.{k}": d for k, d in dry_train.distributions.items()},
    }
    _check_search(cfg, config_path, distributions)
    return SweepContext(
        cfg=cfg,
        config_path=config_path.resolve(),
        script_path=script_path,
        experiment=exp,
        dataset=dataset,
        metric=metric,
        direction=direction,
        script_hash=script_hash(script_path),
        config_hash=config_hash(cfg),
        objectives=objectives,
        constraints=tuple(parse_constraint(c) for c in cfg.study.constraints),
        distributions=distributions,
        scores=_scores(cfg, exp, objectives, config_path, dataset),
    )
