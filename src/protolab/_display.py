"""Live sweep progress and the end-of-sweep summary (rich, on the terminal).

- A *phase line* with a live clock whenever nothing else moves: loading the experiment,
  opening the stores and importing the frameworks, building and compiling a job. Each
  finished phase before the first trial leaves one dim line with its duration.
- One progress bar per trial that follows the backend actually running: it resets (and its
  clock restarts) when the next backend's job begins, so a compiling static job shows
  "t3 static: building, compiling  0:00:07" rather than a full bar with a frozen clock.
- The summary: finished trials best first, 3-significant-digit numbers, a speed-up and a
  compile column for paired sweeps, readable at 80 columns (the sampled values go on a
  line of their own when the table would not fit them); pruned and failed trials are
  folded into one count line unless ``show_all``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Container, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from protolab._format import sig3
from protolab._tags import ATTR

if TYPE_CHECKING:
    from optuna.trial import TrialState

__all__ = ["DisplayContext", "StudyView", "SummaryView", "SweepDisplay", "summary_table"]

_fmt = sig3


# --- what the display reads of a sweep (structurally: it imports no part of protolab's) -----


class _Named(Protocol):
    @property
    def name(self) -> str: ...  # a TrialState's: COMPLETE, PRUNED, FAIL, RUNNING


class TrialRow(Protocol):
    """A finished Optuna trial (``FrozenTrial``), as a row of the summary."""

    @property
    def number(self) -> int: ...
    @property
    def state(self) -> _Named: ...
    @property
    def values(self) -> list[float] | None: ...
    @property
    def params(self) -> dict[str, Any]: ...
    @property
    def user_attrs(self) -> dict[str, Any]: ...


class _Best(Protocol):
    @property
    def number(self) -> int: ...


class StudyView(Protocol):
    """The Optuna study the sweep runs, read once as it starts."""

    @property
    def directions(self) -> Sequence[object]: ...
    @property
    def best_value(self) -> float: ...
    @property
    def best_trial(self) -> _Best: ...
    def get_trials(
        self, deepcopy: bool = ..., states: Container[TrialState] | None = ...
    ) -> Sequence[TrialRow]: ...


class _Train(Protocol):
    @property
    def epochs(self) -> int: ...


class _Study(Protocol):
    @property
    def n_trials(self) -> int: ...


class _Settings(Protocol):
    @property
    def train(self) -> _Train: ...
    @property
    def study(self) -> _Study: ...
    @property
    def backends(self) -> Sequence[str]: ...


class DisplayContext(Protocol):
    """The sweep's context, as far as its progress lines need it."""

    @property
    def cfg(self) -> _Settings: ...
    @property
    def study_name(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def direction(self) -> str: ...


class SummaryView(Protocol):
    """A sweep's summary (``SweepSummary``), as far as its table needs it."""

    @property
    def study(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def complete(self) -> int: ...
    @property
    def pruned(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def pareto(self) -> Sequence[int]: ...
    @property
    def trials(self) -> Sequence[TrialRow]: ...


class SweepDisplay:
    """Prints one line per finished trial and, on a terminal, a live bar for the current one.

    Created when the command starts, so its clock and its phase line cover the imports.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._best: tuple[float, int] | None = None
        self._maximize = True
        self._metric = ""
        self._epochs = 1
        self._backends: list[str] = []
        self._running = ""  # the backend whose job the bar shows
        self._trial = 0
        self._job = 0  # index of the running job in the configured backends
        self._t0 = time.perf_counter()
        self.started = time.perf_counter()  # the command's start: the wall time printed
        self._phase: tuple[str, float] | None = None
        self._phase_bar: Progress | None = None

    # --- phases ---------------------------------------------------------------------------

    def phase(self, text: str) -> None:
        """Say what is happening now (live clock on a terminal); ends the previous phase."""
        self.end_phase()
        self._phase = (text, time.perf_counter())
        if self.console.is_terminal:
            self._phase_bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._phase_bar.add_task(f"{text} …", total=None)
            self._phase_bar.start()

    def end_phase(self) -> None:
        """Close the phase line, leaving one dim line with what it took."""
        if self._phase is None:
            return
        text, t0 = self._phase
        self._phase = None
        if self._phase_bar is not None:
            self._phase_bar.stop()
            self._phase_bar = None
        self.console.print(f"[dim]{text} {time.perf_counter() - t0:.1f} s[/]", highlight=False)

    @contextlib.contextmanager
    def phased(self, text: str) -> Iterator[None]:
        """``with display.phased("importing the frameworks"):`` a phase around a block."""
        self.phase(text)
        try:
            yield
        finally:
            self.end_phase()

    # --- the sweep ------------------------------------------------------------------------

    def start(self, ctx: DisplayContext, study: StudyView) -> None:
        import optuna

        self.end_phase()
        self._metric, self._maximize = ctx.metric, ctx.direction == "maximize"
        self._epochs = ctx.cfg.train.epochs
        self._backends = list(ctx.cfg.backends)
        done = study.get_trials(
            deepcopy=False,
            states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED),
        )
        if len(study.directions) == 1 and any(
            t.state == optuna.trial.TrialState.COMPLETE for t in done
        ):
            with contextlib.suppress(ValueError):  # constraints: nothing feasible yet
                self._best = (study.best_value, study.best_trial.number)
        todo = max(ctx.cfg.study.n_trials - len(done), 0)
        self.console.print(
            f"[bold]study[/] {ctx.study_name}  [dim]{ctx.metric} ({ctx.direction}), "
            f"backends {', '.join(ctx.cfg.backends)}, {len(done)} finished, {todo} to run[/]"
        )
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()

    def _show_job(self, backend: str, status: str) -> None:
        """Point the bar at ``backend``'s job: empty bar, clock from zero."""
        self._running = backend
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(
            f"t{self._trial} {backend}", total=self._epochs, status=status
        )

    def trial_started(self, number: int) -> None:
        self.end_phase()
        self._t0 = time.perf_counter()
        self._trial, self._job = number, 0
        self._show_job(self._backends[0] if self._backends else "job", "building, compiling …")

    def job_started(self, backend: str) -> None:
        """A backend's job begins (build, compile, first step): the bar follows it."""
        self._show_job(backend, "building, compiling …")

    def epoch(self, backend: str, epoch: int, metrics: dict[str, float]) -> None:
        if backend != self._running:  # an alias resolved, or a job the bar did not expect
            self._show_job(backend, "")
        if self._progress is None or self._task is None:
            return
        best = f" best {_fmt(self._best[0])}" if self._best else ""
        value = _fmt(metrics.get(self._metric))
        status = f"epoch {epoch}/{self._epochs} {self._metric} {value}{best}"
        self._progress.update(self._task, completed=epoch, status=status)
        if epoch >= self._epochs and self._job + 1 < len(self._backends):
            self._job += 1  # the next backend's job now builds and compiles: say so
            self._show_job(self._backends[self._job], "building, compiling …")

    def trial_finished(
        self, number: int, state: str, value: float | None, reason: str, feasible: bool = True
    ) -> None:
        if (
            feasible
            and value is not None
            and (
                self._best is None
                or ((value > self._best[0]) == self._maximize and value != self._best[0])
            )
        ):
            self._best = (value, number)
        style = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}[state]
        best = f"  best {_fmt(self._best[0])} (t{self._best[1]})" if self._best else ""
        detail = f"  {reason}" if reason else ""
        self.console.print(
            f"t{number:<4} [{style}]{state:<8}[/] {self._metric} {_fmt(value):<8}"
            f"{time.perf_counter() - self._t0:6.1f} s{best}[dim]{detail}[/]",
            highlight=False,
        )

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]{text}[/]")

    def stop(self) -> None:
        self.end_phase()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k.removeprefix('train.')}={_fmt(v) if isinstance(v, float) else v}"
        for k, v in params.items()
    )


def _row(
    t: TrialRow, backends: Sequence[str], metric: str, show_state: bool, star: bool
) -> list[str]:
    metrics: Mapping[str, Mapping[str, float]] = t.user_attrs.get(ATTR.METRICS, {})
    m = [metrics.get(b, {}) for b in backends]
    cells = [f"t{t.number}" + (" *" if star else "")]
    if show_state:
        cells.append(t.state.name)
    cells += [_fmt(x.get(metric)) for x in m]
    cells += [_fmt(x.get("time/step_ms")) for x in m]
    ref = m[0].get("time/step_ms") if m else None
    for x in m[1:]:
        other = x.get("time/step_ms")
        cells.append(f"{_fmt(ref / other)}x" if ref and other else "-")
        cells.append(_fmt(x.get("time/compile_s")))
    return cells


def _table(
    rows: Sequence[TrialRow], backends: Sequence[str], summary: SummaryView, show_state: bool
) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False)
    table.add_column("trial", justify="right", no_wrap=True)
    if show_state:
        table.add_column("state", no_wrap=True)
    short = summary.metric.rsplit("/", 1)[-1]
    for b in backends:
        table.add_column(f"{short}\n{b}", justify="right", no_wrap=True)
    for b in backends:
        table.add_column(f"ms/step\n{b}", justify="right", no_wrap=True)
    for b in backends[1:]:
        table.add_column(f"speed-up\n{b}", justify="right", no_wrap=True)
        table.add_column(f"compile s\n{b}", justify="right", no_wrap=True)
    for t in rows:
        star = t.number in summary.pareto
        table.add_row(
            *_row(t, backends, summary.metric, show_state, star),
            style="bold" if star else None,
        )
    return table


def _folded(
    done: Sequence[TrialRow], rest: Sequence[TrialRow], shown: int, show_all: bool
) -> list[Text]:
    """``+ 12 pruned, 1 failed (--all lists them)``: what the table left out."""
    left: list[str] = []
    hidden = len(done) + (len(rest) if show_all else 0) - shown
    if hidden > 0:
        left.append(f"{hidden} more")
    if not show_all:
        for state in ("PRUNED", "FAIL"):
            n = sum(t.state.name == state for t in rest)
            if n:
                left.append(f"{n} {'pruned' if state == 'PRUNED' else 'failed'}")
    hint = " (--all lists them)" if not show_all and rest else ""
    return [Text(f"+ {', '.join(left)}{hint}", "dim")] if left else []


def summary_table(
    summary: SummaryView, backends: Sequence[str], limit: int = 20, show_all: bool = False
) -> RenderableType:
    """Finished trials, best first: each backend's metric and step time, the speed-up of
    every backend over the first and its compile time (paired sweeps), then the sampled
    values one line per trial. Pruned and failed trials are counted, or listed with
    ``show_all``."""
    reverse = summary.direction == "maximize"
    trials = [t for t in summary.trials if t.state.name != "RUNNING"]
    done = sorted(
        (t for t in trials if t.values), key=lambda t: (t.values or [0.0])[0], reverse=reverse
    )
    rest = [t for t in trials if not t.values]
    rows = (done + rest if show_all else done)[:limit]
    title = Text(
        f"{summary.study}: {summary.complete} complete, {summary.pruned} pruned, "
        f"{summary.failed} failed ({summary.metric}, {summary.direction})",
        style="bold",
    )
    parts: list[RenderableType] = [title]
    if len(backends) > 1:
        parts.append(
            Text(f"speed-up = {backends[0]} ms/step ÷ the other's (above 1: faster)", "dim")
        )
    parts.append(_table(rows, backends, summary, show_all and bool(rest)))
    for t in rows:
        reason = t.user_attrs.get(ATTR.FAIL_REASON, "")
        values = _params_text(t.params)
        parts.append(
            Text.assemble(f"t{t.number:<4} {values}", (f"  {reason}" if reason else "", "red"))
        )
    parts += _folded(done, rest, len(rows), show_all)
    return Group(*parts)
