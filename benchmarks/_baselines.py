"""Step-time contenders, each in a process of its own: protolab's modes as protolab runs
them, against every framework's own ways as a user writes them.

- protolab: one ``protolab run`` per round (its CLI entry, in a fresh process: whatever the
  CLI and the modes set, threads, wait policy, compile cache, applies) of a project whose
  experiment returns the case's Arch on the case's arrays (an ``.npz``), every mode
  listed; each mode's ``time/step_ms`` is read back from its MLflow child run. The family
  aliases run in a ``protolab run`` of their own (``PROTOLAB_ALIASES``, a contender rotated
  with the others, as a user lists ``backends: [static, dynamic]``). Listed first in the
  modes' run, an alias always ran its pick in that process's first place, before the
  named run of the same mode (listed after it, ``resolve`` drops an alias whose pick is
  listed already, so that order could not be alternated). protolab trains
  one epoch more than the round's (``WARMUP_EPOCHS``): the own ways warm up before they
  are timed (Keras ``fit`` a whole epoch, the torch loops 5 steps), and a whole-epoch
  mode's first epoch holds the same one-off work (first runs of its kernels: oneDNN's JIT
  code generation, XLA's thunk set-up, allocations), which its ``time/step_ms`` leaves out
  only from the second epoch on.
- the frameworks' own ways (``REFERENCES``): a plain PyTorch loop (pre-batched, and over a
  ``DataLoader``), the same loop under ``torch.compile``, a Lightning ``Trainer``, Keras
  ``fit`` with its defaults and with ``jit_compile=True``, and Keras-on-JAX ``fit``. Each
  runs ``_baselines.py --one NAME ROUND`` in the user's default environment
  (``_common.user_env``: no protolab variables, no ``OMP_WAIT_POLICY``, the frameworks'
  default threads), builds the net with the same Arch builder (Keras' own dropout), warms
  up (compiles), then trains the round's epochs.

Step time, eager loops: the interval between consecutive optimizer-step ends inside an
epoch (the first of each epoch dropped: it holds the epoch's set-up), the way protolab's
eager mode times its own steps; Keras ``fit``: epoch wall time / steps, the way the
whole-epoch modes report ``time/step_ms``.

Rounds alternate the processes (``dataloader_fit.interleave``, the order rotated every
round), so slow drifts of the machine hit every contender alike.
"""

from __future__ import annotations

import abc
import argparse
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, median, p90, write_project
from _models import CASES, ModelCase, load_case_data
from dataloader_fit import interleave, plain_trainer

__all__ = [
    "ALIASES",
    "FAMILIES",
    "MODES",
    "REFERENCES",
    "CaseResult",
    "ContenderResult",
    "run_case",
]

LR = 1e-3
EPS = 1e-7
MODES = ("lightning", "torch-compile", "keras", "tf-graph", "jax")
COMPILED = ("torch-compile", "torch:compile")  # inductor: ~15-60 s a model, skippable
# family -> (protolab's modes, the framework's own ways they are judged against)
FAMILIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "torch": (
        ("protolab:lightning", "protolab:torch-compile"),
        ("torch:prebatched", "torch:dataloader", "torch:compile", "lightning:Trainer"),
    ),
    "tensorflow": (("protolab:keras", "protolab:tf-graph"), ("keras:fit", "keras:fit-xla")),
    "jax": (("protolab:jax",), ("keras-jax:fit",)),
}
ALIASES = {"protolab:static": "static", "protolab:dynamic": "dynamic"}
PROTOLAB = "protolab"  # the --one contender that runs every named mode (a protolab run)
PROTOLAB_ALIASES = "protolab-aliases"  # the one that runs the aliases (another protolab run)
CONFIGS = {PROTOLAB: "cfg.yaml", PROTOLAB_ALIASES: "cfg-aliases.yaml"}
WARMUP_EPOCHS = 1  # protolab's untimed epochs, as Keras fit's reference warms up one


@dataclass
class RoundResult:
    median_ms: float
    p90_ms: float
    samples: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ContenderResult:
    name: str
    rounds: list[RoundResult] = field(default_factory=list)
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
        return median([float(r.extra[key]) for r in self.rounds if key in r.extra])

    def extra_last(self, key: str) -> Any:
        return next((r.extra[key] for r in reversed(self.rounds) if key in r.extra), None)


@dataclass
class CaseResult:
    case: ModelCase
    params: int
    flops_per_sample: int
    steps_per_epoch: int
    contenders: dict[str, ContenderResult]


def _stats(samples_ms: list[float], **extra: Any) -> dict[str, Any]:
    return {"median_ms": median(samples_ms), "p90_ms": p90(samples_ms),
            "samples": len(samples_ms), **extra}  # fmt: skip


# --- the frameworks' own ways (run inside a --one process) ----------------------------------


class Reference(abc.ABC):
    """One user-written training loop: ``setup`` builds and warms up, ``train`` measures."""

    name: str

    def __init__(self, case: ModelCase, ds: Any) -> None:
        self.case, self.ds = case, ds
        self.steps = len(ds.x_train) // case.batch

    @abc.abstractmethod
    def setup(self) -> None:
        """Build the model and optimizer, and warm up (compile) once."""

    @abc.abstractmethod
    def train(self, epochs: int) -> list[float]:
        """Train ``epochs`` epochs; step times in milliseconds."""

    def threads(self) -> dict[str, Any]:
        """The thread counts this process ran with (the framework's defaults)."""
        return {}


class _TorchLoop(Reference):
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

        perm = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(0))
        b = self.case.batch
        return [
            (self.x[perm[i * b : (i + 1) * b]].contiguous(), self.y[perm[i * b : (i + 1) * b]])
            for i in range(self.steps)
        ]

    @abc.abstractmethod
    def _batches(self) -> Iterator[tuple[Any, Any]]:
        """One epoch's batches."""

    def _step(self, xb: Any, yb: Any) -> Any:
        import torch.nn.functional as F

        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.forward(xb), yb)
        loss.backward()
        self.opt.step()
        return loss

    def setup(self) -> None:
        self._build()
        loss = None
        for i, (xb, yb) in enumerate(self._batches()):
            if i >= self.warmup_steps:
                break
            loss = self._step(xb, yb)
        if loss is None or not math.isfinite(float(loss)):
            raise RuntimeError(f"{self.name}: loss is {loss} after warm-up")

    def train(self, epochs: int) -> list[float]:
        times: list[float] = []
        for _ in range(epochs):
            t_prev = time.perf_counter()
            for i, (xb, yb) in enumerate(self._batches()):
                self._step(xb, yb)
                t = time.perf_counter()
                if i:  # the first interval holds the epoch's set-up (shuffle, iterator)
                    times.append((t - t_prev) * 1000)
                t_prev = t
        return times

    def threads(self) -> dict[str, Any]:
        import torch

        return {"torch_threads": torch.get_num_threads()}


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
        gen = torch.Generator().manual_seed(0)
        self.loader = DataLoader(
            TensorDataset(self.x, self.y), self.case.batch, shuffle=True, drop_last=True,
            generator=gen,
        )  # fmt: skip

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
    """The plain ``Trainer`` of the native-fit benchmarks (``dataloader_fit.plain_trainer``)
    on the same pre-batched tensors; step times from ``on_train_batch_end`` timestamps."""

    name = "lightning:Trainer"

    def setup(self) -> None:
        import logging

        import lightning.pytorch as L
        import torch
        import torch.nn.functional as F

        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._build()
        net = self.model

        class Module(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def training_step(self, batch: Any, batch_idx: int) -> Any:
                xb, yb = batch
                return F.cross_entropy(self.net(xb), yb)

            def configure_optimizers(self) -> Any:
                return torch.optim.AdamW(self.parameters(), lr=LR, eps=EPS, weight_decay=0.0)

        self.module, self.data = Module(), _Batches(self.batches)
        self.train(1)  # warm-up: first-use costs of Trainer and the model

    def train(self, epochs: int) -> list[float]:
        import lightning.pytorch as L

        times: list[float] = []

        class StepTimes(L.Callback):
            prev: float | None = None

            def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
                self.prev = None

            def on_train_batch_end(self, *args: Any) -> None:
                t = time.perf_counter()
                if self.prev is not None:
                    times.append((t - self.prev) * 1000)
                self.prev = t

        trainer = plain_trainer(epochs, [])
        trainer.callbacks.append(StepTimes())
        trainer.fit(self.module, train_dataloaders=self.data)
        return times


class KerasFit(Reference):
    """``model.compile(jit_compile=True)`` + ``model.fit``: what a Keras user writes.

    The data is cut to whole batches (as the modes drop the ragged last batch), so XLA
    compiles one step program; step time = epoch wall time / steps. The net is the shared
    Keras builder's with Keras' own ``Dropout`` (what a user's model has).
    """

    name = "keras:fit-xla"
    jit: bool | str = True

    def setup(self) -> None:
        import keras

        from protolab.backends.jax.nn import build  # the plain Keras builder, any backend

        keras.utils.set_random_seed(0)
        self.model = build(self.case.arch, self.ds.input_shape, self.ds.input_dtype)
        self.model.compile(
            optimizer=keras.optimizers.AdamW(learning_rate=LR, epsilon=EPS, weight_decay=0.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=self.jit,
        )
        m = self.steps * self.case.batch
        self.x, self.y = self.ds.x_train[:m], self.ds.y_train[:m]
        self.train(1)  # the first epoch traces and compiles the step program

    def train(self, epochs: int) -> list[float]:
        import keras

        times: list[float] = []
        steps = self.steps

        class EpochTimes(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                times.append((time.perf_counter() - self.t0) / steps * 1000)

        self.model.fit(
            self.x, self.y, batch_size=self.case.batch, epochs=epochs, shuffle=True, verbose=0,
            callbacks=[EpochTimes()],
        )  # fmt: skip
        return times

    def threads(self) -> dict[str, Any]:
        import keras

        if keras.backend.backend() != "tensorflow":
            return {}
        import tensorflow as tf

        return {"tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}


class KerasFitDefault(KerasFit):
    """``model.fit`` with Keras' default ``jit_compile="auto"`` (on TensorFlow: XLA off on
    CPU): what a Keras user gets without asking for anything."""

    name = "keras:fit"
    jit = "auto"


class KerasJaxFit(KerasFitDefault):
    """Keras on JAX (``KERAS_BACKEND=jax``, as a user picks it) with its default
    ``jit_compile="auto"``: on JAX, every step jitted."""

    name = "keras-jax:fit"

    def setup(self) -> None:
        os.environ["KERAS_BACKEND"] = "jax"  # before Keras loads, as the user sets it
        super().setup()


REFERENCES: dict[str, type[Reference]] = {
    c.name: c
    for c in (TorchPrebatched, TorchDataLoader, TorchCompile, LightningTrainer, KerasFitDefault,
              KerasFit, KerasJaxFit)
}  # fmt: skip


def one_reference(name: str, case: ModelCase, epochs: int) -> dict[str, Any]:
    """Set ``name`` up and train ``epochs`` epochs in this process; its statistics."""
    ref = REFERENCES[name](case, load_case_data(case))
    t0 = time.perf_counter()
    ref.setup()
    setup_s = time.perf_counter() - t0
    return _stats(ref.train(epochs), setup_s=setup_s, **ref.threads())


# --- protolab's modes: one `protolab run` per round ------------------------------------------

EXPERIMENT = """\
import sys

sys.path.insert(0, {bench!r})

import protolab as pl
from _models import CASES

ARCH = {{c.key: c.arch for c in CASES}}[{key!r}]


@pl.experiment(data="data.npz", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    return ARCH
"""


def protolab_project(where: Path, case: ModelCase, epochs: int, modes: list[str]) -> Path:
    """A project training ``case`` once, ``epochs`` plus the warm-up epoch: the named
    ``modes`` in ``cfg.yaml`` (its path, returned), the aliases among them in
    ``cfg-aliases.yaml`` beside it."""
    import numpy as np
    import yaml

    where.mkdir(parents=True, exist_ok=True)
    ds = load_case_data(case)
    np.savez(
        where / "data.npz", x_train=ds.x_train, y_train=ds.y_train, x_val=ds.x_val, y_val=ds.y_val
    )
    exp = where / "exp.py"
    exp.write_text(EXPERIMENT.format(bench=str(BENCH_DIR), key=case.key))
    cfg = write_project(
        where, experiment=exp, backends=modes,
        study={"name": f"steps-{case.key}", "n_trials": 1, "pruner": "none"},
        train={"epochs": epochs + WARMUP_EPOCHS, "batch_size": case.batch, "lr": LR,
               "optimizer": "adam"},
    )  # fmt: skip
    config = yaml.safe_load(cfg.read_text())
    config["backends"] = [m for m in modes if m in ALIASES.values()]
    (where / CONFIGS[PROTOLAB_ALIASES]).write_text(yaml.safe_dump(config, sort_keys=False))
    config["backends"] = [m for m in modes if m not in ALIASES.values()]
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return cfg


def one_protolab(cfg: Path) -> dict[str, Any]:
    """``protolab run`` in a fresh process (this one's environment: the user's); every
    child run it made, by contender name, with its step times and compile."""
    t0 = time.time() * 1000
    proc = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "run", str(cfg)],
        cwd=cfg.parent, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"protolab run exited {proc.returncode}: {proc.stderr[-600:]}")
    con = sqlite3.connect(cfg.parent / "mlruns" / "mlflow.db")
    try:
        runs = con.execute("select run_uuid from runs where start_time >= ?", (t0,)).fetchall()
        out: dict[str, Any] = {}
        for (run,) in runs:
            tags = dict(con.execute("select key, value from tags where run_uuid=?", (run,)))
            m = dict(con.execute("select key, value from latest_metrics where run_uuid=?", (run,)))
            if "protolab.backend" not in tags or "time/step_ms" not in m:
                continue
            auto = tags.get("protolab.auto", "")  # "static->keras": the alias's own run
            name = f"protolab:{auto.split('->')[0] if auto else tags['protolab.backend']}"
            out[name] = {
                "median_ms": m["time/step_ms"], "p90_ms": m.get("time/step_ms_p90", math.nan),
                "samples": 0, "compile_s": m.get("time/compile_s", math.nan),
                "mode": tags["protolab.backend"], "auto": auto,
                "threads": tags.get("protolab.torch_threads", ""),
            }  # fmt: skip
    finally:
        con.close()
    return out


# --- the rounds ----------------------------------------------------------------------------


def _one(name: str, model: str, epochs: int, project: str) -> dict[str, Any]:
    """The --one entry: a contender's round in this process; errors as data, not a crash."""
    case = next(c for c in CASES if c.key == model)
    try:
        if name in CONFIGS:
            return one_protolab(Path(project) / CONFIGS[name])
        return one_reference(name, case, epochs)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[-1][:300]
        return {"error": f"{type(e).__name__}: {first}", "trace": traceback.format_exc()[-2000:]}


def _record(results: dict[str, ContenderResult], name: str, got: dict[str, Any], n: int) -> None:
    res = results.setdefault(name, ContenderResult(name))
    if "error" in got:
        res.error = res.error or got["error"]
        return
    samples = int(got.pop("samples", 0)) or n
    res.rounds.append(RoundResult(got.pop("median_ms"), got.pop("p90_ms"), samples, got))


def run_case(
    case: ModelCase,
    rounds: int,
    epochs: int,
    *,
    skip: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
) -> CaseResult:
    """``rounds`` rounds, each: every contender's process once, the order rotated."""
    skip = skip or {}
    compiled = not any(n in skip for n in COMPILED)
    modes = ["static", *(["dynamic"] if compiled else [])]
    modes += [m for m in MODES if f"protolab:{m}" not in skip]
    refs = [n for n in REFERENCES if n not in skip]
    ds = load_case_data(case)
    steps = len(ds.x_train) // case.batch
    results: dict[str, ContenderResult] = {
        n: ContenderResult(n, error=why) for n, why in skip.items()
    }
    with tempfile.TemporaryDirectory(prefix=f"protolab-steps-{case.key}-") as tmp:
        protolab_project(Path(tmp), case, epochs, modes)
        contenders = (PROTOLAB, PROTOLAB_ALIASES, *refs)
        for r in range(rounds):
            k = r % len(contenders)
            order = contenders[k:] + contenders[:k]
            args = ("--model", case.key, "--project", tmp)
            got = interleave(__file__, order, [r], epochs, threads=None, args=args)
            for name, (out,) in got.items():
                if name not in CONFIGS:
                    _record(results, name, out, epochs * (steps - 1))
                    continue
                if "error" in out:
                    ran = ALIASES.values() if name == PROTOLAB_ALIASES else MODES
                    out = {f"protolab:{m}": out for m in ran if m in modes}
                for mode, numbers in out.items():
                    _record(results, mode, numbers, epochs * steps)
            line = ", ".join(
                f"{n} {c.rounds[-1].median_ms:.3g}" for n, c in results.items() if c.ok
            )
            log(f"  round {r + 1}/{rounds} (ms/step): {line}")
    for name, res in results.items():
        if res.error and name not in skip:
            log(f"  {name}: n/a ({res.error})")
    info = case.arch.infer(ds.input_shape, ds.input_dtype)
    return CaseResult(case, int(info.params), int(info.flops_per_sample), steps, results)


def main(argv: list[str] | None = None) -> int:
    """``--one NAME ROUND``: one contender's round in this process, JSON on the last line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--one", nargs=2, metavar=("CONTENDER", "ROUND"), required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--project", required=True)
    args = ap.parse_args(argv)
    print(json.dumps(_one(args.one[0], args.model, args.epochs, args.project)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
