"""Experiment scripts: the ``@protolab.experiment`` decorator and loading a script by path."""

from protolab.script._experiment import Experiment, Loss, experiment
from protolab.script._loader import load_experiment

__all__ = ["Experiment", "Loss", "experiment", "load_experiment"]
