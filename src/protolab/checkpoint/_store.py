"""Checkpoints in the MLflow store: upload, rank, prune (the writer) and find (export).

Each kept checkpoint is the artifact folder ``checkpoint/`` of its child run, tagged
``protolab.checkpoint = kept`` and ``protolab.checkpoint_rank`` (JSON: the trial's value,
the study's direction, whether it met the constraints, whether the trial is done).

Pruning is safe with any number of workers on one store, without a lock: each worker tags
its checkpoint *before* it looks at the others, so the last one to look sees them all; and a
trial outside the best k of some trials is outside the best k of more, so no worker ever
drops what the final ranking keeps. A trial still running on other modes is left alone until
it is done (or its other runs failed: then it goes).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from protolab._tags import TAG

__all__ = [
    "ARTIFACT",
    "CheckpointTrial",
    "MlflowRun",
    "StoreClient",
    "Upload",
    "current_study_id",
    "download",
    "find_checkpoints",
    "keep_count",
    "ranked",
    "retain",
    "store",
]

ARTIFACT = "checkpoint"
_DEAD = ("FAILED", "KILLED")


# --- the part of MLflow's client and runs read here (``MlflowClient``, ``mlflow.entities.Run``)


class _RunInfo(Protocol):
    @property
    def run_id(self) -> str: ...
    @property
    def experiment_id(self) -> str: ...
    @property
    def artifact_uri(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def start_time(self) -> int | None: ...


class _RunData(Protocol):
    @property
    def tags(self) -> Mapping[str, str]: ...


class MlflowRun(Protocol):
    """A run as MLflow's client returns it."""

    @property
    def info(self) -> _RunInfo: ...
    @property
    def data(self) -> _RunData: ...


class _Page(Protocol):
    """One page of ``search_runs``: its runs, and the token of the next (empty: the last)."""

    def __iter__(self) -> Iterator[MlflowRun]: ...
    @property
    def token(self) -> str | None: ...


class StoreClient(Protocol):
    """What keeping, pruning and finding checkpoints call on an ``MlflowClient``."""

    @property
    def tracking_uri(self) -> str: ...
    def log_artifacts(
        self, run_id: str, local_dir: str, artifact_path: str | None = ...
    ) -> None: ...
    def log_batch(self, run_id: str, *, tags: Sequence[object] = ...) -> None: ...
    def get_run(self, run_id: str) -> MlflowRun: ...
    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = ...,
        max_results: int = ...,
        page_token: str | None = ...,
        order_by: list[str] | None = ...,
    ) -> _Page: ...
    def set_tag(self, run_id: str, key: str, value: str) -> None: ...
    def download_artifacts(self, run_id: str, path: str, dst_path: str | None = ...) -> str: ...


@dataclass(frozen=True)
class Upload:
    """What the writer needs to store one checkpoint and apply the study's policy."""

    study: str
    experiment_id: str
    trial: int
    policy: str  # best | top_k | all
    top_k: int
    value: float
    direction: str  # maximize | minimize
    feasible: bool
    done: bool  # the trial's last mode: its checkpoints are complete, rank it
    study_id: str = ""  # the study's id: only its checkpoints are ranked ("": before ids)


@dataclass
class CheckpointTrial:
    """One trial's kept checkpoints (one run per mode) and its rank key."""

    trial: int
    value: float
    direction: str
    feasible: bool
    done: bool = False
    runs: list[MlflowRun] = field(default_factory=list)

    def run_for(self, backend: str) -> MlflowRun | None:
        return next((r for r in self.runs if r.data.tags.get(TAG.BACKEND) == backend), None)

    @property
    def backends(self) -> list[str]:
        return [str(r.data.tags.get(TAG.BACKEND, "")) for r in self.runs]


def keep_count(policy: str, top_k: int) -> int | None:
    """How many trials a policy keeps (None: all of them)."""
    return {"best": 1, "top_k": top_k, "none": 0}.get(policy)


def ranked(trials: Iterable[CheckpointTrial]) -> list[CheckpointTrial]:
    """Best first, as Optuna's best trial: feasible first, then the value, then the number."""

    def key(t: CheckpointTrial) -> tuple[bool, bool, float, int]:
        missing = math.isnan(t.value)
        value = 0.0 if missing else (-t.value if t.direction == "maximize" else t.value)
        return (not t.feasible, missing, value, t.trial)

    return sorted(trials, key=key)


def store(client: StoreClient, run_id: str, directory: str, up: Upload) -> None:
    """Upload a checkpoint, tag its run, then prune the study (in the writer process).

    Two calls for the checkpoint itself (the upload, one tag batch), then the pruning's
    search; its sizes and timings go with the run's final metrics (see ``keep``). Never
    raises: a checkpoint that cannot be kept is reported, and the sweep goes on.
    """
    from mlflow.entities import RunTag

    uploaded = False
    try:
        client.log_artifacts(run_id, directory, ARTIFACT)
        uploaded = True
        rank = {
            "trial": up.trial,
            "value": up.value,
            "direction": up.direction,
            "feasible": up.feasible,
            "done": up.done,
        }
        tags = [RunTag(TAG.CHECKPOINT, "kept"), RunTag(TAG.CHECKPOINT_RANK, json.dumps(rank))]
        client.log_batch(run_id, tags=tags)  # visible before the search below: see the top
        experiment_id = up.experiment_id or client.get_run(run_id).info.experiment_id
        retain(client, experiment_id, up.study, keep_count(up.policy, up.top_k), up.study_id)
    except Exception as e:
        if not uploaded:  # a failed upload (a full disk) leaves no half-written weights
            drop_partial(client, run_id)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"protolab: trial {up.trial}: checkpoint not kept: {type(e).__name__}: {first}",
            file=sys.stderr,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def retain(
    client: StoreClient,
    experiment_id: str,
    study: str,
    keep: int | None,
    study_id: str | None = None,
) -> list[int]:
    """Drop the checkpoints of every done trial outside the best ``keep`` (None: all), and
    of trials that will never be done; return the done trials kept. Only study
    ``study_id``'s (None: the current study's): another study of the name is left alone."""
    if study_id is None:
        study_id = current_study_id(client, experiment_id, study) or ""
    trials = find_checkpoints(client, experiment_id, study, study_id)
    done = [t for t in trials.values() if t.done]
    best = ranked(done)[:keep] if keep is not None else done
    kept = {t.trial for t in best}
    doomed = [t for t in done if t.trial not in kept]
    pending = [t for t in trials.values() if not t.done]
    doomed += [t for t in pending if _has_dead_run(client, experiment_id, study, study_id, t.trial)]
    for t in doomed:
        for run in t.runs:
            drop(client, run)
    return sorted(kept)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _search(client: StoreClient, experiment_id: str, filter_string: str) -> list[MlflowRun]:
    runs: list[MlflowRun] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _of_study(study: str, study_id: str) -> str:
    """The filter for a study's runs: by name, and by id where the study has one."""
    where = f"tags.`{TAG.STUDY}` = '{_quote(study)}'"
    return where + (f" and tags.`{TAG.STUDY_ID}` = '{_quote(study_id)}'" if study_id else "")


def current_study_id(client: StoreClient, experiment_id: str, study: str) -> str | None:
    """The id of the study now named ``study``: the one on its newest parent run (a study
    started over with ``sweep --new-study`` has a newer parent). None for a study from
    before study ids: its runs are read by name alone."""
    page = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG.ROLE}` = 'parent' and tags.`{TAG.STUDY}` = '{_quote(study)}'",
        max_results=1000,
        order_by=["attributes.start_time DESC"],
    )
    for run in page:
        found = run.data.tags.get(TAG.STUDY_ID)
        if found:
            return str(found)
    return None


def _has_dead_run(
    client: StoreClient, experiment_id: str, study: str, study_id: str, trial: int
) -> bool:
    """A trial whose other modes failed or were killed: it is not done, and never will be."""
    runs = _search(
        client, experiment_id, f"{_of_study(study, study_id)} and tags.`{TAG.TRIAL}` = '{trial}'"
    )
    return any(r.info.status in _DEAD for r in runs)


def drop_partial(client: StoreClient, run_id: str) -> None:
    """Remove what a failed upload left of a checkpoint (best effort: the store failed)."""
    with contextlib.suppress(Exception):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = client.get_run(run_id).info.artifact_uri
        repo = get_artifact_repository(uri, tracking_uri=client.tracking_uri)
        repo.delete_artifacts(ARTIFACT)


def drop(client: StoreClient, run: MlflowRun) -> None:
    """Delete a run's checkpoint artifacts and say so on the run."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
    with contextlib.suppress(FileNotFoundError):  # another worker dropped it first
        repo.delete_artifacts(ARTIFACT)
    client.set_tag(run.info.run_id, TAG.CHECKPOINT, "deleted")


def find_checkpoints(
    client: StoreClient, experiment_id: str, study: str, study_id: str | None = None
) -> dict[int, CheckpointTrial]:
    """The study's kept checkpoints, by trial (runs in the order the modes ran): those of
    study ``study_id`` (None: the current study's, so ``export`` never ships a checkpoint
    of an older study of the same name)."""
    if study_id is None:
        study_id = current_study_id(client, experiment_id, study) or ""
    runs = _search(
        client, experiment_id, f"tags.`{TAG.CHECKPOINT}` = 'kept' and {_of_study(study, study_id)}"
    )
    trials: dict[int, CheckpointTrial] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        try:
            rank = json.loads(run.data.tags[TAG.CHECKPOINT_RANK])
            number = int(rank["trial"])
        except (KeyError, ValueError, TypeError):
            continue  # not a protolab checkpoint tag: leave it alone
        value = float(rank.get("value", math.nan))
        t = trials.setdefault(
            number,
            CheckpointTrial(number, value, str(rank["direction"]), bool(rank["feasible"])),
        )
        t.done = t.done or bool(rank.get("done"))
        t.runs.append(run)
    return trials


def download(client: StoreClient, run_id: str, destination: Path) -> Path:
    """A run's checkpoint folder, downloaded under ``destination``."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    destination.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, ARTIFACT, str(destination)))
