"""The TensorFlow programs: a whole epoch as one ``tf.function``, with or without XLA.

Keras' ``fit()`` returns to Python between steps; on small models that overhead dominates
(~4 ms/step vs ~0.5 ms for the digits MLP). Here one ``tf.function`` runs a whole epoch:
seeded shuffling, batching by index, forward, loss, gradients and the optimizer update,
all inside a ``tf.while_loop`` over device-resident tensors. A second program evaluates.
Keras layers, optimizers and losses stay the building blocks; only the loop is ours.

Two modes share it: ``jit=True`` compiles the programs with XLA (fastest for MLPs: one
fused program), ``jit=False`` runs them as TensorFlow graphs (what Keras users get by
default on CPU, where XLA's convolutions measured 6-10x slower than TF's own kernels).

Compile time is measured on its own: each program first runs with zero steps, which makes
TF trace (and XLA compile) it without training, so ``time/compile_s`` is pure trace +
compile and ``time/step_ms`` comes from whole epochs divided by their steps.

When the training data would not fit comfortably in device memory (or with several
devices, where a strategy distributes batches), a per-step program is used instead; the
tag ``protolab.loop`` records which loop ran.

With the program cache on (a warm process: ``protolab.backends._cache``) the model, its
optimizer and the traced programs are kept per model and shapes: a rerun with another
learning rate (an optimizer variable), seed or epoch count resets the variables and trains
without tracing or compiling anything (tags ``protolab.compiles``, ``protolab.program_cache``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from protolab.backends._base import DeviceInfo, EpochFit, Job, Program, loss_name
from protolab.backends._cache import ProgramCache, cache_size, job_key
from protolab.backends._compile_cache import Probe, tf_flag_set, tf_folder
from protolab.backends._keras_nn import POLICY, count_params
from protolab.backends._keras_optim import keras_loss, keras_optimizer, steps_per_epoch, train_key
from protolab.backends._loops import whole_epoch
from protolab.backends._peak import cpu_name
from protolab.backends._schedule import per_step
from protolab.backends._threads import set_tf_threads
from protolab.backends.tensorflow import core
from protolab.backends.tensorflow.export import KerasModel
from protolab.backends.tensorflow.nn import build

__all__ = ["TFProgram"]

_EVAL_BATCH = 1024
_SEEDS_KEPT = 4  # initial states kept per cached model (one per seed seen)
_STATE_FILE = "state.npz"  # population-based training: weights + optimizer state


def _model_state(model: keras.Model) -> list[tf.Variable]:
    """Every variable a job changes: Keras' own, plus raw ``tf.Variable`` s that layers keep
    outside Keras' tracking (the Philox dropout seed), found by walking the layers."""
    state: list[tf.Variable] = list(model.variables)
    seen: set[int] = set()
    todo = list(model.layers)
    while todo:
        layer = todo.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        for value in vars(layer).values():
            if isinstance(value, tf.Variable):
                state.append(value)
            elif isinstance(value, keras.layers.Layer):
                todo.append(value)
    return state


def _values(variables: list[tf.Variable]) -> list[np.ndarray]:
    return [np.array(v.numpy(), copy=True) for v in variables]


class _Programs:
    """A Keras model, its optimizer and its traced programs: what the program cache keeps.

    ``train_step`` and the programs close over this object, so a cached entry serves any
    later job with the same key once :meth:`reset` has put its variables back.
    """

    def __init__(
        self,
        job: Job,
        jit: bool,
        strategy: tf.distribute.Strategy,
        steps: int,
        batch: int,
        tail: int,
    ) -> None:
        ds, hw = job.dataset, job.hardware
        self.jit, self.precision, self.strategy = jit, hw.precision, strategy
        self.replicas = strategy.num_replicas_in_sync
        self.classify = ds.task == "classification"
        self.n, self.steps, self.batch, self.tail = len(ds.x_train), steps, batch, tail
        self.scheduled = per_step(job.train.schedule)  # a table: the rate is not a variable
        self.arch, self.shape, self.dtype = job.arch, ds.input_shape, ds.input_dtype
        with strategy.scope():
            self.model = build(job.arch, ds.input_shape, ds.input_dtype)
            opt = keras_optimizer(job, steps + (1 if tail else 0))
            if hw.precision == "16":
                opt = keras.optimizers.LossScaleOptimizer(opt)
            opt.build(self.model.trainable_variables)
            self.opt = opt
        self.loss_fn = keras_loss(job)
        # Keras' own losses already divide by the replicas inside a strategy's replica
        # context (``scale_loss_for_distribution``); a script's custom loss does not.
        custom = loss_name(job.train, ds.task) == "custom"
        self.share = 1.0 / self.replicas if custom else 1.0
        self._make_programs()
        self._inits: dict[int, list[np.ndarray]] = {}
        self._opt_init: list[np.ndarray] = []
        if cache_size() > 0:  # kept for later jobs: remember the state training starts from
            self._inits[job.train.seed] = _values(_model_state(self.model))
            self._opt_init = _values(self.opt.variables)

    def reset(self, seed: int, lr: float) -> None:
        """The state a fresh build with ``seed`` starts from, and learning rate ``lr``.

        Another seed draws its initial values from a throwaway build of the same model
        (the caller has seeded Keras): new values in the same variables, no retrace.
        """
        if seed not in self._inits:
            with self.strategy.scope():
                fresh = build(self.arch, self.shape, self.dtype)
            kept = list(self._inits.items())[1 - _SEEDS_KEPT :]
            self._inits = {**dict(kept), seed: _values(_model_state(fresh))}
        for v, value in zip(_model_state(self.model), self._inits[seed], strict=True):
            v.assign(value)
        for v, value in zip(self.opt.variables, self._opt_init, strict=True):
            v.assign(value)
        if not self.scheduled:  # a schedule's table is part of the key: nothing to set
            self.opt.learning_rate = lr

    def traces(self) -> int:
        """Programs traced (and, with XLA, compiled) so far: the compile counter."""
        fns = (self.train_epoch, self.one_device_step, self.replicated_step, self.eval_program)
        return sum(int(f.experimental_get_tracing_count()) for f in fns)

    def train_step(self, xb: tf.Tensor, yb: tf.Tensor, share: float = 1.0) -> tf.Tensor:
        """Forward, loss, gradients, update: the one step every program below repeats.

        Under a strategy, gradients are summed across replicas, so each replica's loss is
        weighted by 1 / replicas (Keras' losses do it themselves, ``share`` does it for a
        custom one) to make the sum the global-batch mean.
        """
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            out = tf.cast(self.model(xb, training=True), tf.float32)
            loss = self.loss_fn(out, yb) * share
            scaled = self.opt.scale_loss(loss) if self.precision == "16" else loss
        grads = tape.gradient(scaled, variables)
        self.opt.apply(grads, variables)
        return loss

    def _make_programs(self) -> None:
        """Wrap ``train_step`` into the epoch, step and evaluation programs (Keras'
        ``make_train_function``): XLA-compiled when ``jit``, TF graphs otherwise."""
        jit, steps, batch, n, tail = self.jit, self.steps, self.batch, self.n, self.tail

        @tf.function(jit_compile=jit)
        def train_epoch(
            x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor, n_steps: tf.Tensor
        ) -> tf.Tensor:
            """``n_steps`` steps (the tail counted; fewer at train.max_steps' end; 0: trace
            only), their mean loss."""
            # Seeded shuffle inside the program: argsort of stateless uniforms.
            perm = tf.argsort(tf.random.stateless_uniform([n], seed=seed))
            idx = tf.reshape(perm[: steps * batch], [steps, batch])

            def body(i: tf.Tensor, total: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                take = idx[i]
                return i + 1, total + self.train_step(tf.gather(x, take), tf.gather(y, take))

            full = tf.minimum(n_steps, steps)
            _, total = tf.while_loop(
                lambda i, _: i < full, body, (tf.constant(0), tf.constant(0.0))
            )
            if tail:

                def last() -> tf.Tensor:  # the ragged tail: one more step of its own shape
                    take = perm[steps * batch : steps * batch + tail]
                    return total + self.train_step(tf.gather(x, take), tf.gather(y, take))

                total = tf.cond(n_steps > steps, last, lambda: total)
            return total / tf.cast(tf.maximum(n_steps, 1), tf.float32)

        @tf.function(jit_compile=jit)
        def one_device_step(xb: tf.Tensor, yb: tf.Tensor) -> tf.Tensor:
            return self.train_step(xb, yb)

        @tf.function  # XLA compiles each replica's step; the strategy adds the all-reduce
        def replicated_step(
            xs: tf.distribute.DistributedValues, ys: tf.distribute.DistributedValues
        ) -> tf.Tensor:
            per_replica = self.strategy.run(self.train_step, args=(xs, ys, self.share))
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        @tf.function(jit_compile=jit)
        def evaluate(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            out = tf.cast(self.model(x, training=False), tf.float32)
            loss = self.loss_fn(out, y)
            if self.classify:
                hits = tf.cast(tf.argmax(out, -1, output_type=y.dtype) == y, tf.float32)
                return loss, tf.reduce_mean(hits)
            return loss, tf.sqrt(tf.reduce_mean(tf.square(out - tf.cast(y, tf.float32))))

        self.train_epoch, self.eval_program = train_epoch, evaluate
        self.one_device_step, self.replicated_step = one_device_step, replicated_step

    def step_program(self, xb: tf.Tensor, yb: tf.Tensor) -> tf.Tensor:
        if self.replicas == 1:
            return self.one_device_step(xb, yb)
        r = self.replicas
        split = self.strategy.experimental_distribute_values_from_function
        xs = split(lambda ctx: tf.split(xb, r)[ctx.replica_id_in_sync_group])
        ys = split(lambda ctx: tf.split(yb, r)[ctx.replica_id_in_sync_group])
        return self.replicated_step(xs, ys)


_CACHE: ProgramCache[_Programs] = ProgramCache()


class TFProgram(Program):
    """A Keras model on TensorFlow with its whole-epoch (or per-step) programs."""

    def __init__(self, backend: str, job: Job, jit: bool) -> None:
        core.configure()
        set_tf_threads(tf, job.hardware.threads)  # before the first TF op, or too late
        ds, tr, hw = job.dataset, job.train, job.hardware
        self.backend, self.jit, self.precision = backend, jit, hw.precision
        strategy, self.kind = core.strategy(hw.accelerator, hw.devices)
        keras.utils.set_random_seed(tr.seed)
        keras.mixed_precision.set_global_policy(POLICY[hw.precision])
        self.classify = ds.task == "classification"
        self.n, self.seed, self.lr = len(ds.x_train), tr.seed, tr.lr
        self.replicas = strategy.num_replicas_in_sync
        batch = min(tr.batch_size, self.n)
        self.batch = max(batch // self.replicas, 1) * self.replicas  # equal replica slices
        # drop_last (default): one static shape; else the tail is one more, smaller step
        # (a multiple of the replicas, so it splits evenly across them)
        self.full, tail = steps_per_epoch(job, self.batch)
        self.tail = tail // self.replicas * self.replicas
        self.steps = self.full + (1 if self.tail else 0)
        self._place_data(job)
        # XLA's persistent cache, when the CLI put its folder in TF_XLA_FLAGS before TF
        # started (_compile_cache.configure); TF graphs (no XLA) have no persistent cache
        self.cc_key = job_key(backend, job, jit, self.whole_epoch)
        self.cc = Probe(tf_folder() if jit and tf_flag_set() else None, key=self.cc_key)
        key = job_key(
            backend, job, jit, self.whole_epoch, self.replicas, self.kind, train_key(job, self.tail)
        )
        cached = _CACHE.get(key)
        self.hit = cached is not None
        if cached is None:
            cached = _Programs(job, jit, strategy, self.full, self.batch, self.tail)
            _CACHE.put(key, cached)
        else:
            cached.reset(tr.seed, tr.lr)
        self.p, self.model = cached, cached.model
        self.traces0 = cached.traces() if self.hit else 0
        self.gen = tf.random.Generator.from_seed(tr.seed)

    def _place_data(self, job: Job) -> None:
        """The arrays as device-resident tensors, and which loop they allow."""
        ds = job.dataset
        y_train = ds.y_train if self.classify else ds.y_train.reshape(len(ds.y_train), -1)
        y_val = ds.y_val if self.classify else ds.y_val.reshape(len(ds.y_val), -1)
        fits = self.replicas == 1 and core.fits_on_device(
            self.kind, ds.x_train.nbytes + y_train.nbytes
        )
        # the convolution rule is XLA's (_loops.py); a TF graph keeps its whole epoch
        self.whole_epoch, self.loop_rule = whole_epoch(
            job.arch, self.jit and self.kind == "CPU", fits
        )
        self.dev = "/cpu:0" if self.kind == "CPU" else f"/{self.kind.lower()}:0"
        with tf.device(self.dev):
            self.x_tr, self.y_tr = tf.constant(ds.x_train), tf.constant(y_train)
            self.x_va, self.y_va = tf.constant(ds.x_val), tf.constant(y_val)

    def compile(self) -> None:
        """Trace/compile both programs without training (zero steps / an undone step).

        A cached entry's programs are traced for these shapes already: nothing to do.
        """
        if self.hit:
            return
        t0, p = time.perf_counter(), self.p
        if self.whole_epoch:
            p.train_epoch(self.x_tr, self.y_tr, tf.constant([self.seed, 0]), tf.constant(0))
        else:
            saved = [(v, tf.identity(v)) for v in p.model.variables + p.opt.variables]
            p.step_program(self.x_tr[: self.batch], self.y_tr[: self.batch]).numpy()
            for v, value in saved:  # undo the probe step: training starts from init
                v.assign(value)
        p.eval_program(self.x_va[:_EVAL_BATCH], self.y_va[:_EVAL_BATCH])[0].numpy()
        self.cc.after_compile(time.perf_counter() - t0, [])

    def fit_epoch(self, epoch: int) -> EpochFit:
        return self.fit_steps(epoch, self.steps)

    def fit_steps(self, epoch: int, steps: int) -> EpochFit:
        """``steps`` steps of an epoch (all but at train.max_steps' end). Steady state starts
        at epoch 2: a compiled program's first run also pays one-off work (runtime set-up,
        buffer allocation: ~40 ms on the digits MLP, 2-3x a whole epoch), as the eager first
        step does; first_step_s carries it."""
        t0 = time.perf_counter()
        if self.whole_epoch:
            seed = tf.constant([self.seed, epoch])
            loss = float(self.p.train_epoch(self.x_tr, self.y_tr, seed, tf.constant(steps)))
        else:
            perm = tf.argsort(self.gen.uniform([self.n]))
            total = tf.constant(0.0)
            for i in range(steps):
                end = (i + 1) * self.batch if i < self.full else self.full * self.batch + self.tail
                take = perm[i * self.batch : end]
                xb, yb = tf.gather(self.x_tr, take), tf.gather(self.y_tr, take)
                total += self.p.step_program(xb, yb)
            loss = float(total) / steps
        per_step_s = (time.perf_counter() - t0) / steps
        return EpochFit(loss=loss, step_s=[per_step_s] if epoch > 1 else [], steps=steps)

    def rescale_lr(self, scale: float) -> None:
        """Assign ``train.lr * scale`` to the optimizer's learning-rate variable: the traced
        programs read the variable, so nothing retraces (reduce_on_plateau)."""
        self.p.opt.learning_rate = self.lr * scale

    def snapshot(self) -> list[tf.Tensor]:
        """Copies of the model's variables, trainable and not, on their device."""
        return [tf.identity(v) for v in self.model.variables]

    def restore(self, snapshot: object) -> None:
        assert isinstance(snapshot, list)
        for v, value in zip(self.model.variables, snapshot, strict=True):
            v.assign(value)

    def save_state(self, directory: Path) -> None:
        """The model's variables and the optimizer's (moments, iteration count) as arrays
        in ``state.npz``: ``np.load(allow_pickle=False)`` reads it without running code."""
        arrays = {f"m{i}": v.numpy() for i, v in enumerate(self.model.variables)}
        arrays.update({f"o{i}": v.numpy() for i, v in enumerate(self.p.opt.variables)})
        np.savez(directory / _STATE_FILE, **arrays)

    def load_state(self, directory: Path) -> None:
        """Assign the saved arrays to the same variables (same Arch, same order); the
        learning rate is this job's own, not the saved one."""
        path = directory / _STATE_FILE
        if not path.is_file():
            raise ValueError(f"{self.backend}: no Keras state ({_STATE_FILE}) in {directory}")
        with np.load(path, allow_pickle=False) as saved:
            for prefix, variables in (("m", self.model.variables), ("o", self.p.opt.variables)):
                for i, v in enumerate(variables):
                    key = f"{prefix}{i}"
                    value = saved[key] if key in saved.files else None
                    if value is None or tuple(value.shape) != tuple(v.shape):
                        raise ValueError(f"{self.backend}: the saved state does not fit {v.name}")
                    v.assign(value)
        if not self.p.scheduled:
            self.p.opt.learning_rate = self.lr

    def current_lr(self) -> float | None:
        """The schedule at the step the optimizer last applied (its iteration counter - 1)."""
        opt = getattr(self.p.opt, "inner_optimizer", self.p.opt)
        sched = opt._learning_rate
        if isinstance(sched, keras.optimizers.schedules.LearningRateSchedule):
            return float(sched(max(int(opt.iterations.numpy()) - 1, 0)))
        return float(opt.learning_rate.numpy())

    def evaluate(self) -> dict[str, float]:
        loss_sum = score_sum = 0.0
        m = int(self.x_va.shape[0])
        for i in range(0, m, _EVAL_BATCH):
            xb, yb = self.x_va[i : i + _EVAL_BATCH], self.y_va[i : i + _EVAL_BATCH]
            loss, score = self.p.eval_program(xb, yb)
            k = int(xb.shape[0])
            loss_sum += float(loss) * k
            score_sum += (float(score) if self.classify else float(score) ** 2) * k
        if self.classify:
            return {"val/loss": loss_sum / m, "val/acc": score_sum / m}
        return {"val/loss": loss_sum / m, "val/rmse": math.sqrt(score_sum / m)}

    def device(self) -> DeviceInfo:
        if self.kind == "GPU":
            return DeviceInfo("cuda", core.gpu_name(), 0, core.gemm)
        threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
        return DeviceInfo(self.kind.lower(), cpu_name(), threads, core.gemm)

    def measure(self) -> dict[str, float]:
        return {
            "memory/peak_device_mb": core.peak_device_mb(self.kind),
            "model/params": float(count_params(self.model)),
            **self.cc.finish(self.cc_key),
        }

    def tags(self) -> dict[str, str]:
        kind = "xla" if self.jit else "graph"
        tags = {
            "device": self.dev,
            "loop": f"epoch-{kind}" if self.whole_epoch else f"step-{kind}",
            "loop_rule": self.loop_rule,
            "tf_intra_threads": str(tf.config.threading.get_intra_op_parallelism_threads()),
            "compiles": str(self.p.traces() - self.traces0),
            "program_cache": ProgramCache.status(self.hit),
            "compile_cache": self.cc.close(),
        }
        if self.replicas > 1:
            tags["strategy"] = type(self.p.strategy).__name__
            tags["devices"] = str(self.replicas)
            tags["batch_per_device"] = str(self.batch // self.replicas)
        return tags

    def trained(self) -> KerasModel:
        return KerasModel(self.backend, self.model)
