"""Shared fixtures: every test that touches a store runs in its own temporary directory."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

TINY_MLP = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    width = space.int("width", 8, 32, log=True)
    act = space.choice("act", ["relu", "tanh"])
    return pl.Arch(L.Flatten(), L.Dense(width, activation=act), L.Dense(10))
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files marked ``long`` (one test of minutes) run first: pytest-xdist hands whole files
    to its 2 processes in this order, so a long file started last would run alone at the end
    (it did: 6 of 27 minutes)."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project directory as the working directory (stores go under its mlruns/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def make_project(workdir: Path) -> Callable[..., Path]:
    """Write an experiment script and a config into ``workdir``; returns the config path."""

    def make(script: str = TINY_MLP, config: str | None = None, **train: object) -> Path:
        (workdir / "exp.py").write_text(textwrap.dedent(script))
        epochs = train.get("epochs", 2)
        text = config or textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [lightning]
            study: {{name: tiny, n_trials: 2, sampler: random, pruner: none}}
            train: {{epochs: {epochs}, batch_size: 128, lr: 0.005}}
            hardware: {{accelerator: cpu}}
            """
        )
        path = workdir / "cfg.yaml"
        path.write_text(text)
        return path

    return make
