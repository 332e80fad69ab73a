"""Read a study back from its two stores: Optuna (trials, values) and MLflow (per-backend runs).

The report only reads. A target that names no existing study is a :class:`ConfigError`
(exit 2) listing the studies that do exist, and looking for it never creates a store file:
a mistyped name must not leave an empty ``mlruns/`` behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from protolab._tags import ATTR, TAG
from protolab.errors import ConfigError, StorageError
from protolab.report._compare import CACHE_TAG, RunRecord
from protolab.report._modes import mode_order
from protolab.report._watch_runs import WatchRuns, watch_from_mlflow

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient
    from optuna import Study
    from optuna.trial import FrozenTrial

__all__ = [
    "Objective",
    "ReportData",
    "ScoredRun",
    "Source",
    "TrialRecord",
    "load_report_data",
    "objective_importances",
    "param_importances",
    "records_from_mlflow",
    "resolve_source",
]


@dataclass(frozen=True)
class Source:
    """Where a study lives: its name, MLflow experiment and the two store URLs."""

    study: str
    tracking_uri: str
    storage: str | None  # None: the default journal under ./mlruns
    experiment: str | None = None  # MLflow experiment name; None: the study name
    config: Path | None = None


@dataclass(frozen=True)
class Objective:
    """One thing the study optimises: a metric and its direction."""

    metric: str
    direction: str  # maximize | minimize

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


@dataclass(frozen=True)
class TrialRecord:
    """One Optuna trial with the per-backend numbers the tables show.

    ``value`` is the (first) objective's value; ``values`` holds one per objective.
    ``constraints`` are Optuna's constraint values (``trial.constraints``): the trial is
    feasible when every one is <= 0, and a trial without constraints is feasible.
    """

    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    value: float | None
    params: Mapping[str, Any]
    backends: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    script_hash: str = ""  # which script version ran it; "" when not recorded
    config_hash: str = ""  # which resolved config ran it; "" when not recorded
    values: tuple[float, ...] | None = None  # one per objective; None until complete
    constraints: Mapping[str, float] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())


@dataclass(frozen=True)
class ScoredRun:
    """A ``protolab run`` (``--best``, ``--params``) run that scored the test split.

    Sweep trials never score it (they select on validation), so test metrics come only from
    these runs; :meth:`matches` ties one to a trial by its sampled values.
    """

    backend: str
    params: Mapping[str, str]  # MLflow params (strings)
    metrics: Mapping[str, float]  # the test/* metrics only
    start_time: int = 0

    def matches(self, trial: TrialRecord) -> bool:
        """Ran with exactly ``trial``'s sampled values (compared as MLflow logs them)."""
        return bool(trial.params) and all(
            self.params.get(k) == str(v) for k, v in trial.params.items()
        )


@dataclass
class ReportData:
    """Everything the report shows, read once from the stores."""

    source: Source
    metric: str
    direction: str  # maximize | minimize
    trials: list[TrialRecord]
    runs: list[RunRecord]
    backends: list[str]  # dynamic family first
    experiment_id: str | None = None
    parent_run_id: str | None = None
    client: MlflowClient | None = None  # None when the study has no MLflow experiment
    study: Study | None = None  # the optuna Study (for importances)
    # The versions the study's sweeps ran with, oldest first (study user attrs).
    script_hashes: list[str] = field(default_factory=list)
    config_hashes: list[str] = field(default_factory=list)
    # config hash -> the resolved config a run logged (``config/resolved.json``); read only
    # when the sweep's runs (or, apart, the watch reruns) carry more than one config hash;
    # None where it could not be read.
    configs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    # Every objective, in the study's order (the first is ``metric``/``direction``); empty
    # reads as the single objective ``metric``/``direction``.
    objectives: list[Objective] = field(default_factory=list)
    # Optuna's ``study.best_trials``, in trial order: the feasible Pareto front (the best
    # trial(s) of a single-objective study).
    front: list[int] = field(default_factory=list)
    # ``protolab run`` runs with test/* metrics, oldest first (the test split's numbers).
    scored_runs: list[ScoredRun] = field(default_factory=list)
    # ``protolab watch`` sessions in the study's experiment and their reruns' runs (never
    # sweep trials: they are shown in a section of their own).
    watch: WatchRuns = field(default_factory=WatchRuns)

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def all_objectives(self) -> list[Objective]:
        return self.objectives or [Objective(self.metric, self.direction)]

    @property
    def multi_objective(self) -> bool:
        return len(self.all_objectives) > 1

    @property
    def constraint_names(self) -> list[str]:
        """The constraints the trials recorded (``model/params <= 2000``), first seen first."""
        return list(dict.fromkeys(k for t in self.trials for k in t.constraints))

    @property
    def infeasible(self) -> list[int]:
        """Complete trials that violate a constraint (never on the front)."""
        return [t.number for t in self.complete_trials() if not t.feasible]

    def complete_trials(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]

    def front_trials(self) -> list[TrialRecord]:
        """The front's trials, best first by the first objective (ties by trial number)."""
        on = set(self.front)
        members = [t for t in self.complete_trials() if t.number in on]
        sign = -1.0 if self.maximize else 1.0
        return sorted(members, key=lambda t: (sign * float(t.value or 0.0), t.number))


def _looks_like_config(target: str) -> bool:
    return target.endswith((".yaml", ".yml")) or Path(target).is_file()


def resolve_source(
    target: str, tracking_uri: str | None = None, storage: str | None = None
) -> Source:
    """A study name or a YAML config -> :class:`Source`; explicit URLs win over the config's."""
    from protolab.tracking import default_tracking_uri

    if _looks_like_config(target):
        from protolab.backends import NAMES
        from protolab.config import load_config

        path = Path(target)
        cfg, _ = load_config(path, backends=NAMES)
        assert cfg.study.name is not None  # load_config defaults it to the file stem
        return Source(
            study=cfg.study.name,
            tracking_uri=tracking_uri or cfg.tracking.uri or default_tracking_uri(),
            storage=storage if storage is not None else cfg.study.storage,
            experiment=cfg.tracking.experiment,
            config=path,
        )
    return Source(
        study=target, tracking_uri=tracking_uri or default_tracking_uri(), storage=storage
    )


def _local_file(url: str | None) -> Path | None:
    """The file behind a local store URL (journal or sqlite), to check it exists first."""
    from protolab._stores import default_storage_path

    if url is None:
        return default_storage_path()
    if url.endswith((".journal", ".log")):
        return Path(url.removeprefix("journal://"))
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def _open_study(source: Source) -> Study:
    """The Optuna study, or a ConfigError listing the studies the storage holds."""
    import optuna

    from protolab._stores import describe_storage, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    where = describe_storage(source.storage)
    local = _local_file(source.storage)
    names: list[str] = []
    storage: Any = None
    if local is None or local.is_file():
        storage = open_storage(source.storage)
        names = sorted(optuna.get_all_study_names(storage))
    if source.study not in names:
        if names:
            have = f"studies there: {', '.join(names)}"
        elif storage is None:
            have = "no study store exists there yet; run `protolab sweep CONFIG` first"
        else:
            have = "it holds no study yet; run `protolab sweep CONFIG` first"
        hint = "" if source.config else " (or pass the config file / --storage the sweep used)"
        raise ConfigError(f"unknown study {source.study!r} in {where}; {have}{hint}")
    return optuna.load_study(study_name=source.study, storage=storage)  # found: it is open


def _client(uri: str) -> MlflowClient | None:
    """An MlflowClient for ``uri``; None for a local SQLite file that does not exist."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    if uri.startswith(("http://", "https://")):  # fail in seconds, not minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _experiment_id(client: MlflowClient, source: Source) -> str | None:
    """The study's experiment: by name, else the one tagged with the study (custom names)."""
    found = client.get_experiment_by_name(source.experiment or source.study)
    if found is not None:
        return str(found.experiment_id)
    tagged = client.search_experiments(
        filter_string=f"tags.`{TAG.STUDY}` = '{_quote(source.study)}'", max_results=1
    )
    return str(tagged[0].experiment_id) if tagged else None


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """Every matching run, page by page (a large study has more than one page)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return runs


def _run_record(run: Run) -> RunRecord | None:
    """A sweep trial's child run; None for parents and ``protolab run`` runs (no trial number)."""
    tags = run.data.tags
    trial = tags.get(TAG.TRIAL, "")
    if not trial.isdigit() or TAG.BACKEND not in tags:
        return None
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        trial=int(trial),
        backend=tags[TAG.BACKEND],
        family=tags.get(TAG.FAMILY, ""),
        state=tags.get(TAG.STATE, "FAIL" if run.info.status == "FAILED" else ""),
        pair=tags.get(TAG.PAIR, ""),
        arch_hash=tags.get(TAG.ARCH_HASH, ""),
        cold_start=tags.get(TAG.COLD_START, "") == "true",
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        script_hash=tags.get(TAG.SCRIPT_HASH, ""),
        config_hash=tags.get(TAG.CONFIG_HASH, ""),
        mode=tags.get(TAG.MODE, ""),
        eager=tags.get(TAG.EAGER, "") == "true",
        repeat=tags.get(TAG.REPEAT, ""),
        auto=tags.get(TAG.AUTO, ""),
        env=_env(tags),
        compile_cache=tags.get(CACHE_TAG, ""),
    )


ENV_PREFIX = f"{TAG.PREFIX}env."


def _env(tags: Mapping[str, str]) -> dict[str, str]:
    """Where a run ran: its ``protolab.env.*`` tags (prefix dropped), device, thread counts."""
    out = {k.removeprefix(ENV_PREFIX): v for k, v in tags.items() if k.startswith(ENV_PREFIX)}
    for k, v in tags.items():
        short = k.removeprefix(TAG.PREFIX)
        if k.startswith(TAG.PREFIX) and (short == "device" or short.endswith("_threads")):
            out[short] = v
    return out


EPOCH_STEP_MS = "time/epoch_step_ms"


def _with_epochs(client: MlflowClient, run: RunRecord) -> RunRecord:
    """``run`` with its per-epoch step times (``time/epoch_step_ms``, in epoch order).

    One history call per paired COMPLETE run that logged the metric: only those take part in
    the comparison, and a run without it (an older protolab) costs no call.
    """
    if run.state != "COMPLETE" or not run.pair or EPOCH_STEP_MS not in run.metrics:
        return run
    history = client.get_metric_history(run.run_id, EPOCH_STEP_MS)
    ordered = sorted(history, key=lambda m: (m.step, m.timestamp))
    return replace(run, epoch_step_ms=tuple(float(m.value) for m in ordered))


def scored_runs_from_mlflow(runs: Iterable[Run]) -> list[ScoredRun]:
    """The ``protolab run`` runs (trial tag ``best``/``run``) that logged test/* metrics."""
    out = []
    for run in runs:
        tags = run.data.tags
        test = {k: float(v) for k, v in run.data.metrics.items() if k.startswith("test/")}
        if tags.get(TAG.TRIAL) in ("best", "run") and test and TAG.BACKEND in tags:
            start = int(run.info.start_time or 0)
            out.append(ScoredRun(tags[TAG.BACKEND], dict(run.data.params), test, start))
    return sorted(out, key=lambda r: r.start_time)


def records_from_mlflow(client: MlflowClient, runs: Iterable[Run]) -> list[RunRecord]:
    """The sweep child runs among MLflow ``runs``, as :func:`compare_modes` takes them.

    Parents and ``protolab run`` runs are skipped; paired COMPLETE runs get their per-epoch
    step times (one history call each). Anything showing the comparison (the MLflow notes,
    a notebook) can start here and say the same numbers as ``protolab report``.
    """
    return [_with_epochs(client, r) for r in map(_run_record, runs) if r is not None]


class _Configured(Protocol):
    """A run that logged its resolved config: a sweep trial's run or a watch rerun's."""

    @property
    def run_id(self) -> str: ...

    @property
    def config_hash(self) -> str: ...

    @property
    def state(self) -> str: ...


C = TypeVar("C", bound=_Configured)


def _resolved_configs(
    client: MlflowClient | None,
    runs: Sequence[C],
    order: Callable[[C], int],
    known: Mapping[str, dict[str, Any] | None] | None = None,
) -> dict[str, dict[str, Any] | None]:
    """Each config hash's resolved config, from one of its runs; {} with a single hash.

    One small artifact per config version, so the report can tell an edit of the experiment
    settings from a change of the sweep's budget (``study.n_trials``) and name what changed.
    ``order`` picks which runs to try first among the complete ones (trial or rerun number);
    hashes in ``known`` were read already and are not downloaded again.
    """
    hashes = sorted({r.config_hash for r in runs if r.config_hash})
    if client is None or len(hashes) < 2:
        return {}
    out: dict[str, dict[str, Any] | None] = {}
    with tempfile.TemporaryDirectory(prefix="protolab-report-") as tmp:
        for h in hashes:
            if known is not None and h in known:
                continue
            mine = sorted(
                (r for r in runs if r.config_hash == h),
                key=lambda r: (r.state != "COMPLETE", order(r)),  # failed builds log no config
            )
            out[h] = _first_config(client, [r.run_id for r in mine[:3]], Path(tmp))
    return out


def _first_config(client: MlflowClient, run_ids: Sequence[str], tmp: Path) -> dict[str, Any] | None:
    """The first readable ``config/resolved.json`` among ``run_ids``; None if none is.

    A missing or unreadable artifact is not an error: that hash stays a version of its own.
    """
    for run_id in run_ids:
        dst = tmp / run_id
        dst.mkdir()
        try:
            got = client.download_artifacts(run_id, "config/resolved.json", str(dst))
            doc = json.loads(Path(got).read_text())
        except Exception:
            continue
        if isinstance(doc, dict):
            return doc
    return None


@dataclass
class _Tracked:
    """What the study's MLflow experiment holds for the report; empty without one."""

    client: MlflowClient | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    runs: list[RunRecord] = field(default_factory=list)
    scored_runs: list[ScoredRun] = field(default_factory=list)
    configs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    watch: WatchRuns = field(default_factory=WatchRuns)


def _parent_id(found: Sequence[Run]) -> str | None:
    """The study's parent run: the oldest tagged ``parent`` (a watch session's is not one)."""
    parents = [r for r in found if r.data.tags.get(TAG.ROLE) == "parent"]
    return str(min(parents, key=lambda r: r.info.start_time).info.run_id) if parents else None


def _current_study(found: Sequence[Run]) -> list[Run]:
    """The runs of the study now holding the name: a study started over (``sweep
    --new-study``) has a newer parent with a new study id, and the old study's runs stay in
    the experiment under theirs. Runs with no id (a study from before ids, watch sessions)
    are kept."""
    parents = [r for r in found if r.data.tags.get(TAG.ROLE) == "parent"]
    ids = [
        r.data.tags[TAG.STUDY_ID]
        for r in sorted(parents, key=lambda r: r.info.start_time, reverse=True)
        if r.data.tags.get(TAG.STUDY_ID)
    ]
    if not ids:
        return list(found)
    return [r for r in found if r.data.tags.get(TAG.STUDY_ID, ids[0]) == ids[0]]


def _read_experiment(source: Source) -> _Tracked:
    """Every run of the study in one search, sorted into sweep, scored and watch runs."""
    client = _client(source.tracking_uri)
    experiment_id = None if client is None else _experiment_id(client, source)
    if client is None or experiment_id is None:
        return _Tracked(client)
    study_filter = f"tags.`{TAG.STUDY}` = '{_quote(source.study)}'"
    found = _current_study(_search_all(client, experiment_id, study_filter))
    runs = records_from_mlflow(client, found)
    watch = watch_from_mlflow(found)
    configs = _resolved_configs(client, runs, order=lambda r: r.trial)
    configs.update(_resolved_configs(client, watch.runs, lambda r: r.rerun, known=configs))
    return _Tracked(
        client=client,
        experiment_id=experiment_id,
        parent_run_id=_parent_id(found),
        runs=runs,
        scored_runs=scored_runs_from_mlflow(found),
        configs=configs,
        watch=watch,
    )


def _read_tracking(source: Source) -> _Tracked:
    """:func:`_read_experiment`, with any failure of the store as one ``StorageError`` line.

    The URI is redacted: the message is printed and may be pasted into an issue.
    """
    try:
        return _read_experiment(source)
    except Exception as e:
        from protolab.tracking import redact

        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(
            f"tracking uri: cannot read {redact(source.tracking_uri)!r}: "
            f"{type(e).__name__}: {redact(first)[:300]}"
        ) from None


RunIndex = tuple[dict[int, dict[str, Mapping[str, float]]], dict[int, tuple[str, str]]]


def _run_index(runs: Sequence[RunRecord]) -> RunIndex:
    """Per trial: each backend's run metrics, and the (script, config) hashes its runs tagged.

    The first non-empty hash wins, so a run that failed before tagging does not blank them.
    """
    by_trial: dict[int, dict[str, Mapping[str, float]]] = {}
    hashes: dict[int, tuple[str, str]] = {}
    for r in runs:
        by_trial.setdefault(r.trial, {})[r.backend] = r.metrics
        script, config = hashes.get(r.trial, ("", ""))
        hashes[r.trial] = (script or r.script_hash, config or r.config_hash)
    return by_trial, hashes


def _trial_record(
    t: FrozenTrial, metrics: Mapping[str, Mapping[str, float]], hashes: tuple[str, str]
) -> TrialRecord:
    """One Optuna trial with its runs' numbers: the full run metrics win over the user attr."""
    per_backend = {b: dict(m) for b, m in t.user_attrs.get(ATTR.METRICS, {}).items()}
    for b, m in metrics.items():  # the full run metrics, when logged
        per_backend[b] = {**per_backend.get(b, {}), **m}
    # MLflow tags first (every run has them); the trial's user attr when no run was logged.
    script, config = hashes
    script = script or str(t.user_attrs.get(ATTR.SCRIPT_HASH, ""))
    values = None if t.values is None else tuple(float(v) for v in t.values)
    return TrialRecord(
        number=t.number,
        state=t.state.name,
        value=values[0] if values else None,  # t.value raises on several objectives
        params=dict(t.params),
        backends=per_backend,
        script_hash=script,
        config_hash=config,
        values=values,
        constraints={str(k): float(v) for k, v in _constraints(t).items()},
    )


def load_report_data(source: Source) -> ReportData:
    """Read the study from Optuna and its runs from MLflow (runs are optional)."""
    study = _open_study(source)
    tracked = _read_tracking(source)
    objectives = _objectives(study)
    by_trial, hashes = _run_index(tracked.runs)
    trials = [
        _trial_record(t, by_trial.get(t.number, {}), hashes.get(t.number, ("", "")))
        for t in study.get_trials(deepcopy=False)
    ]
    backends = mode_order(tracked.runs) or sorted({b for t in trials for b in t.backends})
    return ReportData(
        source=source,
        metric=objectives[0].metric,
        direction=objectives[0].direction,
        trials=trials,
        runs=tracked.runs,
        backends=backends,
        experiment_id=tracked.experiment_id,
        parent_run_id=tracked.parent_run_id,
        client=tracked.client,
        study=study,
        script_hashes=_str_list(study.user_attrs.get(ATTR.SCRIPT_HASHES)),
        config_hashes=_str_list(study.user_attrs.get(ATTR.CONFIG_HASHES)),
        configs=tracked.configs,
        objectives=objectives,
        front=_front(study),
        scored_runs=tracked.scored_runs,
        watch=tracked.watch,
    )


def _objectives(study: Study) -> list[Objective]:
    """Each objective's metric (user attrs ``protolab.objectives`` / ``protolab.metric``).

    ``study.direction`` raises on a multi-objective study: ``study.directions`` always works.
    Names that cannot be matched with the directions read ``objective N``.
    """
    directions = [d.name.lower() for d in study.directions]
    first = str(study.user_attrs.get(ATTR.METRIC, ""))
    names = _str_list(study.user_attrs.get(ATTR.OBJECTIVES))
    if len(directions) == 1:
        names = [first or (names[0] if names else "") or "value"]
    elif len(names) != len(directions):
        names = [first if i == 0 and first else f"objective {i}" for i in range(len(directions))]
    return [Objective(m, d) for m, d in zip(names, directions, strict=True)]


def _constraints(trial: FrozenTrial) -> Mapping[str, float]:
    """``trial.constraints`` (Optuna >= 4.x); {} where the trial or Optuna has none."""
    try:
        found = getattr(trial, "constraints", None)
    except Exception:
        return {}
    return found if isinstance(found, Mapping) else {}


def _front(study: Study) -> list[int]:
    """``study.best_trials``: the Pareto front, feasible trials only when constrained."""
    try:
        return sorted(t.number for t in study.best_trials)
    except Exception:  # no complete trial, or values that do not match the directions
        return []


def _str_list(value: object) -> list[str]:
    """A study user attr that should hold a list of hashes; anything else reads as empty."""
    if not isinstance(value, (list, tuple)):
        return []
    return [str(v) for v in value]


def param_importances(data: ReportData, objective: int = 0) -> tuple[dict[str, float], str | None]:
    """Optuna's parameter importances (PED-ANOVA by default) and why they may be missing.

    Returns ``(importances, note)``: importances sum to 1, largest first; the note explains
    an empty or trivial result (too few trials, one parameter) instead of failing the report.
    On a multi-objective study ``objective`` picks the objective: Optuna is given
    ``target=lambda t: t.values[i]``, negated for a maximised one (PED-ANOVA takes lower as
    better when given a target).
    """
    complete = data.complete_trials()
    names = sorted({k for t in complete for k in t.params})
    if len(complete) < 2:
        return {}, f"needs at least 2 complete trials (have {len(complete)})"
    if not names:
        return {}, "the study samples no parameters"
    if len(names) == 1:
        return {names[0]: 1.0}, f"only one parameter is searched ({names[0]})"
    if data.study is None:  # built by hand, not read from a storage
        return {}, "no Optuna study to compute importances from"
    import optuna

    target = None
    if data.multi_objective:
        target = _target(objective, maximize=data.all_objectives[objective].maximize)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = optuna.importance.get_param_importances(data.study, target=target)
    except Exception as e:  # e.g. no parameter common to all complete trials
        return {}, f"Optuna could not compute importances: {type(e).__name__}: {e}"
    values = {str(k): float(v) for k, v in raw.items()}
    if not values:
        return {}, "no parameter is shared by all complete trials"
    return dict(sorted(values.items(), key=lambda kv: -kv[1])), None


def _target(objective: int, maximize: bool) -> Callable[[FrozenTrial], float]:
    """Objective ``objective`` of a trial, lower is better (as PED-ANOVA reads a target)."""
    sign = -1.0 if maximize else 1.0

    def target(trial: FrozenTrial) -> float:
        return sign * float(trial.values[objective])

    return target


def objective_importances(
    data: ReportData,
) -> list[tuple[Objective, dict[str, float], str | None]]:
    """:func:`param_importances` for each objective, in the study's order."""
    return [(o, *param_importances(data, i)) for i, o in enumerate(data.all_objectives)]
