"""Trials split by the script (and config) version that ran them: before/after an edit.

Every trial records which experiment script and resolved config produced it: its MLflow
child runs carry the tags ``protolab.script_hash`` and ``protolab.config_hash`` and the
Optuna trial the user attr ``protolab.script_hash``. The tags win (every run has them); the
user attr fills in for a trial with no run. A trial with neither is *unrecorded*.

What a version is
-----------------
- The **script hash** alone, while every trial ran with the same experiment settings.
- ``script[:8]/config[:8]`` as soon as the trials ran with different experiment settings
  (an edit of the YAML, or another override of a setting), so such a change is a version of
  its own too, and the section names the settings that changed.

The config hash covers the whole resolved config, the sweep's budget included, so topping a
study up (``study.n_trials=50``) gives a new hash. Settings that only steer the sweep and do
not change what a trial computes (:data:`RUN_CONTROL`: ``study.n_trials``, ``timeout_s``,
``max_failures``, ``max_retries``, ``storage``, ``tracking``, the script's path) are
therefore ignored: config hashes whose resolved configs (the ``config/resolved.json``
artifact of one of their runs) differ only there count as one config version, labelled
with the first of them. A config that cannot be read counts as a version of its own.

Versions are numbered ``v1, v2, ...`` in the order the study first ran them (by the number
of their first trial). Running a version again after another one (an edit undone) adds its
trials to its existing row: the same code is the same version. The section is shown when
trials ran with more than one recorded version, or when the latest script version a sweep
recorded (study user attr ``protolab.script_hashes``) has not run a trial yet.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from protolab.report._compare import RunRecord
from protolab.report._data import TrialRecord

__all__ = [
    "RUN_CONTROL",
    "UNRECORDED",
    "Version",
    "VersionChange",
    "VersionSplit",
    "config_changes",
    "config_split_note",
    "group_by_version",
    "same_settings",
    "split_by_version",
    "splits_by_config",
    "version_key",
    "version_label",
]

UNRECORDED = "unrecorded"  # label of trials that recorded no script hash

# Resolved-config keys (dotted prefixes) that steer the sweep, not what a trial computes.
RUN_CONTROL = (
    "experiment",
    "study.n_trials",
    "study.timeout_s",
    "study.max_failures",
    "study.max_retries",
    "study.storage",
    "tracking",
)


@dataclass(frozen=True)
class Version:
    """The trials one script (and config) version ran, and what they achieved."""

    index: int  # 1-based, in the order the study first ran the versions
    label: str  # script[:8], or script[:8]/config[:8]; UNRECORDED without a script hash
    script_hash: str  # "" when unrecorded
    config_hash: str  # "" when split by script only, or not recorded
    trials: tuple[int, ...]  # trial numbers, ascending
    complete: int
    pruned: int
    failed: int
    running: int  # RUNNING or WAITING when the report was made
    best_value: float | None
    best_trial: int | None
    median_value: float | None  # over its complete trials
    step_ms: Mapping[str, float] = field(default_factory=dict)  # backend -> median step ms
    delta_best: float | None = None  # best_value - the previous recorded version's best
    config_hashes: tuple[str, ...] = ()  # every config hash its trials ran with
    config_changes: tuple[str, ...] = ()  # settings that differ from the previous version's

    @property
    def name(self) -> str:
        return f"v{self.index}"

    @property
    def recorded(self) -> bool:
        return bool(self.script_hash)


@dataclass(frozen=True)
class VersionChange:
    """Where, in trial-number order, the trials switch to another version."""

    trial: int  # the first trial of the new stretch
    version: Version


@dataclass(frozen=True)
class VersionSplit:
    """The study's trials per version, the places where the version changed, and notes."""

    split_by: str  # "script" | "script+config"
    versions: tuple[Version, ...]
    changes: tuple[VersionChange, ...]
    pending_script: str | None = None  # latest recorded script hash with no trial yet
    notes: tuple[str, ...] = ()
    _by_trial: Mapping[int, Version] = field(default_factory=dict, repr=False, compare=False)

    @property
    def shown(self) -> bool:
        """More than one recorded version ran, or the latest edit has not run yet."""
        recorded = sum(1 for v in self.versions if v.recorded)
        return recorded > 1 or (self.pending_script is not None and recorded > 0)

    def version_of(self, trial: int) -> Version | None:
        return self._by_trial.get(trial)


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _settings(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config as dotted keys, without the :data:`RUN_CONTROL` ones."""
    return {
        k: v
        for k, v in _flatten(doc).items()
        if not any(k == p or k.startswith(p + ".") for p in RUN_CONTROL)
    }


def _show(v: object) -> str:
    return "-" if v is None else json.dumps(v) if isinstance(v, (list, dict, str)) else str(v)


def changes_from(
    previous: Mapping[str, Any] | None, doc: Mapping[str, Any] | None, with_config: bool
) -> list[str]:
    """What changed since the previous version's config; nothing when either is unknown."""
    if with_config and doc is not None and previous is not None:
        return config_changes(previous, doc)
    return []


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``train.epochs 2 -> 5`` for each setting that differs (run-control keys ignored)."""
    a, b = _settings(old), _settings(new)
    return [
        f"{k} {_show(a.get(k))} -> {_show(b.get(k))}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


class Hashed(Protocol):
    """Anything that records the script and config versions that produced it (a trial, a rerun)."""

    @property
    def script_hash(self) -> str: ...

    @property
    def config_hash(self) -> str: ...


H = TypeVar("H", bound=Hashed)
VersionKey = tuple[str, str]  # (script hash, config hash or "" when split by script only)


def same_settings(
    hashes: Iterable[str], configs: Mapping[str, Mapping[str, Any] | None]
) -> dict[str, str]:
    """Each config hash -> the first hash (in the order given) with the same experiment settings.

    A config hash covers the sweep's budget too, so a top-up (``study.n_trials=50``) would
    otherwise read as an edit: hashes whose resolved configs differ only in
    :data:`RUN_CONTROL` keys map to one. A hash without a readable config maps to itself.
    """
    same: dict[str, str] = {}
    first_of: dict[str, str] = {}
    for h in hashes:
        if h and h not in same:
            doc = configs.get(h)
            canon = f"hash:{h}" if doc is None else json.dumps(_settings(doc), sort_keys=True)
            same[h] = first_of.setdefault(canon, h)
    return same


def splits_by_config(items: Iterable[Hashed], same: Mapping[str, str]) -> bool:
    """Whether the recorded items ran with more than one set of experiment settings.

    Only then does the config join the version key, so a study (or watch session) that never
    changed its settings keeps the shorter script-only labels.
    """
    return len({same[i.config_hash] for i in items if i.script_hash and i.config_hash}) > 1


def version_key(same: Mapping[str, str], with_config: bool) -> Callable[[Hashed], VersionKey]:
    """The function naming an item's version: ``(script, config or "")``; ``("", "")`` unrecorded.

    One function serves grouping and finding where the version changes, so the two can never
    disagree about what a version is.
    """

    def key(item: Hashed) -> VersionKey:
        if not item.script_hash:
            return ("", "")
        return (item.script_hash, same.get(item.config_hash, "") if with_config else "")

    return key


def group_by_version(
    ordered: Iterable[H], key: Callable[[Hashed], VersionKey]
) -> dict[VersionKey, list[H]]:
    """The items per version; the dict's order is the order of each version's first item."""
    groups: dict[VersionKey, list[H]] = {}
    for item in ordered:
        groups.setdefault(key(item), []).append(item)
    return groups


def version_label(script: str, config: str, with_config: bool) -> str:
    """``script[:8]``, or ``script[:8]/config[:8]`` when split by config; :data:`UNRECORDED`."""
    if not script:
        return UNRECORDED
    return f"{script[:8]}/{config[:8] or '?'}" if with_config else script[:8]


def config_split_note(what: str) -> str:
    """Why the labels carry a config hash (``what``: "trials", "reruns"): one note per table."""
    return (
        f"version = script hash / config hash: the {what} ran with different experiment "
        "settings (the YAML or its overrides; study.n_trials and other sweep-budget keys "
        "do not count)"
    )


def _step_ms_by_trial(runs: Sequence[RunRecord]) -> dict[int, dict[str, float]]:
    """Trial -> backend -> time/step_ms of its COMPLETE runs (what the ms/step columns show)."""
    step_ms: dict[int, dict[str, float]] = {}
    for r in runs:
        ms = r.metrics.get("time/step_ms")
        if r.state == "COMPLETE" and _finite(ms):
            assert ms is not None
            step_ms.setdefault(r.trial, {})[r.backend] = ms
    return step_ms


@dataclass(frozen=True)
class _Outcome:
    """What one version's trials achieved: counts by state, best and median value."""

    complete: int
    pruned: int
    failed: int
    running: int
    best_value: float | None
    best_trial: int | None
    median_value: float | None

    @classmethod
    def of(cls, members: Sequence[TrialRecord], maximize: bool) -> _Outcome:
        """Counted once here so the versions table and report.json agree on every number."""
        states = [t.state for t in members]
        done = [t for t in members if t.state == "COMPLETE" and _finite(t.value)]
        values = [float(t.value) for t in done if t.value is not None]
        best = (max if maximize else min)(done, key=lambda t: float(t.value or 0.0), default=None)
        return cls(
            complete=states.count("COMPLETE"),
            pruned=states.count("PRUNED"),
            failed=states.count("FAIL"),
            running=sum(1 for s in states if s in ("RUNNING", "WAITING")),
            best_value=None if best is None else best.value,
            best_trial=None if best is None else best.number,
            median_value=statistics.median(values) if values else None,
        )


def _median_step_ms(
    members: Sequence[TrialRecord],
    step_ms: Mapping[int, Mapping[str, float]],
    backends: Sequence[str],
) -> dict[str, float]:
    """Backend -> median step time over the version's trials (backends with none left out)."""
    out: dict[str, float] = {}
    for b in backends:
        times = [step_ms[t.number][b] for t in members if b in step_ms.get(t.number, {})]
        if times:
            out[b] = statistics.median(times)
    return out


def _build_versions(
    groups: Mapping[VersionKey, Sequence[TrialRecord]],
    runs: Sequence[RunRecord],
    backends: Sequence[str],
    maximize: bool,
    configs: Mapping[str, Mapping[str, Any] | None],
    with_config: bool,
) -> list[Version]:
    """One :class:`Version` per group, in order, each compared with the recorded one before.

    "Before" skips unrecorded versions and ones with no best value (nothing to compare) and,
    for the config changes, ones whose config could not be read.
    """
    step_ms = _step_ms_by_trial(runs)
    versions: list[Version] = []
    previous_best: float | None = None
    previous_config: Mapping[str, Any] | None = None
    for i, ((script, config), members) in enumerate(groups.items(), start=1):
        outcome = _Outcome.of(members, maximize)
        delta = None
        if script and outcome.best_value is not None and previous_best is not None:
            delta = outcome.best_value - previous_best
        doc = configs.get(config) if config else None
        changed = changes_from(previous_config, doc, with_config)
        versions.append(
            Version(
                index=i,
                label=version_label(script, config, with_config),
                script_hash=script,
                config_hash=config,
                trials=tuple(t.number for t in members),
                complete=outcome.complete,
                pruned=outcome.pruned,
                failed=outcome.failed,
                running=outcome.running,
                best_value=outcome.best_value,
                best_trial=outcome.best_trial,
                median_value=outcome.median_value,
                step_ms=_median_step_ms(members, step_ms, backends),
                delta_best=delta,
                config_hashes=tuple(dict.fromkeys(t.config_hash for t in members if t.config_hash)),
                config_changes=tuple(changed),
            )
        )
        if script and outcome.best_value is not None:
            previous_best = outcome.best_value
        if script and doc is not None:
            previous_config = doc
    return versions


def _changes(
    ordered: Sequence[TrialRecord],
    key: Callable[[Hashed], VersionKey],
    by_key: Mapping[VersionKey, Version],
) -> list[VersionChange]:
    """Each trial (in number order) whose version differs from the trial before it."""
    changes: list[VersionChange] = []
    last: VersionKey | None = None
    for t in ordered:
        k = key(t)
        if last is not None and k != last:
            changes.append(VersionChange(t.number, by_key[k]))
        last = k
    return changes


def _pending_script(trials: Sequence[TrialRecord], script_hashes: Sequence[str]) -> str | None:
    """The latest script a sweep recorded, when no trial ran it yet (the budget was used up)."""
    ran = {t.script_hash for t in trials}
    latest = script_hashes[-1] if script_hashes else ""
    return latest if latest and ran and latest not in ran else None


def _notes(versions: Sequence[Version], with_config: bool, pending: str | None) -> list[str]:
    """The lines under the versions table that explain its labels and any pending edit."""
    notes = []
    if with_config:
        notes.append(config_split_note("trials"))
        notes += [
            f"{v.name} config: {', '.join(v.config_changes)}" for v in versions if v.config_changes
        ]
    if any(not v.recorded for v in versions):
        notes.append(f"{UNRECORDED}: trials that recorded no script hash (an older protolab)")
    if pending is not None:
        notes.append(
            f"script version {pending[:8]}, the latest a sweep recorded, has no trial yet: "
            "the study already had study.n_trials finished trials (raise it to run the edit)"
        )
    return notes


def split_by_version(
    trials: Sequence[TrialRecord],
    runs: Sequence[RunRecord],
    backends: Sequence[str],
    maximize: bool,
    script_hashes: Sequence[str] = (),
    configs: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> VersionSplit:
    """Group ``trials`` by version; see the module docstring for what a version is.

    ``configs`` maps a config hash to its resolved config (``None``: not readable); without
    it every config hash counts as its own config version.
    """
    configs = configs or {}
    ordered = sorted(trials, key=lambda t: t.number)
    same = same_settings((t.config_hash for t in ordered), configs)
    with_config = splits_by_config(trials, same)
    key = version_key(same, with_config)
    groups = group_by_version(ordered, key)
    versions = _build_versions(groups, runs, backends, maximize, configs, with_config)
    by_key = dict(zip(groups, versions, strict=True))
    pending = _pending_script(trials, script_hashes)
    return VersionSplit(
        split_by="script+config" if with_config else "script",
        versions=tuple(versions),
        changes=tuple(_changes(ordered, key, by_key)),
        pending_script=pending,
        notes=tuple(_notes(versions, with_config, pending)),
        _by_trial={t.number: by_key[key(t)] for t in trials},
    )
