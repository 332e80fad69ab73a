"""Keras' Functional API guide: "a model with multiple inputs and outputs", as it is.

Original: https://keras.io/guides/functional_api/#models-with-multiple-inputs-and-outputs
(the ticket ranker: a ``title`` and a ``body`` as token ids, ``tags`` as a binary vector;
two heads, a ``priority`` score and a ``department`` classifier; RMSprop, one loss per head,
``loss_weights``). The model, its compile and its dict data are the guide's; sizes are
smaller for a CPU (vocabulary 1,000, LSTMs 32 and 16) and the data carries a signal (the
guide's is random): the department is set by the tags, the priority by the title's tokens.
protolab feeds the dicts as they are; Keras matches the keys to the inputs' and heads'
names and logs each head's loss and metric (``val_department_accuracy``: the objective).

A LightningModule twin (the same layers in torch) trains on the same dicts: its
``training_step`` unpacks ``(inputs, targets)`` by name and logs the same metric names.

Run it: ``protolab sweep configs/port_keras_multi_io.yaml``.
"""

import keras
import lightning as L
import numpy as np
import torch
from keras import layers
from torch import nn

import protolab as pl

NUM_TAGS, NUM_WORDS, NUM_DEPARTMENTS = 12, 1000, 4


@pl.data
def tickets() -> dict:
    rng = np.random.default_rng(0)
    n = 1280
    title = rng.integers(NUM_WORDS, size=(n, 10))
    body = rng.integers(NUM_WORDS, size=(n, 40))
    tags = rng.integers(2, size=(n, NUM_TAGS)).astype("float32")
    department = (tags[:, :4] * [1, 2, 4, 8]).sum(axis=1).astype(np.int64) % NUM_DEPARTMENTS
    priority = (title < 100).mean(axis=1, keepdims=True).astype("float32") * 5
    return {
        "x": {"title": title, "body": body, "tags": tags},
        "y": {"priority": priority.clip(0, 1), "department": department},
    }


def ranker(title_units: int, body_units: int, lr: float) -> keras.Model:
    title_input = keras.Input(shape=(None,), name="title")
    body_input = keras.Input(shape=(None,), name="body")
    tags_input = keras.Input(shape=(NUM_TAGS,), name="tags")
    title_features = layers.Embedding(NUM_WORDS, 32)(title_input)
    body_features = layers.Embedding(NUM_WORDS, 32)(body_input)
    title_features = layers.LSTM(title_units)(title_features)
    body_features = layers.LSTM(body_units)(body_features)
    x = layers.concatenate([title_features, body_features, tags_input])
    priority_pred = layers.Dense(1, name="priority")(x)
    department_pred = layers.Dense(NUM_DEPARTMENTS, name="department")(x)
    model = keras.Model(
        inputs=[title_input, body_input, tags_input],
        outputs={"priority": priority_pred, "department": department_pred},
    )
    model.compile(
        optimizer=keras.optimizers.RMSprop(lr),
        loss={
            "priority": keras.losses.BinaryCrossentropy(from_logits=True),
            "department": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
        loss_weights={"priority": 1.0, "department": 0.2},
        metrics={"department": ["accuracy"]},
    )
    return model


class LitRanker(L.LightningModule):
    """The same ranker in torch: two embeddings and LSTMs, the tags, two heads."""

    def __init__(self, title_units: int, body_units: int, lr: float) -> None:
        super().__init__()
        self.title_emb, self.body_emb = nn.Embedding(NUM_WORDS, 32), nn.Embedding(NUM_WORDS, 32)
        self.title_lstm = nn.LSTM(32, title_units, batch_first=True)
        self.body_lstm = nn.LSTM(32, body_units, batch_first=True)
        width = title_units + body_units + NUM_TAGS
        self.priority, self.department = nn.Linear(width, 1), nn.Linear(width, NUM_DEPARTMENTS)
        self.lr = lr

    def forward(self, inputs: dict) -> dict:
        _, (title, _) = self.title_lstm(self.title_emb(inputs["title"]))
        _, (body, _) = self.body_lstm(self.body_emb(inputs["body"]))
        x = torch.cat([title[-1], body[-1], inputs["tags"]], dim=1)
        return {"priority": self.priority(x), "department": self.department(x)}

    def _losses(self, batch: tuple, stage: str) -> torch.Tensor:
        inputs, targets = batch
        out = self(inputs)
        priority = nn.functional.binary_cross_entropy_with_logits(
            out["priority"], targets["priority"]
        )
        department = nn.functional.cross_entropy(out["department"], targets["department"])
        loss = 1.0 * priority + 0.2 * department
        accuracy = (out["department"].argmax(1) == targets["department"]).float().mean()
        self.log(f"{stage}_loss", loss)
        self.log(f"{stage}_department_accuracy", accuracy)
        return loss

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        return self._losses(batch, "train")

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._losses(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(self.parameters(), lr=self.lr, alpha=0.9, eps=1e-7)


@pl.experiment(metric="val_department_accuracy")
def model(space: pl.Space) -> pl.Arch:
    title_units = space.int("title_units", 8, 64, log=True)
    body_units = space.int("body_units", 8, 32, log=True)
    lr = space.float("lr", 3e-4, 3e-3, log=True)
    return pl.native(
        keras=lambda: ranker(title_units, body_units, lr),
        torch=lambda: LitRanker(title_units, body_units, lr),
        name="ticket_ranker",
    )
