"""Port of Optuna's PyTorch Lightning example: an MLP whose depth, widths and dropout mutate.

Original: https://github.com/optuna/optuna-examples/blob/main/pytorch/pytorch_lightning_simple.py
(``Net``/``LightningNet``/``objective``). The search space is the original's, name for name:
``n_layers`` in 1..3, one shared ``dropout`` in [0.2, 0.5], ``n_units_l{i}`` in 4..128 (log).
Each hidden layer is Linear -> ReLU -> Dropout; the head is a Linear to the classes, then
``log_softmax`` (log-probabilities are valid logits: protolab's cross-entropy on them is
the original's ``nll_loss``). Every Linear starts as torch's ``nn.Linear`` default
(``torch_default``: weights and biases U(±1/sqrt(fan_in))), on both backends. The config
sets torch's Adam epsilon (1e-8) and keeps the ragged last batch, as the original's
DataLoader does. Data: protolab's built-in ``digits`` (8x8, 10 classes) instead of
FashionMNIST (28x28), never downloaded. See docs/porting.md.

Run it paired: ``protolab sweep configs/port_lightning_mlp.yaml``.
"""

import protolab as pl
from protolab import layers as L

# nn.Linear's own initialisation: U(±1/sqrt(in_features)) for weight and bias
TORCH = {"kernel_initializer": "torch_default", "bias_initializer": "torch_default"}


def mlp(dropout: float, output_dims: list[int], classes: int = 10) -> pl.Arch:
    """The original's ``Net(dropout, output_dims)``: ``data.view(-1, 28 * 28)`` is Flatten."""
    body = []
    for dim in output_dims:
        body += [L.Dense(dim, activation="relu", **TORCH), L.Dropout(dropout)]
    return pl.Arch(L.Flatten(), *body, L.Dense(classes, **TORCH), L.Activation("log_softmax"))


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    # the original's objective(): the same names, ranges and order of suggestions
    n_layers = space.int("n_layers", 1, 3)
    dropout = space.float("dropout", 0.2, 0.5)
    output_dims = [space.int(f"n_units_l{i}", 4, 128, log=True) for i in range(n_layers)]
    return mlp(dropout, output_dims)
