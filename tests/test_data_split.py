"""The test split (issue 12, item 6), one-hot and ambiguous targets, test/ metric names.

Built-ins hold out a fixed, seeded test split; files bring ``x_test``/``y_test`` (or a CSV
``split`` column). Sweeps never read it: ``protolab run`` scores the trained model once,
from ``model.predict(x_test)`` with the numpy metrics, and logs ``test/*`` to its run.
Everything here uses the real libraries and real local stores.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from protolab.cli import app
from protolab.data import BUILTIN_TEST_FRACTION, Dataset, load_dataset
from protolab.data._builtin import BUILTINS
from protolab.errors import DataError

runner = CliRunner()

ONE_EPOCH = """\
experiment: exp.py
backends: {backends}
metrics: [f1]
study: {{name: split, n_trials: 1, sampler: random, pruner: none}}
train: {{epochs: 1, batch_size: 128, lr: 0.01}}
hardware: {{accelerator: cpu}}
"""


def _rows(*xs: np.ndarray) -> list[bytes]:
    """Every sample's bytes, sorted: equal lists mean equal multisets of rows."""
    return sorted(r.tobytes() for x in xs for r in x.reshape(len(x), -1))


def _error(spec: str, base: Path) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(spec, base)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- built-ins


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_test_split_partitions_the_data(name: str) -> None:
    """Sizes as documented, and train + val + test is exactly the built-in's data."""
    ds = load_dataset(name, seed=2)
    x, _ = BUILTINS[name](2)
    assert ds.x_test is not None and ds.y_test is not None
    assert ds.n_test == round(len(x) * BUILTIN_TEST_FRACTION)
    assert ds.n_val == round((len(x) - ds.n_test) * 0.2)
    assert ds.n_train + ds.n_val + ds.n_test == len(x)
    # every sample lands in exactly one split (a multiset partition: duplicates counted)
    assert _rows(ds.x_train, ds.x_val, ds.x_test) == _rows(x.astype(ds.x_train.dtype))
    assert ds.x_test.dtype == ds.x_train.dtype and ds.y_test.dtype == ds.y_train.dtype
    if ds.task == "classification":
        assert set(np.unique(ds.y_test)) == set(range(ds.n_classes or 0))  # stratified


def test_builtin_test_split_deterministic_and_fixed_across_seeds() -> None:
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 5))
    assert a.x_test is not None and b.x_test is not None and c.x_test is not None
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_test, b.y_test)
    assert a.fingerprint == b.fingerprint
    # the study seed moves train/val, never the test rows: no seed trains on them
    assert np.array_equal(a.x_test, c.x_test)
    assert not np.array_equal(a.x_val, c.x_val)
    assert _rows(a.x_train, a.x_val) == _rows(c.x_train, c.x_val)


# ----------------------------------------------------------------------------- files


def test_npz_test_keys_single_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), np.arange(50) % 3 + 1  # labels 1..3: re-encoded
    xt, yt = rng.normal(size=(7, 3)), np.array([3, 1, 2, 3, 1, 2, 3])
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=xt, y_test=yt)
    ds = load_dataset("d.npz", tmp_path, seed=1)
    assert ds.x_test is not None and ds.y_test is not None
    assert (ds.n_train + ds.n_val, ds.n_test) == (50, 7)
    assert np.array_equal(ds.x_test, xt.astype(np.float32))
    assert np.array_equal(ds.y_test, yt - 1)  # encoded with train/val's labels
    assert _rows(ds.x_train, ds.x_val) == _rows(x.astype(np.float32))  # test not in train/val
    again = load_dataset("d.npz", tmp_path, seed=1)
    assert np.array_equal(again.x_val, ds.x_val) and again.fingerprint == ds.fingerprint
    np.savez(tmp_path / "n.npz", x=x, y=y)  # without test keys: no test split, as before
    assert load_dataset("n.npz", tmp_path).x_test is None


def test_npz_test_keys_split_layout(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "s.npz",
        x_train=np.ones((8, 2)),
        y_train=np.linspace(0, 1, 8),
        x_val=np.zeros((3, 2)),
        y_val=np.zeros(3),
        x_test=np.full((4, 2), 2.0),
        y_test=np.array([0.5, 1.0, 0.0, 1.0]),  # 0/1-ish values: regression, as train is
    )
    ds = load_dataset("s.npz", tmp_path)
    assert ds.task == "regression" and (ds.n_train, ds.n_val, ds.n_test) == (8, 3, 4)
    assert ds.y_test is not None and ds.y_test.dtype == np.float32


@pytest.mark.parametrize(
    ("arrays", "expect"),
    [
        ({"x_test": np.zeros((2, 3))}, ["has 'x_test' but no 'y_test'", "x_test", "y_test"]),
        (
            {"x_test": np.zeros((2, 4)), "y_test": np.zeros(2, dtype=int)},
            ["x samples are (3,)", "x_test samples are (4,)"],
        ),
        (
            {"x_test": np.zeros((2, 3)), "y_test": np.zeros(2)},
            ["y_test is float64 (regression)", "classification"],
        ),
    ],
)
def test_npz_bad_test_keys(
    tmp_path: Path, arrays: dict[str, np.ndarray], expect: list[str]
) -> None:
    np.savez(tmp_path / "b.npz", x=np.zeros((10, 3)), y=np.arange(10) % 2, **arrays)
    msg = _error("b.npz", tmp_path)
    assert "b.npz" in msg
    for part in expect:
        assert part in msg, msg


def test_csv_split_column(tmp_path: Path) -> None:
    lines = ["a,target,split"]
    lines += [f"{i},{i % 2},train" for i in range(20)]
    lines += [f"{i},{i % 2},TEST" for i in range(100, 104)]
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset("c.csv", tmp_path)
    assert ds.x_test is not None and ds.n_test == 4 and ds.n_train + ds.n_val == 20
    assert sorted(ds.x_test[:, 0]) == [100, 101, 102, 103] and ds.input_shape == (1,)
    (tmp_path / "v.csv").write_text("a,target,split\n1,0,train\n2,1,train\n3,0,val\n4,1,test\n")
    given = load_dataset("v.csv", tmp_path)  # val rows given: kept, as x_val in an .npz
    assert (given.n_train, given.n_val, given.n_test) == (2, 1, 1)
    (tmp_path / "w.csv").write_text("a,target,split\n1,0,train\n2,1,holdout\n")
    msg = _error("w.csv", tmp_path)
    assert "line 3" in msg and "'holdout'" in msg and "train, val, test" in msg


# ----------------------------------------------------------------------------- targets


def test_one_hot_targets_are_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = np.arange(30) % 3
    np.savez(
        tmp_path / "h.npz",
        x=np.random.default_rng(0).normal(size=(30, 2)),
        y=np.eye(3, dtype=np.float32)[labels],  # float one-hot: still classes
        x_test=np.zeros((3, 2)),
        y_test=np.eye(3, dtype=np.uint8)[[2, 0, 1]],
    )
    ds = load_dataset("h.npz", tmp_path, seed=0)
    assert (ds.task, ds.n_classes, ds.output_shape, ds.metric) == (
        "classification",
        3,
        (3,),
        "val/acc",
    )
    assert ds.y_train.dtype == np.int64 and ds.y_train.ndim == 1
    assert sorted(np.concatenate([ds.y_train, ds.y_val]).tolist()) == sorted(labels.tolist())
    assert ds.y_test is not None and ds.y_test.tolist() == [2, 0, 1]
    assert len(ds.notes) == 2 and "one-hot" in ds.notes[0]
    err = capsys.readouterr().err
    assert "h.npz" in err and "one-hot" in err and "class indices" in err


AMBIGUOUS = [
    ("cube", np.zeros((12, 1, 3)), ["shape (12, 1, 3)", "float64", "ambiguous"]),
    ("multi-hot", np.eye(3)[np.arange(12) % 3] + np.eye(3)[(np.arange(12) + 1) % 3], ["0/1"]),
    ("int-columns", np.arange(36).reshape(12, 3), ["shape (12, 3)", "int64", "not one-hot"]),
]


@pytest.mark.parametrize(("case", "y", "expect"), AMBIGUOUS, ids=[a[0] for a in AMBIGUOUS])
def test_ambiguous_target_exits_2_before_any_store(
    make_project: Callable[..., Path], workdir: Path, case: str, y: np.ndarray, expect: list[str]
) -> None:
    np.savez(workdir / "amb.npz", x=np.zeros((12, 4)), y=y)
    script = textwrap.dedent(
        """\
        import protolab as pl
        from protolab import layers as L


        @pl.experiment(data="amb.npz")
        def model(space):
            return pl.Arch(L.Dense(3))
        """
    )
    cfg = make_project(script=script)
    result = runner.invoke(app, ["sweep", str(cfg)])
    out = result.stderr + result.stdout
    assert result.exit_code == 2, out
    assert "Traceback" not in out
    for part in ["amb.npz", "y has shape", "allowed:", "one-hot", *expect]:
        assert part in out, f"{part!r} not in {out!r}"
    assert not (workdir / "mlruns").exists(), "a store was written for bad data"


# ----------------------------------------------------------------------------- metric names


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ("study.objectives=[{metric: test/acc}]", "study.objectives"),
        ("study.constraints=['test/loss <= 1']", "study.constraints"),
        ("metrics=[test/f1]", "metrics"),
    ],
)
def test_test_metrics_refused_as_sweep_metrics(
    make_project: Callable[..., Path], workdir: Path, override: str, where: str
) -> None:
    cfg = make_project()
    result = runner.invoke(app, ["sweep", str(cfg), override])
    out = result.stderr + result.stdout
    assert result.exit_code == 2, out
    assert where in out and "validation only" in out and "val/" in out, out
    assert not (workdir / "mlruns").exists()


def test_test_metric_refused_in_experiment(make_project: Callable[..., Path]) -> None:
    script = textwrap.dedent(
        """\
        import protolab as pl
        from protolab import layers as L


        @pl.experiment(data="digits", metric="test/acc")
        def model(space):
            return pl.Arch(L.Flatten(), L.Dense(10))
        """
    )
    cfg = make_project(script=script)
    result = runner.invoke(app, ["sweep", str(cfg)])
    out = result.stderr + result.stdout
    assert result.exit_code == 2 and "@experiment(metric=...)" in out, out
    assert "validation only" in out and "val/acc" in out


# ----------------------------------------------------------------------------- protolab run


def _logged(workdir: Path, trial: str) -> dict[str, dict[str, float]]:
    """``{backend: metrics}`` of the runs tagged with ``trial``, read back from MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("split")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], f"tags.`protolab.trial` = '{trial}'")
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    return {r.data.tags["protolab.backend"]: dict(r.data.metrics) for r in runs}


@pytest.mark.slow
def test_run_logs_test_metrics_equal_to_sklearn(
    make_project: Callable[..., Path], workdir: Path
) -> None:
    """The path ``protolab run`` takes, in-process so the trained models can be re-scored:
    the logged test/* values equal scikit-learn's on each mode's own test predictions."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    from protolab.backends import NAMES
    from protolab.config import load_config
    from protolab.sweep import prepare, run_once
    from protolab.sweep._test_split import hold_ends, log_test_metrics
    from protolab.tracking import open_tracker

    cfg_path = make_project(config=ONE_EPOCH.format(backends="[lightning, keras]"))
    cfg, script = load_config(cfg_path, [], backends=NAMES)
    ctx = prepare(cfg, cfg_path, script)
    tracker = open_tracker(ctx)
    try:
        with hold_ends(tracker) as held:
            out = run_once(ctx, held, None, "run", values={"width": 8, "act": "relu"})
            tested = log_test_metrics(ctx, out, held, "run")
    finally:
        tracker.end()
    logged = _logged(workdir, "run")
    ds: Dataset = ctx.dataset
    assert ds.x_test is not None and ds.y_test is not None
    assert set(tested) == set(logged) == {"lightning", "keras"}
    for mode, result in out.results.items():
        assert result.model is not None
        logits = result.model.predict(ds.x_test).astype(np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        pred = logits.argmax(1)
        m = logged[mode]
        assert m["test/acc"] == pytest.approx(accuracy_score(ds.y_test, pred), abs=1e-9)
        assert m["test/f1"] == pytest.approx(f1_score(ds.y_test, pred, average="macro"))
        assert m["test/loss"] == pytest.approx(
            log_loss(ds.y_test, probs, labels=range(10)), rel=1e-4
        )
        assert tested[mode] == {k: v for k, v in m.items() if k.startswith("test/")}
        assert "val/acc" in m and "test/rmse" not in m


@pytest.mark.slow
def test_sweep_then_run_best_logs_prints_and_reports_test(
    make_project: Callable[..., Path], workdir: Path
) -> None:
    """The CLI end to end: the sweep logs no test/ metric; ``run --best`` logs and prints
    them (regression: test/rmse); the report shows them for the best trial."""
    np.savez(
        workdir / "reg.npz",
        x=np.linspace(-1, 1, 120).reshape(60, 2),
        y=np.linspace(0, 3, 60).astype(np.float32),
        x_test=np.linspace(-1, 1, 20).reshape(10, 2),
        y_test=np.linspace(0, 3, 10).astype(np.float32),
    )
    script = textwrap.dedent(
        """\
        import protolab as pl
        from protolab import layers as L


        @pl.experiment(data="reg.npz", metrics=["mae"])
        def model(space):
            return pl.Arch(L.Dense(space.int("width", 4, 8), activation="relu"), L.Dense(1))
        """
    )
    cfg = make_project(script=script, config=ONE_EPOCH.format(backends="[lightning]"))
    cfg.write_text(cfg.read_text().replace("metrics: [f1]\n", ""))
    swept = runner.invoke(app, ["sweep", str(cfg)])
    assert swept.exit_code == 0, swept.stderr + swept.stdout
    assert not any(k.startswith("test/") for k in _logged(workdir, "0")["lightning"])
    best = runner.invoke(app, ["run", str(cfg), "--best"])
    assert best.exit_code == 0, best.stderr + best.stdout
    m = _logged(workdir, "best")["lightning"]
    assert {"test/loss", "test/rmse", "test/mae"} <= set(m) and "test/acc" not in m
    assert m["test/rmse"] == pytest.approx(np.sqrt(m["test/loss"]), rel=1e-6)
    assert "best-lightning: test/rmse=" in best.stdout and "(test split, 10 samples)" in best.stdout
    report = runner.invoke(app, ["report", str(cfg), "--out", str(workdir / "rep")])
    assert report.exit_code == 0, report.stderr + report.stdout
    text = (workdir / "rep" / "report.md").read_text()
    assert "test split of t0" in text and f"test/rmse {m['test/rmse']:.4g}" in text
