"""The trained-model handle of the PyTorch modes: what export and a warm process reuse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TorchModel"]


@dataclass
class TorchModel:
    """A trained ``nn.Module`` (the uncompiled original, so it exports and pickles)."""

    backend: str
    module: torch.nn.Module

    @property
    def native(self) -> torch.nn.Module:
        return self.module

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.module.eval()
        device = next(self.module.parameters()).device
        with torch.no_grad():
            out = self.module(torch.as_tensor(x, device=device))
        return out.float().cpu().numpy()
