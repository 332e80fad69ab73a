"""A strict YAML reader for configs: duplicate keys, alias bombs and cycles are refused.

PyYAML keeps the last of two equal keys (a second ``train:`` block silently drops the
first) and expands aliases by reference, so a 400-byte file can stand for billions of
values and a recursive alias for an infinite one. Each is a :class:`ConfigError` here.
"""

from __future__ import annotations

from typing import Any

import yaml

from protolab.errors import ConfigError

__all__ = ["MAX_BYTES", "MAX_VALUES", "check_size", "parse"]

MAX_BYTES = 1 << 20  # a config is a few hundred bytes; 1 MiB is certainly not one
MAX_VALUES = 100_000  # values after alias expansion


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (merge keys ``<<`` aside)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _Duplicate(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # unhashable: PyYAML's own error says so
                    continue
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


class _Duplicate(Exception):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(key, first, again)
        self.key, self.first, self.again = key, first, again


def check_size(source: str, size: int) -> None:
    if size > MAX_BYTES:
        raise ConfigError(
            f"{source}: is {size / 2**20:.1f} MiB; a config may be at most "
            f"{MAX_BYTES // 2**20} MiB (is this the right file?)"
        )


def _count(data: Any, source: str) -> None:
    """Walk the loaded data (aliases expanded): refuse cycles and more than MAX_VALUES."""
    budget = MAX_VALUES
    stack: list[tuple[Any, tuple[int, ...]]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(
                f"{source}: expands to more than {MAX_VALUES} values (YAML aliases repeated "
                "within each other?); a config is a few dozen values"
            )
        if isinstance(node, (dict, list)):
            if id(node) in path:
                raise ConfigError(
                    f"{source}: a YAML alias refers to itself (a recursive structure); "
                    "aliases may only repeat a finished value"
                )
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, (*path, id(node))) for c in children)


def parse(text: str, source: str) -> Any:
    """Parse ``text`` (a config file or an override value); ``source`` names it in errors."""
    check_size(source, len(text.encode("utf-8", "replace")))
    try:
        data = yaml.load(text, Loader=_Loader)
    except _Duplicate as d:
        raise ConfigError(
            f"{source}:{d.again}: duplicate key {str(d.key)[:100]!r} (first at line {d.first}); "
            "each key may appear once per section (merge the two blocks)"
        ) from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a config") from None
    _count(data, source)
    return data
