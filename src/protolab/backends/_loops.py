"""Whole-epoch or per-step programs for the XLA modes: a rule the benchmark proved.

A whole-epoch program (one compiled ``while`` loop over every step of an epoch) saves the
per-step dispatch, which is most of a small model's step on a CPU. But XLA's CPU backend
compiles a convolution inside that loop far slower than the same convolution in a program
of its own. Measured on the 2-core VM (``protolab run``, 3 epochs, batch 64, one run each,
under load; ``PROTOLAB_KERAS_LOOP`` forcing each loop):

=========================  ================  ================
model (mode)               whole-epoch ms    per-step ms
=========================  ================  ================
digits MLP (``keras``)     0.66              2.16
digits MLP (``jax``)       0.50              3.84
digits CNN (``keras``)     18.1              4.5
digits CNN (``jax``)       13.4              3.1
=========================  ================  ================

So on a CPU, an Arch with a convolution trains with per-step programs, everything else with
whole-epoch ones; on an accelerator the whole epoch stays. ``benchmarks/run.py`` keeps both
loops of the harness's models side by side (``PROTOLAB_KERAS_LOOP``) to keep the rule honest.
The choice and its reason are tags (``protolab.loop``, ``protolab.loop_rule``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from protolab.arch import Arch

__all__ = ["CONVOLUTIONS", "LOOP_ENV", "has_convolution", "whole_epoch"]

LOOP_ENV = "PROTOLAB_KERAS_LOOP"  # "step" or "epoch": forced (tests, benchmarks)
CONVOLUTIONS = frozenset({"Conv1D", "Conv2D", "Conv2DTranspose", "DepthwiseConv2D"})


def _types(node: object) -> Iterator[str]:
    """Every layer type in an Arch's JSON form, nested blocks (Residual ...) included."""
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            yield node["type"]
        for value in node.values():
            yield from _types(value)
    elif isinstance(node, list):
        for value in node:
            yield from _types(value)


def has_convolution(arch: Arch) -> bool:
    """A built-in convolution anywhere in the Arch (a custom layer's inside is unknown)."""
    return any(t in CONVOLUTIONS for t in _types(arch.to_dict()))


def whole_epoch(arch: Arch, on_cpu: bool, allowed: bool = True) -> tuple[bool, str]:
    """(whole-epoch programs?, the rule that chose) for an XLA mode; ``allowed``: the
    data fits on the device and one replica trains (else per-step, always)."""
    forced = os.environ.get(LOOP_ENV)
    if forced in ("step", "epoch"):
        return forced == "epoch", f"forced by {LOOP_ENV}"
    if not allowed:
        return False, "data or replicas: per-step"
    if on_cpu and has_convolution(arch):
        return False, "convolution on CPU: per-step"
    return True, "whole-epoch"
