"""Local artifacts are written in place, where MLflow lists them (the sweep's wait for a
child run's end: issue 26, sweep overhead)."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from protolab.tracking import Tracker


def test_local_artifacts_are_written_where_mlflow_lists_them(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", "study")
    run = tracker.child("t0-mode", {"protolab.trial": "0"}, {"width": 8})
    run.log_texts({"model/arch.txt": "Dense(8)", "config/resolved.json": "{}"})
    run.end("COMPLETE")
    client = MlflowClient(uri)
    listed = {a.path for a in client.list_artifacts(run.run_id, "model")}
    assert listed == {"model/arch.txt"}
    path = client.download_artifacts(run.run_id, "model/arch.txt", str(tmp_path / "dl"))
    assert Path(path).read_text() == "Dense(8)"
    assert client.get_run(run.run_id).info.status == "FINISHED"
