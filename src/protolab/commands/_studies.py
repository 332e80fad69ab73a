"""The studies an MLflow store holds: one experiment each, found by its ``protolab.study`` tag.

Shared by ``protolab ui`` (which experiment to open) and ``protolab ls`` (what to list).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from protolab._tags import TAG
from protolab.errors import UserInputError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["StudyExperiment", "check_store", "find_study", "mlflow_client", "study_experiments"]

_SHARED = "mlflow.sharedViewState."  # experiment tags holding saved runs-table views


@dataclass(frozen=True)
class StudyExperiment:
    """A study's MLflow experiment and its parent run (``""`` if none was created yet)."""

    study: str
    experiment_id: str
    experiment_name: str
    parent_run_id: str = ""
    last_activity_ms: int = 0  # the latest start or end of any run in the experiment
    family_view: str = ""  # the shared-view key of the family-grouped runs table, if stored


def check_store(uri: str) -> None:
    """A local SQLite store must exist: reading it must not create an empty one."""
    from protolab.tracking import redact

    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise UserInputError(
                f"no MLflow store at {path} yet: run `protolab sweep CONFIG` first, "
                "or pass --uri (tracking.uri of the config)"
            )
    elif not uri.startswith(("http://", "https://", "postgresql", "mysql", "file:")):
        raise UserInputError(
            f"--uri: unsupported tracking URI {redact(uri)!r}; allowed: sqlite:///FILE, "
            "http(s)://HOST:PORT, postgresql://..., mysql://..."
        )


def mlflow_client(uri: str) -> MlflowClient:
    """An MlflowClient for ``uri``, quiet, failing in seconds on an unreachable server."""
    import logging

    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _last_activity(client: MlflowClient, experiment_id: str) -> int:
    runs = client.search_runs(
        [experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        return 0
    info = runs[0].info
    return int(max(info.start_time or 0, info.end_time or 0))


def _parent_run(client: MlflowClient, experiment_id: str, study: str) -> str:
    quoted = study.replace("'", "\\'")
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG.ROLE}` = 'parent' and tags.`{TAG.STUDY}` = '{quoted}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return str(runs[0].info.run_id) if runs else ""


def study_experiments(client: MlflowClient) -> list[StudyExperiment]:
    """Every protolab study in the store, the most recently active first."""
    from mlflow.entities import ViewType

    from protolab.tracking import FAMILY_VIEW

    found = client.search_experiments(
        view_type=ViewType.ACTIVE_ONLY, filter_string=f"tags.`{TAG.STUDY}` LIKE '%'"
    )
    out = []
    for e in found:
        study = e.tags.get(TAG.STUDY, e.name)
        out.append(
            StudyExperiment(
                study=study,
                experiment_id=str(e.experiment_id),
                experiment_name=e.name,
                parent_run_id=_parent_run(client, e.experiment_id, study),
                last_activity_ms=_last_activity(client, e.experiment_id),
                family_view=FAMILY_VIEW if f"{_SHARED}{FAMILY_VIEW}" in e.tags else "",
            )
        )
    return sorted(out, key=lambda s: (-s.last_activity_ms, s.study))


def find_study(studies: list[StudyExperiment], name: str | None, where: str) -> StudyExperiment:
    """``name``'s experiment (by study or experiment name), else the most recently active."""
    if not studies:
        raise UserInputError(f"no protolab study in {where} yet: run `protolab sweep CONFIG` first")
    if name is None:
        return studies[0]
    for s in studies:
        if name in (s.study, s.experiment_name):
            return s
    have = ", ".join(sorted(s.study for s in studies))
    raise UserInputError(f"--study: no study {name!r} in {where}; studies there: {have}")
