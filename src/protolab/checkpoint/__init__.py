"""Trained weights kept per trial (``tracking.checkpoints``), for ``protolab export``/``predict``.

:func:`keep` is the sweep's hook (one call per finished job); the writer process uploads the
checkpoint as the child run's ``checkpoint/`` artifacts and prunes the study to the policy.
:func:`find_checkpoints` / :func:`download` read them back.
"""

from protolab.checkpoint._keep import CheckpointRun, KeepContext, begin_trial, keep
from protolab.checkpoint._store import (
    ARTIFACT,
    CheckpointTrial,
    MlflowRun,
    StoreClient,
    current_study_id,
    download,
    find_checkpoints,
    keep_count,
    ranked,
    retain,
)

__all__ = [
    "ARTIFACT",
    "CheckpointRun",
    "CheckpointTrial",
    "KeepContext",
    "MlflowRun",
    "StoreClient",
    "begin_trial",
    "current_study_id",
    "download",
    "find_checkpoints",
    "keep",
    "keep_count",
    "ranked",
    "retain",
]
