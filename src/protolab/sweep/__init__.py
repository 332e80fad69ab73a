"""Sweeps: an Optuna study over an experiment, each trial trained on one or more backends."""

from protolab.sweep._context import SweepContext, prepare
from protolab.sweep._run import run_once
from protolab.sweep._study import make_pruner, make_sampler
from protolab.sweep._worker import SweepSummary, sweep

__all__ = [
    "SweepContext",
    "SweepSummary",
    "make_pruner",
    "make_sampler",
    "prepare",
    "run_once",
    "sweep",
]
