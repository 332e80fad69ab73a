"""The trained-model handle of the Keras modes (any Keras backend)."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

__all__ = ["KerasModel"]


@dataclass
class KerasModel:
    """A trained ``keras.Model``: its outputs as float32 numpy, whatever the Keras backend."""

    backend: str
    model: keras.Model

    @property
    def native(self) -> keras.Model:
        return self.model

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self.model(x, training=False)
        return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float32)
