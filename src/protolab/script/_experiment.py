"""``@protolab.experiment``: marks the function that turns a Space into an Arch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protolab._frameworks import KERAS, TORCH
from protolab.arch import Arch
from protolab.config import Direction, check_metric_name, infer_direction
from protolab.errors import ScriptError
from protolab.space import Space

if TYPE_CHECKING:
    from protolab.data import DataFn

__all__ = ["Experiment", "Loss", "Optimizer", "experiment"]


@dataclass(frozen=True, eq=False)
class Loss:
    """A custom training loss, one function per framework: ``fn(outputs, targets)``.

    ``outputs`` are the model's float32 outputs (logits, or probabilities when the Arch
    ends in a softmax); ``targets`` are the dataset's (class ids, or ``(N, k)`` floats). Each
    returns the batch's mean loss as a scalar of its framework (the ``keras`` one written
    with ``keras.ops`` runs on TensorFlow and JAX alike). Used when ``train.loss`` is
    ``auto`` or ``custom``: ``@pl.experiment(loss=pl.Loss(torch=f, keras=g))``.
    """

    torch: Callable[[Any, Any], Any] | None = None
    keras: Callable[[Any, Any], Any] | None = None

    def __post_init__(self) -> None:
        given = {TORCH: self.torch, KERAS: self.keras}
        if all(f is None for f in given.values()):
            raise ScriptError("protolab.Loss needs torch=fn and/or keras=fn, but got neither")
        for name, fn in given.items():
            if fn is not None and not callable(fn):
                raise ScriptError(
                    f"protolab.Loss({name}=...) must be a function, but got {fn!r:.80}"
                )


@dataclass(frozen=True, eq=False)
class Optimizer:
    """A custom optimizer, one factory per framework, used when ``train.optimizer: custom``.

    ``torch(params, lr)`` returns a ``torch.optim.Optimizer`` over ``params``; ``keras(lr)``
    returns a ``keras.optimizers.Optimizer``. ``lr`` is the job's ``train.lr`` (on Keras,
    under a per-step schedule, the schedule itself: pass it as ``learning_rate``). protolab
    still writes each step's rate into the optimizer (a schedule, ``reduce_on_plateau``)
    and clips with ``train.grad_clip``; weight decay and other options are the factory's:
    ``@pl.experiment(optimizer=pl.Optimizer(torch=lambda p, lr: ..., keras=lambda lr: ...))``.
    """

    torch: Callable[[Any, Any], Any] | None = None
    keras: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        given = {TORCH: self.torch, KERAS: self.keras}
        if all(f is None for f in given.values()):
            raise ScriptError("protolab.Optimizer needs torch=fn and/or keras=fn, but got neither")
        for name, fn in given.items():
            if fn is not None and not callable(fn):
                raise ScriptError(
                    f"protolab.Optimizer({name}=...) must be a function, but got {fn!r:.80}"
                )


@dataclass(frozen=True)
class Experiment:
    """An experiment function plus what it trains on and what it optimises."""

    fn: Callable[[Space], Arch] = field(repr=False)
    data: str
    metric: str | None
    direction: Direction | None
    name: str
    metrics: tuple[str, ...] = ()  # extra val/<name> scores to log (data/_scores.py)
    source: str = ""  # the script path once loaded (for error messages)
    loss: Loss | None = None  # a custom loss (train.loss auto/custom trains with it)
    optimizer: Optimizer | None = None  # a custom optimizer (train.optimizer: custom)
    data_fn: DataFn | None = None  # the script's @pl.data: overrides ``data``

    def build(self, space: Space) -> Arch:
        """Call the user's function and check it returned an Arch (a common slip)."""
        try:
            arch = self.fn(space)
        except SystemExit as e:
            from protolab.script._loader import exit_error

            raise exit_error(e, "", f"experiment '{self.name}'") from None
        if not isinstance(arch, Arch):
            where = f" in {self.source}" if self.source else ""
            raise ScriptError(
                f"experiment '{self.name}'{where} must return a protolab.Arch, "
                f"but returned {type(arch).__name__}: {arch!r:.80}"
            )
        return arch

    def resolve_metric(self, default: str) -> tuple[str, Direction]:
        """The metric to optimise and its direction (default: the dataset's own metric)."""
        metric = self.metric or default
        return metric, self.direction or infer_direction(metric)


def _check_scores(metrics: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise ScriptError(f"@experiment(metrics=...) must be a list of names, but got {metrics!r}")
    out = []
    for m in metrics:
        full = m if m.startswith("val/") else f"val/{m}"
        try:
            check_metric_name(full)
        except ValueError as e:
            raise ScriptError(f"@experiment(metrics=...): {e}") from None
        if full not in ("val/acc", "val/rmse", "val/loss"):
            out.append(full.removeprefix("val/"))
    return tuple(dict.fromkeys(out))


# Set by the loader while it executes a script, so decorators can register themselves.
_registry: list[Experiment] | None = None


def experiment(
    fn: Callable[[Space], Arch] | None = None,
    *,
    data: str = "digits",
    metric: str | None = None,
    direction: Direction | None = None,
    name: str | None = None,
    metrics: Sequence[str] = (),
    loss: Loss | None = None,
    optimizer: Optimizer | None = None,
) -> Any:
    """Declare the experiment of a script: ``@pl.experiment(data="digits", metric="val/acc")``.

    ``data`` is a built-in dataset name or a ``.npz``/``.csv`` path relative to the script.
    ``metric`` defaults to the dataset's (``val/acc`` or ``val/rmse``); ``direction`` is
    inferred from the metric name when not given. ``metrics`` adds validation scores to
    log per epoch (``["f1", "auc"]``). ``loss`` is a custom :class:`Loss`, ``optimizer`` a
    custom :class:`Optimizer` (``train.optimizer: custom``). Works bare (``@pl.experiment``)
    too.
    """
    if loss is not None and not isinstance(loss, Loss):
        raise ScriptError(f"@experiment(loss=...) must be a protolab.Loss, but got {loss!r:.80}")
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise ScriptError(
            f"@experiment(optimizer=...) must be a protolab.Optimizer, but got {optimizer!r:.80}"
        )
    extra = _check_scores(metrics)
    if direction not in (None, "maximize", "minimize"):
        raise ScriptError(
            f"@experiment: direction must be 'maximize' or 'minimize', but got {direction!r}"
        )
    if not isinstance(data, str) or not data:
        raise ScriptError(f"@experiment: data must be a dataset name or a path, but got {data!r}")
    if metric is not None:
        try:
            check_metric_name(metric)
        except ValueError as e:
            raise ScriptError(f"@experiment(metric=...): {e}") from None
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ScriptError(f"@experiment: name must be a non-empty string, but got {name!r}")

    def wrap(f: Callable[[Space], Arch]) -> Experiment:
        if not callable(f):
            raise ScriptError(f"@experiment must decorate a function, but got {f!r}")
        exp = Experiment(
            f, data, metric, direction, name or f.__name__, extra, loss=loss, optimizer=optimizer
        )
        if _registry is not None:
            _registry.append(exp)
        return exp

    return wrap(fn) if fn is not None else wrap
