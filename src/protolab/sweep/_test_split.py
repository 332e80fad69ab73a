"""The test split, scored once after ``protolab run`` trains (never during a sweep).

A sweep selects on validation; a test metric is only honest if nothing was chosen by it,
so only the fixed runs (``protolab run``, ``--best``, ``--params``) score the test split,
once, after training. Each mode's model is scored from ``model.predict(x_test)`` with the
numpy metrics in :mod:`protolab.data._scores`, so ``test/acc`` means the same on every mode.

The child runs are ended inside :func:`~protolab.sweep._run.run_once`, before the caller
has the trained models; :class:`HeldEnds` wraps the tracker so a run's COMPLETE end waits
until its ``test/*`` metrics are logged: the run is FINISHED with them, not patched after.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from protolab.sweep._context import SweepContext
    from protolab.sweep._run import Outcome
    from protolab.tracking._types import RunLog, Tracker

__all__ = ["HeldEnds", "hold_ends", "log_test_metrics", "scored_names"]

_PREDICT_BATCH = 4096  # rows per predict call: a large test split never needs one huge batch


class _HeldRun:
    """A child run whose first COMPLETE end is held until :meth:`release`."""

    def __init__(self, run: RunLog) -> None:
        self._run = run
        self._held: tuple[str, str] | None = None

    def end(self, state: str, reason: str = "") -> None:
        if state == "COMPLETE" and self._held is None:
            self._held = (state, reason)
            return
        self._run.end(state, reason)

    def release(self) -> None:
        if self._held is not None:
            state, reason = self._held
            self._held = None
            self._run.end(state, reason)

    def __getattr__(self, name: str) -> Any:  # log_metrics, set_tags, call, flush ...
        return getattr(self._run, name)


class HeldEnds:
    """A tracker whose child runs keep their COMPLETE end until :meth:`release`."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker
        self.runs: dict[str, _HeldRun] = {}  # by name: where test metrics go
        self._every: list[_HeldRun] = []  # every run, so a reused name never leaves one open

    def child(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> _HeldRun:
        run = _HeldRun(self._tracker.child(name, tags, params))
        self.runs[name] = run
        self._every.append(run)
        return run

    def release(self) -> None:
        """End every held run as it asked to be ended (idempotent)."""
        for run in self._every:
            run.release()

    def __getattr__(self, name: str) -> Any:  # log_parent, end, fail_running_children ...
        return getattr(self._tracker, name)


@contextlib.contextmanager
def hold_ends(tracker: Tracker) -> Iterator[HeldEnds]:
    """``HeldEnds(tracker)``, released however the block ends (a failed mode included)."""
    held = HeldEnds(tracker)
    try:
        yield held
    finally:
        held.release()


def scored_names(ctx: SweepContext) -> tuple[str, ...]:
    """What to score on the test split besides loss and acc/rmse: the objectives' metrics
    and the configured scores (names that are not output scores are skipped later)."""
    return tuple(dict.fromkeys([ctx.metric, *(m for m, _ in ctx.objectives), *ctx.scores]))


def log_test_metrics(
    ctx: SweepContext, out: Outcome, held: HeldEnds, label: str
) -> dict[str, dict[str, float]]:
    """Score each mode's trained model on the test split and log ``test/*`` to its run.

    Returns ``{mode: {metric: value}}``; empty when the dataset has no test split. A mode
    whose model cannot predict is reported on stderr and left without test metrics: the
    training it did is still a finished run.
    """
    from protolab.data._scores import score_test

    ds = ctx.dataset
    if ds.x_test is None or ds.y_test is None:
        return {}
    names = scored_names(ctx)
    scored: dict[str, dict[str, float]] = {}
    for mode, result in out.results.items():
        run = held.runs.get(f"{label}-{mode}")
        if result.model is None or run is None:
            continue
        try:
            outputs = predict(result.model, ds.x_test)
            probs = result.tags.get("output") == "probabilities"  # backends' output_tags
            metrics = score_test(ds.task, names, outputs, ds.y_test, probabilities=probs)
        except Exception as e:  # the model trained; only its test score is missing
            print(f"protolab: {label}-{mode}: test split not scored: {e}", file=sys.stderr)
            continue
        run.log_metrics(metrics, step=0)
        run.release()
        scored[mode] = metrics
    return scored


def predict(model: Any, x: np.ndarray) -> np.ndarray:
    """``model.predict`` over ``x`` in batches, as one float32 array."""
    step = _PREDICT_BATCH
    parts = [np.asarray(model.predict(x[i : i + step])) for i in range(0, len(x), step)]
    return np.concatenate(parts).astype(np.float32, copy=False)
