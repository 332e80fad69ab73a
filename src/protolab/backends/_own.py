"""Up-front checks for a model that trains itself (a ``LightningModule``, a compiled
``keras.Model``): the config settings its own training would ignore, refused before a study
or a run exists rather than in every trial.

Each framework's program states its own rule (``check_own_job`` beside the program that
runs it); this module only finds the one that applies. It imports a framework only when
the script already made such a model, which means the script imported it.
"""

from __future__ import annotations

import importlib
import sys

from protolab._frameworks import KERAS, TORCH
from protolab.backends._base import Job

__all__ = ["check_own_job", "trains_itself"]

# framework -> the module whose check_own_job(job) states what its own training ignores
_CHECKS = {TORCH: "protolab.backends.torch._module", KERAS: "protolab.backends._keras_fit"}


def trains_itself(framework: str, model: object) -> bool:
    """Whether a built native model brings its own training: a LightningModule (its
    training_step and configure_optimizers) or a keras.Model that was compiled."""
    if framework == TORCH:
        return all(
            callable(getattr(type(model), name, None))
            for name in ("training_step", "configure_optimizers")
        )
    return bool(getattr(model, "compiled", False)) and callable(getattr(model, "fit", None))


def check_own_job(framework: str, job: Job) -> None:
    """Raise the framework's ArchError when ``job`` sets what its own training ignores."""
    if framework == KERAS and "keras" not in sys.modules:
        return  # no compiled keras model without keras imported
    importlib.import_module(_CHECKS[framework]).check_own_job(job)
