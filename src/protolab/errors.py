"""The exceptions protolab raises.

Everything derives from :class:`ProtolabError`. Errors caused by what the user gave us
(a config, an override, an experiment script, a data file, a URL) derive from
:class:`UserInputError`: the CLI turns those into exit code 2 and one clear message, with no
traceback, before any study or run is created. Messages follow one rule: name where the
problem is (file, dotted field or layer), what was received, and what is allowed.
"""

from __future__ import annotations

__all__ = [
    "ArchError",
    "ConfigError",
    "DataError",
    "NonFiniteLossError",
    "ProtolabError",
    "ScriptError",
    "SpaceError",
    "StorageError",
    "UserInputError",
]


class ProtolabError(Exception):
    """Root of every error protolab raises on purpose."""

    exit_code: int = 1


class UserInputError(ProtolabError):
    """Something the user handed us is wrong; fixing the input fixes the problem."""

    exit_code = 2


class ConfigError(UserInputError):
    """A YAML config or a command-line override is invalid."""


class ScriptError(UserInputError):
    """An experiment script cannot be loaded or does not declare exactly one experiment."""


class DataError(UserInputError):
    """A dataset name or data file is unknown, missing or malformed."""


class StorageError(UserInputError):
    """A storage or tracking URL is malformed, has the wrong scheme or cannot be reached."""


class SpaceError(UserInputError):
    """A search-space declaration is invalid (e.g. ``low <= high`` does not hold)."""


class ArchError(ProtolabError):
    """An architecture cannot be built for its input (names the layer). Fails one trial."""

    exit_code = 2


class NonFiniteLossError(ProtolabError):
    """Training produced a NaN or infinite loss; the trial stops instead of training on garbage."""
