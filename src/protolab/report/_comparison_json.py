"""The N-mode comparison as ``report.json``'s ``comparison`` section (plain JSON types).

Every number the terminal and ``report.md`` show is here unrounded, with the intervals, so a
script (or a test) can check the report against the runs without parsing text. ``null``
break-even steps mean "never".
"""

from __future__ import annotations

from typing import Any

from protolab.report._intervals import Ratio
from protolab.report._modes import ArchRow, BreakEven, Comparison, Headline, Mode, Unit

__all__ = ["comparison_json"]


def _ratio(r: Ratio) -> dict[str, Any]:
    return {
        "ratio": r.value,
        "low": None if r.interval is None else r.interval.low,
        "high": None if r.interval is None else r.interval.high,
        "level": None if r.interval is None else r.interval.level,
        "clear": r.clear,
        "n_pairs": r.n_pairs,
        "n_measurements": r.n_measurements,
    }


def _mode(m: Mode) -> dict[str, Any]:
    return {
        "name": m.name,
        "family": m.family,
        "mode": m.description,
        "eager": m.eager,
        "auto": list(m.auto),
        "runs": m.n_runs,
        "pairs": m.n_pairs,
        "step_ms": m.step_ms,
        "step_ms_p10": m.step_ms_p10,
        "step_ms_p90": m.step_ms_p90,
        "compile_s": m.compile_s,
        "first_step_s": m.first_step_s,
        "train_steps": m.train_steps,
    }


def _headline(h: Headline) -> dict[str, Any]:
    a, b = h.families
    fast = h.ratio.inverted()
    return {
        "families": [a, b],
        "best": {f: dict(w) for f, w in h.winners.items()},
        **_ratio(h.ratio),  # best b / best a step time
        "speedup": fast.value,  # how many times faster best b is per step
        "speedup_low": None if fast.interval is None else fast.interval.low,
        "speedup_high": None if fast.interval is None else fast.interval.high,
        "pairs": [{"trial": t, f"{a}_ms": x, f"{b}_ms": y} for t, x, y in h.points],
        "text": h.text,
    }


def _break_even(b: BreakEven) -> dict[str, Any]:
    return {
        "mode": b.mode,
        "reference": b.reference,
        "n_measurements": b.n_units,
        "steps": b.steps,
        "seconds": b.seconds,
        "reference_first_step_s": b.reference_first_step_s,
        "mode_first_step_s": b.mode_first_step_s,
        "reference_step_ms": b.reference_step_ms,
        "mode_step_ms": b.mode_step_ms,
        "trained_steps": b.trained_steps,
        "trained_range": None if b.trained_range is None else list(b.trained_range),
        "per_measurement_steps": list(b.per_unit),
        "paid_back": b.paid,
        "known": b.known,
        "text": b.text,
    }


def _unit(u: Unit, metric: str) -> dict[str, Any]:
    return {
        "pair": u.pair,
        "repeat": u.repeat or None,
        "trial": u.trial,
        "arch_hash": u.arch_hash,
        "cold_start": u.cold_start,
        "runs": {
            m: {
                "run_id": r.run_id,
                "trial": r.trial,
                "step_ms": r.step_ms,
                "epochs_measured": len(r.epoch_step_ms),
                "first_step_s": r.metrics.get("time/first_step_s"),
                "compile_s": r.metrics.get("time/compile_s"),
                "train_steps": r.metrics.get("train/steps"),
                "metric": r.metrics.get(metric),
                "eager": r.eager,
            }
            for m, r in u.runs.items()
        },
    }


def _arch(a: ArchRow) -> dict[str, Any]:
    return {
        "arch_hash": a.arch_hash,
        "trials": list(a.trials),
        "n_measurements": a.n_units,
        "step_ms": dict(a.step_ms),
        "metric": dict(a.metric),
        "fastest": a.fastest,
        "cold_start": a.cold_start,
    }


def comparison_json(c: Comparison) -> dict[str, Any]:
    """``modes``, ``matrix`` (row/col ratios), ``headline``, ``break_even``, the raw units."""
    return {
        "modes": [_mode(m) for m in c.modes],
        "paired_modes": c.paired,
        "reference": c.reference,
        "n_pairs": c.n_pairs,
        "headline": None if c.headline is None else _headline(c.headline),
        "matrix": [
            {"row": a, "col": b, **_ratio(r), "text": r.compare_text(a, b)}
            for (a, b), r in c.matrix.items()
        ],
        "break_even": [_break_even(b) for b in c.break_even],
        "measurements": [_unit(u, c.metric) for u in c.units],
        "architectures": [_arch(a) for a in c.architectures],
        "lines": c.lines(),
        "mlflow_metrics": c.metrics(),
    }
