"""The report's PNGs, each exactly ``SIZE_PX`` pixels (10 x 6 in at 100 dpi).

Figures are made with ``matplotlib.figure.Figure`` and its Agg canvas, never ``pyplot``:
no GUI backend is touched, no global figure state leaks between calls, and it works on a
headless machine or inside a process that already imported pyplot with another backend.
``bbox_inches`` is left alone so every file has the same, known size; ``constrained``
layout keeps labels inside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DPI",
    "FIGSIZE_IN",
    "SIZE_PX",
    "Point",
    "history_png",
    "importance_png",
    "pareto_png",
    "step_scatter_png",
]

FIGSIZE_IN = (10.0, 6.0)
DPI = 100
SIZE_PX = (int(FIGSIZE_IN[0] * DPI), int(FIGSIZE_IN[1] * DPI))  # (width, height)

_COLOURS = {"lightning": "#6f42c1", "keras": "#d62728"}
_FALLBACK = ("#1f77b4", "#2ca02c", "#ff7f0e", "#8c564b")


@dataclass(frozen=True)
class Point:
    """One trial on one backend: where it sits on the speed/quality plane."""

    trial: int
    step_ms: float
    value: float


def _colour(backend: str, i: int) -> str:
    return _COLOURS.get(backend, _FALLBACK[i % len(_FALLBACK)])


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _log_if_wide(ax: Any, values: Sequence[float], axis: str) -> None:
    """Log scale when the values span more than 20x (step times often do)."""
    positive = [v for v in values if v > 0]
    if len(positive) == len(values) and positive and max(positive) / min(positive) > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _better(maximize: bool) -> str:
    return "higher is better" if maximize else "lower is better"


def pareto_png(
    path: Path,
    series: Mapping[str, Sequence[Point]],
    fronts: Mapping[str, Sequence[bool]],
    metric: str,
    maximize: bool,
    study: str,
) -> Path:
    """Metric vs step time per backend, each backend's Pareto front drawn as a staircase."""
    fig, ax = _figure()
    steps: list[float] = []
    for i, (backend, points) in enumerate(series.items()):
        colour = _colour(backend, i)
        xs = [p.step_ms for p in points]
        ys = [p.value for p in points]
        steps += xs
        ax.scatter(xs, ys, s=36, color=colour, alpha=0.35, label=f"{backend}: trials")
        front = sorted(
            (p for p, on in zip(points, fronts[backend], strict=True) if on),
            key=lambda p: p.step_ms,
        )
        if front:
            ax.step(
                [p.step_ms for p in front],
                [p.value for p in front],
                where="post",
                color=colour,
                linewidth=2,
                label=f"{backend}: Pareto front",
            )
            ax.scatter(
                [p.step_ms for p in front],
                [p.value for p in front],
                s=90,
                color=colour,
                edgecolor="black",
                linewidth=0.8,
                zorder=3,
            )
            for p in front:
                ax.annotate(
                    f"t{p.trial}",
                    (p.step_ms, p.value),
                    textcoords="offset points",
                    xytext=(6, 6),
                    fontsize=9,
                )
    _log_if_wide(ax, steps, "x")
    ax.set_xlabel("median training step time (ms, steady state) — lower is better")
    ax.set_ylabel(f"{metric} ({_better(maximize)})")
    ax.set_title(f"{study}: {metric} vs step time, Pareto front per backend")
    ax.legend(loc="best")
    return _save(fig, path)


def importance_png(path: Path, importances: Mapping[str, float], study: str) -> Path:
    """Horizontal bars, most important parameter on top, value printed on each bar."""
    fig, ax = _figure()
    names = list(importances)[::-1]
    values = [importances[n] for n in names]
    bars = ax.barh(names, values, height=0.5, color="#1f77b4")
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=4, fontsize=10)
    ax.set_xlim(0, max([*values, 0.0]) * 1.15 or 1.0)
    ax.set_xlabel("relative importance (Optuna PED-ANOVA, sums to 1)")
    ax.set_ylabel("parameter")
    ax.set_title(f"{study}: which choices moved the metric")
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    return _save(fig, path)


def history_png(
    path: Path,
    trials: Sequence[tuple[int, float]],
    metric: str,
    maximize: bool,
    study: str,
    changes: Sequence[tuple[int, str]] = (),
    change_label: str = "script version changed",
) -> Path:
    """Each complete trial's value by trial number, and the best value so far.

    ``changes`` marks where the script version changed: ``(first trial of the new version,
    short label)``, drawn as a dashed vertical line just before that trial, labelled at the top.
    """
    fig, ax = _figure()
    ordered = sorted(trials)
    xs = [n for n, _ in ordered]
    ys = [v for _, v in ordered]
    best: list[float] = []
    for v in ys:
        best.append(v if not best else (max if maximize else min)(best[-1], v))
    ax.scatter(xs, ys, s=36, color="#1f77b4", alpha=0.7, label="complete trial")
    ax.step(xs, best, where="post", color="#d62728", linewidth=2, label="best so far")
    for i, (trial, label) in enumerate(changes):
        x = trial - 0.5
        ax.axvline(
            x,
            color="#555555",
            linestyle="--",
            linewidth=1.2,
            label=change_label if i == 0 else None,
        )
        ax.text(
            x,
            0.02,
            label,
            transform=ax.get_xaxis_transform(),  # x in trials, y in axes fraction
            rotation=90,
            ha="left",
            va="bottom",
            fontsize=9,
            color="#333333",
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "lw": 0},
            zorder=4,
        )
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"{metric} ({_better(maximize)})")
    ax.set_title(f"{study}: optimisation history")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if changes:  # below the axes: the lines reach the top, where "best so far" runs too
        fig.legend(loc="outside lower center", ncols=3)
    else:
        ax.legend(loc="best")
    return _save(fig, path)


def step_scatter_png(
    path: Path,
    pairs: Sequence[tuple[int, float, float]],
    dynamic: str,
    static: str,
    study: str,
) -> Path:
    """One point per pair: dynamic step time (x) vs static (y); below y = x, static wins."""
    fig, ax = _figure()
    xs = [d for _, d, _ in pairs]
    ys = [s for _, _, s in pairs]
    ax.scatter(xs, ys, s=60, color="#2ca02c", edgecolor="black", linewidth=0.6, zorder=3)
    for n, d, s in pairs:
        ax.annotate(f"t{n}", (d, s), textcoords="offset points", xytext=(6, 4), fontsize=9)
    everything = xs + ys
    lo, hi = min(everything), max(everything)
    log = lo > 0 and hi / lo > 20
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo, hi = lo / 1.5, hi * 1.5
    else:
        pad = (hi - lo) * 0.1 or max(hi * 0.1, 1e-3)
        lo, hi = max(lo - pad, 0.0), hi + pad
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="y = x (same speed)")
    ax.fill_between(
        [lo, hi],
        [lo, lo],
        [lo, hi],
        color="#2ca02c",
        alpha=0.08,
        label=f"below the line: {static} (static) is faster per step",
    )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"{dynamic} (dynamic) median step time (ms)")
    ax.set_ylabel(f"{static} (static) median step time (ms)")
    n = len(pairs)
    ax.set_title(f"{study}: step time per paired trial ({n} pair{'s' if n != 1 else ''})")
    ax.legend(loc="upper left")
    return _save(fig, path)
