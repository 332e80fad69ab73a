"""Training options are identical on every mode (issue 12, item 4): real frameworks.

Schedules, clipping, early stopping, losses, label smoothing, optimizer options and
``drop_last`` are each checked by training the *same* tiny model (the torch build's initial
weights copied into the Keras build) on eager PyTorch and Keras (TensorFlow XLA and graph),
and comparing what the optimizers applied. Full-batch steps (or identical samples) make the
shuffle order irrelevant, so any difference is a difference in the option's formula.
Bad values are refused by the real CLI with exit 2 before any store is written.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from protolab import Arch
from protolab import layers as L
from protolab.backends import Hardware, Job, JobResult, TrainSettings, get_backend
from protolab.backends._base import EarlyStopping, Program, _train, epoch_plan
from protolab.backends._schedule import EPOCH_RULES, SCHEDULES, Plateau, lr_table
from protolab.backends._timing import TrialClock
from protolab.data import Dataset

CPU = Hardware(accelerator="cpu", threads=1)
ARCH = Arch(L.Dense(8, activation="tanh"), L.Dense(3))
KERAS_MODES = ("keras", "tf-graph")


def _data(n: int = 24, same: bool = False, task: str = "classification") -> Dataset:
    """Tiny 4-feature data; ``same``: every sample identical (any shuffle is the same)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n + 8, 4)).astype(np.float32)
    y: np.ndarray = rng.integers(0, 3, n + 8).astype(np.int64)
    if same:
        x[:], y[:] = x[0], y[0]
    if task == "regression":
        y = rng.normal(size=(n + 8, 3)).astype(np.float32)
        return Dataset("tiny", x[:n], y[:n], x[n:], y[n:], "regression", None)
    return Dataset("tiny", x[:n], y[:n], x[n:], y[n:], "classification", 3)


def _settings(**kw: Any) -> TrainSettings:
    base: dict[str, Any] = {"epochs": 1, "batch_size": 24, "optimizer": "sgd", "lr": 0.1}
    base["optimizer_options"] = (("momentum", 0.0),)  # plain SGD: the update shows the lr
    return TrainSettings(**{**base, **kw})


def _torch_params(prog: Any) -> list[np.ndarray]:
    """The torch module's weights in Keras' layout (Linear (out, in) -> Dense (in, out))."""
    return [p.detach().numpy().T.copy() for p in prog.module.parameters()]


def _keras_params(prog: Any) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in prog.model.trainable_variables]


def _pair(
    tr: TrainSettings, ds: Dataset, mode: str = "keras", arch: Arch = ARCH
) -> tuple[Program, Program]:
    """The same model on eager torch and a Keras mode, starting from the same weights."""
    job = Job(arch, ds, tr, CPU)
    torch_prog = get_backend("lightning").program(job)
    keras_prog = get_backend(mode).program(job)
    keras_prog.compile()
    for var, value in zip(
        keras_prog.model.trainable_variables, _torch_params(torch_prog), strict=True
    ):
        var.assign(value)
    return torch_prog, keras_prog


def _close(a: list[np.ndarray], b: list[np.ndarray], tol: float = 2e-5) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


# --- learning-rate schedules -------------------------------------------------------------


def test_lr_tables_follow_their_formulas() -> None:
    t = lr_table("step", 0.1, 4, 2, {"step_size": 2, "gamma": 0.5})
    assert t.tolist() == pytest.approx([0.1] * 4 + [0.05] * 4)
    cos = lr_table("cosine", 0.1, 2, 5, {"min_lr": 0.1})
    assert cos[0] == pytest.approx(0.1) and cos.min() > 0.01 - 1e-7
    assert np.all(np.diff(cos) <= 0)
    warm = lr_table("warmup_cosine", 1.0, 1, 10, {"warmup": 4})
    assert warm[:4].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert np.all(np.diff(warm[3:]) < 0)
    cyc = lr_table("one_cycle", 1.0, 1, 10, {"warmup": 0.3})
    assert cyc[0] == pytest.approx(1 / 25) and cyc.max() == pytest.approx(1.0)
    assert cyc[-1] == pytest.approx(1 / 25 / 1e4)
    assert set(SCHEDULES) == {
        "constant", "step", "cosine", "warmup_cosine", "one_cycle", "reduce_on_plateau"
    }  # fmt: skip
    capped = lr_table("cosine", 1.0, 4, 5, {}, max_steps=7)  # train.max_steps: 7 steps train
    assert capped.tolist() == lr_table("cosine", 1.0, 1, 7, {}).tolist()  # a 7-step run's


def test_the_config_names_exactly_the_schedules_the_backends_compute() -> None:
    """The config's rule table and the backends' computations are separate parts (neither
    imports the other): a schedule added to one only is caught here."""
    from protolab.config import SCHEDULE_OPTIONS

    assert tuple(SCHEDULE_OPTIONS) == SCHEDULES
    for name, options in SCHEDULE_OPTIONS.items():  # every option it reads changes the table
        if name in EPOCH_RULES:  # decided between epochs (Plateau): tests of their own below
            assert lr_table(name, 1.0, 4, 5, {}).tolist() == [1.0] * 20
            continue
        for option in options:
            base = lr_table(name, 1.0, 4, 5, {})
            moved = lr_table(name, 1.0, 4, 5, {option: 0.5 if option != "step_size" else 2})
            assert not np.allclose(base, moved), (name, option)


@pytest.mark.parametrize("schedule", ["step", "warmup_cosine", "one_cycle"])
def test_every_step_applies_the_same_lr_on_torch_and_keras(schedule: str) -> None:
    """Identical samples, 3 epochs x 3 steps (the last one ragged): the per-step lr torch
    wrote and the one Keras' schedule looked up inside its compiled epoch both equal the
    table, and the weights they produce agree."""
    import torch

    opts = {"step": (("step_size", 1.0), ("gamma", 0.5))}.get(schedule, ())
    tr = _settings(
        epochs=3, batch_size=10, schedule=schedule, schedule_options=opts, drop_last=False
    )
    ds = _data(24, same=True)
    tp, kp = _pair(tr, ds)
    table = lr_table(schedule, 0.1, 3, 3, dict(opts))
    seen: list[float] = []
    tp.opt.register_step_pre_hook(lambda opt, *_: seen.append(float(opt.param_groups[0]["lr"])))
    lrs: dict[str, list[float]] = {"torch": [], "keras": []}
    for epoch in (1, 2, 3):
        tp.fit_epoch(epoch)
        kp.fit_epoch(epoch)
        lrs["torch"].append(tp.current_lr())
        lrs["keras"].append(kp.current_lr())
    assert tp.steps == kp.steps == 3
    np.testing.assert_allclose(seen, table, rtol=1e-7)  # every torch step
    keras_opt = kp.p.opt
    assert int(keras_opt.iterations.numpy()) == 9
    looked_up = [float(keras_opt._learning_rate(i)) for i in range(9)]
    np.testing.assert_allclose(looked_up, table, rtol=1e-7)
    np.testing.assert_allclose(lrs["torch"], table[2::3], rtol=1e-7)
    np.testing.assert_allclose(lrs["keras"], table[2::3], rtol=1e-7)
    _close(_torch_params(tp), _keras_params(kp))
    assert torch.get_num_threads() >= 1


def test_keras_schedule_runs_inside_xla() -> None:
    import tensorflow as tf

    from protolab.backends._keras_optim import TableSchedule

    table = lr_table("cosine", 0.5, 2, 4)
    sched = TableSchedule(table)
    got = tf.function(jit_compile=True)(lambda i: sched(i))
    assert [float(got(tf.constant(i))) for i in range(8)] == pytest.approx(table.tolist())
    assert float(got(tf.constant(99))) == pytest.approx(float(table[-1]))  # holds at the end


@pytest.mark.slow
def test_jax_and_tf_graph_log_the_same_lr_curve() -> None:
    """The JAX worker and the TF graph mode read back the table at every epoch's last step,
    with the ragged tail trained, clipping and label smoothing on (one worker start)."""
    tr = _settings(
        epochs=3, batch_size=10, schedule="cosine", drop_last=False, grad_clip=0.5,
        label_smoothing=0.1,
    )  # fmt: skip
    table = lr_table("cosine", 0.1, 3, 3)
    for mode in ("jax", "tf-graph"):
        result = get_backend(mode).run(Job(ARCH, _data(24), tr, CPU))
        got = [h["train/lr"] for h in result.history]
        np.testing.assert_allclose(got, table[2::3], rtol=1e-6)
        assert result.metrics["train/steps_per_epoch"] == 3  # 10 + 10 + the tail of 4
        assert all(math.isfinite(h["train/loss"]) for h in result.history)


# --- clipping, losses, label smoothing, optimizer options --------------------------------


@pytest.mark.parametrize("mode", KERAS_MODES)
def test_grad_clip_clips_the_global_norm_alike(mode: str) -> None:
    """One plain-SGD step: the update is lr x the clipped gradient, of norm ``grad_clip``."""
    tr = _settings(grad_clip=0.01, lr=1.0)
    tp, kp = _pair(tr, _data(24), mode)
    before = _torch_params(tp)
    tp.fit_epoch(1)
    kp.fit_epoch(1)
    after_t, after_k = _torch_params(tp), _keras_params(kp)
    _close(after_t, after_k, 1e-6)
    norm = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(after_t, before, strict=True)))
    assert norm == pytest.approx(0.01, rel=1e-3)  # the unclipped gradient is far larger


LOSSES = [
    ("cross_entropy", 0.0, "classification"),
    ("cross_entropy", 0.2, "classification"),
    ("mse", 0.0, "classification"),
    ("huber", 0.0, "regression"),
    ("mae", 0.0, "regression"),
    ("mse", 0.0, "regression"),
]


@pytest.mark.parametrize(("loss", "smooth", "task"), LOSSES)
def test_losses_agree_on_the_same_weights(loss: str, smooth: float, task: str) -> None:
    """val/loss of the same weights, and one step of training on it, agree."""
    tr = _settings(loss=loss, label_smoothing=smooth)  # plain SGD: the step is lr x grad
    tp, kp = _pair(tr, _data(24, task=task), "tf-graph")
    assert tp.evaluate()["val/loss"] == pytest.approx(kp.evaluate()["val/loss"], rel=1e-5)
    tp.fit_epoch(1)
    kp.fit_epoch(1)
    _close(_torch_params(tp), _keras_params(kp), 1e-5)


def test_label_smoothing_changes_the_loss_by_the_formula() -> None:
    """Smoothed cross-entropy = (1 - e) x CE + e x mean over classes of -log p."""
    import torch

    ds = _data(24)
    plain, smooth = _settings(), _settings(label_smoothing=0.3)
    tp = get_backend("lightning").program(Job(ARCH, ds, plain, CPU))
    out = tp.module(torch.as_tensor(ds.x_val)).detach()
    y = torch.as_tensor(ds.y_val)
    logp = torch.log_softmax(out, -1)
    ce = float(-logp.gather(1, y[:, None]).mean())
    uniform = float(-logp.mean())
    sp = get_backend("lightning").program(Job(ARCH, ds, smooth, CPU))
    got = float(sp.loss_fn(out, y))
    assert got == pytest.approx(0.7 * ce + 0.3 * uniform, rel=1e-6)


def test_softmax_outputs_are_not_softmaxed_twice() -> None:
    """With ``Arch.output_activation == "softmax"`` both sides take probabilities."""
    import keras
    import torch

    from protolab.backends._keras_optim import keras_loss
    from protolab.backends.torch.core import torch_loss

    ds = _data(24)
    fake = SimpleNamespace(output_activation="softmax")  # what H3's Arch attribute says
    for smooth in (0.0, 0.1):
        job = Job(fake, ds, _settings(label_smoothing=smooth), CPU)
        logits = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        y = ds.y_val
        want = float(
            torch.nn.functional.cross_entropy(
                torch.as_tensor(logits), torch.as_tensor(y), label_smoothing=smooth
            )
        )
        got_t = float(torch_loss(job)(torch.as_tensor(probs), torch.as_tensor(y)))
        got_k = float(keras.ops.convert_to_numpy(keras_loss(job)(probs, y)))
        assert got_t == pytest.approx(want, rel=1e-5)
        assert got_k == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(
    ("optimizer", "options"),
    [
        ("sgd", (("momentum", 0.5), ("nesterov", True))),
        ("adam", (("betas", (0.8, 0.99)), ("eps", 1e-10))),
        ("adagrad", (("eps", 1e-7),)),
        ("rmsprop", (("momentum", 0.3), ("eps", 1e-12))),
    ],
)
def test_optimizer_options_make_the_same_steps(optimizer: str, options: tuple[Any, ...]) -> None:
    """Three full-batch steps with the options: the weights agree on torch and Keras.

    eps is tiny for adam/rmsprop: the frameworks place it differently (Keras adds it before
    Adam's bias correction and inside RMSprop's square root), which is not an option's doing.
    """
    tr = _settings(epochs=3, optimizer=optimizer, optimizer_options=options, lr=0.05)
    tp, kp = _pair(tr, _data(24), "tf-graph")
    group, kopt = tp.opt.param_groups[0], kp.p.opt
    given = dict(options)
    if "betas" in given:
        assert tuple(group["betas"]) == given["betas"] == (kopt.beta_1, kopt.beta_2)
    if "momentum" in given:
        assert group["momentum"] == given["momentum"] == kopt.momentum
    assert group.get("nesterov", False) == given.get("nesterov", False)
    for epoch in (1, 2, 3):
        tp.fit_epoch(epoch)
        kp.fit_epoch(epoch)
    _close(_torch_params(tp), _keras_params(kp), 5e-5)


# --- early stopping and drop_last ------------------------------------------------------


def test_early_stopping_stops_every_mode_at_the_same_epoch() -> None:
    """The shared loop: the same curve (same weights, full batches) stops at one epoch."""
    es = EarlyStopping("val/loss", patience=2, min_delta=0.0, mode="min")
    tr = _settings(epochs=12, lr=3.0, early_stopping=es)  # too large: val/loss turns up
    tp, kp = _pair(tr, _data(24))
    stopped = {}
    for name, prog in (("torch", tp), ("keras", kp)):
        job = Job(ARCH, _data(24), tr, CPU)
        result = JobResult()
        _train(prog, job, TrialClock(), result, None)
        stopped[name] = (len(result.history), result.metrics["train/stopped_epoch"])
        curve = [h["val/loss"] for h in result.history]
        best = int(np.argmin(curve))
        assert len(curve) == best + 1 + 2 < 12, curve  # two epochs without improvement
        assert result.tags["stopped_early"] == "true"
    assert stopped["torch"] == stopped["keras"]


def test_early_stopping_through_backend_run_reports_the_stop() -> None:
    es = EarlyStopping("val/acc", patience=1, min_delta=1.0, mode="max")  # never improves enough
    result = get_backend("tf-graph").run(
        Job(ARCH, _data(24), _settings(epochs=5, early_stopping=es), CPU)
    )
    assert len(result.history) == 2
    assert result.metrics["train/stopped_epoch"] == 2.0
    assert result.metrics["train/steps"] == 2.0


@pytest.mark.parametrize("mode", ["tf-graph"])  # XLA's tail: the schedule test above
def test_drop_last_false_trains_the_ragged_tail_on_every_mode(mode: str) -> None:
    """24 samples in batches of 10: 2 steps dropping the tail, 3 with it, on both sides
    (identical samples, so the weights show exactly how many steps were made)."""
    assert epoch_plan(24, 10, True, None) == (2, 0)
    assert epoch_plan(24, 10, False, None) == (2, 4)
    assert epoch_plan(24, 10, False, 2) == (2, 0)  # max_steps ends the epoch first
    ds = _data(24, same=True)
    for drop, steps in ((True, 2), (False, 3)):
        tp, kp = _pair(_settings(batch_size=10, drop_last=drop), ds, mode)
        tp.fit_epoch(1)
        kp.fit_epoch(1)
        assert tp.steps == kp.steps == steps
        _close(_torch_params(tp), _keras_params(kp), 1e-5)
        if not drop:
            assert int(kp.p.opt.iterations.numpy()) == 3


def test_drop_last_false_on_the_keras_step_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOLAB_KERAS_LOOP", "step")
    tp, kp = _pair(_settings(batch_size=10, drop_last=False), _data(24, same=True))
    tp.fit_epoch(1)
    kp.fit_epoch(1)
    assert kp.tags()["loop"].startswith("step-")
    _close(_torch_params(tp), _keras_params(kp), 1e-5)


# --- the script sets train settings; custom losses --------------------------------------

SCRIPT = """
import protolab as pl
from protolab import layers as L


def _torch_loss(out, y):
    import torch.nn.functional as F
    return F.cross_entropy(out, y) * 2.0


def _keras_loss(out, y):
    import keras
    ce = keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)
    return keras.ops.mean(ce) * 2.0


@pl.experiment(data="digits", metric="val/acc", loss=pl.Loss(torch=_torch_loss, keras=_keras_loss))
def model(space):
    depth = space.int("depth", 1, 2)
    space.train(lr=space.float("base_lr", 1e-3, 1e-2, log=True) / depth, schedule="cosine")
    return pl.Arch(L.Flatten(), *[L.Dense(8, activation="relu")] * depth, L.Dense(10))
"""


def _project(root: Path, script: str = SCRIPT, train: str = "{epochs: 1}") -> Path:
    (root / "exp.py").write_text(textwrap.dedent(script))
    cfg = root / "cfg.yaml"
    cfg.write_text(
        "experiment: exp.py\nbackends: [lightning]\n"
        "study: {name: tiny, n_trials: 1, sampler: random, pruner: none}\n"
        f"train: {train}\nhardware: {{accelerator: cpu}}\n"
    )
    return cfg


def test_script_train_settings_reach_the_job_and_the_params(workdir: Path) -> None:
    from protolab.backends import NAMES
    from protolab.config import load_config
    from protolab.space import Space
    from protolab.sweep._context import prepare, sample_train
    from protolab.sweep._run import _params, make_settings

    cfg, script = load_config(_project(workdir, train="{epochs: 1}"), backends=NAMES)
    ctx = prepare(cfg, workdir / "cfg.yaml", script)
    space, train_space = Space(values={"depth": 2, "base_lr": 0.004}), Space(prefix="train.")
    ctx.experiment.build(space)
    settings = make_settings(
        ctx, sample_train(cfg.train, train_space), space.train_settings, epochs=1
    )
    assert settings.lr == pytest.approx(0.002) and settings.schedule == "cosine"
    assert settings.custom_loss is ctx.experiment.loss and settings.loss == "auto"
    params = _params(space, train_space, cfg)
    assert params["train.lr"] == pytest.approx(0.002) and params["base_lr"] == 0.004
    assert params["train.schedule"] == "cosine"
    # the custom loss trains (twice the cross-entropy on both frameworks)
    ds = _data(24)
    arch = Arch(L.Dense(3))
    tr = dataclasses.replace(settings, batch_size=24, schedule="constant", lr=0.01)
    tp, kp = _pair(tr, ds, "tf-graph", arch)
    assert tp.evaluate()["val/loss"] == pytest.approx(kp.evaluate()["val/loss"], rel=1e-5)


def test_script_cannot_set_a_searched_train_key(workdir: Path) -> None:
    from protolab.backends import NAMES
    from protolab.config import load_config
    from protolab.errors import SpaceError
    from protolab.space import Space
    from protolab.sweep._context import prepare
    from protolab.sweep._run import make_settings

    cfg, script = load_config(
        _project(workdir, train="{epochs: 1, lr: {low: 0.001, high: 0.1}}"), backends=NAMES
    )
    ctx = prepare(cfg, workdir / "cfg.yaml", script)
    space = Space()
    ctx.experiment.build(space)
    with pytest.raises(SpaceError, match=r"train\.lr is searched by the config"):
        make_settings(ctx, {}, space.train_settings, epochs=1)


# --- bad values: the CLI refuses them up front (exit 2, no store) --------------------------

runner = CliRunner()
TINY = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space):
    return pl.Arch(L.Flatten(), L.Dense(10))
"""
BAD = [
    (["train.schedule=cosin"], ["train.schedule", "'cosin'", "warmup_cosine"]),
    (["train.grad_clip=0"], ["train.grad_clip", "> 0", "0"]),
    (
        ["train.early_stopping={patience: 0}"],
        ["train.early_stopping.patience", "greater than or equal to 1", "0"],
    ),
    (
        ["train.optimizer=sgd", "train.optimizer_options={betas: [0.9, 0.99]}"],
        ["train.optimizer_options", "betas", "sgd takes momentum, nesterov"],
    ),
    (["train.label_smoothing=1.5"], ["train.label_smoothing", ">= 0 and < 1", "1.5"]),
    (
        ["train.schedule=cosine", "train.schedule_options={gamma: 0.5}"],
        ["train.schedule_options", "gamma=0.5", "cosine takes min_lr"],
    ),
    (
        ["train.early_stopping={metric: val/f1}"],
        ["train.early_stopping.metric", "not measured", "metrics:"],
    ),
    (
        ["train.early_stopping={metric: val/rmse}"],
        ["train.early_stopping.metric", "val/rmse needs a regression"],
    ),
    (["train.loss=custom"], ["train.loss", "'custom' needs @experiment(loss=protolab.Loss"]),
    (["train.optimizer=lino"], ["train.optimizer", "'lino'", "adadelta", "nadam", "lion"]),
]


@pytest.mark.parametrize(
    ("args", "expect"), BAD, ids=[a[0].split("=")[0] + str(i) for i, (a, _) in enumerate(BAD)]
)
def test_bad_train_options_exit_2_before_any_store(
    workdir: Path, args: list[str], expect: list[str]
) -> None:
    from protolab.cli import app

    cfg = _project(workdir, TINY, "{epochs: 1}")
    result = runner.invoke(app, ["sweep", str(cfg), *args], env={"CUDA_VISIBLE_DEVICES": "-1"})
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out
    for text in expect:
        assert text in out, (text, out)
    assert str(cfg) in out or "cfg.yaml" in out
    assert not (workdir / "mlruns").exists()


# --- issue 22: every optimizer both frameworks have, reduce_on_plateau, max_steps, -----------
# --- restore_best_weights, a custom optimizer -------------------------------------------------


def test_the_config_names_exactly_the_optimizers_and_options_the_backends_map() -> None:
    """The config's rule table and the backends' twin table are separate parts: an optimizer
    or option added to one only is caught here, and each option has a twin per framework."""
    from protolab.backends._optimizers import OPTIMIZER_TWINS, keras_arguments, torch_arguments
    from protolab.config._model import OPTIMIZER_OPTIONS, OPTIMIZERS

    assert tuple(OPTIMIZER_OPTIONS) == tuple(OPTIMIZER_TWINS) == OPTIMIZERS
    for name, options in OPTIMIZER_OPTIONS.items():
        assert options == tuple(OPTIMIZER_TWINS[name].defaults), name
    # the renamed twins: rmsprop's rho is PyTorch's alpha; betas are Keras' beta_1/beta_2
    _, t = torch_arguments("rmsprop", {"rho": 0.8}, 0.0)
    _, k = keras_arguments("rmsprop", {"rho": 0.8, "eps": 1e-5}, 0.0)
    assert t["alpha"] == 0.8 and "rho" not in t and k["rho"] == 0.8 and k["epsilon"] == 1e-5
    _, k = keras_arguments("nadam", {"betas": (0.8, 0.9)}, 0.0)
    assert (k["beta_1"], k["beta_2"]) == (0.8, 0.9)
    # one default on both where the frameworks' own differ (Keras' values)
    cls, t = torch_arguments("adadelta", {}, 0.0)
    _, k = keras_arguments("adadelta", {}, 0.0)
    assert cls == "Adadelta" and (t["rho"], t["eps"]) == (k["rho"], k["epsilon"]) == (0.95, 1e-7)
    with pytest.raises(ValueError, match=r"'lion' has no PyTorch twin.*Keras modes"):
        torch_arguments("lion", {}, 0.0)
    with pytest.raises(ValueError, match=r"rho is not an option of optimizer adam"):
        torch_arguments("adam", {"rho": 0.9}, 0.0)


NEW_OPTIMIZERS = [
    ("adadelta", (("rho", 0.9), ("eps", 1e-6))),
    ("adadelta", ()),
    ("adamax", (("betas", (0.8, 0.99)), ("eps", 1e-7))),
    ("nadam", (("betas", (0.85, 0.99)),)),
    ("rmsprop", (("rho", 0.8), ("centered", True), ("eps", 1e-12))),
    ("adam", (("amsgrad", True), ("eps", 1e-10))),
    ("adagrad", (("initial_accumulator_value", 0.5),)),
]


@pytest.mark.parametrize(("optimizer", "options"), NEW_OPTIMIZERS)
def test_new_optimizers_make_the_same_steps(optimizer: str, options: tuple[Any, ...]) -> None:
    """Four full-batch steps on eager PyTorch and TF graph from the same weights: each
    step's loss and the weights after them agree (the options reach both twins)."""
    tr = _settings(epochs=4, optimizer=optimizer, optimizer_options=options, lr=0.05)
    tp, kp = _pair(tr, _data(24), "tf-graph")
    losses: dict[str, list[float]] = {"torch": [], "keras": []}
    for epoch in (1, 2, 3, 4):  # one step an epoch: the epoch's loss is that step's
        losses["torch"].append(tp.fit_epoch(epoch).loss)
        losses["keras"].append(kp.fit_epoch(epoch).loss)
    assert losses["torch"][-1] < losses["torch"][0]  # it trains
    np.testing.assert_allclose(losses["torch"], losses["keras"], rtol=2e-5)
    _close(_torch_params(tp), _keras_params(kp), 5e-5)
    if "rho" in dict(options):  # rmsprop's rho arrives as PyTorch's alpha
        key = "alpha" if optimizer == "rmsprop" else "rho"
        assert tp.opt.param_groups[0][key] == dict(options)["rho"] == kp.p.opt.rho


def test_lion_trains_on_keras_modes_and_is_refused_on_torch() -> None:
    """Keras-only (torch.optim has no Lion): XLA and TF graph make the same steps."""
    tr = _settings(epochs=3, optimizer="lion", optimizer_options=(("betas", (0.8, 0.95)),))
    tr = dataclasses.replace(tr, lr=0.01)
    ds = _data(24)
    graph = get_backend("tf-graph").run(Job(ARCH, ds, tr, CPU))
    xla = get_backend("keras").run(Job(ARCH, ds, tr, CPU))
    curve = [h["train/loss"] for h in graph.history]
    assert curve[-1] < curve[0]
    np.testing.assert_allclose(curve, [h["train/loss"] for h in xla.history], rtol=1e-5)
    with pytest.raises(ValueError, match="has no PyTorch twin"):
        get_backend("lightning").program(Job(ARCH, ds, tr, CPU))


def test_custom_optimizer_factories_train_alike() -> None:
    """``pl.Optimizer``: each framework's factory gets the job's lr; same steps on both."""
    import keras
    import torch

    import protolab as pl

    custom = pl.Optimizer(
        torch=lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.5),
        keras=lambda lr: keras.optimizers.SGD(learning_rate=lr, momentum=0.5),
    )
    tr = _settings(epochs=3, optimizer="custom", optimizer_options=(), custom_optimizer=custom)
    tr = dataclasses.replace(tr, grad_clip=0.5)
    tp, kp = _pair(tr, _data(24), "tf-graph")
    assert type(tp.opt.optimizer).__name__ == "SGD" and kp.p.opt.global_clipnorm == 0.5
    for epoch in (1, 2, 3):
        assert tp.fit_epoch(epoch).loss == pytest.approx(kp.fit_epoch(epoch).loss, rel=1e-5)
    _close(_torch_params(tp), _keras_params(kp), 1e-5)
    with pytest.raises(Exception, match="must be a function"):
        pl.Optimizer(torch=3)


def test_plateau_rule_decides_as_keras_reduce_lr_on_plateau() -> None:
    """The one rule (numpy/python) against Keras' own callback on the same metric curve."""
    import keras

    curve = [1.0, 0.9, 0.95, 0.91, 0.92, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 0.4, 0.41]
    opts = {"factor": 0.5, "patience": 2.0, "min_delta": 0.01, "cooldown": 1.0, "min_lr": 0.1}
    rule = Plateau.of(opts)
    cb = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=0.5, patience=2, min_delta=0.01, cooldown=1, min_lr=0.1
    )
    opt = keras.optimizers.SGD(learning_rate=1.0)
    cb.set_model(SimpleNamespace(optimizer=opt))
    cb.on_train_begin()
    ours, theirs = [], []
    for epoch, value in enumerate(curve):
        ours.append(rule.update(value))
        cb.on_epoch_end(epoch, {"val_loss": value})
        theirs.append(float(keras.ops.convert_to_numpy(opt.learning_rate)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours[-1] == pytest.approx(0.1) and ours.count(1.0) == 3  # down to the floor
    assert Plateau.of({"monitor": "val/acc", "mode": "max"}).update(0.5) == 1.0


def test_reduce_on_plateau_lowers_lr_alike_on_torch_and_keras() -> None:
    """The shared loop: the same curve (same weights, full batches) lowers the learning
    rate at the same epochs on eager PyTorch and XLA, and nothing recompiles for it."""
    opts = (("patience", 1.0), ("factor", 0.5))
    tr = _settings(epochs=7, lr=3.0, schedule="reduce_on_plateau", schedule_options=opts)
    tp, kp = _pair(tr, _data(24))
    lrs = {}
    for name, prog in (("torch", tp), ("keras", kp)):
        result = JobResult()
        _train(prog, Job(ARCH, _data(24), tr, CPU), TrialClock(), result, None)
        lrs[name] = [h["train/lr"] for h in result.history]
        curve = [h["val/loss"] for h in result.history]
        best = int(np.argmin(curve))  # lr too large: val/loss turns up after the best epoch
        assert lrs[name][: best + 2] == [3.0] * (best + 2), (curve, lrs[name])
        assert lrs[name][best + 2] == 1.5  # patience 1: lowered after one bad epoch
    np.testing.assert_allclose(lrs["torch"], lrs["keras"], rtol=1e-6)
    assert kp.tags()["compiles"] == "2"  # the train and evaluation programs only


def test_max_steps_ends_at_exactly_that_many_steps() -> None:
    """24 samples in batches of 10 with the tail: 3 steps an epoch, train.max_steps 7 ends
    in the third epoch after one step; identical samples: the weights show the count."""
    tr = _settings(epochs=5, batch_size=10, drop_last=False, max_total_steps=7)
    ds = _data(24, same=True)
    tp, kp = _pair(tr, ds)
    for prog in (tp, kp):
        result = JobResult()
        _train(prog, Job(ARCH, ds, tr, CPU), TrialClock(), result, None)
        assert result.metrics["train/steps"] == 7.0 and len(result.history) == 3
    assert int(kp.p.opt.iterations.numpy()) == 7
    _close(_torch_params(tp), _keras_params(kp), 1e-5)
    result = get_backend("tf-graph").run(Job(ARCH, ds, tr, CPU))
    assert result.metrics["train/steps"] == 7.0 and result.metrics["train/steps_per_epoch"] == 3


def test_restore_best_weights_makes_the_final_metrics_the_best_epochs() -> None:
    """lr too large: val/loss turns up; the run ends on the best epoch's weights, so its
    final val/loss is the best epoch's (measured again on the restored weights)."""
    es = EarlyStopping("val/loss", patience=2, restore_best_weights=True)
    tr = _settings(epochs=12, lr=3.0, early_stopping=es)
    for mode in ("lightning", "tf-graph"):
        result = get_backend(mode).run(Job(ARCH, _data(24), tr, CPU))
        curve = [h["val/loss"] for h in result.history]
        best = int(np.argmin(curve))
        assert best + 1 < len(curve), curve  # the last epoch is not the best
        assert result.metrics["val/loss"] == pytest.approx(curve[best], rel=1e-6)
        assert result.metrics["val/acc"] == pytest.approx(result.history[best]["val/acc"])
        assert result.tags["restored_epoch"] == str(best + 1)
        model = result.model
        assert model is not None
        out = model.predict(_data(24).x_val)
        assert np.mean(out.argmax(-1) == _data(24).y_val) == pytest.approx(
            result.metrics["val/acc"]
        )
    off = get_backend("lightning").run(
        Job(ARCH, _data(24), dataclasses.replace(tr, early_stopping=dataclasses.replace(
            es, restore_best_weights=False)), CPU)
    )  # fmt: skip
    assert off.metrics["val/loss"] == off.history[-1]["val/loss"]


@pytest.mark.slow
def test_jax_applies_plateau_max_steps_and_restore() -> None:
    """The JAX worker: the learning rate a state array (rescaled between epochs), a partial
    last epoch, the best weights restored (one worker start)."""
    es = EarlyStopping("val/loss", patience=4, restore_best_weights=True)
    opts = (("patience", 1.0), ("factor", 0.5))
    tr = _settings(
        epochs=8, lr=3.0, batch_size=10, drop_last=False, max_total_steps=17,
        early_stopping=es, schedule="reduce_on_plateau", schedule_options=opts,
    )  # fmt: skip
    result = get_backend("jax").run(Job(ARCH, _data(24), tr, CPU))
    history = result.history
    assert result.metrics["train/steps"] == min(17.0, 3.0 * len(history))
    curve = [h["val/loss"] for h in history]
    best = int(np.argmin(curve))
    assert result.metrics["val/loss"] == pytest.approx(curve[best], rel=1e-6)
    lrs = [h["train/lr"] for h in history]
    rule, want = Plateau.of(dict(opts)), [3.0]
    for value in curve[:-1]:
        want.append(3.0 * rule.update(value))
    np.testing.assert_allclose(lrs, want, rtol=1e-6)
    assert result.tags["compiles"] == "2"


OPTIMIZER_SCRIPT = """
import protolab as pl
from protolab import layers as L


def _torch(params, lr):
    import torch
    return torch.optim.Adadelta(params, lr=lr, rho=0.9)


def _keras(lr):
    import keras
    return keras.optimizers.Adadelta(learning_rate=lr, rho=0.9)


@pl.experiment(data="digits", optimizer=pl.Optimizer(torch=_torch, keras=_keras))
def model(space):
    return pl.Arch(L.Flatten(), L.Dense(10))
"""


def test_config_and_script_options_reach_the_job(workdir: Path) -> None:
    """A script's protolab.Optimizer, train.max_steps, restore_best_weights and a plateau
    monitor (its direction resolved by the config) all reach the job's settings."""
    from protolab.backends import NAMES
    from protolab.config import load_config
    from protolab.space import Space
    from protolab.sweep._checks import check_train_task
    from protolab.sweep._context import prepare, sample_train
    from protolab.sweep._run import make_settings

    train = (
        "{epochs: 2, optimizer: custom, max_steps: 5, schedule: reduce_on_plateau, "
        "schedule_options: {monitor: val/acc, patience: 1}, "
        "early_stopping: {metric: val/acc, restore_best_weights: true}}"
    )
    cfg, script = load_config(_project(workdir, OPTIMIZER_SCRIPT, train), backends=NAMES)
    ctx = prepare(cfg, workdir / "cfg.yaml", script)
    assert check_train_task(ctx) is None
    space, train_space = Space(), Space(prefix="train.")
    ctx.experiment.build(space)
    settings = make_settings(ctx, sample_train(cfg.train, train_space), {}, epochs=2)
    assert settings.custom_optimizer is ctx.experiment.optimizer
    assert settings.max_total_steps == 5 and settings.max_steps is None
    assert settings.early_stopping is not None and settings.early_stopping.restore_best_weights
    assert dict(settings.schedule_options) == {"monitor": "val/acc", "patience": 1.0, "mode": "max"}
    tp = get_backend("lightning").program(Job(Arch(L.Dense(3)), _data(24), settings, CPU))
    assert type(tp.opt.optimizer).__name__ == "Adadelta" and tp.steps == 1
