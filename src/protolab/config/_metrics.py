"""The metrics a trial can produce (DESIGN §7): the one list objectives, constraints and
``@experiment(metric=...)`` are checked against, before anything runs.

A metric that a backend starts logging is added here, with the task it needs (or None).

A native model that trains itself (a LightningModule's ``self.log``, a compiled Keras
model's metrics) also logs names of its own (``val_loss``, ``val_accuracy``), and one of
them may be the objective. Which names it logs is known only when it trains, so the rule
here is by form: a *logged name* is a plain identifier-like name outside the contract's
families (``val/``, ``train/``, ``time/`` ...: a name there that is not in :data:`METRICS`
is a typo) and not a bare contract word (``acc``, ``accuracy``, ``loss``: which split?).
The sweep refuses a logged name up front when the experiment is not a native model
(:func:`logged_name_problem`); a native model that never logs it fails its trial naming
what it did log.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "METRICS",
    "Direction",
    "check_metric_name",
    "infer_direction",
    "is_logged_name",
    "logged_name_problem",
    "logged_names_problem",
    "metric_task_problem",
]

Direction = Literal["maximize", "minimize"]

# Metrics where larger is better; everything else (loss, rmse, time ...) is minimised.
_MAXIMIZED = ("acc", "accuracy", "auc", "f1", "r2", "throughput", "mfu", "tflops")


def infer_direction(metric: str) -> Direction:
    """``val/acc`` is maximised, ``val/loss`` minimised: infer from the metric's last word
    (a logged name's words too: ``val_acc`` is maximised, ``val_loss`` minimised)."""
    leaf = metric.rsplit("/", 1)[-1].lower()
    words = [leaf] if metric in METRICS else re.split(r"[_.\-]", leaf)
    return "maximize" if any(w.startswith(m) for w in words for m in _MAXIMIZED) else "minimize"


_TIMES = """import_s build_s compile_s compile_cold_s first_step_s first_epoch_s step_ms step_ms_p10
step_ms_p90 epoch_s epoch_step_ms train_s eval_s trial_s data_wait_ms"""

# name -> the dataset task it needs ("classification" / "regression"), None: any task.
METRICS: dict[str, str | None] = {
    "val/acc": "classification",
    "val/rmse": "regression",
    # scored from the model's validation outputs, one numpy implementation (data/_scores.py),
    # when an experiment or config asks for them (``metrics:``) or an objective names them
    **{f"val/{n}": "classification" for n in ("f1", "precision", "recall", "top5_acc", "auc")},
    **{f"val/{n}": "regression" for n in ("mae", "r2")},
    "val/loss": None,
    "train/loss": None,
    "train/steps": None,
    "train/steps_per_epoch": None,
    **{f"time/{n}": None for n in _TIMES.split()},
    "throughput/samples_per_s": None,
    "memory/peak_rss_mb": None,
    "memory/peak_device_mb": None,
    "model/params": None,
    "model/flops_per_sample": None,
    "perf/tflops": None,
    "perf/mfu": None,
    "perf/input_bound_frac": None,  # models that train themselves: share of time waiting
}


#: where the contract's names live: a name under one of these must be one of METRICS
FAMILIES = ("val/", "train/", "time/", "throughput/", "memory/", "model/", "perf/", "device/")
_LOGGED_FORM = re.compile(r"^[A-Za-z][\w.\-/]*$")


def _bare_words() -> frozenset[str]:
    """Contract names without their family (``acc``, ``loss``) and ``accuracy``: as an
    objective they do not say which split, so they stay refused with a hint."""
    return frozenset({m.rsplit("/", 1)[-1] for m in METRICS} | {"accuracy"})


def is_logged_name(metric: str) -> bool:
    """Whether ``metric`` has the form of a name a native model logs itself."""
    return (
        metric not in METRICS
        and _LOGGED_FORM.match(metric) is not None
        and not metric.startswith((*FAMILIES, "test/"))
        and metric.lower() not in _bare_words()
    )


def logged_name_problem(metric: str, native: bool) -> str | None:
    """Why ``metric`` cannot be measured by this experiment: a logged name needs a native
    model (only its own training logs names protolab does not define); None when it can."""
    if native or not is_logged_name(metric):
        return None
    return (
        f"unknown metric {metric!r}: a name outside protolab's metrics is one a native "
        "model logs itself (pl.native returning a LightningModule or a compiled keras "
        f"model), and this experiment's model is not one; allowed: {', '.join(METRICS)}"
    )


def logged_names_problem(
    objectives: Sequence[str], constraints: Sequence[str], native: bool, configured: bool
) -> tuple[bool, str] | None:
    """(in the config, ``where: why``) for the first objective or constraint that only a
    native model could log, when the experiment's model is not one; None when all can be.
    ``configured``: the objectives come from ``study.objectives`` (else the script's)."""
    for metric in objectives:
        problem = logged_name_problem(metric, native)
        if problem:
            where = "study.objectives" if configured else "@experiment(metric=...)"
            return configured, f"{where}: {problem}"
    for metric in constraints:
        problem = logged_name_problem(metric, native)
        if problem:
            return True, f"study.constraints: {problem}"
    return None


def check_metric_name(metric: object) -> str:
    """Return ``metric`` if a trial can log it; else ValueError listing the names allowed.

    A logged name (:func:`is_logged_name`) passes: a native model may log it.

    ``test/`` names get their own message: they exist (``protolab run`` logs them once, after
    training), but a sweep that optimised, constrained or pruned on them would be selecting
    on the test split, which then no longer measures anything.
    """
    if isinstance(metric, str) and metric.removeprefix("val/").startswith("test/"):
        name = metric.removeprefix("val/").removeprefix("test/")
        raise ValueError(
            f"metric {metric!r} is measured on the test split, once, by `protolab run` after "
            f"training; a sweep optimises, constrains and prunes on validation only, so it "
            f"cannot name test/ metrics; use val/{name or 'acc'} (allowed: {', '.join(METRICS)})"
        )
    if isinstance(metric, str) and is_logged_name(metric):
        return metric
    if not isinstance(metric, str) or metric not in METRICS:
        shown = repr(metric)[:200]
        raise ValueError(
            f"unknown metric {shown}; allowed: {', '.join(METRICS)}"
            if not isinstance(metric, str) or "/" in metric
            else f"unknown metric {shown}; allowed: {', '.join(METRICS)} (e.g. val/{metric})"
        )
    return metric


def metric_task_problem(metric: str, task: str) -> str | None:
    """Why a ``task`` dataset cannot produce ``metric`` (None when it can)."""
    needs = METRICS.get(metric)
    if needs is None or needs == task:
        return None
    instead = [m for m, t in METRICS.items() if t == task]
    return (
        f"{metric} needs a {needs} dataset, but this one is {task}; "
        f"use {' or '.join(instead) or 'val/loss'} (or val/loss)"
    )
