"""The frameworks a model is built in, each named once (no framework is imported here).

A framework is what a model's builders return (a ``torch.nn.Module``, a Keras layer or
model), not a way of running it: several backends build with one framework
(:attr:`BackendInfo.builds`). The names are user API as well: each is the builder method of
``pl.CustomLayer`` and the keyword of ``pl.native`` and ``pl.Loss``, so a builder is found by
``getattr(obj, framework)``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FRAMEWORKS", "KERAS", "TORCH", "check_framework"]

TORCH: Final = "torch"
KERAS: Final = "keras"
#: every model-building framework, in the order builders are tried and listed
FRAMEWORKS: Final[tuple[str, ...]] = (TORCH, KERAS)


def check_framework(name: str) -> str:
    """``name`` if it is a model-building framework; else ValueError naming the allowed ones."""
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; allowed: {', '.join(FRAMEWORKS)}")
    return name
