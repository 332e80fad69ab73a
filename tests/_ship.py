"""Helpers for the checkpoint and export tests: a real local MLflow store with study runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protolab._tags import TAG
from protolab.checkpoint._store import Upload
from protolab.checkpoint._store import store as store_checkpoint

STUDY = "ship"


@dataclass
class Store:
    """One real SQLite MLflow store for a test module (creating one takes seconds)."""

    root: Path
    client: Any
    uri: str

    def study(self, name: str) -> str:
        """A new study (its MLflow experiment, tagged as a sweep tags it): its id."""
        location = (self.root / "artifacts" / name).resolve().as_uri()
        tags = {TAG.STUDY: name}
        return str(self.client.create_experiment(name, artifact_location=location, tags=tags))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    from protolab.commands._studies import mlflow_client

    root = tmp_path_factory.mktemp("mlruns")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return Store(root, mlflow_client(uri), uri)


def child(client: Any, exp: str, trial: int, backend: str, study: str = STUDY) -> str:
    tags = {TAG.STUDY: study, TAG.TRIAL: str(trial), TAG.BACKEND: backend}
    return str(client.create_run(exp, run_name=f"t{trial}-{backend}", tags=tags).info.run_id)


def upload(
    client: Any,
    exp: str,
    run_id: str,
    directory: Path,
    trial: int,
    value: float,
    *,
    study: str = STUDY,
    policy: str = "top_k",
    top_k: int = 2,
    done: bool = True,
    feasible: bool = True,
    direction: str = "maximize",
) -> None:
    """What the writer process does with one job's checkpoint (the real function)."""
    up = Upload(study, exp, trial, policy, top_k, value, direction, feasible, done)
    store_checkpoint(client, run_id, str(directory), up)


def fake_checkpoint(root: Path, name: str) -> Path:
    """A folder standing in for a checkpoint where only the policy is under test."""
    path = root / "ckpt" / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "weights.bin").write_bytes(b"\0" * 64)
    return path


def has_checkpoint(client: Any, run_id: str) -> bool:
    return any(a.path == "checkpoint" for a in client.list_artifacts(run_id))


# Loads each export with its own runtime only (no protolab, except the hub entry point,
# which rebuilds the module with it): what a server or a user's script would do.
_RELOAD = textwrap.dedent(
    """
    import sys
    import numpy as np

    x = np.load(sys.argv[1])
    for item in sys.argv[2:]:
        fmt, path, out = item.split("=")
        if fmt == "pt2":
            import torch
            y = torch.export.load(path).module()(torch.from_numpy(x)).detach().numpy()
        elif fmt == "onnx":
            import onnxruntime as ort
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            y = session.run(None, {"input": x})[0]
        elif fmt == "hub":
            import torch
            model = torch.hub.load(path, "model", source="local")
            with torch.no_grad():
                y = model(torch.from_numpy(x)).numpy()
        elif fmt == "savedmodel":
            import tensorflow as tf
            serving = tf.saved_model.load(path).signatures["serving_default"]
            y = serving(input=tf.constant(x))["output_0"].numpy()
        np.save(out, y)
    """
)


def reload_fresh(paths: dict[str, Path], x: np.ndarray, tmp: Path) -> dict[str, np.ndarray]:
    """Each export's outputs on ``x``, computed in a new Python process."""
    np.save(tmp / "x.npy", x)
    items = [f"{fmt}={path}={tmp / f'{fmt}-out.npy'}" for fmt, path in paths.items()]
    env_cmd = [sys.executable, "-c", _RELOAD, str(tmp / "x.npy"), *items]
    done = subprocess.run(env_cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {fmt: np.load(tmp / f"{fmt}-out.npy") for fmt in paths}
