"""The data seam's framework sources: ``pl.Data(train=...)`` with a DataLoader, a torch
Dataset, a tf.data pipeline, a Keras PyDataset, a generator function or arrays on disk.

Each kind is read by its adapter (no training), trains on every mode that takes it (the
model's own loop reads the source: a LightningModule on the torch modes, a compiled
keras.Model on the Keras modes), and every way of getting it wrong is exit 2 before any
store is written.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import protolab as pl
from protolab.backends import Hardware, Job, TrainSettings, get_backend
from protolab.cli import app
from protolab.data import Dataset, dataset_from_mapping
from protolab.errors import DataError

runner = CliRunner()
CPU = Hardware(accelerator="cpu", threads=1)
N_TRAIN, N_VAL, BATCH = 96, 40, 32
KINDS = ("dataloader", "torch", "tf.data", "pydataset", "generator", "arrays")


def _arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, N_TRAIN + N_VAL)
    x = (rng.normal(size=(len(y), 4)) + y[:, None]).astype(np.float32)
    return x, y.astype(np.int64)


def _source(kind: str, x: np.ndarray, y: np.ndarray, tmp: Path) -> object:
    """One training source of ``kind`` over the arrays, batches of BATCH."""
    if kind in ("dataloader", "torch"):
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        return DataLoader(data, batch_size=BATCH, shuffle=True) if kind == "dataloader" else data
    if kind == "tf.data":
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y)).batch(BATCH)
    if kind == "pydataset":
        import keras

        class Batches(keras.utils.PyDataset):  # type: ignore[misc]
            def __len__(self) -> int:
                return -(-len(y) // BATCH)

            def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
                return x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]

        return Batches()
    if kind == "generator":
        return lambda: ((x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(y), BATCH))
    np.save(tmp / "x.npy", x)
    np.save(tmp / "y.npy", y)
    return {"x": np.load(tmp / "x.npy", mmap_mode="r"), "y": np.load(tmp / "y.npy", mmap_mode="r")}


def _dataset(kind: str, tmp: Path) -> Dataset:
    x, y = _arrays()
    train = _source(kind, x[:N_TRAIN], y[:N_TRAIN], tmp)
    data = pl.Data(train=train, val={"x": x[N_TRAIN:], "y": y[N_TRAIN:]})
    return dataset_from_mapping("d", data, where="here", seed=0, val_fraction=0.2)


# ---------------------------------------------------------------- read, no training


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_read_by_its_adapter(kind: str, tmp_path: Path) -> None:
    ds = _dataset(kind, tmp_path)
    assert ds.stream is not None and ds.stream.kind == kind
    assert ds.stream.steps() == 3  # 96 samples in batches of 32 (the default for torch/arrays)
    assert ds.input_shape == (4,) and ds.x_train.dtype == np.float32
    assert ds.task == "classification" and ds.n_classes == 3
    assert ds.x_val.shape == (N_VAL, 4) and ds.y_val.dtype == np.int64
    rows = sum(len(xb) for xb, _ in ds.stream.source.batches())
    assert rows == N_TRAIN  # one epoch is every training sample, once


def test_a_validation_source_is_read_once_into_arrays(tmp_path: Path) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = _arrays()
    val = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=7)
    data = pl.Data(train=_source("generator", x, y, tmp_path), val=val, steps_per_epoch=2)
    ds = dataset_from_mapping("d", data, where="here", seed=0, val_fraction=0.2)
    np.testing.assert_array_equal(ds.x_val, x)  # every batch, in order, concatenated
    assert ds.stream is not None and ds.stream.steps() == 2


def test_a_source_without_y_is_a_reconstruction_dataset(tmp_path: Path) -> None:
    x, _ = _arrays()
    gen = lambda: (x[i : i + BATCH] for i in range(0, N_TRAIN, BATCH))  # noqa: E731
    ds = dataset_from_mapping(
        "d", pl.Data(train=gen, val={"x": x[N_TRAIN:]}), where="h", seed=0, val_fraction=0.2
    )
    assert ds.stream is not None and not ds.stream.has_y and ds.task == "regression"
    np.testing.assert_array_equal(ds.y_val, ds.x_val.reshape(N_VAL, -1))


@pytest.mark.parametrize(
    ("train", "val", "expect"),
    [
        (iter([(np.zeros((2, 4)), np.zeros(2, np.int64))]), None, "builtins.list_iterator"),
        (lambda: iter([]), None, "gave no batch"),
        (lambda: iter([{"a": np.zeros((2, 4))}]), None, "have no y"),  # a dict batch: x alone
        (lambda: iter([(np.zeros((2, 4)),) * 3]), None, "has 3 parts"),
        (lambda: iter([((np.zeros((2, 4)), np.zeros((2, 4))), np.zeros(2))]), None,
         "validation x is {'x': (4,)} but training x is {'x0': (4,), 'x1': (4,)}"),
        (lambda: iter([np.zeros((2, 4), np.float32)]), "y", "both or neither"),
        ({"x": np.zeros((4, 2)), "labels": np.zeros(4)}, None, "allowed: 'x' and an optional"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, None, "4 x rows but 3 y rows"),
        (lambda: (1 / 0 for _ in range(2)), None, "raised ZeroDivisionError"),
        (lambda: iter([(np.zeros((2, 4)), np.array([1, 2]))]), "y12",
         "labels must be 0..K-1"),
    ],
)  # fmt: skip
def test_a_bad_source_says_what_is_allowed(train: object, val: object, expect: str) -> None:
    x = np.zeros((6, 4), np.float32)
    y = np.array([1, 2, 1, 2, 1, 2]) if val == "y12" else np.array([0, 1, 2, 0, 1, 2])
    data = pl.Data(train=train, val={"x": x, "y": y})
    with pytest.raises(DataError, match="here") as info:
        dataset_from_mapping("d", data, where="here", seed=0, val_fraction=0.2)
    assert expect in str(info.value)


def test_steps_per_epoch_must_be_a_positive_integer() -> None:
    x, y = _arrays()
    data = pl.Data(train={"x": x, "y": y}, val={"x": x, "y": y}, steps_per_epoch=0)
    with pytest.raises(DataError, match=r"steps_per_epoch=0\); allowed: an integer >= 1"):
        dataset_from_mapping("d", data, where="here", seed=0, val_fraction=0.2)


# ---------------------------------------------------------------- training on every mode


def _lit(counter: list[int]) -> Any:
    import lightning as L
    import torch
    from torch import nn

    class Lit(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            counter.append(len(batch[0]))
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=0.05)

    return Lit


def _keras(shape: tuple[int, ...]) -> Any:
    import keras

    inputs = keras.Input(shape)
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


SETTINGS = TrainSettings(epochs=2, batch_size=BATCH, optimizer="adam", lr=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_trains_a_lightning_module_through_its_training_step(
    kind: str, tmp_path: Path
) -> None:
    counter: list[int] = []
    job = Job(pl.native(torch=_lit(counter)), _dataset(kind, tmp_path), SETTINGS, CPU)
    m = get_backend("lightning").run(job).metrics
    assert len(counter) == 6 and sum(counter) == 2 * N_TRAIN  # every sample, each epoch
    assert m["train/steps"] == 6 and m["train/steps_per_epoch"] == 3
    assert 0.0 <= m["val/acc"] <= 1.0 and np.isfinite(m["val/loss"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_trains_a_compiled_keras_model_through_its_fit(kind: str, tmp_path: Path) -> None:
    job = Job(pl.native(keras=_keras), _dataset(kind, tmp_path), SETTINGS, CPU)
    result = get_backend("tf-graph").run(job)
    m = result.metrics
    assert m["train/steps"] == 6 and m["train/steps_per_epoch"] == 3
    assert m["val/acc"] > 0.5  # separable blobs: a trained model, not a constant one
    assert len(result.history) == 2


@pytest.mark.slow
def test_a_lightning_module_without_y_reads_its_inputs_alone(tmp_path: Path) -> None:
    import lightning as L
    import torch
    from torch import nn

    seen: list[type] = []

    class AE(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 4))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(type(batch))
            return nn.functional.mse_loss(self.net(batch), batch)  # the loss reads x

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", nn.functional.mse_loss(self.net(batch), batch))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=0.01)

    x, _ = _arrays()
    gen = lambda: (x[i : i + BATCH] for i in range(0, N_TRAIN, BATCH))  # noqa: E731
    ds = dataset_from_mapping(
        "d", pl.Data(train=gen, val={"x": x[N_TRAIN:]}), where="h", seed=0, val_fraction=0.2
    )
    m = get_backend("lightning").run(Job(pl.native(torch=AE), ds, SETTINGS, CPU)).metrics
    assert seen and all(t is torch.Tensor for t in seen)  # x alone, never an (x, y) pair
    assert np.isfinite(m["val/loss"]) and m["train/steps"] == 6


@pytest.mark.slow
def test_protolab_layers_refuse_a_stream_when_run_directly(tmp_path: Path) -> None:
    from protolab import layers as Ly
    from protolab.errors import ArchError

    job = Job(pl.Arch(Ly.Dense(3)), _dataset("generator", tmp_path), SETTINGS, CPU)
    with pytest.raises(ArchError, match=r"cannot train on pl.Data\(train=<generator>\)"):
        get_backend("lightning").run(job)


# ---------------------------------------------------------------- through the CLI

CONFIG = """\
experiment: exp.py
backends: {backends}
study: {{name: src, n_trials: 1, sampler: random, pruner: none}}
train: {{epochs: 2, batch_size: 32}}
hardware: {{accelerator: cpu}}
"""

SCRIPT = """
import numpy as np
import protolab as pl
import tensorflow as tf
import torch
import keras
import lightning as L
from torch import nn
from protolab import layers as Ly


@pl.data
def blobs(space):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    x = (rng.normal(size=(200, 4)) + y[:, None]).astype(np.float32)
    scale = space.choice("scale", [1.0, 2.0])
    train = tf.data.Dataset.from_tensor_slices((x[:160] * scale, y[:160])).batch(32)
    return pl.Data(train=train, val={{"x": x[160:] * scale, "y": y[160:]}})


class Lit(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 3)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y.long())

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def kmodel(shape):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    loss = keras.losses.SparseCategoricalCrossentropy(True)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
    return model


@pl.experiment()
def model(space):
    return {model}
"""
NATIVE = "pl.native(torch=Lit, keras=kmodel)"


def _child_runs(workdir: Path) -> list[Any]:
    """The study's child runs (a client of its own: no global MLflow state, such as
    ``mlflow.set_tracking_uri``'s, for later tests in this process to inherit)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("src")
    assert exp is not None
    return list(client.search_runs([exp.experiment_id], "tags.`protolab.backend` != ''"))


def _project(workdir: Path, backends: str, model: str = NATIVE, extra: str = "") -> None:
    (workdir / "exp.py").write_text(textwrap.dedent(SCRIPT.format(model=model)))
    (workdir / "cfg.yaml").write_text(CONFIG.format(backends=backends) + extra)


@pytest.mark.slow
def test_a_tf_data_source_feeds_a_lightning_module_and_keras_on_jax(workdir: Path) -> None:
    """tf.data into the torch mode (numpy batches as tensors) and into Keras on JAX in its
    own worker process (the @pl.data function is called again there with the trial's
    values: a tf.data pipeline does not pickle)."""
    _project(workdir, "[lightning, jax]")
    result = runner.invoke(app, ["sweep", "cfg.yaml"])
    assert result.exit_code == 0, result.output
    by_mode = {r.data.tags["protolab.backend"]: r.data.metrics for r in _child_runs(workdir)}
    assert set(by_mode) == {"lightning", "jax"}, by_mode.keys()
    for run in by_mode.values():
        assert run["train/steps"] == 10  # 160 samples / 32, two epochs
        assert run["val/acc"] > 0.5


@pytest.mark.parametrize(
    ("backends", "model", "extra", "expect"),
    [
        ("[lightning, jax]", "pl.Arch(Ly.Dense(3))", "",
         ["backends: lightning, jax cannot train on the script's pl.Data(train=<tf.data>)",
          "modes that take it here: none"]),
        ("[lightning, keras]", "pl.native(torch=Lit, keras=lambda s: keras.Sequential("
         "[keras.Input(s), keras.layers.Dense(3)]))", "",
         ["backends: keras cannot train", "modes that take it here: lightning, torch-compile"]),
        ("[lightning]", NATIVE, "train: {epochs: 2, batch_size: 32, lr: 0.1}\n",
         ["train.lr=0.1 does not reach a LightningModule"]),
    ],
)  # fmt: skip
def test_a_stream_a_mode_cannot_take_is_exit_2_before_any_store(
    workdir: Path, backends: str, model: str, extra: str, expect: list[str]
) -> None:
    _project(workdir, backends, model)
    if extra:
        cfg = (workdir / "cfg.yaml").read_text().replace("train: {epochs: 2, batch_size: 32}\n", "")
        (workdir / "cfg.yaml").write_text(cfg + extra)
    result = runner.invoke(app, ["sweep", "cfg.yaml"])
    assert result.exit_code == 2, result.output
    for part in expect:
        assert part in result.stderr, result.stderr
    assert not (workdir / "mlruns").exists()


@pytest.mark.slow
def test_hardware_threads_reach_tensorflow_before_the_script_starts_it(workdir: Path) -> None:
    """The @pl.data function builds a tf.data pipeline (TensorFlow's runtime starts in the
    sweep's own dry run): hardware.threads is applied before that, so the trial runs with
    it (the machine's default here is 2)."""
    _project(workdir, "[tf-graph]")
    cfg = (
        (workdir / "cfg.yaml")
        .read_text()
        .replace("{accelerator: cpu}", "{accelerator: cpu, threads: 1}")
    )
    (workdir / "cfg.yaml").write_text(cfg)
    # a process of its own: TensorFlow's pools are fixed once per process
    cmd = [sys.executable, "-m", "protolab.cli", "sweep", "cfg.yaml"]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _child_runs(workdir)
    assert [r.data.tags["protolab.tf_intra_threads"] for r in runs] == ["1"]


# ---------------------------------------------------------------- several inputs and outputs


def _tickets(n: int = 160) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    tags = rng.integers(2, size=(n, 6)).astype(np.float32)
    return {
        "x": {"title": rng.integers(50, size=(n, 5)), "tags": tags},
        "y": {
            "priority": tags[:, :1] * 0.5,
            "department": (tags[:, 0] + 2 * tags[:, 1]).astype(np.int64),
        },
    }


def test_dicts_of_arrays_are_split_by_rows_and_kept_by_name() -> None:
    data = _tickets()
    ds = dataset_from_mapping("t", data, where="here", seed=0, val_fraction=0.25)
    st = ds.structure
    assert st is not None and ds.metric == "val/loss"  # each head's metric is the model's
    assert st.inputs == ["title", "tags"] and st.outputs == ["priority", "department"]
    assert st.x_train["title"].dtype == np.int64 and st.y_val["department"].dtype == np.int64
    assert len(st.x_train["tags"]) == 120 and len(st.y_val["priority"]) == 40
    # the same rows in every leaf: department is a function of the tags in every row
    for x, y in ((st.x_train, st.y_train), (st.x_val, st.y_val)):
        np.testing.assert_array_equal(y["department"], x["tags"][:, 0] + 2 * x["tags"][:, 1])


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda d: d["x"].update(tags=d["x"]["tags"][:10]), "different row counts"),
        (lambda d: d["y"].update(department=-d["y"]["department"] - 1), "negative label"),
        (lambda d: d["x"].update(title=["a", "b"]), "is a list; allowed: a numpy array"),
        (lambda d: d.update(x_test=d["x"]), "allowed: 'x' with an optional 'y'"),
        (lambda d: d["y"].update(priority=np.full((160, 1), np.nan, np.float32)), "NaN or inf"),
    ],
)
def test_bad_dicts_of_arrays_say_what_is_allowed(mutate: Any, expect: str) -> None:
    data = _tickets()
    mutate(data)
    with pytest.raises(DataError, match="here") as info:
        dataset_from_mapping("t", data, where="here", seed=0, val_fraction=0.25)
    assert expect in str(info.value)


def test_a_stream_of_dict_batches_is_a_structure() -> None:
    data = _tickets()
    x, y = data["x"], data["y"]

    def batches() -> Any:
        for i in range(0, 120, 40):
            yield {k: v[i : i + 40] for k, v in x.items()}, {k: v[i : i + 40] for k, v in y.items()}

    val = {"x": {k: v[120:] for k, v in x.items()}, "y": {k: v[120:] for k, v in y.items()}}
    ds = dataset_from_mapping(
        "t", pl.Data(train=batches, val=val), where="h", seed=0, val_fraction=0.2
    )
    assert ds.structure is not None and ds.stream is not None and ds.stream.steps() == 3
    assert ds.structure.outputs == ["priority", "department"]
    bad = {"x": {"title": x["title"][120:]}, "y": val["y"]}  # an input missing in validation
    with pytest.raises(DataError, match=r"validation x is \{'title'"):
        dataset_from_mapping(
            "t", pl.Data(train=batches, val=bad), where="h", seed=0, val_fraction=0.2
        )


def _ranker() -> Any:
    import keras

    title = keras.Input((5,), name="title", dtype="int64")
    tags = keras.Input((6,), name="tags")
    feats = keras.layers.concatenate(
        [keras.layers.Flatten()(keras.layers.Embedding(50, 4)(title)), tags]
    )
    model = keras.Model(
        [title, tags],
        {"priority": keras.layers.Dense(1, name="priority")(feats),
         "department": keras.layers.Dense(4, name="department")(feats)},
    )  # fmt: skip
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss={"priority": "mse", "department": keras.losses.SparseCategoricalCrossentropy(True)},
        metrics={"department": ["accuracy"]},
    )
    return model


@pytest.mark.slow
def test_a_compiled_model_with_several_heads_logs_each_heads_metric() -> None:
    ds = dataset_from_mapping("t", _tickets(), where="h", seed=0, val_fraction=0.25)
    result = get_backend("tf-graph").run(Job(pl.native(keras=_ranker), ds, SETTINGS, CPU))
    m = result.metrics
    assert m["val_department_accuracy"] > 0.5  # the department is learnable from the tags
    assert "val_priority_loss" in m and "val_department_loss" in m and np.isfinite(m["val/loss"])
    assert "val/acc" not in m and "val/rmse" not in m  # no single head stands for the model
    assert m["train/steps"] == 2 * 4  # 120 rows in batches of 32


@pytest.mark.slow
def test_a_lightning_module_receives_the_structure_as_tensors() -> None:
    import lightning as L
    import torch
    from torch import nn

    seen: list[tuple[str, ...]] = []

    class Two(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.head = nn.Embedding(50, 2), nn.Linear(16, 4)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            inputs, targets = batch
            seen.append(tuple(sorted(inputs)) + tuple(sorted(targets)))
            feats = torch.cat([self.emb(inputs["title"]).flatten(1), inputs["tags"]], 1)
            return nn.functional.cross_entropy(self.head(feats), targets["department"])

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", self.training_step(batch, batch_idx))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=0.05)

    ds = dataset_from_mapping("t", _tickets(), where="h", seed=0, val_fraction=0.25)
    m = get_backend("lightning").run(Job(pl.native(torch=Two), ds, SETTINGS, CPU)).metrics
    assert seen[0] == ("tags", "title", "department", "priority")
    assert m["train/steps"] == 6 and np.isfinite(m["val/loss"])  # drop_last: 3 full batches


def test_an_uncompiled_model_with_several_inputs_on_one_array_names_the_way_out() -> None:
    from protolab.arch import build_custom
    from protolab.errors import ArchError

    def uncompiled() -> Any:
        model = _ranker()
        return type(model)(model.inputs, model.outputs)  # the same graph, not compiled

    node = pl.native(keras=uncompiled).layers[0]
    with pytest.raises(ArchError, match="return x and y as dicts by input and output name"):
        build_custom(node, "keras", (5,))


def test_several_inputs_for_protolabs_own_layers_is_exit_2_before_any_store(
    workdir: Path,
) -> None:
    script = """
    import numpy as np
    import protolab as pl
    from protolab import layers as Ly


    @pl.data
    def tickets():
        rng = np.random.default_rng(0)
        x = {"a": rng.normal(size=(50, 3)).astype(np.float32), "b": rng.normal(size=(50, 2))}
        return {"x": x, "y": rng.integers(0, 2, 50)}


    @pl.experiment()
    def model(space):
        return pl.Arch(Ly.Dense(2))
    """
    (workdir / "exp.py").write_text(textwrap.dedent(script))
    (workdir / "cfg.yaml").write_text(CONFIG.format(backends="[lightning]"))
    result = runner.invoke(app, ["sweep", "cfg.yaml"])
    assert result.exit_code == 2, result.output
    assert "lightning cannot train on the script's several inputs or outputs" in result.stderr
    assert not (workdir / "mlruns").exists()
