"""What the MLflow UI says about a study: the parent run's params, metrics and description,
and the experiment's note, all computed from what the store holds.

Written when a sweep ends (``Tracker.end``), so a rerun or a second worker refreshes them;
:func:`write_study_notes` can be called again at any time (``protolab report`` does, after
it logs its plots, so the description embeds them).

The comparison is per pair (runs sharing ``protolab.pair``): every backend against the
reference one (tag ``protolab.eager`` = true, else the first backend that ran). A pair's
speed-up is reference ms/step / other ms/step (above 1: the other is faster per step); the
study's is the geometric mean over pairs with the report's bootstrap interval, and the
break-even is the median over pairs of the steps after which the other backend's extra
time to first step is paid back (``protolab.report.break_even_steps``).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protolab._tags import TAG

__all__ = [
    "FAMILY_VIEW",
    "NOTE_TAG",
    "Comparison",
    "StudyView",
    "compare",
    "family_view",
    "write_study_notes",
]

NOTE_TAG = "mlflow.note.content"  # MLflow's run description / experiment note
ML_MODE = "workflowType=machine_learning"
FAMILY_COLOURS = {"dynamic": "#1f77b4", "static": "#ff7f0e"}  # tag mlflow.runColor
_PLOTS_DIR = "report"
# A view of the runs table stored on the experiment (MLflow's "shared view" tag), opened
# with ``?viewStateShareKey=protolab-family``: runs grouped by family, the comparison's
# columns shown. MLflow's UI reads the tag's JSON as it reads a view its Share button saved.
FAMILY_VIEW = "protolab-family"
_KEY_PLOTS = ("break_even", "step_ratios", "pareto")  # the report's plots the description shows
_SHARED_VIEW_TAG = (
    "mlflow.sharedViewState."  # where ``protolab report`` logs its PNGs on the parent run
)


@dataclass
class Comparison:
    """One backend against the reference, over the pairs that ran both."""

    backend: str
    reference: str
    speedup: float  # reference ms/step / backend ms/step (geometric mean over pairs)
    low: float | None  # 95 % interval of the speed-up; None with a single pair
    high: float | None
    n_pairs: int
    break_even: float | None  # median steps; None = never pays back
    n_never: int  # pairs in which it never pays back (not faster per step)
    steps_trained: float | None  # median train/steps of this backend's runs
    compile_s: float | None  # median time/compile_s of this backend's runs


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


def _metric(run: Any, key: str) -> float | None:
    v = run.data.metrics.get(key)
    return None if v is None or not math.isfinite(v) else float(v)


def _pairs(view: StudyView) -> dict[str, dict[str, Any]]:
    pairs: dict[str, dict[str, Any]] = {}
    for run in view.runs:
        pair = run.data.tags.get(TAG.PAIR, "")
        backend = run.data.tags.get(TAG.BACKEND, "")
        if pair and backend:
            pairs.setdefault(pair, {})[backend] = run
    return pairs


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _speedup(ratios: Sequence[tuple[float, float]]) -> tuple[float, float | None, float | None]:
    """Speed-up (reference/other) and its interval, via the report's bootstrap."""
    from protolab.report._intervals import ratio_interval

    r = ratio_interval([[([ref], [other])] for ref, other in ratios])
    if r.interval is None:
        return r.value, None, None
    return r.value, r.interval.low, r.interval.high


def compare(view: StudyView) -> list[Comparison]:
    """Each non-reference backend against the reference, over their common pairs."""
    if len(view.backends) < 2:
        return []
    found = (_compare_one(view, view.backends[0], other) for other in view.backends[1:])
    return [c for c in found if c is not None]


def _compare_one(view: StudyView, ref: str, other: str) -> Comparison | None:
    from protolab.report._compare import break_even_steps

    keys = ("time/first_step_s", "time/step_ms")
    rows: list[tuple[tuple[float, float], tuple[float, float]]] = []
    for p in _pairs(view).values():
        if ref in p and other in p:
            a = tuple(_metric(p[ref], k) for k in keys)
            b = tuple(_metric(p[other], k) for k in keys)
            if all(v is not None and v > 0 for v in (*a, *b)):
                rows.append((a, b))  # type: ignore[arg-type]  # checked: no None left
    if not rows:
        return None
    speedup, low, high = _speedup([(a[1], b[1]) for a, b in rows])
    evens = [break_even_steps(a[0], b[0], a[1], b[1]) for a, b in rows]
    median_even = statistics.median(math.inf if e is None else e for e in evens)
    runs = [p[other] for p in _pairs(view).values() if ref in p and other in p]
    return Comparison(
        backend=other,
        reference=ref,
        speedup=speedup,
        low=low,
        high=high,
        n_pairs=len(rows),
        break_even=None if math.isinf(median_even) else median_even,
        n_never=sum(e is None for e in evens),
        steps_trained=_median([_metric(r, "train/steps") for r in runs]),
        compile_s=_median([_metric(r, "time/compile_s") for r in runs]),
    )


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
    return StudyView(
        study=study,
        metric=metric,
        maximize=_maximize(metric, direction),
        backends=backends,
        describe={b: _describe(runs, b) for b in backends},
        runs=complete,
        counts=counts,
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


def parent_metrics(view: StudyView, comparisons: Sequence[Comparison]) -> dict[str, float]:
    """``compare/<backend>/...`` and ``best/<backend>/<metric>`` for the parent run."""
    out: dict[str, float] = {}
    for c in comparisons:
        key = f"compare/{c.backend}"
        out[f"{key}/speedup"] = c.speedup
        if c.low is not None and c.high is not None:
            out[f"{key}/speedup_low"], out[f"{key}/speedup_high"] = c.low, c.high
        if c.break_even is not None:
            out[f"{key}/break_even_steps"] = c.break_even
        out[f"{key}/pairs"] = float(c.n_pairs)
    for b, (v, _) in _best(view).items():
        out[f"best/{b}/{view.metric}"] = v
    return out


def _x(v: float) -> str:
    from protolab._format import sig3

    return f"{sig3(v)}x"


def _label(view: StudyView, backend: str) -> str:
    what = view.describe.get(backend, "")
    return f"{backend} ({what})" if what else backend


def headline(view: StudyView, c: Comparison) -> str:
    """One sentence on speed, one on whether the compile paid back in this sweep."""
    from protolab._format import sig3

    a, b = _label(view, c.backend), _label(view, c.reference)
    pairs = f"{c.n_pairs} pair{'s' if c.n_pairs != 1 else ''}"
    ci = f"95% CI {_x(c.low)}-{_x(c.high)}, " if c.low is not None and c.high else ""
    if c.low is not None and c.high is not None and c.low <= 1.0 <= c.high:
        speed = (
            f"**No clear difference per step between {a} and {b}** ({_x(c.speedup)}, {ci}{pairs})."
        )
    elif c.speedup >= 1:
        speed = f"**{a} is {_x(c.speedup)} faster per step than {b}** ({ci}{pairs})."
    else:
        speed = f"**{a} is {_x(1 / c.speedup)} slower per step than {b}** ({ci}{pairs})."
    if c.break_even is None and c.n_never < c.n_pairs:
        pays = (
            f"In {c.n_never} of {c.n_pairs} pairs it is not faster per step, so at the median "
            "its extra time to first step never pays back."
        )
    elif c.break_even is None:
        pays = (
            "Its extra time to first step never pays back: "
            f"per step it is not faster than {c.reference}."
        )
    elif c.break_even == 0:
        pays = f"It is ahead of {c.reference} from the first step."
    else:
        steps = f"{math.ceil(c.break_even):,}"
        pays = f"Its compile pays back after ~{steps} training steps (median over pairs)"
        if c.steps_trained is not None:
            trained = f"{math.ceil(c.steps_trained):,}"
            verdict = "did" if c.steps_trained >= c.break_even else "did **not**"
            pays += f"; this sweep's trials trained {trained} steps, so here it {verdict} pay back."
        else:
            pays += "."
    if c.compile_s is not None:
        pays += f" (compile: {sig3(c.compile_s)} s per trial)"
    return f"{speed} {pays}"


def _trial_number(run: Any) -> int:
    text = run.data.tags.get(TAG.TRIAL, "")
    return int(text) if text.isdigit() else -1


def _pair_table(view: StudyView, c: Comparison) -> list[str]:
    from protolab._format import sig3
    from protolab.report._compare import break_even_steps, format_break_even

    ref, other = c.reference, c.backend
    short = view.metric.rsplit("/", 1)[-1]
    head = [
        "trial",
        f"{ref} ms/step",
        f"{other} ms/step",
        "speed-up",
        f"{other} compile s",
        "break-even steps",
        f"{ref} {short}",
        f"{other} {short}",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    both = [p for p in _pairs(view).values() if ref in p and other in p]
    for p in sorted(both, key=lambda p: _trial_number(p[ref])):
        a, b = p[ref], p[other]
        sa, sb = _metric(a, "time/step_ms"), _metric(b, "time/step_ms")
        fa, fb = _metric(a, "time/first_step_s"), _metric(b, "time/first_step_s")
        even = "-"
        if None not in (sa, sb, fa, fb):
            even = format_break_even(break_even_steps(fa, fb, sa, sb))  # type: ignore[arg-type]
        cells = [
            f"t{a.data.tags.get(TAG.TRIAL, '?')}",
            sig3(sa),
            sig3(sb),
            _x(sa / sb) if sa and sb else "-",
            sig3(_metric(b, "time/compile_s")),
            even,
            sig3(_metric(a, view.metric)),
            sig3(_metric(b, view.metric)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _plots(client: Any, parent_id: str) -> list[str]:
    """Markdown images of the report's PNGs on the parent run (after ``protolab report``)."""
    from urllib.parse import quote

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


def describe_parent(
    view: StudyView, comparisons: Sequence[Comparison], plots: Sequence[str]
) -> str:
    """The parent run's description (markdown): headline, pair table, plots, how to read."""
    from protolab._format import sig3

    lines = [f"## {view.study}: " + " vs ".join(_label(view, b) for b in view.backends), ""]
    if comparisons:
        lines += [headline(view, c) for c in comparisons]
    elif len(view.backends) > 1:
        lines.append(
            "No complete pair yet: the comparison appears once a trial ran on every backend."
        )
    else:
        lines.append(
            f"One backend ({view.backends[0] if view.backends else 'none yet'}): no comparison; "
            "list several under `backends:` to pair them."
        )
    best = _best(view)
    if best:
        way = "highest" if view.maximize else "lowest"
        each = ", ".join(f"{b} {sig3(v)} (t{t})" for b, (v, t) in best.items())
        lines += ["", f"Best {view.metric} ({way} is best): {each}. {_counts(view)}."]
    for c in comparisons:
        lines += ["", f"### Pairs: {c.backend} vs {c.reference}", "", *_pair_table(view, c)]
    if plots:
        lines += ["", "### Plots (`protolab report`)", "", *plots]
    lines += ["", *_how_to_read(view)]
    return "\n".join(lines) + "\n"


def _how_to_read(view: StudyView) -> list[str]:
    ref = view.backends[0] if view.backends else "the reference"
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
    from protolab.tracking._mlflow import redact

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
    """The shared view's JSON: group by the ``family`` param, the comparison's columns."""
    metrics = [metric, "time/step_ms", "time/compile_s", "time/first_step_s"]
    columns = [f"params.`{p}`" for p in ("backend", "mode")]
    columns += [f"metrics.`{m}`" for m in dict.fromkeys(m for m in metrics if m)]
    state = {
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "param", "groupByData": "family"}],
        },
        "selectedColumns": columns,
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
    }
    return json.dumps(state)


def write_study_notes(client: Any, experiment_id: str, parent_id: str, study: str) -> None:
    """Compute and write the parent run's params, metrics, description and the experiment note."""
    import os

    from mlflow.entities import Metric, Param, RunTag

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    view = load_view(client, experiment_id, parent_id, study)
    comparisons = compare(view)
    parent = client.get_run(parent_id)
    have = parent.data.params
    params = [Param(k, v) for k, v in config_params(client, view.runs).items() if k not in have]
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in parent_metrics(view, comparisons).items()]
    note = describe_parent(view, comparisons, _plots(client, parent_id))
    client.log_batch(parent_id, metrics=metrics, params=params[:100], tags=[RunTag(NOTE_TAG, note)])
    for i in range(100, len(params), 100):
        client.log_batch(parent_id, params=params[i : i + 100])
    client.set_experiment_tag(
        experiment_id, NOTE_TAG, experiment_note(view, experiment_id, parent_id)
    )
    if len(view.backends) > 1:
        client.set_experiment_tag(
            experiment_id, _SHARED_VIEW_TAG + FAMILY_VIEW, family_view(view.metric)
        )
