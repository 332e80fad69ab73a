"""Extra validation scores: one numpy implementation, checked against scikit-learn, and
logged per epoch by every mode from the model's own outputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from protolab.data._scores import auc, f1, mae, precision, r2, recall, top5_acc


@pytest.fixture
def logits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 300)
    out = rng.normal(size=(300, 6)) + 2.0 * np.eye(6)[y] * rng.random((300, 1))
    return out.astype(np.float32), y


def test_classification_scores_match_scikit_learn(logits: tuple[np.ndarray, np.ndarray]) -> None:
    out, y = logits
    pred = out.argmax(-1)
    assert f1(out, y) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert precision(out, y) == pytest.approx(
        skm.precision_score(y, pred, average="macro", zero_division=0)
    )
    assert recall(out, y) == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert top5_acc(out, y) == pytest.approx(skm.top_k_accuracy_score(y, out, k=5))


def test_a_class_never_predicted_counts_as_zero_precision() -> None:
    y = np.array([0, 0, 1, 2, 2])
    out = np.eye(3)[[0, 0, 0, 2, 2]]  # class 1 is never predicted
    assert precision(out, y) == pytest.approx(
        skm.precision_score(y, out.argmax(-1), average="macro", zero_division=0)
    )
    assert f1(out, y) == pytest.approx(skm.f1_score(y, out.argmax(-1), average="macro"))


def test_binary_auc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    margin = np.round(rng.normal(size=200) + y, 1)  # rounded: many ties
    out = np.stack([np.zeros(200), margin], axis=1)
    assert auc(out, y) == pytest.approx(skm.roc_auc_score(y, margin))


def test_regression_scores_match_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=(100, 2))
    out = y + rng.normal(scale=0.3, size=y.shape)
    assert mae(out, y) == pytest.approx(skm.mean_absolute_error(y, out))
    assert r2(out, y) == pytest.approx(skm.r2_score(y, out))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lightning", "tf-graph", "jax"])
def test_every_mode_logs_the_scores_of_its_own_outputs(mode: str) -> None:
    from protolab import Arch
    from protolab import layers as L
    from protolab.backends import Hardware, Job, TrainSettings, get_backend
    from protolab.data import load_dataset

    ds = load_dataset("digits")
    arch = Arch(L.Flatten(), L.Dense(32, "relu"), L.Dense(10))
    settings = TrainSettings(epochs=2, batch_size=64, optimizer="adam", lr=3e-3)
    job = Job(arch, ds, settings, Hardware(accelerator="cpu"), ("f1", "top5_acc"))
    backend = get_backend(mode)
    result = backend.run(job)
    out = result.model.predict(ds.x_val)
    backend.release()
    assert [("val/f1" in h, "val/top5_acc" in h) for h in result.history] == [(True, True)] * 2
    # the logged score is the score of the trained model's outputs (same numbers, any mode)
    assert result.metrics["val/f1"] == pytest.approx(
        skm.f1_score(ds.y_val, out.argmax(-1), average="macro"), abs=1e-6
    )
    assert result.metrics["val/top5_acc"] >= result.metrics["val/acc"]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ("metrics: [f2]", ["metrics", "unknown metric 'val/f2'", "val/f1", "val/auc"]),
        ("metrics: [auc]", ["metrics: auc is the binary ROC AUC", "10 classes", "f1"]),
        ("metrics: [r2]", ["val/r2 needs a regression dataset", "classification"]),
    ],
)
def test_scores_a_dataset_cannot_produce_are_refused_before_anything_runs(
    make_project: object, extra: str, needles: list[str]
) -> None:
    from pathlib import Path

    from typer.testing import CliRunner

    from protolab.cli import app

    cfg: Path = make_project()  # type: ignore[operator]
    cfg.write_text(cfg.read_text() + extra + "\n")
    out = CliRunner().invoke(app, ["sweep", str(cfg)], catch_exceptions=False)
    assert out.exit_code == 2, out.output
    assert all(n in out.output for n in needles), out.output
    assert "Traceback" not in out.output
    assert not (cfg.parent / "mlruns").exists()


@pytest.mark.slow
def test_an_objective_on_f1_is_scored_and_optimised(make_project: object) -> None:
    import optuna
    from typer.testing import CliRunner

    from protolab._stores import open_storage
    from protolab.cli import app

    cfg = make_project(epochs=1)  # type: ignore[operator]
    text = cfg.read_text().replace("n_trials: 2", "n_trials: 1")
    cfg.write_text(text)
    out = CliRunner().invoke(
        app, ["sweep", str(cfg), "study.objectives=[{metric: val/f1}]"], catch_exceptions=False
    )
    assert out.exit_code == 0, out.output
    study = optuna.load_study(study_name="tiny", storage=open_storage(None))
    (trial,) = study.trials
    assert 0 < trial.value <= 1  # a macro F1, not the accuracy's name on another number
    assert trial.user_attrs["protolab.metrics"]["lightning"]["val/f1"] == trial.value


def test_test_loss_of_probability_rows_is_not_softmaxed_again() -> None:
    """A softmax head's outputs are scored as the probabilities they are (log loss), not
    as logits: a softmax over probabilities would give a different, wrong test/loss."""
    from sklearn.metrics import log_loss

    from protolab.data._scores import score_test

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    y = rng.integers(0, 3, 50)
    as_probs = score_test("classification", (), probs, y, probabilities=True)
    assert as_probs["test/loss"] == pytest.approx(log_loss(y, probs, labels=[0, 1, 2]), rel=1e-6)
    assert as_probs["test/loss"] == pytest.approx(
        score_test("classification", (), logits, y)["test/loss"], rel=1e-6
    )
    assert score_test("classification", (), probs, y)["test/loss"] != pytest.approx(
        as_probs["test/loss"]
    )
