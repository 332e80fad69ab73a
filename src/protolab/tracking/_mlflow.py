"""MLflow layout of DESIGN.md section 6, written through ``MlflowClient`` (no fluent state).

Every write is batched: per-call ``log_metric`` costs ~10 ms on SQLite, so epoch metrics are
buffered and flushed with ``log_batch`` at most every few seconds and at the end of a run.
The client is used directly (not ``mlflow.start_run``) so several runs can be open in one
process and nothing depends on global "active run" state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protolab._stores import checkpoint_wal, default_tracking_uri, redact, use_wal
from protolab._tags import TAG
from protolab.tracking._held import Held
from protolab.tracking._notes import FAMILY_COLOURS, store_study_notes
from protolab.tracking._study_id import StudyRuns, adopt_legacy_runs, quote, study_runs
from protolab.tracking._types import DescribeStudy, TrackerContext
from protolab.tracking._types import Tracker as StudyTracker
from protolab.tracking._writer import quiet_mlflow

if TYPE_CHECKING:
    from protolab.tracking._writer import AsyncTracker, _Writer

__all__ = ["ChildRun", "Tracker", "default_tracking_uri", "open_tracker", "redact", "wait_open"]

_FLUSH_EVERY_S = 3.0
_PARENT_TAG = TAG.ROLE
_MAX_BATCH = 1000  # MLflow's limit on metrics (and on all entities) per log_batch call
_MAX_TAGS = 100  # ... and on tags per call


def open_tracker(
    ctx: TrackerContext,
    lock: Path | None = None,
    wait: bool = True,
    describe: DescribeStudy | None = None,
    bind_later: bool = False,
) -> StudyTracker | _Opening:
    """The study's tracker; a bad or unreachable tracking URI is a StorageError.

    By default an :class:`~protolab.tracking._writer.AsyncTracker` (its writes made by a
    writer process, off the trial's critical path); ``PROTOLAB_TRACKING=inline`` gives a
    :class:`Tracker` making them in this process. Both have the same interface. ``lock``
    is held while the store is opened (a fresh local store has one creator). With
    ``wait=False`` the store opens in the background: call :func:`wait_open` on the result.
    ``describe`` (``protolab.report.study_notes``) computes the study's notes, which the
    tracker stores when it ends; without it, ending leaves them as they are.
    ``bind_later``: the parent run waits for ``bind(study_id)`` (a sweep, once it has
    checked that its study store and these runs are of one study).
    """

    uri = ctx.tracking_uri  # its scheme was validated with the config
    if uri.startswith(("http://", "https://")):  # fail in seconds, not after minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    experiment = ctx.cfg.tracking.experiment or ctx.study_name
    # where the URI came from: what the message names (the user fixes that one)
    where = "tracking.uri" if ctx.cfg.tracking.uri else _env_or_field()
    writer = None
    try:
        if os.environ.get("PROTOLAB_TRACKING", "") == "inline":
            from protolab._lock import file_lock

            with file_lock(lock):
                return Tracker(uri, experiment, ctx.study_name, describe, bind_later=bind_later)
        from protolab.tracking._writer import AsyncTracker, take_writer

        writer = take_writer()
        tracker = AsyncTracker(
            writer, uri, experiment, ctx.study_name, lock, describe, bind_later=bind_later
        )
        return tracker.wait_open() if wait else _Opening(tracker, writer, uri, where)
    except Exception as e:
        if writer is not None:
            writer.close()
        raise _open_error(uri, e, where) from None


def _env_or_field() -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return "$MLFLOW_TRACKING_URI (from the environment; tracking.uri is not set)"
    return "tracking.uri"


class _Opening:
    """A tracker whose store is still opening; :meth:`wait` gives it (or a StorageError)."""

    def __init__(self, tracker: AsyncTracker, writer: _Writer, uri: str, where: str) -> None:
        self.tracker, self.writer, self.uri, self.where = tracker, writer, uri, where

    def wait(self) -> AsyncTracker:
        try:
            return self.tracker.wait_open()
        except Exception as e:
            self.writer.close()
            raise _open_error(self.uri, e, self.where) from None


def wait_open(tracker: StudyTracker | _Opening) -> StudyTracker:
    """The tracker itself, once its store is open (see ``open_tracker(wait=False)``)."""
    return tracker.wait() if isinstance(tracker, _Opening) else tracker


def _open_error(uri: str, e: Exception, where: str = "tracking.uri") -> Exception:
    from protolab.errors import StorageError

    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    # The writer's errors already read "Type: message"; local ones get their type here.
    kind = "" if type(e).__name__ == "_WriterError" else f"{type(e).__name__}: "
    return StorageError(f"{where}: cannot open {redact(uri)!r}: {kind}{redact(first)[:300]}")


def _artifact_root(uri: str) -> str | None:
    """Artifacts live beside a local SQLite store (``mlruns/artifacts``); servers choose."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "artifacts").resolve().as_uri()
    return None


class Tracker:
    """The MLflow experiment of one study and its single parent run.

    ``describe`` computes the study's notes (see :meth:`end`); it may be set after opening.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        study: str,
        describe: DescribeStudy | None = None,
        *,
        bind_later: bool = False,
    ) -> None:
        """``bind_later``: no parent run yet; :meth:`bind` attaches it (a sweep first
        checks that the study store and these runs belong to the same study)."""
        import logging

        quiet_mlflow()  # no telemetry threads beside the writes (when this imports MLflow)
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # table creation logs at INFO on a fresh store
            logging.getLogger(name).setLevel(logging.WARNING)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            use_wal(db)  # before MLflow opens it: fewer syncs per write (_stores.use_wal)
        self.uri = uri
        self.study = study
        self.study_id = ""  # the study's id (``bind``): on the parent and every child run
        self.describe = describe
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            root = _artifact_root(uri)
            location = f"{root}/{experiment}" if root else None
            try:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=location, tags={TAG.STUDY: study}
                )
            except Exception:  # another worker created it first
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
                self.experiment_id = found.experiment_id
        else:
            self.experiment_id = found.experiment_id
        self.parent_id = "" if bind_later else self._parent_run()

    def study_runs(self, study_id: str) -> StudyRuns:
        """What this store holds of the study's name (read-only): see :class:`StudyRuns`."""
        return study_runs(self.client, self.experiment_id, self.study, study_id)

    def bind(self, study_id: str, adopt: bool = False) -> str:
        """Attach to study ``study_id``'s parent run (made if missing) and stamp the id on
        every run made from now on; ``adopt``: the study is one from before study ids, whose
        runs (its id-less parent and children) take the id now, once. The parent's run id."""
        self.study_id = study_id
        if adopt:
            adopt_legacy_runs(self.client, self.experiment_id, self.study, study_id)
        self.parent_id = self._parent_run()
        return self.parent_id

    def _parents_filter(self) -> str:
        where = f"tags.`{_PARENT_TAG}` = 'parent' and tags.`{TAG.STUDY}` = '{quote(self.study)}'"
        if self.study_id:
            where += f" and tags.`{TAG.STUDY_ID}` = '{self.study_id}'"
        return where

    def _parent_run(self) -> str:
        """The study's parent run; a rerun or another worker attaches to the existing one."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=self._parents_filter(),
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        if runs:
            run_id: str = runs[0].info.run_id
            if runs[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.study,
            tags={_PARENT_TAG: "parent", TAG.STUDY: self.study, **self._id_tag()},
        )
        return self._first_parent(str(run.info.run_id))

    def _first_parent(self, mine: str) -> str:
        """Workers on other hosts (no shared lock) may each have created a parent: all
        keep the first created, and a later creator deletes its own."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=self._parents_filter(), max_results=50
        )
        first = min(runs, key=lambda r: (r.info.start_time, r.info.run_id), default=None)
        if first is None or first.info.run_id == mine:
            return mine
        self.client.delete_run(mine)
        return str(first.info.run_id)

    def child(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> ChildRun:
        from mlflow.entities import Param

        colour = FAMILY_COLOURS.get(str(tags.get(TAG.FAMILY, "")))  # charts: one per family
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                "mlflow.parentRunId": self.parent_id,
                **({"mlflow.runColor": colour} if colour else {}),
                **tags,
                **self._id_tag(),
            },
        )
        run_id = str(run.info.run_id)
        items = [Param(k, redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(run_id, params=items[i : i + 100])
        return ChildRun(self.client, run_id, str(run.info.artifact_uri or ""))

    def log_parent(self, metrics: Mapping[str, float], tags: Mapping[str, str] = {}) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.parent_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )

    def log_parent_artifact(self, text: str, name: str) -> None:
        self.client.log_text(self.parent_id, text, name)

    def end(self, status: str = "FINISHED") -> None:
        """Store what the UI says about the study (computed by ``describe``, if handed one),
        then end the parent."""
        try:
            if self.describe is not None:
                notes = self.describe(self.client, self.experiment_id, self.parent_id, self.study)
                store_study_notes(self.client, self.experiment_id, self.parent_id, notes)
        except Exception as e:  # the description is a view: never fail the sweep over it
            import sys

            print(f"protolab: could not write the study's MLflow notes: {e}", file=sys.stderr)
        self.client.set_terminated(self.parent_id, status=status)

    def sync(self) -> None:
        """Every write was made as it was called: nothing to wait for."""

    def checkpoint(self) -> None:
        """A local SQLite store whole in its ``.db`` file (see ``_stores.checkpoint_wal``)."""
        if self.uri.startswith("sqlite:///"):
            checkpoint_wal(Path(self.uri.removeprefix("sqlite:///")))

    def _id_tag(self) -> dict[str, str]:
        return {TAG.STUDY_ID: self.study_id} if self.study_id else {}

    def _running(self, trial: int | None = None) -> list[Any]:
        """This study's child runs still RUNNING (of one trial, or of every trial)."""
        where = f"tags.`{TAG.STUDY}` = '{quote(self.study)}' and attributes.status = 'RUNNING'"
        if self.study_id:
            where += f" and tags.`{TAG.STUDY_ID}` = '{self.study_id}'"
        if trial is not None:
            where += f" and tags.`{TAG.TRIAL}` = '{trial}'"
        found: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=where, max_results=1000, page_token=token
            )
            found += list(page)
            token = page.token
            if not token:
                return found

    def fail_running_children(self, trial: int, reason: str) -> None:
        """End trial ``trial``'s runs still RUNNING (their worker died) as FAILED."""
        for r in self._running(trial):
            ChildRun(self.client, r.info.run_id).end("FAIL", reason)

    def end_finished(self, trials: Mapping[int, tuple[str, str]]) -> None:
        """End the runs still RUNNING of trials the study store says finished, in the state
        it recorded (``{number: (state, reason)}``): their own end was a write that failed
        (a full disk), or the process died between its tell and its runs' ends."""
        for r in self._running():
            number = str(r.data.tags.get(TAG.TRIAL, ""))
            if number.isdigit() and int(number) in trials:
                state, reason = trials[int(number)]
                ChildRun(self.client, r.info.run_id).end(state, reason)


class ChildRun:
    """One trial on one backend: buffered metrics, tags, artifacts, a terminal status."""

    def __init__(self, client: Any, run_id: str, artifact_uri: str = "") -> None:
        self.client = client
        self.run_id = run_id
        self.artifact_uri = artifact_uri  # a local one is written directly (log_texts)
        self._pending: list[Any] = []  # metrics not yet written
        self._tags: dict[str, str] = {}  # tags not yet written: they go with the next batch
        self._last_flush = time.monotonic()
        self.ended = False

    def log_metrics(
        self, metrics: Mapping[str, float], step: int = 0, at_ms: int | None = None
    ) -> None:
        """Buffered; written at most every few seconds (at a call) and at :meth:`end`.
        ``at_ms``: when they were measured (the writer process gets them later), else now."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000) if at_ms is None else at_ms
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush > _FLUSH_EVERY_S:
            self.flush()

    def log_held(self, held: Held) -> None:
        """What a writer process's caller held back (:class:`Held`), in the order logged."""
        for metrics, step, at_ms in held.metrics:
            self.log_metrics(metrics, step, at_ms)
        self.set_tags(held.tags)

    def flush(self) -> None:
        """Write buffered metrics and tags: one ``log_batch`` call per 1000 metrics."""
        from mlflow.entities import RunTag

        tags = [RunTag(k, v) for k, v in self._tags.items()]
        self._tags = {}
        while self._pending or tags:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            room = min(_MAX_TAGS, _MAX_BATCH - len(batch))
            now, tags = tags[:room], tags[room:]
            self.client.log_batch(self.run_id, metrics=batch, tags=now)
        self._last_flush = time.monotonic()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Buffered like metrics: written with the next flush (at the latest, at ``end``)."""
        self._tags.update({k: redact(str(v)) for k, v in tags.items()})

    def log_texts(self, texts: Mapping[str, str]) -> None:
        """Several text artifacts (``{path: text}``) in one upload rather than one each.

        A local artifact root (``file:``, beside a SQLite store) is written in place, as
        MLflow's local repository would copy them: ``log_artifacts`` first reads the run
        back to find that root (a store query per child run, ~15-35 ms of the writer's).
        """
        import tempfile

        local = _local_dir(self.artifact_uri)
        if local is not None:
            for name, text in texts.items():
                path = local / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(redact(text))
            return
        with tempfile.TemporaryDirectory(prefix="protolab-artifacts-") as tmp:
            for name, text in texts.items():
                path = Path(tmp, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(redact(text))
            self.client.log_artifacts(self.run_id, tmp)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, redact(text), name)

    def call(self, fn: Callable[..., None], *args: object) -> None:
        """``fn(client, run_id, *args)``, here and now (the writer process's runs queue it)."""
        fn(self.client, self.run_id, *args)

    def end(self, state: str, reason: str = "") -> None:
        """Close the run: COMPLETE/PRUNED -> FINISHED, FAIL -> FAILED, INTERRUPTED -> KILLED.

        The state tags, last metrics and tags go in one batch, then the status: two calls.
        """
        if self.ended:
            return
        tags = {TAG.STATE: state}
        if reason:
            tags[TAG.FAIL_REASON] = reason[:500]
        self.set_tags(tags)
        self.flush()
        status = {"FAIL": "FAILED", "INTERRUPTED": "KILLED"}.get(state, "FINISHED")
        self.client.set_terminated(self.run_id, status=status)
        self.ended = True


def _local_dir(artifact_uri: str) -> Path | None:
    """The folder of a ``file:`` artifact URI; None for any other scheme."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(artifact_uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(parsed.path))
