"""A backend from outside protolab: registered by entry point, it works in a real sweep.

The plugin is a tiny numpy softmax regression trained by SGD, installed the way pip would
(a ``*.dist-info`` with an ``entry_points.txt`` on ``sys.path``), in a fresh process so the
registry scans entry points for real. No protolab file names it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
import time

import numpy as np

from protolab.backends import Backend, DeviceInfo, EpochFit, Program


class NumpyProgram(Program):
    """Softmax regression on flattened inputs: W (features x classes) + b."""

    def __init__(self, job):
        ds, tr = job.dataset, job.train
        self.x = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float32)
        self.y = ds.y_train
        self.xv = ds.x_val.reshape(len(ds.x_val), -1).astype(np.float32)
        self.yv = ds.y_val
        k = ds.n_classes
        rng = np.random.default_rng(tr.seed)
        self.w = rng.normal(0, 0.01, (self.x.shape[1], k)).astype(np.float32)
        self.b = np.zeros(k, np.float32)
        self.lr, self.batch = tr.lr, min(tr.batch_size, len(self.x))
        self.steps = len(self.x) // self.batch
        self.rng = rng
        self.backend = "numpy-sgd"

    def _probs(self, x):
        z = x @ self.w + self.b
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    def fit_epoch(self, epoch):
        perm = self.rng.permutation(len(self.x))
        fit, total = EpochFit(loss=0.0), 0.0
        for i in range(self.steps):
            t0 = time.perf_counter()
            take = perm[i * self.batch:(i + 1) * self.batch]
            p = self._probs(self.x[take])
            total += -np.log(p[np.arange(len(take)), self.y[take]] + 1e-9).mean()
            p[np.arange(len(take)), self.y[take]] -= 1
            self.w -= self.lr * self.x[take].T @ p / len(take)
            self.b -= self.lr * p.mean(0)
            fit.step_s.append(time.perf_counter() - t0)
        fit.loss = total / self.steps
        return fit

    def evaluate(self):
        p = self._probs(self.xv)
        loss = -np.log(p[np.arange(len(self.yv)), self.yv] + 1e-9).mean()
        return {"val/loss": float(loss), "val/acc": float((p.argmax(1) == self.yv).mean())}

    def device(self):
        return DeviceInfo("cpu", "numpy")

    def measure(self):
        return {"model/params": float(self.w.size + self.b.size)}

    @property
    def native(self):
        return (self.w, self.b)

    def predict(self, x):
        return self._probs(x.reshape(len(x), -1).astype(np.float32))

    def trained(self):
        return self


class NumpyBackend(Backend):
    name = "numpy-sgd"
    family = "static"

    def program(self, job):
        return NumpyProgram(job)
'''

SCRIPT = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    return pl.Arch(L.Flatten(), L.Dense(10))
"""


def _install_plugin(site: Path) -> None:
    (site / "numpy_sgd_plugin.py").write_text(PLUGIN)
    dist = site / "numpy_sgd_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy-sgd-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[protolab.backends]\nnumpy-sgd = numpy_sgd_plugin:NumpyBackend\n"
    )


@pytest.mark.slow
def test_entry_point_backend_runs_in_a_paired_sweep(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install_plugin(site)
    (tmp_path / "exp.py").write_text(textwrap.dedent(SCRIPT))
    (tmp_path / "cfg.yaml").write_text(
        textwrap.dedent(
            """\
            experiment: exp.py
            backends: [lightning, numpy-sgd]
            study: {name: plug, n_trials: 2, sampler: random, pruner: none}
            train: {epochs: 2, batch_size: 64, lr: 0.1}
            hardware: {accelerator: cpu}
            """
        )
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "protolab.cli"]
    sweep = subprocess.run(
        [*cli, "sweep", "cfg.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-3000:]
    read = subprocess.run(
        [sys.executable, "-c", _READ_RUNS], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr[-3000:]
    runs = json.loads(read.stdout.strip().splitlines()[-1])
    plugin = [r for r in runs if r["backend"] == "numpy-sgd"]
    assert len(plugin) == 2 and all(r["status"] == "FINISHED" for r in plugin)
    assert all(r["family"] == "static" and r["pair"] for r in plugin)
    assert all(r["acc"] > 0.5 for r in plugin)  # it really trained (chance: 0.1)
    assert all(r["params"] == 650 for r in runs)  # the same model on both sides

    # the report pairs the plugin with the built-in mode, with no edit to protolab
    report = subprocess.run(
        [*cli, "report", "plug", "--out", str(tmp_path / "rep")], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    assert "numpy-sgd" in report.stdout


def test_unknown_backend_is_refused_with_the_registry_names(tmp_path: Path) -> None:
    (tmp_path / "exp.py").write_text(textwrap.dedent(SCRIPT))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("experiment: exp.py\nbackends: [lightning, tensorflw]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "sweep", str(cfg)], cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr
    assert "Traceback" not in err and "backends" in err and "'tensorflw'" in err
    for name in ("lightning", "torch-compile", "tf-graph", "keras", "jax", "dynamic", "static"):
        assert name in err, (name, err)
    assert not (tmp_path / "mlruns").exists()  # nothing written


_READ_RUNS = """
import json
from mlflow.tracking import MlflowClient
c = MlflowClient("sqlite:///mlruns/mlflow.db")
exp = c.get_experiment_by_name("plug")
out = []
for r in c.search_runs([exp.experiment_id]):
    t, m = r.data.tags, r.data.metrics
    if "protolab.backend" not in t:
        continue  # the parent run
    out.append({"backend": t.get("protolab.backend"), "family": t.get("protolab.family"),
                "pair": t.get("protolab.pair"), "status": r.info.status,
                "acc": m.get("val/acc", 0), "params": m.get("model/params")})
print(json.dumps(out))
"""
