"""protolab export / predict: every format, reloaded in a fresh process, predicts what the
trained model did (max abs diff <= 1e-5, float32); the registry alias follows the best."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from protolab import Arch
from protolab import layers as L
from protolab._tags import TAG
from protolab.backends import Hardware, Job, TrainSettings, get_backend
from protolab.backends._exportable import all_formats, backend_formats, load_trained
from protolab.backends._exportable import write_checkpoint as save
from protolab.cli import app
from protolab.data import Dataset, load_dataset
from tests._ship import Store, child, fake_checkpoint, reload_fresh, store, upload

__all__ = ["store"]  # the module's MLflow store (a fixture)

TOL = 1e-5
CPU = Hardware(accelerator="cpu")
ONE_EPOCH = TrainSettings(epochs=1, batch_size=64, optimizer="adam", lr=3e-3, seed=0)
MLP = Arch(L.Flatten(), L.Dense(32, activation="relu"), L.Dropout(0.1), L.Dense(10))
CNN = Arch(  # conv, batch-norm statistics, dropout, a projecting residual, pooling
    L.Conv2D(8, 3, padding="same", activation="relu"),
    L.BatchNorm(),
    L.Dropout(0.1),
    L.Residual(L.Conv2D(12, 3, padding="same"), L.BatchNorm()),
    L.MaxPool(2),
    L.GlobalAvgPool(),
    L.Dense(10),
)
runner = CliRunner()


def _train(backend: str, arch: Arch, tmp: Path) -> tuple[Any, Dataset, Path, np.ndarray]:
    """Train once; keep a checkpoint as a sweep does; the in-memory model's val outputs."""
    ds = load_dataset("digits")
    result = get_backend(backend).run(Job(arch, ds, ONE_EPOCH, CPU))
    ckpt = tmp / f"ckpt-{backend}"
    save(result.model, ckpt, arch, ds, study="ship", trial=0, metric="val/acc", value=0.5)
    return result.model, ds, ckpt, result.model.predict(ds.x_val)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == np.float32
    assert float(np.abs(got - want).max()) <= TOL


# --- formats are the backends' to declare --------------------------------------------------


def test_backends_declare_their_formats_without_importing_a_framework() -> None:
    code = (
        "import sys; from protolab.backends._exportable import all_formats, backend_formats;"
        "from protolab.backends import backend_names;"
        "print({n: backend_formats(n) for n in backend_names()}, all_formats());"
        "print(sorted({'torch', 'tensorflow', 'keras', 'jax', 'mlflow'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"
    assert backend_formats("lightning") == backend_formats("torch-compile")
    assert set(backend_formats("lightning")) == {"pt2", "onnx", "hub", "mlflow"}
    assert set(backend_formats("keras")) == set(backend_formats("jax")) == {"savedmodel", "mlflow"}
    assert all_formats() == ["mlflow", "savedmodel", "pt2", "onnx", "hub"]


def _bad_study(store: Store) -> str:
    """A study with one kept (stand-in) checkpoint on the eager torch mode."""
    exp = store.study("refuse")
    run_id = child(store.client, exp, 3, "lightning", "refuse")
    ckpt = fake_checkpoint(store.root, "refuse")
    upload(store.client, exp, run_id, ckpt, 3, 0.9, study="refuse", policy="all")
    return exp


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--format", "tflite"], ["--format", "'tflite'", "allowed: mlflow, savedmodel"]),
        (["--format", "pt2", "--backend", "nope"], ["--backend", "'nope'", "lightning"]),
        (["--format", "savedmodel"], ["trial 3 ran on lightning", "savedmodel", "pt2, onnx"]),
        (["--format", "savedmodel", "--backend", "lightning"], ["cannot write", "pt2, onnx"]),
        (["--format", "pt2", "--backend", "keras"], ["no checkpoint on 'keras'", "lightning"]),
        (["--format", "pt2", "--trial", "1"], ["trial 1", "no kept checkpoint", "t3"]),
        (["--format", "mlflow", "--out", "x"], ["--out", "mlflow", "tracking store"]),
    ],
)
def test_export_refuses_bad_input_before_writing(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    expect: list[str],
) -> None:
    if not store.client.get_experiment_by_name("refuse"):
        _bad_study(store)
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(app, ["export", "refuse", *args, "--uri", store.uri])
    assert out.exit_code == 2, out.output
    text = " ".join(out.output.split())
    for part in expect:
        assert part in text, text
    assert "Traceback" not in text and list(tmp_path.iterdir()) == []


def test_export_and_predict_name_unknown_studies_and_models(store: Store, tmp_path: Path) -> None:
    out = runner.invoke(app, ["export", "nope", "--format", "pt2", "--uri", store.uri])
    assert out.exit_code == 2 and "no study 'nope'" in out.output
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 8, 8, 1), np.float32))
    for target in ("not-a-model", "0" * 32):
        out = runner.invoke(app, ["predict", target, str(tmp_path / "in.npz"), "--uri", store.uri])
        assert out.exit_code == 2 and "MODEL_OR_RUN" in out.output, out.output
    out = runner.invoke(app, ["predict", "x", str(tmp_path / "missing.npz")])
    assert out.exit_code == 2 and "FILE" in out.output


# --- every format, reloaded in a fresh process ---------------------------------------------


@pytest.mark.slow
def test_torch_formats_reload_and_predict_the_same(tmp_path: Path) -> None:
    _model, ds, ckpt, want = _train("lightning", CNN, tmp_path)
    rebuilt = load_trained(ckpt)
    _close(rebuilt.predict(ds.x_val), want)  # the checkpoint holds the trained weights
    paths = {fmt: rebuilt.export(fmt, tmp_path / fmt, ckpt) for fmt in ("pt2", "onnx", "hub")}
    assert paths["hub"] == tmp_path / "hub" / "hubconf.py"
    got = reload_fresh({**paths, "hub": tmp_path / "hub"}, ds.x_val, tmp_path)
    for fmt in paths:
        _close(got[fmt], want)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["keras", "jax"])
def test_savedmodel_answers_through_serving_default(tmp_path: Path, backend: str) -> None:
    _model, ds, ckpt, want = _train(backend, CNN if backend == "keras" else MLP, tmp_path)
    base = tmp_path / "serving"
    first = load_trained(ckpt).export("savedmodel", base, ckpt)
    assert first == base / "1"  # TF Serving's layout: BASE/<version>/
    got = reload_fresh({"savedmodel": first}, ds.x_val, tmp_path)
    _close(got["savedmodel"], want)


def _mlflow_predict(uri: str, model_uri: str, x: np.ndarray, tmp: Path) -> np.ndarray:
    """``mlflow models predict`` offline, as a user would call it."""
    (tmp / "in.json").write_text(json.dumps({"inputs": x.tolist()}))
    exe = str(Path(sys.executable).parent / "mlflow")
    cmd = [exe, "models", "predict", "-m", model_uri, "-i", str(tmp / "in.json")]
    cmd += ["-t", "json", "-o", str(tmp / "out.json"), "--env-manager", "local"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads((tmp / "out.json").read_text())
    return np.asarray(out["predictions"] if isinstance(out, dict) else out, dtype=np.float32)


@pytest.mark.slow
def test_mlflow_model_serves_offline_and_the_champion_alias_follows_the_best(
    store: Store, tmp_path: Path
) -> None:
    from protolab.commands._export import ALIAS, export_model

    model, ds, _ckpt, want = _train("lightning", MLP, tmp_path)
    exp, client = store.study("registry"), store.client

    def trial(number: int, value: float) -> None:
        run_id = child(client, exp, number, "lightning", "registry")
        copy = tmp_path / f"upload-{number}"
        save(model, copy, MLP, ds, study="registry", trial=number, metric="val/acc", value=value)
        upload(client, exp, run_id, copy, number, value, study="registry", policy="all")
        client.set_terminated(run_id)

    trial(0, 0.5)
    first = export_model("registry", "mlflow", uri=store.uri)
    assert first.champion and first.model_uri == "models:/registry/1"
    _close(_mlflow_predict(store.uri, f"models:/registry@{ALIAS}", ds.x_val, tmp_path), want)
    trial(1, 0.9)  # a better trial lands
    second = export_model("registry", "mlflow", uri=store.uri)
    assert (second.trial, second.champion) == (1, True)
    assert str(client.get_model_version_by_alias("registry", ALIAS).version) == "2"
    again = export_model("registry", "mlflow", trial=0, uri=store.uri)  # the older one
    assert again.model_uri == "models:/registry/1" and not again.champion
    assert str(client.get_model_version_by_alias("registry", ALIAS).version) == "2"
    version = client.get_model_version("registry", "2")
    assert version.tags[TAG.TRIAL] == "1" and version.run_id


@pytest.mark.slow
def test_sweep_then_export_hub_and_predict_from_the_cli(make_project: Any, workdir: Path) -> None:
    """From a finished sweep to a hub folder; `predict` agrees on the export and the run."""
    from protolab.checkpoint import find_checkpoints
    from protolab.commands._studies import mlflow_client

    cfg = make_project(epochs=1)

    def cli(*args: str) -> str:  # the real commands, in this process (imports paid once)
        done = runner.invoke(app, list(args))
        assert done.exit_code == 0, done.output[-3000:]
        return done.stdout

    cli("sweep", str(cfg), "study.n_trials=1")
    printed = cli("export", "tiny", "--format", "hub")
    folder = workdir / "exports" / "tiny" / "t0-lightning-hub"
    assert re.search(r"t0-lightning -> hub: .*hubconf\.py", printed) and folder.is_dir()
    ds = load_dataset("digits")
    np.savez(workdir / "val.npz", x=ds.x_val, y=ds.y_val)
    # a hub folder is read from its arch.json and weights.pt: hubconf.py is not imported
    assert "accuracy" in cli("predict", str(folder), "val.npz", "--out", "a.npz")
    client = mlflow_client(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny").experiment_id
    run_id = find_checkpoints(client, exp, "tiny")[0].runs[0].info.run_id
    cli("predict", run_id, "val.npz", "--out", "b.npz")
    _close(np.load(workdir / "a.npz")["outputs"], np.load(workdir / "b.npz")["outputs"])


# --- native models (pl.native): rebuilt from the user's local script ------------------------

NATIVE = """\
    import torch
    from torch import nn

    import protolab as pl


    class Net(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU())
            self.head = nn.Linear(width, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))


    @pl.experiment(data="digits", metric="val/acc")
    def model(space: pl.Space) -> pl.Arch:
        width = space.int("width", 8, 32)
        return pl.native(torch=lambda shape: Net(width), name="net")
"""


@pytest.mark.slow
def test_native_model_is_rebuilt_from_the_local_script(make_project: Any, workdir: Path) -> None:
    """A pl.native trial: export and predict rebuild it from the script `--config` names,
    only if its hash is the trained one; without `--config` the refusal names the flag."""
    from protolab.checkpoint import find_checkpoints
    from protolab.commands._studies import mlflow_client

    cfg = make_project(NATIVE, epochs=1)

    def cli(*args: str, code: int = 0) -> str:
        done = runner.invoke(app, list(args))
        assert done.exit_code == code, done.output[-3000:]
        assert "Traceback" not in done.output
        return " ".join(done.output.split())

    cli("sweep", str(cfg), "study.n_trials=1")
    refused = cli("export", "tiny", "--format", "pt2", code=2)
    assert "native model (pl.native 'net')" in refused, refused
    assert "`protolab export tiny --format pt2 --trial 0 --backend lightning --config" in refused
    assert not (workdir / "exports").exists()
    assert "pt2 or onnx" in cli("export", str(cfg), "--format", "hub", code=2)
    cli("export", "tiny", "--format", "pt2", "--config", str(cfg))
    folder = workdir / "exports" / "tiny" / "t0-lightning-pt2"
    ds = load_dataset("digits")
    np.savez(workdir / "val.npz", x=ds.x_val, y=ds.y_val)
    assert "--trust" in cli("predict", str(folder), "val.npz", code=2)  # pt2 can unpickle
    assert "accuracy" in cli("predict", str(folder), "val.npz", "--out", "a.npz", "--trust")
    client = mlflow_client(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny").experiment_id
    run = find_checkpoints(client, exp, "tiny")[0].runs[0]
    run_id = run.info.run_id
    assert "--config CONFIG.yaml" in cli("predict", run_id, "val.npz", code=2)
    cli("predict", run_id, "val.npz", "--out", "b.npz", "--config", str(cfg))
    _close(np.load(workdir / "a.npz")["outputs"], np.load(workdir / "b.npz")["outputs"])

    (workdir / "exp.py").write_text((workdir / "exp.py").read_text() + "# changed\n")
    recorded = run.data.tags[TAG.SCRIPT_HASH]
    changed = cli("export", str(cfg), "--format", "onnx", code=2)
    assert recorded in changed and "script hash" in changed, changed
    assert re.search(r"has script hash [0-9a-f]{12}, but", changed)
    assert not (workdir / "exports" / "tiny" / "t0-lightning-onnx").exists()


def _native_checkpoint(tmp: Path, backend: str) -> Path:
    """A checkpoint folder of a native model (no weights: it is refused before loading)."""
    import protolab as pl

    arch = pl.native(torch=lambda: None, name="net")
    ckpt = tmp / "ckpt"
    ckpt.mkdir()
    (ckpt / "arch.json").write_text(arch.to_json())
    meta = {"backend": backend, "input_shape": [8, 8, 1], "input_dtype": "float32"}
    meta |= {"output_shape": [10], "task": "classification", "arch_hash": arch.hash}
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    return ckpt


def test_native_models_are_refused_where_they_cannot_be_rebuilt(tmp_path: Path) -> None:
    """A checkpoint folder has no params or script hash (its run has); a worker-process mode
    cannot run the user's script: both say what to do instead, exit 2."""
    from protolab.errors import UserInputError

    ckpt = _native_checkpoint(tmp_path, "jax")
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 8, 8, 1), np.float32))
    out = runner.invoke(app, ["predict", str(ckpt), str(tmp_path / "in.npz")])
    text = " ".join(out.output.split())
    assert out.exit_code == 2 and "pl.native 'net'" in text, text
    assert "`protolab predict RUN_ID FILE --config CONFIG.yaml`" in text
    with pytest.raises(UserInputError, match=r"worker process of its own.*--backend"):
        load_trained(ckpt, Arch(L.Dense(10)))


LIGHTNING = """\
    import lightning as L
    import torch
    from torch import nn

    import protolab as pl


    class Lit(L.LightningModule):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Linear(width, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_acc", (self(x).argmax(-1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)


    @pl.experiment(data="digits", metric="val_acc")
    def model(space: pl.Space) -> pl.Arch:
        width = space.int("width", 8, 32)
        return pl.native(torch=lambda: Lit(width), name="lit")
"""


@pytest.mark.slow
def test_lightning_module_trained_in_its_own_loop_exports(make_project: Any, workdir: Path) -> None:
    """A LightningModule keeps its own state_dict: the rebuild loads it into the module."""
    config = """\
        experiment: exp.py
        backends: [lightning]
        study: {name: tiny, n_trials: 1, sampler: random, pruner: none}
        train: {epochs: 1, batch_size: 128}
        hardware: {accelerator: cpu}
    """
    cfg = make_project(LIGHTNING, textwrap.dedent(config))
    for args in (["sweep", str(cfg)], ["export", str(cfg), "--format", "onnx"]):
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output[-3000:]
    ds = load_dataset("digits")
    np.savez(workdir / "val.npz", x=ds.x_val, y=ds.y_val)
    folder = workdir / "exports" / "tiny" / "t0-lightning-onnx"
    done = runner.invoke(app, ["predict", str(folder), "val.npz"])
    assert done.exit_code == 0 and "accuracy" in done.output, done.output[-3000:]
