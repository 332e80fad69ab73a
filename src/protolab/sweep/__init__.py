"""Sweeps: an Optuna study over an experiment, each trial trained on one or more backends."""

from protolab.sweep._callbacks import TrialCallback
from protolab.sweep._context import SweepContext, prepare, sample_train
from protolab.sweep._run import (
    Outcome,
    fail_reason,
    make_settings,
    mode_tags,
    run_artifacts,
    run_once,
    trial_function,
)
from protolab.sweep._study import make_pruner, make_sampler
from protolab.sweep._worker import (
    EXIT_RECYCLE,
    RECYCLE_ENV,
    SweepFailed,
    SweepSummary,
    best_params,
    sweep,
)

__all__ = [
    "EXIT_RECYCLE",
    "RECYCLE_ENV",
    "Outcome",
    "SweepContext",
    "SweepFailed",
    "SweepSummary",
    "TrialCallback",
    "best_params",
    "fail_reason",
    "make_pruner",
    "make_sampler",
    "make_settings",
    "mode_tags",
    "prepare",
    "run_artifacts",
    "run_once",
    "sample_train",
    "sweep",
    "trial_function",
]
