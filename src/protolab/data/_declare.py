"""``@pl.data``: the script's function that makes the data, declared next to the experiment.

It lives in the data package (``pl.data`` is this package, made callable) because the name
``protolab.data`` is the package's: a function of that name elsewhere would be shadowed by
the submodule as soon as the package is imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from protolab.errors import ScriptError

__all__ = ["DataFn", "collecting", "declare"]


@dataclass(frozen=True, eq=False)
class DataFn:
    """A script's ``@pl.data`` function: what the experiment trains on, made in code.

    It takes no argument, or the trial's :class:`Space` (so augmentation strength or a
    sequence length is searched: its choices join the trial's params). It returns numpy
    arrays as a dict, as an ``.npz`` holds them; the sweep turns them into a Dataset.
    """

    fn: Callable[..., object] = field(repr=False)
    name: str
    takes_space: bool

    def call(self, space: object) -> object:
        """The function's result; ``space`` is the trial's Space (the data package sits
        beside ``protolab.space`` in the layers, so it is passed through untyped)."""
        return self.fn(space) if self.takes_space else self.fn()


# Set while a script is loaded (:func:`collecting`), so ``@pl.data`` registers itself.
_collected: list[DataFn] | None = None


@contextmanager
def collecting() -> Iterator[list[DataFn]]:
    """The ``@pl.data`` functions declared while the block runs (a script's execution)."""
    global _collected
    previous, found = _collected, list[DataFn]()
    _collected = found
    try:
        yield found
    finally:
        _collected = previous


def declare(fn: Callable[..., object]) -> DataFn:
    """Declare what the experiment trains on, in code: ``@pl.data`` over a function that
    returns ``{"x": ..., "y": ...}`` (a seeded val split is taken, as for an ``.npz``) or
    ``{"x_train": ..., "y_train": ..., "x_val": ..., "y_val": ...}``; without ``y`` the
    target is ``x`` itself (regression on the inputs, MSE against them). It may take
    ``space`` to search its own choices. Overrides ``@pl.experiment(data=...)``; a config's
    ``data:`` overrides both.
    """
    if not callable(fn):
        raise ScriptError(f"@data must decorate a function, but got {fn!r:.80}")
    name = getattr(fn, "__name__", "data")
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    except (TypeError, ValueError):  # a builtin without a signature: called without space
        params = []
    if len(params) > 1:
        raise ScriptError(
            f"@data function '{name}' takes {len(params)} arguments; "
            "allowed: none, or one (the trial's space)"
        )
    found = DataFn(fn, name, takes_space=len(params) == 1)
    if _collected is not None:
        _collected.append(found)
    return found
