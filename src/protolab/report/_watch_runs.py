"""The runs a ``protolab watch`` session wrote, read back from the study's MLflow experiment.

A session is a parent run tagged ``TAG.ROLE = "watch"`` and ``TAG.WATCH = <session>``; each
rerun ``wN`` is one child run per mode (``wN-<mode>``, with the mode's tags, the script and
config hashes and the metrics of its short job) or one ``wN-failed`` run when the script,
config or build failed before any mode trained. Their trial tag is ``wN``, not a number, so
:func:`protolab.report._data.records_from_mlflow` never counts them as sweep trials: they
are read here, on their own, for the report's watch section.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protolab._tags import TAG

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = ["WatchRun", "WatchRuns", "WatchSessionRun", "rerun_number", "watch_from_mlflow"]

WATCH_ROLE = "watch"  # TAG.ROLE of a session's own parent run


@dataclass(frozen=True)
class WatchSessionRun:
    """A watch session's parent run: its name, status and what it was told to run."""

    name: str  # TAG.WATCH, e.g. watch-20250101-120000
    run_id: str  # "" when the parent is gone but its reruns are not
    status: str  # MLflow status: RUNNING while the session is on, FINISHED after Ctrl-C
    start_time: int  # ms since the epoch
    backends: tuple[str, ...] = ()  # TAG.WATCH_BACKENDS: the configured modes, in order
    job: str = ""  # TAG.WATCH_JOB: "epochs=1 steps=3"


@dataclass(frozen=True)
class WatchRun:
    """One run of a rerun: one mode's short job, or the rerun's failed load (no mode)."""

    run_id: str
    name: str  # wN-<mode> or wN-failed
    session: str  # TAG.WATCH
    rerun: int  # the N of wN, counted from 1 in each session (w1: the session's start)
    backend: str  # TAG.BACKEND; "" for a wN-failed run
    family: str
    eager: bool
    state: str  # TAG.STATE: COMPLETE | FAIL | INTERRUPTED; RUNNING while still written
    script_hash: str  # "" when the script did not load
    config_hash: str
    metric: str  # TAG.METRIC: the study's metric when the rerun ran
    metrics: Mapping[str, float] = field(default_factory=dict)  # last value of each
    fail_reason: str = ""
    start_time: int = 0


@dataclass(frozen=True)
class WatchRuns:
    """Every watch session of the experiment (by start) and every rerun run (by rerun)."""

    sessions: tuple[WatchSessionRun, ...] = ()
    runs: tuple[WatchRun, ...] = ()

    def of(self, session: str) -> list[WatchRun]:
        return [r for r in self.runs if r.session == session]


def rerun_number(trial_tag: str) -> int | None:
    """``w3`` -> 3; None for anything else (a sweep trial's number, ``best``, ``run``)."""
    digits = trial_tag.removeprefix("w")
    return int(digits) if trial_tag.startswith("w") and digits.isdigit() else None


def _session_run(run: Run) -> WatchSessionRun:
    tags = run.data.tags
    backends = tags.get(TAG.WATCH_BACKENDS, "")
    return WatchSessionRun(
        name=tags[TAG.WATCH],
        run_id=run.info.run_id,
        status=str(run.info.status),
        start_time=int(run.info.start_time or 0),
        backends=tuple(b for b in backends.split(",") if b),
        job=tags.get(TAG.WATCH_JOB, ""),
    )


def _watch_run(run: Run, number: int) -> WatchRun:
    tags = run.data.tags
    status = str(run.info.status)
    state = tags.get(TAG.STATE) or {"FAILED": "FAIL", "KILLED": "INTERRUPTED"}.get(status, status)
    return WatchRun(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        session=tags[TAG.WATCH],
        rerun=number,
        backend=tags.get(TAG.BACKEND, ""),
        family=tags.get(TAG.FAMILY, ""),
        eager=tags.get(TAG.EAGER, "") == "true",
        state=state,
        script_hash=tags.get(TAG.SCRIPT_HASH, ""),
        config_hash=tags.get(TAG.CONFIG_HASH, ""),
        metric=tags.get(TAG.METRIC, ""),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        fail_reason=tags.get(TAG.FAIL_REASON, ""),
        start_time=int(run.info.start_time or 0),
    )


def watch_from_mlflow(runs: Iterable[Run]) -> WatchRuns:
    """The watch sessions and rerun runs among MLflow ``runs``; everything else is skipped.

    A session whose parent was deleted still shows (named by its reruns' tag), so a rerun is
    never silently dropped from the report.
    """
    parents: dict[str, WatchSessionRun] = {}
    reruns: list[WatchRun] = []
    for run in runs:
        tags = run.data.tags
        if TAG.WATCH not in tags:
            continue
        if tags.get(TAG.ROLE) == WATCH_ROLE:
            parents[tags[TAG.WATCH]] = _session_run(run)
        elif (number := rerun_number(tags.get(TAG.TRIAL, ""))) is not None:
            reruns.append(_watch_run(run, number))
    for r in sorted(reruns, key=lambda r: r.start_time):  # the earliest names it
        parents.setdefault(r.session, WatchSessionRun(r.session, "", "", r.start_time))
    sessions = sorted(parents.values(), key=lambda s: (s.start_time, s.name))
    ordered = sorted(reruns, key=lambda r: (r.session, r.rerun, r.start_time, r.backend))
    return WatchRuns(tuple(sessions), tuple(ordered))
