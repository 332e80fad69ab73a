"""The learning rate of every optimizer step, as one numpy table shared by every mode.

Each framework has its own schedulers (``torch.optim.lr_scheduler``, Keras'
``LearningRateSchedule`` s) with subtly different conventions: when a step counts, whether
warm-up starts at 0 or at the first step, how one-cycle anneals. Instead every mode reads
the *same* table, computed here once per job from the train settings: PyTorch writes
``table[step]`` into its param groups before each step, Keras looks it up with
``keras.ops.take`` at the optimizer's iteration counter (inside ``tf.function``, XLA and
``jax.jit`` alike). Identical by construction; only numpy here.

Schedules (``step`` counts optimizer steps from 0, ``T`` is epochs x steps per epoch):

- ``constant``: ``lr``.
- ``step``: ``lr * gamma ** (epoch // step_size)`` (``step_size`` in epochs, default 1;
  ``gamma`` default 0.1), as ``torch.optim.lr_scheduler.StepLR`` stepped per epoch.
- ``cosine``: from ``lr`` down to ``lr * min_lr`` over ``T`` steps (half a cosine).
- ``warmup_cosine``: linear warm-up from ``lr / warmup_steps`` to ``lr`` over the first
  ``warmup`` steps (a fraction of ``T`` below 1, else a step count; default 0.1), then
  a cosine from just below ``lr`` to ``lr * min_lr`` at the last step.
- ``one_cycle``: cosine up from ``lr / div_factor`` to ``lr`` over ``warmup`` (default
  0.3), then cosine down to ``lr / (div_factor * final_div_factor)`` (defaults 25, 1e4),
  like ``torch.optim.lr_scheduler.OneCycleLR`` with ``anneal_strategy="cos"``.
- ``reduce_on_plateau``: ``lr`` times a factor that :class:`Plateau` lowers between epochs
  when the monitored metric stops improving. No table can hold it (it depends on the
  metrics), so the shared epoch loop runs the rule, once, in Python, and each mode writes
  the new rate where its optimizer reads it: PyTorch into its param groups, Keras into the
  optimizer's learning-rate variable (a compiled program reads the variable; nothing
  recompiles).

With ``train.max_steps`` the run may end before ``epochs * steps_per_epoch``: a table then
spans the steps that train (a cosine reaches its floor at the last step that trains).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["EPOCH_RULES", "SCHEDULES", "Plateau", "lr_table", "per_step"]

# The schedules lr_table computes. The config names the same ones, with the options each
# reads (protolab.config.SCHEDULE_OPTIONS: a rule, checked when a config loads); a test
# keeps the two lists equal, so neither part imports the other.
SCHEDULES: tuple[str, ...] = (
    "constant", "step", "cosine", "warmup_cosine", "one_cycle", "reduce_on_plateau"
)  # fmt: skip
# schedules decided between epochs from the metrics (Plateau): lr_table holds them constant
EPOCH_RULES: tuple[str, ...] = ("reduce_on_plateau",)
_DEFAULT_WARMUP = {"warmup_cosine": 0.1, "one_cycle": 0.3}
Options = Mapping[str, float | str]


def per_step(schedule: str) -> bool:
    """Whether ``schedule`` varies the rate step by step (a table a program reads), rather
    than holding it (constant) or changing it between epochs (an epoch rule)."""
    return schedule != "constant" and schedule not in EPOCH_RULES


def lr_table(
    schedule: str,
    lr: float,
    epochs: int,
    steps_per_epoch: int,
    options: Options | None = None,
    max_steps: int | None = None,
) -> np.ndarray:
    """The learning rate of each of ``epochs * steps_per_epoch`` steps (or ``max_steps``
    when fewer train: ``train.max_steps``), as float32.

    float32 because that is what Keras applies; PyTorch reads the same rounded values.
    """
    opts = {k: float(v) for k, v in (options or {}).items() if not isinstance(v, str)}
    total = max(min(epochs * steps_per_epoch, max_steps or epochs * steps_per_epoch), 1)
    step = np.arange(total, dtype=np.float64)
    if schedule in ("constant", *EPOCH_RULES):
        out = np.full(total, lr)
    elif schedule == "step":
        size = max(int(opts.get("step_size", 1)), 1)
        epoch = step // max(steps_per_epoch, 1)
        out = lr * float(opts.get("gamma", 0.1)) ** (epoch // size)
    elif schedule == "cosine":
        out = _cosine(step / total, lr, lr * float(opts.get("min_lr", 0.0)))
    elif schedule == "warmup_cosine":
        warm = _warmup_steps(opts.get("warmup", _DEFAULT_WARMUP[schedule]), total)
        # the peak is the warm-up's last step; the cosine starts right after it
        rest = np.clip((step - warm + (1 if warm else 0)) / max(total - warm, 1), 0.0, 1.0)
        low = lr * float(opts.get("min_lr", 0.0))
        out = np.where(step < warm, lr * (step + 1) / max(warm, 1), _cosine(rest, lr, low))
    elif schedule == "one_cycle":
        out = _one_cycle(step, total, lr, opts)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    return np.asarray(out, dtype=np.float32)


def _warmup_steps(warmup: float, total: int) -> int:
    """A fraction of the run below 1, else a number of steps (never the whole run)."""
    steps = warmup * total if warmup < 1 else warmup
    return int(min(max(round(steps), 0), max(total - 1, 0)))


def _cosine(frac: np.ndarray, high: float, low: float) -> np.ndarray:
    return low + (high - low) * 0.5 * (1.0 + np.cos(math.pi * frac))


def _one_cycle(step: np.ndarray, total: int, lr: float, opts: Mapping[str, float]) -> np.ndarray:
    """OneCycleLR's two cosine phases (torch's ``three_phase=False``)."""
    start = lr / float(opts.get("div_factor", 25.0))
    end = start / float(opts.get("final_div_factor", 1e4))
    warm = _warmup_steps(opts.get("warmup", _DEFAULT_WARMUP["one_cycle"]), total)
    rising = start + (lr - start) * 0.5 * (1.0 - np.cos(math.pi * step / max(warm, 1)))
    frac = np.clip((step - warm) / max(total - 1 - warm, 1), 0.0, 1.0)
    return np.where(step < warm, rising, _cosine(frac, lr, end))


@dataclass
class Plateau:
    """``reduce_on_plateau``: Keras' ``ReduceLROnPlateau`` (PyTorch's with
    ``threshold_mode="abs"``), one implementation that every mode's epoch loop runs.

    After each epoch, :meth:`update` takes the monitored metric and returns the factor on
    ``lr`` for the next epoch: once ``patience`` epochs in a row have not beaten the best by
    more than ``min_delta``, the factor is multiplied by ``factor`` (never below ``min_lr``,
    a fraction of ``lr`` as every protolab floor), then ``cooldown`` epochs pass before
    epochs without improvement count again. Keras' defaults: factor 0.1, patience 10,
    min_delta 1e-4, cooldown 0, min_lr 0, monitor ``val/loss``.
    """

    factor: float = 0.1
    patience: int = 10
    min_delta: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0
    monitor: str = "val/loss"
    mode: str = "min"
    scale: float = 1.0
    best: float | None = None
    wait: int = 0
    cooling: int = 0

    @classmethod
    def of(cls, options: Options) -> Plateau:
        """The rule with the schedule's options (unset ones keep Keras' defaults)."""
        o = dict(options)
        return cls(
            factor=float(o.get("factor", 0.1)),
            patience=int(o.get("patience", 10)),
            min_delta=float(o.get("min_delta", 1e-4)),
            cooldown=int(o.get("cooldown", 0)),
            min_lr=float(o.get("min_lr", 0.0)),
            monitor=str(o.get("monitor", "val/loss")),
            mode=str(o.get("mode", "min")),
        )

    def update(self, value: float) -> float:
        """The factor on ``lr`` after an epoch that measured ``value``, in Keras' order."""
        if self.cooling > 0:
            self.cooling -= 1
            self.wait = 0
        sign = 1.0 if self.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.wait = value, 0
        elif self.cooling <= 0:
            self.wait += 1
            if self.wait >= self.patience and self.scale > self.min_lr:
                self.scale = max(self.scale * self.factor, self.min_lr)
                self.cooling, self.wait = self.cooldown, 0
        return self.scale
