"""The metrics contract (DESIGN §7) on both backends, timer accuracy, the device-peak cache."""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from protolab import Arch
from protolab import layers as L
from protolab.backends import Hardware, Job, TrainSettings, get_backend
from protolab.data import load_dataset

pytestmark = pytest.mark.slow
runner = CliRunner()
CPU = Hardware(accelerator="cpu")

CONTRACT = [
    "time/import_s", "time/build_s", "time/compile_s", "time/first_step_s",
    "time/first_epoch_s", "time/step_ms", "time/step_ms_p90", "time/epoch_s", "time/train_s",
    "time/eval_s", "time/trial_s", "throughput/samples_per_s", "memory/peak_rss_mb",
    "memory/peak_device_mb", "model/params", "model/flops_per_sample", "perf/tflops",
    "perf/mfu", "device/peak_tflops", "train/loss", "val/loss", "val/acc",
]  # fmt: skip

PAIRED = """\
experiment: exp.py
backends: [lightning, keras]
study: {name: paired, n_trials: 2, sampler: random, pruner: none}
train: {epochs: 2, batch_size: 128, lr: 0.01}
hardware: {accelerator: cpu}
"""


@pytest.fixture(scope="module")
def paired_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One real paired sweep (2 trials x 2 backends) shared by this module's tests."""
    import os

    from tests.conftest import TINY_MLP

    root = tmp_path_factory.mktemp("paired")
    (root / "exp.py").write_text(TINY_MLP)
    (root / "cfg.yaml").write_text(PAIRED)
    old = Path.cwd()
    os.chdir(root)
    try:
        from protolab.cli import app

        result = runner.invoke(app, ["sweep", "cfg.yaml"])
        assert result.exit_code == 0, result.output
        yield root
    finally:
        os.chdir(old)


def _children(root: Path) -> list:  # type: ignore[type-arg]
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("paired")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_every_child_run_carries_the_contract_and_sane_values(paired_store: Path) -> None:
    children = _children(paired_store)
    assert len(children) == 4
    for run in children:
        m = run.data.metrics
        missing = [k for k in CONTRACT if k not in m]
        assert not missing, f"{run.info.run_name} lacks {missing}"
        assert 0 < m["time/first_step_s"] <= m["time/first_epoch_s"] <= m["time/trial_s"]
        assert 0 < m["perf/mfu"] <= 1
        assert m["time/step_ms"] <= m["time/step_ms_p90"]
        assert m["throughput/samples_per_s"] == pytest.approx(128 / (m["time/step_ms"] / 1000))
        tags = run.data.tags
        assert tags["protolab.env.torch"] and tags["protolab.env.keras"]
        assert tags["protolab.cold_start"] in ("true", "false")
        if tags["protolab.backend"] == "keras":
            assert m["time/compile_s"] > 0
            assert tags["protolab.loop"] == "epoch-xla"


def test_pairs_share_params_flops_and_pair_tag(paired_store: Path) -> None:
    by_pair: dict[str, list] = {}  # type: ignore[type-arg]
    for run in _children(paired_store):
        by_pair.setdefault(run.data.tags["protolab.pair"], []).append(run)
    assert len(by_pair) == 2
    for pair, runs in by_pair.items():
        assert sorted(r.data.tags["protolab.backend"] for r in runs) == ["keras", "lightning"]
        assert len({r.data.metrics["model/params"] for r in runs}) == 1
        assert len({r.data.metrics["model/flops_per_sample"] for r in runs}) == 1
        assert len({r.data.tags["protolab.arch_hash"] for r in runs}) == 1
        mode_keys = {"backend", "family", "mode"}  # the one thing a pair's runs differ in
        same = [{k: v for k, v in r.data.params.items() if k not in mode_keys} for r in runs]
        assert same[0] == same[1]
        assert {r.data.params["backend"] for r in runs} == {"keras", "lightning"}
        trial = pair.rsplit("/t", 1)[1]
        assert {r.info.run_name for r in runs} == {f"t{trial}-lightning", f"t{trial}-keras"}
        for r in runs:  # both learn: far above the 10 % of chance
            assert r.data.metrics["val/acc"] > 0.5


def test_parent_run_has_sweep_metrics(paired_store: Path) -> None:
    client = MlflowClient(f"sqlite:///{paired_store / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("paired")
    assert exp is not None
    (parent,) = [
        r for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("protolab.role") == "parent"
    ]  # fmt: skip
    m = parent.data.metrics
    assert m["sweep/trials_complete"] == 2 and m["sweep/trials_failed"] == 0
    assert 0 < m["sweep/overhead_frac"] < 1
    assert m["sweep/wall_s"] > 0 and m["sweep/trials_per_min"] > 0
    best = max(r.data.metrics["val/acc"] for r in _children(paired_store)
               if r.data.tags["protolab.backend"] == "lightning")  # fmt: skip
    assert m["sweep/best_value"] == pytest.approx(best)


def _digits_job(epochs: int, batch: int = 64) -> Job:
    ds = load_dataset("digits")
    arch = Arch(L.Flatten(), L.Dense(32, "relu"), L.Dense(10))
    return Job(arch, ds, TrainSettings(epochs, batch, "adam", 1e-3), CPU)


def test_dynamic_step_timer_matches_an_injected_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 20 ms sleep per optimizer step: time/step_ms must match the test's own clock (10 %)."""
    import torch

    job = _digits_job(epochs=2)
    sleep_s = 0.020
    original = torch.optim.AdamW.step
    ends: list[float] = []

    def slow_step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(sleep_s)
        out = original(self, *args, **kwargs)
        ends.append(time.perf_counter())  # the test's independent clock
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", slow_step)
    stamps: list[float] = []
    t0 = time.perf_counter()
    result = get_backend("lightning").run(job, lambda e, m: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    m = result.metrics
    steps = len(job.dataset.x_train) // 64
    # Step durations by the test's clock, within each epoch (the backend also skips step 1).
    per_epoch = (ends[:steps], ends[steps:])
    independent = [b - a for epoch in per_epoch for a, b in itertools.pairwise(epoch)]
    assert m["time/step_ms"] >= sleep_s * 1000
    assert m["time/step_ms"] == pytest.approx(statistics.median(independent) * 1000, rel=0.10)
    # Epoch 2 measured independently (between the epoch callbacks) vs the backend's figure.
    assert result.history[1]["time/epoch_s"] == pytest.approx(stamps[1] - stamps[0], rel=0.10)
    assert m["time/trial_s"] == pytest.approx(wall, rel=0.10)


def test_static_epoch_timer_excludes_an_injected_sleep_per_epoch() -> None:
    """A 0.3 s sleep after each epoch lands in trial time, not in step or epoch train time."""
    job = _digits_job(epochs=3)
    sleep_s = 0.3
    stamps: list[float] = []

    def hook(epoch: int, metrics: dict[str, float]) -> None:
        stamps.append(time.perf_counter())
        time.sleep(sleep_s)

    t0 = time.perf_counter()
    result = get_backend("keras").run(job, hook)
    wall = time.perf_counter() - t0
    m = result.metrics
    assert m["time/trial_s"] == pytest.approx(wall, rel=0.10)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    epochs = [h["time/epoch_s"] for h in result.history[1:]]
    # Independent wall clock between callbacks = the sleep + the backend's epoch time.
    for gap, epoch_s in zip(gaps, epochs, strict=True):
        assert gap == pytest.approx(sleep_s + epoch_s, rel=0.10)
    steps = len(job.dataset.x_train) // 64
    assert m["time/train_s"] < 3 * sleep_s  # the sleeps are not counted as training
    assert m["time/step_ms"] * steps / 1000 == pytest.approx(
        statistics.median(h["time/epoch_s"] for h in result.history), rel=0.5, abs=0.05
    )


def test_peak_probe_is_cached_per_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from protolab.backends._peak import peak_tflops
    from protolab.backends.torch.core import gemm

    monkeypatch.setenv("PROTOLAB_CACHE", str(tmp_path))
    first = peak_tflops("cpu", "test-cpu", "float32", 1, gemm)
    assert 0 < first < 100  # a CPU core: GFLOP/s to a few TFLOP/s
    cache = json.loads((tmp_path / "peak.json").read_text())
    (key,) = cache
    assert "test-cpu|float32|1" in key
    cache[key] = 1.2345  # a second call must read the cache, not probe again
    (tmp_path / "peak.json").write_text(json.dumps(cache))
    assert peak_tflops("cpu", "test-cpu", "float32", 1, gemm) == 1.2345
    assert peak_tflops("cpu", "other-cpu", "float32", 1, gemm) != 1.2345
