"""Experiment scripts: the ``@protolab.experiment`` decorator and loading a script by path."""

from protolab.script._data import train_remaker
from protolab.script._experiment import Experiment, Loss, Optimizer, experiment
from protolab.script._loader import load_experiment, script_hash

__all__ = [
    "Experiment",
    "Loss",
    "Optimizer",
    "experiment",
    "load_experiment",
    "script_hash",
    "train_remaker",
]
