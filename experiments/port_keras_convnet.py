"""Port of the Keras example "Simple MNIST convnet", with a few of its choices searchable.

Original: https://keras.io/examples/vision/mnist_convnet/ (source:
https://github.com/keras-team/keras-io/blob/master/examples/vision/mnist_convnet.py).
The layer stack is the original's, one protolab layer per Keras layer:
Conv2D(32, 3, relu) -> MaxPooling2D(2) -> Conv2D(64, 3, relu) -> MaxPooling2D(2) -> Flatten
-> Dropout(0.5) -> Dense(10). Every argument that matters is written out, so the port does
not depend on protolab's defaults. One change (docs/porting.md): ``padding="same"`` on the
8x8 digits, where the original's "valid" leaves 1x1 before the second pool, which no
framework can pool by 2; ``convnet(padding="valid")`` on a (28, 28, 1) input is the
original model exactly (34,826 parameters, as its ``model.summary()`` prints). The softmax
head stays: protolab then trains on probabilities with Keras' clipped cross-entropy.

Searchable (defaults = the original): the two conv widths, the kernel size, the dropout.
Run it paired: ``protolab sweep configs/port_keras_convnet.yaml``.
"""

import protolab as pl
from protolab import layers as L


def convnet(
    filters1: int = 32,
    filters2: int = 64,
    kernel_size: int = 3,
    dropout: float = 0.5,
    padding: str = "same",
    classes: int = 10,
) -> pl.Arch:
    return pl.Arch(
        L.Conv2D(filters1, kernel_size, strides=1, padding=padding, activation="relu"),
        L.MaxPool(pool_size=2),
        L.Conv2D(filters2, kernel_size, strides=1, padding=padding, activation="relu"),
        L.MaxPool(pool_size=2),
        L.Flatten(),
        L.Dropout(dropout),
        L.Dense(classes, activation="softmax"),
    )


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    # the first choice and the middle of a range are the defaults: the original's values
    return convnet(
        filters1=space.choice("filters1", [32, 16, 64]),
        filters2=space.choice("filters2", [64, 32, 128]),
        kernel_size=space.choice("kernel_size", [3, 5]),
        dropout=space.float("dropout", 0.25, 0.75),
    )
