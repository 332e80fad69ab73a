"""Live sweep progress and the end-of-sweep summary table (rich, on the terminal)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["SweepDisplay", "summary_table"]


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}"


class SweepDisplay:
    """Prints one line per finished trial and, on a terminal, a live bar for the current one."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: Any = None
        self._best: tuple[float, int] | None = None
        self._maximize = True
        self._metric = ""
        self._epochs = 1
        self._t0 = time.perf_counter()

    def start(self, ctx: Any, study: Any) -> None:
        import optuna

        self._metric, self._maximize = ctx.metric, ctx.direction == "maximize"
        self._epochs = ctx.cfg.train.epochs
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
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()

    def trial_started(self, number: int) -> None:
        self._t0 = time.perf_counter()
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(
                f"t{number}", total=self._epochs, status="building"
            )

    def epoch(self, backend: str, epoch: int, metrics: dict[str, float]) -> None:
        if self._progress is None or self._task is None:
            return
        best = f" best {_fmt(self._best[0])}" if self._best else ""
        value = _fmt(metrics.get(self._metric))
        status = f"{backend} epoch {epoch}/{self._epochs} {self._metric} {value}{best}"
        self._progress.update(self._task, completed=epoch, status=status)

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
            f"{time.perf_counter() - self._t0:6.1f} s{best}[dim]{detail}[/]"
        )

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]{text}[/]")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def summary_table(summary: Any, backends: Sequence[str], limit: int = 20) -> Table:
    """Finished trials, best first: each backend's metric and step time, the sampled params."""
    reverse = summary.direction == "maximize"
    trials = [t for t in summary.trials if t.state.name != "RUNNING"]
    done = sorted((t for t in trials if t.values), key=lambda t: t.values[0], reverse=reverse)
    rest = [t for t in trials if not t.values]
    table = Table(
        title=f"{summary.study}: {summary.complete} complete, {summary.pruned} pruned, "
        f"{summary.failed} failed ({summary.metric}, {summary.direction})",
        title_justify="left",
    )
    table.add_column("trial", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    short = summary.metric.rsplit("/", 1)[-1]
    for b in backends:
        table.add_column(f"{b}\n{short}", justify="right", no_wrap=True)
        table.add_column(f"{b}\nms/step", justify="right", no_wrap=True)
    table.add_column("params", overflow="fold")
    for t in (done + rest)[:limit]:
        metrics = t.user_attrs.get("protolab.metrics", {})
        params = " ".join(
            f"{k.removeprefix('train.')}={_fmt(v) if isinstance(v, float) else v}"
            for k, v in t.params.items()
        )
        reason = t.user_attrs.get("protolab.fail_reason", "")
        cells = []
        for b in backends:
            m = metrics.get(b, {})
            cells += [_fmt(m.get(summary.metric)), _fmt(m.get("time/step_ms"))]
        table.add_row(
            f"t{t.number}" + (" *" if t.number in summary.pareto else ""),
            t.state.name,
            *cells,
            params + (f" [red]{reason}[/]" if reason else ""),
            style="bold" if t.number in summary.pareto else None,
        )
    return table
