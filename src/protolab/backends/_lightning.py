"""The dynamic backend: the Arch as an eager torch module, trained with Lightning Fabric.

Why Fabric, not ``Trainer``: on the digits MLP a minimal-flag Trainer adds ~0.7 ms to a
~1.1 ms step (hooks, loop bookkeeping, logging connectors), so it would measure Lightning's
loop rather than PyTorch. Fabric keeps Lightning's device, precision and strategy handling
and costs 1-9 % over a raw loop (``benchmarks/run.py``: 1.07x raw on the digits MLP and
0.99x on a wide one, where the Trainer took 1.32x and 1.01x).

The loop keeps the whole in-memory dataset device-resident and shuffles by index with a
seeded generator, so no DataLoader or host copies sit inside the timed steps.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from protolab.backends._base import (
    Backend,
    EpochHook,
    Job,
    JobResult,
    check_output,
    perf_metrics,
)
from protolab.backends._peak import cpu_name
from protolab.backends._timing import TrialClock, import_timed, preload, step_stats
from protolab.errors import NonFiniteLossError

__all__ = ["LightningBackend"]

_PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}
_EVAL_BATCH = 1024


def _optimizer(params: Any, name: str, lr: float, wd: float) -> Any:
    import torch

    # Weight decay is decoupled for every optimizer, as Keras 3 applies it on both sides.
    if name in ("adam", "adamw"):
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, eps=1e-7)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


class LightningBackend(Backend):
    name = "lightning"
    family = "dynamic"

    def load(self) -> None:
        # Takes effect only if torch is not loaded yet (the CLI sets it at start-up): OpenMP
        # threads that spin-wait collapse under any CPU contention (see protolab.cli).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        preload("torch", "lightning.fabric")

    def run(self, job: Job, on_epoch: EpochHook | None = None) -> JobResult:
        clock = TrialClock()
        self.load()
        clock.import_s, cold = import_timed("torch", "lightning.fabric")
        import torch
        import torch.nn.functional as F
        from lightning.fabric import Fabric

        from protolab.backends._threads import set_torch_threads
        from protolab.backends._torch_build import build_torch, count_params

        set_torch_threads(job.hardware.threads)

        ds, tr, hw = job.dataset, job.train, job.hardware
        info = job.arch.infer(ds.input_shape, ds.input_dtype)
        check_output(info.output_shape, ds.output_shape, ds.name)

        accelerator = "cuda" if hw.accelerator == "gpu" else hw.accelerator
        precision: Any = _PRECISION[hw.precision]
        fabric = Fabric(accelerator=accelerator, devices=hw.devices, precision=precision)
        fabric.seed_everything(tr.seed, verbose=False)
        device = fabric.device

        t_build = time.perf_counter()
        model = build_torch(job.arch, ds.input_shape, ds.input_dtype)
        opt = _optimizer(model.parameters(), tr.optimizer, tr.lr, tr.weight_decay)
        model, opt = fabric.setup(model, opt)
        clock.build_s = time.perf_counter() - t_build

        classify = ds.task == "classification"
        x_tr, y_tr, x_va, y_va = (
            torch.as_tensor(a, device=device) for a in (ds.x_train, ds.y_train, ds.x_val, ds.y_val)
        )
        if not classify:  # regression targets as (N, k) to match the (k,) model output
            y_tr, y_va = y_tr.reshape(len(y_tr), -1), y_va.reshape(len(y_va), -1)

        def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = out.float()
            return F.cross_entropy(out, y) if classify else F.mse_loss(out, y)

        n = len(x_tr)
        batch = min(tr.batch_size, n)
        steps = n // batch  # drop the ragged last batch: every step has the same shape
        gen = torch.Generator(device=device).manual_seed(tr.seed)
        sync = device.type != "cpu"

        result = JobResult()
        first_step_only = 0.0
        for epoch in range(1, tr.epochs + 1):
            t_epoch = time.perf_counter()
            model.train()
            # One gather per epoch, then contiguous slices: a per-step index gather costs
            # ~5 % of a small model's step (one shuffled copy of the data is the price).
            perm = torch.randperm(n, generator=gen, device=device)
            x_ep, y_ep = x_tr[perm], y_tr[perm]
            loss_sum = torch.zeros((), device=device)
            t_prev = t_epoch
            for i in range(steps):
                opt.zero_grad(set_to_none=True)
                lo, hi = i * batch, (i + 1) * batch
                loss = loss_fn(model(x_ep[lo:hi]), y_ep[lo:hi])
                fabric.backward(loss)
                opt.step()
                loss_sum += loss.detach()
                if epoch == 1 and i == 0:
                    if sync:
                        torch.cuda.synchronize()
                    t_now = time.perf_counter()
                    clock.first_step_s = t_now - clock.start
                    first_step_only = t_now - t_prev
                    if not math.isfinite(loss.item()):
                        raise NonFiniteLossError(f"loss is {loss.item()} at epoch 1, step 1")
                elif not sync:
                    t_now = time.perf_counter()
                    clock.step_s.append(t_now - t_prev)
                else:
                    t_now = t_prev
                t_prev = t_now
            if sync:
                torch.cuda.synchronize()
            t_trained = time.perf_counter()
            if sync and epoch > 1:  # no per-step sync on GPUs: epoch averages instead
                clock.step_s.extend([(t_trained - t_epoch) / steps] * steps)
            train_loss = loss_sum.item() / steps
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(f"training loss is {train_loss} at epoch {epoch}")

            metrics = {"train/loss": train_loss, **_evaluate(model, x_va, y_va, loss_fn, classify)}
            clock.end_epoch(epoch, metrics, t_epoch, t_trained, result.history, on_epoch)

        # Eager has no compile step: its "compile" is the first step's extra cost.
        clock.compile_s = max(first_step_only - step_stats(clock.step_s)[0] / 1000, 0.0)
        final = result.history[-1]
        result.metrics = {
            **{k: v for k, v in final.items() if not k.startswith("time/")},
            **clock.metrics(batch),
            "memory/peak_device_mb": (
                torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
            ),
            "model/params": float(count_params(model)),
            "model/flops_per_sample": float(info.flops_per_sample),
        }
        samples_per_s = result.metrics["throughput/samples_per_s"]
        if device.type in ("cpu", "cuda"):
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
            threads = torch.get_num_threads() if device.type == "cpu" else 0
            result.metrics.update(
                perf_metrics(
                    info.flops_per_sample, samples_per_s, device.type, name, hw.precision, threads
                )
            )
        result.tags = {
            "cold_start": str(cold).lower(),
            "device": str(device),
            "torch_threads": str(torch.get_num_threads()),
            "loop": "eager",
        }
        return result


def _evaluate(model: Any, x: Any, y: Any, loss_fn: Any, classify: bool) -> dict[str, float]:
    import torch

    model.eval()
    total_loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    sq_err = torch.zeros((), device=x.device)
    with torch.no_grad():
        for i in range(0, len(x), _EVAL_BATCH):
            xb, yb = x[i : i + _EVAL_BATCH], y[i : i + _EVAL_BATCH]
            out = model(xb).float()
            total_loss += loss_fn(out, yb) * len(xb)
            if classify:
                correct += (out.argmax(-1) == yb).sum()
            else:
                sq_err += ((out - yb) ** 2).sum()
    n = len(x)
    metrics = {"val/loss": total_loss.item() / n}
    if classify:
        metrics["val/acc"] = correct.item() / n
    else:
        metrics["val/rmse"] = math.sqrt(sq_err.item() / y.numel())
    return metrics
