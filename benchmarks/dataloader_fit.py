"""A DataLoader-fed conv net with augmentation: the user's own fit vs protolab's, per framework.

The model and data are ``experiments/port_dataloader_convnet.py``'s (PyTorch's MNIST
``Net`` on 8x8 digits, Adadelta + StepLR, the user's DataLoader with a random shift and
noise). Four contenders, each run a process of its own, one CPU thread, rounds interleaved:

- ``plain-lightning``: ``Trainer(max_epochs, logger=False, enable_checkpointing=False,
  enable_progress_bar=False, enable_model_summary=False).fit(LitNet, loader, val_loader)``;
- ``lightning``: protolab's ``Backend.run`` of ``pl.native(torch=LitNet)`` on
  ``pl.Data(train=loader, val=val_loader)``;
- ``plain-keras``: ``keras_net(...).fit(loader, validation_data=val_loader)`` (Keras'
  defaults: TensorFlow, ``jit_compile="auto"``);
- ``tf-graph``: protolab's ``Backend.run`` of ``pl.native(keras=keras_net)``, same data.

Every contender carries the same recorder callback (a Lightning or Keras callback, added
to the user's in protolab's runs through ``torch_callbacks=`` / ``keras_callbacks=``): it
notes each epoch's start and its training end; train seconds / steps, median over epochs
2.., is ``step_ms``, the same clock everywhere. Final validation accuracy is the model's
own (``val_acc`` / ``val_sparse_categorical_accuracy``). protolab's runs add their
``perf/input_bound_frac``.

    .venv/bin/python benchmarks/dataloader_fit.py --epochs 4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import user_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "port_dataloader_convnet.py"
CONTENDERS = ("plain-lightning", "lightning", "plain-keras", "tf-graph")
PARAMS = {"filters": 16, "dropout": 0.2, "lr": 1.0, "shift": 1, "noise": 0.1}


def _module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("port_dataloader_convnet", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _data(mod: Any) -> Any:
    import protolab as pl

    return mod.digits.call(pl.Space(values=PARAMS))


def _torch_recorder(marks: list[tuple[float, float, int]]) -> Any:
    import lightning.pytorch as L

    class Recorder(L.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.t0, self.n = time.perf_counter(), 0

        def on_train_batch_end(self, *args: Any) -> None:
            self.n += 1

        def on_validation_start(self, trainer: Any, module: Any) -> None:
            if hasattr(self, "t0"):  # not the sanity check before training
                marks.append((self.t0, time.perf_counter(), self.n))

    return Recorder()


def _keras_recorder(marks: list[tuple[float, float, int]]) -> Any:
    import keras

    class Recorder(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0, self.n = time.perf_counter(), 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.n = batch + 1

        def on_test_begin(self, logs: Any = None) -> None:
            marks.append((self.t0, time.perf_counter(), self.n))

    return Recorder()


def plain_trainer(epochs: int, marks: list[tuple[float, float, int]]) -> Any:
    """The Trainer a user writes, minus its outputs, with the shared recorder."""
    import lightning.pytorch as L

    return L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[_torch_recorder(marks)],
    )  # fmt: skip


def _step_ms(marks: list[tuple[float, float, int]]) -> float:
    trained = [m for m in marks if m[2]]  # epochs with steps; the first also traces
    per = [(t1 - t0) / n * 1e3 for t0, t1, n in trained[1:]] or [math.nan]
    return statistics.median(per)


def one(contender: str, seed: int, epochs: int) -> dict[str, Any]:
    """Run one contender in this process; returns its numbers."""
    mod = _module()
    data = _data(mod)
    marks: list[tuple[float, float, int]] = []
    p = PARAMS
    if contender == "plain-lightning":
        import lightning.pytorch as L

        L.seed_everything(seed, verbose=False)
        module = mod.LitNet(p["filters"], p["dropout"], p["lr"])
        trainer = plain_trainer(epochs, marks)
        trainer.fit(module, data.train, data.val)
        acc = float(trainer.callback_metrics["val_acc"])
        return {"step_ms": _step_ms(marks), "val_acc": acc}
    if contender == "plain-keras":
        import keras

        keras.utils.set_random_seed(seed)
        model = mod.keras_net(p["filters"], p["dropout"], p["lr"])
        hist = model.fit(
            data.train, validation_data=data.val, epochs=epochs, verbose=0,
            callbacks=[*mod.step_lr(), _keras_recorder(marks)],
        )  # fmt: skip
        acc = float(hist.history["val_sparse_categorical_accuracy"][-1])
        return {"step_ms": _step_ms(marks), "val_acc": acc}
    return _protolab(mod, contender, seed, epochs, marks)


def _protolab(mod: Any, mode: str, seed: int, epochs: int, marks: list[Any]) -> dict[str, Any]:
    import protolab as pl
    from protolab.backends import Hardware, Job, TrainSettings, get_backend
    from protolab.data import dataset_from_mapping

    p = PARAMS
    ds = dataset_from_mapping("d", _data(mod), where="bench", seed=seed, val_fraction=0.2)
    if mode == "lightning":
        node = pl.native(
            torch=lambda: mod.LitNet(p["filters"], p["dropout"], p["lr"]),
            torch_callbacks=lambda: [_torch_recorder(marks)],
        )
        acc_key = "val_acc"
    else:
        node = pl.native(
            keras=lambda: mod.keras_net(p["filters"], p["dropout"], p["lr"]),
            keras_callbacks=lambda: [*mod.step_lr(), _keras_recorder(marks)],
        )
        acc_key = "val/acc"
    settings = TrainSettings(epochs=epochs, batch_size=64, optimizer="adam", lr=1e-3, seed=seed)
    job = Job(node, ds, settings, Hardware(accelerator="cpu", threads=1))
    m = get_backend(mode).run(job).metrics
    return {
        "step_ms": _step_ms(marks),
        "val_acc": float(m[acc_key]),
        "input_bound_frac": m.get("perf/input_bound_frac"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--one", nargs=2, metavar=("CONTENDER", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.epochs)))
        return 0
    print(table(interleave(__file__, CONTENDERS, args.seeds, args.epochs)))
    return 0


def interleave(
    script: str,
    contenders: tuple[str, ...],
    seeds: list[int],
    epochs: int,
    threads: int | None = 1,
    args: tuple[str, ...] = (),
) -> dict[str, list[dict[str, Any]]]:
    """Each contender of each seed in a process of its own (``script --one``, then
    ``args``), seed by seed: the user's default environment (no protolab settings), with
    ``threads`` OpenMP threads for all (None: the frameworks' own default)."""
    env = user_env(threads)
    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    for seed in seeds:
        for c in contenders:
            cmd = [sys.executable, script, "--epochs", str(epochs), "--one", c, str(seed), *args]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            rows[c].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def table(rows: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: accuracy mean ± sd over seeds, step ms median, protolab / plain ratio."""
    lines = [
        "| contender | val acc (mean ± sd) | step ms | vs plain | input-bound |",
        "|---|---|---|---|---|",
    ]
    for c in CONTENDERS:
        accs = [r["val_acc"] for r in rows[c]]
        step = statistics.median(r["step_ms"] for r in rows[c])
        plain = "plain-lightning" if "lightning" in c else "plain-keras"
        base = statistics.median(r["step_ms"] for r in rows[plain])
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        frac = [r.get("input_bound_frac") for r in rows[c] if r.get("input_bound_frac")]
        bound = f"{statistics.median(frac):.2f}" if frac else "-"
        lines.append(
            f"| {c} | {statistics.mean(accs):.3f} ± {sd:.3f} | {step:.2f} | "
            f"{step / base:.2f}x | {bound} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
