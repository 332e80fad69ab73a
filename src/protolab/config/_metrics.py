"""The metrics a trial can produce (DESIGN §7): the one list objectives, constraints and
``@experiment(metric=...)`` are checked against, before anything runs.

A metric that a backend starts logging is added here, with the task it needs (or None).
"""

from __future__ import annotations

from typing import Literal

__all__ = ["METRICS", "Direction", "check_metric_name", "infer_direction", "metric_task_problem"]

Direction = Literal["maximize", "minimize"]

# Metrics where larger is better; everything else (loss, rmse, time ...) is minimised.
_MAXIMIZED = ("acc", "accuracy", "auc", "f1", "r2", "throughput", "mfu", "tflops")


def infer_direction(metric: str) -> Direction:
    """``val/acc`` is maximised, ``val/loss`` minimised: infer from the metric's last word."""
    leaf = metric.rsplit("/", 1)[-1].lower()
    return "maximize" if any(leaf.startswith(m) for m in _MAXIMIZED) else "minimize"


_TIMES = """import_s build_s compile_s first_step_s first_epoch_s step_ms step_ms_p10
step_ms_p90 epoch_s epoch_step_ms train_s eval_s trial_s"""

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
}


def check_metric_name(metric: object) -> str:
    """Return ``metric`` if a trial can log it; else ValueError listing the names allowed.

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
