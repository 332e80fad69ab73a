"""A compiled keras.Model through protolab vs the same model's plain ``model.fit``.

The model, compile and callbacks are ``experiments/port_keras_timeseries.py``'s (Keras'
"Timeseries classification from scratch"), on that script's data as protolab splits it.
Every run is a process of its own (``--one`` below), rounds interleave the contenders:

- ``plain-graph`` / ``plain-xla``: ``model.fit(x, y, batch_size, epochs, validation_data,
  callbacks=[the original's three, Recorder])`` with ``jit_compile`` False / True;
- ``tf-graph`` / ``keras``: protolab's ``Backend.run`` of ``pl.native(keras=...,
  keras_callbacks=...)`` with the same callbacks and the same Recorder.

``Recorder`` (in both) notes when each epoch starts and when its training ends
(``on_test_begin``): train seconds / steps, median over epochs 2.., is each run's
``fit_step_ms`` (the same clock in both, so the ratio is what protolab adds to the user's
fit). protolab's own ``time/step_ms`` (median of batch-end intervals) is printed beside it.

    .venv/bin/python benchmarks/native_fit.py --epochs 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "port_keras_timeseries.py"
CONTENDERS = ("plain-graph", "tf-graph", "plain-xla", "keras")
PAIRS = (("tf-graph", "plain-graph"), ("keras", "plain-xla"))


def _recorder() -> Any:
    import keras

    class Recorder(keras.callbacks.Callback):
        """Epoch start and training end: the clock both contenders share."""

        def __init__(self) -> None:
            super().__init__()
            self.starts: list[float] = []
            self.trained: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.starts.append(time.perf_counter())

        def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
            if len(self.trained) < len(self.starts):
                self.trained.append(time.perf_counter())

    return Recorder()


def _one(name: str, epochs: int, threads: int | None, seed: int) -> dict[str, Any]:
    """One contender's run, in this process: its per-epoch train time per step."""
    import importlib.util

    import numpy as np
    import tensorflow as tf

    from protolab.data import load_dataset

    if threads:  # before TF's first op, in every contender: protolab's builder probe runs
        # TF ops before its own hardware.threads could apply (a native model's first build)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)

    spec = importlib.util.spec_from_file_location("port_keras_timeseries", SCRIPT)
    assert spec is not None and spec.loader is not None
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    ds = load_dataset(str(SCRIPT.parent / exp.DATA), seed=0)
    rec = _recorder()
    out: dict[str, Any] = {"name": name}
    if name.startswith("plain"):
        import keras

        keras.utils.set_random_seed(seed)
        model = exp.compiled_model(ds.input_shape)
        out["auto_jit_compile"] = bool(model.jit_compile)
        model.jit_compile = name == "plain-xla"
        t0 = time.perf_counter()
        hist = model.fit(
            ds.x_train,
            ds.y_train,
            batch_size=32,
            epochs=epochs,
            validation_data=(ds.x_val, ds.y_val),
            callbacks=[*exp.callbacks(), rec],
            verbose=0,
        )
        out["wall_s"] = time.perf_counter() - t0
        out["val_acc"] = float(hist.history["val_sparse_categorical_accuracy"][-1])
        out["intra_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
    else:
        import protolab as pl
        from protolab.backends import Hardware, Job, TrainSettings, get_backend

        arch = pl.native(keras=exp.compiled_model, keras_callbacks=lambda: [*exp.callbacks(), rec])
        settings = TrainSettings(epochs=epochs, batch_size=32, optimizer="adam", lr=1e-3, seed=seed)
        t0 = time.perf_counter()
        res = get_backend(name).run(Job(arch, ds, settings, Hardware(threads=threads)))
        out["wall_s"] = time.perf_counter() - t0
        out["val_acc"] = res.metrics["val/acc"]
        out["protolab_step_ms"] = res.metrics["time/step_ms"]
        out["intra_threads"] = int(res.tags["tf_intra_threads"])
        out["loop"] = res.tags["loop"]
    steps = int(np.ceil(ds.n_train / 32))
    per_step = [(t - s) / steps * 1000 for s, t in zip(rec.starts, rec.trained, strict=False)]
    out["epoch_step_ms"] = per_step
    out["fit_step_ms"] = statistics.median(per_step[1:]) if len(per_step) > 1 else per_step[0]
    return out


def _spawn(name: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        name,
        "--epochs",
        str(args.epochs),
        "--seed",
        str(seed),
    ] + (["--threads", str(args.threads)] if args.threads else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    with tempfile.TemporaryDirectory() as cwd:  # ModelCheckpoint writes best_model.keras here
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    line = proc.stdout.strip().splitlines()[-1]
    return dict(json.loads(line))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.epochs, args.threads, args.seed)))
        return
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for name in CONTENDERS:
            run = _spawn(name, args, seed=r)
            run["round"] = r
            runs.append(run)
            print(
                f"round {r} {name:12s} fit_step_ms {run['fit_step_ms']:7.2f}  "
                f"protolab time/step_ms {run.get('protolab_step_ms', float('nan')):7.2f}  "
                f"val_acc {run['val_acc']:.3f}  threads {run['intra_threads']}",
                flush=True,
            )
    med = {
        n: statistics.median(x["fit_step_ms"] for x in runs if x["name"] == n) for n in CONTENDERS
    }
    summary = {}
    for mode, base in PAIRS:
        own = statistics.median(x["protolab_step_ms"] for x in runs if x["name"] == mode)
        ratios = [
            a["fit_step_ms"] / b["fit_step_ms"]
            for a in runs
            for b in runs
            if a["name"] == mode and b["name"] == base and a["round"] == b["round"]
        ]
        summary[mode] = {
            "fit_step_ms": med[mode],
            "plain_fit_step_ms": med[base],
            "ratio_median_paired": statistics.median(ratios),
            "protolab_time_step_ms": own,
        }
        print(
            f"{mode:9s} {med[mode]:7.2f} ms/step vs plain fit {med[base]:7.2f} "
            f"(paired ratio {statistics.median(ratios):.3f}); protolab time/step_ms {own:.2f}"
        )
    out = args.out or ROOT / "benchmarks" / "results" / f"native-fit-{int(time.time())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"args": vars(args) | {"out": str(out)}, "runs": runs, "summary": summary}, indent=1
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
