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
are inferred by building the layer once (torch on a sample batch, else Keras), or declared
by overriding :meth:`CustomLayer.output_shape` / :meth:`CustomLayer.flops`. Both builders
must make the same number of trainable parameters: each backend checks its own build
against the inferred count and fails the trial naming the layer and both counts. A layer
with one builder runs on the modes that use that framework only; the others are refused
before anything runs.

Every call of a builder must construct a new object (:func:`build_custom`): protolab builds a
model for every trial, and more than once per trial, so a module made once and handed back
would carry one trial's trained weights into the next. The sample batch a build is probed
with also tells whether the layer's output rows are probabilities (a softmax head), which
:attr:`Arch.output_activation` reports for a model that ends in custom code.

A whole model is one custom layer: ``pl.Arch(MyNet(width=w, depth=d))`` with ``torch``
returning your ``nn.Module`` (and ``keras`` your ``keras.Model``) brings any model in;
``pl.native(torch=..., keras=...)`` (``_native.py``) is the same without a class.

Both backends reach these builders the way they reach built-in layers: through their
builder registry (``protolab.arch.Builders``), where one entry serves every CustomLayer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

from protolab._frameworks import FRAMEWORKS, KERAS, TORCH
from protolab.arch._base import INT_DTYPES, Layer, Shape, ShapeError, Traced
from protolab.errors import ArchError

__all__ = [
    "FRAMEWORKS",
    "CustomLayer",
    "build_custom",
    "check_fresh",
    "counted_by",
    "describe",
    "is_json",
    "layer",
    "output_probabilities",
    "probe_outputs",
    "unsupported",
]

C = TypeVar("C", bound="CustomLayer")

#: rows in the batch a build is probed with (several: "every row" must mean something)
_PROBE_ROWS = 4
#: how far a row of probabilities may be from [0, 1] and from summing to 1: float32
#: rounding, and a 16-bit output's (a Keras mixed-precision policy)
_TOLERANCE = {4: 1e-4, 8: 1e-4, 2: 2e-2}


@dataclasses.dataclass(frozen=True, repr=False)
class CustomLayer(Layer):
    """Base of user layers; subclass it, decorate with :func:`layer`, add builders."""

    expects: ClassVar[str] = "an input its builders accept"
    #: how messages about the builders name this kind of layer ("": its class name)
    _label: ClassVar[str] = ""

    def torch(self, input_shape: Shape) -> Any:
        """A ``torch.nn.Module`` taking ``(batch, *input_shape)``; override to support torch."""
        raise NotImplementedError

    def keras(self, input_shape: Shape) -> Any:
        """A ``keras.layers.Layer`` (or Model) for ``input_shape``; override to support Keras."""
        raise NotImplementedError

    def keras_model(self, input_shape: Shape) -> Any:
        """The Keras build when the data has several inputs or outputs (a whole model may
        take them; a layer inside an Arch cannot): the same build by default."""
        return self.keras(input_shape)

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

    def _builder(self, framework: str) -> Callable[..., Any] | None:
        """The user's code that builds this layer on ``framework`` (for messages naming it;
        private, so that no hyperparameter name can shadow it)."""
        return getattr(type(self), framework) if framework in self.frameworks() else None

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


def describe(fn: Callable[..., Any] | None) -> str:
    """``qualname (file:line)``: a lambda has no useful name, its place in the script does."""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    code = getattr(fn, "__code__", None)
    if code is None:
        return name
    return f"{name} ({Path(code.co_filename).name}:{code.co_firstlineno})"


# ---------------------------------------------------------------- a new model per call

#: id -> every object a builder handed out in this process that is still alive, held
#: weakly (keyed by id, so objects that are unhashable or compare by value work too)
_HANDED_OUT: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def build_custom(layer: CustomLayer, framework: str, shape: Shape, several: bool = False) -> Any:
    """One call of ``layer``'s ``framework`` builder, which must hand back a new object.

    protolab builds the model for every trial, and more than once per trial (the probe
    that infers shapes and counts, then each backend's build): an object handed out before
    (a module made once at import and returned by the builder) has trained already and
    would carry one trial's weights into the next, so it is refused, naming the builder.
    An object that cannot be referenced weakly is not tracked (keeping it would keep it
    alive); every torch module and Keras layer can be.
    """
    if framework == TORCH:
        made = layer.torch(shape)
    else:  # several: the data has several inputs or outputs, a model may take them
        made = layer.keras_model(shape) if several else layer.keras(shape)
    if _HANDED_OUT.get(id(made)) is made:
        raise ArchError(_reused(layer, framework, made))
    with contextlib.suppress(TypeError):  # not weakly referenceable: not a model
        _HANDED_OUT[id(made)] = made
    return made


def check_fresh(layers: tuple[Layer, ...], shape: Shape, dtype: str, several: bool = False) -> None:
    """Call each top-level custom layer's builders twice, as a trial will, and refuse one
    that hands back the same object; for a sweep's dry run, before anything is stored.

    Only the frameworks this process has imported are called (a script imports those its
    builders use), so the check imports nothing. What else a builder may do wrong (raise,
    return the wrong type, a shape it cannot take) is the trial's to report.
    """
    customs = [i for i, item in enumerate(layers) if isinstance(item, CustomLayer)]
    for i, item in enumerate(layers[: customs[-1] + 1] if customs else ()):
        if isinstance(item, CustomLayer):
            for framework in item.frameworks():
                if _loaded(framework):
                    _same_twice(item, framework, shape, several)
        if i == customs[-1]:
            return  # no custom layer further on: no more shapes to find
        try:
            shape, dtype = item.trace(shape, dtype).shape, "float32"
        except (ShapeError, ArchError):
            return


def _same_twice(layer: CustomLayer, framework: str, shape: Shape, several: bool) -> None:
    call = layer.torch if framework == TORCH else layer.keras
    if framework != TORCH and several:
        call = layer.keras_model
    try:
        first, second = call(shape), call(shape)
    except Exception:  # the trial reports it, with the builder named
        return
    try:
        weakref.ref(first)
    except TypeError:  # not a model (an int, None): the trial's type check names it
        return
    if first is second:
        raise ArchError(_reused(layer, framework, first))


def _reused(layer: CustomLayer, framework: str, made: object) -> str:
    kind = "module" if framework == TORCH else "layer or model"
    cls = type(made).__name__
    return (
        f"{layer._label or type(layer).__name__}: the {framework} builder "
        f"{describe(layer._builder(framework))} returned the same {cls} object as an earlier "
        "call; protolab builds a new model for every trial (and more than once per trial), "
        "so an object made once would carry one trial's trained weights into the next: "
        f"construct the {kind} inside the builder (return {cls}(...) there, not an object "
        "made once outside it)"
    )


def _loaded(framework: str) -> bool:
    """Whether this process has imported ``framework`` (so building with it imports nothing)."""
    return framework in sys.modules


# ---------------------------------------------------------------- probing a build


class Probe(NamedTuple):
    """What one build of a custom layer did to the sample batch."""

    shape: Shape  # one sample's output shape
    params: int  # trainable parameters
    probabilities: bool  # every output row in [0, 1] and summing to 1: a softmax head


#: layer -> {framework: its output rows were probabilities} from this process's probes
_OUTPUTS: weakref.WeakKeyDictionary[CustomLayer, dict[str, bool]] = weakref.WeakKeyDictionary()


def output_probabilities(layer: CustomLayer) -> bool | None:
    """Whether ``layer``'s output rows were probabilities when it was last probed in this
    process (every backend infers the Arch before it builds it); None if never probed."""
    found = _OUTPUTS.get(layer)
    return None if not found else any(found.values())


def probe_outputs(layer: CustomLayer, framework: str, shape: Shape, dtype: str) -> bool:
    """Probe ``layer`` on ``framework`` (once per process and shape): whether its output
    rows are probabilities. An ArchError, on every build that asks, once the other
    framework's builder, probed in this process, answered otherwise: the two builders do
    not make the same model."""
    try:
        probabilities = _probe(layer, framework, shape, dtype).probabilities
    except ShapeError as e:
        raise ArchError(f"{layer!r}: {e.reason}") from None
    found = _OUTPUTS.get(layer, {})
    if len(set(found.values())) > 1:
        said = {True: "probabilities (rows in [0, 1] summing to 1: a softmax head)"}
        parts = [
            f"the {f} builder {describe(layer._builder(f))} outputs {said.get(p, 'logits')}"
            for f, p in found.items()
        ]
        raise ArchError(
            f"{layer!r}: {'; '.join(parts)}: both builders must make the same model (end "
            "both in a softmax, or neither)"
        )
    return probabilities


@functools.lru_cache(maxsize=512)
def _built(layer: CustomLayer, shape: Shape, dtype: str) -> tuple[Shape, int, str]:
    """(output shape, trainable params, framework) of one build: torch, else Keras.

    Cached: inference runs several times per trial and a build can be expensive; and the
    framework counted first stays the one every later build is compared with.
    """
    have = layer.frameworks()
    # the framework this process already loaded, if it can: no 5 s import just to count
    use_torch = TORCH in have and (KERAS not in have or not _loaded(KERAS))
    framework = TORCH if use_torch or KERAS not in have else KERAS
    probe = _probe(layer, framework, shape, dtype)
    return probe.shape, probe.params, framework


@functools.lru_cache(maxsize=512)
def _probe(layer: CustomLayer, framework: str, shape: Shape, dtype: str) -> Probe:
    """One build on ``framework`` run on the sample batch; a failure is a ShapeError."""
    try:
        if framework == TORCH:
            probe = _torch_probe(layer, shape, dtype)
        else:
            probe = _keras_probe(layer, shape, dtype)
    except ShapeError:
        raise
    except ArchError as e:  # already states the rule (e.g. pl.native's builder checks)
        raise ShapeError(str(e)) from None
    except Exception as e:  # the user's builder: name what it raised
        raise ShapeError(f"its {framework} builder raised {type(e).__name__}: {e}") from None
    _OUTPUTS.setdefault(layer, {})[framework] = probe.probabilities
    return probe


def _sample(shape: Shape, dtype: str) -> Any:
    """The batch a build is probed with: uniform [0, 1) floats, or token id 0 (any
    vocabulary has it); seeded, and drawn without touching any framework's RNG."""
    import numpy as np

    if dtype in INT_DTYPES:
        return np.zeros((_PROBE_ROWS, *shape), dtype=np.int64)
    return np.random.default_rng(0).random((_PROBE_ROWS, *shape), dtype=np.float32)


def _are_probabilities(values: Any) -> bool:
    """Every row of the last axis in [0, 1] and summing to 1 (within the output dtype's
    rounding), over at least two classes."""
    import numpy as np

    if values.ndim < 2 or values.shape[-1] < 2 or values.dtype.kind in "biu":
        return False
    tol = _TOLERANCE.get(values.dtype.itemsize, 1e-4)
    rows = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1])
    if not np.isfinite(rows).all():
        return False
    in_range = rows.min() >= -tol and rows.max() <= 1.0 + tol
    return bool(in_range and np.abs(rows.sum(-1) - 1.0).max() <= tol)


def _torch_probe(layer: CustomLayer, shape: Shape, dtype: str) -> Probe:
    import torch

    module = build_custom(layer, TORCH, shape)
    if not isinstance(module, torch.nn.Module):
        raise ShapeError(f"torch() must return a torch.nn.Module, but returned {module!r}")
    weights = [*module.parameters(), *module.buffers()]
    device = weights[0].device if weights else torch.device("cpu")
    with torch.no_grad():
        out = module(torch.from_numpy(_sample(shape, dtype)).to(device))
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    values = out.detach().cpu()
    values = values.float() if values.is_floating_point() else values
    return Probe(
        tuple(int(d) for d in out.shape[1:]), int(params), _are_probabilities(values.numpy())
    )


def _keras_probe(layer: CustomLayer, shape: Shape, dtype: str) -> Probe:
    import keras

    built = build_custom(layer, KERAS, shape)
    if not isinstance(built, keras.layers.Layer):
        raise ShapeError(f"keras() must return a keras.layers.Layer, but returned {built!r}")
    x = keras.Input(shape=shape, dtype="int64" if dtype in INT_DTYPES else "float32")
    out = built(x)
    params = sum(math.prod(w.shape) for w in built.trainable_weights)
    values = keras.ops.convert_to_numpy(built(_sample(shape, dtype)))
    return Probe(tuple(int(d) for d in out.shape[1:]), int(params), _are_probabilities(values))
