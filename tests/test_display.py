"""The terminal: summary table at 80 columns, 3-significant-digit numbers, the phase line."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
import pytest
from rich.console import Console

from protolab._display import SweepDisplay, summary_table
from protolab._format import sig3

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Summary:  # the fields of protolab.sweep.SweepSummary that the table reads
    study: str
    metric: str
    direction: str
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    pareto: list[int] = field(default_factory=list)
    trials: list[Any] = field(default_factory=list)


def _trial(study: Any, state: str, value: float | None, metrics: dict[str, Any]) -> None:
    dist = {
        "width": optuna.distributions.IntDistribution(32, 512, log=True),
        "act": optuna.distributions.CategoricalDistribution(["relu", "gelu", "tanh"]),
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
        "train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
    }
    params = {"width": 379, "act": "relu", "dropout": 0.28416, "train.lr": 0.0070991}
    attrs: dict[str, Any] = {"protolab.metrics": metrics}
    if state == "FAIL":
        attrs["protolab.fail_reason"] = "ValueError: Dense(0): units must be > 0"
    study.add_trial(
        optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state),
            value=value,
            params=params,
            distributions=dist,
            user_attrs=attrs,
        )
    )


def _summary(n_complete: int = 4, n_pruned: int = 12, n_failed: int = 1) -> Summary:
    study = optuna.create_study(direction="maximize")
    for i in range(n_complete):
        acc = 0.9 + i / 100 + 0.0012345
        metrics = {
            "lightning": {"val/acc": acc, "time/step_ms": 19.92 + i},
            "keras": {"val/acc": acc - 0.01, "time/step_ms": 5.78235109, "time/compile_s": 8.463},
        }
        _trial(study, "COMPLETE", acc, metrics)
    for _ in range(n_pruned):
        _trial(study, "PRUNED", None, {})
    for _ in range(n_failed):
        _trial(study, "FAIL", None, {})
    trials = study.get_trials()
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    return Summary(
        "digits-mlp", "val/acc", "maximize", n_complete, n_pruned, n_failed, [best.number], trials
    )


def _render(renderable: Any, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_sig3_formats_three_significant_digits() -> None:
    assert [sig3(v) for v in (19.92, 8.463, 0.9333, 5.78235109, 1172.3, 0.0007502)] == [
        "19.9",
        "8.46",
        "0.933",
        "5.78",
        "1,172",
        "7.50e-04",
    ]
    assert sig3(None) == "-" and sig3(float("nan")) == "-" and sig3(0) == "0"


def test_paired_summary_fits_80_columns_with_ratio_and_compile() -> None:
    text = _render(summary_table(_summary(), ["lightning", "keras"]))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "speed-up" in text and "compile s" in text
    row = next(line for line in lines if line.lstrip().startswith("t3 *"))  # the best trial
    assert "0.931" in row and "22.9" in row and "5.78" in row and "3.96x" in row, row
    assert "8.46" in row
    assert "5.78235109" not in text and "19.92" not in text  # no raw floats
    # The sampled values sit on one line per trial, not one value per line.
    assert any("width=379 act=relu dropout=0.284 lr=0.00710" in line for line in lines), text
    # 12 pruned + 1 failed trials are one count line, not 13 rows.
    assert "+ 12 pruned, 1 failed (--all lists them)" in text
    assert "PRUNED" not in text


def test_all_lists_pruned_and_failed_trials() -> None:
    text = _render(summary_table(_summary(), ["lightning", "keras"], show_all=True))
    assert text.count("PRUNED") == 12 and "FAIL" in text
    assert "units must be > 0" in " ".join(text.split())
    assert "--all lists them" not in text
    assert max(len(line) for line in text.splitlines()) <= 80, text


def test_single_backend_summary_has_no_ratio_column() -> None:
    text = _render(summary_table(_summary(n_pruned=0, n_failed=0), ["lightning"]))
    assert "speed-up" not in text and "compile" not in text
    assert "--all" not in text


def test_phase_line_reports_each_phase_with_its_duration() -> None:
    console = Console(file=io.StringIO(), width=80, force_terminal=False, color_system=None)
    display = SweepDisplay(console)
    display.phase("importing torch")
    time.sleep(0.3)
    display.phase("opening the store")  # ends the previous phase
    display.stop()
    out = console.file.getvalue()  # type: ignore[attr-defined]
    lines = out.splitlines()
    assert lines[0].startswith("importing torch ") and lines[0].endswith(" s"), out
    assert float(lines[0].split()[-2]) >= 0.3
    assert lines[1].startswith("opening the store ")


def test_phase_line_is_live_on_a_terminal() -> None:
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    display = SweepDisplay(console)
    with display.phased("compiling static"):
        time.sleep(1.3)  # rich refreshes the live line (and its clock) several times a second
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "compiling static …" in out
    assert "0:00:01" in out  # the clock moved while nothing else did


@pytest.mark.parametrize("backends", [["lightning", "keras"], ["dynamic", "static"]])
def test_bar_follows_the_backend_that_runs(backends: list[str]) -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    display = SweepDisplay(console)

    from types import SimpleNamespace as NS

    ctx = NS(
        metric="val/acc",
        direction="maximize",
        study_name="s",
        cfg=NS(backends=backends, train=NS(epochs=2), study=NS(n_trials=1)),
    )
    display.start(ctx, optuna.create_study(direction="maximize"))
    display.trial_started(0)
    assert display._running == backends[0]
    display.epoch("lightning", 1, {"val/acc": 0.5})
    display.epoch("lightning", 2, {"val/acc": 0.6})
    # The first job is done: the bar now shows the second backend building and compiling.
    assert display._running == backends[1]
    task = display._progress.tasks[-1]  # type: ignore[union-attr]
    assert task.completed == 0 and "building, compiling" in task.fields["status"]
    display.epoch("keras", 1, {"val/acc": 0.5})
    assert display._running == "keras"
    display.trial_finished(0, "COMPLETE", 0.6, "")
    display.stop()
