"""Where what the MLflow UI says about a study is stored: the parent run's params, metrics
and description, and the experiment's note and shared views.

Computing them is the report's (``protolab.report.study_notes``, over what the store
holds); the tracker is handed that function when it is opened and stores what it returns
when the sweep ends (:meth:`~protolab.tracking.Tracker.end`), so tracking never reads the
comparison it writes. The tag names here are MLflow's: the UI reads them.
"""

from __future__ import annotations

import time
from typing import Any

from protolab.tracking._types import StudyNotes

__all__ = ["FAMILY_COLOURS", "FAMILY_VIEW", "NOTE_TAG", "SHARED_VIEW_TAG", "store_study_notes"]

NOTE_TAG = "mlflow.note.content"  # MLflow's run description / experiment note
FAMILY_COLOURS = {"dynamic": "#1f77b4", "static": "#ff7f0e"}  # tag mlflow.runColor
# A view of the runs table stored on the experiment (MLflow's "shared view" tag), opened
# with ``?viewStateShareKey=protolab-family``: runs grouped by family, the comparison's
# columns shown. MLflow's UI reads the tag's JSON as it reads a view its Share button saved.
FAMILY_VIEW = "protolab-family"
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + the view's key


def store_study_notes(client: Any, experiment_id: str, parent_id: str, notes: StudyNotes) -> None:
    """Write ``notes`` on the parent run and the experiment. MLflow params cannot change:
    those the parent already has (the first sweep's) are kept."""
    from mlflow.entities import Metric, Param, RunTag

    have = client.get_run(parent_id).data.params
    params = [Param(k, v) for k, v in notes.params.items() if k not in have]
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in notes.metrics.items()]
    tags = [RunTag(NOTE_TAG, notes.description)]
    client.log_batch(parent_id, metrics=metrics, params=params[:100], tags=tags)
    for i in range(100, len(params), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(parent_id, params=params[i : i + 100])
    client.set_experiment_tag(experiment_id, NOTE_TAG, notes.experiment_note)
    for key, view in notes.views.items():
        client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, view)
