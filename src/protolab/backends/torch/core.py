"""PyTorch set-up shared by the eager and compiled modes: optimizer, loss, precision, probe."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from protolab.backends._base import Job, loss_name
from protolab.backends._optimizers import CUSTOM, torch_arguments

__all__ = ["PRECISION", "LossFn", "gemm", "optimizer", "torch_loss"]

# hardware.precision -> Lightning Fabric's precision plugin names
PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


def optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    wd: float,
    options: Mapping[str, Any] | None = None,
    custom: object | None = None,
) -> torch.optim.Optimizer:
    """The optimizer named in the config, as ``backends/_optimizers.py`` maps it (the Keras
    side reads the same table), or the script's ``protolab.Optimizer(torch=...)`` factory.

    ``options`` were checked against the optimizer by the config; unset ones keep
    protolab's one default for both families (eps 1e-7, SGD momentum 0.9, ...).
    """
    if name == CUSTOM:
        factory = getattr(custom, "torch", None)
        if factory is None:
            raise ValueError(
                "train.optimizer is custom, but the script's protolab.Optimizer has no torch="
            )
        opt = factory(params, lr)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(
                "protolab.Optimizer(torch=...) must return a torch.optim.Optimizer, "
                f"but returned {type(opt).__name__}"
            )
        return opt
    cls, kwargs = torch_arguments(name, dict(options or {}), wd)
    opt_cls: Callable[..., torch.optim.Optimizer] = getattr(torch.optim, cls)
    return opt_cls(params, lr=lr, **kwargs)


def gemm(n: int, dtype: str) -> Callable[[], None]:
    """One synchronous n x n matmul on the default device (the MFU peak probe)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))

    def run() -> None:
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def torch_loss(job: Job) -> LossFn:
    """The job's loss as ``fn(outputs, targets)``, the formulas of ``_keras_optim.keras_loss``.

    Outputs are logits, or probabilities when the Arch ends in a softmax
    (``Arch.output_activation``): those are normalised, clipped to [1e-7, 1 - 1e-7] and
    logged as Keras does, never softmaxed twice.
    """
    tr, ds = job.train, job.dataset
    name = loss_name(tr, ds.task)
    if name == "custom":
        fn = getattr(tr.custom_loss, "torch", None)
        if fn is None:
            raise ValueError("train.loss is custom, but the script's protolab.Loss has no torch=")
        return fn
    probs = getattr(job.arch, "output_activation", None) == "softmax"
    smooth = float(tr.label_smoothing)
    if name == "cross_entropy":
        if probs:
            return lambda out, y: _prob_cross_entropy(out.float(), y, smooth)
        return lambda out, y: F.cross_entropy(out.float(), y, label_smoothing=smooth)
    pointwise = {
        "mse": F.mse_loss,
        "mae": F.l1_loss,
        "huber": lambda a, b: F.huber_loss(a, b, delta=1.0),
    }[name]
    if ds.task != "classification":
        return lambda out, y: pointwise(out.float(), y.float())
    return lambda out, y: pointwise(out.float(), F.one_hot(y, out.shape[-1]).float())


def _prob_cross_entropy(p: torch.Tensor, y: torch.Tensor, smooth: float) -> torch.Tensor:
    """Cross-entropy of probabilities with Keras' normalising and clipping (epsilon 1e-7)."""
    p = p / p.sum(-1, keepdim=True)
    logp = torch.log(p.clamp(1e-7, 1.0 - 1e-7))
    classes = p.shape[-1]
    target = F.one_hot(y, classes).float() * (1.0 - smooth) + smooth / classes
    return -(target * logp).sum(-1).mean()
