"""A conv net fed by its own DataLoader with augmentation: PyTorch's MNIST example, as it is.

Original: https://github.com/pytorch/examples/blob/main/mnist/main.py (``Net``: two
convolutions, max-pooling, dropout, two linear layers; ``F.nll_loss`` of a log-softmax;
Adadelta with ``lr=1.0`` and ``StepLR(step_size=1, gamma=0.7)``). Here it is a
``LightningModule`` (its ``training_step`` is the original's loop body) and its twin a
compiled ``keras.Model``; both train on **the same DataLoader**, the user's, with the
original's random-affine augmentation written as a ``Dataset`` transform (a shift of up to
one pixel and Gaussian noise; torchvision is not a dependency). Keras' ``fit`` reads the
DataLoader through its own adapter; the validation DataLoader is read once into memory so
every mode scores the same rows. Sizes differ from the original: scikit-learn's 8x8 digits
instead of 28x28 MNIST (no download), so 3x3 convolutions with fewer filters and one pool.

The augmentation strength is searched: ``@pl.data`` takes the space.

Run it: ``protolab sweep configs/port_dataloader_convnet.yaml``.
"""

import keras
import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn, optim
from torch.utils.data import DataLoader, Dataset

import protolab as pl


class Digits(Dataset):
    """scikit-learn's digits as (1, 8, 8) float images in [0, 1], with an optional shift."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, shift: int, noise: float) -> None:
        self.images = torch.tensor(images, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.shift, self.noise = shift, noise

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        if self.shift:  # RandomAffine(translate=...) on 8x8: up to `shift` pixels each way
            dy, dx = torch.randint(-self.shift, self.shift + 1, (2,)).tolist()
            image = torch.roll(image, shifts=(dy, dx), dims=(1, 2))
        if self.noise:
            image = image + self.noise * torch.randn_like(image)
        return image, self.labels[i]


class Net(nn.Module):
    def __init__(self, filters: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters, 3, 1)
        self.conv2 = nn.Conv2d(filters, 2 * filters, 3, 1)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(2 * dropout)
        self.fc1 = nn.Linear(2 * filters * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


class LitNet(L.LightningModule):
    def __init__(self, filters: int, dropout: float, lr: float) -> None:
        super().__init__()
        self.net, self.lr = Net(filters, dropout), lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        data, target = batch
        return F.nll_loss(self(data), target)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        data, target = batch
        output = self(data)
        self.log("val_loss", F.nll_loss(output, target))
        self.log("val_acc", (output.argmax(dim=1) == target).float().mean())

    def configure_optimizers(self) -> dict:
        optimizer = optim.Adadelta(self.parameters(), lr=self.lr)
        scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def keras_net(filters: int, dropout: float, lr: float) -> keras.Model:
    """The same Net in Keras, reading the DataLoader's (1, 8, 8) images (channels first)."""
    inputs = keras.Input((1, 8, 8))
    x = keras.layers.Permute((2, 3, 1))(inputs)
    x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
    x = keras.layers.Conv2D(2 * filters, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.Dropout(2 * dropout)(x)
    outputs = keras.layers.Dense(10, activation="log_softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adadelta(learning_rate=lr, rho=0.9, epsilon=1e-6),
        loss=lambda y, logp: keras.ops.mean(
            -keras.ops.take_along_axis(logp, keras.ops.cast(y[:, None], "int32"), axis=1)
        ),
        metrics=["sparse_categorical_accuracy"],
    )
    return model


def step_lr() -> list:
    """StepLR(step_size=1, gamma=0.7) as a Keras callback: the rate times 0.7 each epoch."""
    return [keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch == 0 else lr * 0.7)]


@pl.data
def digits(space: pl.Space) -> pl.Data:
    images, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(labels))
    train, val = order[:1400], order[1400:]
    shift = space.choice("shift", [0, 1])
    noise = space.float("noise", 0.0, 0.2)
    loader = DataLoader(
        Digits(images[train], labels[train], shift, noise), batch_size=64, shuffle=True
    )
    val_loader = DataLoader(Digits(images[val], labels[val], 0, 0.0), batch_size=256)
    return pl.Data(train=loader, val=val_loader)


@pl.experiment()
def model(space: pl.Space) -> pl.Arch:
    filters = space.int("filters", 8, 32, log=True)
    dropout = space.float("dropout", 0.1, 0.3)
    lr = space.float("lr", 0.3, 1.0)
    return pl.native(
        torch=lambda: LitNet(filters, dropout, lr),
        keras=lambda: keras_net(filters, dropout, lr),
        keras_callbacks=step_lr,
        name="mnist_net",
    )
