"""The models every step-time contender trains: protolab Archs, so all build identical nets.

Baselines build these with ``build_torch`` / ``build_keras``, exactly as the backends do, so
parameter counts (and initialisation) match and a ratio measures the training loop only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protolab import layers as L
from protolab.arch import Arch

__all__ = ["CASES", "ModelCase", "load_case_data"]


@dataclass(frozen=True)
class ModelCase:
    key: str  # row name, e.g. "mlp-small"
    title: str
    arch: Arch
    data: str  # a protolab built-in dataset
    batch: int
    epochs: int  # epochs per contender per round (full mode)
    epochs_quick: int
    quick: bool = False  # also measured in --quick mode (the models issue 7 sets targets on)
    upsample: int = 1  # repeat pixels: digits 8x8 -> 16x16 for the Keras MNIST convnet
    series: bool = False  # images read as 1-D series (N, pixels, 1): a Conv1D classifier

    def epochs_for(self, quick: bool) -> int:
        return self.epochs_quick if quick else self.epochs


CASES: tuple[ModelCase, ...] = (
    ModelCase(
        "mlp-small",
        "MLP 64-256-256-10, batch 64, digits",
        Arch(L.Flatten(), L.Dense(256, "relu"), L.Dense(256, "relu"), L.Dense(10)),
        "digits",
        64,
        epochs=8,  # ~25 ms (static) to ~100 ms (eager) each: cheap, and it steadies medians
        epochs_quick=4,
        quick=True,
    ),
    ModelCase(
        "mlp-wide",
        "MLP 64-2048-2048-10, batch 256, digits",
        Arch(L.Flatten(), L.Dense(2048, "relu"), L.Dense(2048, "relu"), L.Dense(10)),
        "digits",
        256,
        epochs=3,
        epochs_quick=1,
        quick=True,
    ),
    ModelCase(
        "cnn",
        "CNN conv16-pool-conv32-pool-dense64, batch 64, digits",
        Arch(
            L.Conv2D(16, 3, padding="same", activation="relu"),
            L.MaxPool(2),
            L.Conv2D(32, 3, padding="same", activation="relu"),
            L.MaxPool(2),
            L.Flatten(),
            L.Dense(64, "relu"),
            L.Dense(10),
        ),
        "digits",
        64,
        epochs=2,
        epochs_quick=1,
    ),
    ModelCase(
        "cnn16",
        "Keras 'simple MNIST convnet' (conv32-pool-conv64-pool-drop-dense10), digits 16x16",
        Arch(
            L.Conv2D(32, 3, padding="same", activation="relu"),
            L.MaxPool(2),
            L.Conv2D(64, 3, padding="same", activation="relu"),
            L.MaxPool(2),
            L.Flatten(),
            L.Dropout(0.5),
            L.Dense(10),
        ),
        "digits",
        128,  # the example's batch size
        epochs=2,
        epochs_quick=1,
        upsample=2,  # not in --quick: XLA's CPU convolutions make it ~3 min on its own
    ),
    ModelCase(
        "lstm",
        "Embedding 32 + LSTM 64, batch 64, sequence",
        Arch(L.Embedding(10, 32), L.LSTM(64), L.Dense(4)),
        "sequence",
        64,
        epochs=1,
        epochs_quick=1,
    ),
    ModelCase(
        "attention",
        "Embedding 32 + SelfAttention 4x16 + pool, batch 64, sequence",
        Arch(L.Embedding(10, 32), L.SelfAttention(4, 16), L.GlobalAvgPool(), L.Dense(4)),
        "sequence",
        64,
        # 42 steps of ~2 ms: one epoch gave a whole-epoch mode one ~80 ms sample per round,
        # which a single write of the tracking writer beside it could move by 30 %
        epochs=3,
        epochs_quick=1,
    ),
)


# Issue 26's models: the shapes users bring that the MLPs above do not stand for.
CASES += (
    ModelCase(
        "conv-net",
        "PyTorch MNIST Net (conv32-conv64-pool-drop-dense128-drop-dense10), digits 24x24",
        Arch(
            L.Conv2D(32, 3, activation="relu"),
            L.Conv2D(64, 3, activation="relu"),
            L.MaxPool(2),
            L.Dropout(0.25),
            L.Flatten(),
            L.Dense(128, "relu"),
            L.Dropout(0.5),
            L.Dense(10),
        ),
        "digits",
        64,  # the example's
        epochs=1,
        epochs_quick=1,
        upsample=3,  # 8x8 -> 24x24, near the example's 28x28 (nothing is downloaded)
    ),
    ModelCase(
        "conv1d-bn",
        "Keras time-series classifier (3x Conv1D64-BN-relu, global pool), digits as 64x1",
        Arch(
            L.Conv1D(64, 3, padding="same"),
            L.BatchNorm(),
            L.Activation("relu"),
            L.Conv1D(64, 3, padding="same"),
            L.BatchNorm(),
            L.Activation("relu"),
            L.Conv1D(64, 3, padding="same"),
            L.BatchNorm(),
            L.Activation("relu"),
            L.GlobalAvgPool(),
            L.Dense(10),
        ),
        "digits",
        32,  # the example's
        epochs=1,
        epochs_quick=1,
        series=True,  # the baselines train classifiers: digits' 64 pixels as a series
    ),
    ModelCase(
        "resnet-small",
        "residual conv blocks with BatchNorm (conv16 + 2 residual blocks), digits",
        Arch(
            L.Conv2D(16, 3, padding="same", activation="relu"),
            L.Residual(L.Conv2D(16, 3, padding="same", activation="relu"), L.BatchNorm()),
            L.Residual(L.Conv2D(16, 3, padding="same", activation="relu"), L.BatchNorm()),
            L.GlobalAvgPool(),
            L.Dense(10),
        ),
        "digits",
        64,
        epochs=1,
        epochs_quick=1,
    ),
    ModelCase(
        "transformer",
        "transformer encoder classifier (embedding 32 + positions, 1 block 2x32 ff64), sequence",
        Arch(
            L.PositionalEmbedding(10, 32),
            L.TransformerBlock(32, 2, 64),
            L.GlobalAvgPool(),
            L.Dense(4),
        ),
        "sequence",
        64,
        epochs=1,
        epochs_quick=1,
    ),
)


def load_case_data(case: ModelCase) -> Any:
    """The protolab Dataset of ``case`` (seed 0: every contender sees identical arrays)."""
    import dataclasses

    import numpy as np

    from protolab.data import load_dataset

    ds = load_dataset(case.data, seed=0)
    if case.series:
        flat = {k: getattr(ds, k).reshape(len(getattr(ds, k)), -1, 1) for k in ("x_train", "x_val")}
        return dataclasses.replace(ds, **flat)
    if case.upsample == 1:
        return ds
    k = case.upsample

    def up(x: Any) -> Any:
        return np.ascontiguousarray(np.repeat(np.repeat(x, k, axis=1), k, axis=2))

    return dataclasses.replace(ds, x_train=up(ds.x_train), x_val=up(ds.x_val))
