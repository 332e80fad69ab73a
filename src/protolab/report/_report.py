"""``protolab report``: read a study, print the verdict, write files, attach them to MLflow.

Output goes to three places so it is found wherever the user looks: the terminal (rich
tables), ``out_dir`` (``report.md``, ``report.json`` and PNGs, default ``reports/<study>/``)
and the study's MLflow parent run (artifacts under ``report/``, next to the sweep totals).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protolab.report._compare import pareto_front
from protolab.report._comparison_json import comparison_json
from protolab.report._data import (
    Objective,
    ReportData,
    TrialRecord,
    load_report_data,
    objective_importances,
    param_importances,
    resolve_source,
)
from protolab.report._modes import Comparison, compare_modes
from protolab.report._parent import write_study_notes
from protolab.report._plots import (
    ObjectivePoint,
    Point,
    front_png,
    history_png,
    importance_png,
    mode_colours,
    objective_importance_png,
    pareto_png,
    step_scatter_png,
)
from protolab.report._plots_modes import break_even_png, step_ratios_png
from protolab.report._tables import (
    TextTable,
    architectures_table,
    best_trials_table,
    break_even_table,
    front_table,
    importance_table,
    matrix_table,
    modes_table,
    objective_importance_table,
    to_markdown,
    to_rich,
    versions_table,
    watch_table,
)
from protolab.report._verdict import Answer, answer, verdict_lines
from protolab.report._versions import Version, VersionChange, VersionSplit, split_by_version
from protolab.report._watch import summarize_watch, watch_json

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "DEFAULT_UI_URL",
    "FRONT_PLOT",
    "PLOTS",
    "Report",
    "artifact_image_url",
    "build_report",
    "run_report",
    "ui_base_url",
]

# The plots a report may write for any study, in the order it writes them.
PLOTS = (
    "pareto.png",
    "importance.png",
    "history.png",
    "step_scatter.png",
    "step_ratios.png",
    "break_even.png",
)
# The Pareto front over the first two objectives: multi-objective studies only, written first.
FRONT_PLOT = "pareto_front.png"
# Stale files from an earlier report that this one did not write are removed.
_ALL_PLOTS = (FRONT_PLOT, *PLOTS)
ARTIFACT_DIR = "report"
WATCH_TABLE = "watch:"  # tables() key prefix of a watch session's table (then its name)
# Where `protolab ui` serves a local store's MLflow UI unless told otherwise: the MLflow copy
# of report.md links its images there (a tracking server links to itself).
DEFAULT_UI_URL = "http://127.0.0.1:5000"


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
        self.comparison: Comparison = compare_modes(data.runs, data.metric)
        self.answer: Answer | None = answer(self.comparison)
        family = {r.backend: r.family for r in data.runs}
        self.colours = mode_colours([(b, family.get(b, "")) for b in data.backends])
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
        self.watch = summarize_watch(data.watch, data.metric, data.maximize, data.configs)
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
        for session in self.watch:
            out[f"{WATCH_TABLE}{session.name}"] = watch_table(session)
        c = self.comparison
        if c.modes:
            out["modes"] = modes_table(c)
        if c.units:
            out["matrix"] = matrix_table(c)
            out["architectures"] = architectures_table(c)
        if c.break_even:
            out["break_even"] = break_even_table(c)
        if self.data.multi_objective:
            out["importance"] = objective_importance_table(self.by_objective)
        else:
            out["importance"] = importance_table(self.importances, self.importance_note)
        return out

    @property
    def verdict_lines(self) -> list[str]:
        """The answer (result first, per step, overtake, parity, machine), then each
        compiled mode's break-even, one line each."""
        lines = verdict_lines(self.comparison, self.answer)
        if lines:
            return lines
        return [
            "no paired trials: list two or more backends under `backends:` to compare their "
            "modes on the same architectures"
        ]

    @property
    def verdict(self) -> str:
        """The first verdict line: which mode gives a result first, when modes were paired."""
        return self.verdict_lines[0]

    # -- files ----------------------------------------------------------------------------
    def write_plots(self, out: Path) -> list[str]:
        """Write every plot the data supports; returns the file names written.

        Each plot has a writer of its own that returns what it wrote (nothing when the data
        does not support it); files an earlier report left and this one did not write are
        removed, so the folder never shows a stale plot next to a fresh report.
        """
        written = [
            *self._write_front(out),
            *self._write_pareto(out),
            *self._write_importance(out),
            *self._write_history(out),
            *self._write_mode_plots(out),
        ]
        for stale in set(_ALL_PLOTS) - set(written):
            (out / stale).unlink(missing_ok=True)
        return written

    def _write_front(self, out: Path) -> list[str]:
        """The Pareto front over the first two objectives (multi-objective studies only)."""
        if not self.front_points:
            return []
        objectives = self.data.all_objectives
        first, second = objectives[0], objectives[1]
        front_png(
            out / FRONT_PLOT,
            self.front_points,
            (second.metric, second.maximize),
            (first.metric, first.maximize),
            self.data.source.study,
            n_objectives=len(objectives),
        )
        return [FRONT_PLOT]

    def _write_pareto(self, out: Path) -> list[str]:
        """Metric vs step time per backend, when some complete run logged both."""
        if not self.series:
            return []
        data = self.data
        pareto_png(
            out / "pareto.png",
            self.series,
            self.fronts,
            data.metric,
            data.maximize,
            data.source.study,
            infeasible=self.infeasible,
            colours=self.colours,
        )
        return ["pareto.png"]

    def _write_importance(self, out: Path) -> list[str]:
        """Importances: grouped per objective on a multi-objective study, else one bar each."""
        data, study = self.data, self.data.source.study
        if data.multi_objective and any(imp for _, imp, _ in self.by_objective):
            by_metric = [(o.metric, imp) for o, imp, _ in self.by_objective]
            objective_importance_png(out / "importance.png", by_metric, study)
            return ["importance.png"]
        if not data.multi_objective and self.importances:
            importance_png(out / "importance.png", self.importances, study)
            return ["importance.png"]
        return []

    def _write_history(self, out: Path) -> list[str]:
        """The optimisation history, marking where the script (or config) version changed."""
        if not self.history:
            return []
        data = self.data
        changes = [(c.trial, f"{c.version.name} {c.version.label}") for c in self.changes]
        what = "script/config" if self.versions.split_by == "script+config" else "script"
        note = ""
        if data.multi_objective:
            note = f"{data.metric}, the first of {len(data.all_objectives)} objectives"
        history_png(
            out / "history.png",
            self.history,
            data.metric,
            data.maximize,
            data.source.study,
            changes,
            change_label=f"{what} version changed (label: the version from there on)",
            infeasible=self.infeasible,
            title_note=note,
        )
        return ["history.png"]

    def _write_mode_plots(self, out: Path) -> list[str]:
        """The N-mode plots the comparison supports: scatter, ratios, break-even."""
        c, study, written = self.comparison, self.data.source.study, []
        head = c.headline
        if head is not None and head.points:
            a, b = head.families
            step_scatter_png(
                out / "step_scatter.png", head.points, head.label(a), head.label(b), study
            )
            written.append("step_scatter.png")
        base = c.base
        rows = [(m, r, self.colours.get(m, "#555555")) for m, r in c.vs(base)] if base else []
        if base is not None and (rows or head is not None):
            top = None
            if head is not None:
                top = (f"headline: best {head.families[1]} / best {head.families[0]}", head.ratio)
            colour = self.colours.get(base, "#555555")
            step_ratios_png(
                out / "step_ratios.png", rows, base, study, headline=top, base_colour=colour
            )
            written.append("step_ratios.png")
        if c.break_even:
            break_even_png(out / "break_even.png", c.break_even, self.colours, study)
            written.append("break_even.png")
        return written

    @property
    def changes(self) -> list[VersionChange]:
        """The version changes the history plot marks (none unless the section is shown)."""
        return list(self.versions.changes) if self.versions.shown else []

    def _version_name(self, trial: int) -> str | None:
        v = self.versions.version_of(trial)
        return None if v is None else v.name

    def to_json(self, plots: Sequence[str]) -> dict[str, Any]:
        """``report.json``: every number the report shows, unrounded (NaN becomes null).

        One helper per section keeps each section's shape next to what it reads.
        """
        from protolab._stores import describe_storage
        from protolab.tracking import redact

        data = self.data
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
                "best_trials": [self._trial_json(t) for t in self._best_shown()],
                "pareto_front": self._front_json(),
                "constraints": {
                    "names": data.constraint_names,
                    "infeasible_trials": data.infeasible,
                },
                "comparison": comparison_json(self.comparison, self.answer),
                "pareto": self._pareto_json(),
                "by_script_version": _versions_json(self.versions),
                "watch": watch_json(self.watch),
                "importance": self._importance_json(),
                "history": self._history_json(),
                "files": ["report.md", "report.json", *plots],
            }
        )

    def _best_shown(self) -> list[TrialRecord]:
        """The trials the best-trials table shows: the front, or the top 10 by value."""
        data = self.data
        if data.multi_objective:
            return data.front_trials()
        return sorted(
            data.complete_trials(),
            key=lambda t: float(t.value if t.value is not None else math.nan),
            reverse=data.maximize,
        )[:10]

    def _front_json(self) -> list[dict[str, Any]]:
        """Optuna's ``best_trials`` with every objective's value and whether it is feasible."""
        by_number = {t.number: t for t in self.data.trials}
        front = [by_number[n] for n in self.data.front if n in by_number]
        return [
            {"trial": t.number, "values": list(t.values or ()), "feasible": t.feasible}
            for t in front
        ]

    def _pareto_json(self) -> dict[str, list[dict[str, Any]]]:
        """Per backend, each trial's point on the metric/step-time plane and its front flag."""
        return {
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
        }

    def _importance_json(self) -> dict[str, Any]:
        """The first objective's importances (as before) and every objective's."""
        return {
            "values": self.importances,
            "note": self.importance_note,
            "by_objective": [
                {"metric": o.metric, "direction": o.direction, "values": v, "note": n}
                for o, v, n in self.by_objective
            ],
        }

    def _history_json(self) -> list[dict[str, Any]]:
        """Each complete trial with the best feasible value so far, as the history plot."""
        maximize = self.data.maximize
        history = []
        best_so_far: float | None = None
        for n, v in self.history:
            feasible = n not in self.infeasible
            better = best_so_far is None or (v > best_so_far if maximize else v < best_so_far)
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
        return history

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

    def to_markdown(
        self, plots: Sequence[str], image_url: Callable[[str], str] | None = None
    ) -> str:
        """``report.md``; images link to ``image_url(name)``, by default the bare file name.

        Bare names resolve next to ``report.md`` (its folder, a git checkout on GitHub);
        MLflow's artifact preview shows only absolute http(s) images, so the copy logged
        there gets :func:`artifact_image_url` links instead (see :func:`run_report`).
        """
        link = image_url or (lambda name: name)

        def image(name: str, alt: str) -> list[str]:
            return [f"![{alt}]({link(name)})", ""] if name in plots else []

        data, tables = self.data, self.tables()
        parts = [
            f"# protolab report: {data.source.study}",
            "",
            f"{self.headline}; {self.counts_text()} trials; backends "
            f"{', '.join(data.backends) or '-'}.",
            "",
            *(f"- **{line}**" for line in self.verdict_lines),
            "",
            "## Pareto front" if data.multi_objective else "## Best trials",
            "",
            to_markdown(tables["best"]),
            *image(FRONT_PLOT, "Pareto front over the first two objectives"),
        ]
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
        parts += self._markdown_watch(tables)
        parts += self._markdown_modes(tables, image)
        parts += ["## Accuracy vs step time", ""]
        parts += image("pareto.png", "Metric vs step time (Pareto front per backend)") or [
            "_(no complete run with both the metric and a step time)_",
            "",
        ]
        parts += ["## Parameter importance", "", to_markdown(tables["importance"])]
        parts += image("importance.png", "Parameter importance")
        parts += ["## Optimisation history", ""]
        parts += image("history.png", "Optimisation history") or ["_(no complete trial yet)_", ""]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(parts)).rstrip() + "\n"

    def _markdown_watch(self, tables: dict[str, TextTable]) -> list[str]:
        """The "Watch sessions" section: one table per ``protolab watch`` session, if any."""
        watch = [t for k, t in tables.items() if k.startswith(WATCH_TABLE)]
        if not watch:
            return []
        parts = [
            "## Watch sessions",
            "",
            "Each `protolab watch` session's reruns by the script (and config) version that ran "
            "them, in the order it first ran them: what each edit changed on every mode. "
            "Watch reruns are short jobs and never count as the study's trials.",
            "",
        ]
        return parts + [to_markdown(t) for t in watch]

    def _markdown_modes(
        self, tables: dict[str, TextTable], image: Callable[[str, str], list[str]]
    ) -> list[str]:
        """The "Modes compared" section: modes, ratio matrix, break-even, per architecture."""
        parts = ["## Modes compared", ""]
        if "modes" in tables:
            parts.append(to_markdown(tables["modes"]))
        if "matrix" not in tables:
            return [*parts, self.verdict, ""]
        parts.append(to_markdown(tables["matrix"]))
        parts += image("step_ratios.png", "Step time of every mode with its 95 % interval")
        parts += image("step_scatter.png", "Best of each family, per paired trial")
        if "break_even" in tables:
            parts += ["### Break-even", "", to_markdown(tables["break_even"])]
            parts += [f"- {line}" for b in self.comparison.break_even for line in b.lines] + [""]
            parts += image("break_even.png", "Cumulative wall time vs steps per mode")
        parts += ["### Per architecture", "", to_markdown(tables["architectures"])]
        return parts


def build_report(data: ReportData) -> Report:
    """All numbers and tables of the report, without writing anything."""
    return Report(data)


def ui_base_url(tracking_uri: str, ui_url: str | None = None) -> str:
    """Where the MLflow UI that shows this store answers: its images must link there.

    ``ui_url`` wins; a tracking server (http/https URI) serves its own UI; a local store is
    shown by ``protolab ui``, on :data:`DEFAULT_UI_URL` unless told otherwise. Credentials in
    the URI never reach the links.
    """
    from urllib.parse import urlsplit, urlunsplit

    base = ui_url or (tracking_uri if tracking_uri.startswith(("http://", "https://")) else "")
    if not base:
        return DEFAULT_UI_URL
    parts = urlsplit(base)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def artifact_image_url(base: str, run_id: str, name: str) -> str:
    """An absolute URL the MLflow server answers with the run's artifact ``report/<name>``.

    MLflow's artifact preview (3.x) renders a markdown image only when its source is an
    absolute http(s) URL; a relative one is printed as the literal ``[alt](name)`` text.
    The server's ``/get-artifact`` route is what its own UI uses to show images.
    """
    from urllib.parse import quote

    path = quote(f"{ARTIFACT_DIR}/{name}", safe="")
    return f"{base}/get-artifact?path={path}&run_uuid={quote(run_id, safe='')}"


def _log_artifacts(data: ReportData, files: Sequence[Path], markdown: str) -> str | None:
    """Attach the files to the parent run under ``report/``; returns why not, if not.

    ``report.md`` is logged as ``markdown`` (its MLflow copy, with absolute image links), the
    other files as written.
    """
    import tempfile

    if data.client is None or data.parent_run_id is None:
        return "no MLflow parent run for this study; files were not logged to MLflow"
    try:
        with tempfile.TemporaryDirectory(prefix="protolab-report-") as tmp:
            md = Path(tmp) / "report.md"
            md.write_text(markdown)
            for f in files:
                src = md if f.name == "report.md" else f
                data.client.log_artifact(data.parent_run_id, str(src), ARTIFACT_DIR)
    except Exception as e:  # the files exist locally; a read-only store is not fatal
        return f"could not log to MLflow: {type(e).__name__}: {str(e)[:200]}"
    return None


def _refresh_notes(data: ReportData) -> str | None:
    """Rewrite what the MLflow UI says about the study, now that the plots are logged.

    The parent run's description embeds the report's PNGs it finds under ``report/``, so it
    is refreshed after they are logged; returns why not, if it could not be.
    """
    if data.client is None or data.parent_run_id is None or data.experiment_id is None:
        return None
    try:
        write_study_notes(data.client, data.experiment_id, data.parent_run_id, data.source.study)
    except Exception as e:  # the report itself is written; the notes are a convenience
        return f"could not refresh the MLflow notes: {type(e).__name__}: {str(e)[:200]}"
    return None


def _print_report(
    console: Console,
    report: Report,
    plots: Sequence[str],
    files: Sequence[Path],
    problem: str | None,
) -> None:
    """The terminal side: title line, the verdict first, every table, where files went.

    The answer comes first so that it is on the first screen; every table fits the
    console's width (:func:`to_rich` splits a table rather than cut a number).
    """
    from rich.markup import escape

    data, out = report.data, files[0].parent
    constraints = ", ".join(data.constraint_names)
    console.print(
        f"[bold]report[/] {escape(data.source.study)}  [dim]{escape(_objectives_text(data))}"
        f"{escape(f' subject to {constraints}') if constraints else ''}, "
        f"{escape(report.counts_text())}[/]"
    )
    for i, line in enumerate(report.verdict_lines):
        console.print(f"[bold]{escape(line)}[/]" if i == 0 else f"- {escape(line)}")
    for table in report.tables().values():
        console.print(to_rich(table))
    if report.changes and "history.png" in plots:
        marks = ", ".join(f"{c.version.name} from t{c.trial}" for c in report.changes)
        console.print(f"[dim]history.png marks the script version changes: {escape(marks)}[/]")
    console.print(escape(f"wrote {out}/: {', '.join(f.name for f in files)}"))
    if problem:
        console.print(f"[yellow]{escape(problem)}[/]")
    else:
        console.print(
            f"logged to MLflow run {data.parent_run_id} (experiment {data.experiment_id}) "
            f"under {ARTIFACT_DIR}/"
        )


def run_report(
    target: str,
    out_dir: Path | str | None = None,
    tracking_uri: str | None = None,
    storage: str | None = None,
    console: Console | None = None,
    ui_url: str | None = None,
) -> Path:
    """Report on study ``target`` (a study name or a YAML config); returns the output folder.

    Prints the tables and the verdict, writes ``report.md``, ``report.json`` and the PNGs to
    ``out_dir`` (default ``reports/<study>/``) and logs them to the study's MLflow parent run
    under ``report/``. The folder's ``report.md`` links its images by file name (GitHub, any
    viewer); the logged copy links them through ``ui_url`` (:func:`ui_base_url`) so MLflow's
    artifact preview shows them. An unknown study is a ConfigError naming the studies.
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
    base = ui_base_url(source.tracking_uri, ui_url)
    run_id = data.parent_run_id or ""
    logged = report.to_markdown(plots, lambda name: artifact_image_url(base, run_id, name))
    problem = _log_artifacts(data, files, logged)
    notes_problem = None if problem else _refresh_notes(data)
    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:  # piped or captured: wide enough for the comparison
            console = Console(highlight=False, width=160)
    _print_report(console, report, plots, files, problem)
    if notes_problem:
        console.print(f"[yellow]{escape(notes_problem)}[/]")
    return out
