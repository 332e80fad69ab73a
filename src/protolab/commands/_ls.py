"""``protolab ls``: the studies in the current stores, one line each.

Trial counts, the best value and the last activity come from the Optuna storage (the
record of every trial); a study found only in the MLflow store (its Optuna storage lives
elsewhere) is listed from its parent run's ``sweep/*`` metrics instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from protolab._tags import ATTR, TAG

__all__ = ["StudyRow", "list_studies", "study_rows"]

_NUMERIC = ("complete", "pruned", "failed", "best")


@dataclass
class StudyRow:
    study: str
    complete: int
    pruned: int
    failed: int
    best: float | None
    metric: str
    last_activity: float  # seconds since the epoch; 0 = unknown
    source: str  # "optuna" | "mlflow" | "optuna+mlflow"


def _optuna_rows(storage: str | None) -> list[StudyRow]:
    import optuna

    from protolab._stores import default_storage_path, open_storage

    if storage is None and not default_storage_path().is_file():
        return []
    local = storage is not None and storage.endswith((".journal", ".log"))
    if local and not Path(str(storage).removeprefix("journal://")).is_file():
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = open_storage(storage)
    rows = []
    for name in sorted(optuna.get_all_study_names(opened)):
        study = optuna.load_study(study_name=name, storage=opened)
        rows.append(_optuna_row(study))
    return rows


def _optuna_row(study: Any) -> StudyRow:
    import optuna

    State = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    best = None
    if len(study.directions) == 1 and any(t.state == State.COMPLETE for t in trials):
        try:
            best = float(study.best_value)
        except ValueError:  # constraints: no feasible trial
            best = None
    stamps = [t.datetime_complete or t.datetime_start for t in trials]
    last = max((s.timestamp() for s in stamps if s is not None), default=0.0)
    return StudyRow(
        study=study.study_name,
        complete=sum(t.state == State.COMPLETE for t in trials),
        pruned=sum(t.state == State.PRUNED for t in trials),
        failed=sum(t.state == State.FAIL for t in trials),
        best=best,
        metric=str(study.user_attrs.get(ATTR.METRIC, "")),
        last_activity=last,
        source="optuna",
    )


def _mlflow_rows(uri: str) -> list[StudyRow]:
    from protolab.commands._studies import mlflow_client, study_experiments

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return []
    client = mlflow_client(uri)
    rows = []
    for s in study_experiments(client):
        metrics: dict[str, float] = {}
        metric = ""
        if s.parent_run_id:
            metrics = client.get_run(s.parent_run_id).data.metrics
            child = client.search_runs(
                [s.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{s.parent_run_id}'",
                max_results=1,
            )
            metric = child[0].data.tags.get(TAG.METRIC, "") if child else ""
        rows.append(
            StudyRow(
                study=s.study,
                complete=int(metrics.get("sweep/trials_complete", 0)),
                pruned=int(metrics.get("sweep/trials_pruned", 0)),
                failed=int(metrics.get("sweep/trials_failed", 0)),
                best=metrics.get("sweep/best_value"),
                metric=metric,
                last_activity=s.last_activity_ms / 1000,
                source="mlflow",
            )
        )
    return rows


def study_rows(uri: str, storage: str | None) -> list[StudyRow]:
    """Both stores merged by study name, the most recently active first."""
    rows = {r.study: r for r in _mlflow_rows(uri)}
    for r in _optuna_rows(storage):
        old = rows.get(r.study)
        if old is not None:
            r.source = "optuna+mlflow"
            r.metric = r.metric or old.metric
            r.last_activity = max(r.last_activity, old.last_activity)
        rows[r.study] = r
    return sorted(rows.values(), key=lambda r: (-r.last_activity, r.study))


def _ago(ts: float, now: float) -> str:
    """``just now``, ``12 min ago``, ``3 h ago``; a date with the days beyond a day."""
    if ts <= 0:
        return "-"
    s = max(now - ts, 0)
    if s >= 86400:
        return f"{datetime.fromtimestamp(ts):%Y-%m-%d} ({s / 86400:.0f} d ago)"
    for unit, size in (("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return "just now"


def list_studies(uri: str | None, storage: str | None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from protolab._format import sig3
    from protolab.commands._studies import check_store
    from protolab.tracking import default_tracking_uri, redact

    store = uri or default_tracking_uri()
    if uri is not None:
        check_store(store)
    rows = study_rows(store, storage)
    console = Console(highlight=False)
    if not rows:
        console.print(f"no study yet in {redact(store)}: `protolab init NAME` writes one to sweep")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col in ("study", "complete", "pruned", "failed", "best", "metric", "last activity"):
        table.add_column(col, justify="right" if col in _NUMERIC else "left", no_wrap=True)
    now = time.time()
    for r in rows:
        counts = (str(r.complete), str(r.pruned), str(r.failed))
        table.add_row(r.study, *counts, sig3(r.best), r.metric, _ago(r.last_activity, now))
    console.print(table)
    console.print(f"[dim]open one: protolab ui --study {rows[0].study}[/]")
