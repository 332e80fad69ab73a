"""Every layer trains on both frameworks, every mode on each layer family (real frameworks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protolab.arch._catalogue import CATALOGUE, Example
from protolab.backends import Hardware, Job, TrainSettings, backend_info, backend_names, get_backend
from protolab.backends._loops import has_convolution
from protolab.data import Dataset, load_dataset
from protolab.errors import ArchError

pytestmark = pytest.mark.slow
CPU = Hardware(accelerator="cpu")
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


# Every mode behind the registry. Every catalogue layer trains on both frameworks' main
# modes (lightning: the torch builder; keras: the Keras builder under XLA). The other modes
# reuse those builders and differ in the program around them, so they train one model per
# layer family (dense, int inputs, conv, norms, recurrent, residual, attention, transposed
# conv): tf-graph and jax on that subset, torch.compile (~10-20 s of inductor compile per
# model on this CPU) on three of them.
MODES = ["lightning", "torch-compile", "tf-graph", "keras", "jax"]
EVERY_LAYER = {"lightning", "keras"}
FAMILY_SUBSET = {
    "mlp",
    "mlp_uint8_pixels",
    "conv_batchnorm",
    "lstm",
    "residual_conv2d_stride2",
    "causal_attention",
    "text_transformer",
    "conv_transpose_depthwise",
}
COMPILE_SUBSET = {"mlp", "conv_batchnorm", "attention"}


def test_registry_lists_every_mode_with_its_family() -> None:
    assert set(MODES) <= set(backend_names())
    families = {name: get_backend(name).family for name in MODES}
    assert families == {
        "lightning": "dynamic",
        "torch-compile": "dynamic",
        "tf-graph": "static",
        "keras": "static",
        "jax": "static",
    }
    assert [n for n in MODES if backend_info(n).eager] == ["lightning"]


def _cases() -> list[tuple[str, Example]]:
    names = {e.name for e in CATALOGUE}
    assert names >= FAMILY_SUBSET | COMPILE_SUBSET, names  # the subsets name real entries
    subset = {"torch-compile": COMPILE_SUBSET}
    return [
        (mode, e)
        for mode in MODES
        for e in CATALOGUE
        if mode in EVERY_LAYER or e.name in subset.get(mode, FAMILY_SUBSET)
    ]


@pytest.mark.parametrize(("mode", "example"), _cases(), ids=lambda v: getattr(v, "name", v))
def test_every_layer_trains_on_every_mode_with_the_arch_param_count(
    mode: str, example: Example
) -> None:
    info = example.arch.infer(example.input_shape, example.input_dtype)
    if len(info.output_shape) > 1:
        pytest.skip("sequence output: covered by the builder tests")
    ds = _dataset_for(example)
    backend = get_backend(mode)
    try:
        result = backend.run(Job(example.arch, ds, SETTINGS, CPU))
        out = result.model.predict(ds.x_val[:3]) if result.model is not None else None
    finally:
        backend.release()
    assert result.metrics["model/params"] == info.params  # the native model's own count
    assert result.metrics["model/flops_per_sample"] == info.flops_per_sample
    assert len(result.history) == 2
    assert all(math.isfinite(h["train/loss"]) for h in result.history)
    assert out is not None and out.shape == (3, *info.output_shape)  # the trained handle
    assert np.isfinite(out).all()
    if mode in ("keras", "tf-graph", "jax"):  # in-memory data: one program per epoch, but a
        # convolution under XLA on a CPU trains step by step (backends/_loops.py)
        steps = mode != "tf-graph" and has_convolution(example.arch)
        assert result.tags["loop"].startswith("step-" if steps else "epoch-")


@pytest.mark.parametrize("backend", MODES)
def test_every_mode_learns_digits(backend: str) -> None:
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
    assert m["time/step_ms_p10"] <= m["time/step_ms"] <= m["time/step_ms_p90"]
    assert m["train/steps"] == 3 * m["train/steps_per_epoch"] == 3 * (len(ds.x_train) // 32)
    assert m["time/step_ms"] > 0 and m["throughput/samples_per_s"] > 0
    assert "time/epoch_step_ms" in result.history[-1]  # per-epoch spread for the report


def test_keras_step_loop_fallback_is_tagged(monkeypatch: pytest.MonkeyPatch) -> None:
    from protolab import Arch
    from protolab import layers as L

    monkeypatch.setenv("PROTOLAB_KERAS_LOOP", "step")
    ds = load_dataset("moons")
    arch = Arch(L.Dense(16, "tanh"), L.Dense(2))
    settings = TrainSettings(epochs=2, batch_size=64, optimizer="sgd", lr=0.05)
    for name, loop in (("keras", "step-xla"), ("tf-graph", "step-graph")):
        result = get_backend(name).run(Job(arch, ds, settings, CPU))
        assert result.tags["loop"] == loop
        assert result.metrics["val/acc"] > 0.7


@pytest.mark.slow
def test_xla_modes_train_a_convnet_step_by_step_on_a_cpu() -> None:
    """XLA's CPU backend runs a convolution inside a whole-epoch loop ~4x slower than in
    a program of its own (backends/_loops.py): a conv Arch gets per-step programs on the
    XLA modes, an MLP keeps its whole epoch, a TF graph keeps its whole epoch either way."""
    from protolab import Arch
    from protolab import layers as L

    ds = load_dataset("digits")
    conv = Arch(L.Conv2D(4, 3, padding="same"), L.GlobalAvgPool(), L.Dense(10))
    mlp = Arch(L.Flatten(), L.Dense(10))
    settings = TrainSettings(epochs=1, batch_size=128, optimizer="adam", lr=1e-3)
    expect = {
        ("keras", conv): ("step-xla", "convolution on CPU: per-step"),
        ("keras", mlp): ("epoch-xla", "whole-epoch"),
        ("tf-graph", conv): ("epoch-graph", "whole-epoch"),
        ("jax", conv): ("step-jax", "convolution on CPU: per-step"),
    }
    for (name, arch), (loop, rule) in expect.items():
        tags = get_backend(name).run(Job(arch, ds, settings, CPU)).tags
        assert (tags["loop"], tags["loop_rule"]) == (loop, rule), name


def test_pruning_hook_stops_a_job_in_its_worker_process() -> None:
    """The JAX mode runs in its own process: a hook that raises there still stops it."""
    from protolab import Arch
    from protolab import layers as L

    class Pruned(Exception):
        pass

    def prune_after_two(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 2:
            raise Pruned("pruned after epoch 2")

    backend = get_backend("jax")
    ds = load_dataset("moons")
    arch = Arch(L.Dense(8, "relu"), L.Dense(2))
    settings = TrainSettings(epochs=5, batch_size=64, optimizer="adam", lr=1e-2)
    seen: list[int] = []
    with pytest.raises(Pruned):
        backend.run(
            Job(arch, ds, settings, CPU), lambda e, m: (seen.append(e), prune_after_two(e, m))
        )
    assert seen == [1, 2]
    again = backend.run(Job(arch, ds, settings, CPU))  # the same worker serves the next job
    assert len(again.history) == 5
    assert again.tags["cold_start"] == "false"  # JAX was imported once, in the worker


def test_max_steps_caps_every_epoch() -> None:
    from protolab import Arch
    from protolab import layers as L

    ds = load_dataset("digits")
    short = TrainSettings(epochs=2, batch_size=16, optimizer="adam", lr=1e-3, max_steps=5)
    for name in ("lightning", "keras"):
        result = get_backend(name).run(Job(Arch(L.Flatten(), L.Dense(10)), ds, short, CPU))
        assert result.metrics["train/steps"] == 10


@pytest.mark.parametrize("backend", ["lightning", "tf-graph", "jax"])
def test_regression_reports_rmse(backend: str) -> None:
    from protolab import Arch
    from protolab import layers as L

    ds = load_dataset("sine")
    arch = Arch(L.Flatten(), L.Dense(32, "tanh"), L.Dense(1))
    settings = TrainSettings(epochs=3, batch_size=64, optimizer="adam", lr=1e-2)
    result = get_backend(backend).run(Job(arch, ds, settings, CPU))
    assert "val/acc" not in result.metrics
    assert 0 < result.metrics["val/rmse"] < float(np.std(ds.y_val))  # beats predicting the mean


@pytest.mark.parametrize("backend", MODES)
def test_wrong_output_width_names_the_fix(backend: str) -> None:
    from protolab import Arch
    from protolab import layers as L

    ds = load_dataset("digits")
    with pytest.raises(ArchError, match=r"outputs shape \(7,\).*needs \(10,\).*Dense\(10\)"):
        get_backend(backend).run(Job(Arch(L.Flatten(), L.Dense(7)), ds, SETTINGS, CPU))


@pytest.mark.parametrize("backend", ["lightning", "keras", "jax"])
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
    hw = Hardware(accelerator="gpu", devices=2)
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
    hw = Hardware(accelerator="gpu", precision="bf16")
    arch = Arch(L.Flatten(), L.Dense(64, "relu"), L.Dense(10))
    result = get_backend(backend).run(Job(arch, ds, SETTINGS, hw))
    assert result.metrics["memory/peak_device_mb"] > 0
    assert "gpu" in result.tags["device"].lower() or "cuda" in result.tags["device"]


def test_lightning_threads_knob_sets_torch_threads() -> None:
    import torch

    from protolab import Arch
    from protolab import layers as L

    before = torch.get_num_threads()
    hw = Hardware(accelerator="cpu", threads=1)
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
from protolab.backends import Hardware
from protolab.data import load_dataset

ds, arch = load_dataset("moons"), Arch(L.Dense(8, "relu"), L.Dense(2))
settings = TrainSettings(epochs=1, batch_size=16, optimizer="adam", lr=1e-2, seed=0)
tags = []
for threads in (1, 2):  # TF's pools are built once: the second value is too late, not a crash
    backend = get_backend("keras")
    hw = Hardware(accelerator="cpu", threads=threads)
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
