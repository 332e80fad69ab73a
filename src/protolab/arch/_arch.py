"""The framework-neutral architecture: a value that can be hashed, stored and traced.

A trial's architecture is logged (``arch.json``, ``protolab.arch_hash``) and its parameter
count and FLOPs are reported identically for both backends, so all of that is computed here,
in pure Python, before either framework is imported.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Literal

from protolab.arch._base import (
    FLOAT_DTYPES,
    INT_DTYPES,
    Layer,
    LayerRow,
    Shape,
    ShapeError,
    flatten_layers,
    infer_sequence,
    layer_from_dict,
)
from protolab.arch._custom import CustomLayer, check_fresh, output_probabilities, probe_outputs
from protolab.arch._layers import Activation, Dense, DepthwiseConv2D, _Conv
from protolab.arch._sequence import Embedding
from protolab.errors import ArchError

__all__ = ["Arch", "ArchInfo", "check_input", "default_dtype", "effective_dtype"]

#: Bumped only if the JSON layout changes incompatibly; part of the hashed document.
FORMAT = 1


@dataclass(frozen=True)
class ArchInfo:
    """What an architecture does to one sample: shapes, trainable params, forward FLOPs."""

    input_shape: Shape
    output_shape: Shape
    params: int
    flops_per_sample: int
    rows: tuple[LayerRow, ...]
    input_dtype: str = "float32"


def check_input(input_shape: Sequence[int], input_dtype: str) -> Shape:
    """Validate a per-sample input shape (no batch axis) and dtype; return the shape."""
    if isinstance(input_shape, int) or any(
        isinstance(n, bool) or not isinstance(n, Integral) or n < 1 for n in input_shape
    ):
        raise ArchError(f"input shape must be a tuple of positive ints, but got {input_shape!r}")
    shape = tuple(int(n) for n in input_shape)
    allowed = sorted(FLOAT_DTYPES | INT_DTYPES)
    if input_dtype not in allowed:
        raise ArchError(f"unknown input dtype {input_dtype!r}; allowed: {', '.join(allowed)}")
    return shape


def effective_dtype(layers: tuple[Layer, ...], input_dtype: str) -> str:
    """Integer inputs stay integer only for a leading layer that takes them (an Embedding, a
    native model); otherwise both builders cast them to float32 first (e.g. uint8 pixels)."""
    if input_dtype in INT_DTYPES and not (layers and layers[0].integer_input):
        return "float32"
    return input_dtype


def default_dtype(layers: tuple[Layer, ...]) -> str:
    """The input dtype a builder assumes when none is given: int64 ids for a leading
    Embedding, float32 otherwise."""
    return "int64" if layers and isinstance(layers[0], Embedding) else "float32"


@dataclass(frozen=True, init=False)
class Arch:
    """An immutable sequence of layers: ``Arch(L.Flatten(), L.Dense(64, "relu"), L.Dense(10))``.

    Lists of layers (and other Archs) are spliced in, so a block built in a loop can be
    passed as one argument.
    """

    layers: tuple[Layer, ...]

    def __init__(self, *layers: Layer | Arch | list[Any] | tuple[Any, ...]) -> None:
        spliced = [item.layers if isinstance(item, Arch) else item for item in layers]
        flat = flatten_layers("Arch", spliced)
        if not flat:
            raise ArchError("Arch: needs at least one layer")
        object.__setattr__(self, "layers", flat)

    def __repr__(self) -> str:
        return f"Arch({', '.join(repr(layer) for layer in self.layers)})"

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def output_activation(self) -> Literal["softmax"] | None:
        """``"softmax"`` when the model's outputs are already probabilities, so a loss must
        not apply softmax again; ``None`` otherwise.

        Built-in layers say it themselves: the last layer, trailing ``Activation("linear")``
        aside, applies softmax (``log_softmax`` outputs are valid logits: None). A model that
        ends in custom code (``pl.native``, a custom layer) says it by its outputs: every row
        of the sample batch its build was probed with in [0, 1] and summing to 1 (the probe
        runs when the Arch is inferred, which every backend does before it builds; see
        :meth:`outputs_on`).
        """
        index = self._output_index()
        if index is None:
            return None
        layer = self.layers[index]
        if isinstance(layer, CustomLayer):
            return "softmax" if output_probabilities(layer) else None
        act: str | None
        if isinstance(layer, Activation):
            act = layer.name
        elif isinstance(layer, Dense | _Conv | DepthwiseConv2D):
            act = layer.activation
        else:  # anything else (pooling, Residual) ends on unknown outputs
            act = None
        return "softmax" if act == "softmax" else None

    def outputs_on(
        self, framework: str, input_shape: Sequence[int], input_dtype: str = "float32"
    ) -> Literal["softmax"] | None:
        """:attr:`output_activation` as this Arch's ``framework`` build makes it: a model
        that ends in custom code is probed on ``framework`` too (once per process), so the
        answer is that framework's own, and one whose other builder, probed in this process,
        answered otherwise is refused (ArchError): a pair trains on one loss on every mode.
        Each backend's builder calls this."""
        index = self._output_index()
        layer = self.layers[index] if index is not None else None
        if index is not None and isinstance(layer, CustomLayer):
            info = self.infer(input_shape, input_dtype)
            if index:
                shape, dtype = info.rows[index - 1].output_shape, "float32"
            else:
                shape, dtype = info.input_shape, effective_dtype(self.layers, input_dtype)
            probe_outputs(layer, framework, shape, dtype)
        return self.output_activation

    def check_builders(
        self, input_shape: Sequence[int], input_dtype: str = "float32", several: bool = False
    ) -> None:
        """Refuse a custom layer's builder (``pl.native`` included) that hands back the same
        object when called twice, as every trial calls it; for a sweep's dry run, so the
        mistake stops the sweep before anything is stored (details: ``check_fresh``).
        ``several``: the data has several inputs or outputs (a whole model may take them)."""
        shape = check_input(input_shape, input_dtype)
        check_fresh(self.layers, shape, effective_dtype(self.layers, input_dtype), several)

    def _output_index(self) -> int | None:
        """The layer whose outputs are the model's: the last, trailing linear activations
        aside (None: nothing but those)."""
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            if not (isinstance(layer, Activation) and layer.name == "linear"):
                return index
        return None

    # ------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_dict(cls, data: object) -> Arch:
        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            raise ArchError(f"an architecture must be an object with a 'layers' list, got {data!r}")
        if data.get("format", FORMAT) != FORMAT:
            raise ArchError(f"unsupported architecture format {data['format']!r}; this is {FORMAT}")
        return cls(*(layer_from_dict(d) for d in data["layers"]))

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON (sorted keys; compact unless ``indent`` is given)."""
        if indent is None:
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchError(f"architecture JSON is malformed: {exc}") from None
        return cls.from_dict(data)

    @property
    def hash(self) -> str:
        """12 hex chars of sha256 over the canonical JSON: equal architectures, equal hash,
        in any process (no reliance on Python's randomised ``hash()``)."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:12]

    # ------------------------------------------------------------ shape inference

    def infer(self, input_shape: Sequence[int], input_dtype: str = "float32") -> ArchInfo:
        """Trace one sample through every layer; an impossible layer raises ArchError naming
        its index (dotted inside a Residual), its repr and the shape it received."""
        shape = check_input(input_shape, input_dtype)
        try:
            rows, out = infer_sequence(
                self.layers, shape, effective_dtype(self.layers, input_dtype)
            )
        except ShapeError as exc:
            raise exc.to_arch_error() from None
        return ArchInfo(
            input_shape=shape,
            input_dtype=input_dtype,
            output_shape=out,
            params=sum(r.params for r in rows),
            flops_per_sample=sum(r.flops for r in rows),
            rows=rows,
        )

    def param_count(self, input_shape: Sequence[int], input_dtype: str = "float32") -> int:
        return self.infer(input_shape, input_dtype).params

    def flops_per_sample(self, input_shape: Sequence[int], input_dtype: str = "float32") -> int:
        return self.infer(input_shape, input_dtype).flops_per_sample

    def summary(self, input_shape: Sequence[int], input_dtype: str = "float32") -> str:
        """A fixed-width table for logs and the MLflow artifact."""
        info = self.infer(input_shape, input_dtype)
        table: list[tuple[str, str, str, str]] = [("#", "layer", "output shape", "params")]
        table.append(("", f"input ({input_dtype})", _shape(info.input_shape), ""))
        _add_rows(table, info.rows, "", "")
        widths = [max(len(row[c]) for row in table) for c in range(4)]
        lines = [
            f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d:>{widths[3]}}".rstrip()
            for a, b, c, d in table
        ]
        rule = "-" * max(len(line) for line in lines)
        return "\n".join(
            [
                lines[0],
                rule,
                *lines[1:],
                rule,
                f"trainable params: {info.params:,}",
                f"forward FLOPs per sample: {info.flops_per_sample:,} "
                f"({_si(info.flops_per_sample)})",
            ]
        )


def _add_rows(
    table: list[tuple[str, str, str, str]], rows: tuple[LayerRow, ...], prefix: str, indent: str
) -> None:
    for row in rows:
        index = f"{prefix}{row.index}"
        table.append((index, indent + row.description, _shape(row.output_shape), f"{row.params:,}"))
        _add_rows(table, row.children, f"{index}.", indent + "  ")


def _shape(shape: Shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _si(n: int) -> str:
    if n == 0:
        return "0"
    exp = min(int(math.log10(n)) // 3, 4)
    return f"{n / 1000**exp:.3g}{['', 'K', 'M', 'G', 'T'][exp]}"
