"""Residual blocks: ``x + f(x)``, with the one projection of ``x`` that ResNets use."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from protolab.arch._base import (
    Layer,
    LayerRow,
    Shape,
    ShapeError,
    Traced,
    flatten_layers,
    infer_sequence,
    layer_from_dict,
)
from protolab.errors import ArchError

__all__ = ["Projection", "Residual"]


class Projection(NamedTuple):
    """How the skip path reshapes its input: a bias-free linear map of the last axis to
    ``channels`` after taking every ``stride``-th position (stride 1: a Dense; stride > 1: a
    1x1 convolution with that stride, which is exactly strided slicing then the same map)."""

    channels: int
    stride: int = 1


@dataclass(frozen=True, init=False, repr=False)
class Residual(Layer):
    """Applies its layers and adds its input.

    When only the channel count changes, the input goes through a bias-free Dense; when the
    positions shrink by an integer stride (a strided "same" conv inside), through a bias-free
    1x1 conv with that stride. Any other change (rank, flattening, "valid" shrinkage) is an
    error rather than a silent guess.
    """

    layers: tuple[Layer, ...]

    def __init__(self, *layers: Layer | list[Layer] | tuple[Layer, ...]) -> None:
        flat = flatten_layers("Residual", layers)
        if not flat:
            raise ArchError("Residual: needs at least one layer")
        object.__setattr__(self, "layers", flat)

    def __repr__(self) -> str:
        return f"Residual({', '.join(repr(layer) for layer in self.layers)})"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Residual", "layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Layer:
        inner = fields.get("layers", [])
        if set(fields) - {"layers"} or not isinstance(inner, list):
            raise ArchError(f"Residual: expects only a 'layers' list, but got {fields!r}")
        return cls(*(layer_from_dict(d) for d in inner))

    def projection(self, shape: Shape, dtype: str = "float32") -> Projection | None:
        """The skip-path projection for an input of ``shape`` (None: plain identity)."""
        return self._trace(shape, dtype)[1]

    def trace(self, shape: Shape, dtype: str) -> Traced:
        inner, proj, out = self._trace(shape, dtype)
        params = sum(r.params for r in inner)
        flops = sum(r.flops for r in inner)
        rows = inner
        if proj is not None:
            cin, cout = shape[-1], proj.channels
            what = "Dense" if proj.stride == 1 else f"1x1 conv, strides={proj.stride}"
            p_params, p_flops = cin * cout, 2 * math.prod(out[:-1]) * cin * cout
            desc = f"projection: {what}, {cout} channels, no bias"
            rows = (*inner, LayerRow(len(inner), desc, out, p_params, p_flops))
            params, flops = params + p_params, flops + p_flops
        return Traced(out, params, flops, rows)

    def _trace(
        self, shape: Shape, dtype: str
    ) -> tuple[tuple[LayerRow, ...], Projection | None, Shape]:
        rows, out = infer_sequence(self.layers, shape, dtype)
        if out == shape:
            return rows, None, out
        mismatch = ShapeError(
            f"cannot add the block input {shape} to its output {out}; a projection exists "
            "only for a changed channel count or positions shrunk by an integer stride"
        )
        if len(out) != len(shape) or not shape:
            raise mismatch
        if out[:-1] == shape[:-1]:
            return rows, Projection(out[-1]), out
        stride = _common_stride(shape[:-1], out[:-1])
        if stride is None:
            raise mismatch
        return rows, Projection(out[-1], stride), out


def _common_stride(before: Shape, after: Shape) -> int | None:
    """Smallest stride s > 1 that maps every axis n to ceil(n / s), as a strided 'same' conv
    does (a 1x1 conv needs no padding, so 'same' and 'valid' agree for it)."""
    for s in range(2, max(before) + 1):
        if all(math.ceil(n / s) == m for n, m in zip(before, after, strict=True)):
            return s
    return None
