"""``pl.native``: an experiment returns a model written in PyTorch and/or Keras directly.

::

    @pl.experiment(data="digits")
    def model(space):
        w = space.int("width", 16, 128)
        return pl.native(torch=lambda: MyTorchNet(w), keras=lambda: my_keras_model(w))

The builders are called with no argument, or with one sample's input shape (no batch axis)
when they take one. They become one custom-layer node (:class:`Native`) of an Arch, so
everything custom layers get applies unchanged: output shape and parameter count inferred
by building once, the count compared between the two builders, a pair with one builder
trained on its framework's modes only and refused up front for the others. Each call of a
builder must construct a new model: one made once (at import) and handed back again would
carry one trial's trained weights into the next, so it is refused, naming the builder. A
model whose output rows are probabilities (it ends in a softmax) is found by that first
build and trained on its probabilities on every mode (``Arch.output_activation``), never
softmaxed twice; builders that disagree on it are refused.

What identifies the model (``arch.json``, the Arch hash) is its ``name``, its ``config``
(by default the JSON values the builders capture from the experiment function, e.g. ``w``)
and a digest of the files that define the builders: protolab cannot see inside native code,
so an edit of that code is a different model (and never reuses a compiled program).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from protolab._frameworks import FRAMEWORKS, KERAS, TORCH
from protolab.arch._base import Layer, Shape, Traced
from protolab.arch._custom import CustomLayer, describe, is_json
from protolab.arch._own import check_callbacks, note_built, trace_own, trains_itself_when_built
from protolab.errors import ArchError

__all__ = ["Native", "native"]

Builder = Callable[..., Any]
_EXPECTED = {TORCH: "a torch.nn.Module", KERAS: "a keras.layers.Layer (or keras.Model)"}


@dataclasses.dataclass(frozen=True, repr=False)
class Native(CustomLayer):
    """One native model as an Arch node: see :func:`native`. Builders compare by identity."""

    name: str = "native"
    config: tuple[tuple[str, Any], ...] = ()
    code: str = ""
    forward_flops: int = 0
    torch_builder: Builder | None = None
    keras_builder: Builder | None = None
    #: a function making the Lightning callbacks of a LightningModule, fresh per trial
    torch_callbacks: Callable[[], Any] | None = None
    #: () -> a list of keras.callbacks.Callback: a compiled keras model's fit runs them
    keras_callbacks: Builder | None = None

    #: a whole model gets the data as stored: integer token ids stay integers
    integer_input: ClassVar[bool] = True
    _label: ClassVar[str] = "pl.native"

    def frameworks(self) -> tuple[str, ...]:
        return tuple(f for f in FRAMEWORKS if self._builder(f) is not None)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "config": dict(self.config), "code": self.code}
        out["frameworks"] = list(self.frameworks())
        if self.forward_flops:
            out["forward_flops"] = self.forward_flops
        return out

    def __repr__(self) -> str:
        return f"Native(name={self.name!r}, config={dict(self.config)!r})"

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Layer:
        raise ArchError(
            f"a native model ({fields.get('name', 'native')!r}) cannot be rebuilt from JSON: "
            "its builders are code in the experiment script; `protolab export STUDY --config "
            "CONFIG.yaml` and `protolab predict RUN_ID FILE --config CONFIG.yaml` rebuild it "
            "by running your local script"
        )

    def flops(self, input_shape: Shape) -> int:
        return self.forward_flops

    def torch(self, input_shape: Shape) -> Any:
        import torch

        built = self._build(TORCH, input_shape, torch.nn.Module)
        note_built(self, built)  # a LightningModule trains in its own loop (arch/_own.py)
        return built

    def trace(self, shape: Shape, dtype: str) -> Traced:
        """A LightningModule needs no ``forward``: it is counted without one (``_own``)."""
        return trace_own(self, shape, dtype, functools.partial(super().trace, shape, dtype))

    def trains_itself(self) -> bool | None:
        """Whether the torch build (inferred first, by every backend) trains itself."""
        return trains_itself_when_built(self)

    def keras(self, input_shape: Shape) -> Any:
        import keras

        return _one_input_output(self._build(KERAS, input_shape, keras.layers.Layer), self)

    def keras_model(self, input_shape: Shape) -> Any:
        """Several inputs and outputs allowed: the data has as many (``pl.Data`` or
        ``@pl.data`` with dicts), and the model trains by its own ``fit``."""
        import keras

        return self._build(KERAS, input_shape, keras.layers.Layer)

    def _builder(self, framework: str) -> Builder | None:
        """The builder given for ``framework``, if any (None: refused before building)."""
        return self.torch_builder if framework == TORCH else self.keras_builder

    def _build(self, framework: str, shape: Shape, kind: type) -> Any:
        fn = self._builder(framework)
        if fn is None:  # the backends check frameworks() first; this is a safety net
            raise ArchError(f"{self!r} has no {framework} builder")
        try:
            built = fn(shape) if _takes_argument(fn) else fn()
        except Exception as e:
            raise ArchError(
                f"pl.native: the {framework} builder {describe(fn)} raised {type(e).__name__}: {e}"
            ) from None
        if not isinstance(built, kind):
            raise ArchError(
                f"pl.native: the {framework} builder {describe(fn)} must return "
                f"{_EXPECTED[framework]}, but returned {type(built).__name__}: {built!r:.80}"
            )
        return built


def native(
    torch: Builder | None = None,
    keras: Builder | None = None,
    *,
    name: str | None = None,
    config: dict[str, Any] | None = None,
    flops: int = 0,
    keras_callbacks: Builder | None = None,
    torch_callbacks: Builder | None = None,
) -> Any:
    """An Arch that is one native model: ``torch`` builds a ``torch.nn.Module``, ``keras`` a
    ``keras.layers.Layer`` or ``keras.Model``, each taking ``(batch, *input_shape)``.

    ``name`` and ``config`` (JSON values) identify the model in ``arch.json`` and the hash;
    ``config`` defaults to the JSON values the builders capture. ``flops``: forward FLOPs
    per sample (2 per multiply-add), for the throughput metrics; protolab cannot count them.

    A ``keras`` builder may return a model it compiled (``model.compile(...)``): that model
    trains through its own ``fit`` with its compile settings; ``keras_callbacks``, a
    function returning a list of ``keras.callbacks.Callback`` (called once per trial, so
    each trial gets new ones), adds callbacks to that fit.

    A ``torch`` builder may return a ``lightning.LightningModule``: it trains under
    Lightning's ``Trainer`` through its own ``training_step``, ``validation_step`` and
    ``configure_optimizers``; ``torch_callbacks``, a function returning a list of
    ``lightning.Callback`` (new ones per call), adds callbacks to that Trainer.
    """
    from protolab.arch._arch import Arch

    builders = {TORCH: torch, KERAS: keras}
    if torch is None and keras is None:
        raise ArchError("pl.native: needs a torch= and/or a keras= builder, but got neither")
    for framework, fn in builders.items():
        if fn is not None and not callable(fn):
            raise ArchError(
                f"pl.native: {framework}= must be a function returning "
                f"{_EXPECTED[framework]}, but got {type(fn).__name__}: {fn!r:.80}"
            )
    if keras_callbacks is not None and not callable(keras_callbacks):
        raise ArchError(
            "pl.native: keras_callbacks= must be a function returning a list of "
            f"keras.callbacks.Callback, but got {type(keras_callbacks).__name__}: "
            f"{keras_callbacks!r:.80}"
        )
    given = [fn for fn in builders.values() if fn is not None]
    node = Native(
        name=_check_name(name),
        config=_config(config, given),
        code=_code_digest(given),
        forward_flops=_check_flops(flops),
        torch_builder=torch,
        keras_builder=keras,
        keras_callbacks=keras_callbacks,
        torch_callbacks=check_callbacks(torch_callbacks),
    )
    return Arch(node)


def _one_input_output(built: Any, node: Native) -> Any:
    """``built`` unless it is a keras model with several inputs or outputs, which protolab's
    data (one x array, one y array) cannot feed yet: refused, naming the builder."""
    inputs = [t.name for t in getattr(built, "inputs", None) or ()]
    outputs = list(getattr(built, "output_names", None) or getattr(built, "outputs", None) or ())
    if len(inputs) <= 1 and len(outputs) <= 1:
        return built
    names = [inputs, [str(o) for o in outputs]]
    raise ArchError(
        f"pl.native: the keras builder {describe(node.keras_builder)} returns a model with "
        f"{len(names[0])} inputs ({', '.join(names[0])}) and {len(names[1])} outputs "
        f"({', '.join(names[1])}), where one x array and one y array are given: in a "
        "sweep, return x and y as dicts by input and output name from @pl.data (a compiled "
        "model trains its heads by its own fit); export and predict take a model with one "
        "input and one output only (save this one with model.save from a callback)"
    )


def _check_name(name: object) -> str:
    if name is None:
        return "native"
    if not isinstance(name, str) or not name:
        raise ArchError(f"pl.native: `name` must be a non-empty string, but got {name!r}")
    return name


def _check_flops(flops: object) -> int:
    if isinstance(flops, bool) or not isinstance(flops, int) or flops < 0:
        raise ArchError(f"pl.native: `flops` must be an int >= 0, but got flops={flops!r}")
    return flops


def _config(config: dict[str, Any] | None, builders: list[Builder]) -> tuple[tuple[str, Any], ...]:
    """Explicit ``config`` (checked), else the JSON values the builders close over."""
    if config is None:
        found: dict[str, Any] = {}
        for fn in builders:
            found.update({k: v for k, v in _captured(fn).items() if is_json(v)})
        config = found
    if not isinstance(config, dict):
        raise ArchError(f"pl.native: `config` must be a dict, but got {config!r:.80}")
    for key, value in config.items():
        if not isinstance(key, str) or not is_json(value):
            raise ArchError(
                "pl.native: `config` maps names to JSON values (number, string, bool, None "
                f"or a list of them), but got {key!r}: {value!r:.80}"
            )
    return tuple(sorted((k, _frozen(v)) for k, v in config.items()))


def _captured(fn: Builder) -> dict[str, Any]:
    """Values a builder closes over, and its parameter defaults (``lambda w=w: ...``)."""
    out: dict[str, Any] = {}
    with contextlib.suppress(TypeError):  # a builtin or a callable object: no closure
        out.update(inspect.getclosurevars(fn).nonlocals)
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return out
    out.update({p.name: p.default for p in params if p.default is not inspect.Parameter.empty})
    return out


def _frozen(value: object) -> object:
    """Lists as tuples, so the node stays hashable (JSON writes them back as lists)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list | tuple) else value


def _code_digest(builders: list[Builder]) -> str:
    """12 hex chars over the files defining the builders (their code as a fallback)."""
    digest = hashlib.sha256()
    for fn in builders:
        module = sys.modules.get(getattr(fn, "__module__", "") or "")
        path = getattr(module, "__file__", None)
        try:
            digest.update(Path(path).read_bytes() if path else b"")
        except OSError:
            path = None
        if not path:
            code = getattr(fn, "__code__", None)
            digest.update(code.co_code if code is not None else repr(fn).encode())
    return digest.hexdigest()[:12]


def _takes_argument(fn: Builder) -> bool:
    """Whether the builder wants the input shape: a positional parameter without a default
    (``lambda w=w: ...`` binds a value and takes no shape)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(
        (p.kind in kinds and p.default is inspect.Parameter.empty)
        or p.kind is inspect.Parameter.VAR_POSITIONAL
        for p in params
    )
