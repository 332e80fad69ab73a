"""Validation and test metrics, computed once, in numpy, for every backend.

Every mode hands back its model's outputs on the validation split (logits, or values for
regression) and these functions score them, so ``val/f1`` means the same on eager torch,
TensorFlow and JAX: one implementation, nothing framework-specific to drift apart. The test
split is scored here too, from ``model.predict(x_test)``, loss and acc/rmse included
(:func:`score_test`), so ``test/*`` has one definition on every mode. Checked against
scikit-learn in the tests.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "SCORES",
    "accuracy",
    "cross_entropy",
    "mse",
    "rmse",
    "score",
    "score_test",
]


def _labels(out: np.ndarray) -> np.ndarray:
    return np.asarray(out).argmax(-1)


def _per_class(out: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted and actual counts per class (classes seen in y or out)."""
    pred = _labels(out)
    k = int(max(out.shape[-1], y.max(initial=0) + 1))
    tp = np.bincount(y[pred == y], minlength=k).astype(float)
    return (
        tp,
        np.bincount(pred, minlength=k).astype(float),
        np.bincount(y, minlength=k).astype(float),
    )


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def cross_entropy(out: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of logits ``out`` against class indices ``y`` (in nats).

    Log-sum-exp with the row maximum subtracted, in float64: large logits do not overflow.
    """
    logits = np.asarray(out, dtype=np.float64)
    top = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
    return float((lse - logits[np.arange(len(y)), y]).mean())


def probability_cross_entropy(out: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of probability rows ``out`` (a softmax head) against class ids.

    As every mode's training loss takes them (Keras' rule): rows renormalised, clipped to
    [1e-7, 1 - 1e-7]; applying a softmax again would score a different loss.
    """
    p = np.asarray(out, dtype=np.float64)
    p = p / np.clip(p.sum(-1, keepdims=True), 1e-12, None)
    picked = np.clip(p[np.arange(len(y)), y], 1e-7, 1 - 1e-7)
    return float(-np.log(picked).mean())


def accuracy(out: np.ndarray, y: np.ndarray) -> float:
    return float((_labels(out) == y).mean())


def mse(out: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error over every output of every sample (the regression loss)."""
    pred = np.asarray(out, dtype=np.float64).reshape(len(y), -1)
    return float(((pred - np.asarray(y, dtype=np.float64).reshape(len(y), -1)) ** 2).mean())


def rmse(out: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(mse(out, y)))


def precision(out: np.ndarray, y: np.ndarray) -> float:
    """Macro precision over the classes present in y or predicted (scikit-learn's labels)."""
    tp, pred, true = _per_class(out, y)
    seen = (pred + true) > 0
    return float(_ratio(tp, pred)[seen].mean())


def recall(out: np.ndarray, y: np.ndarray) -> float:
    tp, pred, true = _per_class(out, y)
    seen = (pred + true) > 0
    return float(_ratio(tp, true)[seen].mean())


def f1(out: np.ndarray, y: np.ndarray) -> float:
    """Macro F1: the mean over classes of 2 tp / (predicted + actual)."""
    tp, pred, true = _per_class(out, y)
    seen = (pred + true) > 0
    return float(_ratio(2 * tp, pred + true)[seen].mean())


def top5_acc(out: np.ndarray, y: np.ndarray) -> float:
    top = np.argsort(-np.asarray(out), axis=-1)[:, :5]
    return float((top == y[:, None]).any(-1).mean())


def auc(out: np.ndarray, y: np.ndarray) -> float:
    """Binary ROC AUC from the positive class's margin (rank statistic, ties averaged)."""
    out = np.asarray(out, dtype=np.float64)
    margin = out[:, 1] - out[:, 0] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(-1)
    order = np.argsort(margin, kind="mergesort")
    ranks = np.empty(len(margin))
    sorted_m = margin[order]
    i = 0
    while i < len(margin):  # average ranks over ties
        j = i
        while j + 1 < len(margin) and sorted_m[j + 1] == sorted_m[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mae(out: np.ndarray, y: np.ndarray) -> float:
    return float(np.abs(np.asarray(out).reshape(len(y), -1) - y.reshape(len(y), -1)).mean())


def r2(out: np.ndarray, y: np.ndarray) -> float:
    """Coefficient of determination, averaged over outputs (scikit-learn's default)."""
    pred = np.asarray(out, dtype=np.float64).reshape(len(y), -1)
    true = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    ss_res = ((true - pred) ** 2).sum(0)
    ss_tot = ((true - true.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - _ratio(ss_res, ss_tot)))


Score = Callable[[np.ndarray, np.ndarray], float]
CLASSIFICATION: dict[str, Score] = {
    "f1": f1,
    "precision": precision,
    "recall": recall,
    "top5_acc": top5_acc,
    "auc": auc,
}
REGRESSION: dict[str, Score] = {"mae": mae, "r2": r2}
SCORES: dict[str, Score] = {**CLASSIFICATION, **REGRESSION}


def score(names: tuple[str, ...], out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``{"val/<name>": value}`` for each requested name (``val/`` prefix optional)."""
    return {f"val/{n}": SCORES[n](out, y) for n in (m.removeprefix("val/") for m in names)}


def score_test(
    task: str,
    names: tuple[str, ...],
    out: np.ndarray,
    y: np.ndarray,
    *,
    probabilities: bool = False,
) -> dict[str, float]:
    """``test/loss``, ``test/acc`` (or ``test/rmse``) and ``test/<name>`` for each score.

    ``names`` may carry any metric names (``val/f1``, ``time/step_ms``): those that are not
    scores of the outputs (timings, sizes) have no test counterpart and are skipped.

    The loss is the plain training loss (softmax cross-entropy, or MSE for regression)
    from the outputs, whatever the backend: one definition to compare modes on; outputs
    that are probabilities (the run's ``protolab.output`` tag) are scored as such.
    """
    if task == "classification":
        loss = probability_cross_entropy if probabilities else cross_entropy
        base = {"test/loss": loss(out, y), "test/acc": accuracy(out, y)}
    else:
        base = {"test/loss": mse(out, y), "test/rmse": rmse(out, y)}
    short = dict.fromkeys(m.split("/", 1)[-1] for m in names)  # val/f1 and f1 alike
    return {**base, **{f"test/{n}": SCORES[n](out, y) for n in short if n in SCORES}}
