"""The N-mode comparison as ``report.json``'s ``comparison`` section (plain JSON types).

Every number the terminal and ``report.md`` show is here unrounded, with the intervals, so a
script (or a test) can check the report against the runs without parsing text. ``null``
break-even steps mean "never".
"""

from __future__ import annotations

from typing import Any

from protolab.report._intervals import LEVEL, Ratio
from protolab.report._modes import ArchRow, BreakEven, Comparison, Headline, Mode, Unit
from protolab.report._verdict import Answer, Parity, answer, verdict_lines

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
        "result_s": m.result_s,
        "trial_s": m.trial_s,
        "import_s": m.import_s,
        "compile_cold_s": m.compile_cold_s,
        "compile_warm_s": m.compile_warm_s,
        "compile_cache_runs": {"cached": m.n_cached, "warm": m.n_warm},
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


def _parity(p: Parity) -> dict[str, Any]:
    return {
        "reference": p.reference,
        "metric": p.metric,
        "n_pairs": p.n_pairs,
        "mean_gap": p.mean_gap,
        "max_gap": p.max_gap,
        "low": None if p.interval is None else p.interval.low,
        "high": None if p.interval is None else p.interval.high,
        "level": None if p.interval is None else p.interval.level,
        "tolerance": p.tolerance,
        "passes": p.passes,
        "text": p.cell,
    }


def _answer(a: Answer) -> dict[str, Any]:
    """The verdict's keys of ``comparison.headline``: result first, step, overtake, parity."""
    over = a.overtake
    low, high = (None, None) if over is None or over.interval is None else over.interval
    return {
        "reference": a.reference,
        "time_to_result": a.time_to_result,
        "first_to_result": a.first_to_result,
        "result_times": {
            r.mode: {
                "seconds": r.seconds,
                "trial_s": r.trial_s,
                "import_s": r.import_s,
                "runs": r.n_runs,
                "first_in_pairs": r.first_in,
            }
            for r in a.results
        },
        "step": {
            "fastest": a.fastest_step,
            "against": a.reference,
            **(_ratio(a.step_ratio) if a.step_ratio is not None else {}),
            "text": a.step_text,
        },
        "overtake": None
        if over is None
        else {
            "mode": over.even.mode,
            "reference": over.even.reference,
            "steps": over.even.steps,  # null: never
            "low": low,
            "high": high,  # null with a low: "never" is inside the interval
            "level": None if over.interval is None else LEVEL,
            "seconds": over.even.seconds,
            "trained_steps": over.even.trained_steps,
            "text": over.text,
        },
        "parity": {p.mode: _parity(p) for p in a.parity},
        "flagged": a.flagged,
        "machine": dict(a.machine),
        "versions": dict(a.versions),
        "lines": a.lines(),
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
        "compile_cache": _cache_json(b) if b.cached else None,
    }


def _cache_json(b: BreakEven) -> dict[str, Any]:
    """Cold and warm compile, first step and break-even (null: not measured or never)."""
    cold = {"compile_s": b.compile_cold_s, "first_step_s": b.cold_first_step_s}
    warm = {"compile_s": b.compile_warm_s, "first_step_s": b.warm_first_step_s}
    return {
        "cold": {**cold, "steps": b.cold_steps},
        "warm": {**warm, "steps": b.warm_steps},
        "off": b.cache_off,
        "text": b.cache_text,
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
                "compile_cache": r.compile_cache or None,
                "compile_cold_s": r.cold_compile_s,
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


def _headline_json(c: Comparison, said: Answer | None) -> dict[str, Any] | None:
    """The family comparison's keys (when two families paired) and the verdict's."""
    if c.headline is None and said is None:
        return None
    family = {} if c.headline is None else _headline(c.headline)
    verdict = {} if said is None else _answer(said)
    return {**family, **verdict, "text": family.get("text") or verdict["step"]["text"]}


def comparison_json(c: Comparison, said: Answer | None = None) -> dict[str, Any]:
    """``modes``, ``matrix`` (row/col ratios), ``headline``, ``break_even``, the raw units.

    ``said`` is the comparison's verdict (:func:`answer`), computed here when not given.
    """
    said = said if said is not None else answer(c)
    return {
        "modes": [_mode(m) for m in c.modes],
        "paired_modes": c.paired,
        "reference": c.reference,
        "n_pairs": c.n_pairs,
        "headline": _headline_json(c, said),
        "matrix": [
            {"row": a, "col": b, **_ratio(r), "text": r.compare_text(a, b)}
            for (a, b), r in c.matrix.items()
        ],
        "break_even": [_break_even(b) for b in c.break_even],
        "measurements": [_unit(u, c.metric) for u in c.units],
        "architectures": [_arch(a) for a in c.architectures],
        "lines": verdict_lines(c, said),
        "mlflow_metrics": c.metrics(),
    }
