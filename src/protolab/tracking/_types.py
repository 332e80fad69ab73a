"""What the sweep needs of a tracker and a child run, and what tracking reads of the
sweep's context: small Protocols.

The in-process MLflow tracker, the writer-process proxy and any test double satisfy them
structurally, so ``sweep`` depends on these shapes, not on MLflow or on each other; and
tracking reads a context through :class:`TrackerContext` without importing ``sweep``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from protolab.tracking._study_id import StudyRuns

__all__ = ["RunLog", "Tracker", "TrackerContext"]


class RunLog(Protocol):
    """One child run: a trial on one backend."""

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_texts(self, texts: Mapping[str, str]) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def end(self, state: str, reason: str = "") -> None: ...
    def call(self, fn: Callable[..., None], *args: object) -> None:
        """Have ``fn(client, run_id, *args)`` called (a module-level function, so it can be
        sent to the writer process) in order with this run's writes: an extension's own
        writes to the run, such as a checkpoint upload."""


class Tracker(Protocol):
    """One study's parent run and the child runs under it."""

    @property
    def experiment_id(self) -> str:
        """The study's MLflow experiment (known once the store is open)."""

    def child(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> RunLog: ...
    def log_parent(self, metrics: Mapping[str, float], tags: Mapping[str, str] = ...) -> None: ...
    def log_parent_artifact(self, text: str, name: str) -> None: ...
    def fail_running_children(self, trial: int, reason: str) -> None: ...
    def end_finished(self, trials: Mapping[int, tuple[str, str]]) -> None:
        """End the runs still RUNNING of these finished trials: ``{number: (state,
        reason)}``, the state and reason the study store recorded."""

    @property
    def study_id(self) -> str:
        """The study id every run carries ("" until :meth:`bind`)."""

    def study_runs(self, study_id: str) -> StudyRuns:
        """What the store holds of this study's name (read-only; before :meth:`bind`)."""

    def bind(self, study_id: str, adopt: bool = False) -> str:
        """Attach to study ``study_id``'s parent run (made if missing): see
        ``tracking.Tracker.bind``."""

    def sync(self) -> None:
        """Return once every write made so far has landed; raise ``StoreWriteError`` for
        the first that failed (a tracker writing in this process has nothing to wait for)."""

    def end(self, status: str = "FINISHED") -> None: ...


class _TrackingSettings(Protocol):
    @property
    def uri(self) -> str | None: ...
    @property
    def experiment(self) -> str | None: ...


class _TrackingConfig(Protocol):
    @property
    def tracking(self) -> _TrackingSettings: ...


class TrackerContext(Protocol):
    """What opening a study's tracker reads of the sweep's context."""

    @property
    def cfg(self) -> _TrackingConfig: ...
    @property
    def tracking_uri(self) -> str: ...  # resolved: tracking.uri, $MLFLOW_TRACKING_URI, default
    @property
    def study_name(self) -> str: ...


# --- the study's notes: computed by protolab.report, stored by the tracker ------------------

__all__ += ["DescribeStudy", "StudyNotes"]


class StudyNotes(Protocol):
    """What the MLflow UI says about a study, as the tracker stores it."""

    @property
    def description(self) -> str: ...  # the parent run's (markdown)
    @property
    def params(self) -> Mapping[str, str]: ...  # for the parent; ones it has are kept
    @property
    def metrics(self) -> Mapping[str, float]: ...  # for the parent
    @property
    def experiment_note(self) -> str: ...
    @property
    def views(self) -> Mapping[str, str]: ...  # shared views of the runs table: key -> JSON


class DescribeStudy(Protocol):
    """Computes a study's notes from the store (a module-level function: it is sent to the
    tracking writer process by name). A tracker handed one stores its notes at ``end``."""

    def __call__(
        self, client: Any, experiment_id: str, parent_id: str, study: str
    ) -> StudyNotes: ...
