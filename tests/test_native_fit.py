"""A compiled keras.Model trains through its own ``fit``: its compile, its callbacks, timed by
Keras' hooks, the metric contract reported, pruning and early stopping honoured."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

import protolab as pl
from protolab.backends import Hardware, Job, JobResult, TrainSettings, get_backend
from protolab.backends._keras_fit import contract_metrics, epoch_fit, unused_settings
from protolab.cli import app
from protolab.data import Dataset, load_dataset
from protolab.errors import ArchError

CPU = Hardware(accelerator="cpu")
SETTINGS = TrainSettings(epochs=3, batch_size=32, optimizer="adam", lr=1e-3)


def _series(path: Path, n: int = 320, length: int = 24) -> Dataset:
    """Two classes of short series: which half carries the larger mean."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, length, 1)) * 0.5
    x[y == 1, : length // 2] += 1.0
    x[y == 0, length // 2 :] += 1.0
    np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))
    return load_dataset(str(path))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return _series(tmp_path_factory.mktemp("fit") / "series.npz")


def small_model(shape: tuple[int, ...], metrics: tuple[str, ...] = ("sparse_categorical_accuracy",),
                **compile_kw: Any) -> keras.Model:  # fmt: skip
    """The time-series example's shape, small: Conv1D + BatchNorm + ReLU, GAP, softmax."""
    inputs = keras.Input(shape)
    h = keras.layers.Conv1D(8, 3, padding="same")(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, out)
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=list(metrics),
        **compile_kw,
    )
    return model


class Count(keras.callbacks.Callback):
    """Counts the hooks Keras calls on a user's callback."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs = self.batches = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs += 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.batches += 1


def _run(
    data: Dataset,
    mode: str = "tf-graph",
    callbacks: Callable[[], list[Any]] | None = None,
    settings: TrainSettings = SETTINGS,
    hook: Callable[[int, dict[str, float]], None] | None = None,
    **compile_kw: Any,
) -> JobResult:
    arch = pl.native(
        keras=lambda shape: small_model(shape, **compile_kw), keras_callbacks=callbacks
    )
    return get_backend(mode).run(Job(arch, data, settings, CPU), hook)


# ---------------------------------------------------------------- the mapping, no training


def test_keras_logs_map_to_the_contract() -> None:
    logs = {
        "loss": 0.5,
        "sparse_categorical_accuracy": 0.8,
        "learning_rate": 5e-4,
        "val_loss": 0.6,
        "val_sparse_categorical_accuracy": 0.75,
        "val_head_mae": 0.1,
    }
    out = contract_metrics(logs, classify=True)
    assert out == {
        **logs,  # every name Keras logs, as it logs it (a per-output metric too)
        "train/lr": 5e-4,
        "val/loss": 0.6,
        "val/acc": 0.75,  # the contract's names beside Keras' own
    }
    regression = contract_metrics({"val_loss": 1.0, "val_root_mean_squared_error": 2.0}, False)
    assert regression["val/rmse"] == 2.0 and regression["val/loss"] == 1.0
    assert "val/acc" not in contract_metrics({"val_accuracy": 0.9}, classify=False)
    assert contract_metrics({"val_acc": 0.9, "note": "text"}, True) == {
        "val_acc": 0.9,
        "val/acc": 0.9,
    }


def test_step_times_come_from_batch_ends() -> None:
    ends = [(0, 10.5), (1, 10.6), (2, 10.8), (5, 11.1)]  # the last call ran 3 steps
    first = epoch_fit({"loss": 0.3}, ends, t_epoch=10.0, first=True)
    assert first.loss == 0.3 and first.first_step_s == pytest.approx(0.5)
    assert first.step_s == pytest.approx([0.1, 0.2, 0.1, 0.1, 0.1])  # the first step left out
    later = epoch_fit({"loss": 0.2}, ends, t_epoch=10.0, first=False)
    assert later.step_s[0] == pytest.approx(0.5) and later.first_step_s is None
    assert math.isnan(epoch_fit({}, [], 0.0, first=True).loss)


def test_config_settings_a_compile_overrides_are_named() -> None:
    assert unused_settings(SETTINGS) == []
    odd = TrainSettings(epochs=2, batch_size=8, optimizer="sgd", lr=0.01, schedule="cosine")
    assert unused_settings(odd) == [
        "train.optimizer='sgd'",
        "train.lr=0.01",
        "train.schedule='cosine'",
    ]


def test_keras_callbacks_must_be_a_function() -> None:
    with pytest.raises(ArchError, match="keras_callbacks= must be a function"):
        pl.native(keras=small_model, keras_callbacks=[Count()])


# ---------------------------------------------------------------- training


@pytest.mark.slow
def test_user_callbacks_fire_once_per_epoch_and_step(data: Dataset) -> None:
    made: list[Count] = []
    result = _run(data, callbacks=lambda: made.append(Count()) or [made[-1]])
    steps = math.ceil(data.n_train / 32)  # fit trains the ragged last batch too
    assert len(made) == 1  # one factory call per trial
    assert made[0].epochs == 3 and made[0].batches == 3 * steps
    assert result.metrics["train/steps_per_epoch"] == steps
    assert result.metrics["train/steps"] == 3 * steps
    assert result.tags["loop"] == "fit-graph" and result.tags["callbacks"] == "Count"


@pytest.mark.slow
def test_whole_contract_is_reported(data: Dataset) -> None:
    result = _run(data)
    m = result.metrics
    for name in (
        "time/import_s", "time/build_s", "time/compile_s", "time/first_step_s",
        "time/first_epoch_s", "time/step_ms", "time/step_ms_p90", "time/train_s",
        "time/eval_s", "time/trial_s", "throughput/samples_per_s", "memory/peak_rss_mb",
        "memory/peak_device_mb", "model/params", "model/flops_per_sample",
        "train/loss", "val/loss", "val/acc",
    ):  # fmt: skip
        assert name in m and math.isfinite(m[name]), name
    assert 0 < m["time/first_step_s"] <= m["time/first_epoch_s"] <= m["time/trial_s"]
    assert m["time/step_ms_p10"] <= m["time/step_ms"] <= m["time/step_ms_p90"]
    assert m["time/compile_s"] > 0  # the first step traces the train function
    assert m["model/params"] == 24 + 8 + 16 + 18  # conv, its bias, BN gamma/beta, head
    for epoch in result.history:
        assert {"train/loss", "val/loss", "val/acc", "train/lr", "time/epoch_s"} <= set(epoch)
        assert epoch["val/acc"] == epoch["val_sparse_categorical_accuracy"]
    assert result.model is not None
    out = result.model.predict(data.x_val)
    assert out.shape == (data.n_val, 2)
    assert m["val/acc"] == pytest.approx(float(np.mean(out.argmax(-1) == data.y_val)), abs=1e-6)


@pytest.mark.slow
def test_contract_accuracy_is_scored_when_not_compiled(data: Dataset) -> None:
    result = _run(data, metrics=())
    assert result.model is not None
    out = result.model.predict(data.x_val)
    assert result.metrics["val/acc"] == pytest.approx(float(np.mean(out.argmax(-1) == data.y_val)))


@pytest.mark.slow
def test_reduce_lr_on_plateau_changes_the_optimizer_lr(data: Dataset) -> None:
    plateau = keras.callbacks.ReduceLROnPlateau
    settings = TrainSettings(epochs=4, batch_size=32, optimizer="adam", lr=1e-3)
    result = _run(data, callbacks=lambda: [plateau(patience=0, factor=0.5, min_delta=10.0)],
                  settings=settings)  # fmt: skip
    # never "improves" by 10: halved at the end of epochs 2, 3 and 4 (epoch 1 sets the best)
    lrs = [h["train/lr"] for h in result.history]
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])
    assert result.model is not None
    final = float(keras.ops.convert_to_numpy(result.model.native.optimizer.learning_rate))
    assert final == pytest.approx(1.25e-4)


@pytest.mark.slow
def test_user_early_stopping_ends_the_trial_early_and_says_so(data: Dataset) -> None:
    stop = keras.callbacks.EarlyStopping
    settings = TrainSettings(epochs=6, batch_size=32, optimizer="adam", lr=1e-3)
    result = _run(data, callbacks=lambda: [stop(patience=0, min_delta=10.0)], settings=settings)
    assert len(result.history) == 2  # epoch 1 sets the best, epoch 2 does not beat it by 10
    assert result.tags["stopped_early"] == "true"
    assert result.tags["stopped_by"] == "EarlyStopping"
    assert result.metrics["train/stopped_epoch"] == 2
    assert result.metrics["train/steps"] == 2 * result.metrics["train/steps_per_epoch"]


@pytest.mark.slow
def test_the_users_early_stopping_says_so_beside_protolabs(data: Dataset) -> None:
    """Both configured: the user's callback stops first, and the run says it stopped early
    (protolab's stopper, which never fired, used to overwrite the tag with false)."""
    from protolab.backends._base import EarlyStopping

    stop = keras.callbacks.EarlyStopping
    es = EarlyStopping("val/loss", patience=5)
    settings = TrainSettings(6, 32, "adam", 1e-3, early_stopping=es)
    result = _run(data, callbacks=lambda: [stop(patience=0, min_delta=10.0)], settings=settings)
    assert len(result.history) == 2
    assert result.tags["stopped_early"] == "true" and result.tags["stopped_by"] == "EarlyStopping"


@pytest.mark.slow
def test_protolabs_early_stopping_restores_the_best_weights(data: Dataset) -> None:
    from protolab.backends._base import EarlyStopping

    # epoch 1 sets the best, epoch 2 cannot beat it by 10: stop, and put epoch 1 back
    es = EarlyStopping("val/loss", patience=1, min_delta=10.0, restore_best_weights=True)
    settings = TrainSettings(5, 32, "adam", 1e-3, early_stopping=es)
    result = _run(data, settings=settings)
    assert len(result.history) == 2 and result.tags["stopped_early"] == "true"
    assert result.tags["restored_epoch"] == "1"
    best = result.history[0]
    # evaluated afresh on the restored weights (model.evaluate), not the last epoch's logs
    assert result.metrics["val/loss"] == pytest.approx(best["val/loss"], rel=1e-4)
    assert result.metrics["val/acc"] == pytest.approx(best["val/acc"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tf-graph", "jax"])
def test_pruning_from_the_epoch_hook_propagates_out_of_fit(data: Dataset, mode: str) -> None:
    class Pruned(Exception):
        pass

    seen: list[int] = []

    def hook(epoch: int, metrics: dict[str, float]) -> None:
        seen.append(epoch)
        if epoch == 2:
            raise Pruned("pruned at epoch 2")

    made: list[Count] = []
    settings = TrainSettings(epochs=5, batch_size=32, optimizer="adam", lr=1e-3)
    with pytest.raises(Pruned):
        _run(data, mode, callbacks=lambda: made.append(Count()) or [made[-1]],
             settings=settings, hook=hook)  # fmt: skip
    assert seen == [1, 2]
    if mode == "tf-graph":  # in this process: the fit stopped at once
        assert made[0].epochs == 2


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "jit"), [("tf-graph", False), ("keras", True), ("jax", True)])
def test_the_mode_decides_jit_compile(data: Dataset, mode: str, jit: bool) -> None:
    # the user's compile asks for the opposite of the mode (XLA on a graph mode, and back)
    result = _run(data, mode, jit_compile=not jit)
    assert result.tags["jit_compile"] == str(jit).lower()
    assert result.tags["user_jit_compile"] == str(not jit).lower()
    assert result.tags["loop"] == {"tf-graph": "fit-graph", "keras": "fit-xla"}.get(mode, "fit-jax")
    assert len(result.history) == 3 and result.metrics["val/acc"] > 0.5
    if mode != "jax":  # the model lives in this process
        assert result.model is not None and result.model.native.jit_compile is jit


@pytest.mark.slow
def test_an_uncompiled_model_keeps_protolabs_programs(data: Dataset) -> None:
    def plain(shape: tuple[int, ...]) -> keras.Model:
        inputs = keras.Input(shape)
        h = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(8, 3)(inputs))
        return keras.Model(inputs, keras.layers.Dense(2)(h))

    result = get_backend("tf-graph").run(Job(pl.native(keras=plain), data, SETTINGS, CPU))
    assert result.tags["loop"] == "epoch-graph"
    with pytest.raises(ArchError, match=r"keras_callbacks=.* need a compiled keras\.Model"):
        get_backend("tf-graph").run(
            Job(pl.native(keras=plain, keras_callbacks=lambda: [Count()]), data, SETTINGS, CPU)
        )


@pytest.mark.slow
def test_what_a_compiled_fit_cannot_honour_is_refused(data: Dataset) -> None:
    tuned = TrainSettings(epochs=2, batch_size=32, optimizer="adam", lr=0.01)
    with pytest.raises(ArchError, match=r"train\.lr=0\.01 would not be applied"):
        _run(data, settings=tuned)
    shared = [Count()]
    _run(data, callbacks=lambda: shared, settings=TrainSettings(1, 32, "adam", 1e-3))
    with pytest.raises(ArchError, match="returned the same Count object"):
        _run(data, callbacks=lambda: shared)
    with pytest.raises(ArchError, match=r"must return a list of keras\.callbacks\.Callback"):
        _run(data, callbacks=lambda: ["not a callback"])


@pytest.mark.slow
def test_several_inputs_are_refused_naming_them(data: Dataset) -> None:
    def two_heads(shape: tuple[int, ...]) -> keras.Model:
        series, extra = keras.Input(shape, name="series"), keras.Input((3,), name="extra")
        h = keras.layers.GlobalAveragePooling1D()(series)
        h = keras.layers.Concatenate()([h, extra])
        out = [keras.layers.Dense(2, name="label")(h), keras.layers.Dense(1, name="value")(h)]
        model = keras.Model([series, extra], out)
        model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "mse"])
        return model

    with pytest.raises(
        ArchError, match=r"2 inputs \(series, extra\) and 2 outputs \(label, value\)"
    ):
        get_backend("tf-graph").run(Job(pl.native(keras=two_heads), data, SETTINGS, CPU))


# ---------------------------------------------------------------- a sweep, end to end

SCRIPT = """
import keras
import protolab as pl


def build(shape, width):
    inputs = keras.Input(shape)
    h = keras.layers.Conv1D(width, 3, padding="same")(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["sparse_categorical_accuracy"])
    return model


@pl.experiment(data="series.npz", metric="val/acc")
def model(space):
    width = space.choice("width", [4, 8])
    return pl.native(
        keras=lambda shape: build(shape, width),
        keras_callbacks=lambda: [keras.callbacks.ReduceLROnPlateau(patience=1)],
    )
"""

CONFIG = """\
experiment: exp.py
backends: [tf-graph]
study: {name: fit, n_trials: 2, sampler: random, pruner: median}
train: {epochs: 2, batch_size: 32}
hardware: {accelerator: cpu}
"""


@pytest.mark.slow
def test_sweep_of_a_compiled_model_via_the_cli(
    make_project: Callable[..., Path], workdir: Path
) -> None:
    from mlflow.tracking import MlflowClient

    _series(workdir / "series.npz")
    cfg = make_project(textwrap.dedent(SCRIPT), CONFIG)
    result = CliRunner().invoke(app, ["sweep", str(cfg)])
    assert result.exit_code == 0, result.output + str(result.exception)
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fit")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        tags, metrics = child.data.tags, child.data.metrics
        assert tags["protolab.state"] == "COMPLETE"
        assert tags["protolab.loop"] == "fit-graph"
        assert tags["protolab.jit_compile"] == "false"
        assert tags["protolab.callbacks"] == "ReduceLROnPlateau"
        for name in ("val/acc", "val/loss", "train/loss", "train/lr", "time/step_ms"):
            assert name in metrics, name
        history = client.get_metric_history(child.info.run_id, "val_sparse_categorical_accuracy")
        assert sorted(m.step for m in history) == [1, 2]


@pytest.mark.slow
def test_config_settings_a_compiled_model_ignores_are_exit_2_before_any_store(
    make_project: Callable[..., Path], workdir: Path
) -> None:
    """A compiled model trains with its own compile(optimizer=...): a config that also sets
    lr would search a value that does nothing, so the sweep refuses it up front (exit 2,
    one line naming the setting), not once per failed trial."""
    _series(workdir / "series.npz")
    cfg = make_project(textwrap.dedent(SCRIPT), CONFIG.replace("train: {", "train: {lr: 0.01, ", 1))
    result = CliRunner().invoke(app, ["sweep", str(cfg)])
    assert result.exit_code == 2, result.output
    assert "train.lr=0.01" in result.output and "would not be applied" in result.output
    assert not (workdir / "mlruns" / "mlflow.db").exists()
    assert not list((workdir / "mlruns").glob("*.journal"))
