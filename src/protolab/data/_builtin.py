"""Built-in datasets: small, made in code (or shipped with scikit-learn), never downloaded.

Each one exercises a different kind of architecture so both backends can be compared on more
than an MLP: images (``digits``: convolutions), 2-D toy boundaries (``moons``, ``spirals``),
time-series regression (``sine``: Conv1D/LSTM) and token sequences (``sequence``: Embedding,
attention). A builder takes the seed and returns the full ``(x, y)``; the caller takes the
validation split, so every source shares one split implementation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

__all__ = ["BUILTINS", "Builder"]

Builder = Callable[[int], tuple[np.ndarray, np.ndarray]]


def _rng(seed: int) -> np.random.Generator:
    # Stream 0 generates data; the split uses stream 1, so the two never share draws.
    return np.random.default_rng([seed, 0])


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1797 images), scaled to [0, 1]; the seed only moves the split."""
    images, target = _digits_table()
    x = (images.reshape(-1, 8, 8) / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    return x, target.astype(np.int64)  # new arrays: the cached table is never handed out


@functools.cache
def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """The CSV scikit-learn ships, read as ``load_digits`` reads it, without importing
    scikit-learn: that import (scipy, pandas ...) took ~25 % of a cold ``protolab run``'s
    time to its first step. Parsed once per process (a warm ``protolab watch`` reloads
    the data on every save). ``load_digits`` remains the fallback."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")  # finds the package; does not import it
    roots = spec.submodule_search_locations if spec is not None else None
    path = Path(next(iter(roots)), "datasets", "data", "digits.csv.gz") if roots else None
    if path is not None and path.is_file():
        data = np.loadtxt(path, delimiter=",")
        return data[:, :-1], data[:, -1]
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


def _moons(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half-circles: 2000 points, noise 0.2, standardised features."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=2000, noise=0.2, random_state=seed)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype(np.float32), y.astype(np.int64)


def _spirals(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three interleaved spiral arms, 500 points each: not linearly separable at all."""
    rng = _rng(seed)
    per_arm, arms = 500, 3
    xs, ys = [], []
    for arm in range(arms):
        r = np.linspace(0.05, 1.0, per_arm)
        theta = np.linspace(arm * 4.0, (arm + 1) * 4.0, per_arm) + rng.normal(0, 0.2, per_arm)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ys.append(np.full(per_arm, arm))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def _sine(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Predict the next value of a noisy sum of three sines from the previous 16 steps."""
    rng = _rng(seed)
    n, window = 2000, 16
    t = np.arange(n + window, dtype=np.float64)
    phases = rng.uniform(0, 2 * np.pi, 3)
    series = (
        np.sin(0.11 * t + phases[0])
        + 0.5 * np.sin(0.37 * t + phases[1])
        + 0.25 * np.sin(0.05 * t + phases[2])
        + rng.normal(0, 0.05, t.size)
    )
    idx = np.arange(n)[:, None] + np.arange(window)[None, :]
    x = series[idx][..., None]
    y = series[window : window + n]
    return x.astype(np.float32), y.astype(np.float32)


def _sequence(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids 0..9, length 16; the label is which of tokens 0..3 is most frequent.

    Ties go to the lowest token. Counting is order-free, so Embedding + GlobalAvgPool can
    learn it, and so can an LSTM or attention: a task every sequence architecture can solve.
    """
    rng = _rng(seed)
    n, length, vocab, n_classes = 4000, 16, 10, 4
    x = rng.integers(0, vocab, size=(n, length), dtype=np.int64)
    counts = np.stack([(x == tok).sum(axis=1) for tok in range(n_classes)], axis=1)
    return x, counts.argmax(axis=1).astype(np.int64)  # argmax picks the first max: lowest token


BUILTINS: dict[str, Builder] = {
    "digits": _digits,
    "moons": _moons,
    "sequence": _sequence,
    "sine": _sine,
    "spirals": _spirals,
}
