"""What the MLflow UI says about a study, computed by the report: the parent run's params,
metrics and description, and the experiment's note and shared view.

:func:`study_notes` computes them from what the store holds; the tracker stores them
(:func:`protolab.tracking.store_study_notes`) when a sweep ends, so a rerun or a second
worker refreshes them: it is handed :func:`study_notes` when it is opened (a module-level
function, so it reaches the tracking writer process by name). :func:`write_study_notes`
computes and stores them at any time (after ``protolab report`` logs its plots, the
description embeds them).

The comparison is the report's (:func:`compare_modes` over :func:`records_from_mlflow`),
so the description, the parent's ``compare/*`` metrics and ``protolab report`` say the
same numbers: the best mode of each family against each other with a 95 % bootstrap
interval, and every mode's break-even against the eager reference, with whether this
sweep's trials paid it back.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from protolab._format import sig3
from protolab._stores import redact
from protolab._tags import TAG
from protolab.report._compare import break_even_steps, format_break_even
from protolab.report._data import records_from_mlflow
from protolab.report._modes import Comparison, compare_modes
from protolab.report._verdict import answer, verdict_lines
from protolab.tracking import FAMILY_VIEW, store_study_notes

__all__ = [
    "ParentNotes",
    "StudyView",
    "family_view",
    "study_notes",
    "verdict",
    "write_study_notes",
]

ML_MODE = "workflowType=machine_learning"
_PLOTS_DIR = "report"
_KEY_PLOTS = ("break_even", "step_ratios", "pareto")  # the report's plots the description shows


@dataclass(frozen=True)
class ParentNotes:
    """What the UI says about one study, as the tracker stores it (``tracking.StudyNotes``)."""

    description: str  # the parent run's (markdown)
    params: Mapping[str, str]  # the study's resolved config, flat
    metrics: Mapping[str, float]  # compare/* and best/<backend>/<metric>
    experiment_note: str  # where to start (markdown)
    views: Mapping[str, str]  # shared views of the runs table: key -> MLflow's view JSON


@dataclass
class StudyView:
    """The runs of one study, as the notes need them."""

    study: str
    metric: str
    maximize: bool
    backends: list[str]  # in the order they ran; the reference first
    describe: dict[str, str]  # backend -> "family, mode" (its tags)
    runs: list[Any] = field(default_factory=list)  # complete child runs (MLflow Run)
    counts: dict[str, int] = field(default_factory=dict)  # COMPLETE/PRUNED/FAIL -> n
    comparison: Comparison | None = None  # the report's comparison of the paired runs


def _metric(run: Any, key: str) -> float | None:
    v = run.data.metrics.get(key)
    return None if v is None or not math.isfinite(v) else float(v)


def _order(runs: Sequence[Any]) -> list[str]:
    """Backends in the order they ran, the reference (eager) one first."""
    seen: list[str] = []
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        b = run.data.tags.get(TAG.BACKEND, "")
        if b and b not in seen:
            seen.append(b)
    eager = [
        b
        for b in seen
        if any(
            r.data.tags.get(TAG.BACKEND) == b and r.data.tags.get(TAG.EAGER) == "true" for r in runs
        )
    ]
    return eager[:1] + [b for b in seen if b not in eager[:1]]


def _describe(runs: Sequence[Any], backend: str) -> str:
    for r in runs:
        if r.data.tags.get(TAG.BACKEND) == backend:
            parts = [r.data.tags.get(TAG.FAMILY, ""), r.data.tags.get(TAG.MODE, "")]
            return ", ".join(p for p in parts if p)
    return ""


def _maximize(metric: str, direction: str) -> bool:
    if direction in ("maximize", "minimize"):
        return direction == "maximize"
    return not any(w in metric for w in ("loss", "rmse", "mae", "mse", "error", "time/"))


def load_view(client: Any, experiment_id: str, parent_id: str, study: str) -> StudyView:
    """The parent's child runs (every page), as a :class:`StudyView`."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
            max_results=1000,
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            break
    counts: dict[str, int] = {}
    by_trial: dict[str, str] = {}
    for r in runs:  # a trial's state: its worst run (FAIL > PRUNED > COMPLETE)
        state = r.data.tags.get(TAG.STATE, "")
        trial = r.data.tags.get(TAG.TRIAL, r.info.run_id)
        rank = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2, "INTERRUPTED": 2}.get(state, -1)
        old = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}.get(by_trial.get(trial, ""), -1)
        if rank > old:
            by_trial[trial] = "FAIL" if state == "INTERRUPTED" else state
    for state in by_trial.values():
        counts[state] = counts.get(state, 0) + 1
    complete = [r for r in runs if r.data.tags.get(TAG.STATE) == "COMPLETE"]
    metric = next((r.data.tags[TAG.METRIC] for r in runs if TAG.METRIC in r.data.tags), "")
    parent = client.get_run(parent_id)
    direction = parent.data.tags.get(TAG.DIRECTION, "")
    backends = _order(runs)
    comparison = compare_modes(records_from_mlflow(client, runs), metric) if metric else None
    return StudyView(
        study=study,
        metric=metric,
        maximize=_maximize(metric, direction),
        backends=backends,
        describe={b: _describe(runs, b) for b in backends},
        runs=complete,
        counts=counts,
        comparison=comparison,
    )


def _best(view: StudyView) -> dict[str, tuple[float, str]]:
    """Per backend, its best value of the study's metric and the trial that reached it."""
    best: dict[str, tuple[float, str]] = {}
    for r in view.runs:
        b, v = r.data.tags.get(TAG.BACKEND, ""), _metric(r, view.metric)
        if not b or v is None:
            continue
        old = best.get(b)
        if old is None or (v > old[0] if view.maximize else v < old[0]):
            best[b] = (v, r.data.tags.get(TAG.TRIAL, "?"))
    return {b: best[b] for b in view.backends if b in best}


def parent_metrics(view: StudyView) -> dict[str, float]:
    """The report's ``compare/*`` numbers and ``best/<backend>/<metric>``, for the parent."""
    out: dict[str, float] = dict(view.comparison.metrics()) if view.comparison else {}
    for b, (v, _) in _best(view).items():
        out[f"best/{b}/{view.metric}"] = v
    return out


def _x(v: float) -> str:
    return f"{sig3(v)}x"


def _label(view: StudyView, backend: str) -> str:
    what = view.describe.get(backend, "")
    return f"{backend} ({what})" if what else backend


def verdict(view: StudyView) -> list[str]:
    """The report's verdict (markdown): which mode gives a result first in bold, then per
    step, the overtake, accuracy parity, the machine, and each break-even."""
    c = view.comparison
    if c is None or not c.units:
        return []
    said = answer(c)
    lines = verdict_lines(c, said)
    if not lines:
        return []
    bold = 2 if said is not None else 1  # the two claims: result first, then per step
    return [*(f"**{line}**\n" for line in lines[:bold]), *(f"- {line}" for line in lines[bold:])]


def _pair_table(view: StudyView) -> list[str]:
    """One row per paired measurement: step times, speed-up, compile, break-even, metric."""
    c = view.comparison
    base = c.base if c is not None else None
    if c is None or base is None:  # shown only under a verdict: never, in practice
        return []
    others = [m for m in c.paired if m != base]
    short = view.metric.rsplit("/", 1)[-1]
    head = ["trial", f"{base} ms/step"]
    for m in others:
        head += [f"{m} ms/step", f"speed-up {m}", f"{m} compile s", f"break-even {m}"]
    head += [f"{m} {short}" for m in [base, *others]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for u in c.units:
        ref = u.runs.get(base)
        if ref is None:
            continue
        cells = [f"t{u.trial}", sig3(ref.step_ms)]
        for m in others:
            run = u.runs.get(m)
            if run is None or not run.step_ms or not ref.step_ms:
                cells += ["-"] * 4
                continue
            first = (ref.metrics.get("time/first_step_s"), run.metrics.get("time/first_step_s"))
            even = "-"
            if first[0] is not None and first[1] is not None:
                even = format_break_even(
                    break_even_steps(first[0], first[1], ref.step_ms, run.step_ms)
                )
            cells += [sig3(run.step_ms), _x(ref.step_ms / run.step_ms)]
            cells += [sig3(run.metrics.get("time/compile_s")), even]
        cells += [
            sig3(u.runs[m].metrics.get(view.metric)) if m in u.runs else "-"
            for m in [base, *others]
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _plots(client: Any, parent_id: str) -> list[str]:
    """Markdown images of the report's PNGs on the parent run (after ``protolab report``)."""
    try:
        files = client.list_artifacts(parent_id, _PLOTS_DIR)
    except Exception:  # no report yet, or a store that cannot list
        return []
    pngs = {Path(f.path).stem: f.path for f in files if f.path.endswith(".png")}
    shown = [n for n in _KEY_PLOTS if n in pngs] or sorted(pngs)[:2]
    out = []
    for name in shown:
        src = f"get-artifact?path={quote(pngs[name], safe='')}&run_uuid={parent_id}"
        out.append(f"![{name}]({src})")
    rest = sorted(set(pngs) - set(shown))
    if rest:
        out.append(f"More in this run's artifacts, `{_PLOTS_DIR}/`: " + ", ".join(rest) + ".")
    return out


def _counts(view: StudyView) -> str:
    c = view.counts
    return (
        f"{c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, "
        f"{c.get('FAIL', 0)} failed trials"
    )


def describe_parent(view: StudyView, plots: Sequence[str]) -> str:
    """The parent run's description (markdown): verdict, pair table, plots, how to read."""
    modes = [m.name for m in view.comparison.modes] if view.comparison else view.backends
    lines = [f"## {view.study}: " + " vs ".join(_label(view, b) for b in modes), ""]
    said = verdict(view)
    if said:
        lines += said
    elif len(view.backends) > 1:
        lines.append(
            "No complete pair yet: the comparison appears once a trial ran on every backend."
        )
    else:
        one = view.backends[0] if view.backends else "none yet"
        lines.append(f"One backend ({one}): no comparison; list several under `backends:`.")
    best = _best(view)
    if best:
        way = "highest" if view.maximize else "lowest"
        each = ", ".join(f"{b} {sig3(v)} (t{t})" for b, (v, t) in best.items())
        lines += ["", f"Best {view.metric} ({way} is best): {each}. {_counts(view)}."]
    if said:
        lines += ["", "### Pairs", "", *_pair_table(view)]
    if plots:
        lines += ["", "### Plots (`protolab report`)", "", *plots]
    lines += ["", *_how_to_read(view)]
    return "\n".join(lines) + "\n"


def _how_to_read(view: StudyView) -> list[str]:
    c = view.comparison
    ref = (c.base if c is not None else None) or "the reference"
    return [
        "### How to read this",
        "",
        f"- Every trial trained one sampled model on each backend; speed-up = {ref} ms/step ÷ "
        "the other's (above 1: the other is faster per step), steady state, median per run.",
        "- Break-even = training steps after which the slower start (tracing, compiling) "
        "is paid back by faster steps; a run shorter than that was faster on "
        f"{ref} end to end.",
        "- The child runs (one per trial and backend, `t<N>-<backend>`) are under this run: "
        "in the runs table, expand it (⊞), or *Group by* → `family` / `backend` (params).",
        "- Compare runs: select them, *Compare*; or the chart view (second icon above the "
        "table) for `val/*` curves and `time/step_ms`, coloured by family.",
        "- The study's config is this run's params; each child run keeps its script, config "
        "and architecture as artifacts. `protolab report` adds plots here.",
    ]


def experiment_note(view: StudyView, experiment_id: str, parent_id: str) -> str:
    """The experiment's note: where to start (its first line shows above the runs table)."""
    backends = ", ".join(_label(view, b) for b in view.backends) or "none yet"
    goal = "maximise" if view.maximize else "minimise"
    link = f"#/experiments/{experiment_id}/runs/{parent_id}?{ML_MODE}"
    return (
        f"**Start here: the parent run [`{view.study}`]({link})** says which backend is "
        "faster for this model and when the compile pays back, with the pair table.\n\n"
        f"protolab study `{view.study}`: an Optuna search over an experiment's architecture, "
        f"each trial trained on {backends} to {goal} `{view.metric}`. Expand the parent run "
        "for one child run per trial and backend; *Group by* → `family` puts dynamic and "
        "static side by side. Metrics: `time/*` (cost), `val/*` (quality), "
        "`throughput/*`, `memory/*`, `perf/*`.\n"
    )


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v)
    return out


def config_params(client: Any, runs: Sequence[Any]) -> dict[str, str]:
    """The study's resolved config (the newest child run's ``config/resolved.json``), flat."""
    for run in sorted(runs, key=lambda r: -(r.info.start_time or 0)):
        with tempfile.TemporaryDirectory(prefix="protolab-config-") as tmp:
            try:
                path = client.download_artifacts(run.info.run_id, "config/resolved.json", tmp)
                doc = json.loads(Path(path).read_text())
            except Exception:  # this run has none (failed before training): try the next
                continue
        return {k: redact(v)[:6000] for k, v in _flatten(doc).items()}
    return {}


def family_view(metric: str) -> str:
    """The shared view's JSON: group by the ``family`` param and the run's state tag.

    The state (``protolab.state``: COMPLETE, PRUNED, FAIL) is a grouping key, so each
    family's COMPLETE group averages complete runs only: a pruned run stopped early with a
    worse metric and must not drag the family's mean down (the issue saw val/acc 0.784
    against 0.961). Pruned and failed runs get groups of their own, labelled with their
    state, and the state is a column: a pruned run looks pruned.
    """
    metrics = [metric, "time/trial_s", "time/step_ms", "time/compile_s", "time/first_step_s"]
    columns = [f"params.`{p}`" for p in ("backend", "mode")]
    columns.append(f"tags.`{TAG.STATE}`")
    columns += [f"metrics.`{m}`" for m in dict.fromkeys(m for m in metrics if m)]
    state = {
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [
                {"mode": "param", "groupByData": "family"},
                {"mode": "tag", "groupByData": TAG.STATE},
            ],
        },
        "selectedColumns": columns,
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
    }
    return json.dumps(state)


def study_notes(client: Any, experiment_id: str, parent_id: str, study: str) -> ParentNotes:
    """Compute the parent run's params, metrics, description and the experiment's note
    from the store (the tracker's ``DescribeStudy``: it stores what this returns)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    view = load_view(client, experiment_id, parent_id, study)
    multi = len(view.backends) > 1
    return ParentNotes(
        description=describe_parent(view, _plots(client, parent_id)),
        params=config_params(client, view.runs),
        metrics=parent_metrics(view),
        experiment_note=experiment_note(view, experiment_id, parent_id),
        views={FAMILY_VIEW: family_view(view.metric)} if multi else {},
    )


def write_study_notes(client: Any, experiment_id: str, parent_id: str, study: str) -> None:
    """Compute and store the parent run's params, metrics, description and the experiment
    note now (as the end of a sweep does)."""
    notes = study_notes(client, experiment_id, parent_id, study)
    store_study_notes(client, experiment_id, parent_id, notes)
