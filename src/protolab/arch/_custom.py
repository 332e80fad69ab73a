"""Your own layers: hyperparameters as fields, one builder per framework, usable anywhere.

A custom layer is a frozen dataclass whose fields are its hyperparameters (JSON values:
they are part of ``arch.json`` and the Arch hash) with a builder per framework::

    @pl.layer
    class Swish(pl.CustomLayer):
        beta: float = 1.0

        def torch(self, input_shape):   # -> torch.nn.Module, channels-last in and out
            return SwishModule(self.beta)

        def keras(self, input_shape):   # -> keras.layers.Layer
            return keras.layers.Lambda(lambda x: x * keras.ops.sigmoid(self.beta * x))

``input_shape`` is one sample's shape (no batch axis). Output shape and parameter count
are inferred by building the layer once (torch on a zero tensor, else Keras), or declared
by overriding :meth:`CustomLayer.output_shape` / :meth:`CustomLayer.flops`. Both builders
must make the same number of trainable parameters: each backend checks its own build
against the inferred count and fails the trial naming the layer and both counts. A layer
with one builder runs on the modes that use that framework only; the others are refused
before anything runs.

A whole model is one custom layer: ``pl.Arch(MyNet(width=w, depth=d))`` with ``torch``
returning your ``nn.Module`` (and ``keras`` your ``keras.Model``) brings any model in;
``pl.native(torch=..., keras=...)`` (``_native.py``) is the same without a class.

Both backends reach these builders the way they reach built-in layers: through their
builder registry (``protolab.arch.Builders``), where one entry serves every CustomLayer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar, TypeVar

from protolab._frameworks import FRAMEWORKS, KERAS, TORCH
from protolab.arch._base import INT_DTYPES, Layer, Shape, ShapeError, Traced
from protolab.errors import ArchError

__all__ = ["FRAMEWORKS", "CustomLayer", "counted_by", "is_json", "layer", "unsupported"]

C = TypeVar("C", bound="CustomLayer")


@dataclasses.dataclass(frozen=True, repr=False)
class CustomLayer(Layer):
    """Base of user layers; subclass it, decorate with :func:`layer`, add builders."""

    expects: ClassVar[str] = "an input its builders accept"

    def torch(self, input_shape: Shape) -> Any:
        """A ``torch.nn.Module`` taking ``(batch, *input_shape)``; override to support torch."""
        raise NotImplementedError

    def keras(self, input_shape: Shape) -> Any:
        """A ``keras.layers.Layer`` (or Model) for ``input_shape``; override to support Keras."""
        raise NotImplementedError

    def output_shape(self, input_shape: Shape) -> Shape | None:
        """Declare the output shape (one sample); None: infer it by building the layer."""
        return None

    def flops(self, input_shape: Shape) -> int:
        """Forward FLOPs for one sample (2 per multiply-add); 0 unless declared."""
        return 0

    def frameworks(self) -> tuple[str, ...]:
        """The frameworks this layer has a builder for (the methods a subclass overrides).

        An instance method, so that a layer whose builders are values (``pl.native``) can
        answer per instance.
        """
        cls = type(self)
        return tuple(f for f in FRAMEWORKS if getattr(cls, f) is not getattr(CustomLayer, f))

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if not self.frameworks():
            raise ShapeError("defines no builder: add a torch() and/or keras() method")
        out, params, _ = _built(self, shape, dtype)
        declared = self.output_shape(shape)
        return Traced(tuple(declared) if declared is not None else out, params, self.flops(shape))


def layer(cls: type[C]) -> type[C]:
    """Make ``cls`` a frozen-dataclass layer (fields = hyperparameters) and register it."""
    if not (isinstance(cls, type) and issubclass(cls, CustomLayer)):
        raise ArchError(f"@pl.layer needs a subclass of pl.CustomLayer, but got {cls!r}")
    out = dataclasses.dataclass(frozen=True, repr=False)(cls)
    for f in dataclasses.fields(out):
        if f.default is not dataclasses.MISSING and not is_json(f.default):
            raise ArchError(
                f"{cls.__name__}.{f.name}: a hyperparameter must be a JSON value (number, "
                f"string, bool, None or a list of them), but its default is {f.default!r}"
            )
    return out


def counted_by(layer: CustomLayer, shape: Shape, dtype: str) -> str:
    """Which builder the layer's reported parameter count came from (for mismatch errors)."""
    return _built(layer, shape, dtype)[2]


def unsupported(layers: tuple[Layer, ...], framework: str) -> list[CustomLayer]:
    """The custom layers in ``layers`` (nested included) that have no ``framework`` builder."""
    out: list[CustomLayer] = []
    for item in layers:
        if isinstance(item, CustomLayer) and framework not in item.frameworks():
            out.append(item)
        inner = getattr(item, "layers", None)
        if isinstance(inner, tuple):
            out += unsupported(inner, framework)
    return out


def is_json(value: object) -> bool:
    """A JSON value: what a hyperparameter must be to live in arch.json and the hash."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    return isinstance(value, tuple | list) and all(is_json(v) for v in value)


@functools.lru_cache(maxsize=512)
def _built(layer: CustomLayer, shape: Shape, dtype: str) -> tuple[Shape, int, str]:
    """(output shape, trainable params, framework) of one build: torch on zeros, else Keras.

    Cached: inference runs several times per trial and a build can be expensive.
    """
    import sys

    have = layer.frameworks()
    # the framework this process already loaded, if it can: no 5 s import just to count
    use_torch = TORCH in have and (KERAS not in have or KERAS not in sys.modules)
    framework = TORCH if use_torch or KERAS not in have else KERAS
    try:
        if framework == TORCH:
            return (*_torch_probe(layer, shape, dtype), TORCH)
        return (*_keras_probe(layer, shape, dtype), KERAS)
    except ShapeError:
        raise
    except ArchError as e:  # already states the rule (e.g. pl.native's builder checks)
        raise ShapeError(str(e)) from None
    except Exception as e:  # the user's builder: name what it raised
        raise ShapeError(f"its {framework} builder raised {type(e).__name__}: {e}") from None


def _torch_probe(layer: CustomLayer, shape: Shape, dtype: str) -> tuple[Shape, int]:
    import torch

    module = layer.torch(shape)
    if not isinstance(module, torch.nn.Module):
        raise ShapeError(f"torch() must return a torch.nn.Module, but returned {module!r}")
    kind = torch.long if dtype in INT_DTYPES else torch.float32
    with torch.no_grad():
        out = module(torch.zeros((1, *shape), dtype=kind))
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return tuple(int(d) for d in out.shape[1:]), int(params)


def _keras_probe(layer: CustomLayer, shape: Shape, dtype: str) -> tuple[Shape, int]:
    import keras

    built = layer.keras(shape)
    if not isinstance(built, keras.layers.Layer):
        raise ShapeError(f"keras() must return a keras.layers.Layer, but returned {built!r}")
    x = keras.Input(shape=shape, dtype="int64" if dtype in INT_DTYPES else "float32")
    out = built(x)
    params = sum(math.prod(w.shape) for w in built.trainable_weights)
    return tuple(int(d) for d in out.shape[1:]), int(params)
