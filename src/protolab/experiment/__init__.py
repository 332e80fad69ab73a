"""Experiment scripts: the ``@experiment`` decorator and loading a script from a path."""

from protolab.experiment._experiment import Experiment, experiment
from protolab.experiment._loader import load_experiment

__all__ = ["Experiment", "experiment", "load_experiment"]
