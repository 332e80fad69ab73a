"""The watch session's terminal output: one line per epoch, a summary per rerun.

Lines are plain text (no wrapping, no live redraw) so they read the same in a terminal, a
log file or a test. Each rerun is numbered ``[wN]`` as its MLflow runs are named; numbers
are compared against the previous successful rerun and the study's best trial.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protolab._format import sig3
from protolab.watch._rerun import Rerun

if TYPE_CHECKING:
    from protolab.sweep import SweepContext

__all__ = ["Show", "StudyBest", "study_best"]


@dataclass(frozen=True)
class StudyBest:
    value: float
    trial: int


def study_best(ctx: SweepContext) -> StudyBest | None:
    """The study's best finished trial (read-only; None when there is none yet)."""
    import optuna

    from protolab._stores import journal_path, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = journal_path(ctx.cfg.study.storage)
    if journal is not None and not journal.is_file():  # opening would create it
        return None
    try:
        study = optuna.load_study(
            study_name=ctx.study_name, storage=open_storage(ctx.cfg.study.storage)
        )
        best = study.best_trial
    except (KeyError, ValueError, RuntimeError):  # no study, no complete trial, multi-objective
        return None
    return StudyBest(float(best.value), best.number) if best.value is not None else None


def _sig4(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.4g}"


def _delta(now: float, then: float | None) -> str:
    if then is None or not (math.isfinite(now) and math.isfinite(then)):
        return ""
    return f"{now - then:+.4g}"


@dataclass
class Show:
    """Prints the session; remembers each mode's last value of the study's metric."""

    metric: str
    best: StudyBest | None = None
    previous: dict[str, tuple[int, float]] = field(default_factory=dict)  # mode -> (wN, value)
    since: str = "start"  # what first-loss times count from: "start" or "save"

    def line(self, text: str) -> None:
        print(text, flush=True)

    def error(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def header(self, study: str, files: list[str], modes: list[str], job: str, where: str) -> None:
        self.line(f"protolab watch: study '{study}', {' + '.join(modes)}, {job} per rerun")
        self.line(f"watching {', '.join(files)}; tracking {where}; Ctrl-C to stop")
        if self.best is not None:
            self.line(f"study best: {self.metric}={_sig4(self.best.value)} (t{self.best.trial})")

    def start(self, rerun: Rerun, reason: str) -> None:
        self.since = "start" if reason == "start" else "save"
        self.line(f"[w{rerun.number}] {reason}")

    def configured(self, rerun: Rerun) -> None:
        assert rerun.arch is not None and rerun.settings is not None
        values = ", ".join(f"{k}={v}" for k, v in rerun.params.items() if "." not in k)
        self.line(
            f"  arch {rerun.arch.hash}{f' ({values})' if values else ''}, "
            f"lr {sig3(rerun.settings.lr)}, batch {rerun.settings.batch_size}"
        )

    def epoch(self, mode: str, epoch: int, metrics: dict[str, float], since: float) -> None:
        score = metrics.get(self.metric, float("nan"))
        loss = metrics.get("train/loss", float("nan"))
        first = f"  first loss {since:.2f} s after {self.since}" if epoch == 1 else ""
        self.line(
            f"  {mode}  epoch {epoch}  loss {_sig4(loss)}  {self.metric} {_sig4(score)}{first}"
        )

    def finish(self, rerun: Rerun) -> None:
        """Each mode's cost and change, then the lead mode against the last rerun and the
        study's best."""
        if rerun.error:
            self.error(f"  error: {rerun.error}".replace("\n", "\n  "))
            self.line(f"[w{rerun.number}] failed; still watching: fix it and save")
            return
        before = dict(self.previous)
        for mode in rerun.modes:
            if mode.result is None:
                self.error(f"  {mode.name}  failed: {mode.error}")
                continue
            m, tags = mode.result.metrics, mode.result.tags
            value = m.get(self.metric, float("nan"))
            vs = self._versus(value, before.get(mode.name))
            cache = tags.get("program_cache", "")
            compiles = f"compiles {tags.get('compiles', '?')}" + (f" ({cache})" if cache else "")
            step, compile_s = sig3(m.get("time/step_ms")), sig3(m.get("time/compile_s"))
            self.line(
                f"  {mode.name}  {self.metric} {_sig4(value)}{f' ({vs})' if vs else ''}"
                f"  step {step} ms  compile {compile_s} s  {compiles}"
            )
            self.previous[mode.name] = (rerun.number, value)
        self._summary(rerun, before)

    @staticmethod
    def _versus(value: float, then: tuple[int, float] | None) -> str:
        change = _delta(value, then[1]) if then is not None else ""
        return f"{change} vs w{then[0]}" if then is not None and change else ""

    def _summary(self, rerun: Rerun, before: dict[str, tuple[int, float]]) -> None:
        lead = next((m for m in rerun.modes if m.result is not None), None)
        if lead is None or lead.result is None:
            self.line(f"[w{rerun.number}] no mode trained; still watching")
            return
        value = lead.result.metrics.get(self.metric, float("nan"))
        changes = [self._versus(value, before.get(lead.name))]
        if self.best is not None:
            change = _delta(value, self.best.value)
            best = f"study best {_sig4(self.best.value)} (t{self.best.trial})"
            changes.append(f"{change} vs {best}" if change else "")
        vs = ", ".join(c for c in changes if c)
        self.line(
            f"[w{rerun.number}] {self.metric}={_sig4(value)} ({lead.name})"
            f"{f': {vs}' if vs else ''}; first loss {lead.first_loss_s:.2f} s after {self.since}"
        )
