"""Typed config: every key, its type, its default (with a comment saying why).

Models forbid unknown keys, so a typo (``study.n_trails``) fails before anything runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from protolab._stores import STORAGE_SCHEMES, TRACKING_SCHEMES, redact, scheme
from protolab.backends._registry import check_backend_names, default_backends
from protolab.config._domains import check_train_value, short
from protolab.config._metrics import check_metric_name

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "Choice",
    "Config",
    "HardwareConfig",
    "Objective",
    "Range",
    "StudyConfig",
    "TrackingConfig",
    "TrainConfig",
]

# Kept as Literals so pydantic lists the allowed values in its error for free.
Sampler = Literal["tpe", "random", "gp", "cmaes", "nsga2", "qmc", "grid", "evolution"]
Pruner = Literal["none", "median", "percentile", "hyperband", "successive_halving", "threshold"]
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


_scheme, _redacted = scheme, redact  # store URL rules live in protolab._stores


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


class StudyConfig(_Strict):
    name: str | None = Field(
        None, min_length=1
    )  # Optuna study = MLflow experiment; default: file stem
    storage: str | None = None  # None: a local journal under mlruns/; or any Optuna URL
    n_trials: int = Field(20, ge=1)  # finished trials in the study in total (reruns top up)
    timeout_s: float | None = Field(None, gt=0)  # stop starting new trials after this long
    sampler: Sampler = "tpe"  # TPE adapts to conditional, define-by-run spaces
    # Passed to the sampler: e.g. {population_size: 20, tournament_size: 5, n_mutations: 1}
    # for evolution, {n_startup_trials: 10} for tpe/evolution/gp.
    sampler_options: dict[str, int | float | bool | str] = Field(default_factory=dict)
    pruner: Pruner = "median"  # stops trials whose per-epoch curve is worse than the median
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
    def _pruning_needs_one_objective(self) -> StudyConfig:
        if self.objectives and len(self.objectives) > 1 and self.pruner != "none":
            raise ValueError(
                f"pruning needs a single objective, but got {len(self.objectives)} objectives "
                f"with pruner {self.pruner!r}; set study.pruner: none"
            )
        if self.pruner == "threshold" and not {"lower", "upper"} & set(self.pruner_options):
            raise ValueError(
                "pruner 'threshold' needs pruner_options {lower: X} and/or {upper: Y}, "
                f"but got {self.pruner_options}"
            )
        return self

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, v: str | None) -> str | None:
        if v is None or v.endswith((".journal", ".log")) or _scheme(v) in STORAGE_SCHEMES:
            return v
        raise ValueError(
            f"unsupported URL {_redacted(v)!r}; allowed: null (a local journal under mlruns/), "
            "a path ending in .journal, sqlite:///FILE, postgresql://..., mysql://..., redis://..."
        )


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)  # full passes over the training split
    batch_size: int | Range | Choice = 64  # a value, or a range/choice to search
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] | Choice = "adam"
    lr: float | Range | Choice = 1e-3  # learning rate
    weight_decay: float | Range | Choice = 0.0  # L2 (decoupled for adamw)

    @field_validator("batch_size", "lr", "weight_decay")
    @classmethod
    def _in_domain(cls, v: Any, info: ValidationInfo) -> Any:
        return check_train_value(str(info.field_name), v)  # values, ranges and choices alike

    @field_validator("optimizer")
    @classmethod
    def _known_optimizers(cls, v: Any) -> Any:
        if isinstance(v, Choice):
            bad = [c for c in v.choices if c not in ("adam", "adamw", "sgd", "rmsprop")]
            if bad:
                raise ValueError(f"unknown optimizer {bad}; allowed: adam, adamw, sgd, rmsprop")
        return v


class HardwareConfig(_Strict):
    accelerator: Literal["auto", "cpu", "gpu", "tpu"] = "auto"  # auto: GPU/TPU when present
    devices: int = Field(1, ge=1)  # devices per trial
    precision: Literal["32", "bf16", "16"] = "32"  # 16 = float16 mixed (GPU only)
    # intra-op CPU threads per trial (torch and TF); null: the frameworks' default (all cores)
    threads: int | None = Field(None, ge=1)

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v  # YAML reads `precision: 32` as an int

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
        if v is None or _scheme(v) in TRACKING_SCHEMES:
            return v
        raise ValueError(
            f"unsupported URI {_redacted(v)!r}; allowed: null (sqlite:///mlruns/mlflow.db), "
            "sqlite:///FILE, http(s)://HOST:PORT, postgresql://..."
        )


class Config(_Strict):
    experiment: Path  # the experiment script, relative to the config file
    # run each trial on these: backend names or family aliases (protolab.backends registry)
    backends: list[str] = Field(default_factory=default_backends, min_length=1)
    # extra validation scores logged per epoch as val/<name> (f1, precision, recall,
    # top5_acc, auc for classification; mae, r2 for regression); objectives add theirs
    metrics: list[str] = Field(default_factory=list)
    study: StudyConfig = Field(default_factory=StudyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("backends", "metrics", mode="before")
    @classmethod
    def _one_backend_as_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("metrics")
    @classmethod
    def _known_scores(cls, v: list[str]) -> list[str]:
        from protolab.config._metrics import check_metric_name

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
    def _known_and_unique(cls, v: list[str]) -> list[str]:
        check_backend_names(v)  # names and aliases come from the registry (plugins too)
        if len(set(v)) != len(v):
            raise ValueError(f"each backend may appear once, but got {v}")
        return v
