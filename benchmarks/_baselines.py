"""Step-time contenders: protolab's two backends and the hand-written loops they are judged by.

Every contender trains the same :class:`~_models.ModelCase` (same Arch, data, batch size,
optimizer: AdamW lr 1e-3 eps 1e-7, no weight decay, as the backends use) and yields, per
round, a list of step-time samples in milliseconds:

- eager loops (raw PyTorch, DataLoader, ``torch.compile``, Lightning ``Trainer``): the time
  between consecutive optimizer-step ends inside an epoch (the first step of each epoch is
  dropped: its interval holds the epoch's set-up), the way protolab's dynamic backend times
  its own steps;
- compiled loops that hide single steps (Keras ``fit``): each epoch's wall time divided by
  its steps, the way protolab's static backend reports ``time/step_ms``;
- protolab's backends: their own reported ``time/step_ms`` / ``time/step_ms_p90`` from one
  ``Backend.run`` per round (a whole trial, so the static backend compiles every round).

``run_case`` interleaves them. In round ``r`` the compiled contenders (protolab's static
backend, Keras ``fit``) run once for the round's epochs, and the eager ones alternate epoch by
epoch (one epoch each, order rotated every epoch), so slow drifts of the machine (thermal,
other processes) hit all of them alike. A round's number is the median over its pieces.
"""

from __future__ import annotations

import abc
import gc
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from _common import median, p90
from _models import ModelCase

__all__ = ["CONTENDERS", "CaseResult", "ContenderResult", "run_case"]

LR = 1e-3
EPS = 1e-7


@dataclass
class RoundResult:
    median_ms: float
    p90_ms: float
    samples: int
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class ContenderResult:
    name: str
    rounds: list[RoundResult] = field(default_factory=list)
    setup_s: float = float("nan")  # build + warm-up (compile for compiled contenders)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.rounds)

    @property
    def median_ms(self) -> float:
        return median([r.median_ms for r in self.rounds])

    @property
    def p90_ms(self) -> float:
        return median([r.p90_ms for r in self.rounds])

    @property
    def samples(self) -> int:
        return sum(r.samples for r in self.rounds)

    def extra_median(self, key: str) -> float:
        return median([r.extra[key] for r in self.rounds if key in r.extra])


@dataclass
class CaseResult:
    case: ModelCase
    params: int
    flops_per_sample: int
    steps_per_epoch: int
    contenders: dict[str, ContenderResult]


def _stats(samples_ms: list[float], **extra: float) -> RoundResult:
    return RoundResult(median(samples_ms), p90(samples_ms), len(samples_ms), dict(extra))


class Contender(abc.ABC):
    name: str
    # Fine contenders alternate epoch by epoch inside a round; coarse ones (a whole compiled
    # trial or fit() per call) run once per round for all its epochs.
    fine: bool = True

    def __init__(self, case: ModelCase, ds: Any) -> None:
        self.case, self.ds = case, ds
        self.steps = len(ds.x_train) // case.batch

    def setup(self) -> None:  # noqa: B027 - optional: build and warm up once
        """Build and warm up (compile) once, before the first round."""

    @abc.abstractmethod
    def round(self, epochs: int) -> RoundResult:
        """Train ``epochs`` epochs; return this round's step-time statistics."""


# --- protolab backends ---------------------------------------------------------------------


class ProtolabBackend(Contender):
    backend = ""

    def _job(self, epochs: int) -> Any:
        from protolab.backends import Hardware, Job, TrainSettings

        train = TrainSettings(
            epochs=epochs, batch_size=self.case.batch, optimizer="adam", lr=LR, seed=0
        )
        return Job(self.case.arch, self.ds, train, Hardware(accelerator="cpu"))

    def round(self, epochs: int) -> RoundResult:
        from protolab.backends import get_backend

        backend = get_backend(self.backend)
        try:
            result = backend.run(self._job(epochs))
        finally:
            backend.release()
        m = result.metrics
        n = (epochs * self.steps - 1) if self.fine else max(epochs - 1, 1)
        return RoundResult(
            m["time/step_ms"],
            m["time/step_ms_p90"],
            n,
            {
                "compile_s": m["time/compile_s"],
                "first_step_s": m["time/first_step_s"],
                "trial_s": m["time/trial_s"],
                "params": m["model/params"],
            },
        )


class ProtolabLightning(ProtolabBackend):
    name = "protolab:lightning"
    backend = "lightning"


class ProtolabKeras(ProtolabBackend):
    name = "protolab:keras"
    backend = "keras"
    fine = False  # every run compiles: one run per round


class ProtolabTFGraph(ProtolabBackend):
    name = "protolab:tf-graph"
    backend = "tf-graph"
    fine = False


class ProtolabJax(ProtolabBackend):
    """Keras on JAX, in protolab's worker process (Keras' backend is fixed per process)."""

    name = "protolab:jax"
    backend = "jax"
    fine = False


class ProtolabTorchCompile(ProtolabBackend):
    name = "protolab:torch-compile"
    backend = "torch-compile"
    fine = False  # every run compiles (inductor): one run per round


class ProtolabAutoStatic(ProtolabBackend):
    """What ``backends: [static]`` runs: the calibration's pick for this model."""

    name = "protolab:static"
    fine = False

    def setup(self) -> None:
        from protolab.backends._calibrate import calibrate

        self.choice = calibrate("static", self._job(1))
        self.backend = self.choice.name
        print(f"  protolab:static picked {self.choice.name} ({self.choice.summary})")


# --- raw PyTorch ---------------------------------------------------------------------------


class _TorchLoop(Contender):
    """A plain PyTorch training loop; subclasses choose how batches arrive and the forward."""

    warmup_steps = 5

    def _build(self) -> None:
        import torch

        from protolab.backends.torch.nn import build_torch

        torch.manual_seed(0)
        self.model = build_torch(self.case.arch, self.ds.input_shape, self.ds.input_dtype)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, eps=EPS, weight_decay=0.0)
        self.x = torch.as_tensor(self.ds.x_train)
        self.y = torch.as_tensor(self.ds.y_train)
        self.forward: Callable[[Any], Any] = self.model

    def _prebatched(self) -> list[tuple[Any, Any]]:
        import torch

        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(len(self.x), generator=g)
        b = self.case.batch
        return [
            (self.x[perm[i * b : (i + 1) * b]].contiguous(), self.y[perm[i * b : (i + 1) * b]])
            for i in range(self.steps)
        ]

    def _batches(self) -> Iterator[tuple[Any, Any]]:
        raise NotImplementedError

    def _step(self, xb: Any, yb: Any) -> Any:
        import torch.nn.functional as F

        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.forward(xb), yb)
        loss.backward()
        self.opt.step()
        return loss

    def _epoch(self) -> list[float]:
        times: list[float] = []
        t_prev = time.perf_counter()
        for i, (xb, yb) in enumerate(self._batches()):
            self._step(xb, yb)
            t = time.perf_counter()
            if i:  # the first interval holds the epoch's set-up (shuffle, iterator)
                times.append(t - t_prev)
            t_prev = t
        return times

    def setup(self) -> None:
        self._build()
        for i, (xb, yb) in enumerate(self._batches()):
            if i >= self.warmup_steps:
                break
            loss = self._step(xb, yb)
        if not math.isfinite(float(loss)):
            raise RuntimeError(f"{self.name}: loss is {float(loss)} after warm-up")

    def round(self, epochs: int) -> RoundResult:
        samples: list[float] = []
        for _ in range(epochs):
            samples += self._epoch()
        return _stats([s * 1000 for s in samples])


class TorchPrebatched(_TorchLoop):
    name = "torch:prebatched"

    def _build(self) -> None:
        super()._build()
        self.batches = self._prebatched()
        self.rng = random.Random(0)

    def _batches(self) -> Iterator[tuple[Any, Any]]:
        order = list(range(len(self.batches)))
        self.rng.shuffle(order)
        return (self.batches[i] for i in order)


class TorchDataLoader(_TorchLoop):
    name = "torch:dataloader"

    def _build(self) -> None:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        super()._build()
        self.loader = DataLoader(
            TensorDataset(self.x, self.y),
            batch_size=self.case.batch,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(0),
        )

    def _batches(self) -> Iterator[tuple[Any, Any]]:
        return iter(self.loader)


class TorchCompile(TorchPrebatched):
    """The pre-batched loop with ``torch.compile(model)`` (default mode, inductor)."""

    name = "torch:compile"
    warmup_steps = 3  # the first call compiles forward and backward

    def _build(self) -> None:
        import torch

        super()._build()
        self.forward = torch.compile(self.model)


# --- Lightning Trainer ---------------------------------------------------------------------


class _Batches:
    """A sized iterable of pre-made batches, reshuffled per epoch (what Trainer accepts)."""

    def __init__(self, batches: list[tuple[Any, Any]]) -> None:
        self.batches = batches
        self.rng = random.Random(0)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        order = list(range(len(self.batches)))
        self.rng.shuffle(order)
        return (self.batches[i] for i in order)


class LightningTrainer(TorchPrebatched):
    """``lightning.Trainer`` with minimal flags on the same pre-batched tensors.

    Flags: cpu, 1 device, no logger, no checkpointing, no progress bar, no model summary, no
    sanity validation. Step times come from ``on_train_batch_end`` timestamps.
    """

    name = "lightning:Trainer"

    def setup(self) -> None:
        import logging

        import lightning as Lt
        import torch
        import torch.nn.functional as F

        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._build()
        net = self.model

        class Module(Lt.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def training_step(self, batch: Any, batch_idx: int) -> Any:
                xb, yb = batch
                return F.cross_entropy(self.net(xb), yb)

            def configure_optimizers(self) -> Any:
                return torch.optim.AdamW(self.parameters(), lr=LR, eps=EPS, weight_decay=0.0)

        class StepTimes(Lt.Callback):
            def __init__(self) -> None:
                self.times: list[float] = []
                self.prev: float | None = None

            def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
                self.prev = None

            def on_train_batch_end(self, *args: Any) -> None:
                t = time.perf_counter()
                if self.prev is not None:
                    self.times.append(t - self.prev)
                self.prev = t

        self.module = Module()
        self.data = _Batches(self.batches)
        self.Lt, self.StepTimes = Lt, StepTimes
        self._fit(1)  # warm-up: first-use costs of Trainer and the model

    def _fit(self, epochs: int) -> list[float]:
        cb = self.StepTimes()
        trainer = self.Lt.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[cb],
        )
        trainer.fit(self.module, train_dataloaders=self.data)
        return list(cb.times)

    def round(self, epochs: int) -> RoundResult:
        return _stats([s * 1000 for s in self._fit(epochs)])


# --- Keras fit -----------------------------------------------------------------------------


class KerasFit(Contender):
    """``model.compile(jit_compile=True)`` + ``model.fit``: what a Keras user writes.

    The data is cut to whole batches (as both backends drop the ragged last batch), so XLA
    compiles one step program; step time = epoch wall time / steps.
    """

    name = "keras:fit-xla"
    fine = False
    jit: bool | str = True

    def setup(self) -> None:
        import keras

        from protolab.backends.tensorflow.nn import build as build_keras

        keras.utils.set_random_seed(0)
        self.model = build_keras(self.case.arch, self.ds.input_shape, self.ds.input_dtype)
        self.model.compile(
            optimizer=keras.optimizers.AdamW(learning_rate=LR, epsilon=EPS, weight_decay=0.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=self.jit,
        )
        m = self.steps * self.case.batch
        self.x, self.y = self.ds.x_train[:m], self.ds.y_train[:m]
        times = self._fit(1)  # the first epoch traces and compiles the step program
        self.first_epoch_s = times[0]

    def _fit(self, epochs: int) -> list[float]:
        import keras

        times: list[float] = []

        class EpochTimes(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                times.append(time.perf_counter() - self.t0)

        self.model.fit(
            self.x,
            self.y,
            batch_size=self.case.batch,
            epochs=epochs,
            shuffle=True,
            verbose=0,
            callbacks=[EpochTimes()],
        )
        return times

    def round(self, epochs: int) -> RoundResult:
        return _stats([t / self.steps * 1000 for t in self._fit(epochs)])


class KerasFitDefault(KerasFit):
    """``model.fit`` with Keras' default ``jit_compile="auto"`` (XLA off on CPU): what a
    Keras user gets without asking for anything."""

    name = "keras:fit"
    jit = "auto"


CONTENDERS: tuple[type[Contender], ...] = (
    ProtolabLightning,
    ProtolabTorchCompile,
    ProtolabKeras,
    ProtolabTFGraph,
    ProtolabJax,
    ProtolabAutoStatic,
    KerasFitDefault,
    TorchPrebatched,
    TorchDataLoader,
    KerasFit,
    TorchCompile,
    LightningTrainer,
)


def _rotate(items: list[Contender], k: int) -> list[Contender]:
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]


def _merge(parts: list[RoundResult]) -> RoundResult:
    """One round from its epoch-long pieces: medians of their medians, p90s and extras."""
    if len(parts) == 1:
        return parts[0]
    keys = set.intersection(*(set(p.extra) for p in parts))
    return RoundResult(
        median([p.median_ms for p in parts]),
        median([p.p90_ms for p in parts]),
        sum(p.samples for p in parts),
        {k: median([p.extra[k] for p in parts]) for k in keys},
    )


def run_case(
    case: ModelCase,
    rounds: int,
    epochs: int,
    *,
    skip: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
) -> CaseResult:
    """Set every contender up, then run ``rounds`` interleaved rounds of ``epochs`` epochs."""
    from _models import load_case_data

    ds = load_case_data(case)
    info = case.arch.infer(ds.input_shape, ds.input_dtype)
    skip = skip or {}
    contenders: list[Contender] = []
    results: dict[str, ContenderResult] = {}
    for cls in CONTENDERS:
        res = results[cls.name] = ContenderResult(cls.name)
        if cls.name in skip:
            res.error = skip[cls.name]
            continue
        c = cls(case, ds)
        t0 = time.perf_counter()
        try:
            c.setup()
        except Exception as e:  # a contender that cannot run here is reported as n/a
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            res.error = f"{type(e).__name__}: {first}"
            log(f"  {cls.name}: n/a ({res.error})")
            continue
        res.setup_s = time.perf_counter() - t0
        contenders.append(c)
    coarse = [c for c in contenders if not c.fine]
    fine = [c for c in contenders if c.fine]

    def run(c: Contender, n_epochs: int) -> RoundResult | None:
        res = results[c.name]
        if res.error:
            return None
        gc.collect()
        try:
            return c.round(n_epochs)
        except Exception as e:
            res.error = f"{type(e).__name__}: {str(e).strip()[:160]}"
            log(f"  {c.name}: failed ({res.error})")
            return None

    for r in range(rounds):
        got: dict[str, list[RoundResult]] = {c.name: [] for c in contenders}

        def run_coarse(r: int = r, got: dict[str, list[RoundResult]] = got) -> None:
            for c in _rotate(coarse, r):
                if (out := run(c, epochs)) is not None:
                    got[c.name].append(out)

        if r % 2 == 0:
            run_coarse()
        for e in range(epochs):  # eager loops alternate epoch by epoch: finer interleaving
            for c in _rotate(fine, r + e):
                if (out := run(c, 1)) is not None:
                    got[c.name].append(out)
        if r % 2 == 1:
            run_coarse()
        for name, parts in got.items():
            if parts and not results[name].error:
                results[name].rounds.append(_merge(parts))
        line = ", ".join(
            f"{c.name} {results[c.name].rounds[-1].median_ms:.3g}"
            for c in contenders
            if results[c.name].rounds and not results[c.name].error
        )
        log(f"  round {r + 1}/{rounds} (ms/step): {line}")
    if not results["torch:prebatched"].ok:
        raise RuntimeError(f"{case.key}: the raw PyTorch baseline failed")
    return CaseResult(
        case,
        int(info.params),
        int(info.flops_per_sample),
        len(ds.x_train) // case.batch,
        results,
    )
