"""Port of the Keras example "Timeseries classification from scratch", its model, compile and
callbacks as they are: protolab trains the compiled ``keras.Model`` through its own ``fit``.

Original: https://keras.io/examples/timeseries/timeseries_classification_from_scratch/
(source: https://github.com/keras-team/keras-io/blob/master/examples/timeseries/
timeseries_classification_from_scratch.py; hfawaz, Apache 2.0). ``make_model``, the
``compile(...)`` call and the three callbacks below are the original's, unchanged but for
the checkpoint's file name (``best_model.h5`` -> ``best_model.keras``: Keras 3 saves a
whole model only in its own format). What changed is the data (docs/porting.md): FordA is
downloaded, so a FordA-like two-class series is made here instead, and written once next
to this script (``data/port_keras_timeseries.npz``, seeded: the same bytes every time).

``pl.native(keras=..., keras_callbacks=...)``: the builder returns the compiled model, so
protolab runs ``model.fit(x, y, batch_size, epochs, validation_data, callbacks=[...])``
once per trial on each Keras mode and times it through Keras' callback hooks. The
ModelCheckpoint writes ``best_model.keras`` into the working directory, as the original
does: every trial writes the same file (run the sweep where that is wanted).
Run it: ``protolab sweep configs/port_keras_timeseries.yaml``.
"""

from pathlib import Path

import keras
import numpy as np

import protolab as pl

DATA = "data/port_keras_timeseries.npz"
num_classes = 2  # the original counts them: len(np.unique(y_train))


def make_series(n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """FordA-like series: AR(1) "engine noise" with one short burst whose frequency tells
    the class (0.13 or 0.21 cycles per step, jittered), each series z-normalised as
    FordA's are; ``(n, length, 1)`` float32 (the original's reshape) and 0/1 labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    noise = rng.normal(size=(n, length))
    x = np.zeros((n, length))
    for t in range(length):
        x[:, t] = (0.6 * x[:, t - 1] if t else 0.0) + noise[:, t]
    t = np.arange(length)
    centre = rng.uniform(16, length - 16, n)[:, None]
    envelope = np.exp(-0.5 * ((t - centre) / 8.0) ** 2)
    freq = np.where(y == 1, 0.21, 0.13)[:, None] * (1 + 0.05 * rng.normal(size=(n, 1)))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x += 2.0 * envelope * np.sin(2 * np.pi * freq * t + phase)
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    return x[..., None].astype(np.float32), y.astype(np.int64)


def write_data(path: Path, n: int = 2000, n_test: int = 500, length: int = 128) -> None:
    """``x``/``y`` (protolab takes the original's ``validation_split=0.2`` from them) and a
    test split ``x_test``/``y_test``; written atomically, only when missing."""
    if path.is_file():
        return
    x, y = make_series(n + n_test, length, seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x[:n], y=y[:n], x_test=x[n:], y_test=y[n:])
    tmp.replace(path)


# ---------------------------------------------------------------- the original, unchanged


def make_model(input_shape):
    input_layer = keras.layers.Input(input_shape)

    conv1 = keras.layers.Conv1D(filters=64, kernel_size=3, padding="same")(input_layer)
    conv1 = keras.layers.BatchNormalization()(conv1)
    conv1 = keras.layers.ReLU()(conv1)

    conv2 = keras.layers.Conv1D(filters=64, kernel_size=3, padding="same")(conv1)
    conv2 = keras.layers.BatchNormalization()(conv2)
    conv2 = keras.layers.ReLU()(conv2)

    conv3 = keras.layers.Conv1D(filters=64, kernel_size=3, padding="same")(conv2)
    conv3 = keras.layers.BatchNormalization()(conv3)
    conv3 = keras.layers.ReLU()(conv3)

    gap = keras.layers.GlobalAveragePooling1D()(conv3)

    output_layer = keras.layers.Dense(num_classes, activation="softmax")(gap)

    return keras.models.Model(inputs=input_layer, outputs=output_layer)


def callbacks():
    return [
        keras.callbacks.ModelCheckpoint(
            "best_model.keras", save_best_only=True, monitor="val_loss"
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=20, min_lr=0.0001
        ),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=50, verbose=1),
    ]


def compiled_model(input_shape):
    model = make_model(input_shape=input_shape)
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["sparse_categorical_accuracy"],
    )
    return model


# ---------------------------------------------------------------- protolab

write_data(Path(__file__).parent / DATA)


@pl.experiment(data=DATA, metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    # batch_size and epochs come from the config (the original's: 32, and fewer epochs)
    return pl.native(keras=compiled_model, keras_callbacks=callbacks, name="timeseries_fcn")
