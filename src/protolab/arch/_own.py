"""Native models that bring their own training: a torch module with its own ``training_step``
and ``configure_optimizers`` (a ``LightningModule``).

Such a model is trained by its framework's loop, as it is, not by protolab's (the torch
backends' own-loop program); what its outputs are is its ``training_step``'s business, so
it needs no ``forward`` and no output shape matching the targets. Inference still builds
it once to count its parameters: a build whose probe cannot run ``forward`` (Lightning's
own ``LitAutoEncoder`` has none) is counted from the module instead, with the output shape
its ``example_input_array`` gives, or ``()`` (not known: nothing downstream needs it).

Recognised by what it has (duck typing), so this part imports no training framework.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protolab._frameworks import TORCH
from protolab.arch._base import Shape, ShapeError, Traced
from protolab.arch._custom import CustomLayer, build_custom
from protolab.errors import ArchError

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_callbacks",
    "note_built",
    "trace_own",
    "trains_itself",
    "trains_itself_when_built",
]

#: node -> whether its latest torch build trained itself (what the backends dispatch on,
#: without building again: every backend infers the Arch, which builds it, first)
_BUILT: weakref.WeakKeyDictionary[CustomLayer, bool] = weakref.WeakKeyDictionary()
#: (node, shape, dtype) -> the trace of a model that trains itself and has no usable
#: forward (its probe fails, and a failure is not cached where a success is)
_TRACED: dict[tuple[CustomLayer, Shape, str], Traced] = {}
_TRACED_KEPT = 256


def trains_itself(module: object) -> bool:
    """A module with its own training step and optimizers (a ``LightningModule``)."""
    return all(
        callable(getattr(type(module), name, None))
        for name in ("training_step", "configure_optimizers")
    )


def note_built(node: CustomLayer, module: object) -> None:
    """Remember whether ``node``'s torch builder made a module that trains itself."""
    _BUILT[node] = trains_itself(module)


def trains_itself_when_built(node: CustomLayer) -> bool | None:
    """Whether ``node``'s latest torch build trained itself; None if never built here."""
    return _BUILT.get(node)


def trace_own(node: CustomLayer, shape: Shape, dtype: str, probe: Callable[[], Traced]) -> Traced:
    """``probe()`` (the plain trace: a build run on a sample batch), or, where that fails
    on a module that trains itself, its parameters counted from one more build."""
    key = (node, shape, dtype)
    if key in _TRACED:
        return _TRACED[key]
    try:
        return probe()
    except ShapeError:
        if not _BUILT.get(node):
            raise
    try:
        module = build_custom(node, TORCH, shape)
    except ArchError as e:  # an object handed out before, say: the rule it states
        raise ShapeError(str(e)) from None
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    traced = Traced(_example_output(module), int(params), node.flops(shape))
    if len(_TRACED) >= _TRACED_KEPT:
        _TRACED.clear()
    _TRACED[key] = traced
    return traced


def _example_output(module: torch.nn.Module) -> Shape:
    """One sample's output shape on the module's own ``example_input_array``; ``()`` when
    it declares none or its forward cannot run on it."""
    example = getattr(module, "example_input_array", None)
    if example is None:
        return ()
    import torch

    try:
        with torch.no_grad():
            out = module(example)
    except Exception:  # no forward, or one that takes something else: not known
        return ()
    shape = getattr(out, "shape", None)
    return tuple(int(d) for d in shape[1:]) if shape is not None else ()


def check_callbacks(factory: object) -> Callable[[], Any] | None:
    """``torch_callbacks=``: a function making a fresh list of callbacks per trial."""
    if factory is None or callable(factory):
        return factory
    raise ArchError(
        "pl.native: torch_callbacks= must be a function returning the Lightning callbacks "
        "(a new list per trial, e.g. lambda: [EarlyStopping('val_loss')]), but got "
        f"{type(factory).__name__}: {factory!r:.80}"
    )
