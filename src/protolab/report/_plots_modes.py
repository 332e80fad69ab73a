"""The N-mode plots: step-time ratios with their intervals, and the break-even picture.

Same rules as :mod:`protolab.report._plots` (``Figure`` + Agg, exactly ``SIZE_PX``); colours
come from :func:`protolab.report._plots.mode_colours`, by family and position, never by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from protolab.report._compare import format_break_even
from protolab.report._intervals import Ratio
from protolab.report._modes import BreakEven, format_seconds
from protolab.report._plots import _figure, _save

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["break_even_png", "step_ratios_png"]

_HEADLINE_COLOUR = "#222222"


def _ratio_words(r: Ratio) -> str:
    if r.unclear:
        return "no clear difference"
    words = f"{1 / r.value:.3g}x faster" if r.value <= 1 else f"{r.value:.3g}x slower"
    return words if r.interval is not None else f"{words} (single measurement)"


def _errorbar(ax: Axes, y: float, r: Ratio, colour: str, label: str) -> None:
    lo = hi = r.value
    if r.interval is not None:
        lo, hi = r.interval.low, r.interval.high
    ax.errorbar(
        [r.value],
        [y],
        xerr=[[r.value - lo], [hi - r.value]],
        fmt="o",
        color=colour,
        ecolor=colour,
        elinewidth=2.5,
        capsize=6,
        markersize=9,
        label=label,
        zorder=3,
    )
    ax.annotate(_ratio_words(r), (hi, y), textcoords="offset points", xytext=(8, -4), fontsize=10)


def step_ratios_png(
    path: Path,
    rows: Sequence[tuple[str, Ratio, str]],
    base: str,
    study: str,
    headline: tuple[str, Ratio] | None = None,
    base_colour: str = "#555555",
) -> Path:
    """Each mode's step time over ``base``'s with its 95 % interval (log x; 1 = same speed).

    ``rows`` are ``(mode, ratio, colour)``; ``headline`` (best of one family over the best of
    the other) is drawn on top in black, ``base`` itself at 1 at the bottom. A bar crossing
    the dashed line at 1 is "no clear difference".
    """
    from matplotlib.ticker import FuncFormatter

    fig, ax = _figure()
    items = [(m, r, c) for m, r, c in rows]
    if headline is not None:
        items.insert(0, (headline[0], headline[1], _HEADLINE_COLOUR))
    labels = [label for label, _, _ in items]
    values = [1.0]
    for y, (label, r, colour) in enumerate(items):
        _errorbar(ax, float(y), r, colour, label)
        values += [r.value] + ([r.interval.low, r.interval.high] if r.interval else [])
    ref_y = float(len(items))
    ax.scatter([1.0], [ref_y], s=90, marker="D", color=base_colour, zorder=3)
    labels.append(f"{base} (reference)")
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1.2)
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.5, 1, 2 rather than 10^-0.3
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    lo, hi = min(values), max(values)
    ax.set_xlim(lo / 1.4, hi * 2.2)  # room on the right for the words
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.3, -0.7)  # first row on top
    ax.set_xlabel(f"step time / {base}'s (log scale; left of 1: faster), 95 % interval")
    n = max((r.n_pairs for _, r, _ in items), default=0)
    ax.set_title(f"{study}: step time of every mode against {base} ({n} pair{'s' * (n != 1)})")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.grid(False, axis="y")
    return _save(fig, path)


def _x_max(items: Sequence[BreakEven]) -> float:
    """Steps the picture spans: past every crossing and every trial's step count."""
    marks = [b.steps for b in items if b.steps is not None and b.steps > 0]
    marks += [b.trained_range[1] for b in items if b.trained_range is not None]
    return max(marks) * 1.3 if marks else 100.0


def _sweep_marks(ax: Axes, items: Sequence[BreakEven]) -> None:
    """This sweep's actual step counts: the median as a line, the range shaded."""
    trained = [b.trained_steps for b in items if b.trained_steps is not None]
    ranges = [b.trained_range for b in items if b.trained_range is not None]
    if not trained:
        return
    median = sorted(trained)[len(trained) // 2]
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    if hi > lo:
        ax.axvspan(lo, hi, color="#2ca02c", alpha=0.10, label="steps this sweep's trials trained")
    ax.axvline(
        median,
        color="#2ca02c",
        linestyle=":",
        linewidth=2,
        label=f"this sweep's trials: ~{median:,.0f} steps (median)",
    )


def _crossing(ax: Axes, b: BreakEven, colour: str) -> None:
    steps, seconds = b.steps, b.seconds
    if steps is None or seconds is None:
        return
    ax.scatter([steps], [seconds], s=120, marker="X", color=colour, edgecolor="black", zorder=4)
    ax.annotate(
        f"{b.mode} pays back at {format_break_even(steps)} steps ({format_seconds(seconds)})",
        (steps, seconds),
        textcoords="offset points",
        xytext=(8, -14),
        fontsize=9,
        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.85, "lw": 0},
        zorder=5,
    )


def break_even_png(
    path: Path, items: Sequence[BreakEven], colours: Mapping[str, str], study: str
) -> Path:
    """Cumulative wall time vs training steps per mode, crossings marked, this sweep's steps.

    Each line is ``first_step_s + steps * step_ms / 1000`` from the medians over the
    measurements (:class:`BreakEven`); an X marks where a mode's line crosses its eager
    reference's, the dotted green line how many steps this sweep's trials actually trained.
    """
    fig, ax = _figure()
    x_max = _x_max(items)
    xs = [0.0, x_max]
    drawn: set[str] = set()
    for b in items:
        if b.reference not in drawn:
            drawn.add(b.reference)
            ys = [b.wall_s(x, reference=True) for x in xs]
            ax.plot(xs, ys, color=colours.get(b.reference, "#555555"), linewidth=2.5,
                    label=f"{b.reference} (eager reference)")  # fmt: skip
    for b in items:
        colour = colours.get(b.mode, "#555555")
        never = "" if b.steps is not None else " (never pays back)"
        ax.plot(xs, [b.wall_s(x) for x in xs], color=colour, linewidth=2, label=b.mode + never)
        _crossing(ax, b, colour)
    _sweep_marks(ax, items)
    ax.set_xlim(0, x_max)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("training steps")
    ax.set_ylabel("wall time from trial start (s): time to first step + steps x step time")
    ax.set_title(f"{study}: when does compiling pay back? (medians over paired trials)")
    fig.legend(loc="outside lower center", ncols=3, fontsize=9)  # never over the lines
    return _save(fig, path)
