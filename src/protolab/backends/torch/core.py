"""PyTorch set-up shared by the eager and compiled modes: optimizers, precision, the probe."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

__all__ = ["PRECISION", "gemm", "optimizer"]

# hardware.precision -> Lightning Fabric's precision plugin names
PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


def optimizer(
    params: Iterable[torch.nn.Parameter], name: str, lr: float, wd: float
) -> torch.optim.Optimizer:
    """The optimizer named in the config, with Keras 3's defaults so both families match.

    Weight decay is decoupled for every optimizer, as Keras 3 applies it on both sides.
    """
    if name in ("adam", "adamw"):
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, eps=1e-7)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


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
