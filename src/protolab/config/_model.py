"""Typed config: every key, its type, its default (with a comment saying why).

Models forbid unknown keys, so a typo (``study.n_trails``) fails before anything runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from protolab._format import short
from protolab._stores import STORAGE_SCHEMES, TRACKING_SCHEMES, redact, scheme
from protolab.config._domains import check_train_value
from protolab.config._metrics import check_metric_name, infer_direction
from protolab.config._pbt import pbt_defaults, pbt_study_problem, pbt_train_problem

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "SCHEDULE_OPTIONS",
    "BackendNames",
    "Choice",
    "Config",
    "EarlyStoppingConfig",
    "HardwareConfig",
    "Objective",
    "OptimizerOptions",
    "Range",
    "ScheduleOptions",
    "StudyConfig",
    "TrackingConfig",
    "TrainConfig",
    "parse_constraint",
]

# Kept as Literals so pydantic lists the allowed values in its error for free.
Sampler = Literal["tpe", "random", "gp", "cmaes", "nsga2", "qmc", "grid", "evolution", "pbt"]
Pruner = Literal[
    "none", "median", "percentile", "hyperband", "successive_halving", "threshold", "pareto"
]
SAMPLERS: tuple[str, ...] = Sampler.__args__  # type: ignore[attr-defined]
PRUNERS: tuple[str, ...] = Pruner.__args__  # type: ignore[attr-defined]


class _Strict(BaseModel):
    # NaN and inf are never a setting: `lr: .nan` would train ten failed trials.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, v: Any, info: ValidationInfo) -> Any:
        """pydantic reads ``true`` as 1 for a number field; a boolean there is a mistake."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(v, bool) and field is not None and "bool" not in str(field.annotation):
            raise ValueError(f"a boolean is not allowed here, but got {v!r}")
        return v


class Range(_Strict):
    """A numeric search range: ``{low: 1e-4, high: 1e-2, log: true}``."""

    low: float
    high: float
    log: bool = False  # sample on a log scale (learning rates, widths)
    step: float | None = None  # quantise (e.g. batch sizes in steps of 32)

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"`low <= high` must hold, but got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"`low > 0` must hold when log=true, but got low={self.low}")
        if self.step is not None and (self.step <= 0 or self.log):
            raise ValueError(f"`step > 0` without log must hold, but got step={self.step}")
        if self.step is not None and self.step > self.high - self.low > 0:
            raise ValueError(  # else every trial would get `low`: the range collapses
                f"`step <= high - low` must hold, but got step={self.step} for "
                f"low={self.low}, high={self.high}"
            )
        return self


class Choice(_Strict):
    """A categorical search choice: ``{choices: [32, 64, 128]}``."""

    choices: list[float | int | str | bool] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        seen: list[Any] = []
        for c in v:
            if any(c == s and type(c) is type(s) for s in seen):
                raise ValueError(f"choices must be distinct, but {short(c)} appears twice")
            seen.append(c)
        return v


# Metric families an objective or constraint may name (DESIGN §7).
METRIC_PREFIXES = ("val/", "train/", "time/", "throughput/", "memory/", "model/", "perf/")
_CONSTRAINT = re.compile(r"^\s*([\w./]+)\s*(<=|>=)\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*$")


def _check_metric(metric: str) -> str:
    return check_metric_name(metric)  # the one registry (config/_metrics.py)


class Objective(_Strict):
    """One thing to optimise: ``{metric: time/step_ms, direction: minimize}``."""

    metric: str  # any contract metric, measured on the first backend listed
    direction: Literal["maximize", "minimize"] | None = None  # default: inferred from the name

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_metric(v)


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_study_name(name: str) -> str:
    """A study name becomes folder names (reports/NAME) and MLflow filter values: keep it safe."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            "a study name must be 1-100 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit and without '..' (it names folders and MLflow filters), but got "
            f"{short(name)}"
        )
    return name


def safe_study_name(stem: str) -> str:
    """The default study name from a config file's stem, made safe (``my config`` -> my-config)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem.replace("_", "-")).strip("-._")
    return re.sub(r"\.{2,}", ".", name)[:100] or "study"


def parse_constraint(text: str) -> tuple[str, str, float]:
    """``"model/params <= 1e6"`` -> ("model/params", "<=", 1e6)."""
    m = _CONSTRAINT.match(text)
    if m is None:
        raise ValueError(
            f"a constraint must look like 'METRIC <= NUMBER' or '>=', but got {text!r}"
        )
    return _check_metric(m.group(1)), m.group(2), float(m.group(3))


# Pruners that judge a rung by ranking one value: refused with several objectives (the
# others judge each epoch's objective vector: protolab.samplers, README "Pruners").
_RANKS_BY_ONE_VALUE = ("hyperband", "successive_halving")


class StudyConfig(_Strict):
    name: str | None = Field(
        None, min_length=1
    )  # Optuna study = MLflow experiment; default: file stem
    storage: str | None = None  # None: a local journal under mlruns/; or any Optuna URL
    n_trials: int = Field(20, ge=1)  # finished trials in the study in total (reruns top up)
    timeout_s: float | None = Field(None, gt=0)  # stop starting new trials after this long
    # stop a trial that runs longer than this (FAIL, reason timeout) and go on with the next
    trial_timeout_s: float | None = Field(None, gt=0)
    sampler: Sampler = "tpe"  # TPE adapts to conditional, define-by-run spaces
    # Passed to the sampler: e.g. {population_size: 20, tournament_size: 5, n_mutations: 1}
    # for evolution, {n_startup_trials: 10} for tpe/evolution/gp.
    # pbt: {population_size: 4, ready_epochs: 1, truncation: 0.25, perturb: [0.8, 1.25],
    # moves: [lr]} (lists allowed)
    sampler_options: dict[str, int | float | bool | str | list[int | float | str]] = Field(
        default_factory=dict
    )
    pruner: Pruner = "median"  # stops trials whose per-epoch curve is worse than the median
    # (several objectives: whose objective vector is behind by Pareto fronts, README Pruners)
    # Passed to the pruner: e.g. {percentile: 25} or {lower: 0.5} (threshold).
    pruner_options: dict[str, int | float | bool | str] = Field(default_factory=dict)
    # Several objectives make a multi-objective study (Pareto front); default: the script's.
    objectives: list[Objective] | None = Field(None, min_length=1)
    constraints: list[str] = Field(default_factory=list)  # e.g. ["model/params <= 1e6"]
    seed: int = Field(0, ge=0, le=2**32 - 1)  # seeds the sampler and every trial's training
    max_failures: int = Field(10, ge=1)  # stop after this many failed trials in a row
    max_retries: int = Field(2, ge=0)  # re-run a trial lost to a killed worker or an interrupt
    # RDB storages (many hosts): each trial's worker beats this often; a trial silent for
    # 4x as long is failed by another worker, its MLflow runs ended, its params retried
    heartbeat_s: int = Field(30, ge=1, le=3600)
    # measure each configuration this many times on every backend, interleaved (tighter
    # speed-up intervals for one architecture; the objective is the first measurement's)
    repeat: int = Field(1, ge=1, le=100)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        return v if v is None else check_study_name(v)

    @field_validator("objectives")
    @classmethod
    def _distinct_objectives(cls, v: list[Objective] | None) -> list[Objective] | None:
        metrics = [o.metric for o in v or []]
        twice = sorted({m for m in metrics if metrics.count(m) > 1})
        if twice:
            raise ValueError(f"each metric may be one objective, but {twice[0]} appears twice")
        return v

    @field_validator("constraints")
    @classmethod
    def _parse_constraints(cls, v: list[str]) -> list[str]:
        for text in v:
            parse_constraint(text)
        return v

    @model_validator(mode="after")
    def _pruner_fits_objectives(self) -> StudyConfig:
        metrics = [o.metric for o in self.objectives or []]
        several = metrics if len(metrics) > 1 else []
        if several and self.pruner in _RANKS_BY_ONE_VALUE:
            raise ValueError(
                f"pruner {self.pruner!r} promotes the top 1/reduction_factor of each rung by one "
                "value, an order a Pareto front does not have: with several objectives use "
                f"pareto, median, percentile, threshold or none, but got {self.pruner!r} with "
                f"{len(several)} objectives"
            )
        if several and self.pruner == "threshold":
            keys = set(self.pruner_options) - {"n_warmup_steps"}
            if not keys or not keys <= set(several):
                raise ValueError(
                    "pruner 'threshold' with several objectives needs a bound per objective "
                    f"metric in pruner_options (one or more of {', '.join(several)}; a "
                    f"maximised one prunes below it, a minimised one above), but got "
                    f"{self.pruner_options}"
                )
        elif self.pruner == "threshold" and not {"lower", "upper"} & set(self.pruner_options):
            raise ValueError(
                "pruner 'threshold' needs pruner_options {lower: X} and/or {upper: Y}, "
                f"but got {self.pruner_options}"
            )
        return self

    @model_validator(mode="after")
    def _pbt_fits_study(self) -> StudyConfig:
        problem = pbt_study_problem(self)  # config/_pbt.py
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, v: str | None) -> str | None:
        if v is None or v.endswith((".journal", ".log")) or scheme(v) in STORAGE_SCHEMES:
            return v
        raise ValueError(
            f"unsupported URL {redact(v)!r}; allowed: null (a local journal under mlruns/), "
            "a path ending in .journal, sqlite:///FILE, postgresql://..., mysql://..., "
            "redis://..., grpc://HOST:PORT"
        )


Optimizer = Literal[
    "adam", "adamw", "sgd", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "lion", "custom"
]
OPTIMIZERS: tuple[str, ...] = Optimizer.__args__  # type: ignore[attr-defined]
Schedule = Literal["constant", "step", "cosine", "warmup_cosine", "one_cycle", "reduce_on_plateau"]
Loss = Literal["auto", "cross_entropy", "mse", "mae", "huber", "custom"]
# schedule -> the options it reads (backends/_schedule.py computes each; the config refuses
# an option the chosen schedule does not read). reduce_on_plateau is an epoch-level rule:
# the learning rate is train.lr until the monitored metric stops improving.
SCHEDULE_OPTIONS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "cosine": ("min_lr",),
    "warmup_cosine": ("warmup", "min_lr"),
    "one_cycle": ("warmup", "div_factor", "final_div_factor"),
    "reduce_on_plateau": ("factor", "patience", "min_delta", "cooldown", "min_lr", "monitor",
                          "mode"),
}  # fmt: skip
# optimizer -> the options it takes. Each option has one meaning and one default on every
# mode; backends/_optimizers.py maps it to each framework's keyword (rmsprop's rho is
# PyTorch's alpha, betas are Keras' beta_1/beta_2, eps is Keras' epsilon). lion has no
# PyTorch twin (Keras modes only); custom is the script's protolab.Optimizer.
OPTIMIZER_OPTIONS: dict[str, tuple[str, ...]] = {
    "adam": ("betas", "eps", "amsgrad"),
    "adamw": ("betas", "eps", "amsgrad"),
    "sgd": ("momentum", "nesterov"),
    "rmsprop": ("rho", "eps", "momentum", "centered"),
    "adagrad": ("eps", "initial_accumulator_value"),
    "adadelta": ("rho", "eps"),
    "adamax": ("betas", "eps"),
    "nadam": ("betas", "eps"),
    "lion": ("betas",),
    "custom": (),
}


def _per_epoch_metric(v: str, what: str) -> str:
    """A metric measured after every epoch (train/loss or a val/ metric), for ``what``."""
    check_metric_name(v)
    if not (v.startswith("val/") or v == "train/loss"):
        raise ValueError(
            f"{what} needs a metric measured every epoch (train/loss or a val/ metric), "
            f"but got {v!r}"
        )
    return v


def _mode_of(metric: str) -> str:
    return "max" if infer_direction(metric) == "maximize" else "min"


class ScheduleOptions(_Strict):
    """Options of ``train.schedule``; unset ones keep the schedule's default."""

    warmup: float | None = Field(None, ge=0)  # warm-up: a fraction of all steps (< 1) or steps
    # cosine floor / reduce_on_plateau's floor, as a fraction of lr (0)
    min_lr: float | None = Field(None, ge=0, le=1)
    step_size: int | None = Field(None, ge=1)  # step: epochs between decays (1)
    gamma: float | None = Field(None, gt=0, le=1)  # step: factor per decay (0.1)
    div_factor: float | None = Field(None, gt=0)  # one_cycle: start at lr / div_factor (25)
    final_div_factor: float | None = Field(None, gt=0)  # one_cycle: end lower by this (1e4)
    # reduce_on_plateau (Keras' ReduceLROnPlateau; PyTorch's with threshold_mode="abs"):
    factor: float | None = Field(None, gt=0, lt=1)  # the lr is multiplied by this (0.1)
    patience: int | None = Field(None, ge=0)  # epochs without improvement before (10)
    min_delta: float | None = Field(None, ge=0)  # improving = beating the best by more (1e-4)
    cooldown: int | None = Field(None, ge=0)  # epochs after a reduction that wait (0)
    monitor: str | None = None  # a per-epoch metric (val/loss)
    mode: Literal["min", "max"] | None = None  # default: from the monitor's name

    @field_validator("monitor")
    @classmethod
    def _per_epoch(cls, v: str | None) -> str | None:
        return v if v is None else _per_epoch_metric(v, "reduce_on_plateau's monitor")

    def given(self) -> tuple[tuple[str, float | str], ...]:
        """The options set, numbers as floats; a monitor brings its resolved mode along."""
        out = [(k, v if isinstance(v, str) else float(v))
               for k, v in self.model_dump().items() if v is not None]  # fmt: skip
        if self.monitor is not None and self.mode is None:
            out.append(("mode", _mode_of(self.monitor)))
        return tuple(out)


class OptimizerOptions(_Strict):
    """Options of ``train.optimizer``; unset ones keep protolab's one default (Keras' but
    SGD's momentum: backends/_optimizers.py), the same on every mode."""

    # adam/adamw/adamax/nadam: (0.9, 0.999); lion: (0.9, 0.99)
    betas: tuple[float, float] | None = None
    eps: float | None = Field(None, gt=0)  # every optimizer but sgd/lion: 1e-7 (Keras' epsilon)
    momentum: float | None = Field(None, ge=0, lt=1)  # sgd: 0.9; rmsprop: 0
    nesterov: bool | None = None  # sgd: false
    rho: float | None = Field(None, ge=0, lt=1)  # rmsprop: 0.9 (PyTorch's alpha); adadelta: 0.95
    amsgrad: bool | None = None  # adam/adamw: false
    centered: bool | None = None  # rmsprop: false
    initial_accumulator_value: float | None = Field(None, ge=0)  # adagrad: 0.1

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not all(0 <= b < 1 for b in v):
            raise ValueError(f"both betas must lie in [0, 1), but got {list(v)}")
        return v

    def given(self) -> tuple[tuple[str, Any], ...]:
        return tuple((k, v) for k, v in self.model_dump().items() if v is not None)


class EarlyStoppingConfig(_Strict):
    """Stop a job when ``metric`` stops improving (the same rule on every mode)."""

    metric: str = "val/loss"  # a per-epoch metric: train/loss or a val/ metric
    patience: int = Field(3, ge=1)  # epochs without improvement before stopping
    min_delta: float = Field(0.0, ge=0)  # an improvement must beat the best by more than this
    mode: Literal["min", "max"] | None = None  # default: from the name, as objectives
    # Keras' name and default: at the end, the weights of the best epoch by ``metric`` are
    # restored before the final evaluation (the run's final metrics are that epoch's)
    restore_best_weights: bool = False

    @field_validator("metric")
    @classmethod
    def _per_epoch(cls, v: str) -> str:
        return _per_epoch_metric(v, "early stopping")

    def resolved_mode(self) -> str:
        return self.mode or _mode_of(self.metric)


def _choices(v: Any) -> list[Any]:
    return list(v.choices) if isinstance(v, Choice) else [v]


def _in_interval(name: str, v: Any, low: float, high: float | None, open_low: bool) -> Any:
    """A value, range or choice of ``name`` inside [low (or open), high)."""
    rule = f"{'>' if open_low else '>='} {low:g}" + (f" and < {high:g}" if high else "")
    points = [v.low, v.high] if isinstance(v, Range) else _choices(v)
    for x in points:
        if x is None:
            continue
        bad = isinstance(x, bool) or not isinstance(x, (int, float))
        if bad or x < low or (open_low and x == low) or (high is not None and x >= high):
            raise ValueError(f"{name} must be a finite number {rule}, but got {short(x)}")
    return v


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)  # full passes over the training split
    batch_size: int | Range | Choice = 64  # a value, or a range/choice to search
    optimizer: Optimizer | Choice = "adam"
    lr: float | Range | Choice = 1e-3  # learning rate (the peak, under a schedule)
    weight_decay: float | Range | Choice = 0.0  # L2 (decoupled for adam/adamw)
    # per-step learning rate, the same table on every mode (backends/_schedule.py)
    schedule: Schedule | Choice = "constant"
    schedule_options: ScheduleOptions = Field(default_factory=ScheduleOptions)
    optimizer_options: OptimizerOptions = Field(default_factory=OptimizerOptions)
    grad_clip: float | Range | Choice | None = None  # clip the gradients' global norm to this
    early_stopping: EarlyStoppingConfig | None = None  # e.g. {metric: val/loss, patience: 3}
    label_smoothing: float | Range | Choice = 0.0  # cross-entropy only, in [0, 1)
    # auto: cross_entropy (classification) or mse (regression); custom: the script's
    # @experiment(loss=protolab.Loss(...))
    loss: Loss | Choice = "auto"
    drop_last: bool = True  # false: the ragged last batch trains as one smaller step
    # stop after this many optimizer steps in all (the last epoch may be partial); training
    # ends at whichever comes first, this or `epochs`, and a schedule spans what trains
    max_steps: int | None = Field(None, ge=1)

    @field_validator("batch_size", "lr", "weight_decay")
    @classmethod
    def _in_domain(cls, v: Any, info: ValidationInfo) -> Any:
        return check_train_value(str(info.field_name), v)  # values, ranges and choices alike

    @field_validator("grad_clip")
    @classmethod
    def _clip(cls, v: Any) -> Any:
        return v if v is None else _in_interval("grad_clip", v, 0, None, open_low=True)

    @field_validator("label_smoothing")
    @classmethod
    def _smoothing(cls, v: Any) -> Any:
        return _in_interval("label_smoothing", v, 0, 1, open_low=False)

    @field_validator("optimizer", "schedule", "loss")
    @classmethod
    def _known_names(cls, v: Any, info: ValidationInfo) -> Any:
        allowed = {
            "optimizer": OPTIMIZERS,
            "schedule": tuple(SCHEDULE_OPTIONS),
            "loss": Loss.__args__,  # type: ignore[attr-defined]
        }[str(info.field_name)]
        bad = [c for c in _choices(v) if c not in allowed]
        if bad:
            raise ValueError(
                f"unknown {info.field_name} {short(bad[0])}; allowed: {', '.join(allowed)}"
            )
        return v

    @field_validator("schedule_options")
    @classmethod
    def _options_of_schedule(cls, v: ScheduleOptions, info: ValidationInfo) -> ScheduleOptions:
        names = _choices(info.data.get("schedule", "constant"))
        used = {o for n in names for o in SCHEDULE_OPTIONS.get(n, ())}
        return _only(v.given(), used, "schedule", names, SCHEDULE_OPTIONS, v)

    @field_validator("optimizer_options")
    @classmethod
    def _options_of_optimizer(cls, v: OptimizerOptions, info: ValidationInfo) -> OptimizerOptions:
        names = _choices(info.data.get("optimizer", "adam"))
        for name in names:  # every optimizer a trial may sample must take every option
            _only(v.given(), set(OPTIMIZER_OPTIONS.get(name, ())), "optimizer", [name],
                  OPTIMIZER_OPTIONS, v)  # fmt: skip
        if v.nesterov and v.momentum == 0:
            raise ValueError("nesterov needs momentum > 0, but got momentum=0")
        return v

    @model_validator(mode="after")
    def _custom_sets_its_own_decay(self) -> TrainConfig:
        decay = self.weight_decay
        if "custom" in _choices(self.optimizer) and (
            isinstance(decay, (Range, Choice)) or decay != 0
        ):
            raise ValueError(
                "a custom optimizer sets its own weight decay in the script's "
                f"protolab.Optimizer factories, but got weight_decay={short(decay)}; "
                "set train.weight_decay: 0"
            )
        return self


def _only(given: tuple[tuple[str, Any], ...], used: set[str], what: str, names: list[Any],
          table: dict[str, tuple[str, ...]], v: Any) -> Any:  # fmt: skip
    """Refuse an option the chosen schedule/optimizer does not read (it would be ignored)."""
    for key, value in given:
        if key not in used:
            takes = {n: ", ".join(table.get(n, ())) or "none" for n in names}
            listed = "; ".join(f"{n} takes {t}" for n, t in takes.items())
            raise ValueError(
                f"{key}={short(value)} is not an option of {what} "
                f"{' / '.join(map(str, names))} ({listed})"
            )
    return v


class HardwareConfig(_Strict):
    accelerator: Literal["auto", "cpu", "gpu", "tpu"] = "auto"  # auto: GPU/TPU when present
    devices: int = Field(1, ge=1)  # devices per trial
    precision: Literal["32", "bf16", "16"] = "32"  # 16 = float16 mixed (GPU only)
    # intra-op CPU threads per trial (torch and TF); null: the frameworks' default (all cores)
    threads: int | None = Field(None, ge=1)
    # under `sweep --workers`: a worker that ran this many trials with a static backend is
    # restarted (TensorFlow keeps every program it compiled, ~13 MB a trial); null: never
    recycle_after: int | None = Field(50, ge=1)
    # persistent compile cache (torch-compile, jax, keras' XLA) shared by runs, workers and
    # hosts: a folder, or off; null: compile_cache/ beside the MLflow store (mlruns/)
    compile_cache: str | None = Field(None, min_length=1)
    compile_cache_max_mb: int = Field(2048, ge=1)  # LRU size cap, applied after each run
    # hosts that share only the tracking server: a miss's entries go there as artifacts and
    # are downloaded before a compile; they are code that runs here: needs --trust
    compile_cache_sync: bool = False

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v  # YAML reads `precision: 32` as an int

    @field_validator("compile_cache", mode="before")
    @classmethod
    def _off_as_text(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _check(self) -> HardwareConfig:
        if self.accelerator in ("cpu", "tpu") and self.precision == "16":
            raise ValueError(
                f"precision '16' needs a GPU; on accelerator {self.accelerator!r} "
                "use '32' or 'bf16'"
            )
        return self


class TrackingConfig(_Strict):
    uri: str | None = None  # None: sqlite:///mlruns/mlflow.db (or $MLFLOW_TRACKING_URI)
    experiment: str | None = None  # MLflow experiment name; default: the study name
    # trained weights kept per finished trial (artifact checkpoint/ of each child run), for
    # `protolab export`: the study's best trial, its best top_k, every trial, or none
    checkpoints: Literal["best", "top_k", "all", "none"] = "top_k"
    top_k: int = Field(3, ge=1)  # how many trials `checkpoints: top_k` keeps

    @field_validator("experiment")
    @classmethod
    def _filter_safe(cls, v: str | None) -> str | None:
        if v is not None and (
            not v.strip() or v != v.strip() or len(v) > 200 or re.search(r"[\x00-\x1f'\"\\`]", v)
        ):
            raise ValueError(
                "an MLflow experiment name must be 1-200 characters without quotes, "
                f"backslashes, control characters or surrounding spaces, but got {short(v)}"
            )
        return v

    @field_validator("uri")
    @classmethod
    def _tracking_url(cls, v: str | None) -> str | None:
        if v is None or scheme(v) in TRACKING_SCHEMES:
            return v
        raise ValueError(
            f"unsupported URI {redact(v)!r}; allowed: null (sqlite:///mlruns/mlflow.db), "
            "sqlite:///FILE, http(s)://HOST:PORT, postgresql://..."
        )


class BackendNames(Protocol):
    """What the config needs of the backend registry: its default and its names.

    The registry lives in ``protolab.backends`` (plugins add to it at run time); the config
    states the rule only, so whoever loads a config hands the registry in (as pydantic's
    validation context) and the config never imports a backend.
    """

    def default_backends(self) -> list[str]: ...

    def check_backend_names(self, names: list[str]) -> None:
        """Raise ValueError naming what is allowed when a name is unknown."""


def _names(info: ValidationInfo) -> BackendNames:
    names = info.context.get("backends") if isinstance(info.context, dict) else None
    if names is None:
        raise TypeError("a Config is validated with context={'backends': <BackendNames>}")
    return names


class Config(_Strict):
    experiment: Path  # the experiment script, relative to the config file
    # run each trial on these: backend names or family aliases (protolab.backends registry);
    # unset: the registry's default
    backends: list[str] = Field(min_length=1)
    # extra validation scores logged per epoch as val/<name> (f1, precision, recall,
    # top5_acc, auc for classification; mae, r2 for regression); objectives add theirs
    metrics: list[str] = Field(default_factory=list)
    study: StudyConfig = Field(default_factory=StudyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    # the data to train on: a built-in name or a .npz/.csv path relative to the config file;
    # overrides the script's @pl.data and @pl.experiment(data=...) (loaded by the sweep)
    data: str | None = None

    @field_validator("data")
    @classmethod
    def _data_named(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must be a dataset name or a data file path, not empty")
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_backends(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("backends") is None:
            return {**data, "backends": _names(info).default_backends()}
        return data

    @model_validator(mode="before")
    @classmethod
    def _pbt_prunes_nothing(cls, data: Any) -> Any:
        return pbt_defaults(data)  # sampler pbt: pruner none unless given (config/_pbt.py)

    @field_validator("train")
    @classmethod
    def _pbt_fits(cls, v: TrainConfig, info: ValidationInfo) -> TrainConfig:
        study = info.data.get("study")
        problem = None if study is None else pbt_train_problem(study, v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("backends", "metrics", mode="before")
    @classmethod
    def _one_backend_as_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("metrics")
    @classmethod
    def _known_scores(cls, v: list[str]) -> list[str]:
        out = []
        for name in v:
            full = name if name.startswith("val/") else f"val/{name}"
            check_metric_name(full)
            if full in ("val/acc", "val/rmse", "val/loss"):
                continue  # always logged
            out.append(full.removeprefix("val/"))
        return list(dict.fromkeys(out))

    @field_validator("backends")
    @classmethod
    def _known_and_unique(cls, v: list[str], info: ValidationInfo) -> list[str]:
        _names(info).check_backend_names(v)  # the registry's names and aliases (plugins too)
        if len(set(v)) != len(v):
            raise ValueError(f"each backend may appear once, but got {v}")
        return v
