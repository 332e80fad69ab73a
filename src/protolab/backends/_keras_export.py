"""The trained-model handle of the Keras modes (any Keras backend), its checkpoint and formats.

- ``savedmodel``: ``model.export(path, format="tf_saved_model")`` (Keras' ExportArchive),
  whose endpoint is the ``serving_default`` signature TF Serving calls; written as
  ``DIR/<version>/`` (the next free version number, from 1), the layout TF Serving watches;
- ``mlflow``: the ``mlflow.keras`` flavor (Keras 3), a ``.keras`` file.

Both are written from a model rebuilt from the checkpoint with plain Keras layers (training
may use backend-specific layers such as a custom dropout), so a reloaded model needs neither
protolab nor custom objects. The weights are saved by variable path, so a checkpoint written
on one Keras backend loads on another. Nothing here imports Keras until it is used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from protolab.backends._exportable import read_arch, read_example, read_meta

if TYPE_CHECKING:
    import keras

    from protolab.arch import Arch

__all__ = ["FORMATS", "KerasModel", "load_checkpoint", "load_exported"]

FORMATS = ("savedmodel", "mlflow")
WEIGHTS = "weights.npz"
_PATHS = "__paths__"


@dataclass
class KerasModel:
    """A trained ``keras.Model``: its outputs as float32 numpy, whatever the Keras backend."""

    backend: str
    model: keras.Model
    portable: bool = False  # built from plain Keras layers (loaded from a checkpoint)
    formats: ClassVar[tuple[str, ...]] = FORMATS

    @property
    def native(self) -> keras.Model:
        return self.model

    def predict(self, x: np.ndarray) -> np.ndarray:
        import keras

        out = self.model(x, training=False)
        return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float32)

    def save_checkpoint(self, directory: Path) -> None:
        """Every weight (trainable or not, e.g. batch-norm statistics) under its path."""
        import keras

        weights = self.model.weights
        arrays: dict[str, Any] = {
            f"w{i}": keras.ops.convert_to_numpy(w.value) for i, w in enumerate(weights)
        }
        arrays[_PATHS] = np.array(json.dumps([w.path for w in weights]))
        np.savez(directory / WEIGHTS, **arrays)

    def export(self, fmt: str, out: Path, checkpoint: Path) -> Path:
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r}: {self.backend} writes {', '.join(FORMATS)}")
        model = self.model if self.portable else load_checkpoint(self.backend, checkpoint).model
        if fmt == "savedmodel":
            return _savedmodel(model, out)
        return _mlflow(model, read_example(checkpoint), out)


def load_checkpoint(backend: str, directory: Path, arch: Arch | None = None) -> KerasModel:
    """The trained model a checkpoint holds, built with plain Keras layers; ``arch``: the
    Arch rebuilt from the user's script, for one ``arch.json`` cannot rebuild (``pl.native``)."""
    from protolab.backends._keras_nn import build_keras

    meta = read_meta(directory)
    model = build_keras(arch or read_arch(directory), meta.input_shape, meta.input_dtype)
    with np.load(directory / WEIGHTS, allow_pickle=False) as saved:  # arrays only, no objects
        paths = json.loads(str(saved[_PATHS]))
        have = [w.path for w in model.weights]
        if _unnumbered(paths) != _unnumbered(have) or any(
            tuple(saved[f"w{i}"].shape) != tuple(w.shape) for i, w in enumerate(model.weights)
        ):
            raise ValueError(
                f"{directory}: the checkpoint's weights {paths[:3]}... do not match the "
                f"architecture's {have[:3]}..."
            )
        for i, w in enumerate(model.weights):
            w.assign(saved[f"w{i}"])
    return KerasModel(backend, model, portable=True)


def _unnumbered(paths: list[str]) -> list[str]:
    """Weight paths without Keras' per-process numbering (``conv1d_12`` -> ``conv1d``): a
    model its own builder names (``pl.native``) is numbered by how many were built before."""
    return [re.sub(r"_\d+(?=/|$)", "", p) for p in paths]


def _next_version(base: Path) -> Path:
    """TF Serving loads the highest numbered folder under the model's base path."""
    numbers = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return base / str(max(numbers, default=0) + 1)


def _savedmodel(model: keras.Model, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = _next_version(out)
    model.export(str(target), format="tf_saved_model", verbose=False)
    return target


def _mlflow(model: keras.Model, example: np.ndarray, out: Path) -> Path:
    import keras
    import mlflow.keras
    from mlflow.models import infer_signature

    outputs = np.asarray(keras.ops.convert_to_numpy(model(example, training=False)))
    signature = infer_signature(example, outputs)
    framework = keras.backend.backend()
    requirements = [
        f"keras=={keras.__version__}",
        f"{framework}=={_version(framework)}",
        f"mlflow=={mlflow.__version__}",
    ]
    out.mkdir(parents=True, exist_ok=True)  # the flavor writes into it (torch's makes its own)
    mlflow.keras.save_model(
        model, str(out), signature=signature, input_example=example, pip_requirements=requirements
    )
    return out


def _version(package: str) -> str:
    import importlib.metadata

    for dist in (package, f"{package}-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


@dataclass
class _Serving:
    """A SavedModel's ``serving_default`` signature, as TF Serving would call it."""

    fn: Any
    name: str
    loaded: Any  # the signature needs its SavedModel object alive

    def predict(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        out = self.fn(**{self.name: tf.constant(x)})
        return np.asarray(next(iter(out.values())).numpy(), dtype=np.float32)


def load_exported(fmt: str, directory: Path, trust: bool = False) -> _Serving:
    """The newest SavedModel version under ``directory`` (TensorFlow only, no Keras).

    Read the same way trusted or not: its ``serving_default`` signature is a TensorFlow
    graph, called as TF Serving calls it; no Python from the folder runs (no Keras
    deserialisation, no custom objects).
    """
    del trust
    if fmt != "savedmodel":
        raise ValueError(f"format {fmt!r} has no local reader; allowed: savedmodel")
    import tensorflow as tf

    numbers = [int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    loaded = tf.saved_model.load(str(directory / str(max(numbers))))
    fn = loaded.signatures["serving_default"]
    name = next(iter(fn.structured_input_signature[1]))
    return _Serving(fn, name, loaded)
