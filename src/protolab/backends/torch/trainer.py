"""The PyTorch programs: an eager module trained with Lightning Fabric, or ``torch.compile``-d.

Why Fabric, not ``Trainer``: on the digits MLP a minimal-flag Trainer adds ~0.7 ms to a
~1.1 ms step (hooks, loop bookkeeping, logging connectors), so it would measure Lightning's
loop rather than PyTorch. Fabric keeps Lightning's device, precision and strategy handling
and costs 1-9 % over a raw loop (``benchmarks/run.py``).

The loop keeps the whole in-memory dataset device-resident and shuffles by index with a
seeded generator, so no DataLoader or host copies sit inside the timed steps. The compiled
mode runs the same loop with the module compiled by ``torch.compile`` (forward and, through
AOTAutograd, backward) and a compiled optimizer step; its compile cost is the first step's
extra time, and recompiles are counted (tag ``recompiles``).

With the program cache on (a warm process: ``protolab.backends._cache``) the compiled
mode keeps its module and compiled programs per model and shapes; a rerun with another
learning rate (a tensor), seed or epoch count resets them in place and compiles nothing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import Precision
from lightning.fabric.strategies import SingleDeviceStrategy

from protolab.backends._base import (
    DeviceInfo,
    EpochFit,
    Job,
    Program,
    TrainSettings,
    epoch_plan,
)
from protolab.backends._cache import ProgramCache, cache_size, job_key
from protolab.backends._compile_cache import Probe, folder, holds
from protolab.backends._peak import cpu_name
from protolab.backends._schedule import lr_table, per_step
from protolab.backends._threads import ThreadProbe, set_torch_threads, torch_thread_plan
from protolab.backends.torch._dispatch import own_loop
from protolab.backends.torch.core import PRECISION, LossFn, gemm, optimizer, torch_loss
from protolab.backends.torch.export import TorchModel
from protolab.backends.torch.nn import build_torch, count_params
from protolab.errors import NonFiniteLossError

__all__ = ["EagerProgram", "evaluate", "program"]

_EVAL_BATCH = 1024
_SEEDS_KEPT = 4  # initial states kept per cached model (one per seed seen)
_STATE_FILE = "state.pt"  # population-based training: weights + optimizer state


class _Programs:
    """A module under Fabric with its optimizer and step: what the program cache keeps.

    Only the compiled mode is cached (its programs cost seconds to compile; an eager build
    costs milliseconds). Cached, the learning rate is a tensor in the optimizer's param
    groups, so a new value is written into it rather than traced as a constant.
    """

    def __init__(self, job: Job, compiled: bool) -> None:
        from lightning.fabric import Fabric

        ds, tr, hw = job.dataset, job.train, job.hardware
        accelerator = "cuda" if hw.accelerator == "gpu" else hw.accelerator
        precision: Any = PRECISION[hw.precision]
        if hw.devices == 1:
            self.fabric = Fabric(accelerator=accelerator, devices=1, precision=precision)
        else:
            self.fabric = _ddp_fabric(accelerator, hw.devices, precision)
        self.arch, self.shape, self.dtype = job.arch, ds.input_shape, ds.input_dtype
        self.module = build_torch(job.arch, ds.input_shape, ds.input_dtype)
        options = dict(tr.optimizer_options)
        opt = optimizer(
            self.module.parameters(), tr.optimizer, tr.lr, tr.weight_decay, options,
            tr.custom_optimizer,
        )  # fmt: skip
        # cached: serves later jobs; scheduled: a new value each step. Either way a tensor,
        # so the compiled optimizer step reads it instead of recompiling per value.
        self.lr_tensor = compiled and (cache_size() > 0 or tr.schedule != "constant")
        if self.lr_tensor:
            for group in opt.param_groups:
                group["lr"] = torch.tensor(tr.lr)
        net: Any = torch.compile(self.module, dynamic=False) if compiled else self.module
        self.model, self.opt = self.fabric.setup(net, opt)
        self.opt_step: Callable[[], Any] = (
            torch.compile(self.opt.step, dynamic=False) if compiled else self.opt.step
        )
        self._inits = {tr.seed: _initial(self.module)} if self.lr_tensor else {}

    def reset(self, seed: int, lr: float) -> None:
        """Back to a fresh build's state for ``seed`` (the caller has seeded torch), in place:
        the compiled programs keep the same tensors, so nothing recompiles. The RNG resumes
        where a fresh build leaves it (the build draws the initial weights from it), so
        dropout masks match a fresh job's too."""
        if seed not in self._inits:
            kept = list(self._inits.items())[1 - _SEEDS_KEPT :]
            fresh = build_torch(self.arch, self.shape, self.dtype)
            self._inits = {**dict(kept), seed: _initial(fresh)}
        values, rng = self._inits[seed]
        torch.set_rng_state(rng)
        with torch.no_grad():
            for t, value in zip(self.module.state_dict().values(), values, strict=True):
                t.copy_(value)
            for state in self.opt.state.values():  # zeros: what a fresh optimizer starts from
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()
            for group in self.opt.param_groups:
                if self.lr_tensor:
                    group["lr"].fill_(lr)
                else:
                    group["lr"] = lr


def _ddp_fabric(accelerator: str, devices: int, precision: Any) -> Any:
    """Fabric in one DDP rank that ``torch/_ddp.py`` launched: it joins, never relaunches."""
    from lightning.fabric import Fabric

    from protolab.backends.torch._ddp import ddp_strategy, in_rank

    if not in_rank():
        raise RuntimeError(
            f"hardware.devices={devices} trains in DDP rank processes that the backend "
            "launches (EagerBackend.run); an EagerProgram alone trains one device"
        )
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    fabric = Fabric(
        accelerator="cpu" if on_cpu else accelerator,
        devices=devices,
        precision=precision,
        strategy=ddp_strategy(on_cpu),
    )
    fabric.launch()  # the process group (once per rank process); no processes started
    return fabric


_CACHE: ProgramCache[_Programs] = ProgramCache()


def _forget_compiled() -> None:
    """Drop every cached model and dynamo's code cache with them, before a new one.

    Dynamo keeps guards per code object, and every model shares its module class's
    ``forward``: left alone, its recompile limit (8) would silently send later models to
    eager. A full cache is therefore emptied at once (as a sweep does after each trial).
    """
    _CACHE.clear()
    torch._dynamo.reset()


def _initial(module: torch.nn.Module) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A just-built module's values, and the CPU RNG's state after building it."""
    return [t.detach().clone() for t in module.state_dict().values()], torch.get_rng_state()


class EagerProgram(Program):
    """The Arch as a torch module under Fabric, with its data on the device."""

    def __init__(self, backend: str, job: Job, compiled: bool = False) -> None:
        from lightning.fabric import Fabric

        set_torch_threads(job.hardware.threads)
        tr = job.train
        Fabric.seed_everything(tr.seed, verbose=False)
        self.backend, self.compiled = backend, compiled
        self.cc_key = job_key(backend, job)
        self.cc = compile_cache_probe(job, self.cc_key) if compiled else None  # before any compile
        extra = (tr.optimizer_options, tr.custom_optimizer)  # the factory object, held by the key
        key = job_key(backend, job, *extra) if compiled and cache_size() > 0 else None
        cached = _CACHE.get(key) if key is not None else None
        self.hit = cached is not None
        if cached is None:
            if key is not None and len(_CACHE) >= cache_size():
                _forget_compiled()
            self.graphs0 = _graph_count()  # after any reset (it clears dynamo's counters)
            cached = _Programs(job, compiled)
            if key is not None:
                _CACHE.put(key, cached)
        else:
            self.graphs0 = _graph_count()
            cached.reset(tr.seed, tr.lr)
        self.fabric, self.module, self.model = cached.fabric, cached.module, cached.model
        self.opt, self.opt_step = cached.opt, cached.opt_step
        self.lr_tensor = cached.lr_tensor
        self.forward, self.backward = _step_calls(self.fabric, self.model, compiled)
        self.dev = self.fabric.device
        self.rank, self.world = self.fabric.global_rank, self.fabric.world_size
        self._place_data(job)
        self.probe: ThreadProbe | None
        self.probe, self.threads_rule = torch_thread_plan(
            job.hardware.threads, self.dev.type == "cpu", self.world, compiled,
            job_key("threads", job), _trial_steps(self.steps, job.train),
        )  # fmt: skip
        self._loss = torch_loss(job)
        self.clip = tr.grad_clip
        self.lr, self.lr_scale = tr.lr, 1.0  # the scale: reduce_on_plateau's (rescale_lr)
        self.table: list[float] | None = None  # per-step learning rates (None: constant)
        if per_step(tr.schedule):
            sched = lr_table(
                tr.schedule, tr.lr, tr.epochs, self.steps, dict(tr.schedule_options),
                tr.max_total_steps,
            )  # fmt: skip
            self.table = [float(v) for v in sched]
        self.gen = torch.Generator(device=self.dev).manual_seed(tr.seed)

    def _place_data(self, job: Job) -> None:
        ds, tr = job.dataset, job.train
        self.classify = ds.task == "classification"
        self.x_tr, self.y_tr, self.x_va, self.y_va = (
            torch.as_tensor(a, device=self.dev)
            for a in (ds.x_train, ds.y_train, ds.x_val, ds.y_val)
        )
        if not self.classify:  # regression targets as (N, k) to match the (k,) model output
            self.y_tr = self.y_tr.reshape(len(self.y_tr), -1)
            self.y_va = self.y_va.reshape(len(self.y_va), -1)
        n = len(self.x_tr)
        self.batch = min(tr.batch_size, n)
        if self.world > 1:  # DDP: equal slices of every global batch, one per rank
            self.batch = max(self.batch // self.world, 1) * self.world
        # drop_last (default): every step the same shape; else the tail is one more step
        full, self.tail = epoch_plan(n, self.batch, tr.drop_last, tr.max_steps)
        self.tail = self.tail // self.world * self.world
        self.steps = full + (1 if self.tail else 0)

    def loss_fn(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._loss(out, y)

    def _set_lr(self, step: int) -> None:
        """The schedule's learning rate for this step, written where the optimizer reads it."""
        assert self.table is not None
        self._write_lr(self.table[min(step, len(self.table) - 1)] * self.lr_scale)

    def _write_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            if self.lr_tensor:  # the compiled step reads the tensor: nothing recompiles
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def rescale_lr(self, scale: float) -> None:
        """``train.lr * scale`` from the next step (a table's steps are scaled as they come)."""
        self.lr_scale = scale
        if self.table is None:
            self._write_lr(self.lr * scale)

    def current_lr(self) -> float | None:
        return float(self.opt.param_groups[0]["lr"])

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of every weight and buffer, on the device (``restore_best_weights``)."""
        return [t.detach().clone() for t in self.module.state_dict().values()]

    def restore(self, snapshot: object) -> None:
        """In place: the compiled programs keep reading the same tensors."""
        assert isinstance(snapshot, list)
        with torch.no_grad():
            for t, value in zip(self.module.state_dict().values(), snapshot, strict=True):
                t.copy_(value)

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.opt.param_groups for p in group["params"]]

    def save_state(self, directory: Path) -> None:
        """The module's state_dict and the optimizer's per-parameter state, as one flat
        dict of CPU tensors in ``state.pt`` (``torch.load(weights_only=True)`` reads it
        without unpickling code). The optimizer's hyperparameters (lr ...) are not saved:
        the member that continues trains with its own."""
        tensors = {f"model/{k}": v.detach().cpu() for k, v in self.module.state_dict().items()}
        for i, p in enumerate(self._params()):
            for key, value in self.opt.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"opt/{i}/{key}"] = value.detach().cpu()
        torch.save(tensors, directory / _STATE_FILE)

    def load_state(self, directory: Path) -> None:
        """Weights copied in place (compiled programs keep their tensors), moments onto
        each parameter's device; scalar counters stay where the optimizer keeps them."""
        path = directory / _STATE_FILE
        if not path.is_file():
            raise ValueError(f"{self.backend}: no PyTorch state ({_STATE_FILE}) in {directory}")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        with torch.no_grad():
            for key, t in self.module.state_dict().items():
                value = saved.get(f"model/{key}")
                if value is None or value.shape != t.shape:
                    raise ValueError(f"{self.backend}: the saved state does not fit {key!r}")
                t.copy_(value)
        group = self.opt.param_groups[0]
        on_device = bool(group.get("capturable") or group.get("fused"))
        for i, p in enumerate(self._params()):
            prefix = f"opt/{i}/"
            state = {
                k.removeprefix(prefix): v.to(p.device) if v.dim() or on_device else v
                for k, v in saved.items()
                if k.startswith(prefix)
            }
            if state:
                self.opt.state[p] = state

    def fit_epoch(self, epoch: int) -> EpochFit:
        return self.fit_steps(epoch, self.steps)

    def fit_steps(self, epoch: int, steps: int) -> EpochFit:
        """``steps`` steps of an epoch (all of them but at ``train.max_steps``'s end): one
        gather, then contiguous slices (a per-step gather costs ~5 %)."""
        sync = self.dev.type != "cpu"
        t_epoch = time.perf_counter()
        self.model.train()
        perm = torch.randperm(len(self.x_tr), generator=self.gen, device=self.dev)
        x_ep, y_ep = self.x_tr[perm], self.y_tr[perm]
        loss_sum = torch.zeros((), device=self.dev)
        fit = EpochFit(loss=float("nan"), steps=steps)
        t_prev = t_epoch
        probe = self.probe if self.probe is not None and not self.probe.done else None
        for i in range(steps):
            self.opt.zero_grad(set_to_none=True)
            if self.table is not None:
                self._set_lr((epoch - 1) * self.steps + i)
            if self.world == 1:
                lo, hi = i * self.batch, min((i + 1) * self.batch, len(x_ep))
            else:
                lo, hi = self._shard(i)
            loss = self.loss_fn(self.forward(x_ep[lo:hi]), y_ep[lo:hi])
            self.backward(loss)
            if self.clip:  # unscales first under float16; Keras clips the same global norm
                self.fabric.clip_gradients(
                    self.model, self.opt, max_norm=self.clip, error_if_nonfinite=False
                )
            self.opt_step()
            loss_sum += loss.detach()
            if epoch == 1 and i == 0:
                if sync:
                    torch.cuda.synchronize()
                t_now = time.perf_counter()
                fit.first_step_s = t_now - t_epoch
                if not math.isfinite(loss.item()):
                    raise NonFiniteLossError(f"loss is {loss.item()} at epoch 1, step 1")
                t_prev = t_now
            elif not sync:  # per-step times on CPU; GPUs get epoch averages (no syncs)
                t_now = time.perf_counter()
                fit.step_s.append(t_now - t_prev)
                t_prev = t_now
                if probe is not None and probe.feed(fit.step_s[-1]):
                    probe = None
        if sync:
            torch.cuda.synchronize()
            if epoch > 1:
                fit.step_s = [(time.perf_counter() - t_epoch) / steps] * steps
        if self.world > 1:  # every rank's slices: the global batches' mean loss
            loss_sum = self.fabric.all_reduce(loss_sum, reduce_op="mean")  # type: ignore[assignment]
        fit.loss = loss_sum.item() / steps
        if epoch == 1 and self.cc is not None:  # every shape of the run compiled by now
            self.cc.after_compile(fit.first_step_s, fit.step_s)
        return fit

    def _shard(self, i: int) -> tuple[int, int]:
        """This rank's equal share of step ``i``'s global batch (DDP): the all-reduce mean
        of the ranks' gradients is then the global batch's, as on one device."""
        lo = i * self.batch
        size = (self.tail if self.tail and i == self.steps - 1 else self.batch) // self.world
        return lo + self.rank * size, lo + (self.rank + 1) * size

    def evaluate(self) -> dict[str, float]:
        """With the plain module: an eval-mode call must not recompile the trained program."""
        return evaluate(self.module, self.x_va, self.y_va, self.loss_fn, self.classify)

    def device(self) -> DeviceInfo:
        if self.dev.type == "cuda":
            return DeviceInfo("cuda", torch.cuda.get_device_name(self.dev), 0, gemm)
        return DeviceInfo(self.dev.type, cpu_name(), torch.get_num_threads(), gemm)

    def measure(self) -> dict[str, float]:
        cuda = self.dev.type == "cuda"
        return {
            "memory/peak_device_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
            "model/params": float(count_params(self.module)),
            **(self.cc.finish(self.cc_key) if self.cc is not None else {}),
        }

    def tags(self) -> dict[str, str]:
        tags = {
            "device": str(self.dev),
            "torch_threads": str(torch.get_num_threads()),
            "threads_rule": self.probe.rule() if self.probe is not None else self.threads_rule,
            "loop": "torch.compile" if self.compiled else "eager",
        }
        if self.compiled:  # graphs beyond the first train graph + optimizer step
            graphs = _graph_count() - self.graphs0
            expected = (0 if self.hit else 2) + (1 if self.tail else 0)  # the tail's shape
            tags["recompiles"] = str(max(graphs - expected, 0))
            tags["compiles"] = str(graphs)
            tags["program_cache"] = ProgramCache.status(self.hit)
            tags["compile_cache"] = self.cc.close() if self.cc is not None else "off"
        else:
            tags["compiles"] = "0"  # eager: nothing to compile
        if self.world > 1:
            tags["strategy"] = f"ddp-{getattr(self.fabric.strategy, 'process_group_backend', '')}"
            tags["devices"] = str(self.world)
            tags["batch_per_device"] = str(self.batch // self.world)
        return tags

    def trained(self) -> TorchModel:
        return TorchModel(self.backend, self.module)


def _step_calls(
    fabric: Any, model: Any, compiled: bool
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], None]]:
    """The forward and backward calls of one step.

    Fabric's per-step wrappers convert inputs and outputs to the precision, enter its
    autocast context and hook the output so a backward outside ``fabric.backward`` warns.
    At full precision on one device each of those does nothing, yet their Python cost
    7-8 % of a small model's step (``mlp-small`` 0.915 ms against 0.855 plain, one process,
    30 alternated epochs). There the eager mode calls the module and ``backward`` directly;
    anything else (mixed precision, DDP, the compiled mode) goes through Fabric.
    """
    strategy = fabric.strategy
    direct = (
        not compiled
        and isinstance(strategy, SingleDeviceStrategy)
        and type(strategy.precision) is Precision
    )
    if direct:
        return model.module, torch.Tensor.backward
    return model, fabric.backward


def _trial_steps(per_epoch: int, tr: TrainSettings) -> int:
    """The trial's timed steps (its first step is the first-step clock's, not a step's)."""
    total = per_epoch * tr.epochs
    cap = tr.max_total_steps
    return (min(total, cap) if cap else total) - 1


def program(backend: str, job: Job, compiled: bool = False) -> Program:
    """``job``'s program: a LightningModule trains in its own ``Trainer`` (``_module``)."""
    node = own_loop(job)
    if node is not None:
        from protolab.backends.torch._module import LightningProgram

        return LightningProgram(backend, job, node, compiled)
    return EagerProgram(backend, job, compiled)


def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, classify: bool
) -> dict[str, float]:
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


def compile_cache_probe(job: Job, key: tuple[Hashable, ...]) -> Probe:
    """Point inductor at this torch version's and device's folder of the compile cache.

    Inductor always caches on disk (FX graphs, AOTAutograd graphs, C++/Triton kernels),
    by default in the system temp folder; protolab names the folder instead, so a run is
    warm exactly when protolab's cache is, and an ``off`` run compiles into a throwaway
    folder. With ``TORCHINDUCTOR_FX_GRAPH_CACHE=0`` only kernels could be reused, which
    is no warm compile: that counts as off.
    """
    on = os.environ.get("TORCHINDUCTOR_FX_GRAPH_CACHE", "1") != "0"
    probe = Probe(_cache_folder(job) if on else None, scratch=True, key=key)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(probe.where)
    return probe


def _cache_folder(job: Job) -> Path | None:
    """This torch version's and device's folder of the compile cache (None: off)."""
    cuda = job.hardware.accelerator in ("gpu", "auto") and torch.cuda.is_available()
    device = f"cuda-{torch.cuda.get_device_name()}" if cuda else f"cpu-{cpu_name()}"
    return folder("torch", torch.__version__, device)


def compile_cache_warm(backend: str, job: Job) -> bool:
    """Whether the compile cache holds ``job``'s compile on ``backend`` (its next compile is
    warm): the family aliases then afford a mode whose cold compile is too slow to try."""
    return holds(_cache_folder(job), job_key(backend, job))


def _graph_count() -> int:
    """Graphs torch.compile has produced in this process (recompiles show up here)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
