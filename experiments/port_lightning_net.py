"""Port of Optuna's PyTorch Lightning example with its LightningModule as it is.

Original: https://github.com/optuna/optuna-examples/blob/main/pytorch/pytorch_lightning_simple.py
(``Net``, ``LightningNet`` and the search space of ``objective``). ``port_lightning_mlp.py``
rewrites the same model as a protolab Arch; this port keeps the original's classes, code
for code, so Lightning's ``Trainer`` runs its own ``training_step`` (NLL of the
log-softmax), ``validation_step`` (logs ``val_acc``, the original's objective, here the
study's too) and ``configure_optimizers`` (Adam, torch's defaults). Only the sizes differ:
digits' 8x8 = 64 inputs instead of FashionMNIST's 28x28; ``CLASSES`` is 10 in both. The
original's FashionMNIST DataModule becomes protolab's built-in ``digits`` arrays, fed as
``(data, target)`` batches of the config's batch size (the original's 128). protolab also
reports ``val/acc`` from the module's ``forward`` over the whole validation split, the
same figure every other mode reports, so the two ports can be compared.

Run it: ``protolab sweep configs/port_lightning_net.yaml``.
"""

from typing import List  # noqa: UP035 - the original's code, as it is

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn, optim

import protolab

CLASSES = 10


class Net(nn.Module):
    def __init__(self, dropout: float, output_dims: List[int]) -> None:  # noqa: UP006
        super().__init__()
        layers: List[nn.Module] = []  # noqa: UP006

        input_dim: int = 8 * 8
        for output_dim in output_dims:
            layers.append(nn.Linear(input_dim, output_dim))
            layers.append(nn.ReLU())
            layers.append(nn.Dropout(dropout))
            input_dim = output_dim

        layers.append(nn.Linear(input_dim, CLASSES))

        self.layers = nn.Sequential(*layers)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        logits = self.layers(data)
        return F.log_softmax(logits, dim=1)


class LightningNet(pl.LightningModule):
    def __init__(self, dropout: float, output_dims: List[int]) -> None:  # noqa: UP006
        super().__init__()
        self.model = Net(dropout, output_dims)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        return self.model(data.view(-1, 8 * 8))

    def training_step(self, batch: List[torch.Tensor], batch_idx: int) -> torch.Tensor:  # noqa: UP006
        data, target = batch
        output = self(data)
        return F.nll_loss(output, target)

    def validation_step(self, batch: List[torch.Tensor], batch_idx: int) -> None:  # noqa: UP006
        data, target = batch
        output = self(data)
        pred = output.argmax(dim=1, keepdim=True)
        accuracy = pred.eq(target.view_as(pred)).float().mean()
        self.log("val_acc", accuracy)
        self.log("hp_metric", accuracy, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> optim.Optimizer:
        return optim.Adam(self.model.parameters())


@protolab.experiment(data="digits", metric="val_acc")
def model(space: protolab.Space) -> protolab.Arch:
    # the original's objective(): the same names, ranges and order of suggestions
    n_layers = space.int("n_layers", 1, 3)
    dropout = space.float("dropout", 0.2, 0.5)
    output_dims = [space.int(f"n_units_l{i}", 4, 128, log=True) for i in range(n_layers)]
    return protolab.native(torch=lambda: LightningNet(dropout, output_dims), name="lightning_net")
