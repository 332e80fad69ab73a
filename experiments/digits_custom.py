"""Your own layer inside a searched architecture: a gated linear unit with both builders.

``GatedDense(units)`` computes ``(x W + b) * sigmoid(x V + c)``; it has its own
hyperparameter (``units``), a torch builder and a Keras builder that make the same model,
and it can stand anywhere an Arch takes a layer (here also inside a ``Residual``).
Run it paired: ``protolab sweep configs/digits_custom.yaml``.
"""

import keras
import torch

import protolab as pl
from protolab import layers as L


class _GatedTorch(torch.nn.Module):
    def __init__(self, fan_in: int, units: int) -> None:
        super().__init__()
        self.value = torch.nn.Linear(fan_in, units)
        self.gate = torch.nn.Linear(fan_in, units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(x) * torch.sigmoid(self.gate(x))


class _GatedKeras(keras.layers.Layer):
    def __init__(self, units: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.value = keras.layers.Dense(units)
        self.gate = keras.layers.Dense(units)

    def call(self, x):  # type: ignore[no-untyped-def]
        return self.value(x) * keras.ops.sigmoid(self.gate(x))


@pl.layer
class GatedDense(pl.CustomLayer):
    units: int = 64

    def torch(self, input_shape: tuple[int, ...]) -> torch.nn.Module:
        return _GatedTorch(input_shape[-1], self.units)

    def keras(self, input_shape: tuple[int, ...]) -> keras.layers.Layer:
        return _GatedKeras(self.units)


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    width = space.int("width", 32, 128, log=True)
    body = [GatedDense(width)]
    if space.choice("residual", [True, False]):
        body.append(L.Residual(GatedDense(width), L.LayerNorm()))
    return pl.Arch(L.Flatten(), *body, L.Dense(10))
