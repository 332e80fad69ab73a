"""A small convolutional network on digits: conv blocks whose width, count and type mutate.

``block`` picks a plain conv or a residual block, so the search compares block types too.
"""

import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits")
def model(space: pl.Space) -> pl.Arch:
    filters = space.int("filters", 8, 32, log=True)
    block = space.choice("block", ["conv", "residual"])
    act = space.choice("act", ["relu", "gelu"])
    layers = []
    for i in range(space.int("blocks", 1, 2)):
        width = filters * 2**i
        conv = L.Conv2D(width, 3, padding="same", activation=act)
        if block == "residual":
            layers.append(L.Residual(conv, L.BatchNorm()))
        else:
            layers += [conv, L.BatchNorm()]
        layers.append(L.MaxPool(2))
    return pl.Arch(*layers, L.GlobalAvgPool(), L.Dense(10))
