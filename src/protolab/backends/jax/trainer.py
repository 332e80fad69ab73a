"""The JAX programs: Keras' stateless API inside one jitted whole-epoch ``fori_loop``.

``model.stateless_call`` and ``optimizer.stateless_apply`` make a Keras model a pure
function of its variables, so one epoch (seeded permutation, batching by index, forward,
loss, gradients, update) is a single XLA program over device-resident arrays, like the
TensorFlow XLA mode. The programs are compiled ahead of time (``jit(...).lower().compile()``)
so ``time/compile_s`` is pure compile time. ``PROTOLAB_KERAS_LOOP=step`` runs a jitted
step per batch instead (the same fallback the TensorFlow modes have).

Every per-epoch input is host data (numpy): the epoch's random key is made inside the
program from ``(seed, epoch)``, and a step's batch is gathered inside the step from its
indices. JAX compiles each eager op the first time a process meets it, so eager key ops
cost the first epoch ~30 ms (0.7 ms a step on the 42-step ``attention`` harness model)
and eager gathers cost every step two more dispatches.

With the program cache on (``protolab.backends._cache``) the model and its compiled
programs are kept per model and shapes; the learning rate is one of the optimizer's state
arrays, so a rerun with another learning rate, seed or epoch count compiles nothing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import keras
import numpy as np

from protolab.backends._base import DeviceInfo, EpochFit, Job, Program
from protolab.backends._cache import ProgramCache, cache_size, job_key
from protolab.backends._compile_cache import Probe, folder
from protolab.backends._keras_nn import POLICY
from protolab.backends._keras_optim import keras_loss, keras_optimizer, steps_per_epoch, train_key
from protolab.backends._loops import whole_epoch
from protolab.backends._peak import cpu_name
from protolab.backends._schedule import per_step
from protolab.backends.jax import core
from protolab.backends.jax.export import KerasModel
from protolab.backends.jax.nn import build, count_params

__all__ = ["JaxProgram"]

_EVAL_BATCH = 1024
_SEEDS_KEPT = 4  # initial states kept per cached model (one per seed seen)
_STATE_FILE = "state.npz"  # population-based training: weights + optimizer state
Arrays = list[jax.Array]
State = tuple[Arrays, Arrays, Arrays]  # trainable, non-trainable, optimizer variables


def _numpy(variables: list[keras.Variable]) -> list[np.ndarray]:
    return [np.array(v.value, copy=True) for v in variables]


class _Programs:
    """A Keras model on JAX, its optimizer and its compiled programs: a cache entry."""

    def __init__(self, job: Job, steps: int, batch: int, tail: int) -> None:
        ds, tr = job.dataset, job.train
        self.arch, self.shape, self.dtype = job.arch, ds.input_shape, ds.input_dtype
        self.classify = ds.task == "classification"
        self.n, self.steps, self.batch, self.tail = len(ds.x_train), steps, batch, tail
        self.scheduled = per_step(tr.schedule)  # a table: the rate is not a state array
        self.model = build(job.arch, ds.input_shape, ds.input_dtype)
        self.opt = keras_optimizer(job, steps + (1 if tail else 0))
        self.loss_fn = keras_loss(job)
        self.opt.build(self.model.trainable_variables)
        self.aot_compiles = 0
        self.kept = cache_size() > 0  # serves later jobs: their state starts from copies
        self._inits = {tr.seed: self._initial(self.model)} if self.kept else {}
        self._make_programs()

    @staticmethod
    def _initial(model: keras.Model) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return _numpy(model.trainable_variables), _numpy(model.non_trainable_variables)

    def state(self, seed: int, lr: float) -> State:
        """Fresh arrays of the state a build with ``seed`` starts from, at learning rate ``lr``.

        Cached, always copies: the programs donate their state, the variables keep theirs.
        """
        if not self.kept:  # built for this one job: the variables' own arrays, as built
            m = self.model
            return (
                [v.value for v in m.trainable_variables],
                [v.value for v in m.non_trainable_variables],
                [v.value for v in self.opt.variables],
            )
        if seed not in self._inits:  # another seed: a throwaway build draws its values
            kept = list(self._inits.items())[1 - _SEEDS_KEPT :]
            fresh = build(self.arch, self.shape, self.dtype)
            self._inits = {**dict(kept), seed: self._initial(fresh)}
        tv, ntv = self._inits[seed]
        if not self.scheduled:  # a schedule's table is part of the key: nothing to set
            self.opt.learning_rate = lr  # the optimizer's variables never train (stateless)
        ov = _numpy(self.opt.variables)
        return (
            [jnp.asarray(a) for a in tv],
            [jnp.asarray(a) for a in ntv],
            [jnp.asarray(a) for a in ov],
        )

    def compiles(self) -> int:
        """Programs compiled so far (ahead of time, plus the jitted evaluation's cache)."""
        size = getattr(self._eval_fn, "_cache_size", None)
        return self.aot_compiles + (int(size()) if callable(size) else 0)

    def loss(self, out: jax.Array, y: jax.Array) -> jax.Array:
        return self.loss_fn(out.astype("float32"), y)  # the TensorFlow modes' own loss

    def step(self, state: State, xb: jax.Array, yb: jax.Array) -> tuple[State, jax.Array]:
        """Forward, loss, gradients, update, as a pure function of the variables."""
        tv, ntv, ov = state

        def compute(tv: Arrays, ntv: Arrays) -> tuple[jax.Array, Arrays]:
            out, ntv = self.model.stateless_call(tv, ntv, xb, training=True)
            return self.loss(out, yb), ntv

        (loss, ntv), grads = jax.value_and_grad(compute, has_aux=True)(tv, ntv)
        tv, ov = self.opt.stateless_apply(ov, grads, tv)
        return (tv, ntv, ov), loss

    def train_step(
        self, state: State, x: jax.Array, y: jax.Array, take: jax.Array
    ) -> tuple[State, jax.Array]:
        """One step on the rows ``take`` of the device-resident arrays (the per-step loop)."""
        return self.step(state, x[take], y[take])

    def _make_programs(self) -> None:
        steps, batch, n, tail = self.steps, self.batch, self.n, self.tail

        def train_epoch(
            state: State, x: jax.Array, y: jax.Array, seed_epoch: jax.Array, n_steps: jax.Array
        ) -> tuple[State, jax.Array]:
            """``n_steps`` steps (the tail counted; fewer at train.max_steps' end)."""
            key = jax.random.fold_in(jax.random.PRNGKey(seed_epoch[0]), seed_epoch[1])
            perm = jax.random.permutation(key, n)
            idx = perm[: steps * batch].reshape(steps, batch)

            def body(i: jax.Array, carry: tuple[State, jax.Array]) -> tuple[State, jax.Array]:
                state, total = carry
                state, loss = self.step(state, x[idx[i]], y[idx[i]])
                return state, total + loss

            full = jnp.minimum(n_steps, steps)
            state, total = jax.lax.fori_loop(0, full, body, (state, jnp.float32(0.0)))
            if tail:  # the ragged tail: one more step of its own static shape

                def last(carry: tuple[State, jax.Array]) -> tuple[State, jax.Array]:
                    take = perm[steps * batch : steps * batch + tail]
                    state, loss = self.step(carry[0], x[take], y[take])
                    return state, carry[1] + loss

                state, total = jax.lax.cond(n_steps > steps, last, lambda c: c, (state, total))
            return state, total / jnp.maximum(n_steps, 1).astype("float32")

        def evaluate(
            tv: Arrays, ntv: Arrays, x: jax.Array, y: jax.Array
        ) -> tuple[jax.Array, jax.Array]:
            out, _ = self.model.stateless_call(tv, ntv, x, training=False)
            out = out.astype("float32")
            if self.classify:
                hits = (jnp.argmax(out, -1) == y).astype("float32")
                return self.loss(out, y), jnp.mean(hits)
            return self.loss(out, y), jnp.sqrt(jnp.mean(jnp.square(out - y)))

        # jitted, then replaced by their ahead-of-time compiled executables
        self._epoch_fn: Any = jax.jit(train_epoch, donate_argnums=0)
        self._step_fn: Any = jax.jit(self.train_step, donate_argnums=0)
        self._tail_fn: Any = self._step_fn  # the ragged tail's shape: an executable of its own
        self._eval_fn: Any = jax.jit(evaluate)


_CACHE: ProgramCache[_Programs] = ProgramCache()


# the model's programs' entries (jax.jit names them jit_<function>): hit or miss is theirs
_PROGRAMS = ("jit_train_epoch-", "jit_train_step-", "jit_evaluate-")


def _cache_probe(key: tuple[Hashable, ...]) -> Probe:
    """JAX's persistent compilation cache in this jax version's and device's folder.

    Every program is kept (no minimum compile time or size: the whole-epoch program of a
    small MLP compiles in about a second, which is what a sweep pays per trial). JAX reads
    the folder once per process, at its first compile; a process keeps one folder.
    """
    dev = jax.devices()[0]
    name = cpu_name() if dev.platform == "cpu" else str(dev.device_kind)
    version = f"{jax.__version__}-jaxlib{jaxlib.__version__}"
    where = folder("jax", version, f"{dev.platform}-{name}")
    probe = Probe(where, key=key, programs=_PROGRAMS)
    jax.config.update("jax_enable_compilation_cache", probe.path is not None)
    if probe.path is not None:
        jax.config.update("jax_compilation_cache_dir", str(probe.path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        # XLA's own caches would sit under this folder and put its path in every entry's
        # key (compile options): another host's or a moved folder would never hit
        jax.config.update("jax_persistent_cache_enable_xla_caches", "")
    return probe


def _seed_epoch(seed: int, epoch: int) -> np.ndarray:
    """The whole-epoch program's key input: ``fold_in(PRNGKey(seed), epoch)`` is made inside
    the program, from host values (uint32 keeps every seed the config allows, 0..2**32-1)."""
    return np.array([seed, epoch], dtype=np.uint32)


class JaxProgram(Program):
    def __init__(self, backend: str, job: Job) -> None:
        ds, tr, hw = job.dataset, job.train, job.hardware
        self.backend, self.seed, self.lr = backend, tr.seed, tr.lr
        keras.utils.set_random_seed(tr.seed)
        keras.mixed_precision.set_global_policy(POLICY[hw.precision])
        self.classify = ds.task == "classification"
        y_train = ds.y_train if self.classify else ds.y_train.reshape(len(ds.y_train), -1)
        y_val = ds.y_val if self.classify else ds.y_val.reshape(len(ds.y_val), -1)
        self.n = len(ds.x_train)
        self.batch = min(tr.batch_size, self.n)
        self.full, self.tail = steps_per_epoch(job, self.batch)
        self.steps = self.full + (1 if self.tail else 0)
        on_cpu = jax.devices()[0].platform == "cpu"
        self.whole_epoch, self.loop_rule = whole_epoch(job.arch, on_cpu)
        self.cc_key = job_key(backend, job, self.whole_epoch)
        self.cc = _cache_probe(self.cc_key)
        key = job_key(backend, job, self.whole_epoch, train_key(job, self.tail))
        cached = _CACHE.get(key)
        self.hit = cached is not None
        if cached is None:
            cached = _Programs(job, self.full, self.batch, self.tail)
            _CACHE.put(key, cached)
        self.p, self.model, self.opt = cached, cached.model, cached.opt
        self.compiles0 = cached.compiles() if self.hit else 0
        self.x_tr, self.y_tr = jnp.asarray(ds.x_train), jnp.asarray(y_train)
        self.x_va, self.y_va = jnp.asarray(ds.x_val), jnp.asarray(y_val)
        self.state: State = cached.state(tr.seed, tr.lr)

    def compile(self) -> None:
        """Ahead-of-time compile of the train and evaluation programs (no training).

        A cached entry's programs are compiled for these shapes already: nothing to do.
        """
        if self.hit:
            return
        t0 = time.perf_counter()
        p, args = self.p, (self.state, self.x_tr, self.y_tr)
        if self.whole_epoch:
            seed_epoch, steps = _seed_epoch(self.seed, 0), np.int32(self.steps)
            p._epoch_fn = p._epoch_fn.lower(*args, seed_epoch, steps).compile()
        else:
            p._step_fn = p._step_fn.lower(*args, np.zeros(self.batch, np.int32)).compile()
            if self.tail:
                p._tail_fn = p._tail_fn.lower(*args, np.zeros(self.tail, np.int32)).compile()
                p.aot_compiles += 1
        p.aot_compiles += 1
        tv, ntv, _ = self.state
        p._eval_fn(tv, ntv, self.x_va[:_EVAL_BATCH], self.y_va[:_EVAL_BATCH])[0].block_until_ready()
        self.cc.after_compile(time.perf_counter() - t0, [])

    def fit_epoch(self, epoch: int) -> EpochFit:
        return self.fit_steps(epoch, self.steps)

    def fit_steps(self, epoch: int, steps: int) -> EpochFit:
        """``steps`` steps of an epoch (all but at train.max_steps' end)."""
        t0 = time.perf_counter()
        p = self.p
        if self.whole_epoch:
            seed_epoch = _seed_epoch(self.seed, epoch)
            args = (self.state, self.x_tr, self.y_tr, seed_epoch, np.int32(steps))
            self.state, loss = p._epoch_fn(*args)
            value = float(loss)
        else:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n).astype(np.int32)
            losses = []
            for i in range(steps):
                end = (i + 1) * self.batch if i < self.full else self.n
                step = p._step_fn if i < self.full else p._tail_fn
                take = perm[i * self.batch : end]
                self.state, loss = step(self.state, self.x_tr, self.y_tr, take)
                losses.append(loss)
            value = float(np.sum(jax.device_get(losses))) / steps  # one wait, at the end
        per_step_s = (time.perf_counter() - t0) / steps
        return EpochFit(loss=value, step_s=[per_step_s] if epoch > 1 else [], steps=steps)

    def _lr_slot(self) -> int:
        """Where the optimizer's learning-rate variable sits in the state's optimizer arrays
        (a constant rate or an epoch rule's: a schedule's table has none)."""
        lr = self.opt.learning_rate
        return next(i for i, v in enumerate(self.opt.variables) if v is lr)

    def rescale_lr(self, scale: float) -> None:
        """``train.lr * scale`` into the state's learning-rate array: the compiled programs
        take it as an argument, so nothing recompiles (reduce_on_plateau)."""
        tv, ntv, ov = self.state
        at = self._lr_slot()
        ov = [*ov[:at], jnp.asarray(self.lr * scale, dtype=ov[at].dtype), *ov[at + 1 :]]
        self.state = (tv, ntv, ov)

    def snapshot(self) -> tuple[Arrays, Arrays]:
        """Copies of the trainable and non-trainable arrays (the programs donate theirs)."""
        tv, ntv, _ = self.state
        return [jnp.copy(a) for a in tv], [jnp.copy(a) for a in ntv]

    def restore(self, snapshot: object) -> None:
        assert isinstance(snapshot, tuple)
        tv, ntv = snapshot
        self.state = ([jnp.copy(a) for a in tv], [jnp.copy(a) for a in ntv], self.state[2])

    def save_state(self, directory: Path) -> None:
        """The state's three array lists (trainable, non-trainable, optimizer) in
        ``state.npz``: ``np.load(allow_pickle=False)`` reads it without running code."""
        arrays: dict[str, Any] = {
            f"{kind}{i}": np.asarray(a)
            for kind, group in zip("tno", self.state, strict=True)
            for i, a in enumerate(group)
        }
        np.savez(directory / _STATE_FILE, **arrays)

    def load_state(self, directory: Path) -> None:
        """The saved arrays in place of the state's (same Arch, same order); the learning
        rate is this job's own, not the saved one."""
        path = directory / _STATE_FILE
        if not path.is_file():
            raise ValueError(f"{self.backend}: no Keras state ({_STATE_FILE}) in {directory}")
        groups: list[Arrays] = []
        with np.load(path, allow_pickle=False) as saved:
            for kind, group in zip("tno", self.state, strict=True):
                keys = [f"{kind}{i}" for i in range(len(group))]
                if any(
                    k not in saved.files or saved[k].shape != a.shape
                    for k, a in zip(keys, group, strict=True)
                ):
                    raise ValueError(f"{self.backend}: the saved state does not fit this model")
                groups.append(
                    [jnp.asarray(saved[k], dtype=a.dtype) for k, a in zip(keys, group, strict=True)]
                )
        self.state = (groups[0], groups[1], groups[2])
        if not isinstance(self.opt._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            self.rescale_lr(1.0)  # this job's train.lr into the state's learning-rate slot

    def current_lr(self) -> float | None:
        """The schedule at the step last applied, from the optimizer state's own counter."""
        sched = self.opt._learning_rate
        if not isinstance(sched, keras.optimizers.schedules.LearningRateSchedule):
            return float(np.asarray(self.state[2][self._lr_slot()]))
        _, _, ov = self.state
        at = next(i for i, v in enumerate(self.opt.variables) if v is self.opt.iterations)
        step = int(np.asarray(ov[at]))
        return float(np.asarray(sched(max(step - 1, 0))))

    def evaluate(self) -> dict[str, float]:
        tv, ntv, _ = self.state
        loss_sum = score_sum = 0.0
        m = int(self.x_va.shape[0])
        for i in range(0, m, _EVAL_BATCH):
            xb, yb = self.x_va[i : i + _EVAL_BATCH], self.y_va[i : i + _EVAL_BATCH]
            loss, score = self.p._eval_fn(tv, ntv, xb, yb)
            k = int(xb.shape[0])
            loss_sum += float(loss) * k
            score_sum += (float(score) if self.classify else float(score) ** 2) * k
        if self.classify:
            return {"val/loss": loss_sum / m, "val/acc": score_sum / m}
        return {"val/loss": loss_sum / m, "val/rmse": math.sqrt(score_sum / m)}

    def device(self) -> DeviceInfo:
        kind = core.device_kind()
        name = cpu_name() if kind == "cpu" else str(jax.devices()[0].device_kind)
        threads = 1 if "multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "") else 0
        return DeviceInfo(kind, name, threads or (os.cpu_count() or 1), core.gemm)

    def measure(self) -> dict[str, float]:
        return {"model/params": float(count_params(self.model)), **self.cc.finish(self.cc_key)}

    def tags(self) -> dict[str, str]:
        return {
            "device": str(jax.devices()[0]),
            "loop": "epoch-jax" if self.whole_epoch else "step-jax",
            "loop_rule": self.loop_rule,
            "compiles": str(self.p.compiles() - self.compiles0),
            "program_cache": ProgramCache.status(self.hit),
            "compile_cache": self.cc.close(),
        }

    def trained(self) -> KerasModel:
        """Write the trained state back into the Keras variables: a usable model."""
        tv, ntv, _ = self.state
        for var, value in zip(self.model.trainable_variables, tv, strict=True):
            var.assign(value)
        for var, value in zip(self.model.non_trainable_variables, ntv, strict=True):
            var.assign(value)
        return KerasModel(self.backend, self.model)
