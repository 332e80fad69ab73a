"""Which study a run belongs to: the study id, read and adopted in the MLflow store.

A study's name is not enough to tell its runs apart: a journal deleted and started again
makes a second study of the same name, numbered from t0 again, beside the first one's runs.
So every study draws an id when it is created (the Optuna study attr ``protolab.study_id``)
and every run of it carries the id (tag ``protolab.study_id``). The sweep compares the two
stores before it writes anything (``protolab.sweep``), and whatever reads a study back from
MLflow (checkpoints, export, the report) reads the current study's runs: those of the id on
the study's newest parent run (``protolab.checkpoint.current_study_id``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protolab._tags import TAG

__all__ = ["StudyRuns", "adopt_legacy_runs", "quote", "study_runs"]

_RECENT = 50  # the newest runs of a study read for its highest trial number


def quote(text: str) -> str:
    """``text`` inside an MLflow filter string's single quotes."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


@dataclass
class StudyRuns:
    """What the MLflow store holds of a study name, for the sweep's check (picklable).

    ``parents``: study id -> its parent runs ("" for a study from before study ids);
    ``latest_trial``: the highest trial number among the newest runs of the asked id
    (None: it has no trial run).
    """

    parents: dict[str, int] = field(default_factory=dict)
    latest_trial: int | None = None


def _search(client: Any, experiment_id: str, where: str, **kw: Any) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=where, page_token=token, max_results=1000, **kw
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _parents(client: Any, experiment_id: str, study: str) -> list[Any]:
    where = f"tags.`{TAG.ROLE}` = 'parent' and tags.`{TAG.STUDY}` = '{quote(study)}'"
    return _search(client, experiment_id, where, order_by=["attributes.start_time DESC"])


def _has_trials(client: Any, experiment_id: str, parent_id: str) -> bool:
    """Whether a parent run holds a sweep's trial runs (children with a trial number)."""
    where = (
        f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{TAG.TRIAL}` LIKE '%' "
        f"and tags.`{TAG.TRIAL}` != 'run'"  # `protolab run`'s child is trial 'run'
    )
    return bool(client.search_runs([experiment_id], filter_string=where, max_results=1))


def study_runs(client: Any, experiment_id: str, study: str, study_id: str) -> StudyRuns:
    """The study ids that have runs under ``study`` here, and ``study_id``'s last trial."""
    found = StudyRuns()
    for run in _parents(client, experiment_id, study):
        key = str(run.data.tags.get(TAG.STUDY_ID, ""))
        if not key and not _has_trials(client, experiment_id, run.info.run_id):
            continue  # `protolab run`'s parent (no trial under it): no study to bind
        found.parents[key] = found.parents.get(key, 0) + 1
    if study_id and study_id in found.parents:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG.STUDY_ID}` = '{quote(study_id)}'",
            order_by=["attributes.start_time DESC"],
            max_results=_RECENT,
        )
        numbers = [str(r.data.tags.get(TAG.TRIAL, "")) for r in page]
        found.latest_trial = max((int(n) for n in numbers if n.isdigit()), default=None)
    return found


def adopt_legacy_runs(client: Any, experiment_id: str, study: str, study_id: str) -> int:
    """Stamp ``study_id`` on the study's runs from before study ids (its parent without an
    id and that parent's children), once; the number of runs stamped."""
    legacy = [p for p in _parents(client, experiment_id, study) if TAG.STUDY_ID not in p.data.tags]
    stamped = 0
    for parent in legacy:
        where = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        for run in [parent, *_search(client, experiment_id, where)]:
            if TAG.STUDY_ID not in run.data.tags:
                client.set_tag(run.info.run_id, TAG.STUDY_ID, study_id)
                stamped += 1
    return stamped
