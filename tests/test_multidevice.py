"""Multi-device trials on a CPU: 2 gloo DDP ranks (torch) and a 2-replica MirroredStrategy
over logical CPU devices (TensorFlow), with real frameworks, processes and stores.

Why the curves must match: with the same seed and the same global batch split evenly over
the devices, the gradient every step applies is the same batch mean as on one device;
only float32 summation order differs (two half-batch means averaged, an all-reduce), which
moves a loss by ~1e-7 relative per step. Over this job's 24 SGD steps that stays far below
``RTOL`` = 1e-4, while a real mistake moves the epoch losses by 10-100x that: a gradient
summed instead of averaged (the step doubles; the loss Keras scales per replica once too
often showed up as exactly half the loss), a shard trained twice or steps lost. SGD, not
Adam, so that a wrong gradient scale shows (Adam would normalise it away).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from protolab import layers as L
from protolab.arch import Arch
from protolab.backends import Hardware, Job, JobResult, TrainSettings, get_backend
from protolab.data import Dataset, load_dataset

pytestmark = pytest.mark.slow

RTOL = 1e-4
ARCH = Arch(L.Flatten(), L.Dense(32, activation="relu"), L.Dense(10))
TRAIN = TrainSettings(epochs=3, batch_size=64, optimizer="sgd", lr=0.05, seed=0, max_steps=8)
ONE, TWO = Hardware(accelerator="cpu"), Hardware(accelerator="cpu", devices=2)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


def _curve(result: JobResult) -> list[float]:
    return [h["train/loss"] for h in result.history]


def _run_multi(mode: str, ds: Dataset) -> tuple[JobResult, list[int]]:
    """The 2-device job, counting the epochs its hook saw (rank 0's only, once each)."""
    seen: list[int] = []
    result = get_backend(mode).run(Job(ARCH, ds, TRAIN, TWO), lambda e, _: seen.append(e))
    return result, seen


def _assert_matches(one: JobResult, two: JobResult, seen: list[int]) -> None:
    assert seen == [1, 2, 3], "one hook call per epoch: only rank 0 / the worker reports"
    assert len(two.history) == 3
    print("single", _curve(one), "multi", _curve(two))
    np.testing.assert_allclose(_curve(two), _curve(one), rtol=RTOL)
    assert two.tags["devices"] == "2" and two.tags["batch_per_device"] == "32"
    assert two.metrics["train/steps"] == one.metrics["train/steps"] == 24
    assert abs(two.metrics["val/acc"] - one.metrics["val/acc"]) < 1e-6


def test_ddp_two_gloo_ranks_train_one_result_with_the_single_device_curve(
    digits: Dataset,
) -> None:
    backend = get_backend("lightning")
    one = backend.run(Job(ARCH, digits, TRAIN, ONE))
    two, seen = _run_multi("lightning", digits)
    _assert_matches(one, two, seen)
    assert two.tags["strategy"] == "ddp-gloo" and two.tags["torch_threads"] == "1"
    x = digits.x_val[:64]  # rank 0's weights, rebuilt here: the trial's model is local
    np.testing.assert_allclose(two.model.predict(x), one.model.predict(x), rtol=1e-3, atol=1e-4)


def test_ddp_pruning_stops_every_rank_after_the_same_epoch(digits: Dataset) -> None:
    import optuna

    def prune(epoch: int, _: dict[str, float]) -> None:
        raise optuna.TrialPruned(f"pruned at {epoch}")

    backend = get_backend("lightning")
    with pytest.raises(optuna.TrialPruned):
        backend.run(Job(ARCH, digits, TRAIN, TWO), prune)
    again, seen = _run_multi("lightning", digits)  # the same ranks: none is left mid-job
    assert seen == [1, 2, 3] and len(again.history) == 3


def test_a_killed_rank_fails_the_job_and_leaves_no_rank_behind(digits: Dataset) -> None:
    from protolab.backends._process import WorkerDied

    backend = get_backend("lightning")
    launcher = backend._launcher  # type: ignore[attr-defined]
    assert launcher is not None
    procs = [r.proc for r in launcher._ranks]

    def kill_rank_1(epoch: int, _: dict[str, float]) -> None:
        procs[1].kill()

    with pytest.raises(WorkerDied, match="rank 1 of 2 died"):
        backend.run(Job(ARCH, digits, TRAIN, TWO), kill_rank_1)
    assert all(p.poll() is not None for p in procs) and launcher._ranks == []


def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A strategy trains with the per-step loop; on one device the same loop (a test knob)
    # sees the same sample order, where the whole-epoch program shuffles in-graph.
    monkeypatch.setenv("PROTOLAB_KERAS_LOOP", "step")
    backend = get_backend("tf-graph")
    one = backend.run(Job(ARCH, digits, TRAIN, ONE))
    backend.release()
    monkeypatch.delenv("PROTOLAB_KERAS_LOOP")
    try:
        two, seen = _run_multi("tf-graph", digits)
        _assert_matches(one, two, seen)
        assert two.tags["strategy"] == "MirroredStrategy"
        x = digits.x_val[:64]  # predicted by the worker that trained it
        np.testing.assert_allclose(two.model.predict(x), one.model.predict(x), atol=1e-4)
    finally:
        backend.release()
        worker = backend._replicas  # type: ignore[attr-defined]
        if worker is not None:
            worker.close()


def _marked(mark: str) -> list[int]:
    """Processes still alive that inherited ``mark`` in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


SWEEP = """\
experiment: exp.py
backends: [lightning, keras]
study: {name: multi, n_trials: 1, sampler: random, pruner: none}
train: {epochs: 2, batch_size: 128, optimizer: sgd, lr: 0.05}
hardware: {accelerator: cpu, devices: 2}
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sweep_with_two_devices_logs_one_run_per_trial_and_mode(
    make_project: Callable[..., Path], workdir: Path
) -> None:
    from mlflow.tracking import MlflowClient

    cfg = make_project(config=SWEEP)
    mark = f"PROTOLAB_TEST_MARK={uuid.uuid4().hex}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    proc = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "sweep", str(cfg)],
        capture_output=True, text=True, timeout=400, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("multi")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=100)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    pairs = sorted(
        (r.data.tags["protolab.trial"], r.data.tags["protolab.backend"]) for r in children
    )
    assert pairs == [("0", "keras"), ("0", "lightning")]
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["protolab.devices"] == "2"
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2  # once each
    deadline = time.monotonic() + 15  # ranks and workers exit when the sweep's pipes close
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _marked(mark) == [], "no rank or worker process outlives the sweep"


def _too_many(devices: int, backends: str) -> str:
    return textwrap.dedent(
        f"""\
        experiment: exp.py
        backends: [{backends}]
        study: {{name: many, n_trials: 1}}
        train: {{epochs: 1}}
        hardware: {{accelerator: cpu, devices: {devices}}}
        """
    )


def test_more_devices_than_cores_or_a_single_device_mode_exit_2_before_any_store(
    make_project: Callable[..., Path], workdir: Path
) -> None:
    from typer.testing import CliRunner

    from protolab.cli import app

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert cores
    cases = [(_too_many(cores + 1, "lightning"), f"allowed here: 1..{cores}")]
    if cores >= 2:  # else 2 devices is already more than the cores
        cases.append((_too_many(2, "torch-compile"), "torch-compile backend trains at most 1"))
    for text, message in cases:
        cfg = make_project(config=text)
        result = CliRunner().invoke(app, ["sweep", str(cfg)])
        assert result.exit_code == 2, result.output
        assert "hardware.devices" in result.output and message in result.output, result.output
        assert not (workdir / "mlruns").exists()
