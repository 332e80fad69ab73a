"""The contract every backend implements: build a :class:`Program`, and one loop that runs it.

A backend turns one :class:`Job` (an Arch, a dataset, train settings, hardware) into a
:class:`JobResult` (final metrics, per-epoch history, tags and the trained model), calling
an epoch hook after every epoch. The hook is how sweeps report intermediate values, log
curves and prune; the backend knows nothing of Optuna or MLflow, so a long-lived process
(``protolab watch``), an exporter or a benchmark can call :meth:`Backend.run` repeatedly.

The split follows Keras 3's ``train_step`` / ``make_train_function``: a backend only says
how to build its model and programs (:meth:`Backend.program`) and how one epoch trains
(:meth:`Program.fit_epoch`); the loop, the clock and the metric contract live here, once,
so every mode is measured the same way.
"""

from __future__ import annotations

import abc
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from protolab.backends._registry import Family
from protolab.backends._schedule import EPOCH_RULES, Plateau
from protolab.backends._timing import TrialClock, import_timed, preload, step_stats
from protolab.errors import ArchError, NonFiniteLossError

if TYPE_CHECKING:
    from protolab.arch import Arch
    from protolab.data import Dataset

__all__ = [
    "Backend",
    "DeviceInfo",
    "EarlyStopping",
    "EpochClose",
    "EpochFit",
    "EpochHook",
    "Hardware",
    "HardwareSettings",
    "Job",
    "JobResult",
    "OwnLoop",
    "Program",
    "TrainSettings",
    "TrainedModel",
    "check_output",
    "epoch_plan",
    "loss_name",
    "perf_metrics",
]

WORKER_ENV = "PROTOLAB_BACKEND_WORKER"  # set in a backend's own worker process: its class name

# Called after each epoch with (epoch starting at 1, that epoch's metrics). It may raise
# (e.g. optuna.TrialPruned) to stop the job; backends must let that propagate.
EpochHook = Callable[[int, dict[str, float]], None]
# Closes one epoch of an OwnLoop: (epoch from 1, its fit, when it started, when its training
# steps ended) -> True when training should stop (early stopping). See OwnLoop.
EpochClose = Callable[[int, "EpochFit", float, float], bool]


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience``
    epochs; ``mode`` is ``min`` or ``max`` (resolved from the metric name when configured)."""

    metric: str = "val/loss"
    patience: int = 3
    min_delta: float = 0.0
    mode: str = "min"
    restore_best_weights: bool = False  # Keras' name: the best epoch's weights at the end


@dataclass(frozen=True)
class TrainSettings:
    """Resolved (sampled) train settings of one job.

    Options are plain values and tuples (hashable: the program cache keys on them); the
    defaults reproduce what every mode did before these options existed.
    """

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float = 0.0
    seed: int = 0
    max_steps: int | None = None  # cap on steps per epoch (calibration, quick reruns)
    schedule: str = "constant"  # per-step learning rate: protolab.backends._schedule
    schedule_options: tuple[tuple[str, float | str], ...] = ()
    grad_clip: float | None = None  # global gradient-norm clipping
    early_stopping: EarlyStopping | None = None
    label_smoothing: float = 0.0
    loss: str = "auto"  # cross_entropy | mse | mae | huber | custom (``custom_loss``)
    custom_loss: object | None = None  # a protolab.Loss from the script when loss=custom
    optimizer_options: tuple[tuple[str, float | bool | tuple[float, ...]], ...] = ()
    drop_last: bool = True  # False: the ragged last batch trains as one smaller step
    # train.max_steps: optimizer steps in all (the last epoch may be partial); None: epochs
    max_total_steps: int | None = None
    custom_optimizer: object | None = None  # a protolab.Optimizer when optimizer=custom

    def steps_left(self, done: int, per_epoch: int) -> int:
        """Steps the next epoch trains, after ``done``: a whole epoch unless
        ``max_total_steps`` ends it first (0: the run is over)."""
        if self.max_total_steps is None:
            return per_epoch
        return max(min(per_epoch, self.max_total_steps - done), 0)


def loss_name(train: TrainSettings, task: str) -> str:
    """The loss a job trains with: ``auto`` is cross-entropy for classification, MSE for
    regression (what every mode used before ``train.loss`` existed)."""
    if train.loss == "auto":
        return (
            "custom"
            if train.custom_loss is not None
            else ("cross_entropy" if task == "classification" else "mse")
        )
    if train.loss == "cross_entropy" and task != "classification":
        raise ValueError(
            f"train.loss cross_entropy needs a classification dataset, but this one is {task}; "
            "use mse, mae or huber"
        )
    return train.loss


def output_tags(job: Job) -> dict[str, str]:
    """A classification job's ``output`` tag (``protolab.output``): what its model's output
    rows are, so what every mode's loss took them as: ``probabilities`` (the Arch ends in a
    softmax, built-in or found in a native model's outputs: ``Arch.output_activation``) or
    ``logits``."""
    if job.dataset.task != "classification":
        return {}
    probs = getattr(job.arch, "output_activation", None) == "softmax"
    return {"output": "probabilities" if probs else "logits"}


def epoch_plan(n: int, batch: int, drop_last: bool, max_steps: int | None) -> tuple[int, int]:
    """(full steps, samples in a ragged last step) per epoch, the same on every mode.

    The tail is 0 with ``drop_last`` (every step one static shape), when the data divides
    evenly, or when ``max_steps`` cuts the epoch before it ends.
    """
    full = n // batch
    tail = 0 if drop_last else n - full * batch
    if max_steps and full >= max_steps:
        return max_steps, 0
    return full, tail


class HardwareSettings(Protocol):
    """Whatever states where a job runs (the config's ``hardware:`` section, for one)."""

    @property
    def accelerator(self) -> str: ...
    @property
    def devices(self) -> int: ...
    @property
    def precision(self) -> str: ...
    @property
    def threads(self) -> int | None: ...


@dataclass(frozen=True)
class Hardware:
    """Where and how a job runs: the backends' own settings, so no backend reads the config.

    Hashable: calibration and the model cache key on it.
    """

    accelerator: str = "auto"  # auto | cpu | gpu | tpu (auto: a GPU/TPU when present)
    devices: int = 1  # devices per job (DDP ranks on torch, logical devices on Keras)
    precision: str = "32"  # 32 | bf16 | 16 (float16 mixed, GPU only)
    threads: int | None = None  # intra-op CPU threads; None: the frameworks' default

    @classmethod
    def of(cls, settings: HardwareSettings) -> Hardware:
        """The backends' copy of ``settings`` (e.g. the config's ``hardware:``)."""
        return cls(settings.accelerator, settings.devices, settings.precision, settings.threads)


@dataclass(frozen=True)
class Job:
    """Everything a backend needs to train one model once."""

    arch: Arch
    dataset: Dataset
    train: TrainSettings
    hardware: Hardware
    metrics: tuple[str, ...] = ()  # extra validation scores per epoch (data/_scores.py)
    # population-based training: a folder with the state (weights and optimizer) a member
    # continues from (its first epoch starts there), and one its final state is written to
    start_from: Path | None = None
    save_to: Path | None = None


class TrainedModel(Protocol):
    """A trained model handed back by a job: what export and a warm process build on."""

    backend: str

    @property
    def native(self) -> object:
        """The framework's own model object (a ``torch.nn.Module``, a ``keras.Model`` ...)."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs (logits or values) for a batch of inputs, as float32 numpy."""


@dataclass
class JobResult:
    """What a job measured (contract names), its curves, tags and the trained model."""

    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    model: TrainedModel | None = None


@dataclass
class EpochFit:
    """What one training epoch measured.

    ``step_s`` are the epoch's steady-state step times (seconds; empty when the epoch is a
    warm-up, e.g. a compiled program's first run). ``first_step_s`` is the time from the
    epoch's start to its first finished step, when the program can see single steps.
    """

    loss: float
    step_s: list[float] = field(default_factory=list)
    first_step_s: float | None = None
    steps: int = 0  # steps this epoch trained (0: the program's whole ``steps``)


@dataclass(frozen=True)
class DeviceInfo:
    """Where a program runs, for MFU: kind ``cpu``/``cuda``/``tpu``, a name, CPU threads."""

    kind: str
    name: str
    threads: int = 0
    gemm: Callable[[int, str], Callable[[], None]] | None = None  # peak probe (n, dtype)


class Program(abc.ABC):
    """One model built on one backend, with its training and evaluation programs."""

    steps: int  # optimizer steps per epoch
    batch: int  # samples per step

    def compile(self) -> None:  # noqa: B027 - a hook that does nothing by default
        """Trace / compile the programs without training (timed as ``time/compile_s``).

        Modes that compile lazily (eager, ``torch.compile``) leave this empty; their
        compile cost is the first step's extra time.
        """

    @abc.abstractmethod
    def fit_epoch(self, epoch: int) -> EpochFit:
        """Train one epoch (``steps`` steps) and say what it measured."""

    def fit_steps(self, epoch: int, steps: int) -> EpochFit:
        """Train the first ``steps`` steps of epoch ``epoch`` (``train.max_steps`` ends the
        run mid-epoch); the built-in modes override it, a program that cannot refuses."""
        if steps == self.steps:
            return self.fit_epoch(epoch)
        raise NotImplementedError(
            f"{type(self).__name__} cannot stop mid-epoch: train.max_steps needs a multiple "
            f"of its {self.steps} steps per epoch here, or a program with fit_steps"
        )

    def rescale_lr(self, scale: float) -> None:
        """Train with ``train.lr * scale`` from the next step on (an epoch rule's decision:
        ``reduce_on_plateau``), without recompiling anything."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot change its learning rate between epochs "
            "(schedule reduce_on_plateau)"
        )

    def snapshot(self) -> object:
        """A copy of the model's weights (trainable and not) that :meth:`restore` puts back
        (``early_stopping.restore_best_weights``); the optimizer's state is not part of it."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot snapshot its weights "
            "(early_stopping.restore_best_weights)"
        )

    def restore(self, snapshot: object) -> None:
        """Put back the weights :meth:`snapshot` copied."""
        raise NotImplementedError(f"{type(self).__name__} cannot restore its weights")

    def save_state(self, directory: Path) -> None:
        """Write the weights and the optimizer's state into ``directory`` (population-based
        training: another member, maybe on another host, continues from them), in a format
        that loads without running code (no pickle): each mode's own file."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot save its weights and optimizer state "
            "(study.sampler pbt): use a mode that trains protolab's own programs"
        )

    def load_state(self, directory: Path) -> None:
        """Continue from what :meth:`save_state` wrote (the same Arch on the same mode); the
        learning rate and other train settings stay this job's own."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot load weights and optimizer state (study.sampler pbt)"
        )

    @abc.abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Validation metrics (``val/loss`` and ``val/acc`` or ``val/rmse``)."""

    @abc.abstractmethod
    def device(self) -> DeviceInfo: ...

    @abc.abstractmethod
    def trained(self) -> TrainedModel: ...

    def current_lr(self) -> float | None:
        """The learning rate the optimizer applied at its latest step, read back from it
        (logged as ``train/lr`` when a schedule varies it); None: not known."""
        return None

    def measure(self) -> dict[str, float]:
        """Backend-specific final metrics (``memory/peak_device_mb``, ``model/params``)."""
        return {}

    def tags(self) -> dict[str, str]:
        return {}


class OwnLoop(Program):
    """A program whose framework runs the epochs itself: the user's training as it is.

    A ``LightningModule`` trains under Lightning's ``Trainer`` and a compiled
    ``keras.Model`` under its own ``fit``, with the user's callbacks; protolab does not
    re-implement either loop. The framework's epoch-end hook calls ``close(epoch, fit,
    t_epoch, t_trained)``, the same epoch close as every other mode (metrics, the epoch
    hook that logs and prunes, early stopping); an exception it raises (pruning) must
    propagate out of the framework's loop, and a True return asks the loop to stop.
    """

    def fit_epoch(self, epoch: int) -> EpochFit:
        raise TypeError(f"{type(self).__name__} runs every epoch in fit_all, not one at a time")

    @abc.abstractmethod
    def fit_all(self, epochs: int, close: EpochClose) -> None:
        """Train up to ``epochs`` epochs in the framework's own loop, closing each."""


class Backend(abc.ABC):
    """One way of executing an Arch: dynamic (eager) or static (compiled graph)."""

    name: ClassVar[str]
    family: ClassVar[Family]
    modules: ClassVar[tuple[str, ...]] = ()  # what ``load`` imports (timed once per process)
    env_defaults: ClassVar[dict[str, str]] = {}  # set before the framework imports, unless set
    environ: ClassVar[dict[str, str]] = {}  # required before the framework imports (forced)
    process_env: ClassVar[dict[str, str]] = {}  # non-empty: runs in a worker with this env
    loads_elsewhere: ClassVar[bool] = False  # load() returns at once; wait_loaded() waits
    max_devices: ClassVar[int | None] = None  # None: any number
    # True: ``modules`` may be imported once by ``sweep --workers`` and the workers forked
    # from it (PyTorch's import starts nothing a fork breaks: DataLoader workers fork after
    # it). TensorFlow and JAX start runtimes at import that a forked child cannot use.
    fork_safe: ClassVar[bool] = False

    @classmethod
    def needs_own_process(cls) -> bool:
        """True unless this is the backend's own worker process.

        Keras' backend is fixed when Keras is imported, so a Keras-on-JAX mode never shares
        a process with the TensorFlow modes: it always runs in a worker of its own.
        """
        return bool(cls.process_env) and os.environ.get(WORKER_ENV) != cls.__name__

    def load(self) -> None:
        """Import the framework now, timed once per process.

        ``run`` imports what it needs itself. A sweep calls this early so the import
        overlaps other start-up work; jobs still report it as ``time/import_s``.
        """
        for key, value in self.env_defaults.items():
            os.environ.setdefault(key, value)
        os.environ.update(self.environ)
        preload(*self.modules)

    def wait_loaded(self) -> None:  # noqa: B027 - a hook that does nothing by default
        """Return once ``load`` has finished; in-process backends load synchronously.

        A backend whose ``load`` runs elsewhere (a worker process) blocks here: a job timed
        while another process still imports a framework shares the cores with that import
        (lightning on ``attention`` 2.5-7.3 ms a step beside a worker importing JAX, 1.8
        without, on 2 cores).
        """

    def release(self) -> None:  # noqa: B027 - a hook that does nothing by default
        """Free framework state between jobs (caches, graphs); no-op by default."""

    @abc.abstractmethod
    def program(self, job: Job) -> Program:
        """Build ``job``'s model, optimizer and programs on this backend (timed as build)."""

    def run(self, job: Job, on_epoch: EpochHook | None = None) -> JobResult:
        """Build, compile, train and evaluate ``job``; call ``on_epoch`` after each epoch."""
        clock = TrialClock()
        self.load()
        clock.import_s, cold = import_timed(*self.modules)
        info = _infer(job)
        t0 = time.perf_counter()
        prog = self.program(job)
        clock.build_s = time.perf_counter() - t0
        if not isinstance(prog, OwnLoop):  # an own loop's training step defines its outputs
            _check_arrays(self.name, job)
            check_output(info.output_shape, job.dataset.output_shape, job.dataset.name)
        t0 = time.perf_counter()
        prog.compile()
        clock.compile_s = time.perf_counter() - t0
        result = JobResult()
        if job.start_from is not None:  # PBT: what the inherited state scores, before training
            prog.load_state(job.start_from)
            inherited = _val_metrics(prog, job)
            result.metrics.update({f"inherited/{k}": v for k, v in inherited.items()})
        first_extra = _train(prog, job, clock, result, on_epoch)
        if job.save_to is not None:
            prog.save_state(job.save_to)
        clock.compile_s += max(first_extra - step_stats(clock.step_s)[0] / 1000, 0.0)
        final, stopped = result.history[-1], result.metrics
        result.metrics = {
            **{k: v for k, v in final.items() if not k.startswith("time/")},
            **clock.metrics(prog.batch),
            "train/steps": float(prog.steps * len(result.history)),  # _train's count wins
            "train/steps_per_epoch": float(prog.steps),
            "model/params": float(info.params),
            "model/flops_per_sample": float(info.flops_per_sample),
            **prog.measure(),
            **stopped,
        }
        dev = prog.device()
        result.metrics.update(
            perf_metrics(info.flops_per_sample, result.metrics, dev, job.hardware.precision)
        )
        own = prog.tags()
        result.tags = {
            "cold_start": str(cold).lower(),
            **({} if isinstance(prog, OwnLoop) else output_tags(job)),  # own loop: its own loss
            **own,
            **result.tags,
        }
        if own.get("stopped_early") == "true":  # the user's callback stopped it, not ours
            result.tags["stopped_early"] = "true"
        result.model = prog.trained()
        return result


@dataclass(frozen=True)
class _Shapes:
    output_shape: tuple[int, ...] = ()
    params: int = 0
    flops_per_sample: int = 0


def _infer(job: Job) -> _Shapes:
    """The Arch traced on one sample: its output shape, parameters and FLOPs. Data with
    several inputs or outputs is not one sample shape: the model's own count stands
    (``model/params`` from the program), FLOPs are unknown (0)."""
    if job.dataset.structure is not None:
        return _Shapes()
    info = job.arch.infer(job.dataset.input_shape, job.dataset.input_dtype)
    return _Shapes(info.output_shape, info.params, info.flops_per_sample)


def _check_arrays(name: str, job: Job) -> None:
    """protolab's own programs keep one x array and one y array on the device: a streamed
    source or several inputs and outputs only feed a model that trains itself."""
    ds = job.dataset
    if ds.stream is None and ds.structure is None:
        return
    what = f"pl.Data(train=<{ds.stream.kind}>)" if ds.stream else "several inputs or outputs"
    raise ArchError(
        f"{name}: this model cannot train on {what}: such data feeds a model that trains "
        "itself (a LightningModule, a compiled keras.Model); protolab's own programs keep "
        "one x array and one y array on the device (return those from @pl.data for them)"
    )


def _train(
    prog: Program, job: Job, clock: TrialClock, result: JobResult, on_epoch: EpochHook | None
) -> float:
    """The epoch loop every backend shares; returns the first step's own time (or 0).

    Early stopping, ``reduce_on_plateau`` and ``train.max_steps`` are decided here, once,
    from the same per-epoch metrics every mode reports, so all modes stop (and lower their
    learning rate) at the same epoch when their curves agree. A program whose framework
    runs the epochs itself (:class:`OwnLoop`: the user's ``Trainer`` or ``fit``) calls the
    same epoch close from its framework's epoch-end hook.
    """
    tr = job.train
    _check_hooks(prog, tr)
    close = _EpochClose(prog, job, clock, result, on_epoch)
    if isinstance(prog, OwnLoop):
        prog.fit_all(tr.epochs, close)
    else:
        for epoch in range(1, tr.epochs + 1):
            steps = tr.steps_left(close.steps_done, prog.steps)
            if steps == 0:  # train.max_steps reached at the end of the last epoch
                break
            t_epoch = time.perf_counter()
            fit = prog.fit_epoch(epoch) if steps == prog.steps else prog.fit_steps(epoch, steps)
            fit.steps = fit.steps or steps
            if close(epoch, fit, t_epoch, time.perf_counter()):
                break
    close.finish()
    if close.stopper.cfg is not None:
        result.tags["stopped_early"] = str(close.stopper.stopped).lower()
        result.metrics["train/stopped_epoch"] = float(len(result.history))
    result.metrics["train/steps"] = float(close.steps_done)
    if not clock.step_s:  # one epoch only: its (warm-up) average is all there is
        clock.step_s = [(clock.train_s / max(close.steps_done, 1))]
    return close.first_only


def _check_hooks(prog: Program, tr: TrainSettings) -> None:
    """Refuse, before training, an option this program has no hook for (a plugin's)."""
    if tr.schedule in EPOCH_RULES and type(prog).rescale_lr is Program.rescale_lr:
        Program.rescale_lr(prog, 1.0)  # raises, naming the program and the option
    es = tr.early_stopping
    if es is not None and es.restore_best_weights and type(prog).snapshot is Program.snapshot:
        Program.snapshot(prog)
    cap, per_epoch = tr.max_total_steps, prog.steps
    if cap is None or isinstance(prog, OwnLoop) or type(prog).fit_steps is not Program.fit_steps:
        return
    if cap < tr.epochs * per_epoch and cap % per_epoch:  # the last epoch would be partial
        Program.fit_steps(prog, 1, cap % per_epoch)


class _EpochClose:
    """What ends every epoch on every mode: the clock, the metrics, the hook, the stopper,
    the plateau rule and the best weights.

    Called as ``close(epoch, fit, t_epoch, t_trained)`` (epoch from 1; when the epoch
    started and when its training steps ended); returns True when training should stop.
    """

    def __init__(
        self,
        prog: Program,
        job: Job,
        clock: TrialClock,
        result: JobResult,
        on_epoch: EpochHook | None,
    ) -> None:
        self.prog, self.job, self.clock, self.result, self.on_epoch = (
            prog, job, clock, result, on_epoch
        )  # fmt: skip
        tr = job.train
        self.stopper = _Stopper(tr.early_stopping)
        self.plateau = Plateau.of(dict(tr.schedule_options)) if tr.schedule in EPOCH_RULES else None
        self.first_only = 0.0
        self.steps_done = 0
        self.best: tuple[int, object] | None = None  # (epoch, weights) to restore at the end

    def __call__(self, epoch: int, fit: EpochFit, t_epoch: float, t_trained: float) -> bool:
        prog, clock = self.prog, self.clock
        steps = fit.steps or prog.steps
        if epoch == 1:
            if fit.first_step_s is not None:
                self.first_only = fit.first_step_s
                clock.first_step_s = t_epoch - clock.start + fit.first_step_s
            else:  # a compiled epoch hides single steps: one epoch-average step
                clock.first_step_s = t_epoch - clock.start + (t_trained - t_epoch) / steps
        if not math.isfinite(fit.loss):
            raise NonFiniteLossError(f"training loss is {fit.loss} at epoch {epoch}")
        clock.step_s.extend(fit.step_s)
        metrics = _epoch_metrics(prog, self.job, fit)
        clock.end_epoch(epoch, metrics, t_epoch, t_trained, self.result.history, self.on_epoch)
        self.steps_done += steps
        stop = self.stopper.stop(metrics)
        es = self.stopper.cfg
        if es is not None and es.restore_best_weights and self.stopper.improved:
            self.best = (epoch, prog.snapshot())
        if self.plateau is not None:
            scale = self.plateau.scale
            if self.plateau.update(_monitored(metrics, self.plateau.monitor)) != scale:
                prog.rescale_lr(self.plateau.scale)
        cap = self.job.train.max_total_steps
        return stop or (cap is not None and self.steps_done >= cap)

    def finish(self) -> None:
        """``restore_best_weights``: the best epoch's weights back, and the final metrics
        measured on them (the run's final val metrics are the best epoch's)."""
        if self.best is None:
            return
        epoch, weights = self.best
        history, out = self.result.history, self.result.metrics
        if epoch != len(history):
            self.prog.restore(weights)
            out.update(_val_metrics(self.prog, self.job))
            out["train/loss"] = history[epoch - 1]["train/loss"]
        self.result.tags["restored_epoch"] = str(epoch)


def _monitored(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        raise ValueError(
            f"schedule_options.monitor {name!r} is not measured by this job; "
            f"measured: {', '.join(sorted(metrics))}"
        )
    return metrics[name]


def _val_metrics(prog: Program, job: Job) -> dict[str, float]:
    """The validation metrics of the program's current weights (scores included)."""
    metrics = prog.evaluate()
    if job.metrics:  # scored in numpy from the model's outputs: the same on every mode
        from protolab.data._scores import score

        out = prog.trained().predict(job.dataset.x_val)
        metrics.update(score(job.metrics, out, job.dataset.y_val))
    return metrics


def _epoch_metrics(prog: Program, job: Job, fit: EpochFit) -> dict[str, float]:
    metrics = {"train/loss": fit.loss, **_val_metrics(prog, job)}
    if job.train.schedule != "constant":
        lr = prog.current_lr()
        if lr is not None:
            metrics["train/lr"] = lr
    if fit.step_s:
        metrics["time/epoch_step_ms"] = step_stats(fit.step_s)[0]
    return metrics


class _Stopper:
    """Patience counter over one metric: improvement means beating the best by min_delta."""

    def __init__(self, cfg: EarlyStopping | None) -> None:
        self.cfg, self.best, self.waited = cfg, math.nan, 0
        self.improved = self.stopped = False

    def stop(self, metrics: dict[str, float]) -> bool:
        cfg = self.cfg
        if cfg is None:
            return False
        if cfg.metric not in metrics:
            raise ValueError(
                f"early_stopping.metric {cfg.metric!r} is not measured by this job; "
                f"measured: {', '.join(sorted(metrics))}"
            )
        value = metrics[cfg.metric]
        sign = 1.0 if cfg.mode == "max" else -1.0
        self.improved = math.isnan(self.best) or sign * (value - self.best) > cfg.min_delta
        if self.improved:
            self.best, self.waited = value, 0
            return False
        self.waited += 1
        self.stopped = self.waited >= cfg.patience
        return self.stopped


_DTYPES = {"32": "float32", "bf16": "bfloat16", "16": "float16"}


def perf_metrics(
    flops_per_sample: float, metrics: dict[str, float], dev: DeviceInfo, precision: str
) -> dict[str, float]:
    """Achieved training TFLOP/s and MFU against the device's measured peak.

    Training FLOPs are taken as 3x the forward FLOPs (forward + ~2x for the backward pass).
    """
    from protolab.backends._peak import peak_tflops

    if dev.kind not in ("cpu", "cuda") or dev.gemm is None:
        return {}
    peak = peak_tflops(dev.kind, dev.name, _DTYPES[precision], dev.threads, dev.gemm)
    tflops = 3.0 * flops_per_sample * metrics["throughput/samples_per_s"] / 1e12
    return {
        "device/peak_tflops": peak,
        "perf/tflops": tflops,
        "perf/mfu": tflops / peak if peak > 0 else float("nan"),
    }


def check_output(got: tuple[int, ...], want: tuple[int, ...], data: str) -> None:
    """The Arch's last layer must produce what the dataset's targets need."""
    if tuple(got) != tuple(want):
        raise ArchError(
            f"the Arch outputs shape {tuple(got)}, but data '{data}' needs {tuple(want)}: "
            f"end the Arch with Dense({want[-1]})"
        )
