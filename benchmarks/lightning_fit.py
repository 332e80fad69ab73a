"""A LightningModule through protolab vs the same module under a plain ``Trainer.fit``.

The module is ``experiments/port_lightning_autoencoder.py``'s (Lightning's own
``LitAutoEncoder``, hidden 64, code 3), on protolab's digits split, batch 64, drop_last.
Every run is a process of its own (``--one`` below), one CPU thread each, and rounds
interleave the contenders:

- ``plain``: ``Trainer(max_epochs, logger=False, enable_checkpointing=False,
  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)`` and
  ``fit(module, DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True,
  drop_last=True), DataLoader(val, batch_size=64))``: what a user writes;
- ``plain-gather``: the same Trainer fed protolab's loader (one gather per batch, no
  per-sample collate), so the loader's share and protolab's own share can be told apart;
- ``lightning``: protolab's ``Backend.run`` of ``pl.native(torch=..., torch_callbacks=...)``.

``Recorder`` (a Lightning callback, in all three) notes when each epoch starts and when
its training ends (validation starts): train seconds / steps, median over epochs 2.., is
each run's ``fit_step_ms`` (the same clock everywhere, so the ratio is what protolab adds
to the user's fit), and the same for the thread's CPU time (``cpu_step_ms``: what the run
did, less the waiting a busy machine adds). Ratios are paired by round, then the median.
protolab's own ``time/step_ms`` is printed beside them.

    .venv/bin/python benchmarks/lightning_fit.py --epochs 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "port_lightning_autoencoder.py"
CONTENDERS = ("plain", "plain-gather", "lightning")
BATCH = 64


def _recorder() -> Any:
    import lightning as L

    class Recorder(L.Callback):
        """Epoch start and training end: the clock every contender shares."""

        def __init__(self) -> None:
            self.starts: list[float] = []
            self.trained: list[float] = []
            self.cpu: list[float] = []  # this thread's CPU seconds at the same two points
            self.steps: list[int] = []

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.starts.append(time.perf_counter())
            self.cpu.append(time.thread_time())
            self.steps.append(0)

        def on_train_batch_end(self, *args: Any) -> None:
            self.steps[-1] += 1

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            if len(self.trained) < len(self.starts):
                self.trained.append(time.perf_counter())
                self.cpu[-1] = time.thread_time() - self.cpu[-1]

    return Recorder()


def _one(name: str, epochs: int, seed: int) -> dict[str, Any]:
    """One contender in this process; its Recorder's step times and protolab's own."""
    import importlib.util

    import torch

    torch.set_num_threads(1)
    from protolab.data import load_dataset

    spec = importlib.util.spec_from_file_location("port_lightning_autoencoder", SCRIPT)
    assert spec is not None and spec.loader is not None
    port = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(port)
    ds = load_dataset("digits", seed=seed)
    rec = _recorder()
    out: dict[str, Any] = {"name": name}
    if name == "lightning":
        out.update(_protolab(port, ds, rec, epochs, seed))
    else:
        out["val_loss"] = _plain(port, ds, rec, epochs, seed, gather=name == "plain-gather")
    per_step = [(t - s) / n for s, t, n in zip(rec.starts, rec.trained, rec.steps, strict=False)]
    out["fit_step_ms"] = 1000 * statistics.median(per_step[1:] or per_step)
    cpu = [c / n for c, n in zip(rec.cpu, rec.steps, strict=False)]
    out["cpu_step_ms"] = 1000 * statistics.median(cpu[1:] or cpu)
    return out


def _plain(port: Any, ds: Any, rec: Any, epochs: int, seed: int, gather: bool) -> float:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    L.seed_everything(seed, verbose=False)
    module = port.autoencoder(64, 3)
    x, y = torch.as_tensor(ds.x_train), torch.as_tensor(ds.y_train)
    xv, yv = torch.as_tensor(ds.x_val), torch.as_tensor(ds.y_val)
    if gather:
        from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

        data, val = TensorDataset(x, y), TensorDataset(xv, yv)
        gen = torch.Generator().manual_seed(seed)
        order = BatchSampler(RandomSampler(data, generator=gen), BATCH, True)
        train_loader = DataLoader(data, sampler=order, batch_size=None)
        val_order = BatchSampler(SequentialSampler(val), BATCH, False)
        val_loader = DataLoader(val, sampler=val_order, batch_size=None)
    else:
        train_loader = DataLoader(TensorDataset(x, y), BATCH, shuffle=True, drop_last=True)
        val_loader = DataLoader(TensorDataset(xv, yv), BATCH)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[rec],
    )
    trainer.fit(module, train_loader, val_loader)
    return float(trainer.callback_metrics["val_loss"])


def _protolab(port: Any, ds: Any, rec: Any, epochs: int, seed: int) -> dict[str, Any]:
    import protolab as pl
    from protolab.backends import Hardware, Job, TrainSettings, get_backend

    arch = pl.native(torch=lambda: port.autoencoder(64, 3), torch_callbacks=lambda: [rec])
    settings = TrainSettings(epochs=epochs, batch_size=BATCH, optimizer="adam", lr=1e-3, seed=seed)
    result = get_backend("lightning").run(Job(arch, ds, settings, Hardware("cpu", threads=1)))
    m = result.metrics
    return {"time/step_ms": m["time/step_ms"], "val_loss": m["val_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="one seed per round: 0, 1, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", choices=CONTENDERS, help="run one contender here (internal)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.epochs, args.seed)))
        return
    # the user's default environment (no protolab settings), one thread for every contender
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_NUM_THREADS"] = "1"
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    for rnd in range(args.rounds):
        for name in CONTENDERS:
            cmd = [sys.executable, __file__, "--one", name, "--epochs", str(args.epochs)]
            cmd += ["--seed", str(args.seed + rnd)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    med = {c: statistics.median(r["fit_step_ms"] for r in runs[c]) for c in CONTENDERS}
    cpu = {c: statistics.median(r["cpu_step_ms"] for r in runs[c]) for c in CONTENDERS}
    print("| contender | wall ms/step (median of rounds) | CPU ms/step | each round (wall) |")
    print("|---|---|---|---|")
    for c in CONTENDERS:
        each = ", ".join(f"{r['fit_step_ms']:.3f}" for r in runs[c])
        print(f"| {c} | {med[c]:.3f} | {cpu[c]:.3f} | {each} |")
    for c in CONTENDERS:
        losses = [r["val_loss"] for r in runs[c]]
        spread = statistics.stdev(losses) if len(losses) > 1 else 0.0
        each = " / ".join(f"{v:.5f}" for v in losses)
        print(f"{c}: final val_loss {statistics.mean(losses):.5f} ± {spread:.5f} ({each})")
    own = statistics.median(r["time/step_ms"] for r in runs["lightning"])
    print(f"\nprotolab's own time/step_ms (median): {own:.3f}")
    for base in ("plain", "plain-gather"):  # paired by round: the same moment's load
        pairs = list(zip(runs["lightning"], runs[base], strict=True))
        wall = statistics.median(a["fit_step_ms"] / b["fit_step_ms"] for a, b in pairs)
        used = statistics.median(a["cpu_step_ms"] / b["cpu_step_ms"] for a, b in pairs)
        print(f"lightning / {base}: {wall:.3f}x wall, {used:.3f}x CPU (median of rounds)")


if __name__ == "__main__":
    main()
