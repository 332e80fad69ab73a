"""Types the sweep's store code shares, without importing Optuna (`import protolab` stays light)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeAlias

__all__ = ["JSONValue", "TrialRuns"]

# What Optuna stores as a system attr: the same union as its ``optuna._typing.JSONSerializable``
# (a private module), spelled here so an override of ``BaseStorage`` keeps its exact signature.
JSONValue: TypeAlias = (
    Mapping[str, "JSONValue"] | Sequence["JSONValue"] | str | int | float | bool | None
)


class TrialRuns(Protocol):
    """What reaping a dead worker's trial needs of the tracker: end that trial's runs."""

    def fail_running_children(self, trial: int, reason: str) -> None: ...
