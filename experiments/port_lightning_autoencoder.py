"""Port of Lightning's own ``LitAutoEncoder``, as it is: a LightningModule brought in unchanged.

Original: "Lightning in 15 minutes" (https://lightning.ai/docs/pytorch/stable/starter/
introduction.html, step 2: ``LitAutoEncoder`` with its ``training_step`` and
``configure_optimizers``) and "Validate and test a model (basic)" (https://lightning.ai/docs/
pytorch/stable/common/evaluation_basic.html: the same module's ``validation_step``). The
class below is the docs' code; only the sizes differ: digits' 8x8 = 64 inputs instead of
MNIST's 28x28 = 784, with the hidden width (64) and the code size (3) searchable around the
originals. It has no ``forward``: protolab trains it through Lightning's ``Trainer`` and its
own ``training_step`` (protolab's optimizer, loss and learning rate do not apply: the config
sets none), and its logged ``val_loss`` is the objective, under its own name.

Run it: ``protolab sweep configs/port_lightning_autoencoder.yaml``.
"""

import lightning as L
from torch import nn, optim

import protolab as pl


# define the LightningModule
class LitAutoEncoder(L.LightningModule):
    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def training_step(self, batch, batch_idx):
        # training_step defines the train loop.
        # it is independent of forward
        x, _ = batch
        x = x.view(x.size(0), -1)
        z = self.encoder(x)
        x_hat = self.decoder(z)
        loss = nn.functional.mse_loss(x_hat, x)
        # Logging to TensorBoard (if installed) by default
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        # this is the validation loop
        x, _ = batch
        x = x.view(x.size(0), -1)
        z = self.encoder(x)
        x_hat = self.decoder(z)
        val_loss = nn.functional.mse_loss(x_hat, x)
        self.log("val_loss", val_loss)

    def configure_optimizers(self):
        optimizer = optim.Adam(self.parameters(), lr=1e-3)
        return optimizer


def autoencoder(hidden: int = 64, code: int = 3, inputs: int = 8 * 8) -> LitAutoEncoder:
    """The docs' ``encoder``, ``decoder`` and ``LitAutoEncoder(encoder, decoder)``, made anew
    on every call (the docs make them once, at import: a sweep must not, see porting.md)."""
    encoder = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, code))
    decoder = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, inputs))
    return LitAutoEncoder(encoder, decoder)


@pl.experiment(data="digits", metric="val_loss")
def model(space: pl.Space) -> pl.Arch:
    hidden = space.int("hidden", 16, 256, log=True)
    code = space.int("code", 1, 9, log=True)  # the middle of both ranges: the docs' 64, 3
    return pl.native(torch=lambda: autoencoder(hidden, code), name="lit_autoencoder")
