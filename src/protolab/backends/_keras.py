"""The static backend: the Arch as a Keras 3 model, trained by an XLA-compiled loop.

Keras' ``fit()`` compiles one step at a time and returns to Python between steps; on small
models that overhead dominates (~4 ms/step vs ~0.5 ms for the digits MLP). Here one
``tf.function(jit_compile=True)`` runs a whole epoch: seeded shuffling, batching by index,
forward, loss, gradients and the optimizer update, all inside a ``tf.while_loop`` over
device-resident tensors. A second program evaluates. Keras layers, optimizers and losses
stay the building blocks; only the loop is ours.

Compile time is measured on its own: each program is first run with zero steps, which
makes XLA compile it without training, so ``time/compile_s`` is pure trace + compile and
``time/step_ms`` comes from whole epochs divided by their steps (the compiled loop hides
single steps; timing inside it would distort it).

When the training data would not fit comfortably in device memory (or with several
devices, where a strategy distributes batches), a per-step compiled loop is used instead;
the tag ``protolab.loop`` records which loop ran.
"""

from __future__ import annotations

import contextlib
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
from protolab.backends._timing import TrialClock, import_timed, preload
from protolab.errors import NonFiniteLossError

__all__ = ["KerasBackend"]

_POLICY = {"32": "float32", "bf16": "mixed_bfloat16", "16": "mixed_float16"}
_EVAL_BATCH = 1024
_DEVICE_FRACTION = 0.25  # whole-epoch loop only when the data uses < 25 % of device memory


def _optimizer(name: str, lr: float, wd: float) -> Any:
    import keras

    o = keras.optimizers
    # Weight decay is decoupled on every Keras 3 optimizer; the torch side matches it.
    wd_arg = {"weight_decay": wd} if wd else {}
    if name in ("adam", "adamw"):
        return o.AdamW(learning_rate=lr, epsilon=1e-7, weight_decay=wd)
    if name == "sgd":
        return o.SGD(learning_rate=lr, momentum=0.9, **wd_arg)
    if name == "rmsprop":
        return o.RMSprop(learning_rate=lr, rho=0.9, epsilon=1e-7, **wd_arg)
    raise ValueError(f"unknown optimizer {name!r}")


def _strategy(tf: Any, accelerator: str, devices: int) -> tuple[Any, str]:
    """A tf.distribute strategy for the hardware config, and the device it runs on."""
    gpus = tf.config.list_logical_devices("GPU")
    if accelerator == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver), "TPU"
    if accelerator in ("gpu", "auto") and gpus:
        if devices > 1:
            if len(gpus) < devices:
                raise RuntimeError(f"hardware.devices={devices}, but {len(gpus)} GPUs are visible")
            return tf.distribute.MirroredStrategy([g.name for g in gpus[:devices]]), "GPU"
        return tf.distribute.OneDeviceStrategy(gpus[0].name), "GPU"
    if accelerator == "gpu":
        raise RuntimeError("hardware.accelerator='gpu', but TensorFlow sees no GPU")
    return tf.distribute.OneDeviceStrategy("/cpu:0"), "CPU"


def _fits_on_device(tf: Any, kind: str, nbytes: int) -> bool:
    if kind == "CPU":
        return True
    try:
        info = tf.config.experimental.get_memory_info(f"{kind}:0")
        total = info.get("limit") or info.get("peak") or 0
    except (ValueError, RuntimeError):
        return True
    return not total or nbytes < _DEVICE_FRACTION * total


class KerasBackend(Backend):
    name = "keras"
    family = "static"

    def __init__(self) -> None:
        self._configured = False

    def _configure(self, tf: Any) -> None:
        """Once per process: GPU memory growth (so TF leaves memory to torch), quiet logs.

        Every trial builds new programs on purpose (a new architecture each time), so TF's
        "retracing" warnings are noise here.
        """
        if self._configured:
            return
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "0":
            tf.get_logger().setLevel("ERROR")
        for gpu in tf.config.list_physical_devices("GPU"):
            with contextlib.suppress(RuntimeError):  # already initialised: too late, harmless
                tf.config.experimental.set_memory_growth(gpu, True)
        self._configured = True

    def release(self) -> None:
        """Drop Keras' global graph state so 100 trials do not grow memory.

        A trial's compiled programs are closures over its model; they form reference
        cycles, so the collector runs before the session is cleared.
        """
        import gc

        import keras

        gc.collect()
        keras.backend.clear_session(free_memory=True)
        keras.mixed_precision.set_global_policy("float32")

    def load(self) -> None:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        preload("tensorflow", "keras")

    def run(self, job: Job, on_epoch: EpochHook | None = None) -> JobResult:
        clock = TrialClock()
        self.load()
        clock.import_s, cold = import_timed("tensorflow", "keras")
        import keras
        import tensorflow as tf

        from protolab.backends._keras_build import build_keras, count_params
        from protolab.backends._threads import set_tf_threads

        self._configure(tf)
        set_tf_threads(tf, job.hardware.threads)  # before the first TF op, or too late
        ds, tr, hw = job.dataset, job.train, job.hardware
        info = job.arch.infer(ds.input_shape, ds.input_dtype)
        check_output(info.output_shape, ds.output_shape, ds.name)
        strategy, kind = _strategy(tf, hw.accelerator, hw.devices)
        keras.utils.set_random_seed(tr.seed)
        keras.mixed_precision.set_global_policy(_POLICY[hw.precision])

        classify = ds.task == "classification"
        y_train = ds.y_train if classify else ds.y_train.reshape(len(ds.y_train), -1)
        y_val = ds.y_val if classify else ds.y_val.reshape(len(ds.y_val), -1)
        n = len(ds.x_train)
        replicas = strategy.num_replicas_in_sync
        batch = min(tr.batch_size, n)
        batch = max(batch // replicas, 1) * replicas  # an equal slice for every replica
        steps = n // batch  # drop the ragged last batch: one static shape per step
        whole_epoch = strategy.num_replicas_in_sync == 1 and _fits_on_device(
            tf, kind, ds.x_train.nbytes + y_train.nbytes
        )
        if os.environ.get("PROTOLAB_KERAS_LOOP") in ("step", "epoch"):  # tests, benchmarks
            whole_epoch = os.environ["PROTOLAB_KERAS_LOOP"] == "epoch"

        t_build = time.perf_counter()
        with strategy.scope():
            model = build_keras(job.arch, ds.input_shape, ds.input_dtype)
            opt = _optimizer(tr.optimizer, tr.lr, tr.weight_decay)
            if hw.precision == "16":
                opt = keras.optimizers.LossScaleOptimizer(opt)
            opt.build(model.trainable_variables)
        if classify:
            loss_obj = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        else:
            loss_obj = keras.losses.MeanSquaredError()
        clock.build_s = time.perf_counter() - t_build

        device = "/cpu:0" if kind == "CPU" else f"/{kind.lower()}:0"
        with tf.device(device):
            x_tr, y_tr = tf.constant(ds.x_train), tf.constant(y_train)
            x_va, y_va = tf.constant(ds.x_val), tf.constant(y_val)
        variables = model.trainable_variables

        def train_step(xb: Any, yb: Any, share: float = 1.0) -> Any:
            # ``share`` = 1 / replicas: gradients are summed across replicas, so each
            # replica's loss is weighted to make the sum the global-batch mean.
            with tf.GradientTape() as tape:
                out = tf.cast(model(xb, training=True), tf.float32)
                loss = loss_obj(yb, out) * share
                scaled = opt.scale_loss(loss) if hw.precision == "16" else loss
            grads = tape.gradient(scaled, variables)
            opt.apply(grads, variables)
            return loss

        @tf.function(jit_compile=True)
        def train_epoch(x: Any, y: Any, seed: Any, n_steps: Any) -> Any:
            # Seeded shuffle inside the program: argsort of stateless uniforms.
            perm = tf.argsort(tf.random.stateless_uniform([n], seed=seed))
            idx = tf.reshape(perm[: steps * batch], [steps, batch])

            def body(i: Any, total: Any) -> Any:
                take = idx[i]
                return i + 1, total + train_step(tf.gather(x, take), tf.gather(y, take))

            _, total = tf.while_loop(
                lambda i, _: i < n_steps, body, (tf.constant(0), tf.constant(0.0))
            )
            return total / tf.cast(tf.maximum(n_steps, 1), tf.float32)

        @tf.function(jit_compile=True)
        def one_device_step(xb: Any, yb: Any) -> Any:
            return train_step(xb, yb)

        @tf.function  # XLA compiles each replica's step; the strategy adds the all-reduce
        def replicated_step(xs: Any, ys: Any) -> Any:
            per_replica = strategy.run(train_step, args=(xs, ys, 1.0 / replicas))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        def split(t: Any) -> Any:
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.split(t, replicas)[ctx.replica_id_in_sync_group]
            )

        def step_program(xb: Any, yb: Any) -> Any:
            if replicas == 1:
                return one_device_step(xb, yb)
            return replicated_step(split(xb), split(yb))

        @tf.function(jit_compile=True)
        def evaluate(x: Any, y: Any) -> Any:
            out = tf.cast(model(x, training=False), tf.float32)
            loss = loss_obj(y, out)
            if classify:
                hits = tf.cast(tf.argmax(out, -1, output_type=y.dtype) == y, tf.float32)
                return loss, tf.reduce_mean(hits)
            return loss, tf.sqrt(tf.reduce_mean(tf.square(out - tf.cast(y, tf.float32))))

        def run_eval() -> dict[str, float]:
            loss_sum = score_sum = 0.0
            m = len(ds.x_val)
            for i in range(0, m, _EVAL_BATCH):
                xb, yb = x_va[i : i + _EVAL_BATCH], y_va[i : i + _EVAL_BATCH]
                loss, score = evaluate(xb, yb)
                k = int(xb.shape[0])
                loss_sum += float(loss) * k
                score_sum += (float(score) if classify else float(score) ** 2) * k
            metrics = {"val/loss": loss_sum / m}
            if classify:
                metrics["val/acc"] = score_sum / m
            else:
                metrics["val/rmse"] = math.sqrt(score_sum / m)
            return metrics

        # Compile both programs without training (zero steps / no update): pure compile time.
        t_compile = time.perf_counter()
        zero = tf.constant(0)
        if whole_epoch:
            train_epoch(x_tr, y_tr, tf.constant([tr.seed, 0]), zero).numpy()
        else:
            compile_probe = [(v, tf.identity(v)) for v in model.variables + opt.variables]
            step_program(x_tr[:batch], y_tr[:batch]).numpy()
            for v, saved in compile_probe:  # undo the probe step: training starts from init
                v.assign(saved)
        evaluate(x_va[:_EVAL_BATCH], y_va[:_EVAL_BATCH])[0].numpy()
        clock.compile_s = time.perf_counter() - t_compile

        result = JobResult()
        gen = tf.random.Generator.from_seed(tr.seed)
        epoch_step_s: list[float] = []  # per epoch: its wall time / its steps
        for epoch in range(1, tr.epochs + 1):
            t_epoch = time.perf_counter()
            if whole_epoch:
                seed = tf.constant([tr.seed, epoch])
                train_loss = float(train_epoch(x_tr, y_tr, seed, tf.constant(steps)))
            else:
                perm = tf.argsort(gen.uniform([n]))
                total = tf.constant(0.0)
                for i in range(steps):
                    take = perm[i * batch : (i + 1) * batch]
                    total += step_program(tf.gather(x_tr, take), tf.gather(y_tr, take))
                train_loss = float(total) / steps
            t_trained = time.perf_counter()
            epoch_step_s.append((t_trained - t_epoch) / steps)
            if epoch == 1:  # the compiled loop hides single steps: one epoch-average step
                clock.first_step_s = t_epoch - clock.start + epoch_step_s[0]
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(f"training loss is {train_loss} at epoch {epoch}")
            metrics = {"train/loss": train_loss, **run_eval()}
            clock.end_epoch(epoch, metrics, t_epoch, t_trained, result.history, on_epoch)

        # Steady state starts at epoch 2: the first run of a compiled program also pays
        # one-off work (XLA runtime set-up, buffer allocation: ~40 ms on the digits MLP,
        # 2-3x a whole epoch), as the dynamic backend's first step does; first_step_s has it.
        clock.step_s = epoch_step_s[1:] or epoch_step_s
        final = result.history[-1]
        result.metrics = {
            **{k: v for k, v in final.items() if not k.startswith("time/")},
            **clock.metrics(batch),
            "memory/peak_device_mb": _peak_device_mb(tf, kind),
            "model/params": float(count_params(model)),
            "model/flops_per_sample": float(info.flops_per_sample),
        }
        if kind in ("CPU", "GPU"):
            threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
            name = cpu_name() if kind == "CPU" else _gpu_name(tf)
            result.metrics.update(
                perf_metrics(
                    info.flops_per_sample,
                    result.metrics["throughput/samples_per_s"],
                    "cpu" if kind == "CPU" else "cuda",
                    name,
                    hw.precision,
                    threads if kind == "CPU" else 0,
                )
            )
        result.tags = {
            "cold_start": str(cold).lower(),
            "device": device,
            "loop": "epoch-xla" if whole_epoch else "step-xla",
            "tf_intra_threads": str(tf.config.threading.get_intra_op_parallelism_threads()),
        }
        return result


def _gpu_name(tf: Any) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return str(details.get("device_name", "GPU"))


def _peak_device_mb(tf: Any, kind: str) -> float:
    if kind == "CPU":
        return 0.0
    try:
        return float(tf.config.experimental.get_memory_info(f"{kind}:0")["peak"]) / 2**20
    except (ValueError, RuntimeError, KeyError):
        return 0.0
