"""Which loop trains a job: a LightningModule its own (``_module``), anything else protolab's.

Decided without importing Lightning's trainer: every backend infers the Arch before it
builds it, and that build tells whether the native module trains itself
(``Native.trains_itself``); only a model that does pays for ``lightning.pytorch``.
"""

from __future__ import annotations

from protolab._frameworks import TORCH
from protolab.arch import Native, build_custom
from protolab.backends._base import Job
from protolab.errors import ArchError

__all__ = ["own_loop"]


def own_loop(job: Job) -> Native | None:
    """The job's native node when its torch build is a LightningModule, else None.

    A LightningModule trains in its own loop only as the whole model: inside a larger
    Arch its ``training_step`` would be skipped without a word, so that is refused.
    """
    layers = job.arch.layers
    natives = [n for n in layers if isinstance(n, Native) and TORCH in n.frameworks()]
    if not natives:
        return None
    node = natives[0]
    if len(layers) == 1 and node.trains_itself() is None:  # inferred on Keras: build to know
        build_custom(node, TORCH, job.dataset.input_shape)
    if not any(n.trains_itself() for n in natives):
        return None
    if len(layers) > 1:
        raise ArchError(
            f"{node!r}: its torch builder returns a LightningModule, which trains through "
            "its own training_step only as the whole model (pl.native(torch=...) returned "
            "by the experiment as it is); inside a larger Arch protolab's loop would call "
            "its forward and skip its training_step: put the other layers inside the module"
        )
    return node
