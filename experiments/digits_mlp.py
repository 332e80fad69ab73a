"""A multilayer perceptron on scikit-learn's 8x8 digits: the quick-start experiment.

Width, depth, activation and dropout mutate from trial to trial; the loop below is plain
Python, so the number of layers (and the choices that exist) depends on sampled values.
"""

import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    width = space.int("width", 32, 512, log=True)
    act = space.choice("act", ["relu", "gelu", "tanh"])
    body = []
    for _ in range(space.int("depth", 1, 4)):
        body += [L.Dense(width, activation=act), L.Dropout(space.float("dropout", 0.0, 0.5))]
    return pl.Arch(L.Flatten(), *body, L.Dense(10))
