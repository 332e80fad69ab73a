"""The layer base class, argument checks and the shape-inference plumbing every layer shares.

Layers are frozen dataclasses so an architecture can be hashed, compared and stored without a
framework: the numbers a trial reports (parameters, FLOPs, shapes) come from here, and both
native builders must agree with them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar, NamedTuple

from protolab.arch._activations import ACTIVATIONS, ALIASES, canonical_activation
from protolab.errors import ArchError

__all__ = [
    "FLOAT_DTYPES",
    "INITIALIZERS",
    "INT_DTYPES",
    "Layer",
    "LayerRow",
    "Shape",
    "ShapeError",
    "Traced",
    "as_tuple",
    "check_activation",
    "check_bool",
    "check_choice",
    "check_initializer",
    "check_int",
    "check_rate",
    "check_sizes",
    "conv_length",
    "flatten_layers",
    "infer_sequence",
    "layer_from_dict",
    "same_padding",
]

Shape = tuple[int, ...]

INT_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8"})
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})

#: Initializer names both builders apply identically (same distribution, fans computed
#: from the Keras kernel shape on both): Keras 3's VarianceScaling families (the ``_normal``
#: ones truncated at two standard deviations, as Keras), Keras' ``random_*`` (std / limit
#: 0.05) and the constants; plus ``torch_default``, PyTorch's default ``nn.Linear`` /
#: ``nn.Conv*`` initialisation, for ports of PyTorch models: U(±1/sqrt(fan_in)) with
#: torch's fan_in of the layer's kernel (``in_features``; ``in_channels / groups`` x kernel
#: elements; a transposed conv's ``out_channels`` x kernel elements), for the kernel and
#: for the bias alike (a bias takes its kernel's fan_in, as torch's ``reset_parameters``).
#: On Keras it is ``VarianceScaling(1/3, "fan_in", "uniform")`` for kernels (a depthwise
#: kernel: ``RandomUniform`` with torch's per-channel fan_in) and ``RandomUniform(-b, b)``
#: for biases, b computed from the layer's input shape. Dense, Conv1D, Conv2D,
#: DepthwiseConv2D and Conv2DTranspose take it; MultiHeadAttention refuses it (torch's
#: ``nn.MultiheadAttention`` initialises differently, and one Keras initializer serves
#: projections of different fan-ins).
INITIALIZERS: tuple[str, ...] = (
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "ones",
    "random_normal",
    "random_uniform",
    "torch_default",
    "zeros",
)

#: Layers that refuse ``torch_default`` (see :data:`INITIALIZERS`).
_NO_TORCH_DEFAULT = frozenset({"MultiHeadAttention"})


class ShapeError(Exception):
    """A layer cannot take the shape it got.

    Raised with only the reason; :func:`infer_sequence` adds the layer and its position on
    the way out, so nested layers (inside a ``Residual``) are named by a dotted path.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: tuple[int, ...] = ()
        self.layer: Layer | None = None

    def to_arch_error(self) -> ArchError:
        where = ".".join(str(i) for i in self.path)
        return ArchError(f"layer {where} {self.layer!r}: {self.reason}")


@dataclass(frozen=True)
class LayerRow:
    """One line of an architecture summary; ``children`` holds a Residual's inner rows."""

    index: int
    description: str
    output_shape: Shape
    params: int
    flops: int = 0
    children: tuple[LayerRow, ...] = ()


class Traced(NamedTuple):
    """What one layer does to a sample: its output shape, trainable params, forward FLOPs."""

    shape: Shape
    params: int = 0
    flops: int = 0
    children: tuple[LayerRow, ...] = ()


_REGISTRY: dict[str, type[Layer]] = {}


@dataclass(frozen=True, repr=False)
class Layer:
    """Base of every layer: a value (immutable, hashable, comparable) with no framework in it."""

    #: Shape requirement quoted in error messages, e.g. "a (length, channels) input".
    expects: ClassVar[str] = "an input"
    #: As the first layer, takes the data's integer dtype as is (token ids) instead of both
    #: builders casting integer inputs (e.g. uint8 pixels) to float32 first.
    integer_input: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):  # private bases (e.g. _Conv) are not layers
            _REGISTRY[cls.__name__] = cls

    def trace(self, shape: Shape, dtype: str) -> Traced:
        """Output shape, params and FLOPs for one sample of ``shape``; raises ShapeError."""
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        """Fields whose value differs from the default: what repr and JSON show.

        Leaving defaults out keeps hashes of existing architectures stable when a new
        optional field is added later.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is dataclasses.MISSING or value != f.default:
                out[f.name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **{k: _jsonable(v) for k, v in self.fields().items()}}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Layer:
        """Rebuild from :meth:`to_dict`'s fields (JSON lists become tuples); a layer whose
        JSON is not its constructor's keywords (``Residual``) overrides this."""
        name = cls.__name__
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ArchError(
                f"{name}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(known))}"
            )
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ArchError(f"{name}: {exc}") from None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.fields().items())
        return f"{type(self).__name__}({args})"

    def _fail(self, shape: Shape, need: str | None = None) -> ShapeError:
        return ShapeError(f"needs {need or self.expects}, but got shape {shape}")


def _jsonable(value: object) -> object:
    if isinstance(value, Layer):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def layer_from_dict(data: object) -> Layer:
    """Rebuild one layer from :meth:`Layer.to_dict` output (JSON lists become tuples)."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ArchError(f"a layer must be an object with a 'type' string, but got {data!r}")
    kwargs = dict(data)
    name = kwargs.pop("type")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ArchError(f"unknown layer type {name!r}; allowed: {', '.join(sorted(_REGISTRY))}")
    return cls.from_fields(kwargs)


def flatten_layers(owner: str, items: Iterable[Any]) -> tuple[Layer, ...]:
    """Accept layers, and lists/tuples of layers, so ``Arch(L.Flatten(), body, L.Dense(10))``
    works as well as ``*body``; anything else is a mistake worth naming."""
    out: list[Layer] = []
    for item in items:
        if isinstance(item, Layer):
            out.append(item)
        elif isinstance(item, list | tuple):
            out.extend(flatten_layers(owner, item))
        else:
            raise ArchError(
                f"{owner}: every argument must be a layer, but got {item!r} ({type(item).__name__})"
            )
    return tuple(out)


def infer_sequence(
    layers: tuple[Layer, ...], shape: Shape, dtype: str
) -> tuple[tuple[LayerRow, ...], Shape]:
    """Trace layers in order; a failure is re-raised with this layer's index prepended."""
    rows: list[LayerRow] = []
    for i, layer in enumerate(layers):
        try:
            t = layer.trace(shape, dtype)
        except ShapeError as exc:
            if exc.layer is None:
                exc.layer = layer
            exc.path = (i, *exc.path)
            raise
        rows.append(LayerRow(i, _describe(layer), t.shape, t.params, t.flops, t.children))
        shape, dtype = t.shape, "float32"
    return tuple(rows), shape


def _describe(layer: Layer) -> str:
    return type(layer).__name__ if type(layer).__name__ == "Residual" else repr(layer)


# ---------------------------------------------------------------- argument checks


def check_int(layer: str, name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ArchError(
            f"{layer}: `{name}` must be an int, but got {name}={value!r} ({type(value).__name__})"
        )
    if value < minimum:
        raise ArchError(f"{layer}: `{name} >= {minimum}` must hold, but got {name}={value!r}")
    return int(value)


def check_rate(layer: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArchError(
            f"{layer}: `{name}` must be a number, but got {name}={value!r} ({type(value).__name__})"
        )
    if not 0.0 <= float(value) < 1.0:
        raise ArchError(f"{layer}: `0 <= {name} < 1` must hold, but got {name}={value!r}")
    return float(value)


def check_bool(layer: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ArchError(
            f"{layer}: `{name}` must be a bool, but got {name}={value!r} ({type(value).__name__})"
        )
    return value


def check_initializer(layer: str, name: str, value: object) -> str:
    """An initializer name both builders implement (see :data:`INITIALIZERS`)."""
    if value == "torch_default" and layer in _NO_TORCH_DEFAULT:
        raise ArchError(
            f"{layer}: `{name}`='torch_default' is not available here: PyTorch's default "
            "initialisation is defined for Linear and Conv layers (Dense, Conv1D, Conv2D, "
            "DepthwiseConv2D, Conv2DTranspose); pick one of "
            f"{', '.join(i for i in INITIALIZERS if i != 'torch_default')}"
        )
    return check_choice(layer, name, value, INITIALIZERS)


def check_choice(layer: str, name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ArchError(
            f"{layer}: `{name}` must be one of {', '.join(allowed)}, but got {name}={value!r}"
        )
    return str(value)


def check_activation(layer: str, value: object, *, allow_none: bool = True) -> str | None:
    """Canonicalise an activation name; ``linear`` becomes ``None`` where ``None`` is allowed."""
    if value is None and allow_none:
        return None
    canonical = canonical_activation(value) if isinstance(value, str) else None
    if canonical is None:
        allowed = ", ".join(sorted((*ACTIVATIONS, *ALIASES)))
        raise ArchError(f"{layer}: unknown activation {value!r}; allowed: {allowed}")
    return None if canonical == "linear" and allow_none else canonical


def check_sizes(layer: str, name: str, value: object, rank: int) -> int | tuple[int, ...]:
    """An int, or a tuple of ``rank`` ints; equal entries collapse to an int so that
    ``Conv2D(8, 3) == Conv2D(8, (3, 3))`` and both hash the same."""
    if isinstance(value, list | tuple):
        if len(value) != rank:
            raise ArchError(
                f"{layer}: `{name}` must be an int or a tuple of {rank} ints, "
                f"but got {name}={value!r}"
            )
        sizes = tuple(check_int(layer, name, v) for v in value)
        return sizes[0] if len(set(sizes)) == 1 else sizes
    return check_int(layer, name, value)


def as_tuple(value: int | tuple[int, ...], rank: int) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value,) * rank


# ---------------------------------------------------------------- shape arithmetic


def same_padding(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """(left, right) padding TensorFlow uses for ``padding="same"``; the odd pixel goes right.

    PyTorch's own ``padding="same"`` refuses strides > 1, so the torch builder pads with this
    explicitly to produce exactly the numbers Keras does.
    """
    total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


def conv_length(n: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a convolution/pool along one axis (0 when the kernel does not fit)."""
    if padding == "same":
        return math.ceil(n / stride)
    return (n - kernel) // stride + 1 if n >= kernel else 0
