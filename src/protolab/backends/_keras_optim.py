"""The Keras side of training: optimizer, learning-rate schedule and loss, on any Keras backend.

Shared by the Keras modes (TensorFlow graph / XLA, Keras on JAX); only ``keras.ops`` and
``keras.optimizers`` / ``keras.losses`` appear here. The PyTorch side
(``backends/torch/core.py``, ``backends/torch/trainer.py``) follows the same formulas: the
same defaults, the same per-step learning-rate table (``backends/_schedule.py``), global-norm
clipping, and the same loss definitions, so the two families train the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import keras
import numpy as np

from protolab.backends._base import Job, TrainSettings, epoch_plan, loss_name
from protolab.backends._optimizers import CUSTOM, keras_arguments
from protolab.backends._schedule import lr_table, per_step

__all__ = [
    "TableSchedule",
    "keras_loss",
    "keras_optimizer",
    "optimizer",
    "schedule_for",
    "steps_per_epoch",
    "train_key",
]

if TYPE_CHECKING:
    import jax
    import tensorflow as tf

    #: A Keras backend's tensor, eager or traced: TensorFlow's on the TF modes, JAX's on JAX.
    Tensor: TypeAlias = tf.Tensor | jax.Array

LossFn = Callable[["Tensor", "Tensor"], "Tensor"]  # (outputs float32, targets) -> scalar mean


class TableSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``table[iteration]``: the job's precomputed per-step learning rate, looked up with
    ``keras.ops`` so it runs inside ``tf.function``, XLA and ``jax.jit`` (the last value
    holds after the table ends)."""

    def __init__(self, table: np.ndarray | list[float]) -> None:
        self.table = np.asarray(table, dtype=np.float32)

    def __call__(self, step: int | Tensor) -> Tensor:
        table = keras.ops.convert_to_tensor(self.table, dtype="float32")
        i = keras.ops.clip(keras.ops.cast(step, "int32"), 0, len(self.table) - 1)
        return keras.ops.take(table, i)

    def get_config(self) -> dict[str, Any]:
        return {"table": self.table.tolist()}


def schedule_for(tr: TrainSettings, steps_per_epoch: int) -> float | TableSchedule:
    """A plain float when the rate holds between steps (constant, or an epoch rule such as
    reduce_on_plateau, which assigns the optimizer's learning-rate variable between
    epochs), else the table of every step of the job."""
    if not per_step(tr.schedule):
        return tr.lr
    options = dict(tr.schedule_options)
    table = lr_table(tr.schedule, tr.lr, tr.epochs, steps_per_epoch, options, tr.max_total_steps)
    return TableSchedule(table)


def optimizer(
    name: str,
    lr: float | keras.optimizers.schedules.LearningRateSchedule,
    wd: float,
    options: Mapping[str, Any] | None = None,
    clipnorm: float | None = None,
    custom: object | None = None,
) -> keras.optimizers.Optimizer:
    """The optimizer named in the config, as ``backends/_optimizers.py`` maps it (the torch
    side reads the same table), or the script's ``protolab.Optimizer(keras=...)`` factory.

    Weight decay is decoupled on every Keras 3 optimizer. ``clipnorm`` clips the gradients'
    global norm (``torch.nn.utils.clip_grad_norm_`` on the torch side).
    """
    if name == CUSTOM:
        return _custom(custom, lr, clipnorm)
    cls, kwargs = keras_arguments(name, dict(options or {}), wd)
    if clipnorm:
        kwargs["global_clipnorm"] = clipnorm
    return getattr(keras.optimizers, cls)(learning_rate=lr, **kwargs)


def _custom(
    custom: object | None,
    lr: float | keras.optimizers.schedules.LearningRateSchedule,
    clipnorm: float | None,
) -> keras.optimizers.Optimizer:
    """The script's factory called with the job's rate (a float, or the schedule's table)."""
    factory = getattr(custom, "keras", None)
    if factory is None:
        raise ValueError(
            "train.optimizer is custom, but the script's protolab.Optimizer has no keras="
        )
    opt = factory(lr)
    if not isinstance(opt, keras.optimizers.Optimizer):
        raise TypeError(
            "protolab.Optimizer(keras=...) must return a keras.optimizers.Optimizer, "
            f"but returned {type(opt).__name__}"
        )
    if clipnorm:
        if opt.clipnorm or opt.clipvalue or opt.global_clipnorm:
            raise ValueError(
                "train.grad_clip is set and the script's Keras optimizer clips too; "
                "clip in one place"
            )
        opt.global_clipnorm = clipnorm  # what Keras' own argument sets
    return opt


def keras_optimizer(job: Job, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The job's optimizer with its schedule, options and clipping."""
    tr = job.train
    return optimizer(
        tr.optimizer,
        schedule_for(tr, steps_per_epoch),
        tr.weight_decay,
        dict(tr.optimizer_options),
        tr.grad_clip,
        tr.custom_optimizer,
    )


def keras_loss(job: Job) -> LossFn:
    """The job's loss as ``fn(outputs, targets)``; outputs are float32 logits, or
    probabilities when the Arch ends in a softmax (``Arch.output_activation``)."""
    tr, ds = job.train, job.dataset
    name = loss_name(tr, ds.task)
    probs = getattr(job.arch, "output_activation", None) == "softmax"
    losses = keras.losses
    if name == "custom":
        fn = getattr(tr.custom_loss, "keras", None)
        if fn is None:
            raise ValueError("train.loss is custom, but the script's protolab.Loss has no keras=")
        return fn
    classify = ds.task == "classification"
    if name == "cross_entropy" and not tr.label_smoothing:
        sparse = losses.SparseCategoricalCrossentropy(from_logits=not probs)
        return lambda out, y: sparse(y, out)
    if name == "cross_entropy":
        obj: Any = losses.CategoricalCrossentropy(
            from_logits=not probs, label_smoothing=tr.label_smoothing
        )
    else:
        obj = {
            "mse": losses.MeanSquaredError,
            "mae": losses.MeanAbsoluteError,
            "huber": lambda: losses.Huber(delta=1.0),
        }[name]()
    if not classify:
        return lambda out, y: obj(keras.ops.cast(y, "float32"), out)

    def on_one_hot(out: Tensor, y: Tensor) -> Tensor:
        """Class ids -> one-hot over the output units."""
        return obj(keras.ops.one_hot(keras.ops.cast(y, "int32"), out.shape[-1]), out)

    return on_one_hot


def steps_per_epoch(job: Job, batch: int) -> tuple[int, int]:
    """(full steps, ragged tail size): ``epoch_plan`` for this job."""
    tr = job.train
    return epoch_plan(len(job.dataset.x_train), batch, tr.drop_last, tr.max_steps)


def train_key(job: Job, tail: int) -> tuple[Any, ...]:
    """What the train options trace into a Keras program (the program cache's key part):
    a schedule's table (its epochs and lr too), clipping, the loss, optimizer options and
    the tail step. A rate that holds between steps stays out: it is a variable, set per job
    (and by reduce_on_plateau between epochs)."""
    tr = job.train
    table = (tr.schedule, tr.schedule_options, tr.epochs, tr.lr, tr.max_total_steps)
    return (
        table if per_step(tr.schedule) else (),
        tr.custom_optimizer,  # the factory object: another one builds another optimizer
        tr.grad_clip,
        tr.loss,
        tr.custom_loss,  # the object (held by the key, so never confused with a later one)
        tr.label_smoothing,
        tr.optimizer_options,
        tail,
    )
