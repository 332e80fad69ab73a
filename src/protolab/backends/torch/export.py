"""The trained-model handle of the PyTorch modes, its checkpoint and its export formats.

- ``pt2``: ``torch.export.export`` + ``torch.export.save`` (``DIR/model.pt2``);
- ``onnx``: ``torch.onnx.export(..., dynamo=True)`` (needs ``onnx`` + ``onnxscript``;
  ``DIR/model.onnx``, input ``input``, output ``output``);
- ``hub``: ``DIR/hubconf.py`` + ``weights.pt`` + ``arch.json``, so that
  ``torch.hub.load(DIR, "model", source="local")`` returns the trained module;
- ``mlflow``: the ``mlflow.pytorch`` flavor in its ``pt2`` serialization.

Every export has a dynamic batch axis (traced with the checkpoint's example inputs). Nothing
here imports torch until it is used, so listing the formats is free.

Reading back (``protolab predict DIR``) runs no code from the folder unless trusted: ``onnx``
is data for onnxruntime; a ``hub`` folder is read as the checkpoint it holds (``arch.json``,
``weights.pt`` with ``weights_only=True``), its ``hubconf.py`` imported only when trusted;
``pt2`` is refused untrusted (:data:`CODE_FORMATS`: ``torch.export.load`` unpickles).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from protolab.backends._exportable import ARCH, META, read_arch, read_example, read_meta
from protolab.errors import UserInputError

if TYPE_CHECKING:
    import torch

    from protolab.arch import Arch

__all__ = ["CODE_FORMATS", "FORMATS", "TorchModel", "load_checkpoint", "load_exported"]

FORMATS = ("pt2", "onnx", "hub", "mlflow")
# Formats whose reader can run code from the file, and why: read only when trusted.
CODE_FORMATS = {
    "pt2": "torch.export.load unpickles parts of model.pt2 (weights_only=False), which can "
    "run any code",
}
WEIGHTS = "weights.pt"
_FILES = {"pt2": "model.pt2", "onnx": "model.onnx"}

_HUBCONF = '''"""torch.hub entry point written by `protolab export --format hub`.

    model = torch.hub.load(DIR, "model", source="local")   # the trained module, eval mode
"""

dependencies = ["torch", "protolab"]


def model(pretrained: bool = True):
    """The trained model (``pretrained=False``: the same architecture, freshly initialised)."""
    import json
    from pathlib import Path

    import torch

    from protolab.arch import Arch
    from protolab.backends.torch.nn import build_torch

    here = Path(__file__).resolve().parent
    meta = json.loads((here / "checkpoint.json").read_text())
    arch = Arch.from_json((here / "arch.json").read_text())
    net = build_torch(arch, meta["input_shape"], meta["input_dtype"])
    if pretrained:
        state = torch.load(here / "weights.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    return net.eval()
'''


@dataclass
class TorchModel:
    """A trained ``nn.Module`` (the uncompiled original, so it exports and pickles)."""

    backend: str
    module: torch.nn.Module
    formats: ClassVar[tuple[str, ...]] = FORMATS

    @property
    def native(self) -> torch.nn.Module:
        return self.module

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _predict(self.module, x)

    def save_checkpoint(self, directory: Path) -> None:
        import torch

        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        torch.save(state, directory / WEIGHTS)

    def export(self, fmt: str, out: Path, checkpoint: Path) -> Path:
        """Write ``fmt`` under ``out`` (a folder; ``mlflow``: the MLflow Model folder)."""
        import torch

        writers = {"pt2": _pt2, "onnx": _onnx, "hub": _hub, "mlflow": _mlflow}
        if fmt not in writers:
            raise ValueError(f"format {fmt!r}: {self.backend} writes {', '.join(FORMATS)}")
        module = copy.deepcopy(self.module).cpu().eval()  # the handle itself stays as it is
        example = torch.as_tensor(read_example(checkpoint))
        out.mkdir(parents=True, exist_ok=fmt != "mlflow")
        if fmt == "mlflow":
            out.rmdir()  # MLflow creates the folder itself
        with torch.no_grad():
            return writers[fmt](module, example, out, checkpoint)


def _predict(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    import torch

    module.eval()
    device = next(iter(module.parameters()), torch.empty(0)).device
    with torch.no_grad():
        out = module(torch.as_tensor(x, device=device))
    return np.asarray(out.float().cpu().numpy())


def _batch_dim() -> Any:
    import torch

    return torch.export.Dim("batch")


def _pt2(module: torch.nn.Module, example: torch.Tensor, out: Path, ckpt: Path) -> Path:
    import torch

    program = torch.export.export(module, (example,), dynamic_shapes=({0: _batch_dim()},))
    path = out / _FILES["pt2"]
    torch.export.save(program, path)
    return path


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence the exporters' progress lines and optional-dependency warnings."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _onnx(module: torch.nn.Module, example: torch.Tensor, out: Path, ckpt: Path) -> Path:
    import torch

    path = out / _FILES["onnx"]
    with _quiet("torch.onnx", "torch.export", "onnxscript"):
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: _batch_dim()},),
            input_names=["input"],
            output_names=["output"],
            verbose=False,
        )
        assert program is not None
        program.save(str(path))
    return path


def _hub(module: torch.nn.Module, example: torch.Tensor, out: Path, ckpt: Path) -> Path:
    import torch

    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, out / WEIGHTS)
    for name in (ARCH, META):
        shutil.copyfile(ckpt / name, out / name)
    (out / "hubconf.py").write_text(_HUBCONF)
    return out / "hubconf.py"


def _mlflow(module: torch.nn.Module, example: torch.Tensor, out: Path, ckpt: Path) -> Path:
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    x = example.numpy()
    signature = infer_signature(x, module(example).numpy())
    requirements = [f"torch=={torch.__version__}", f"mlflow=={mlflow.__version__}", "numpy"]
    with _quiet("mlflow", "torch.export"):
        mlflow.pytorch.save_model(
            module,
            str(out),
            serialization_format="pt2",
            signature=signature,
            input_example=x,
            pip_requirements=requirements,
        )
    return out


def load_checkpoint(backend: str, directory: Path, arch: Arch | None = None) -> TorchModel:
    """The trained module a checkpoint holds (on the CPU, eval mode); ``arch``: the Arch
    rebuilt from the user's script, for one ``arch.json`` cannot rebuild (``pl.native``)."""
    import torch

    from protolab.backends.torch.nn import build_torch

    meta = read_meta(directory)
    net = build_torch(arch or read_arch(directory), meta.input_shape, meta.input_dtype)
    try:  # weights_only: tensors and plain containers, never an object that runs code
        state = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"it holds a {type(state).__name__}, not a state dict")
        _owner(net, state).load_state_dict(state)
    except (pickle.UnpicklingError, RuntimeError, TypeError, ValueError, EOFError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserInputError(
            f"{directory / WEIGHTS}: not the weights protolab kept for this architecture "
            f"({type(e).__name__}: {first}); it was damaged or replaced: refused"
        ) from None
    return TorchModel(backend, net.eval())


def _owner(net: torch.nn.Module, state: dict[str, Any]) -> torch.nn.Module:
    """The module whose weights ``state`` holds: the whole net, or (a model trained in its
    own loop, a LightningModule, keeps its own ``state_dict``) the native module inside it."""
    keys = set(state)
    if set(net.state_dict()) == keys:
        return net
    return next((m for m in net.modules() if set(m.state_dict()) == keys), net)


@dataclass
class _Exported:
    """A reloaded export (pt2, hub: a module; onnx: an onnxruntime session)."""

    run: Any

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(x), dtype=np.float32)


def load_exported(fmt: str, directory: Path, trust: bool = False) -> _Exported:
    """An exported directory, read back with the format's own runtime.

    Untrusted (the default), nothing in the folder runs: ``pt2`` is refused (exit 2) and a
    ``hub`` folder is read as the checkpoint it holds, without importing its ``hubconf.py``.
    """
    if fmt in CODE_FORMATS and not trust:
        raise UserInputError(
            f"MODEL_OR_RUN: {directory} is a {fmt} export: {CODE_FORMATS[fmt]}; load it only "
            "if you trust whoever wrote it, with --trust (or PROTOLAB_TRUST=1); else predict "
            "its run id (protolab.json's run_id), or an onnx or hub export of it"
        )
    if fmt == "hub" and not trust:
        return _Exported(load_checkpoint("hub", directory).predict)
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(directory / _FILES["onnx"]), providers=["CPUExecutionProvider"]
        )
        name = session.get_inputs()[0].name
        return _Exported(lambda x: session.run(None, {name: x})[0])
    import torch

    if fmt == "pt2":
        module = torch.export.load(directory / _FILES["pt2"]).module()
    elif fmt == "hub":
        module = torch.hub.load(str(directory), "model", source="local")
    else:
        raise ValueError(f"format {fmt!r} has no local reader; allowed: pt2, onnx, hub")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(module(torch.as_tensor(x)).float().numpy())

    return _Exported(run)
