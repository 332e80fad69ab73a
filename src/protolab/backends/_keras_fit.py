"""A compiled ``keras.Model`` trained by its own ``fit``: the user's training, measured as is.

A ``pl.native(keras=builder)`` whose builder hands back a model the user already compiled
(``model.compile(optimizer=..., loss=..., metrics=..., loss_weights=...)``) is not turned
into protolab's whole-epoch program: that would train a re-implementation, with protolab's
optimizer and loss instead of the user's. It trains through ONE ``model.fit(...)`` call
with the compile settings it came with and the callbacks the experiment declares
(``pl.native(keras_callbacks=lambda: [...])``, called once per trial so every trial gets
fresh callback objects); one call, so the user's callbacks keep their state across epochs
(ReduceLROnPlateau's patience, EarlyStopping's best value).

protolab measures it through Keras' own hooks: a callback of its own, last in the list,
records when each epoch starts, when each batch ends (``on_train_batch_end``) and when the
training steps end (``on_test_begin``: before validation), and at ``on_epoch_end`` closes
the epoch the way every mode does (``OwnLoop``: the metric contract, the epoch hook that
logs and prunes, protolab's early stopping). An exception from that close (a pruned trial)
propagates out of ``fit``. Being ``async_safe``, it never turns off the asynchronous batch
dispatch Keras uses when no callback reads batch logs, so ``fit`` runs as it would alone.

What a user's compile decides here, the config does not: the optimizer, learning rate,
loss and schedule are the model's. A config that sets any of them to something else is
refused (:func:`unused_settings`) rather than silently ignored. ``jit_compile`` is the one
compile setting the mode overrides: the mode is what protolab compares (TF graph vs XLA),
and Keras resolves ``"auto"`` at compile time without recording whether it was written,
so protolab cannot tell an explicit value from the default; tags record both.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np

from protolab.arch import Arch, Native
from protolab.backends._base import EpochClose, EpochFit, Job, OwnLoop, TrainSettings
from protolab.backends._input_wait import InputWait
from protolab.backends._keras_export import KerasModel
from protolab.backends._keras_nn import POLICY, count_params
from protolab.backends._keras_stream import keras_source
from protolab.data import Tree, rows
from protolab.errors import ArchError

__all__ = [
    "KerasFit",
    "contract_metrics",
    "native_keras",
    "unused_settings",
    "user_model",
]

# Keras metric names (as logged, without ``val_``) read as the contract's val/acc, val/rmse
_ACC = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy")
_RMSE = ("root_mean_squared_error", "rmse")
# What the config's train settings default to (TrainSettings' fields without a default)
_CONFIG_DEFAULTS: dict[str, object] = {"optimizer": "adam", "lr": 1e-3}
# Train settings a fit applies (drop_last is moot: fit trains the ragged batch); the rest
# is the user's compile's business
_APPLIED = frozenset({"epochs", "batch_size", "seed", "max_steps", "early_stopping", "drop_last"})
_CONFIG_NAMES = {"max_total_steps": "max_steps"}  # the config key a setting comes from
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/ ]")

#: callbacks a factory handed out in this process, held weakly: one handed out twice would
#: carry a trial's state (a ModelCheckpoint's best value) into the next trial
_HANDED_OUT: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def native_keras(arch: Arch) -> Native | None:
    """The Arch's one node when it is a ``pl.native`` model with a Keras builder."""
    layers = arch.layers
    if len(layers) == 1 and isinstance(layers[0], Native) and layers[0].keras_builder:
        return layers[0]
    return None


def user_model(node: Native, job: Job) -> keras.Model | None:
    """The builder's model when the user compiled it (None: protolab's own programs train
    it), built the way every Keras mode builds: seeded, under the run's precision policy.

    An uncompiled model with ``keras_callbacks`` is refused: callbacks run inside the
    model's ``fit``, which needs the user's compile settings.
    """
    keras.utils.set_random_seed(job.train.seed)
    keras.mixed_precision.set_global_policy(POLICY[job.hardware.precision])
    shape = job.dataset.input_shape
    built = node.keras(shape) if job.dataset.structure is None else node.keras_model(shape)
    if isinstance(built, keras.Model) and built.compiled:
        return built
    if node.keras_callbacks is not None:
        raise ArchError(
            f"pl.native: keras_callbacks={_name(node.keras_callbacks)} need a compiled "
            "keras.Model (its callbacks run inside its own fit), but the keras builder "
            f"returned an uncompiled {type(built).__name__}: call model.compile(...) in the "
            "builder, or drop keras_callbacks"
        )
    return None


def unused_settings(train: TrainSettings) -> list[str]:
    """``train.<key>=<value>`` for every setting the config gives that a compiled model's
    ``fit`` would not apply (its optimizer, learning rate, loss and schedule are its own)."""
    out = []
    for f in dataclasses.fields(train):
        if f.name in _APPLIED:
            continue
        value = getattr(train, f.name)
        default = _CONFIG_DEFAULTS.get(f.name, f.default)
        if default is dataclasses.MISSING or value != default:
            out.append(f"train.{_CONFIG_NAMES.get(f.name, f.name)}={value!r}")
    return out


def contract_metrics(logs: Mapping[str, object], classify: bool) -> dict[str, float]:
    """One epoch's Keras logs under their own names and the contract's.

    Every name Keras logs keeps its own (``loss``, ``val_loss``,
    ``val_sparse_categorical_accuracy``, a per-output ``val_<output>_<metric>``,
    ``learning_rate``): what the model logs reaches MLflow as the user sees it in ``fit``'s
    history, and may be the study's objective. The contract's names are added: ``val/loss``
    (``val_loss``), ``train/lr`` (``learning_rate``), ``val/acc`` (classification: the first
    of Keras' accuracy metrics logged, ``accuracy``, ``acc``,
    ``sparse_categorical_accuracy``, ``categorical_accuracy``) and ``val/rmse``
    (regression: ``root_mean_squared_error``). ``train/loss`` is the epoch's fit's.
    """
    out: dict[str, float] = {}
    for key, value in logs.items():
        if isinstance(value, int | float):
            out[_UNSAFE.sub("_", key)] = float(value)
    if "val_loss" in out:
        out["val/loss"] = out["val_loss"]
    if "learning_rate" in out:
        out["train/lr"] = out["learning_rate"]
    names, alias = (_ACC, "val/acc") if classify else (_RMSE, "val/rmse")
    found = next((f"val_{n}" for n in names if f"val_{n}" in out), None)
    if found is not None:
        out[alias] = out[found]
    return out


class _Timer(keras.callbacks.Callback):
    """protolab's callback, last in the list: times the user's ``fit`` and closes epochs.

    ``async_safe``: it only records a clock reading per batch, so Keras may keep
    dispatching batch ends on its thread pool (what it does when no callback reads batch
    logs); the reading is then taken once the batch's logs are ready, i.e. the step done.
    """

    async_safe = True

    def __init__(self, close: EpochClose, t_fit: float) -> None:
        super().__init__()
        self.close, self.t_epoch = close, t_fit
        self.t_trained: float | None = None
        self.ends: list[tuple[int, float]] = []
        self.logs: dict[str, object] = {}
        self.closed = 0  # epochs closed
        self.stopped = False  # protolab's close asked to stop (its early stopping)
        self.wait = InputWait()  # the loop's wait between one step's end and the next's start

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch > 0:  # the first epoch starts at the fit call: its set-up is the first step's
            self.t_epoch = time.perf_counter()
        self.t_trained, self.ends = None, []
        self.wait.new_epoch()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.wait.batch_start()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.ends.append((batch, time.perf_counter()))
        self.wait.batch_end()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.t_trained is None:  # the epoch's validation starts: its training ended
            self.t_trained = time.perf_counter()
            self.wait.trained(self.t_trained - self.t_epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.t_trained is None:  # no validation this epoch
            self.t_trained = time.perf_counter()
            self.wait.trained(self.t_trained - self.t_epoch)
        t_trained = self.t_trained
        self.logs = dict(logs or {})
        fit = epoch_fit(self.logs, self.ends, self.t_epoch, first=epoch == 0)
        self.closed = epoch + 1
        if self.close(epoch + 1, fit, self.t_epoch, t_trained):
            self.stopped = True
            self.model.stop_training = True


def epoch_fit(
    logs: Mapping[str, object], ends: list[tuple[int, float]], t_epoch: float, first: bool
) -> EpochFit:
    """The epoch's training loss and step times from its batch-end clock readings.

    A step's time is the interval between consecutive batch ends (divided by the steps one
    call ran, ``steps_per_execution``), the epoch's first from its start. The first step
    of the first epoch also traces (and compiles) the train function: it is the
    ``first_step_s`` and left out of the steady-state samples.
    """
    samples: list[float] = []
    prev_batch, prev_t = -1, t_epoch
    for batch, t in sorted(ends):
        n = batch - prev_batch
        if n > 0:
            samples += [(t - prev_t) / n] * n
        prev_batch, prev_t = batch, t
    first_step = sorted(ends)[0][1] - t_epoch if ends else None
    if first and ends:
        samples = samples[sorted(ends)[0][0] + 1 :]
    loss = logs.get("loss")
    return EpochFit(
        loss=float(loss) if isinstance(loss, int | float) else math.nan,
        step_s=samples,
        first_step_s=first_step if first else None,
    )


class KerasFit(OwnLoop):
    """A compiled ``keras.Model`` trained by one ``model.fit`` call; a mode subclasses it
    for what only it knows (its device, its memory, its placement)."""

    loop: str = "fit"  # the ``protolab.loop`` tag

    def __init__(self, backend: str, job: Job, node: Native, model: keras.Model, jit: bool) -> None:
        self.backend, self.model = backend, model
        check_own_job(job)
        ds, tr = job.dataset, job.train
        self.classify = ds.task == "classification"
        self.x: Tree = ds.x_train
        self.y: Tree | None = ds.y_train
        self.xv: Tree = ds.x_val
        self.yv: Tree | None = ds.y_val
        self.structured = ds.structure is not None  # several inputs or outputs, as they are
        if ds.structure is not None:
            st = ds.structure
            self.x, self.y, self.xv, self.yv = st.x_train, st.y_train, st.x_val, st.y_val
        self.batch = min(tr.batch_size, rows(self.x))
        full = math.ceil(rows(self.x) / self.batch)  # fit trains the ragged last batch too
        self.source: object = None  # a streamed source (pl.Data): fit reads it as it is
        self.job_stream = ds.stream
        counted = False  # fit must be told the steps of an epoch
        if ds.stream is not None:  # its first batch's size stands for the batch
            self.source, counted = keras_source(ds.stream, tr)
            self.batch, full = len(ds.x_train), ds.stream.steps() or 1
        self.steps = min(full, tr.max_steps) if tr.max_steps else full
        self.capped = self.steps < full or counted
        self.user_jit = bool(model.jit_compile)
        model.jit_compile = jit  # the mode decides (Keras may refuse True for a model)
        self.callbacks = user_callbacks(node)
        self.timer: _Timer | None = None
        self.epochs = tr.epochs
        self.restored = False  # weights put back after fit: evaluate them afresh

    @contextmanager
    def placed(self) -> Iterator[None]:
        """Where ``fit`` runs (a mode's device scope); as is by default."""
        yield

    def fit_all(self, epochs: int, close: EpochClose) -> None:
        """One ``fit`` over every epoch: the user's callbacks first, protolab's timer last."""
        self.epochs = epochs
        self.timer = _Timer(close, time.perf_counter())
        streamed = self.source is not None
        with self.placed():
            self.model.fit(
                self.source if streamed else self.x,
                None if streamed else self.y,
                batch_size=None if streamed else self.batch,
                epochs=epochs,
                validation_data=self._validation(),
                shuffle=not streamed,  # a source shuffles itself (or not), as the user made it
                verbose=0,
                callbacks=[*self.callbacks, self.timer],
                steps_per_epoch=self.steps if self.capped else None,
            )

    def _validation(self) -> object:
        """``(x, y)``; x alone when the source has no y (the model's loss reads x)."""
        stream = self.job_stream
        no_y = self.yv is None or (stream is not None and not stream.has_y)
        return self.xv if no_y else (self.xv, self.yv)

    def evaluate(self) -> dict[str, float]:
        """The epoch's validation (Keras' own, in ``fit``) under the contract's names; a
        contract metric the compile does not log (no accuracy metric) is scored here.

        Weights put back after ``fit`` (``restore``) are evaluated afresh, by
        ``model.evaluate``: the epoch's logs describe other weights.
        """
        logs = dict(self.timer.logs) if self.timer is not None else {}
        if self.restored:
            with self.placed():
                val = self.model.evaluate(
                    self.xv, self.yv, batch_size=self.batch, verbose=0, return_dict=True
                )
            logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
            logs.update({f"val_{k}": v for k, v in val.items()})
        out = contract_metrics(logs, self.classify)
        if "train/lr" not in out:
            out["train/lr"] = _lr(self.model)
        want = "val/acc" if self.classify else "val/rmse"
        if want not in out and not self.structured:  # several heads: each logs its own
            out[want] = self._score()
        return out

    def _score(self) -> float:
        """Accuracy or RMSE of the model's validation outputs (numpy), when Keras' logs
        have neither: the contract needs one, whatever metrics the user compiled."""
        with self.placed():
            out = np.asarray(self.model.predict(self.xv, batch_size=self.batch, verbose=0))
        yv = self.yv
        assert isinstance(yv, np.ndarray)  # one output (several heads are not scored here)
        if self.classify:
            return float(np.mean(out.argmax(-1) == yv))
        want = yv.reshape(len(yv), -1)
        return float(np.sqrt(np.mean((out.reshape(len(out), -1) - want) ** 2)))

    def current_lr(self) -> float | None:
        return _lr(self.model)

    def snapshot(self) -> object:
        return [np.array(w, copy=True) for w in self.model.get_weights()]

    def restore(self, snapshot: object) -> None:
        self.model.set_weights(snapshot)
        self.restored = True

    def measure(self) -> dict[str, float]:
        out = {"model/params": float(count_params(self.model))}
        out.update(self.timer.wait.metrics() if self.timer else {})
        if self._stopped_by():
            out["train/stopped_epoch"] = float(self.timer.closed if self.timer else 0)
        return out

    def tags(self) -> dict[str, str]:
        tags = {
            "loop": self.loop,
            "jit_compile": str(bool(self.model.jit_compile)).lower(),
            "user_jit_compile": str(self.user_jit).lower(),
            "callbacks": ",".join(type(c).__name__ for c in self.callbacks) or "none",
        }
        stopped_by = self._stopped_by()
        if stopped_by:
            tags["stopped_early"] = "true"
            tags["stopped_by"] = stopped_by
        return tags

    def _stopped_by(self) -> str:
        """The user's callbacks that ended ``fit`` early ("" when it ran every epoch or
        protolab's own early stopping ended it)."""
        timer = self.timer
        if timer is None or timer.stopped or timer.closed >= self.epochs:
            return ""
        names = [type(c).__name__ for c in self.callbacks if getattr(c, "stopped_epoch", 0)]
        return ",".join(names) or "a callback"

    def trained(self) -> KerasModel:
        return KerasModel(self.backend, self.model)


def user_callbacks(node: Native) -> list[keras.callbacks.Callback]:
    """This trial's callbacks from the experiment's factory, each a new object."""
    factory = node.keras_callbacks
    if factory is None:
        return []
    try:
        made = factory()
    except Exception as e:
        raise ArchError(
            f"pl.native: keras_callbacks={_name(factory)} raised {type(e).__name__}: {e}"
        ) from None
    items = list(made) if isinstance(made, list | tuple) else [made]
    for cb in items:
        if not isinstance(cb, keras.callbacks.Callback):
            raise ArchError(
                f"pl.native: keras_callbacks={_name(factory)} must return a list of "
                f"keras.callbacks.Callback, but it holds {type(cb).__name__}: {cb!r:.80}"
            )
        if _HANDED_OUT.get(id(cb)) is cb:
            raise ArchError(
                f"pl.native: keras_callbacks={_name(factory)} returned the same "
                f"{type(cb).__name__} object as for an earlier trial; a callback keeps state "
                "(a ModelCheckpoint's best value, EarlyStopping's wait): construct it inside "
                "the factory (lambda: [keras.callbacks.EarlyStopping(...)])"
            )
        _HANDED_OUT[id(cb)] = cb
    return items


def check_own_job(job: Job) -> None:
    """Refuse what one ``fit`` of a compiled model cannot honour, before training (a model
    with several inputs or outputs is refused when built: ``pl.native``)."""
    unused = unused_settings(job.train)
    if unused:
        raise ArchError(
            "pl.native: the keras builder returns a compiled model, which trains with its "
            f"own compile(optimizer=..., loss=...) settings; the config's {', '.join(unused)} "
            "would not be applied: remove them from the config (or return the model "
            "uncompiled to train with the config's settings)"
        )
    if job.hardware.devices > 1:
        raise ArchError(
            f"pl.native: a compiled keras model trains on one device here, but got "
            f"hardware.devices={job.hardware.devices} (a distribution strategy around the "
            "user's build and fit is not wired yet): set hardware.devices: 1"
        )


def _lr(model: keras.Model) -> float:
    """The optimizer's current learning rate (a schedule's value at its iteration)."""
    opt = model.optimizer
    lr = getattr(opt, "learning_rate", math.nan)
    try:
        return float(keras.ops.convert_to_numpy(lr))
    except (TypeError, ValueError):
        return math.nan


def _name(fn: Callable[..., Any]) -> str:
    """``qualname (file:line)`` of a factory, as the script shows it."""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    code = getattr(fn, "__code__", None)
    if code is None:
        return str(name)
    return f"{name} ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"
