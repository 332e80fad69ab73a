"""protolab: PyTorch or TensorFlow? Measure it on your own model.

An experiment script declares an architecture with mutable choices; ``protolab sweep``
runs an Optuna study over it, training each sampled architecture as a dynamic (Lightning)
and/or static (Keras 3 + XLA) job, and logs what it learned and what it cost to MLflow.

Importing this package loads no ML framework: only the pure-Python experiment API.
"""

from protolab import layers
from protolab._version import __version__
from protolab.arch import Arch
from protolab.errors import ProtolabError
from protolab.experiment import experiment
from protolab.space import Space

__all__ = ["Arch", "ProtolabError", "Space", "__version__", "experiment", "layers"]
