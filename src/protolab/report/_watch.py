"""The report's watch section: each ``protolab watch`` session, one row per script version.

A watch session reruns a short job on every save; its runs (:mod:`._watch_runs`) record the
script and config hash each rerun ran. This section answers "did my edit help?" across the
session: the reruns are grouped into versions exactly as the sweep's trials are
(:mod:`._versions`: the script hash, or ``script/config`` once the session's reruns ran with
different experiment settings; budget-only config changes do not count), numbered ``v1,
v2, ...`` in the order of their first rerun. An edit undone is the same version again.

Per version and mode:

- **last**: ``val/loss`` and the session's metric (``val/acc``, ...) of the version's latest
  rerun; **median** over all its reruns (COMPLETE runs only);
- **Δ**: last minus the last of the previous version that has a value (the change the
  edit made, as the watch's own ``vs wN`` lines show it per rerun);
- **first loss**: ``watch/save_to_first_loss_s``, the median seconds from the save to the end
  of the mode's first epoch. Rerun ``w1`` starts the session rather than follows a save, so
  it is left out; modes run in turn, so a later mode's time includes the earlier modes' jobs.

Reruns whose script or config failed to load record no script hash (and one whose build
failed records no config hash): they belong to no version and are listed in the notes with
their reason. Sessions without a rerun are left out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protolab.report._modes import mode_order
from protolab.report._versions import (
    VersionKey,
    changes_from,
    config_split_note,
    group_by_version,
    same_settings,
    splits_by_config,
    version_key,
    version_label,
)
from protolab.report._watch_runs import WatchRun, WatchRuns, WatchSessionRun

__all__ = [
    "FIRST_LOSS",
    "LOSS",
    "Stat",
    "WatchMode",
    "WatchSession",
    "WatchVersion",
    "summarize_watch",
    "watch_json",
]

LOSS = "val/loss"
FIRST_LOSS = "watch/save_to_first_loss_s"  # logged by the watch at step 0 of each mode's run
_FAILED = ("FAIL", "INTERRUPTED")


@dataclass(frozen=True)
class Stat:
    """One metric of one mode over a version's reruns."""

    last: float | None  # the version's latest rerun that logged it
    median: float | None  # over the version's reruns
    delta: float | None = None  # last - the previous version's last


@dataclass(frozen=True)
class WatchMode:
    """One mode's short jobs within one version."""

    runs: int  # COMPLETE runs
    failed: int  # FAIL or INTERRUPTED runs
    values: Mapping[str, Stat]  # val/loss and the session's metric
    first_loss_s: float | None  # median save -> end of the first epoch (w1 left out)


@dataclass(frozen=True)
class WatchVersion:
    """The reruns one script (and config) version ran within a watch session."""

    index: int  # 1-based, in the order of the version's first rerun
    label: str  # script[:8] or script[:8]/config[:8]
    script_hash: str
    config_hash: str  # "" when the session is split by script only
    reruns: tuple[int, ...]  # rerun numbers (the N of wN), ascending
    failed_runs: int  # runs of these reruns that failed (a mode, or the build)
    modes: Mapping[str, WatchMode]  # backend -> its numbers, in the session's mode order
    config_changes: tuple[str, ...] = ()  # settings that differ from the previous version's

    @property
    def name(self) -> str:
        return f"v{self.index}"


@dataclass(frozen=True)
class WatchSession:
    """One watch session, summarised: its versions and what did not load."""

    name: str
    run_id: str
    status: str  # the parent run's MLflow status (RUNNING: still watching)
    job: str  # "epochs=1 steps=3", when recorded
    metric: str  # the metric its reruns recorded
    maximize: bool | None  # the study's direction, when the metric is the study's
    backends: tuple[str, ...]  # modes that ran, in the report's mode order
    split_by: str  # "script" | "script+config"
    versions: tuple[WatchVersion, ...]
    unversioned: tuple[WatchRun, ...] = ()  # wN-failed runs that name no version (_unversioned)
    notes: tuple[str, ...] = ()

    @property
    def value_names(self) -> tuple[str, ...]:
        """``val/loss`` then the metric (once, when the metric is the loss)."""
        return tuple(dict.fromkeys((LOSS, self.metric)))

    @property
    def rerun_numbers(self) -> tuple[int, ...]:
        """Every rerun that wrote a run, loaded or not."""
        numbers = {n for v in self.versions for n in v.reruns} | {r.rerun for r in self.unversioned}
        return tuple(sorted(numbers))

    @property
    def first_loss_logged(self) -> bool:
        return any(m.first_loss_s is not None for v in self.versions for m in v.modes.values())


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _mode(
    runs: Sequence[WatchRun],
    names: Sequence[str],
    previous: Mapping[str, float],
) -> WatchMode:
    """One mode's numbers in one version; ``previous``: metric -> the version before's last.

    ``runs`` are in rerun order, so the last finite value is the latest rerun's.
    """
    done = [r for r in runs if r.state == "COMPLETE"]
    values = {}
    for k in names:
        series = [r.metrics[k] for r in done if _finite(r.metrics.get(k))]
        last = series[-1] if series else None
        before = previous.get(k)
        delta = None if last is None or before is None else last - before
        values[k] = Stat(last, _median(series), delta)
    first = [
        r.metrics[FIRST_LOSS] for r in done if r.rerun > 1 and _finite(r.metrics.get(FIRST_LOSS))
    ]
    return WatchMode(
        runs=len(done),
        failed=sum(1 for r in runs if r.state in _FAILED),
        values=values,
        first_loss_s=_median(first),
    )


def _versions(
    groups: Mapping[VersionKey, Sequence[WatchRun]],
    backends: Sequence[str],
    names: Sequence[str],
    configs: Mapping[str, Mapping[str, Any] | None],
    with_config: bool,
) -> list[WatchVersion]:
    """One :class:`WatchVersion` per group, each mode compared with the version before.

    "Before", per mode and metric, is the latest earlier version that has a value, so a
    version whose mode failed does not hide the change the next edit made.
    """
    previous: dict[str, dict[str, float]] = {b: {} for b in backends}
    previous_config: Mapping[str, Any] | None = None
    out = []
    for i, ((script, config), members) in enumerate(groups.items(), start=1):
        modes = {}
        for b in backends:
            mine = [r for r in members if r.backend == b]
            if mine:
                modes[b] = _mode(mine, names, previous[b])
                previous[b].update(
                    {k: s.last for k, s in modes[b].values.items() if s.last is not None}
                )
        doc = configs.get(config) if config else None
        changed = changes_from(previous_config, doc, with_config)
        if doc is not None:
            previous_config = doc
        out.append(
            WatchVersion(
                index=i,
                label=version_label(script, config, with_config),
                script_hash=script,
                config_hash=config,
                reruns=tuple(sorted({r.rerun for r in members})),
                failed_runs=sum(1 for r in members if r.state in _FAILED),
                modes=modes,
                config_changes=tuple(changed),
            )
        )
    return out


def _notes(
    session: WatchSessionRun,
    versions: Sequence[WatchVersion],
    with_config: bool,
    unversioned: Sequence[WatchRun],
) -> list[str]:
    """What the table's labels mean, which reruns are not in it, and whether it is complete."""
    notes = []
    if with_config:
        notes.append(config_split_note("reruns"))
        notes += [
            f"{v.name} config: {', '.join(v.config_changes)}" for v in versions if v.config_changes
        ]
    for r in unversioned:
        reason = r.fail_reason.splitlines()[0][:200] if r.fail_reason else "no reason recorded"
        script = f" (script {r.script_hash[:8]})" if r.script_hash else ""
        notes.append(f"w{r.rerun} failed before training{script}: {reason}")
    if session.status == "RUNNING":
        notes.append("the session is still watching: later reruns are not in this report")
    return notes


def _unversioned(run: WatchRun, with_config: bool) -> bool:
    """A ``wN-failed`` run that names no version: no script loaded, or (when versions are
    script/config) no config recorded, as a build that failed after loading leaves it.

    Such a rerun is listed in the notes rather than made a ``script/?`` version of its own.
    """
    return not run.backend and (not run.script_hash or (with_config and not run.config_hash))


def _session(
    session: WatchSessionRun,
    runs: Sequence[WatchRun],
    study_metric: str,
    maximize: bool,
    configs: Mapping[str, Mapping[str, Any] | None],
) -> WatchSession | None:
    """One session's versions; None when it wrote no rerun (stopped before the first)."""
    if not runs:
        return None
    metric = next((r.metric for r in runs if r.metric), study_metric)
    same = same_settings((r.config_hash for r in runs), configs)
    with_config = splits_by_config(runs, same)
    unversioned = [r for r in runs if _unversioned(r, with_config)]
    versioned = [r for r in runs if not _unversioned(r, with_config)]
    groups = group_by_version(versioned, version_key(same, with_config))
    backends = tuple(mode_order(r for r in versioned if r.backend))
    names = tuple(dict.fromkeys((LOSS, metric)))
    versions = _versions(groups, backends, names, configs, with_config)
    return WatchSession(
        name=session.name,
        run_id=session.run_id,
        status=session.status,
        job=session.job,
        metric=metric,
        maximize=maximize if metric == study_metric else None,
        backends=backends,
        split_by="script+config" if with_config else "script",
        versions=tuple(versions),
        unversioned=tuple(unversioned),
        notes=tuple(_notes(session, versions, with_config, unversioned)),
    )


def summarize_watch(
    watch: WatchRuns,
    metric: str,
    maximize: bool,
    configs: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> list[WatchSession]:
    """Every watch session with a rerun, oldest first; see the module docstring.

    ``metric``/``maximize`` are the study's: a session that recorded the same metric is
    compared in the study's direction. ``configs`` maps config hashes to resolved configs
    (as :func:`protolab.report._versions.split_by_version` takes them).
    """
    found = (_session(s, watch.of(s.name), metric, maximize, configs or {}) for s in watch.sessions)
    return [s for s in found if s is not None]


def _stat_json(s: Stat) -> dict[str, float | None]:
    return {"last": s.last, "median": s.median, "delta": s.delta}


def _mode_json(m: WatchMode) -> dict[str, Any]:
    return {
        "runs": m.runs,
        "failed": m.failed,
        "metrics": {k: _stat_json(s) for k, s in m.values.items()},
        "save_to_first_loss_s": m.first_loss_s,
    }


def _version_json(v: WatchVersion) -> dict[str, Any]:
    return {
        "version": v.name,
        "label": v.label,
        "script_hash": v.script_hash or None,
        "config_hash": v.config_hash or None,
        "config_changes": list(v.config_changes),
        "reruns": len(v.reruns),
        "rerun_numbers": list(v.reruns),
        "failed_runs": v.failed_runs,
        "backends": {b: _mode_json(m) for b, m in v.modes.items()},
    }


def _direction(maximize: bool | None) -> str | None:
    return None if maximize is None else "maximize" if maximize else "minimize"


def watch_json(sessions: Sequence[WatchSession]) -> dict[str, Any]:
    """``report.json``'s ``watch`` section: every number the watch tables show, unrounded."""
    return {
        "sessions": [
            {
                "session": s.name,
                "run_id": s.run_id or None,
                "status": s.status,
                "job": s.job or None,
                "metric": s.metric,
                "direction": _direction(s.maximize),
                "backends": list(s.backends),
                "split_by": s.split_by,
                "reruns": len(s.rerun_numbers),
                "versions": [_version_json(v) for v in s.versions],
                "failed_before_training": [
                    {"rerun": r.rerun, "run": r.name, "reason": r.fail_reason}
                    for r in s.unversioned
                ],
                "notes": list(s.notes),
            }
            for s in sessions
        ]
    }
