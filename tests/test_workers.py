"""``protolab sweep --workers N``: one launcher, N ordinary workers on one study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from protolab.cli import app
from protolab.commands._workers import plan_workers
from protolab.sweep._lease import worker_attrs
from tests.conftest import TINY_MLP

State = optuna.trial.TrialState


# Two workers reach their first trial at different times (imports, a loaded machine), and
# the quicker one could take every trial of a short study. This script holds each worker's
# first trial build (its second call: the first is the dry build of ``prepare``) until both
# workers have got there, so the test sees both take part without racing the clock.
BARRIER = """
import os, time
from pathlib import Path

_calls = 0


def _meet(n: int = 2, timeout: float = 240.0) -> None:
    global _calls
    _calls += 1
    if _calls != 2:
        return
    here = Path(__file__).parent / "arrived"
    here.mkdir(exist_ok=True)
    (here / str(os.getpid())).touch()
    deadline = time.time() + timeout
    while len(list(here.iterdir())) < n and time.time() < deadline:
        time.sleep(0.1)
"""


def _project(
    root: Path, n_trials: int, epochs: int, barrier: bool = False, backend: str = "lightning"
) -> Path:
    script = TINY_MLP.replace("    width =", "    _meet()\n    width =") if barrier else TINY_MLP
    (root / "exp.py").write_text((BARRIER if barrier else "") + script)
    cfg = root / "cfg.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [{backend}]
            study: {{name: tiny, n_trials: {n_trials}, sampler: random, pruner: none}}
            train: {{epochs: {epochs}, batch_size: 128, lr: 0.005}}
            hardware: {{accelerator: cpu}}
            """
        )
    )
    return cfg


def _trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    from protolab._stores import open_storage

    storage = open_storage(str(root / "mlruns" / "optuna.journal"))
    try:
        return optuna.load_study(study_name="tiny", storage=storage).trials
    except KeyError:
        return []


def _launch(cfg: Path, workers: str, *overrides: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "protolab.cli", "sweep", str(cfg), *overrides, "--workers", workers],
        cwd=cfg.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_plan_threads_and_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU, whatever the machine has
    plan = plan_workers(2, None, "auto")
    assert plan.count == 2 and plan.devices == [] and plan.threads is not None
    assert plan_workers(2, 3, "cpu").threads is None  # the config's threads stand
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    gpu = plan_workers(None, None, "auto")
    assert gpu.count == 2 and gpu.devices == ["4", "7"]
    assert worker_attrs()["protolab.cuda_visible_devices"] == "4,7"
    assert plan_workers(None, None, "cpu").devices == []


def test_workers_started_together_draw_different_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers opening a fresh study at once see the same (empty) study: their index keeps
    their samplers apart, while a lone worker (index 0) stays reproducible."""
    from protolab._stores import open_storage
    from protolab.backends import NAMES
    from protolab.config import load_config
    from protolab.sweep import prepare
    from protolab.sweep._worker import join_study, open_study

    cfg_path = _project(tmp_path, n_trials=4, epochs=1)
    cfg, script = load_config(cfg_path, backends=NAMES)
    ctx = prepare(cfg, cfg_path, script)
    x = optuna.distributions.FloatDistribution(0.0, 1.0)

    def first_draw(index: str, store: str) -> float:
        monkeypatch.setenv("PROTOLAB_WORKER_INDEX", index)
        study = open_study(ctx, open_storage(str(tmp_path / store)))
        return float(study.ask({"x": x}).params["x"])

    alone = first_draw("0", "a.journal")
    assert first_draw("0", "b.journal") == alone  # the same seed, the same first point
    assert first_draw("1", "c.journal") != alone  # worker 1 of 2 started together

    # No index (two hosts started by hand): the order in which they open the study is one.
    monkeypatch.delenv("PROTOLAB_WORKER_INDEX")
    storage = open_storage(str(tmp_path / "d.journal"))
    studies = [open_study(ctx, storage) for _ in range(2)]  # both before either asks
    for study in studies:
        join_study(ctx, study)
    draws = [float(study.ask({"x": x}).params["x"]) for study in studies]
    assert draws[0] == alone and draws[1] != alone
    assert studies[0].user_attrs["protolab.workers_joined"] == 2


@pytest.mark.parametrize("bad", ["0", "two", "-3"])
def test_bad_workers_exit_2_before_anything_is_written(workdir: Path, bad: str) -> None:
    cfg = _project(workdir, 2, 1)
    result = CliRunner().invoke(app, ["sweep", str(cfg), "--workers", bad])
    assert result.exit_code == 2, result.output
    assert "--workers" in result.stderr and "Traceback" not in result.stderr
    assert not (workdir / "mlruns").exists()


@pytest.mark.slow
def test_two_workers_reach_exactly_n_trials(tmp_path: Path) -> None:
    cfg = _project(tmp_path, n_trials=5, epochs=2, barrier=True)
    proc = _launch(cfg, "2")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "2 workers, 1 threads each" in out or "2 workers" in out
    assert "imported torch, lightning.fabric once for the workers" in out  # then forked
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [State.COMPLETE] * 5  # exactly, none over-asked
    owners = {t.user_attrs["protolab.worker"] for t in trials}
    assert len(owners) == 2
    assert len({o.split(":")[2] for o in owners}) == 2  # a token each, though forked
    assert len(list((tmp_path / "arrived").iterdir())) == 2  # both met at the barrier
    logs = sorted((tmp_path / "mlruns" / "workers").glob("worker-*.log"))
    assert [p.name for p in logs] == ["worker-0.log", "worker-1.log"]


@pytest.mark.slow
def test_a_static_worker_is_recycled_after_recycle_after_trials(tmp_path: Path) -> None:
    """TensorFlow keeps every compiled program: a fresh process every 2 trials here."""
    cfg = _project(tmp_path, n_trials=3, epochs=1, backend="tf-graph")
    proc = _launch(cfg, "1", "hardware.recycle_after=2")
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-3000:]
    assert out.count("recycled (hardware.recycle_after)") == 1, out[-3000:]
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [State.COMPLETE] * 3
    owners = [t.user_attrs["protolab.worker"] for t in trials]
    assert [owners.count(o) for o in dict.fromkeys(owners)] == [2, 1]  # 2 processes
    log = (tmp_path / "mlruns" / "workers" / "worker-0.log").read_text()
    assert log.count("a fresh one takes over") == 1  # one log across the successors


def test_a_dynamic_only_worker_is_never_recycled(make_project: Callable[..., Path]) -> None:
    """Eager PyTorch frees what a trial built: no restart (and no import paid again)."""
    import os

    from protolab.sweep import _worker

    cfg = make_project()
    os.environ[_worker.RECYCLE_ENV] = "1"
    try:
        result = CliRunner().invoke(app, ["sweep", str(cfg)])
    finally:
        del os.environ[_worker.RECYCLE_ENV]
    assert result.exit_code == 0, result.output
    assert len({t.user_attrs["protolab.worker"] for t in _trials(cfg.parent)}) == 1


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_cleanly(tmp_path: Path) -> None:
    cfg = _project(tmp_path, n_trials=50, epochs=3000)  # interrupted long before it ends
    proc = _launch(cfg, "2")
    deadline = time.time() + 240
    # RUNNING with its params drawn: a trial interrupted before its first param has nothing
    # to retry (the next run asks afresh), so the two WAITING retries below need both drawn.
    while sum(t.state == State.RUNNING and bool(t.params) for t in _trials(tmp_path)) < 2:
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, out[-3000:]
    assert out.count("exited 130") == 2
    trials = _trials(tmp_path)
    assert not [t.number for t in trials if t.state == State.RUNNING]
    failed = [t for t in trials if t.state == State.FAIL]
    assert len(failed) == 2  # both workers' trials, each re-enqueued for the next run
    assert {t.user_attrs.get("protolab.fail_reason") for t in failed} == {"interrupted"}
    assert sum(t.state == State.WAITING for t in trials) == 2


def _child_runs(root: Path) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id]) if exp is not None else []
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.mark.slow
def test_a_worker_killed_by_9_has_its_runs_ended_by_its_writer(tmp_path: Path) -> None:
    """Each forked worker's writer (from the launcher's pool) sees its pipe close when that
    worker dies, and ends its runs FAILED: no other process holds the worker's end. (The
    other worker's trial lasts far longer than this test, so it never reaps the dead one's.)"""
    cfg = _project(tmp_path, n_trials=50, epochs=100_000)
    proc = _launch(cfg, "2")
    try:
        deadline = time.time() + 240
        while len(running := [r for r in _child_runs(tmp_path) if r.info.status == "RUNNING"]) < 2:
            assert time.time() < deadline and proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(0.5)
        victim = running[0]
        pid = int(victim.data.tags["protolab.worker"].split(":")[1])
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 60
        while (run := _run(tmp_path, victim.info.run_id)).info.status == "RUNNING":
            assert time.time() < deadline, "the killed worker's run stayed RUNNING"
            time.sleep(0.5)
        assert run.info.status == "FAILED"
        assert run.data.tags["protolab.fail_reason"] == "worker died"
        others = [r for r in _child_runs(tmp_path) if r.info.run_id != victim.info.run_id]
        assert any(r.info.status == "RUNNING" for r in others)  # the other worker goes on
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=180)


def _run(root: Path, run_id: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}").get_run(run_id)
