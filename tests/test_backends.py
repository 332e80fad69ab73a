"""Both backends train every layer type with the Arch's parameter count (real torch + keras)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protolab.arch._catalogue import CATALOGUE, Example
from protolab.backends import Job, TrainSettings, backend_names, get_backend
from protolab.config import HardwareConfig
from protolab.data import Dataset, load_dataset
from protolab.errors import ArchError

pytestmark = pytest.mark.slow
CPU = HardwareConfig(accelerator="cpu")
SETTINGS = TrainSettings(epochs=2, batch_size=16, optimizer="adam", lr=1e-2, seed=0)


def _dataset_for(example: Example) -> Dataset:
    """Random data shaped for the example: classification over its output units."""
    out = example.arch.infer(example.input_shape, example.input_dtype).output_shape
    rng = np.random.default_rng(0)
    n = 64
    shape = (n, *example.input_shape)
    if example.input_dtype.startswith("int"):
        x = rng.integers(0, 10, size=shape).astype(np.int64)
    else:
        x = rng.random(shape, dtype=np.float32)
    if len(out) == 1 and out[0] >= 2:
        y = rng.integers(0, out[0], size=n).astype(np.int64)
        task, classes = "classification", out[0]
    else:  # sequence outputs: regress every position
        y = rng.random((n, *out), dtype=np.float32).reshape(n, -1)
        task, classes = "regression", None
    cut = 48
    return Dataset(example.name, x[:cut], y[:cut], x[cut:], y[cut:], task, classes)


def test_registry_lists_both_backends() -> None:
    assert {"lightning", "keras"} <= set(backend_names())
    assert get_backend("lightning").family == "dynamic"
    assert get_backend("keras").family == "static"


@pytest.mark.parametrize("example", CATALOGUE, ids=[e.name for e in CATALOGUE])
def test_every_layer_trains_on_both_backends_with_the_arch_param_count(example: Example) -> None:
    info = example.arch.infer(example.input_shape, example.input_dtype)
    ds = _dataset_for(example)
    if len(info.output_shape) > 1:
        pytest.skip("sequence output: covered by the builder tests")
    results = {}
    for name in ("lightning", "keras"):
        backend = get_backend(name)
        try:
            results[name] = backend.run(Job(example.arch, ds, SETTINGS, CPU))
        finally:
            backend.release()
    for name, result in results.items():
        assert result.metrics["model/params"] == info.params, name
        assert result.metrics["model/flops_per_sample"] == info.flops_per_sample
        assert len(result.history) == 2
        assert all(math.isfinite(h["train/loss"]) for h in result.history), name
    assert results["keras"].tags["loop"] == "epoch-xla"  # in-memory data: one program/epoch


@pytest.mark.parametrize("backend", ["lightning", "keras"])
def test_both_backends_learn_digits(backend: str) -> None:
    from protolab import Arch
    from protolab import layers as L

    ds = load_dataset("digits")
    arch = Arch(L.Flatten(), L.Dense(64, "relu"), L.Dropout(0.1), L.Dense(10))
    seen: list[int] = []
    settings = TrainSettings(epochs=3, batch_size=32, optimizer="adam", lr=3e-3, seed=1)
    result = get_backend(backend).run(
        Job(arch, ds, settings, CPU), lambda epoch, m: seen.append(epoch)
    )
    assert seen == [1, 2, 3]
    assert result.metrics["val/acc"] > 0.85  # chance is 0.10
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]
    m = result.metrics
    assert 0 < m["time/first_step_s"] <= m["time/first_epoch_s"] <= m["time/trial_s"]
    assert m["time/step_ms"] > 0 and m["throughput/samples_per_s"] > 0


def test_keras_step_loop_fallback_is_tagged(monkeypatch: pytest.MonkeyPatch) -> None:
    from protolab import Arch
    from protolab import layers as L

    monkeypatch.setenv("PROTOLAB_KERAS_LOOP", "step")
    ds = load_dataset("moons")
    arch = Arch(L.Dense(16, "tanh"), L.Dense(2))
    settings = TrainSettings(epochs=2, batch_size=64, optimizer="sgd", lr=0.05)
    result = get_backend("keras").run(Job(arch, ds, settings, CPU))
    assert result.tags["loop"] == "step-xla"
    assert result.metrics["val/acc"] > 0.7


@pytest.mark.parametrize("backend", ["lightning", "keras"])
def test_regression_reports_rmse(backend: str) -> None:
    from protolab import Arch
    from protolab import layers as L

    ds = load_dataset("sine")
    arch = Arch(L.Flatten(), L.Dense(32, "tanh"), L.Dense(1))
    settings = TrainSettings(epochs=3, batch_size=64, optimizer="adam", lr=1e-2)
    result = get_backend(backend).run(Job(arch, ds, settings, CPU))
    assert "val/acc" not in result.metrics
    assert 0 < result.metrics["val/rmse"] < float(np.std(ds.y_val))  # beats predicting the mean


@pytest.mark.parametrize("backend", ["lightning", "keras"])
def test_wrong_output_width_names_the_fix(backend: str) -> None:
    from protolab import Arch
    from protolab import layers as L

    ds = load_dataset("digits")
    with pytest.raises(ArchError, match=r"outputs shape \(7,\).*needs \(10,\).*Dense\(10\)"):
        get_backend(backend).run(Job(Arch(L.Flatten(), L.Dense(7)), ds, SETTINGS, CPU))


@pytest.mark.parametrize("backend", ["lightning", "keras"])
def test_nan_loss_stops_the_job(backend: str) -> None:
    from protolab import Arch
    from protolab import layers as L
    from protolab.errors import NonFiniteLossError

    ds = load_dataset("moons")
    x = ds.x_train.copy()
    x[0, 0] = np.inf  # one bad sample poisons the loss
    bad = Dataset("bad", x, ds.y_train, ds.x_val, ds.y_val, "classification", 2)
    settings = TrainSettings(epochs=3, batch_size=len(x), optimizer="sgd", lr=0.1)
    with pytest.raises(NonFiniteLossError):
        get_backend(backend).run(Job(Arch(L.Dense(4), L.Dense(2)), bad, settings, CPU))


def _gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


@pytest.mark.skipif("_gpus() < 2", reason="needs 2 GPUs (MirroredStrategy)")
def test_keras_mirrored_strategy_on_two_gpus() -> None:
    from protolab import Arch
    from protolab import layers as L

    ds = load_dataset("digits")
    hw = HardwareConfig(accelerator="gpu", devices=2)
    arch = Arch(L.Flatten(), L.Dense(64, "relu"), L.Dense(10))
    settings = TrainSettings(epochs=3, batch_size=64, optimizer="adam", lr=3e-3)
    result = get_backend("keras").run(Job(arch, ds, settings, hw))
    assert result.tags["loop"] == "step-xla"
    assert result.metrics["val/acc"] > 0.8


@pytest.mark.skipif(
    "not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU (none here)"
)
@pytest.mark.parametrize("backend", ["lightning", "keras"])
def test_gpu_bf16_training(backend: str) -> None:
    from protolab import Arch
    from protolab import layers as L

    ds = load_dataset("digits")
    hw = HardwareConfig(accelerator="gpu", precision="bf16")
    arch = Arch(L.Flatten(), L.Dense(64, "relu"), L.Dense(10))
    result = get_backend(backend).run(Job(arch, ds, SETTINGS, hw))
    assert result.metrics["memory/peak_device_mb"] > 0
    assert "gpu" in result.tags["device"].lower() or "cuda" in result.tags["device"]


def test_lightning_threads_knob_sets_torch_threads() -> None:
    import torch

    from protolab import Arch
    from protolab import layers as L

    before = torch.get_num_threads()
    hw = HardwareConfig(accelerator="cpu", threads=1)
    try:
        result = get_backend("lightning").run(
            Job(Arch(L.Dense(8, "relu"), L.Dense(2)), load_dataset("moons"), SETTINGS, hw)
        )
    finally:
        torch.set_num_threads(before)  # the pool is per process: leave other tests theirs
    assert result.tags["torch_threads"] == "1"


_KERAS_THREADS = """
import json
from protolab import Arch
from protolab import layers as L
from protolab.backends import Job, TrainSettings, get_backend
from protolab.config import HardwareConfig
from protolab.data import load_dataset

ds, arch = load_dataset("moons"), Arch(L.Dense(8, "relu"), L.Dense(2))
settings = TrainSettings(epochs=1, batch_size=16, optimizer="adam", lr=1e-2, seed=0)
tags = []
for threads in (1, 2):  # TF's pools are built once: the second value is too late, not a crash
    backend = get_backend("keras")
    hw = HardwareConfig(accelerator="cpu", threads=threads)
    tags.append(backend.run(Job(arch, ds, settings, hw)).tags["tf_intra_threads"])
    backend.release()
print(json.dumps(tags))
"""


def test_keras_threads_knob_sets_tf_intra_threads() -> None:
    import json
    import subprocess
    import sys

    # A fresh process: TF reads its thread counts once, when its runtime starts.
    out = subprocess.run(
        [sys.executable, "-c", _KERAS_THREADS], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["1", "1"]
