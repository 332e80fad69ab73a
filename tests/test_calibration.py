"""The aliases' calibration trains what the alias then runs; the JAX per-step loop's tail."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from protolab import Arch
from protolab import layers as L
from protolab.backends import Hardware, Job, TrainSettings, get_backend
from protolab.backends._cache import job_key
from protolab.backends._calibrate import resolve, short_job
from protolab.backends._threads import chosen_threads, torch_default_threads
from protolab.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
CPU = Hardware(accelerator="cpu")
MLP = Arch(L.Flatten(), L.Dense(32, "relu"), L.Dense(10))


def _job(epochs: int = 8, batch: int = 64, **train: object) -> Job:
    settings = TrainSettings(epochs, batch, "adam", 1e-3, **train)
    return Job(MLP, load_dataset("digits"), settings, CPU)


def test_dynamic_calibration_keeps_the_jobs_shape_and_its_thread_key() -> None:
    """A per-epoch cap made the calibration's thread key another one than the job's: the
    eager probe's choice never reached the alias's compiled run (issue 26)."""
    job = _job()
    per_epoch = len(job.dataset.x_train) // 64  # 19: three whole epochs fit in 60 steps
    short = short_job("dynamic", job)
    assert job_key("threads", short) == job_key("threads", job)
    assert short.train.max_steps is None and short.train.epochs == 60 // per_epoch == 3
    assert short.train.epochs * per_epoch <= short.train.max_total_steps == 60
    # an epoch longer than the whole calibration: one epoch, capped
    assert short_job("dynamic", _job(batch=8)).train.epochs == 1
    assert short_job("dynamic", _job(max_total_steps=30)).train.max_total_steps == 30
    static = short_job("static", job)  # whole-epoch programs: cut epochs, steady from the 2nd
    assert (static.train.epochs, static.train.max_steps) == (3, 20)


@pytest.mark.slow
def test_the_eager_calibration_run_chooses_threads_for_the_job_itself() -> None:
    if torch_default_threads() < 2:
        pytest.skip("torch runs one thread here: nothing to probe")
    job = _job(epochs=3)
    get_backend("lightning").run(short_job("dynamic", job))
    assert chosen_threads(job_key("threads", job)) is not None  # the alias's run reads it


@pytest.mark.slow
def test_jax_step_loop_trains_the_ragged_tail() -> None:
    """A convolution on a CPU trains step by step on JAX; the last, smaller batch is a
    program of its own (one compiled for the full batch refused its shape)."""
    conv = Arch(L.Conv2D(4, 3, padding="same"), L.GlobalAvgPool(), L.Dense(10))
    ds = load_dataset("digits")
    settings = TrainSettings(2, 100, "adam", 1e-2, drop_last=False)
    result = get_backend("jax").run(Job(conv, ds, settings, CPU))
    steps = -(-len(ds.x_train) // 100)
    assert len(ds.x_train) % 100  # a tail to train
    assert result.tags["loop"] == "step-jax"
    assert result.metrics["train/steps"] == 2 * steps
    assert all(math.isfinite(h["train/loss"]) for h in result.history)


def test_an_alias_and_its_pick_by_name_run_once() -> None:
    """``[dynamic, lightning]`` where dynamic picks lightning (cold compile cache): one
    lightning run, carrying the alias's calibration; it used to train twice under one run
    name, and the first run was never ended (it ended FAILED, "worker exited ...")."""
    job = _job(epochs=1)
    for names in (["dynamic", "lightning"], ["lightning", "dynamic"]):
        modes = resolve(names, job)
        assert [n for n, _ in modes].count("lightning") == 1, (names, modes)
    (first, choice), *_ = resolve(["dynamic", "lightning"], job)
    if first == "lightning":
        assert choice is not None  # run as the alias's pick, its calibration kept


@pytest.mark.slow
def test_protolab_run_with_an_alias_and_its_pick_ends_every_run(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"experiment: {ROOT / 'experiments' / 'digits_mlp.py'}\n"
        "backends: [dynamic, lightning]\n"
        "train: {epochs: 1, batch_size: 64}\nhardware: {accelerator: cpu}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "run", str(cfg)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
        if "protolab.backend" in r.data.tags
    ]
    assert runs and all(r.info.status == "FINISHED" for r in runs), [
        (r.info.run_name, r.info.status, r.data.tags.get("protolab.fail_reason")) for r in runs
    ]
    names = [r.info.run_name for r in runs]
    assert len(names) == len(set(names)), names
    assert all("test/acc" in r.data.metrics for r in runs)


def test_the_eager_step_skips_fabrics_wrappers_only_where_they_do_nothing() -> None:
    """At full precision on one device the eager step calls the module and ``backward``
    directly (Fabric's wrappers cost 7-8 % of a small step there); bf16 needs Fabric's
    autocast and stays on what ``fabric.setup`` returned. Both train: the loss falls."""
    import torch

    from protolab.backends.torch.trainer import EagerProgram

    plain = EagerProgram("lightning", _job(epochs=2))
    assert plain.forward is plain.module and plain.forward is not plain.model
    assert plain.backward is torch.Tensor.backward
    hw = Hardware(accelerator="cpu", precision="bf16")
    bf16 = EagerProgram("lightning", Job(MLP, load_dataset("digits"), _job().train, hw))
    assert bf16.forward is bf16.model and bf16.forward is not bf16.module
    for prog in (plain, bf16):
        first, second = prog.fit_epoch(1).loss, prog.fit_epoch(2).loss
        assert math.isfinite(first) and second < first
