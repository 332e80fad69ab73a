"""Several inputs and outputs: the user's own fit vs protolab's, per framework.

The model and data are ``experiments/port_keras_multi_io.py``'s (Keras' Functional API
guide ticket ranker: title, body and tags in; priority and department out; and its
LightningModule twin). Four contenders, each a process of its own, one CPU thread, rounds
interleaved; every one trains on the same rows (protolab's seeded split of the example's
arrays, taken once per seed):

- ``plain-keras``: ``ranker(...).fit(x_dict, y_dict, validation_data=...)``, Keras'
  defaults (TensorFlow, ``jit_compile="auto"``);
- ``tf-graph``: protolab's ``Backend.run`` of ``pl.native(keras=ranker)``;
- ``plain-lightning``: ``Trainer(...).fit(LitRanker, loader, val_loader)`` over DataLoaders
  of the same dicts;
- ``lightning``: protolab's ``Backend.run`` of ``pl.native(torch=LitRanker)``.

The same recorder callback as ``dataloader_fit.py`` gives ``step_ms`` (median over epochs
2..); the final ``val_department_accuracy`` is the model's own metric.

    .venv/bin/python benchmarks/multi_io_fit.py --epochs 6 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataloader_fit import (
    _keras_recorder,
    _step_ms,
    _torch_recorder,
    interleave,
    plain_trainer,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "port_keras_multi_io.py"
CONTENDERS = ("plain-keras", "tf-graph", "plain-lightning", "lightning")
UNITS = {"title_units": 24, "body_units": 16, "lr": 1e-3}
METRIC = "val_department_accuracy"


def _module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("port_keras_multi_io", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dataset(mod: Any, seed: int) -> Any:
    from protolab.data import dataset_from_mapping

    return dataset_from_mapping("t", mod.tickets.call(None), where="b", seed=seed, val_fraction=0.2)


def _loader(x: dict, y: dict, batch: int, shuffle: bool) -> Any:
    import torch
    from torch.utils.data import DataLoader, Dataset

    class Rows(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(next(iter(x.values())))

        def __getitem__(self, i: int) -> Any:
            return {k: torch.as_tensor(v[i]) for k, v in x.items()}, {
                k: torch.as_tensor(v[i]) for k, v in y.items()
            }

    return DataLoader(Rows(), batch_size=batch, shuffle=shuffle)


def one(contender: str, seed: int, epochs: int) -> dict[str, Any]:
    mod = _module()
    ds = _dataset(mod, seed)
    st = ds.structure
    marks: list[tuple[float, float, int]] = []
    u = UNITS
    if contender == "plain-keras":
        import keras

        keras.utils.set_random_seed(seed)
        model = mod.ranker(u["title_units"], u["body_units"], u["lr"])
        hist = model.fit(
            st.x_train, st.y_train, batch_size=32, epochs=epochs, verbose=0,
            validation_data=(st.x_val, st.y_val), callbacks=[_keras_recorder(marks)],
        )  # fmt: skip
        return {"step_ms": _step_ms(marks), "acc": float(hist.history[METRIC][-1])}
    if contender == "plain-lightning":
        import lightning.pytorch as L

        L.seed_everything(seed, verbose=False)
        module = mod.LitRanker(u["title_units"], u["body_units"], u["lr"])
        trainer = plain_trainer(epochs, marks)
        train = _loader(st.x_train, st.y_train, 32, True)
        trainer.fit(module, train, _loader(st.x_val, st.y_val, 256, False))
        return {"step_ms": _step_ms(marks), "acc": float(trainer.callback_metrics[METRIC])}
    return _protolab(mod, ds, contender, seed, epochs, marks)


def _protolab(mod: Any, ds: Any, mode: str, seed: int, epochs: int, marks: list[Any]) -> Any:
    import protolab as pl
    from protolab.backends import Hardware, Job, TrainSettings, get_backend

    u = UNITS
    if mode == "lightning":
        node = pl.native(
            torch=lambda: mod.LitRanker(u["title_units"], u["body_units"], u["lr"]),
            torch_callbacks=lambda: [_torch_recorder(marks)],
        )
    else:
        node = pl.native(
            keras=lambda: mod.ranker(u["title_units"], u["body_units"], u["lr"]),
            keras_callbacks=lambda: [_keras_recorder(marks)],
        )
    settings = TrainSettings(
        epochs=epochs, batch_size=32, optimizer="adam", lr=1e-3, seed=seed, drop_last=False
    )
    job = Job(node, ds, settings, Hardware(accelerator="cpu", threads=1))
    m = get_backend(mode).run(job).metrics
    return {"step_ms": _step_ms(marks), "acc": float(m[METRIC])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--one", nargs=2, metavar=("CONTENDER", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.epochs)))
        return 0
    rows = interleave(__file__, CONTENDERS, args.seeds, args.epochs)
    print("| contender | val_department_accuracy (mean ± sd) | step ms | vs plain |")
    print("|---|---|---|---|")
    for c in CONTENDERS:
        accs = [r["acc"] for r in rows[c]]
        step = statistics.median(r["step_ms"] for r in rows[c])
        plain = "plain-keras" if c in ("plain-keras", "tf-graph") else "plain-lightning"
        base = statistics.median(r["step_ms"] for r in rows[plain])
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        each = " / ".join(f"{a:.3f}" for a in accs)
        print(f"| {c} | {statistics.mean(accs):.3f} ± {sd:.3f} ({each}) | {step:.2f} | "
              f"{step / base:.2f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
