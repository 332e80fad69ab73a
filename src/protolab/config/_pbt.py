"""The rules of ``study.sampler: pbt`` that span sections (study, train): each broken one is
one line naming the field, the value received and what is allowed.

The option values alone (``truncation`` in (0, 0.5], ``population_size >= 2`` ...) are
checked by the sampler itself when the sweep builds it before any store is opened; what
needs ``train:`` or the objectives is checked here, as the config loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["PBT_DEFAULT_READY", "pbt_defaults", "pbt_study_problem", "pbt_train_problem"]

PBT_DEFAULT_READY = 1  # the sampler's default ready_epochs (samplers/_pbt.py)
# train settings PBT may move: numbers a member can change between segments without
# rebuilding its model or optimizer (the optimizer's kind, the loss ... cannot move)
_MOVABLE = ("lr", "weight_decay", "batch_size", "grad_clip", "label_smoothing")


class _Study(Protocol):
    @property
    def sampler(self) -> str: ...
    @property
    def sampler_options(self) -> Mapping[str, Any]: ...
    @property
    def pruner(self) -> str: ...
    @property
    def objectives(self) -> Sequence[object] | None: ...


class _Train(Protocol):
    @property
    def epochs(self) -> int: ...
    @property
    def schedule(self) -> object: ...


def pbt_defaults(data: Any) -> Any:
    """A raw config with ``sampler: pbt`` and no pruner gets ``pruner: none``: a segment's
    curve starts where another member's ended, so per-epoch pruning across segments would
    compare unlike things (PBT's own selection is the truncation)."""
    if not isinstance(data, dict) or not isinstance(data.get("study"), dict):
        return data
    study = data["study"]
    if study.get("sampler") == "pbt" and "pruner" not in study:
        return {**data, "study": {**study, "pruner": "none"}}
    return data


def pbt_study_problem(study: _Study) -> str | None:
    """What is wrong with a pbt study's own settings (None: nothing)."""
    if study.sampler != "pbt":
        return None
    if study.objectives is not None and len(study.objectives) > 1:
        return (
            "sampler pbt ranks members by one objective; allowed: one objective or another "
            f"sampler, but got {len(study.objectives)} objectives"
        )
    if study.pruner != "none":
        return (
            "sampler pbt selects members itself (truncation); allowed: pruner none, "
            f"but got pruner {study.pruner!r}"
        )
    return None


def pbt_train_problem(study: _Study, train: _Train) -> str | None:
    """What is wrong with a pbt study's settings against ``train:`` (None: nothing)."""
    if study.sampler != "pbt":
        return None
    options = study.sampler_options
    ready = options.get("ready_epochs", PBT_DEFAULT_READY)
    if isinstance(ready, int) and not isinstance(ready, bool) and ready > train.epochs:
        return (
            f"epochs ({train.epochs}) are a pbt member's epochs in all, and "
            "study.sampler_options.ready_epochs its epochs per segment; allowed: ready_epochs "
            f"1 to {train.epochs}, but got ready_epochs {ready}"
        )
    if train.schedule != "constant":
        return (
            "schedule: sampler pbt's perturbed learning rates are the schedule; allowed: "
            f"constant, but got {train.schedule!r}"
        )
    return _moves_problem(options.get("moves"), train)


def _moves_problem(moves: object, train: _Train) -> str | None:
    if moves is None:
        return None
    if not isinstance(moves, list) or not all(isinstance(m, str) for m in moves):
        return f"study.sampler_options.moves: a list of train setting names, but got {moves!r}"
    searched = [n for n in _MOVABLE if _is_range(getattr(train, n, None))]
    for name in moves:
        short = name.removeprefix("train.")
        if short not in searched:
            allowed = ", ".join(searched) or "none (search a train setting with a range)"
            return (
                "study.sampler_options.moves: each must be a train setting searched with a "
                f"range; allowed: {allowed}, but got {name!r}"
            )
    return None


def _is_range(value: object) -> bool:
    """A searched range (``{low, high}``); a choice is categorical to Optuna: it cannot move
    by a factor."""
    return hasattr(value, "low") and hasattr(value, "high")
