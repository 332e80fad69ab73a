"""A LightningModule trained by Lightning's own ``Trainer``: the user's training, as it is.

protolab does not re-implement the module's loop: ``Trainer.fit`` calls its
``training_step``, ``validation_step`` and ``configure_optimizers`` (schedulers stepped at
the intervals it gives), its ``train_dataloader``/``val_dataloader`` when it defines them
(else the dataset's arrays as a DataLoader of ``(x, y)`` batches: the config's batch size,
``drop_last``, shuffled with the trial's seed, on the device), and the Lightning callbacks
the experiment declares (``pl.native(torch_callbacks=...)``).

protolab measures it through Lightning's hooks (:class:`_Clock`, a callback): each step
from the end of the previous one (data loading and Lightning's bookkeeping included, as a
user's own loop pays them), the first step, the epoch's training end; at the epoch's end
(Lightning runs validation first) it closes the epoch as every mode does, and a pruning
exception raised there propagates out of ``Trainer.fit``. What the module logs
(``self.log``) reaches the metrics under its own name; ``val/loss`` is its logged
``val/loss`` or ``val_loss`` (else the mean of what ``validation_step`` returns);
``val/acc`` / ``val/rmse`` are logged by it or computed with its ``forward`` when that
gives the targets' shape. A module without ``validation_step`` has no val/ metrics.

``torch-compile`` compiles the module as Lightning's users do, ``torch.compile(module)``
before ``fit`` (Lightning then compiles ``forward`` and the ``*_step`` methods).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as lp
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.compile import to_uncompiled
from lightning.pytorch.utilities.data import extract_batch_size
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
)

from protolab._frameworks import TORCH
from protolab.arch import Native, build_custom
from protolab.backends._base import (
    DeviceInfo,
    EpochClose,
    EpochFit,
    Job,
    OwnLoop,
    TrainSettings,
    epoch_plan,
)
from protolab.backends._cache import job_key
from protolab.backends._input_wait import InputWait
from protolab.backends._peak import cpu_name
from protolab.backends._threads import ThreadProbe, set_torch_threads, torch_thread_plan
from protolab.backends.torch._stream import torch_loader
from protolab.backends.torch.core import PRECISION, gemm, torch_loss
from protolab.backends.torch.export import TorchModel
from protolab.backends.torch.nn import count_params
from protolab.backends.torch.trainer import compile_cache_probe
from protolab.config import METRICS
from protolab.data import Tree, map_tree, rows
from protolab.errors import ArchError, NonFiniteLossError

__all__ = ["LightningProgram"]

_EVAL_BATCH = 1024
#: train settings a LightningModule decides itself, with the value that means "not set"
_MODULE_DECIDES: dict[str, object] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "schedule": "constant",
    "schedule_options": (),
    "optimizer_options": (),
    "label_smoothing": 0.0,
    "loss": "auto",
    "custom_loss": None,
    "custom_optimizer": None,
}
_VAL_LOSS = ("val/loss", "val_loss")  # what validation_step logs its loss as, by convention
_TRAIN_LOSS = ("train/loss", "train_loss", "loss")  # when training_step returns none
_UNSAFE = re.compile(r"[^\w\-. /]")  # what MLflow refuses in a metric name
#: id -> every callback a torch_callbacks factory handed out that is still alive
_HANDED_OUT: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


class LightningProgram(OwnLoop):
    """One LightningModule under one ``Trainer``, built fresh for the job."""

    def __init__(self, backend: str, job: Job, node: Native, compiled: bool = False) -> None:
        set_torch_threads(job.hardware.threads)
        check_own_job(job)
        lp.seed_everything(job.train.seed, workers=True, verbose=False)
        module = build_custom(node, TORCH, job.dataset.input_shape)  # new per trial, seeded
        if not isinstance(module, lp.LightningModule):
            raise ArchError(
                f"{node!r}: its torch builder returns a {type(module).__name__}, which has a "
                "training_step and configure_optimizers but is not a lightning.LightningModule"
            )
        self.backend, self.job, self.module, self.compiled = backend, job, module, compiled
        self.cc = compile_cache_probe(job, job_key(backend, job)) if compiled else None
        self.has_forward = is_overridden("forward", module)
        if job.metrics and not self.has_forward:
            raise ArchError(
                f"{type(module).__name__} defines no forward, so protolab cannot score its "
                f"outputs: metrics {', '.join(job.metrics)} need one (or log them yourself "
                "with self.log in validation_step)"
            )
        self.close: EpochClose | None = None
        self.clock, self.logger = _Clock(self), _Collected()
        self.user_callbacks = _callbacks(node)
        with _quiet():
            self.trainer = self._trainer(job)
        self.dev = self.trainer.strategy.root_device
        self.probe: ThreadProbe | None
        self.probe, self.threads_rule = torch_thread_plan(
            job.hardware.threads, self.dev.type == "cpu", self.trainer.world_size, compiled,
            job_key("threads", job), _steps_known(job),
        )  # fmt: skip
        self.validates = is_overridden("validation_step", module)
        self._loaders(job)
        self.val_returned: list[tuple[torch.Tensor, int]] = []  # (returned loss, batch size)
        self.forward_scores: bool | None = None  # None: not tried yet
        self.val_loss_from = "none"  # logged | validation_step | forward | none
        self.protolab_stopped = False

    def _trainer(self, job: Job) -> lp.Trainer:
        """The Trainer a user would write, minus its outputs (bar, summary, checkpoints)."""
        hw, tr = job.hardware, job.train
        cap = job.dataset.stream.steps_per_epoch if job.dataset.stream is not None else None
        return lp.Trainer(
            max_epochs=tr.epochs,
            accelerator="cuda" if hw.accelerator == "gpu" else hw.accelerator,
            devices=1,
            precision=PRECISION[hw.precision],  # type: ignore[arg-type]
            logger=self.logger,
            callbacks=[self.clock, *self.user_callbacks],
            enable_checkpointing=any(isinstance(c, Checkpoint) for c in self.user_callbacks),
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_train_batches=tr.max_steps or cap or 1.0,  # a cap per epoch
            max_steps=tr.max_total_steps or -1,  # train.max_steps: in all
            gradient_clip_val=tr.grad_clip,
        )

    def _loaders(self, job: Job) -> None:
        """The module's own DataLoaders where it defines them, else the experiment's source
        (``pl.Data``), else the dataset's arrays."""
        ds, tr, module = job.dataset, job.train, self.module
        self.own_data = is_overridden("train_dataloader", module)
        self.batch, self.steps = min(tr.batch_size, len(ds.x_train)), 0
        self.train_loader: DataLoader[Any] | None = None
        self.val_loader: DataLoader[Any] | None = None
        if ds.stream is not None and self.own_data:
            raise ArchError(
                f"{type(module).__name__} defines train_dataloader and the experiment's "
                "@pl.data returns pl.Data(train=...): one training source only; drop one"
            )
        if ds.stream is not None:  # its first batch's size stands for the batch
            self.train_loader = torch_loader(ds.stream, tr)
            self.batch, self.steps = len(ds.x_train), ds.stream.steps() or 0
        elif not self.own_data:
            full, tail = epoch_plan(len(ds.x_train), self.batch, tr.drop_last, tr.max_steps)
            self.steps = full + (1 if tail else 0)
            x, y = (st.x_train, st.y_train) if (st := ds.structure) else (ds.x_train, ds.y_train)
            self.train_loader = _arrays(x, y, self.dev, self.batch, tr)
        if self.validates and not is_overridden("val_dataloader", module):
            y_val: Tree | None = ds.y_val
            if ds.stream is not None and not ds.stream.has_y:
                y_val = None
            x_val: Tree = ds.x_val
            if ds.structure is not None:  # several inputs or outputs: as they are
                x_val, y_val = ds.structure.x_val, ds.structure.y_val
            self.val_loader = _arrays(x_val, y_val, self.dev, self.batch, None)

    def fit_all(self, epochs: int, close: EpochClose) -> None:
        """``Trainer.fit``; an exception from ``close`` (pruning) propagates out of it."""
        self.close = close
        self.trainer.fit_loop.max_epochs = epochs
        model: Any = torch.compile(self.module) if self.compiled else self.module
        try:
            with _quiet(), _sigint_kept():
                self.trainer.fit(model, self.train_loader, self.val_loader)
        except SystemExit as e:  # Lightning turns Ctrl-C into exit(1): the interrupt it was
            if isinstance(e.__context__, KeyboardInterrupt):
                raise e.__context__ from None
            raise
        except Exception as e:
            if self.compiled and type(e).__module__.startswith("torch._dynamo"):
                raise ArchError(_compile_failed(e)) from e
            raise
        finally:
            if self.compiled:  # the module as built (a failure before compiling: as it is)
                with contextlib.suppress(ValueError):
                    to_uncompiled(self.module)

    def end_epoch(self, epoch: int, fit: EpochFit, t_epoch: float, t_trained: float) -> None:
        """From the clock at the epoch's end: protolab's close, and its stop request."""
        assert self.close is not None
        if self.close(epoch, fit, t_epoch, t_trained):
            self.trainer.should_stop = True
            self.protolab_stopped = True

    def evaluate(self) -> dict[str, float]:
        """The epoch's val/ metrics and everything the module logged, under its names.

        ``val/loss``: what the module logs as its validation loss, else the mean of what
        ``validation_step`` returns, else protolab's loss of its forward's outputs (the
        same as every other mode's); ``val/acc`` (``val/rmse``) logged, or from forward.
        """
        logged = self.logged()
        out = {k: v for k, v in logged.items() if k.startswith("val/") or k not in METRICS}
        loss = next((logged[k] for k in _VAL_LOSS if k in logged), None)
        source = "logged" if loss is not None else "none"
        if loss is None and self.val_returned:
            total = sum(n for _, n in self.val_returned)
            loss, source = (
                sum(float(v) * n for v, n in self.val_returned) / total,
                "validation_step",
            )
        self.val_returned = []
        if loss is not None:
            out["val/loss"] = loss
        if self.validates and (loss is None or not {"val/acc", "val/rmse"} & set(out)):
            out = {**self._forward_scores(), **out}
            source = "forward" if source == "none" and "val/loss" in out else source
        self.val_loss_from = source
        if self.trainer.lr_scheduler_configs:
            lr = self.current_lr()
            if lr is not None:
                out["train/lr"] = lr
        return out

    def logged(self) -> dict[str, float]:
        """What the module logged (its callback metrics, and anything sent to the logger
        directly), as floats under MLflow-safe names."""
        values = {**self.logger.latest, **self.trainer.callback_metrics}
        out: dict[str, float] = {}
        for name, value in values.items():
            if torch.is_tensor(value) and value.numel() == 1:
                out[_UNSAFE.sub("_", name)] = float(value.item())
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[_UNSAFE.sub("_", name)] = float(value)
        return out

    def _forward_scores(self) -> dict[str, float]:
        """val/loss and val/acc (val/rmse) from the module's forward over the validation
        split, when it has one that gives the targets' shape; tried once, remembered."""
        ds = self.job.dataset
        if self.forward_scores is False or not self.has_forward or ds.structure is not None:
            return {}  # several heads: each is the module's to log
        try:
            out = _outputs(self.module, ds.x_val, self.dev)
        except Exception:  # a forward that takes something else: no score, no failure
            self.forward_scores = False
            return {}
        if tuple(out.shape[1:]) != tuple(ds.output_shape):
            self.forward_scores = False
            return {}
        self.forward_scores = True
        y = torch.as_tensor(ds.y_val)
        if ds.task != "classification":
            y = y.reshape(len(y), -1)
        scores = {"val/loss": float(torch_loss(self.job)(out, y))}
        if ds.task == "classification":
            return {**scores, "val/acc": float((out.argmax(-1) == y).float().mean())}
        err = out.reshape(len(out), -1) - y.float()
        return {**scores, "val/rmse": math.sqrt(float((err**2).mean()))}

    def snapshot(self) -> object:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def restore(self, snapshot: object) -> None:
        """The weights back, then Lightning's own validation of them, so the final val/
        metrics (read back from what the module logs) are these weights'."""
        assert isinstance(snapshot, dict)
        self.module.load_state_dict(snapshot)
        if self.validates:
            with _quiet():
                self.trainer.validate(self.module, self.val_loader, verbose=False)

    def current_lr(self) -> float | None:
        optimizers = self.trainer.optimizers
        return float(optimizers[0].param_groups[0]["lr"]) if optimizers else None

    def device(self) -> DeviceInfo:
        if self.dev.type == "cuda":
            return DeviceInfo("cuda", torch.cuda.get_device_name(self.dev), 0, gemm)
        return DeviceInfo(self.dev.type, cpu_name(), torch.get_num_threads(), gemm)

    def measure(self) -> dict[str, float]:
        """Memory, parameters, and the module's logged names once more: what it logged in
        its own ``on_train_epoch_end`` (after protolab's close) is in its final metrics."""
        cuda = self.dev.type == "cuda"
        return {
            "memory/peak_device_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
            "model/params": float(count_params(self.module)),
            **self.clock.wait.metrics(),
            **(self.cc.finish() if self.cc is not None else {}),  # time/compile_cold_s on a hit
            **{k: v for k, v in self.logged().items() if k not in METRICS},
        }

    def tags(self) -> dict[str, str]:
        stopped = self.trainer.should_stop and not self.protolab_stopped
        return {
            "device": str(self.dev),
            "torch_threads": str(torch.get_num_threads()),
            "threads_rule": self.probe.rule() if self.probe is not None else self.threads_rule,
            "loop": "lightning.Trainer" + ("+torch.compile" if self.compiled else ""),
            **({"compile_cache": self.cc.close()} if self.cc is not None else {}),
            "optimizer": "configure_optimizers",
            **({"output": "training_step"} if self.job.dataset.task == "classification" else {}),
            "data": "train_dataloader" if self.own_data else "arrays",
            "validation": "validation_step" if self.validates else "none",
            "val_loss": self.val_loss_from,
            **({"stopped_by": "lightning callback"} if stopped else {}),
        }

    def trained(self) -> TorchModel:
        return _Trained(self.backend, self.module, self.has_forward)


class _Clock(lp.Callback):
    """protolab's stopwatch inside ``Trainer.fit``: step times, the first step, the epoch's
    training end, the mean loss ``training_step`` returned; closes each epoch."""

    def __init__(self, prog: LightningProgram) -> None:
        self.prog = prog
        self.t_epoch = self.t_prev = self.t_trained = 0.0
        self.fit = EpochFit(loss=math.nan)
        self.loss_sum: torch.Tensor | None = None
        self.seen = self.losses = 0  # batches, and losses returned for them
        self.wait = InputWait()  # the loop's wait for each next batch

    def on_train_epoch_start(self, trainer: lp.Trainer, pl_module: lp.LightningModule) -> None:
        self.t_epoch = self.t_prev = time.perf_counter()
        self.t_trained = 0.0
        self.fit, self.loss_sum, self.seen, self.losses = EpochFit(loss=math.nan), None, 0, 0
        self.wait.new_epoch()

    def on_train_batch_start(
        self, trainer: lp.Trainer, pl_module: lp.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.wait.batch_start()

    def on_train_batch_end(
        self,
        trainer: lp.Trainer,
        pl_module: lp.LightningModule,
        outputs: object,
        batch: Any,  # Lightning's type: whatever the DataLoader yields
        batch_idx: int,
    ) -> None:
        loss = _loss_of(outputs)
        if loss is not None:
            self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
            self.losses += 1
        self.seen += 1
        self.wait.batch_end()
        sync = self.prog.dev.type == "cuda"
        if trainer.current_epoch == 0 and self.seen == 1:
            if sync:
                torch.cuda.synchronize()
            now = time.perf_counter()
            self.fit.first_step_s = now - self.t_epoch
            with contextlib.suppress(Exception):  # a batch Lightning cannot size: the config's
                self.prog.batch = extract_batch_size(batch)
            if loss is not None and not math.isfinite(float(loss)):
                raise NonFiniteLossError(f"loss is {float(loss)} at epoch 1, step 1")
        else:
            now = time.perf_counter()
            if not sync:  # per-step times on CPU; a GPU gets epoch averages (no syncs)
                self.fit.step_s.append(now - self.t_prev)
                probe = self.prog.probe
                if probe is not None and not probe.done:
                    probe.feed(now - self.t_prev)
        self.t_prev = now

    def on_validation_start(self, trainer: lp.Trainer, pl_module: lp.LightningModule) -> None:
        self._trained()

    def on_validation_batch_end(
        self,
        trainer: lp.Trainer,
        pl_module: lp.LightningModule,
        outputs: object,
        batch: Any,  # Lightning's type: whatever the DataLoader yields
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        loss = _loss_of(outputs)
        if loss is not None:
            try:
                size = extract_batch_size(batch)
            except Exception:  # a batch Lightning cannot size: equal weights
                size = 1
            self.prog.val_returned.append((loss, size))

    def on_train_epoch_end(self, trainer: lp.Trainer, pl_module: lp.LightningModule) -> None:
        self._trained()
        epoch = trainer.current_epoch + 1
        if epoch == 1:
            self.prog.steps = self.prog.steps or self.seen
            if self.prog.cc is not None:  # training and validation compiled by now
                self.prog.cc.after_compile(self.fit.first_step_s, self.fit.step_s)
        self.fit.loss, self.fit.steps = self._epoch_loss(), self.seen
        self.prog.end_epoch(epoch, self.fit, self.t_epoch, self.t_trained)

    def _trained(self) -> None:
        """The epoch's training steps are done (once per epoch, before validation)."""
        if self.t_trained:
            return
        if self.prog.dev.type == "cuda":
            torch.cuda.synchronize()
            if self.fit.first_step_s is None and self.seen:  # epochs after the first
                mean = (time.perf_counter() - self.t_epoch) / self.seen
                self.fit.step_s = [mean] * self.seen
        self.t_trained = time.perf_counter()
        self.wait.trained(self.t_trained - self.t_epoch)

    def _epoch_loss(self) -> float:
        """The mean loss training_step returned; else what it logged as its loss."""
        if self.loss_sum is not None:
            return float(self.loss_sum.item()) / self.losses
        logged = self.prog.logged()
        found = next((logged[k] for k in _TRAIN_LOSS if k in logged), None)
        if found is None:
            raise ArchError(
                f"{type(self.prog.module).__name__}.training_step returned no loss and logged "
                f"none of {', '.join(_TRAIN_LOSS)}: protolab reports the training loss "
                "(train/loss); return it, or self.log('train_loss', loss)"
            )
        return found


class _Collected(Logger):
    """A Lightning logger that keeps the latest value of every name logged to it, so
    ``self.log`` works as under any logger and protolab reads what reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.latest: dict[str, float] = {}

    @property
    def name(self) -> str:
        return "protolab"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
        """Hyperparameters are the trial's params, logged by the sweep."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.latest.update({k: v for k, v in metrics.items() if k not in ("epoch", "step")})


class _Trained(TorchModel):
    """The trained module; its predictions need its own ``forward`` and leave it in the
    training mode it was in (it may still be inside ``Trainer.fit``)."""

    def __init__(self, backend: str, module: torch.nn.Module, has_forward: bool) -> None:
        super().__init__(backend, module)
        self.has_forward = has_forward

    def predict(self, x: np.ndarray) -> np.ndarray:
        if not self.has_forward:
            raise ArchError(
                f"{type(self.module).__name__} defines no forward: protolab cannot compute "
                "its outputs (add a forward to predict with it)"
            )
        device = next(iter(self.module.parameters()), torch.empty(0)).device
        return _outputs(self.module, x, device).numpy()


def _compile_failed(e: Exception) -> str:
    """Why ``torch.compile(module)`` could not train, and what still can."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    known = (
        " (a known issue of a compiled LightningModule that calls self.log in a *_step on "
        "PyTorch 2.12/2.13: Lightning-AI/pytorch-lightning#21836, fixed by its #21837; "
        f"lightning {lp.__version__} here)"
        if "has no attribute '__dict__'" in text
        else ""
    )
    return (
        f"torch.compile(module) failed inside Trainer.fit: {type(e).__name__}: {text}{known}; "
        "the lightning mode trains the same module uncompiled"
    )


def _steps_known(job: Job) -> int | None:
    """The trial's training steps where the data says them (None: a stream without
    ``steps_per_epoch``, whose length shows only as it is read)."""
    stream = job.dataset.stream
    if stream is not None:
        per_epoch = stream.steps_per_epoch
    else:
        per_epoch = -(-len(job.dataset.x_train) // max(job.train.batch_size, 1))
    return None if per_epoch is None else per_epoch * job.train.epochs - 1


def check_own_job(job: Job) -> None:
    """Refuse train settings that would not reach the module (they would be ignored),
    and what this program cannot run yet."""
    if job.hardware.devices != 1:
        raise ArchError(
            f"hardware.devices={job.hardware.devices}: a LightningModule trains on one device "
            "for now (protolab launches DDP ranks only for its own loop); use devices: 1"
        )
    tr: TrainSettings = job.train
    stream = job.dataset.stream
    if stream is not None and tr.max_steps and stream.steps_per_epoch:
        raise ArchError(
            "train.max_steps and pl.Data(steps_per_epoch=...) both cap an epoch; keep one"
        )
    for name, unset in _MODULE_DECIDES.items():
        value = getattr(tr, name, unset)
        if value == unset:
            continue
        if name in ("custom_loss", "custom_optimizer"):
            what = "loss" if name == "custom_loss" else "optimizer"
            raise ArchError(
                f"a custom {what} from the script does not reach a LightningModule: its "
                "training_step computes its loss and its configure_optimizers makes its "
                f"optimizer; remove the custom {what}"
            )
        raise ArchError(
            f"train.{name}={value!r} does not reach a LightningModule: its "
            "configure_optimizers makes the optimizer, learning rate and schedule, and its "
            f"training_step the loss; leave train.{name} out of the config (to search it, "
            "take it from the space in the experiment and pass it to the module)"
        )


def _callbacks(node: Native) -> list[lp.Callback]:
    """The experiment's Lightning callbacks: new ones for this trial, or refused."""
    factory = node.torch_callbacks
    if factory is None:
        return []
    made = factory()
    items = list(made) if isinstance(made, list | tuple) else None
    if items is None or not all(isinstance(c, lp.Callback) for c in items):
        raise ArchError(
            "pl.native: torch_callbacks= must return a list of lightning.Callback, but "
            f"returned {made!r:.120}"
        )
    for cb in items:
        if _HANDED_OUT.get(id(cb)) is cb:
            raise ArchError(
                f"pl.native: torch_callbacks= returned the same {type(cb).__name__} object as "
                "for an earlier trial; callbacks keep state (a best score, a patience count), "
                f"so construct them inside the function (lambda: [{type(cb).__name__}(...)])"
            )
        _HANDED_OUT[id(cb)] = cb
    return items


def _arrays(
    x: Tree,
    y: Tree | None,
    dev: torch.device,
    batch: int,
    train: TrainSettings | None,
) -> DataLoader[Any]:
    """A DataLoader of ``(x, y)`` batches of the arrays (``x`` alone without ``y``; each a
    dict or tuple for several inputs or outputs), held on ``dev``: one gather per batch (no
    per-sample collate). ``train`` given: shuffled with its seed, ``drop_last`` as
    configured; else in order, every sample."""

    def on_dev(a: np.ndarray) -> Any:
        return torch.as_tensor(a, device=dev)

    data = _Rows(map_tree(on_dev, x), None if y is None else map_tree(on_dev, y))
    if train is None:
        order: Any = SequentialSampler(data)
        drop_last = False
    else:
        generator = torch.Generator().manual_seed(train.seed)
        order, drop_last = RandomSampler(data, generator=generator), train.drop_last
    return DataLoader(data, sampler=BatchSampler(order, batch, drop_last), batch_size=None)


class _Rows(torch.utils.data.Dataset[Any]):
    """Rows of ``x`` and ``y`` (tensors, or dicts/tuples of them), a batch per index list;
    ``x`` alone without ``y`` (the module's loss reads the inputs)."""

    def __init__(self, x: Any, y: Any) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return rows(self.x)

    def __getitem__(self, index: Any) -> Any:
        def take(t: Any) -> Any:
            return t[index]

        xb = map_tree(take, self.x)
        return xb if self.y is None else (xb, map_tree(take, self.y))


def _loss_of(outputs: object) -> torch.Tensor | None:
    """The loss a ``*_step`` returned: a tensor, or a dict's ``loss`` entry."""
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    if torch.is_tensor(outputs) and outputs.numel() == 1:
        return outputs.detach().float()
    return None


def _outputs(module: torch.nn.Module, x: np.ndarray, dev: torch.device) -> torch.Tensor:
    """``forward`` over ``x`` in evaluation mode, every submodule's mode restored after."""
    modes = {m: m.training for m in module.modules()}
    forward = type(module).forward  # the class's: not a torch.compile wrapper of it
    parts = []
    try:
        module.eval()
        with torch.no_grad():
            for i in range(0, len(x), _EVAL_BATCH):
                xb = torch.as_tensor(x[i : i + _EVAL_BATCH], device=dev)
                parts.append(forward(module, xb).float().cpu())
    finally:
        for m, mode in modes.items():
            m.train(mode)
    return torch.cat(parts)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's start-up notes and its advice about the DataLoaders protolab made (no
    workers, fewer batches than the logging interval) stay out of the sweep's output."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for text in ("does not have many workers", "logging interval", "LeafSpec"):
                warnings.filterwarnings("ignore", message=f".*{text}")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _sigint_kept() -> Iterator[None]:
    """Lightning ignores SIGINT once it saw one (its graceful shutdown): put back the
    sweep's handler, so a second Ctrl-C still works."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread() and handler is not None:
            signal.signal(signal.SIGINT, handler)
