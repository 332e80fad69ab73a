"""Trained weights that outlive a job, and the formats each backend exports them to.

A **checkpoint** is a directory: ``checkpoint.json`` (backend, input shape and dtype, task,
where it came from), ``arch.json``, ``example.npy`` (a few validation inputs: what an export
traces and an MLflow signature is made from) and the backend's own weights file.

Each backend package's ``export`` module (found from the registry's import path, like its
``core``/``nn``/``trainer``) declares what it can write and how to read it back, importing no
framework until asked:

- ``FORMATS``: the format names its handle writes (keys of :data:`FORMATS` below);
- ``load_checkpoint(backend, directory) -> handle``: the trained model, rebuilt;
- ``load_exported(fmt, directory) -> predictor``: an exported directory, for a quick check.

Its handle adds ``formats``, ``save_checkpoint(directory)`` and ``export(fmt, out,
checkpoint) -> path`` to :class:`~protolab.backends.TrainedModel`. A backend that runs in a
worker process of its own (``ProcessBackend``) loads and exports there.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from protolab.backends._registry import backend_info, backend_names, get_backend
from protolab.errors import UserInputError

if TYPE_CHECKING:
    from protolab.arch import Arch
    from protolab.data import Dataset

__all__ = [
    "EXPORT_META",
    "FORMATS",
    "META",
    "CheckpointMeta",
    "ExportableModel",
    "Predictor",
    "all_formats",
    "backend_formats",
    "export_module",
    "load_exported",
    "load_trained",
    "read_arch",
    "read_example",
    "read_meta",
    "write_checkpoint",
]

# Every format some built-in backend writes, with what it is (for help and errors).
FORMATS: dict[str, str] = {
    "mlflow": "an MLflow Model, logged and registered (alias champion on the study's best)",
    "savedmodel": "TensorFlow SavedModel for TF Serving: DIR/<version>/, serving_default",
    "pt2": "a torch.export program: DIR/model.pt2 (torch.export.load)",
    "onnx": "ONNX: DIR/model.onnx (onnxruntime)",
    "hub": "a torch.hub directory: torch.hub.load(DIR, 'model', source='local')",
}
META = "checkpoint.json"  # in a checkpoint directory
EXPORT_META = "protolab.json"  # in an exported directory: what it is, where it came from
ARCH = "arch.json"
EXAMPLE = "example.npy"
_EXAMPLE_ROWS = 8


class Predictor(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs (logits or values) for a batch of inputs, as float32 numpy."""


class ExportableModel(Protocol):
    """A trained-model handle that keeps and exports its weights."""

    backend: str

    @property
    def formats(self) -> tuple[str, ...]: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def save_checkpoint(self, directory: Path) -> None:
        """Write the weights file(s) into ``directory`` (the rest is :func:`write_checkpoint`'s)."""

    def export(self, fmt: str, out: Path, checkpoint: Path) -> Path:
        """Write ``fmt`` under ``out``, from ``checkpoint``'s metadata; return what it wrote."""


@dataclass(frozen=True)
class CheckpointMeta:
    """``checkpoint.json``: what a checkpoint holds and where it came from."""

    backend: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    task: str  # classification | regression
    arch_hash: str
    study: str = ""
    trial: int | None = None
    metric: str = ""
    value: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def write_checkpoint(
    model: ExportableModel, directory: Path, arch: Arch, dataset: Dataset, **info: Any
) -> CheckpointMeta:
    """Keep ``model``'s weights in ``directory`` with everything needed to rebuild it."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_checkpoint(directory)
    meta = CheckpointMeta(
        backend=model.backend,
        input_shape=tuple(dataset.input_shape),
        input_dtype=dataset.input_dtype,
        output_shape=tuple(dataset.output_shape),
        task=dataset.task,
        arch_hash=arch.hash,
        **info,
    )
    (directory / ARCH).write_text(arch.to_json(indent=2))
    example = np.asarray(dataset.x_val[:_EXAMPLE_ROWS])
    if len(example) < 2:  # an export's batch axis is dynamic: trace it with two rows at least
        example = np.concatenate([example, example])[:2]
    np.save(directory / EXAMPLE, example.astype(dataset.input_dtype))
    (directory / META).write_text(json.dumps(asdict(meta), indent=2))
    return meta


def read_meta(directory: Path) -> CheckpointMeta:
    data = json.loads((directory / META).read_text())
    data["input_shape"] = tuple(data["input_shape"])
    data["output_shape"] = tuple(data["output_shape"])
    return CheckpointMeta(**data)


def read_arch(directory: Path) -> Arch:
    from protolab.arch import Arch

    return Arch.from_json((directory / ARCH).read_text())


def read_example(directory: Path) -> np.ndarray:
    return np.asarray(np.load(directory / EXAMPLE))


def export_module(name: str) -> ModuleType | None:
    """Backend ``name``'s ``export`` module (beside the module its class lives in), if any."""
    package = backend_info(name).target.partition(":")[0]
    try:
        return importlib.import_module(f"{package}.export")
    except ModuleNotFoundError as e:
        if e.name is not None and f"{package}.export".startswith(e.name):
            return None  # no export module: the backend exports nothing
        raise


def backend_formats(name: str) -> tuple[str, ...]:
    """The formats backend ``name`` exports (none for a backend without an export module)."""
    module = export_module(name)
    return tuple(getattr(module, "FORMATS", ())) if module is not None else ()


def all_formats() -> list[str]:
    """Every format some registered backend writes: the known ones first, in their order."""
    found = {f for name in backend_names() for f in backend_formats(name)}
    return [f for f in FORMATS if f in found] + sorted(found - set(FORMATS))


def load_trained(directory: Path, arch: Arch | None = None) -> ExportableModel:
    """The model a checkpoint holds, rebuilt by its backend (in that backend's process).

    ``arch``: the Arch rebuilt by running the user's own script, for a checkpoint whose
    ``arch.json`` cannot rebuild it (a ``pl.native`` model: its builders are code). Only
    in-process backends take one: a worker process would have to run the script itself.
    """
    name = read_meta(directory).backend
    backend: Any = get_backend(name)
    restore = getattr(backend, "restore", None)
    if callable(restore) and arch is not None:
        raise UserInputError(
            f"--backend: {name!r} loads checkpoints in a worker process of its own, which "
            "cannot rebuild a native model (pl.native) from your script yet; export or "
            "predict this trial's run on another mode of the study (--backend), or sweep it "
            "on one that loads in-process too"
        )
    if callable(restore):  # runs in a worker process of its own: the model lives there
        model: ExportableModel = restore(directory)
        return model
    module = export_module(name)
    if module is None or not hasattr(module, "load_checkpoint"):
        raise ValueError(f"backend {name!r} cannot load checkpoints (no export module)")
    for key, value in backend.env_defaults.items():  # the framework's process environment,
        os.environ.setdefault(key, value)  # before it is imported (no training imports)
    os.environ.update(backend.environ)
    extra = {"arch": arch} if arch is not None else {}  # export modules without it still load
    loaded: ExportableModel = module.load_checkpoint(name, directory, **extra)
    return loaded


def load_exported(directory: Path, trust: bool = False) -> tuple[Predictor, dict[str, Any]]:
    """An exported directory (its ``protolab.json`` says what it is) and that metadata.

    ``trust``: the folder's author is trusted, so a format whose reader can run code from it
    (a backend's ``CODE_FORMATS``) may be read; untrusted, its module refuses or reads it
    the safe way.
    """
    meta = json.loads((directory / EXPORT_META).read_text())
    module = export_module(meta["backend"])
    if module is None or meta["format"] not in getattr(module, "FORMATS", ()):
        raise ValueError(f"backend {meta['backend']!r} cannot read format {meta['format']!r}")
    extra = {"trust": True} if trust else {}  # export modules without it read no code
    predictor: Predictor = module.load_exported(meta["format"], directory, **extra)
    return predictor, meta
