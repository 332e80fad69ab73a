"""A store write that fails mid-sweep stops it (issue 13, item 4), with real write failures.

The disk under ``mlruns/`` fills up while a real sweep runs: a small tmpfs filled to the
last byte where this machine lets us mount one (root), else the sweep's file-size limit
(``RLIMIT_FSIZE``, set on the running processes) lowered below its stores' sizes, which
fails every later write with EFBIG. Either way: exit 1 after the current trial, one
message and no traceback (from the writer either), every COMPLETE trial in Optuna has its
FINISHED MLflow run, and once there is room again the same command finishes the study
with nothing left RUNNING.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from protolab._stores import open_storage
from tests.conftest import TINY_MLP

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState
N_TRIALS = 5


def _project(root: Path) -> Path:
    (root / "exp.py").write_text(TINY_MLP)
    cfg = root / "cfg.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [lightning]
            study: {{name: tiny, n_trials: {N_TRIALS}, sampler: random, pruner: none}}
            train: {{epochs: 2, batch_size: 128, lr: 0.005}}
            hardware: {{accelerator: cpu}}
            """
        )
    )
    return cfg


@pytest.fixture(params=["tmpfs", "fsize"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """How the disk fills up: a real small tmpfs under mlruns/, or a file-size limit."""
    if request.param == "tmpfs":
        (tmp_path / "mlruns").mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(tmp_path / "mlruns")]
        if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (not root); the fsize case stands in")
        try:
            yield "tmpfs"
        finally:
            subprocess.run(["umount", "-l", str(tmp_path / "mlruns")], capture_output=True)
    else:
        yield "fsize"


def _trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(str(root / "mlruns" / "optuna.journal"))
    try:
        return optuna.load_study(study_name="tiny", storage=storage).trials
    except KeyError:
        return []


def _fill(root: Path, how: str, pid: int) -> None:
    """No more room for the running sweep's writes."""
    if how == "tmpfs":
        chunk = b"\0" * 65536
        with open(root / "mlruns" / "filler", "wb", buffering=0) as f:
            while True:
                try:
                    f.write(chunk)
                except OSError:  # ENOSPC: the disk is full
                    break
        return
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for p in [pid, *map(int, children)]:  # the sweep and its tracking writer
        hard = resource.prlimit(p, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(p, resource.RLIMIT_FSIZE, (4096, hard))


def _sweep(cfg: Path) -> subprocess.Popen[str]:
    # stderr to a pipe, not a file: an RLIMIT_FSIZE would stop the message itself
    return subprocess.Popen(
        [sys.executable, "-m", "protolab.cli", "sweep", cfg.name],
        cwd=cfg.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _assert_runs_match(root: Path, expect_done: bool) -> None:
    """Every COMPLETE trial has its FINISHED run; with ``expect_done``, nothing RUNNING."""
    trials = _trials(root)
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    status = {r.info.run_name: r.info.status for r in runs}
    for t in trials:
        if t.state == State.COMPLETE:
            assert status.get(f"t{t.number}-lightning") == "FINISHED", (t.number, status)
    if expect_done:
        assert not [t.number for t in trials if t.state == State.RUNNING]
        assert not [name for name, s in status.items() if s == "RUNNING"], status


def test_a_full_disk_stops_the_sweep_with_one_message(tmp_path: Path, disk: str) -> None:
    cfg = _project(tmp_path)
    proc = _sweep(cfg)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()))  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 300
    while not any(t.state == State.COMPLETE for t in _trials(tmp_path)):
        assert proc.poll() is None and time.monotonic() < deadline, err
        time.sleep(0.1)
    _fill(tmp_path, disk, proc.pid)
    proc.wait(timeout=300)
    reader.join()
    text = err[0]
    assert proc.returncode == 1, text
    assert "Traceback" not in text and "Exception ignored" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    assert "a write failed" in errors[0] and "stopped after trial" in errors[0], text
    assert "tracking write failed" not in text  # the writer reports to the sweep, not here
    assert len(text.splitlines()) < 30, text
    complete = [t for t in _trials(tmp_path) if t.state == State.COMPLETE]
    assert 1 <= len(complete) < N_TRIALS
    _assert_runs_match(tmp_path, expect_done=False)

    if disk == "tmpfs":
        (tmp_path / "mlruns" / "filler").unlink()  # room again
    rerun = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "sweep", cfg.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = _trials(tmp_path)
    assert sum(t.state == State.COMPLETE for t in trials) == N_TRIALS
    assert {t.number for t in complete} <= {t.number for t in trials if t.state == State.COMPLETE}
    stopped = [
        t for t in trials if "store write failed" in t.user_attrs.get("protolab.fail_reason", "")
    ]
    assert all(
        any(r.user_attrs.get("protolab.retry_of") == t.number for r in trials) for t in stopped
    )
    _assert_runs_match(tmp_path, expect_done=True)
    shutil.rmtree(tmp_path / "mlruns" / "artifacts", ignore_errors=True)
