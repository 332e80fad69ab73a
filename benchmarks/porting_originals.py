"""The three ported examples as their authors wrote them, in plain Lightning / plain Keras.

Each function re-implements one original, line for line, on protolab's ``digits`` split
(the same arrays protolab trains on, for the same seed) and returns its validation
accuracy and trainable parameter count. Every departure from the quoted source is marked
``# CHANGED:`` with the reason; everything else is the original's code and defaults
(initialisers, optimizer epsilon, ragged last batch, softmax + cross-entropy ...), which is
the point: ``benchmarks/porting.py`` compares protolab's ports against exactly this.

Sources (quoted in docs/porting.md):

- https://github.com/optuna/optuna-examples/blob/main/pytorch/pytorch_lightning_simple.py
- https://github.com/keras-team/keras-io/blob/master/examples/vision/mnist_convnet.py
- https://github.com/keras-team/keras-io/blob/master/examples/nlp/text_classification_with_transformer.py

Frameworks are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Outcome",
    "convnet_original",
    "convnet_params",
    "lightning_mlp_original",
    "lightning_mlp_params",
    "transformer_original",
    "transformer_params",
]


@dataclass
class Outcome:
    val_acc: float
    params: int
    seconds: float


def _digits(seed: int) -> Any:
    from protolab.data import load_dataset

    return load_dataset("digits", seed=seed)  # the split protolab takes for this seed


# --------------------------------------------------------------------------------------
# optuna-examples pytorch/pytorch_lightning_simple.py
# --------------------------------------------------------------------------------------


def _lightning_classes(input_dim_total: int, classes: int) -> tuple[type, type]:
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from torch import nn, optim

    class Net(nn.Module):
        def __init__(self, dropout: float, output_dims: list[int]) -> None:
            super().__init__()
            layers: list[nn.Module] = []

            input_dim: int = input_dim_total  # CHANGED: 28 * 28 (FashionMNIST) -> 8 * 8
            for output_dim in output_dims:
                layers.append(nn.Linear(input_dim, output_dim))
                layers.append(nn.ReLU())
                layers.append(nn.Dropout(dropout))
                input_dim = output_dim

            layers.append(nn.Linear(input_dim, classes))

            self.layers = nn.Sequential(*layers)

        def forward(self, data: torch.Tensor) -> torch.Tensor:
            logits = self.layers(data)
            return F.log_softmax(logits, dim=1)

    class LightningNet(pl.LightningModule):
        def __init__(self, dropout: float, output_dims: list[int]) -> None:
            super().__init__()
            self.model = Net(dropout, output_dims)

        def forward(self, data: torch.Tensor) -> torch.Tensor:
            return self.model(data.view(-1, input_dim_total))

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            data, target = batch
            output = self(data)
            return F.nll_loss(output, target)

        def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
            data, target = batch
            output = self(data)
            pred = output.argmax(dim=1, keepdim=True)
            accuracy = pred.eq(target.view_as(pred)).float().mean()
            self.log("val_acc", accuracy)
            self.log("hp_metric", accuracy, on_step=False, on_epoch=True)

        def configure_optimizers(self) -> optim.Optimizer:
            return optim.Adam(self.model.parameters())

    return Net, LightningNet


def lightning_mlp_params(
    dropout: float, output_dims: list[int], input_dim: int = 64, classes: int = 10
) -> int:
    """Trainable parameters of the original ``Net`` (``input_dim=784``: FashionMNIST)."""
    net_cls, _ = _lightning_classes(input_dim, classes)
    net = net_cls(dropout, output_dims)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def lightning_mlp_original(
    seed: int,
    epochs: int,
    params: dict[str, Any],
    batch_size: int = 128,
    glorot: bool = False,
    drop_last: bool = False,
) -> Outcome:
    """``objective(trial)`` with the trial's values fixed to ``params``.

    ``glorot`` and ``drop_last`` are not the original: they switch on, one at a time, what
    protolab does by default (Keras' Glorot-uniform kernels and zero biases instead of
    torch's ``nn.Linear`` default, which the port asks for as ``torch_default``; every step
    a full batch), to measure what each costs.
    """
    import logging
    import time

    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    t0 = time.perf_counter()
    ds = _digits(seed)
    pl.seed_everything(seed, verbose=False)  # CHANGED: the original does not seed
    _, lightning_net = _lightning_classes(int(np.prod(ds.input_shape)), int(ds.n_classes))
    n_layers = int(params["n_layers"])
    dropout = float(params["dropout"])
    output_dims = [int(params[f"n_units_l{i}"]) for i in range(n_layers)]
    model = lightning_net(dropout, output_dims)
    if glorot:  # investigation only: protolab's (and Keras') default initialisation
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(m.weight)
                torch.nn.init.zeros_(m.bias)

    # CHANGED: FashionMNISTDataModule (55,000 / 5,000 random_split) -> protolab's digits split
    train = TensorDataset(torch.as_tensor(ds.x_train), torch.as_tensor(ds.y_train))
    val = TensorDataset(torch.as_tensor(ds.x_val), torch.as_tensor(ds.y_val))
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=drop_last)
    val_loader = DataLoader(val, batch_size=batch_size, shuffle=False)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "does not have many workers" and the like
        trainer = pl.Trainer(
            logger=False,  # CHANGED: True writes ./lightning_logs; it changes no training
            limit_val_batches=1.0,  # CHANGED: 0.1 of 3 digits val batches is < 1 batch
            enable_checkpointing=False,
            max_epochs=epochs,
            accelerator="auto",
            devices=1,
            enable_progress_bar=False,  # CHANGED: quiet; no effect on training
            enable_model_summary=False,
        )
        trainer.fit(model, train_dataloaders=train_loader, val_dataloaders=val_loader)
    acc = float(trainer.callback_metrics["val_acc"].item())
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Outcome(acc, int(n_params), time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# keras-io examples/vision/mnist_convnet.py
# --------------------------------------------------------------------------------------


def _convnet_model(input_shape: tuple[int, ...], num_classes: int, padding: str) -> Any:
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            # CHANGED: padding="same" on 8x8 digits (padding is the argument the original
            # leaves at Keras' "valid"; "valid" leaves 1x1 before the second MaxPooling2D)
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu", padding=padding),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu", padding=padding),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )


def convnet_params(input_shape: tuple[int, ...] = (8, 8, 1), padding: str = "same") -> int:
    """Trainable parameters (``(28, 28, 1)``, ``"valid"``: the original's 34,826)."""
    model = _convnet_model(input_shape, 10, padding)
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def convnet_original(seed: int, epochs: int, batch_size: int = 128) -> Outcome:
    import time

    import keras

    t0 = time.perf_counter()
    ds = _digits(seed)
    keras.utils.set_random_seed(seed)  # CHANGED: the original does not seed
    num_classes = int(ds.n_classes)
    # CHANGED: keras.datasets.mnist (x / 255, expand_dims) -> digits, already (N, 8, 8, 1)
    # in [0, 1]; validation_split=0.1 -> the digits validation split
    x_train, x_val = ds.x_train, ds.x_val
    y_train = keras.utils.to_categorical(ds.y_train, num_classes)
    y_val = keras.utils.to_categorical(ds.y_val, num_classes)
    model = _convnet_model(ds.input_shape, num_classes, "same")
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    hist = model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(x_val, y_val),
        verbose=0,  # CHANGED: quiet
    )
    acc = float(hist.history["val_accuracy"][-1])
    n_params = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    return Outcome(acc, n_params, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# keras-io examples/nlp/text_classification_with_transformer.py
# --------------------------------------------------------------------------------------


def _transformer_model(maxlen: int, vocab_size: int, classes: int) -> Any:
    import keras
    from keras import layers, ops

    class TransformerBlock(layers.Layer):
        def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):  # type: ignore[no-untyped-def]
            super().__init__()
            self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
            self.ffn = keras.Sequential(
                [
                    layers.Dense(ff_dim, activation="relu"),
                    layers.Dense(embed_dim),
                ]
            )
            self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
            self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
            self.dropout1 = layers.Dropout(rate)
            self.dropout2 = layers.Dropout(rate)

        def call(self, inputs):  # type: ignore[no-untyped-def]
            attn_output = self.att(inputs, inputs)
            attn_output = self.dropout1(attn_output)
            out1 = self.layernorm1(inputs + attn_output)
            ffn_output = self.ffn(out1)
            ffn_output = self.dropout2(ffn_output)
            return self.layernorm2(out1 + ffn_output)

    class TokenAndPositionEmbedding(layers.Layer):
        def __init__(self, maxlen, vocab_size, embed_dim):  # type: ignore[no-untyped-def]
            super().__init__()
            self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
            self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

        def call(self, x):  # type: ignore[no-untyped-def]
            maxlen = ops.shape(x)[-1]
            positions = ops.arange(start=0, stop=maxlen, step=1)
            positions = self.pos_emb(positions)
            x = self.token_emb(x)
            return x + positions

    embed_dim = 32  # Embedding size for each token
    num_heads = 2  # Number of attention heads
    ff_dim = 32  # Hidden layer size in feed forward network inside transformer

    inputs = layers.Input(shape=(maxlen,))
    embedding_layer = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim)
    x = embedding_layer(inputs)
    transformer_block = TransformerBlock(embed_dim, num_heads, ff_dim)
    x = transformer_block(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(20, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    outputs = layers.Dense(classes, activation="softmax")(x)  # CHANGED: 2 (IMDB) -> 10

    return keras.Model(inputs=inputs, outputs=outputs)


def transformer_params(maxlen: int = 64, vocab_size: int = 17, classes: int = 10) -> int:
    """Trainable parameters (``200, 20000, 2``: the original's IMDB model, 657,758)."""
    model = _transformer_model(maxlen, vocab_size, classes)
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def digits_tokens(x: np.ndarray) -> np.ndarray:
    """Digits pixels as token sequences: the 0..16 intensities scikit-learn ships, row-major."""
    return np.rint(x.reshape(len(x), -1) * 16.0).astype(np.int32)


def transformer_original(seed: int, epochs: int, batch_size: int = 32) -> Outcome:
    import time

    import keras

    t0 = time.perf_counter()
    ds = _digits(seed)
    keras.utils.set_random_seed(seed)  # CHANGED: the original does not seed
    # CHANGED: IMDB (vocab_size = 20000, maxlen = 200, pad_sequences) -> digits pixels as
    # 64 tokens over a vocabulary of 17 intensities
    vocab_size, maxlen = 17, 64
    x_train, x_val = digits_tokens(ds.x_train), digits_tokens(ds.x_val)
    model = _transformer_model(maxlen, vocab_size, int(ds.n_classes))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(
        x_train,
        ds.y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(x_val, ds.y_val),
        verbose=0,  # CHANGED: quiet
    )
    acc = float(history.history["val_accuracy"][-1])
    n_params = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    return Outcome(acc, n_params, time.perf_counter() - t0)
