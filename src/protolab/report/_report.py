"""``protolab report``: read a study, print the verdict, write files, attach them to MLflow.

Output goes to three places so it is found wherever the user looks: the terminal (rich
tables), ``out_dir`` (``report.md``, ``report.json`` and PNGs, default ``reports/<study>/``)
and the study's MLflow parent run (artifacts under ``report/``, next to the sweep totals).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from protolab.report._compare import (
    ArchComparison,
    PairComparison,
    Summary,
    by_architecture,
    pair_runs,
    pareto_front,
    summarise,
)
from protolab.report._data import (
    Objective,
    ReportData,
    TrialRecord,
    load_report_data,
    objective_importances,
    param_importances,
    resolve_source,
)
from protolab.report._plots import (
    ObjectivePoint,
    Point,
    front_png,
    history_png,
    importance_png,
    objective_importance_png,
    pareto_png,
    step_scatter_png,
)
from protolab.report._tables import (
    TextTable,
    best_trials_table,
    comparison_table,
    front_table,
    importance_table,
    objective_importance_table,
    to_markdown,
    to_rich,
    versions_table,
)
from protolab.report._versions import Version, VersionChange, VersionSplit, split_by_version

__all__ = ["FRONT_PLOT", "PLOTS", "Report", "build_report", "run_report"]

# The plots a report may write for any study, in the order it writes them.
PLOTS = ("pareto.png", "importance.png", "history.png", "step_scatter.png")
# The Pareto front over the first two objectives: multi-objective studies only, written first.
FRONT_PLOT = "pareto_front.png"
# Stale files from an earlier report that this one did not write are removed.
_ALL_PLOTS = (FRONT_PLOT, *PLOTS)
ARTIFACT_DIR = "report"


def _safe_name(study: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", study).strip("._") or "study"


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite numbers become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _pair_json(p: PairComparison | ArchComparison) -> dict[str, Any]:
    fields = {
        "step_ms_dynamic": p.step_ms_dynamic,
        "step_ms_static": p.step_ms_static,
        "step_ratio": p.step_ratio,
        "compile_s_dynamic": p.compile_s_dynamic,
        "compile_s_static": p.compile_s_static,
        "first_step_s_dynamic": p.first_step_s_dynamic,
        "first_step_s_static": p.first_step_s_static,
        "metric_dynamic": p.metric_dynamic,
        "metric_static": p.metric_static,
        "metric_delta": p.metric_delta,
        "break_even_steps": p.break_even,  # null: never
        "cold_start": p.cold_start,
    }
    if isinstance(p, PairComparison):
        head: dict[str, Any] = {
            "trial": p.trial,
            "pair": p.pair,
            "arch_hash": p.arch_hash,
            "dynamic": p.dynamic,
            "static": p.static,
        }
    else:
        head = {"arch_hash": p.arch_hash, "trials": list(p.trials), "n_pairs": len(p.trials)}
    return {**head, **fields}


def _version_json(v: Version) -> dict[str, Any]:
    return {
        "version": v.name,
        "label": v.label,
        "script_hash": v.script_hash or None,
        "config_hash": v.config_hash or None,
        "config_hashes": list(v.config_hashes),
        "config_changes": list(v.config_changes),
        "trials": {
            "complete": v.complete,
            "pruned": v.pruned,
            "failed": v.failed,
            "running": v.running,
            "total": len(v.trials),
        },
        "trial_numbers": list(v.trials),
        "best_value": v.best_value,
        "best_trial": v.best_trial,
        "median_value": v.median_value,
        "step_ms": dict(v.step_ms),
        "delta_best": v.delta_best,
    }


def _versions_json(split: VersionSplit) -> dict[str, Any]:
    return {
        "shown": split.shown,
        "split_by": split.split_by,
        "versions": [_version_json(v) for v in split.versions],
        "changes": [
            {"trial": c.trial, "version": c.version.name, "label": c.version.label}
            for c in split.changes
        ],
        "pending_script_hash": split.pending_script,
        "notes": list(split.notes),
    }


def _family_names(pairs: Sequence[PairComparison]) -> tuple[str, str]:
    dyn = {p.dynamic for p in pairs}
    sta = {p.static for p in pairs}
    return (
        dyn.pop() if len(dyn) == 1 else "dynamic",
        sta.pop() if len(sta) == 1 else "static",
    )


def _objectives_text(data: ReportData) -> str:
    """``val/acc (maximize), time/step_ms (minimize)``."""
    return ", ".join(f"{o.metric} ({o.direction})" for o in data.all_objectives)


def _feasible_front(points: Sequence[Point], infeasible: set[int], maximize: bool) -> list[bool]:
    """Each backend's metric/step-time front among the feasible points only."""
    ok = [i for i, p in enumerate(points) if p.trial not in infeasible]
    on = pareto_front([points[i].step_ms for i in ok], [points[i].value for i in ok], maximize)
    front = [False] * len(points)
    for i, flag in zip(ok, on, strict=True):
        front[i] = flag
    return front


def _front_points(data: ReportData) -> list[ObjectivePoint]:
    """Complete trials in the plane of the first two objectives (y first, x second)."""
    on = set(data.front)
    out = []
    for t in data.complete_trials():
        if t.values is None or len(t.values) < 2:
            continue
        y, x = t.values[0], t.values[1]
        if math.isfinite(x) and math.isfinite(y):
            out.append(ObjectivePoint(t.number, x, y, t.feasible, t.number in on))
    return out


def _pareto_series(data: ReportData) -> dict[str, list[Point]]:
    series: dict[str, list[Point]] = {}
    for b in data.backends:
        points = [
            Point(r.trial, r.metrics["time/step_ms"], r.metrics[data.metric])
            for r in data.runs
            if r.backend == b
            and r.state == "COMPLETE"
            and "time/step_ms" in r.metrics
            and data.metric in r.metrics
            and all(math.isfinite(v) for v in (r.metrics["time/step_ms"], r.metrics[data.metric]))
        ]
        if points:
            series[b] = sorted(points, key=lambda p: p.trial)
    return series


class Report:
    """The report's numbers and tables, computed once from :class:`ReportData`."""

    def __init__(self, data: ReportData) -> None:
        self.data = data
        self.pairs = pair_runs(data.runs, data.metric)
        self.archs = by_architecture(self.pairs)
        self.summary: Summary | None = summarise(self.pairs)
        self.dynamic, self.static = _family_names(self.pairs)
        self.infeasible = set(data.infeasible)
        self.series = _pareto_series(data)
        self.fronts = {
            b: _feasible_front(ps, self.infeasible, data.maximize) for b, ps in self.series.items()
        }
        self.by_objective: list[tuple[Objective, dict[str, float], str | None]]
        if data.multi_objective:
            self.by_objective = objective_importances(data)
            _, self.importances, self.importance_note = self.by_objective[0]
        else:
            self.importances, self.importance_note = param_importances(data)
            self.by_objective = [(data.all_objectives[0], self.importances, self.importance_note)]
        self.front_points = _front_points(data) if data.multi_objective else []
        self.versions = split_by_version(
            data.trials,
            data.runs,
            data.backends,
            data.maximize,
            script_hashes=data.script_hashes,
            configs=data.configs,
        )
        complete = data.complete_trials()
        self.history = sorted((t.number, float(t.value)) for t in complete if t.value is not None)
        states = [t.state for t in data.trials]
        self.counts = {
            "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"),
            "total": len(states),
        }

    # -- tables ---------------------------------------------------------------------------
    def tables(self) -> dict[str, TextTable]:
        split = self.versions if self.versions.shown else None
        if self.data.multi_objective:
            out = {"best": front_table(self.data, versions=split)}
        else:
            out = {"best": best_trials_table(self.data, versions=split)}
        if split is not None:
            out["versions"] = versions_table(split, self.data)
        if self.archs:
            out["comparison"] = comparison_table(
                self.archs, self.data.metric, self.dynamic, self.static
            )
        if self.data.multi_objective:
            out["importance"] = objective_importance_table(self.by_objective)
        else:
            out["importance"] = importance_table(self.importances, self.importance_note)
        return out

    @property
    def verdict(self) -> str:
        if self.summary is not None:
            return self.summary.text
        return (
            "no paired trials: sweep with `backends: [lightning, keras]` to compare dynamic "
            "and static on the same architectures"
        )

    # -- files ----------------------------------------------------------------------------
    def write_plots(self, out: Path) -> list[str]:
        """Write every plot the data supports; returns the file names written."""
        data, study = self.data, self.data.source.study
        written = []
        objectives = data.all_objectives
        if self.front_points:
            first, second = objectives[0], objectives[1]
            front_png(
                out / FRONT_PLOT,
                self.front_points,
                (second.metric, second.maximize),
                (first.metric, first.maximize),
                study,
                n_objectives=len(objectives),
            )
            written.append(FRONT_PLOT)
        if self.series:
            pareto_png(
                out / "pareto.png",
                self.series,
                self.fronts,
                data.metric,
                data.maximize,
                study,
                infeasible=self.infeasible,
            )
            written.append("pareto.png")
        if data.multi_objective and any(imp for _, imp, _ in self.by_objective):
            objective_importance_png(
                out / "importance.png",
                [(o.metric, imp) for o, imp, _ in self.by_objective],
                study,
            )
            written.append("importance.png")
        elif not data.multi_objective and self.importances:
            importance_png(out / "importance.png", self.importances, study)
            written.append("importance.png")
        if self.history:
            changes = [(c.trial, f"{c.version.name} {c.version.label}") for c in self.changes]
            what = "script/config" if self.versions.split_by == "script+config" else "script"
            history_png(
                out / "history.png",
                self.history,
                data.metric,
                data.maximize,
                study,
                changes,
                change_label=f"{what} version changed (label: the version from there on)",
                infeasible=self.infeasible,
                title_note=(
                    f"{data.metric}, the first of {len(objectives)} objectives"
                    if data.multi_objective
                    else ""
                ),
            )
            written.append("history.png")
        if self.pairs:
            points = [(p.trial, p.step_ms_dynamic, p.step_ms_static) for p in self.pairs]
            step_scatter_png(out / "step_scatter.png", points, self.dynamic, self.static, study)
            written.append("step_scatter.png")
        for stale in set(_ALL_PLOTS) - set(written):
            (out / stale).unlink(missing_ok=True)
        return written

    @property
    def changes(self) -> list[VersionChange]:
        """The version changes the history plot marks (none unless the section is shown)."""
        return list(self.versions.changes) if self.versions.shown else []

    def _version_name(self, trial: int) -> str | None:
        v = self.versions.version_of(trial)
        return None if v is None else v.name

    def to_json(self, plots: Sequence[str]) -> dict[str, Any]:
        from protolab.sweep._study import describe_storage
        from protolab.tracking import redact

        data = self.data
        if data.multi_objective:
            shown = data.front_trials()
        else:
            shown = sorted(
                data.complete_trials(),
                key=lambda t: float(t.value if t.value is not None else math.nan),
                reverse=data.maximize,
            )[:10]
        best = [self._trial_json(t) for t in shown]
        by_number = {t.number: t for t in data.trials}
        front = [by_number[n] for n in data.front if n in by_number]
        history = []
        best_so_far: float | None = None
        for n, v in self.history:
            feasible = n not in self.infeasible
            better = best_so_far is None or (v > best_so_far if data.maximize else v < best_so_far)
            best_so_far = v if better and feasible else best_so_far
            history.append(
                {
                    "trial": n,
                    "value": v,
                    "best_so_far": best_so_far,
                    "version": self._version_name(n),
                    "feasible": feasible,
                }
            )
        summary = self.summary
        return _finite(
            {
                "study": data.source.study,
                "metric": data.metric,
                "direction": data.direction,
                "objectives": [
                    {"metric": o.metric, "direction": o.direction} for o in data.all_objectives
                ],
                "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "tracking_uri": redact(data.source.tracking_uri),
                "storage": describe_storage(data.source.storage),
                "experiment_id": data.experiment_id,
                "parent_run_id": data.parent_run_id,
                "trials": self.counts,
                "backends": data.backends,
                "best_trials": best,
                "pareto_front": [
                    {"trial": t.number, "values": list(t.values or ()), "feasible": t.feasible}
                    for t in front
                ],
                "constraints": {
                    "names": data.constraint_names,
                    "infeasible_trials": data.infeasible,
                },
                "comparison": {
                    "dynamic": self.dynamic,
                    "static": self.static,
                    "summary": None
                    if summary is None
                    else {
                        "n_pairs": summary.n_pairs,
                        "static_speedup": summary.speedup,
                        "break_even_steps": summary.break_even,
                        "text": summary.text,
                    },
                    "pairs": [_pair_json(p) for p in self.pairs],
                    "architectures": [_pair_json(a) for a in self.archs],
                },
                "pareto": {
                    b: [
                        {
                            "trial": p.trial,
                            "step_ms": p.step_ms,
                            "value": p.value,
                            "on_front": f,
                            "feasible": p.trial not in self.infeasible,
                        }
                        for p, f in zip(ps, self.fronts[b], strict=True)
                    ]
                    for b, ps in self.series.items()
                },
                "by_script_version": _versions_json(self.versions),
                "importance": {
                    "values": self.importances,
                    "note": self.importance_note,
                    "by_objective": [
                        {"metric": o.metric, "direction": o.direction, "values": v, "note": n}
                        for o, v, n in self.by_objective
                    ],
                },
                "history": history,
                "files": ["report.md", "report.json", *plots],
            }
        )

    def _trial_json(self, t: TrialRecord) -> dict[str, Any]:
        data = self.data
        row: dict[str, Any] = {"trial": t.number, "value": t.value}
        if data.multi_objective:
            row["values"] = list(t.values or ())
        if data.constraint_names:
            row["feasible"] = t.feasible
        return {
            **row,
            "version": self._version_name(t.number),
            "params": dict(t.params),
            "backends": {
                b: {"metric": m.get(data.metric), "step_ms": m.get("time/step_ms")}
                for b, m in t.backends.items()
            },
        }

    @property
    def headline(self) -> str:
        """What the study optimises, for the top of the terminal output and report.md."""
        data = self.data
        if not data.multi_objective:
            text = f"Metric `{data.metric}` ({data.direction})"
        else:
            text = "Objectives " + ", ".join(
                f"`{o.metric}` ({o.direction})" for o in data.all_objectives
            )
        if data.constraint_names:
            text += " subject to " + ", ".join(f"`{n}`" for n in data.constraint_names)
        return text

    def counts_text(self) -> str:
        c = self.counts
        bad = len(self.infeasible)
        infeasible = f" ({bad} infeasible)" if self.data.constraint_names else ""
        return f"{c['complete']} complete{infeasible}, {c['pruned']} pruned, {c['failed']} failed"

    def to_markdown(self, plots: Sequence[str]) -> str:
        data = self.data
        tables = self.tables()
        parts = [
            f"# protolab report: {data.source.study}",
            "",
            f"{self.headline}; {self.counts_text()} trials; backends "
            f"{', '.join(data.backends) or '-'}.",
            "",
            f"**{self.verdict}**",
            "",
            "## Pareto front" if data.multi_objective else "## Best trials",
            "",
            to_markdown(tables["best"]),
        ]
        if FRONT_PLOT in plots:
            parts += [f"![Pareto front over the first two objectives]({FRONT_PLOT})", ""]
        if "versions" in tables:
            parts += [
                "## By script version",
                "",
                "The trials split by the version of the experiment script (and config) that "
                "ran them: before/after an edit side by side. The history plot below marks "
                "where the version changed.",
                "",
                to_markdown(tables["versions"]),
            ]
        parts += ["## Dynamic vs static", ""]
        if "comparison" in tables:
            parts += [
                to_markdown(tables["comparison"]),
                "Break-even steps: training steps after which the static job's extra time to "
                "first step is paid back by its faster steps, "
                "`(static.first_step_s - dynamic.first_step_s) / "
                "((dynamic.step_ms - static.step_ms) / 1000)`; `never` when static is not "
                "faster per step, `0` when it also starts no later.",
                "",
            ]
        else:
            parts += [self.verdict, ""]
        images = {
            "step_scatter.png": "Step time per paired trial",
            "pareto.png": "Metric vs step time (Pareto front per backend)",
            "importance.png": "Parameter importance",
            "history.png": "Optimisation history",
        }
        if "step_scatter.png" in plots:
            parts += [f"![{images['step_scatter.png']}](step_scatter.png)", ""]
        parts += ["## Accuracy vs step time", ""]
        parts += (
            [f"![{images['pareto.png']}](pareto.png)", ""]
            if "pareto.png" in plots
            else ["_(no complete run with both the metric and a step time)_", ""]
        )
        parts += ["## Parameter importance", "", to_markdown(tables["importance"])]
        if "importance.png" in plots:
            parts += [f"![{images['importance.png']}](importance.png)", ""]
        parts += ["## Optimisation history", ""]
        parts += (
            [f"![{images['history.png']}](history.png)", ""]
            if "history.png" in plots
            else ["_(no complete trial yet)_", ""]
        )
        return re.sub(r"\n{3,}", "\n\n", "\n".join(parts)).rstrip() + "\n"


def build_report(data: ReportData) -> Report:
    """All numbers and tables of the report, without writing anything."""
    return Report(data)


def _log_artifacts(data: ReportData, files: Sequence[Path]) -> str | None:
    """Attach the files to the parent run under ``report/``; returns why not, if not."""
    if data.client is None or data.parent_run_id is None:
        return "no MLflow parent run for this study; files were not logged to MLflow"
    try:
        for f in files:
            data.client.log_artifact(data.parent_run_id, str(f), ARTIFACT_DIR)
    except Exception as e:  # the files exist locally; a read-only store is not fatal
        return f"could not log to MLflow: {type(e).__name__}: {str(e)[:200]}"
    return None


def run_report(
    target: str,
    out_dir: Path | str | None = None,
    tracking_uri: str | None = None,
    storage: str | None = None,
    console: Any = None,
) -> Path:
    """Report on study ``target`` (a study name or a YAML config); returns the output folder.

    Prints the tables and the verdict, writes ``report.md``, ``report.json`` and the PNGs to
    ``out_dir`` (default ``reports/<study>/``) and logs them to the study's MLflow parent run
    under ``report/``. An unknown study is a ConfigError naming the studies that exist.
    """
    from rich.console import Console
    from rich.markup import escape

    source = resolve_source(target, tracking_uri, storage)
    data = load_report_data(source)
    out = Path(out_dir) if out_dir is not None else Path("reports") / _safe_name(source.study)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(data)
    plots = report.write_plots(out)
    (out / "report.json").write_text(json.dumps(report.to_json(plots), indent=2) + "\n")
    (out / "report.md").write_text(report.to_markdown(plots))
    files = [out / "report.md", out / "report.json", *(out / p for p in plots)]
    problem = _log_artifacts(data, files)

    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:  # piped or captured: wide enough for the comparison
            console = Console(highlight=False, width=160)
    constraints = ", ".join(data.constraint_names)
    console.print(
        f"[bold]report[/] {escape(source.study)}  [dim]{escape(_objectives_text(data))}"
        f"{escape(f' subject to {constraints}') if constraints else ''}, "
        f"{escape(report.counts_text())}[/]"
    )
    for table in report.tables().values():
        console.print(to_rich(table))
    if report.changes and "history.png" in plots:
        marks = ", ".join(f"{c.version.name} from t{c.trial}" for c in report.changes)
        console.print(f"[dim]history.png marks the script version changes: {escape(marks)}[/]")
    console.print(f"[bold]{escape(report.verdict)}[/]")
    console.print(escape(f"wrote {out}/: {', '.join(f.name for f in files)}"))
    if problem:
        console.print(f"[yellow]{escape(problem)}[/]")
    else:
        console.print(
            f"logged to MLflow run {data.parent_run_id} (experiment {data.experiment_id}) "
            f"under {ARTIFACT_DIR}/"
        )
    return out
