"""The report's PNGs, each exactly ``SIZE_PX`` pixels (10 x 6 in at 100 dpi).

Figures are made with ``matplotlib.figure.Figure`` and its Agg canvas, never ``pyplot``:
no GUI backend is touched, no global figure state leaks between calls, and it works on a
headless machine or inside a process that already imported pyplot with another backend.
``bbox_inches`` is left alone so every file has the same, known size; ``constrained``
layout keeps labels inside it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "FIGSIZE_IN",
    "SIZE_PX",
    "ObjectivePoint",
    "Point",
    "axis_label",
    "front_png",
    "history_png",
    "importance_png",
    "mode_colours",
    "objective_importance_png",
    "pareto_png",
    "step_scatter_png",
    "unit_of",
]

FIGSIZE_IN = (10.0, 6.0)
DPI = 100
SIZE_PX = (int(FIGSIZE_IN[0] * DPI), int(FIGSIZE_IN[1] * DPI))  # (width, height)

# Modes are coloured by family and by their place in it (never by name): blues and purples
# for the first family (dynamic), reds and oranges for the second (static), then greens.
_FAMILY_PALETTES = (
    ("#1f77b4", "#6f42c1", "#17becf", "#4b0082"),
    ("#d62728", "#ff7f0e", "#e377c2", "#8c564b"),
    ("#2ca02c", "#bcbd22", "#7f7f7f", "#393b79"),
)
_FALLBACK = ("#1f77b4", "#2ca02c", "#ff7f0e", "#8c564b")
_INFEASIBLE = "#9e9e9e"  # grey: a trial that violates a constraint
_INFEASIBLE_LABEL = "infeasible (violates a constraint)"

# Units by the metric's last word (docs/metrics.md); checked in order, first match wins.
_UNITS: tuple[tuple[str, str], ...] = (
    ("samples_per_s", "samples/s"),
    ("tflops", "TFLOP/s"),
    ("flops_per_sample", "FLOPs"),
    ("mfu", "fraction of peak"),
    ("acc", "fraction"),
    ("params", "count"),
    ("_mb", "MB"),
    ("_ms", "ms"),
    ("_s", "s"),
)


@dataclass(frozen=True)
class Point:
    """One trial on one backend: where it sits on the speed/quality plane."""

    trial: int
    step_ms: float
    value: float


def mode_colours(modes: Sequence[tuple[str, str]]) -> dict[str, str]:
    """``{mode: colour}`` for ``(mode, family)`` in display order: by family, then position.

    The same mode keeps its colour in every plot of a report, and a plugin backend gets one
    without any edit here.
    """
    families: list[str] = []
    out: dict[str, str] = {}
    used: dict[str, int] = {}
    for name, family in modes:
        if family not in families:
            families.append(family)
        palette = _FAMILY_PALETTES[min(families.index(family), len(_FAMILY_PALETTES) - 1)]
        i = used.get(family, 0)
        used[family] = i + 1
        out.setdefault(name, palette[i % len(palette)])
    return out


def _colour(colours: Mapping[str, str], backend: str, i: int) -> str:
    return colours.get(backend, _FALLBACK[i % len(_FALLBACK)])


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _log_if_wide(ax: Axes, values: Sequence[float], axis: str) -> None:
    """Log scale when the values span more than 20x (step times often do)."""
    positive = [v for v in values if v > 0]
    if len(positive) == len(values) and positive and max(positive) / min(positive) > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _better(maximize: bool) -> str:
    return "higher is better" if maximize else "lower is better"


def unit_of(metric: str) -> str | None:
    """``time/step_ms`` -> ``ms``, ``val/acc`` -> ``fraction``; None when unitless (a loss)."""
    leaf = metric.rsplit("/", 1)[-1].lower()
    for key, unit in _UNITS:
        if (leaf.endswith(key) if key.startswith("_") else key in leaf) and not (
            key == "_s" and leaf.endswith("_per_s")
        ):
            return unit
    return None


def axis_label(metric: str, maximize: bool) -> str:
    """``time/step_ms (ms) — lower is better``: the metric, its unit and its direction."""
    unit = unit_of(metric)
    return f"{metric}{f' ({unit})' if unit else ''} — {_better(maximize)}"


def _scatter_trials(
    ax: Axes, backend: str, points: Sequence[Point], colour: str, infeasible: Collection[int]
) -> None:
    """One backend's trials: faint dots, and crosses for those that violate a constraint.

    Faint so that the front drawn over them stays readable when a study has many trials.
    """
    ok = [p for p in points if p.trial not in infeasible]
    bad = [p for p in points if p.trial in infeasible]
    ax.scatter(
        [p.step_ms for p in ok],
        [p.value for p in ok],
        s=36,
        color=colour,
        alpha=0.35,
        label=f"{backend}: trials",
    )
    if bad:
        ax.scatter(
            [p.step_ms for p in bad],
            [p.value for p in bad],
            s=40,
            marker="x",
            color=colour,
            alpha=0.6,
            label=f"{backend}: {_INFEASIBLE_LABEL}",
        )


def _draw_backend_front(ax: Axes, backend: str, front: Sequence[Point], colour: str) -> None:
    """A backend's front as a staircase of labelled, outlined points (sorted by step time).

    The staircase (``where="post"``) is the edge of what the front dominates, so a point
    under it is beaten on both axes; labels name the trials to look up in the tables.
    """
    if not front:
        return
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


def pareto_png(
    path: Path,
    series: Mapping[str, Sequence[Point]],
    fronts: Mapping[str, Sequence[bool]],
    metric: str,
    maximize: bool,
    study: str,
    infeasible: Collection[int] = (),
    colours: Mapping[str, str] | None = None,
) -> Path:
    """Metric vs step time per backend, each backend's Pareto front drawn as a staircase.

    Trials in ``infeasible`` (they violate a constraint) are drawn as crosses; ``colours``
    (:func:`mode_colours`) keeps each mode's colour the same across plots.
    """
    fig, ax = _figure()
    steps: list[float] = []
    for i, (backend, points) in enumerate(series.items()):
        colour = _colour(colours or {}, backend, i)
        steps += [p.step_ms for p in points]
        _scatter_trials(ax, backend, points, colour, infeasible)
        front = sorted(
            (p for p, on in zip(points, fronts[backend], strict=True) if on),
            key=lambda p: p.step_ms,
        )
        _draw_backend_front(ax, backend, front, colour)
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


def objective_importance_png(
    path: Path, by_objective: Sequence[tuple[str, Mapping[str, float]]], study: str
) -> Path:
    """Grouped horizontal bars: one bar per objective for each parameter.

    Parameters are ordered by their importance for the first objective (most important on
    top); each objective's importances sum to 1 on their own.
    """
    fig, ax = _figure()
    order: dict[str, float] = {}
    for _, imp in by_objective:
        for name in imp:
            order.setdefault(name, 0.0)
    first = by_objective[0][1] if by_objective else {}
    names = sorted(order, key=lambda n: (first.get(n, 0.0), n))  # bottom to top
    n = max(len(by_objective), 1)
    height = 0.8 / n
    top = 0.0
    for i, (metric, imp) in enumerate(by_objective):
        ys = [k + 0.4 - (i + 0.5) * height for k in range(len(names))]
        values = [imp.get(name, 0.0) for name in names]
        top = max(top, *values, 0.0)
        bars = ax.barh(ys, values, height=height * 0.9, color=_FALLBACK[i % len(_FALLBACK)])
        bars.set_label(metric)
        labels = [f"{v:.3f}" if name in imp else "-" for name, v in zip(names, values, strict=True)]
        ax.bar_label(bars, labels=labels, padding=4, fontsize=9)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlim(0, top * 1.15 or 1.0)
    ax.set_xlabel("relative importance (Optuna PED-ANOVA, sums to 1 per objective)")
    ax.set_ylabel("parameter")
    ax.set_title(f"{study}: which choices moved each objective")
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    ax.legend(loc="lower right", title="objective")
    return _save(fig, path)


@dataclass(frozen=True)
class ObjectivePoint:
    """One complete trial in objective space (its first two objectives)."""

    trial: int
    x: float  # the second objective
    y: float  # the first objective
    feasible: bool
    on_front: bool


def _scatter_off_front(ax: Axes, points: Sequence[ObjectivePoint]) -> None:
    """Trials not on the front: faint dots when feasible, grey crosses when not.

    Kept quiet so the front stands out; infeasible ones are told apart because Optuna never
    puts them on the front, however good they look.
    """
    rest = [p for p in points if p.feasible and not p.on_front]
    bad = [p for p in points if not p.feasible]
    if rest:
        ax.scatter(
            [p.x for p in rest],
            [p.y for p in rest],
            s=40,
            color="#1f77b4",
            alpha=0.45,
            label="feasible trial (dominated)",
        )
    if bad:
        ax.scatter(
            [p.x for p in bad],
            [p.y for p in bad],
            s=44,
            marker="x",
            color=_INFEASIBLE,
            label=_INFEASIBLE_LABEL,
        )


def _draw_objective_front(
    ax: Axes, front: Sequence[ObjectivePoint], x_max: bool, staircase: bool
) -> None:
    """The front's members, highlighted and labelled, joined by a staircase when it holds.

    With more than two objectives the plot is a projection in which a member may look
    dominated, so no staircase is drawn (``staircase=False``).
    """
    if not front:
        return
    if staircase:
        ax.step(
            [p.x for p in front],
            [p.y for p in front],
            where="pre" if x_max else "post",  # the edge of the region the front dominates
            color="#d62728",
            linewidth=2,
        )
    ax.scatter(
        [p.x for p in front],
        [p.y for p in front],
        s=90,
        color="#d62728",
        edgecolor="black",
        linewidth=0.8,
        zorder=3,
        label="Pareto front (feasible)",
    )
    for p in front:
        ax.annotate(
            f"t{p.trial}", (p.x, p.y), textcoords="offset points", xytext=(6, 6), fontsize=9
        )


def front_png(
    path: Path,
    points: Sequence[ObjectivePoint],
    x: tuple[str, bool],
    y: tuple[str, bool],
    study: str,
    n_objectives: int = 2,
) -> Path:
    """The study's Pareto front over its first two objectives: y = first, x = second.

    ``x`` and ``y`` are ``(metric, maximize)``. Front members are highlighted, labelled and
    joined by the staircase that bounds what they dominate; other feasible trials are faint
    dots and infeasible ones grey crosses. With more than two objectives the front is still
    the one over all of them, so a front member may look dominated in this projection (and
    no staircase is drawn).
    """
    fig, ax = _figure()
    (x_metric, x_max), (y_metric, y_max) = x, y
    front = sorted((p for p in points if p.on_front), key=lambda p: (p.x, p.y))
    _scatter_off_front(ax, points)
    _draw_objective_front(ax, front, x_max, staircase=n_objectives <= 2)
    _log_if_wide(ax, [p.x for p in points], "x")
    _log_if_wide(ax, [p.y for p in points], "y")
    ax.set_xlabel(axis_label(x_metric, x_max))
    ax.set_ylabel(axis_label(y_metric, y_max))
    what = "" if n_objectives <= 2 else f" (first two of {n_objectives} objectives)"
    ax.set_title(f"{study}: Pareto front, {y_metric} vs {x_metric}{what}")
    if points:
        ax.legend(loc="best")
    return _save(fig, path)


def _best_so_far(ok: Sequence[tuple[int, float]], maximize: bool) -> tuple[list[int], list[float]]:
    """The running best over feasible trials (x, best): the staircase the history draws."""
    xs: list[int] = []
    best: list[float] = []
    for n, v in ok:
        xs.append(n)
        best.append(v if not best else (max if maximize else min)(best[-1], v))
    return xs, best


def _scatter_history(
    ax: Axes, ok: Sequence[tuple[int, float]], bad: Sequence[tuple[int, float]]
) -> None:
    """Each complete trial by number; infeasible ones as grey crosses (never the best)."""
    ax.scatter(
        [n for n, _ in ok],
        [v for _, v in ok],
        s=36,
        color="#1f77b4",
        alpha=0.7,
        label="complete trial",
    )
    if bad:
        ax.scatter(
            [n for n, _ in bad],
            [v for _, v in bad],
            s=40,
            marker="x",
            color=_INFEASIBLE,
            label=_INFEASIBLE_LABEL,
        )


def _mark_changes(ax: Axes, changes: Sequence[tuple[int, str]], change_label: str) -> None:
    """A dashed line just before each version's first trial, labelled at the bottom.

    Half a trial to the left so the line never hides a point; one legend entry for all.
    """
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


def _integer_ticks(ax: Axes) -> None:
    """Whole trial numbers on the x axis: its default locator (``AutoLocator``, a
    ``MaxNLocator``) told to pick integers, keeping its spacing rules."""
    from matplotlib.ticker import MaxNLocator

    locator = ax.xaxis.get_major_locator()
    if isinstance(locator, MaxNLocator):
        locator.set_params(integer=True)


def history_png(
    path: Path,
    trials: Sequence[tuple[int, float]],
    metric: str,
    maximize: bool,
    study: str,
    changes: Sequence[tuple[int, str]] = (),
    change_label: str = "script version changed",
    infeasible: Collection[int] = (),
    title_note: str = "",
) -> Path:
    """Each complete trial's value by trial number, and the best value so far.

    ``changes`` marks where the script version changed: ``(first trial of the new version,
    short label)``, drawn as a dashed vertical line just before that trial, labelled at the top.
    Trials in ``infeasible`` (they violate a constraint) are grey crosses and never count as
    the best so far. ``title_note`` is appended to the title (``first of 2 objectives``).
    """
    fig, ax = _figure()
    ordered = sorted(trials)
    ok = [(n, v) for n, v in ordered if n not in infeasible]
    bad = [(n, v) for n, v in ordered if n in infeasible]
    _scatter_history(ax, ok, bad)
    xs, best = _best_so_far(ok, maximize)
    if xs:
        ax.step(xs, best, where="post", color="#d62728", linewidth=2, label="best so far")
    _mark_changes(ax, changes, change_label)
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"{metric} ({_better(maximize)})")
    ax.set_title(f"{study}: optimisation history{f' ({title_note})' if title_note else ''}")
    _integer_ticks(ax)
    if changes:  # below the axes: the lines reach the top, where "best so far" runs too
        fig.legend(loc="outside lower center", ncols=3)
    else:
        ax.legend(loc="best")
    return _save(fig, path)


def step_scatter_png(
    path: Path,
    pairs: Sequence[tuple[int, float, float]],
    x_label: str,
    y_label: str,
    study: str,
) -> Path:
    """One point per pair: step time of ``x_label`` (x) vs ``y_label`` (y); below y = x, y wins.

    The report passes the headline's two sides: each pair's fastest mode of each family.
    """
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
        label=f"below the line: {y_label} is faster per step",
    )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"{x_label}: median step time (ms)")
    ax.set_ylabel(f"{y_label}: median step time (ms)")
    n = len(pairs)
    ax.set_title(f"{study}: step time per paired trial ({n} pair{'s' if n != 1 else ''})")
    ax.legend(loc="upper left")
    return _save(fig, path)
