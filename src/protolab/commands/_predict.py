"""``protolab predict MODEL_OR_RUN FILE.npz``: a quick check of a kept or exported model.

MODEL_OR_RUN is an exported folder (``protolab export``; it holds ``protolab.json``), a
checkpoint folder, an MLflow model URI (``models:/NAME@champion``, ``runs:/ID/model``) or
the id of a child run whose checkpoint is kept. FILE.npz holds the inputs as ``x`` (or
``x_val`` / ``x_test``) and, optionally, the targets as ``y`` (``y_val`` / ``y_test``).

The trust boundary: a tracking store is shared (anyone who can write to it can register a
model or move an alias) and an export folder may come from anywhere, so by default predict
runs no code it reads. It loads what protolab wrote and reads as data: a checkpoint
(``arch.json`` of registered layers, weights with ``weights_only=True``), an ONNX file, a
SavedModel signature, a ``hub`` folder as the checkpoint it holds. An MLflow model URI is
resolved to the run it was logged in and that run's kept checkpoint is loaded. What can
carry code (a pyfunc or models-from-code model, its ``code_paths``, a ``pt2`` program,
``hubconf.py``) is loaded only with ``--trust`` (``PROTOLAB_TRUST=1``); else exit 2.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from protolab.errors import UserInputError

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from protolab.arch import Arch

__all__ = ["Prediction", "predict_file"]

_X_KEYS = ("x", "x_val", "x_test")
_BATCH = 1024
_TRUST = "--trust (or PROTOLAB_TRUST=1)"


@dataclass
class Prediction:
    source: str
    outputs: np.ndarray
    seconds: float
    task: str = ""
    score: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"{self.source}: {len(self.outputs)} samples -> outputs {self.outputs.shape} "
            f"in {self.seconds:.3f} s"
        ]
        lines += [f"{k}: {v:.4g}" for k, v in self.score.items()]
        return "\n".join(lines)


def _read_inputs(file: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not file.is_file() or file.suffix != ".npz":
        raise UserInputError(f"FILE: {file} is not an .npz file; allowed: an .npz with x (and y)")
    try:
        data = np.load(file, allow_pickle=False)
        keys = list(data.keys())
    except Exception as e:
        raise UserInputError(f"FILE: {file}: cannot read it as .npz ({e})") from None
    xk = next((k for k in _X_KEYS if k in keys), None)
    if xk is None:
        raise UserInputError(
            f"FILE: {file} has arrays {', '.join(keys) or 'none'}; allowed: inputs as "
            f"{' or '.join(_X_KEYS)} (targets, optional, as y)"
        )
    yk = xk.replace("x", "y", 1)
    return np.asarray(data[xk]), (np.asarray(data[yk]) if yk in keys else None)


def _from_checkpoint(
    directory: Path, source: str, arch: Arch | None = None
) -> tuple[Any, dict[str, Any], str]:
    from dataclasses import asdict

    from protolab.backends import read_meta
    from protolab.commands._rebuild import load_kept, native_name

    name = native_name(directory) if arch is None else None
    if name is not None:  # its params and script hash are on its run, not in the folder
        raise UserInputError(
            f"MODEL_OR_RUN: {directory} holds a native model (pl.native {name!r}), rebuilt "
            "from your local script with its run's params: give the run id instead, "
            "`protolab predict RUN_ID FILE --config CONFIG.yaml` (or `protolab export` it)"
        )
    model = load_kept(directory, arch, "MODEL_OR_RUN")
    return model, asdict(read_meta(directory)), source


def _client(uri: str | None) -> MlflowClient:
    from protolab.commands._studies import check_store, mlflow_client
    from protolab.tracking import default_tracking_uri

    tracking = uri or default_tracking_uri()
    check_store(tracking)
    return mlflow_client(tracking)


def _kept(run: Run) -> bool:
    from protolab._tags import TAG

    return run.data.tags.get(TAG.CHECKPOINT) == "kept"


def _from_run(
    run_id: str, uri: str | None, tmp: Path, config: Path | None, file: Path, label: str = ""
) -> tuple[Any, dict[str, Any], str]:
    from protolab._tags import TAG
    from protolab.checkpoint import download
    from protolab.commands._rebuild import rebuild_native

    client = _client(uri)
    try:
        run = client.get_run(run_id)
    except Exception:
        raise UserInputError(f"MODEL_OR_RUN: no run {run_id} in the tracking store") from None
    if not _kept(run):
        raise UserInputError(
            f"MODEL_OR_RUN: run {run_id} ({run.info.run_name}) has no kept checkpoint "
            f"(state: {run.data.tags.get(TAG.CHECKPOINT, 'none')}); `protolab export STUDY` "
            "lists the trials that have one"
        )
    try:
        ckpt = download(client, run_id, tmp)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserInputError(
            f"MODEL_OR_RUN: run {run_id} is tagged as keeping a checkpoint, but it cannot "
            f"be downloaded: {first}"
        ) from None
    retry = f"protolab predict {run_id} {file} --config CONFIG.yaml"
    arch = rebuild_native(ckpt, run, config, retry)
    return _from_checkpoint(ckpt, label or str(run.info.run_name), arch)


def _model_run(model_uri: str, client: MlflowClient) -> str | None:
    """The run an MLflow model URI was logged in (``models:/NAME@ALIAS``, ``models:/NAME/V``,
    ``runs:/ID/PATH``), if it names one."""
    found = re.fullmatch(r"runs:/([0-9a-f]{32})(/.*)?", model_uri)
    if found:
        return found.group(1)
    found = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/([^/]+))/?", model_uri)
    if not found:
        return None
    name, alias, version = found.groups()
    try:
        if alias:
            mv = client.get_model_version_by_alias(name, alias)
        elif version == "latest":
            quoted = name.replace("\\", "\\\\").replace("'", "\\'")
            mv = max(
                client.search_model_versions(f"name = '{quoted}'"), key=lambda v: int(v.version)
            )
        else:
            mv = client.get_model_version(name, version)
    except Exception:
        raise UserInputError(f"MODEL_OR_RUN: no registered model {model_uri}") from None
    return str(mv.run_id) if mv.run_id else None


def _from_mlflow(
    model_uri: str, uri: str | None, trust: bool, tmp: Path, config: Path | None, file: Path
) -> tuple[Any, dict[str, Any], str]:
    """Untrusted: the kept checkpoint of the run the model was logged in (data only); the
    MLflow model itself (a pyfunc can run any code on load) only with ``--trust``."""
    if not trust:
        client = _client(uri)
        run_id = _model_run(model_uri, client)
        run = _get_run(client, run_id)
        if run is not None and _kept(run):
            label = f"{model_uri} (the kept checkpoint of run {run.info.run_name})"
            return _from_run(run.info.run_id, uri, tmp, config, file, label)
        raise UserInputError(
            f"MODEL_OR_RUN: {model_uri} is an MLflow model without a checkpoint protolab "
            "kept in its run; loading it runs code it carries (a pyfunc or models-from-code "
            "model, its code_paths), which anyone who can write to the tracking store could "
            f"have put there; load it only if you trust that store, with {_TRUST}"
        )
    return _load_pyfunc(model_uri, uri)


def _get_run(client: MlflowClient, run_id: str | None) -> Run | None:
    if run_id is None:
        return None
    try:
        return client.get_run(run_id)
    except Exception:
        return None


def _load_pyfunc(model_uri: str, uri: str | None) -> tuple[Any, dict[str, Any], str]:
    import mlflow.pyfunc

    from protolab.tracking import default_tracking_uri

    mlflow.set_tracking_uri(uri or default_tracking_uri())
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(f"MODEL_OR_RUN: cannot load {model_uri}: {first}") from None
    return model, {}, model_uri


def _from_export(path: Path, trust: bool) -> tuple[Any, dict[str, Any], str]:
    """An export folder, read by its backend (untrusted: no code from the folder runs)."""
    from protolab.backends import load_exported

    try:
        predictor, meta = load_exported(path, trust)
    except UserInputError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserInputError(
            f"MODEL_OR_RUN: {path}: not an export protolab can read ({type(e).__name__}: "
            f"{first}); it was damaged or replaced, so it is refused"
        ) from None
    return predictor, meta, f"{path} ({meta['format']})"


def _open(
    target: str, uri: str | None, tmp: Path, config: Path | None, file: Path, trust: bool
) -> tuple[Any, dict[str, Any], str]:
    from protolab.backends import EXPORT_META, META

    path = Path(target)
    if re.match(r"^[a-z][a-z0-9+.-]*:/", target) and not path.exists():
        return _from_mlflow(target, uri, trust, tmp, config, file)
    if path.is_dir() and (path / EXPORT_META).is_file():
        return _from_export(path, trust)
    if path.is_dir() and (path / META).is_file():
        return _from_checkpoint(path, f"{path} (checkpoint)")
    if re.fullmatch(r"[0-9a-f]{32}", target):
        return _from_run(target, uri, tmp, config, file)
    raise UserInputError(
        f"MODEL_OR_RUN: got {target!r}; allowed: a folder from `protolab export` (with "
        f"{EXPORT_META}), a checkpoint folder, models:/NAME@ALIAS or runs:/ID/PATH, or the id "
        "of a run with a kept checkpoint"
    )


def _check_shape(x: np.ndarray, meta: dict[str, Any], file: Path) -> np.ndarray:
    if not meta:
        return x
    want = tuple(meta["input_shape"])
    if tuple(x.shape[1:]) != want:
        raise UserInputError(
            f"FILE: {file}: samples of shape {tuple(x.shape[1:])}, but the model takes {want}"
        )
    return x.astype(meta["input_dtype"], copy=False)


def _score(outputs: np.ndarray, y: np.ndarray | None, task: str) -> dict[str, float]:
    if y is None or len(y) != len(outputs):
        return {}
    if task == "classification" or (not task and np.issubdtype(y.dtype, np.integer)):
        return {"accuracy": float(np.mean(outputs.argmax(-1) == y))}
    err = outputs.reshape(len(y), -1) - y.reshape(len(y), -1)
    return {"rmse": math.sqrt(float(np.mean(err**2)))}


def predict_file(
    target: str,
    file: Path,
    out: Path | None = None,
    uri: str | None = None,
    config: Path | None = None,
    trust: bool = False,
) -> Prediction:
    """Outputs of MODEL_OR_RUN on FILE's inputs (and accuracy / RMSE if it has targets).

    ``config`` names the local script that rebuilds a run's native model (``pl.native``);
    ``trust``: load a model that carries code (see the module's docstring).
    """
    x, y = _read_inputs(file)
    if out is not None and out.suffix != ".npz":
        raise UserInputError(f"--out: {out} must end in .npz")
    with tempfile.TemporaryDirectory(prefix="protolab-predict-") as tmp:
        model, meta, source = _open(target, uri, Path(tmp), config, file, trust)
        x = _check_shape(x, meta, file)
        t0 = time.perf_counter()
        parts = [np.asarray(model.predict(x[i : i + _BATCH])) for i in range(0, len(x), _BATCH)]
        seconds = time.perf_counter() - t0
    outputs = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0,), np.float32)
    task = str(meta.get("task", ""))
    result = Prediction(source, outputs, seconds, task, _score(outputs, y, task))
    if out is not None:
        extra = {"pred": outputs.argmax(-1)} if task == "classification" else {}
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, outputs=outputs, **extra)
    return result
