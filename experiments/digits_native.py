"""A whole native model: your ``nn.Module`` and its ``keras.Model`` twin, trained paired.

``SmallConvNet`` below is written the way a PyTorch user already has it (channels-first
``nn.Conv2d``, torch's default initialisation, its own classifier head); ``small_convnet_keras``
is the same network in Keras. ``pl.native(torch=..., keras=...)`` hands protolab one or the
other: it trains, times and logs the model on both families, checks that both builds have
the same number of trainable parameters, and searches the constructor arguments
(``width``, ``dropout``) like any other choice. ``NativeConvNet`` is the same model as a
custom layer, the form to use when the model is one part of a larger Arch
(``pl.Arch(NativeConvNet(width=16))`` trains the same network).
Run it paired: ``protolab sweep configs/digits_native.yaml``.
"""

import keras
import torch
from torch import nn

import protolab as pl


class SmallConvNet(nn.Module):
    """An ordinary PyTorch model: (N, C, H, W) inside, logits out."""

    def __init__(self, in_channels: int, classes: int, width: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ChannelsLast(nn.Module):
    """protolab hands every layer channels-last tensors (as Keras): move the axis once."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


def small_convnet_keras(
    input_shape: tuple[int, ...], classes: int, width: int, dropout: float
) -> keras.Model:
    """The same network as a Keras model (channels-last, "same" padding = padding=1 here)."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x), name="small_convnet")


@pl.layer
class NativeConvNet(pl.CustomLayer):
    """The whole model as one layer; its fields are the model's constructor arguments."""

    width: int = 16
    dropout: float = 0.2
    classes: int = 10

    def torch(self, input_shape: tuple[int, ...]) -> nn.Module:
        return ChannelsLast(SmallConvNet(input_shape[-1], self.classes, self.width, self.dropout))

    def keras(self, input_shape: tuple[int, ...]) -> keras.Model:
        return small_convnet_keras(input_shape, self.classes, self.width, self.dropout)


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    width = space.int("width", 8, 64, log=True)
    dropout = space.float("dropout", 0.0, 0.5)
    return pl.native(
        torch=lambda shape: ChannelsLast(SmallConvNet(shape[-1], 10, width, dropout)),
        keras=lambda shape: small_convnet_keras(shape, 10, width, dropout),
        name="small_convnet",
    )
