"""The data seam, first slice: ``@pl.data`` arrays (searchable through ``space``), the
config's ``data:`` over the script's, and the input wait the own-loop programs measure.

Framework sources go in ``pl.Data(train=..., val=...)`` (tests/test_data_sources.py): a
``@pl.data`` that returns one bare is refused up front (exit 2, nothing written).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import protolab as pl
from protolab.backends import Hardware, Job, TrainSettings, get_backend
from protolab.cli import app
from protolab.config import METRICS
from protolab.data import dataset_from_mapping, load_dataset
from protolab.errors import DataError
from protolab.space import Space

runner = CliRunner()
CPU = Hardware(accelerator="cpu", threads=1)

CONFIG = """\
experiment: exp.py
backends: [lightning]
study: {name: seam, n_trials: 2, sampler: random, pruner: none}
train: {epochs: 1, batch_size: 64, lr: 0.005}
hardware: {accelerator: cpu}
"""

SEARCHED = """
import numpy as np
import protolab as pl
from protolab import layers as L


@pl.data
def blobs(space):
    noise = space.choice("noise", [0.1, 0.5])
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 4)).astype(np.float32) * noise + y[:, None]
    return {"x": x.astype(np.float32), "y": y.astype(np.int64)}


@pl.experiment(data="digits")
def model(space):
    return pl.Arch(L.Dense(space.int("width", 4, 8)), L.Dense(3))
"""


def _project(workdir: Path, script: str, config: str = CONFIG) -> None:
    (workdir / "exp.py").write_text(textwrap.dedent(script))
    (workdir / "cfg.yaml").write_text(config)


def _nothing_written(workdir: Path) -> None:
    assert not (workdir / "mlruns").exists() and not (workdir / "mlflow.db").exists()


# ---------------------------------------------------------------- arrays, no training


def test_arrays_take_the_npz_path_and_a_missing_y_reconstructs_x() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3, 2)).astype(np.float32)
    y = rng.integers(0, 2, 100)
    ds = dataset_from_mapping("d", {"x": x, "y": y}, where="here", seed=1, val_fraction=0.2)
    assert ds.task == "classification" and ds.n_train == 80 and ds.n_val == 20
    auto = dataset_from_mapping("a", {"x": x}, where="here", seed=1, val_fraction=0.2)
    assert auto.task == "regression" and auto.output_shape == (6,)
    np.testing.assert_array_equal(auto.y_train, auto.x_train.reshape(80, -1))
    split = {"x_train": x[:70], "y_train": y[:70], "x_val": x[70:], "y_val": y[70:]}
    assert dataset_from_mapping("s", split, where="h", seed=0, val_fraction=0.2).n_val == 30


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ("digits", "must return a dict of numpy arrays"),
        ({"x": [1, 2, 3]}, "'x' must be a numpy array"),
        ({"x": np.float32(1.0)}, "must be a numpy array"),
        ({"x": np.array(1.0)}, "need a batch axis"),
        ({"inputs": np.zeros((4, 2))}, "unknown keys ['inputs']"),
    ],
)
def test_bad_returned_values_say_what_is_allowed(value: object, expect: str) -> None:
    with pytest.raises(DataError, match="here") as info:
        dataset_from_mapping("d", value, where="here", seed=0, val_fraction=0.2)
    assert expect in str(info.value)


def test_a_searched_data_choice_joins_the_trial(workdir: Path) -> None:
    from protolab.sweep import prepare

    _project(workdir, SEARCHED)
    cfg, script = _load(workdir)
    ctx = prepare(cfg, workdir / "cfg.yaml", script)
    assert "noise" in ctx.distributions and "width" in ctx.distributions
    assert ctx.dataset.name == "blobs" and ctx.dataset.input_shape == (4,)
    space = Space(values={"noise": 0.5, "width": 5})
    ds = ctx.trial_dataset(space)
    assert space.values["noise"] == 0.5 and ds.x_train.std() > ctx.dataset.x_train.std()


def test_the_config_data_overrides_the_script(workdir: Path) -> None:
    from protolab.sweep import prepare

    rng = np.random.default_rng(0)
    np.savez(workdir / "mine.npz", x=rng.normal(size=(90, 5)).astype(np.float32),
             y=rng.integers(0, 2, 90))  # fmt: skip
    _project(workdir, SEARCHED, CONFIG + "data: mine.npz\n")
    cfg, script = _load(workdir)
    ctx = prepare(cfg, workdir / "cfg.yaml", script)
    assert ctx.dataset.name == "mine.npz" and ctx.dataset.input_shape == (5,)
    assert "noise" not in ctx.distributions  # the script's @pl.data is not called
    assert ctx.trial_dataset(Space(values={"width": 5})) is ctx.dataset


def _load(workdir: Path) -> Any:
    from protolab.backends import NAMES
    from protolab.config import load_config

    return load_config(workdir / "cfg.yaml", backends=NAMES)


@pytest.mark.parametrize(
    ("script", "extra", "expect"),
    [
        (SEARCHED.replace('return {"x"', 'return "blobs" or {"x"'), "",
         ["@data function 'blobs'", "must return a dict of numpy arrays", "str"]),
        (SEARCHED, "data: missing.npz\n", ["cfg.yaml: data:", "missing.npz", "does not exist"]),
        (SEARCHED.replace("def blobs(space):", "def blobs(space, more):"), "",
         ["@data function 'blobs' takes 2 arguments"]),
    ],
)  # fmt: skip
def test_bad_data_is_exit_2_before_any_store(
    workdir: Path, script: str, extra: str, expect: list[str]
) -> None:
    _project(workdir, script, CONFIG + extra)
    result = runner.invoke(app, ["sweep", "cfg.yaml"])
    assert result.exit_code == 2, result.output
    for part in expect:
        assert part in result.stderr, result.stderr
    _nothing_written(workdir)


def test_the_config_data_key_is_validated(workdir: Path) -> None:
    _project(workdir, SEARCHED, CONFIG + "data: ''\n")
    result = runner.invoke(app, ["sweep", "cfg.yaml"])
    assert result.exit_code == 2 and "data" in result.stderr, result.output
    _nothing_written(workdir)


def test_the_wait_names_are_in_the_contract() -> None:
    assert "time/data_wait_ms" in METRICS and "perf/input_bound_frac" in METRICS
    assert callable(pl.data)


# ---------------------------------------------------------------- training


@pytest.mark.slow
def test_a_sweep_records_the_searched_data_choice(workdir: Path) -> None:
    import optuna

    from protolab._stores import open_storage

    _project(workdir, SEARCHED)
    result = runner.invoke(app, ["sweep", "cfg.yaml"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(
        study_name="seam", storage=open_storage(str(workdir / "mlruns" / "optuna.journal"))
    )
    assert len(study.trials) == 2
    for trial in study.trials:
        assert trial.params["noise"] in (0.1, 0.5) and "width" in trial.params


@pytest.mark.slow
def test_a_lightning_module_with_an_augmenting_loader_logs_its_input_wait() -> None:
    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    digits = load_dataset("digits")

    class Jitter(Dataset[tuple[torch.Tensor, torch.Tensor]]):
        """Augmentation in the Dataset: noise added per sample, on the loader's side."""

        def __len__(self) -> int:
            return digits.n_train

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.from_numpy(digits.x_train[i]) + 0.05 * torch.randn(8, 8, 1)
            return x, torch.tensor(int(digits.y_train[i]))

    class Lit(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def train_dataloader(self) -> DataLoader[Any]:
            return DataLoader(Jitter(), batch_size=64, shuffle=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    settings = TrainSettings(epochs=2, batch_size=64, optimizer="adam", lr=1e-3)
    job = Job(pl.native(torch=Lit), digits, settings, CPU)
    m = get_backend("lightning").run(job).metrics
    assert m["time/data_wait_ms"] > 0 and 0 < m["perf/input_bound_frac"] < 1


@pytest.mark.slow
def test_a_compiled_keras_model_logs_its_input_wait() -> None:
    import keras

    def build(shape: tuple[int, ...]) -> Any:
        inputs = keras.Input(shape)
        out = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
        model = keras.Model(inputs, out)
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
        return model

    settings = TrainSettings(epochs=2, batch_size=64, optimizer="adam", lr=1e-3)
    job = Job(pl.native(keras=build), load_dataset("digits"), settings, CPU)
    m = get_backend("tf-graph").run(job).metrics
    assert m["time/data_wait_ms"] >= 0 and 0 <= m["perf/input_bound_frac"] < 1


def test_a_bare_framework_source_is_refused(workdir: Path) -> None:
    script = SEARCHED.replace(
        'return {"x"',
        "import torch.utils.data as tud\n    "
        'return tud.DataLoader(tud.TensorDataset(torch.zeros(8, 4)), batch_size=4) or {"x"',
    ).replace("import numpy as np\n", "import numpy as np\nimport torch\n", 1)
    _project(workdir, script)
    result = runner.invoke(app, ["sweep", "cfg.yaml"])
    assert result.exit_code == 2, result.output
    for part in ("torch.utils.data.dataloader.DataLoader", "pl.Data(train=..., val=...)"):
        assert part in result.stderr, result.stderr
    _nothing_written(workdir)
