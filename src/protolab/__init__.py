"""protolab: PyTorch or TensorFlow? Measure it on your own model.

An experiment script declares an architecture with mutable choices; ``protolab sweep``
runs an Optuna study over it, training each sampled architecture as a dynamic (Lightning)
and/or static (Keras 3 + XLA) job, and logs what it learned and what it cost to MLflow.

Importing this package loads no ML framework, and the experiment API itself loads on first
use (PEP 562), so ``protolab --help`` does not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from protolab._version import __version__
from protolab.errors import ProtolabError

if TYPE_CHECKING:
    from protolab import data, layers
    from protolab.arch import Arch, CustomLayer, layer, native
    from protolab.data import Data
    from protolab.script import Loss, Optimizer, experiment
    from protolab.space import Space

__all__ = [
    "Arch",
    "CustomLayer",
    "Data",
    "Loss",
    "Optimizer",
    "ProtolabError",
    "Space",
    "__version__",
    "data",
    "experiment",
    "layer",
    "layers",
    "native",
]

_LAZY = {
    "Arch": ("protolab.arch", "Arch"),
    "CustomLayer": ("protolab.arch", "CustomLayer"),
    "Data": ("protolab.data", "Data"),
    "layer": ("protolab.arch", "layer"),
    "native": ("protolab.arch", "native"),
    "Loss": ("protolab.script", "Loss"),
    "Optimizer": ("protolab.script", "Optimizer"),
    "Space": ("protolab.space", "Space"),
    "experiment": ("protolab.script", "experiment"),
    "data": ("protolab.data", None),  # a package that, called, is the @pl.data decorator
    "layers": ("protolab.layers", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'protolab' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
