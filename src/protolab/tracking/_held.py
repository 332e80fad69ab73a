"""What a child run's caller holds back for the tracking writer: one small picklable value,
shared by the writer process's handle (``_writer.AsyncChildRun``) and the run it writes to
(``_mlflow.ChildRun``), so neither module imports the other for it."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Held"]


@dataclass
class Held:
    """A child run's metrics (``(metrics, step, measured at ms)``, in the order logged) and
    tags, held back by the caller and sent to the writer in one message."""

    metrics: list[tuple[dict[str, float], int, int]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.metrics or self.tags)
