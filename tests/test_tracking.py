"""The tracking writer process: same MLflow layout as inline calls, errors surface, no run
is left RUNNING when the sweep process dies. Real MLflow on a real SQLite store."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from protolab.tracking import AsyncTracker, Tracker
from protolab.tracking._writer import StoreWriteError, take_writer

PARAMS = {"width": 64, "act": "relu", "train.lr": 0.01}
TAGS = {"protolab.study": "s", "protolab.trial": "0", "protolab.backend": "lightning"}
TEXTS = {"arch.json": '{"layers": []}', "config/cfg.yaml": "a: 1\n", "script/exp.py": "# x\n"}


def _log_one(tracker: Any, name: str) -> None:
    """The calls run_once makes for one job."""
    run = tracker.child(name, TAGS, PARAMS)
    run.log_texts(TEXTS)
    for epoch in (1, 2):
        run.log_metrics({"train/loss": 1.0 / epoch, "val/acc": 0.5 + epoch / 10}, step=epoch)
    run.log_metrics({"time/step_ms": 1.5}, step=2)
    run.set_tags({"protolab.device": "cpu"})
    run.end("COMPLETE")


def _run(client: MlflowClient, experiment: str) -> Any:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("protolab.role") != "parent"]
    assert len(children) == 1
    return children[0]


def _files(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out: set[str] = set()
    for f in client.list_artifacts(run_id, path or None):
        out |= _files(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_writer_process_logs_what_inline_calls_log(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    inline = Tracker(uri, "inline", "inline")
    _log_one(inline, "t0-lightning")
    inline.end()
    writer = take_writer()
    tracked = AsyncTracker(writer, uri, "async", "async").wait_open()
    assert tracked.parent_id  # opening is synchronous: the ids are known
    _log_one(tracked, "t0-lightning")
    tracked.end()  # returns once every write has landed
    assert not writer.alive()

    client = MlflowClient(uri)
    a, b = _run(client, "inline"), _run(client, "async")
    assert a.info.status == b.info.status == "FINISHED"
    assert a.data.params == b.data.params == {k: str(v) for k, v in PARAMS.items()}
    assert a.data.metrics == b.data.metrics
    assert client.get_metric_history(b.info.run_id, "train/loss")[-1].step == 2
    drop = {"mlflow.parentRunId", "mlflow.runName"}
    tags_a = {k: v for k, v in a.data.tags.items() if k not in drop}
    tags_b = {k: v for k, v in b.data.tags.items() if k not in drop}
    assert tags_a == tags_b and tags_b["protolab.state"] == "COMPLETE"
    assert _files(client, a.info.run_id) == _files(client, b.info.run_id) == set(TEXTS)


def _no_notes(client: Any, experiment_id: str, parent_id: str, study: str) -> Any:
    raise RuntimeError("no notes today")


def test_writer_process_stores_the_notes_it_is_handed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The report computes the parent's description; the tracker, inline or in its writer
    process, stores it when the parent ends, and a failure there never fails the end."""
    from protolab.report import study_notes

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    inline = Tracker(uri, "inline", "inline", describe=study_notes)
    _log_one(inline, "t0-lightning")
    inline.end()
    tracked = AsyncTracker(take_writer(), uri, "async", "async", describe=study_notes)
    _log_one(tracked.wait_open(), "t0-lightning")
    tracked.end()
    AsyncTracker(take_writer(), uri, "broken", "broken", describe=_no_notes).wait_open().end()

    client = MlflowClient(uri)
    notes = {}
    for study in ("inline", "async", "broken"):
        exp = client.get_experiment_by_name(study)
        parent = client.search_runs([exp.experiment_id], "tags.`protolab.role` = 'parent'")[0]
        assert parent.info.status == "FINISHED"
        notes[study] = parent.data.tags.get("mlflow.note.content", "")
    assert notes["async"].startswith("## async: lightning")
    assert notes["inline"].replace("inline", "async") == notes["async"]
    assert notes["broken"] == ""
    assert "no notes today" in capfd.readouterr().err


def test_failed_write_is_raised_at_the_next_child_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = AsyncTracker(take_writer(), uri, "e", "e").wait_open()
    run = tracker.child("t0-lightning", TAGS, PARAMS)
    run.set_tags({"bad key?": "v"})  # MLflow rejects this name when the batch is written
    run.end("COMPLETE")
    deadline = time.monotonic() + 60
    with pytest.raises(StoreWriteError, match=r"a write failed") as info:
        while time.monotonic() < deadline:  # the writer reports it once it got there
            tracker.child("t1-lightning", TAGS, PARAMS).end("COMPLETE")
            time.sleep(0.2)
    assert "bad key?" in str(info.value) or "Invalid" in str(info.value)
    with pytest.raises(StoreWriteError, match=r"a write failed"):  # never lost at the end
        tracker.end()
    assert capfd.readouterr().err == ""  # kept for the sweep's one message, not printed


def test_bad_local_store_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    tracker = AsyncTracker(take_writer(), f"sqlite:///{blocker / 'mlflow.db'}", "e", "e")
    with pytest.raises(Exception, match=r"NotADirectoryError|FileExistsError"):
        tracker.wait_open()
    tracker._writer.close()


SCRIPT = """
import sys, time
from protolab.tracking import AsyncTracker
from protolab.tracking._writer import StoreWriteError, take_writer

if __name__ == "__main__":
    tracker = AsyncTracker(take_writer(), sys.argv[1], "e", "e").wait_open()
    run = tracker.child("t0-lightning", {"protolab.trial": "0"}, {"width": 8})
    run.log_metrics({"train/loss": 1.0}, step=1)
    run.flush()
    print(tracker._writer.proc.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_writer_ends_open_runs_when_the_sweep_process_is_killed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.Popen(
        [sys.executable, str(script), uri], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert proc.stdout is not None
    writer_pid = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    client = MlflowClient(uri)
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        exp = client.get_experiment_by_name("e")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        child = [r for r in runs if r.data.tags.get("protolab.trial") == "0"]
        status = child[0].info.status if child else ""
        if status == "FAILED":
            break
        time.sleep(0.2)
    assert status == "FAILED"
    assert child[0].data.tags["protolab.fail_reason"] == "worker died"
    assert child[0].data.metrics["train/loss"] == 1.0  # what was sent before the kill landed
    for _ in range(100):  # and the writer exits rather than lingering
        if not _running(writer_pid):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the writer process outlived its sweep process")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit may wait for a reaper that never comes)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
