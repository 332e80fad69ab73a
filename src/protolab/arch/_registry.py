"""One table per framework, layer class -> native builder, for built-ins and custom layers alike.

Each backend's ``nn`` module fills its own table with ``@BUILDERS.register(Dense)`` next to
the builder function, so adding a built-in layer is: the layer class (arch) plus one
registered function per framework; nothing else dispatches on layer types. The lookup walks
the layer's class hierarchy, so every ``CustomLayer`` subclass (and ``pl.native``) reaches
the one builder registered for ``CustomLayer``, and Keras-named aliases (e.g.
``GlobalAveragePooling1D``) reach their base's builder.

Framework-neutral: no framework is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from protolab.arch._base import _REGISTRY, Layer
from protolab.errors import ArchError

__all__ = ["Builders"]

B = TypeVar("B", bound=Callable[..., object])


class Builders(Generic[B]):
    """``layer class -> builder`` for one framework (``B``: that framework's signature)."""

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self._table: dict[type[Layer], B] = {}

    def register(self, *classes: type[Layer]) -> Callable[[B], B]:
        """Decorator: the function builds every layer of ``classes`` (and their subclasses)."""

        def add(fn: B) -> B:
            for cls in classes:
                if cls in self._table:
                    raise ValueError(f"{self.framework}: {cls.__name__} has a builder already")
                self._table[cls] = fn
            return fn

        return add

    def lookup(self, layer: Layer) -> B:
        """The builder of ``layer``'s nearest registered class; a clear error if none."""
        for cls in type(layer).__mro__:
            fn = self._table.get(cls)
            if fn is not None:
                return fn
        raise ArchError(
            f"{layer!r}: no {self.framework} builder is registered for "
            f"{type(layer).__name__}; every layer type needs one per framework"
        )

    def missing(self) -> list[str]:
        """Layer types (built-in or custom, as registered by name) without a builder here."""
        return sorted(
            name
            for name, cls in _REGISTRY.items()
            if not any(c in self._table for c in cls.__mro__)
        )
