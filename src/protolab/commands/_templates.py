"""What ``protolab init NAME --template T`` writes: an experiment script and its config.

Each template runs as written (``protolab sweep configs/NAME.yaml``) on both families; the
tests sweep every one. ``{name}`` is the study name, ``{script}`` the script's file name.
"""

from __future__ import annotations

__all__ = ["CONFIG", "DATA", "SCRIPTS", "SIZES", "TEMPLATES"]

TEMPLATES = ("mlp", "cnn", "seq", "custom")

_MLP = '''"""{name}: an MLP on digits (8x8 images, 10 classes); width, depth, activation mutate.

Edit the choices below, save, and sweep again: every run records which version of this
script produced it, so before/after is one comparison away in `protolab report` and the UI.
"""

import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")  # direction inferred: accuracy is maximised
def model(space: pl.Space) -> pl.Arch:
    width = space.int("width", 32, 512, log=True)
    act = space.choice("act", ["relu", "gelu", "tanh"])
    body = []
    for _ in range(space.int("depth", 1, 3)):  # define-by-run: plain Python control flow
        body += [L.Dense(width, activation=act), L.Dropout(space.float("dropout", 0.0, 0.5))]
    return pl.Arch(L.Flatten(), *body, L.Dense(10))
'''

_CNN = '''"""{name}: a small CNN on digits whose filters, block type and block count mutate."""

import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    filters = space.int("filters", 8, 32, log=True)
    block = space.choice("block", ["conv", "residual"])
    act = space.choice("act", ["relu", "gelu"])
    layers = []
    for i in range(space.int("blocks", 1, 2)):
        conv = L.Conv2D(filters * 2**i, 3, padding="same", activation=act)
        if block == "residual":
            layers.append(L.Residual(conv, L.BatchNorm()))
        else:
            layers += [conv, L.BatchNorm()]
        layers.append(L.MaxPool(2))
    return pl.Arch(*layers, L.GlobalAvgPool(), L.Dense(10))
'''

_SEQ = '''"""{name}: token sequences (16 ids of 0-9; which of 0-3 is most frequent), three encoders.

The search picks the encoder (LSTM, GRU or self-attention) and its size: recurrent models
are where eager and compiled training differ most.
"""

import protolab as pl
from protolab import layers as L


@pl.experiment(data="sequence", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    dim = space.int("dim", 8, 64, log=True)
    encoder = space.choice("encoder", ["lstm", "gru", "attention"])
    units = space.int("units", 16, 64, log=True)
    if encoder == "lstm":
        body = [L.LSTM(units)]
    elif encoder == "gru":
        body = [L.GRU(units)]
    else:
        body = [L.SelfAttention(heads=2, key_dim=units // 2), L.GlobalAvgPool()]
    return pl.Arch(L.Embedding(10, dim), *body, L.Dense(4))
'''

_CUSTOM = '''"""{name}: your own data. Replace {data} with your file and adapt the model.

Data: a `.csv` with a `target` column (every other column is a feature), or a `.npz` with
`x`, `y` (a seeded validation split is taken) or `x_train`, `y_train`, `x_val`, `y_val`.
Integer targets mean classification (val/acc), float targets regression (val/rmse). The
path is relative to this script. The example file is two noisy interleaved half-moons.
"""

import protolab as pl
from protolab import layers as L


@pl.experiment(data="{data}")  # metric: val/acc for integer targets, val/rmse for floats
def model(space: pl.Space) -> pl.Arch:
    width = space.int("width", 16, 128, log=True)
    act = space.choice("act", ["relu", "gelu", "tanh"])
    residual = space.choice("residual", [False, True])
    body = [L.Dense(width, activation=act)]
    for _ in range(space.int("blocks", 1, 3)):
        block = [L.Dense(width, activation=act), L.LayerNorm()]
        body += [L.Residual(*block)] if residual else block
    n_classes = 2  # the number of distinct targets in your data (1 for regression)
    return pl.Arch(*body, L.Dense(n_classes))
'''

SCRIPTS = {"mlp": _MLP, "cnn": _CNN, "seq": _SEQ, "custom": _CUSTOM}

CONFIG = """# {name}: `protolab sweep configs/{name}.yaml`, then `protolab ui --study {name}`.
# Override any key from the command line: `protolab sweep configs/{name}.yaml study.n_trials=5`.
experiment: ../experiments/{script}   # relative to this file
backends: [dynamic, static]   # each trial trains on both families (paired); or one of them
study:
  name: {name}
  storage: null            # null: a local journal under mlruns/; or an Optuna URL (postgresql://...)
  n_trials: {n_trials}             # finished trials in the study in total; reruns top it up
  sampler: tpe             # tpe | random | gp | cmaes | nsga2 | qmc | grid | evolution | pbt
  pruner: median           # none | median | percentile | hyperband | successive_halving | pareto
  seed: 0
train:
  epochs: {epochs}
  batch_size: 64           # a value, or a search range / choice like the lr below
  optimizer: adam          # adam | adamw | sgd | rmsprop
  lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}
hardware: {{accelerator: auto, devices: 1, precision: "32", threads: null}}
tracking: {{uri: null, experiment: null}}   # default sqlite:///mlruns/mlflow.db
"""

# (trials, epochs) per template: a first sweep in a few minutes on a laptop CPU.
SIZES = {"mlp": (10, 5), "cnn": (6, 3), "seq": (6, 3), "custom": (10, 5)}


def moons_csv(n: int = 400, seed: int = 0) -> str:
    """Two interleaved half-moons with noise, as CSV text (``x1,x2,target``), no numpy."""
    import math
    import random

    rng = random.Random(seed)
    rows = ["x1,x2,target"]
    for i in range(n):
        label = i % 2
        angle = math.pi * rng.random()
        x = math.cos(angle) + (1.0 if label else 0.0)
        y = math.sin(angle) * (-1.0 if label else 1.0) + (0.5 if label else 0.0)
        x, y = x + rng.gauss(0, 0.15), y + rng.gauss(0, 0.15)
        rows.append(f"{x:.4f},{y:.4f},{label}")
    return "\n".join(rows) + "\n"


DATA = {"custom": moons_csv}
