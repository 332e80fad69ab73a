"""The report's tables, built once as plain text cells and rendered twice: rich and markdown.

Building cells once keeps the terminal and ``report.md`` showing the same rounded numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protolab.report._compare import format_break_even
from protolab.report._data import Objective, ReportData, TrialRecord
from protolab.report._modes import Comparison, Mode, format_seconds
from protolab.report._versions import VersionSplit
from protolab.report._watch import WatchMode, WatchSession, WatchVersion

__all__ = [
    "TextTable",
    "architectures_table",
    "best_trials_table",
    "break_even_table",
    "column_groups",
    "front_table",
    "importance_table",
    "matrix_table",
    "modes_table",
    "objective_importance_table",
    "to_markdown",
    "to_rich",
    "trial_ranges",
    "versions_table",
    "watch_table",
]


@dataclass
class TextTable:
    """A titled grid of strings; a header's ``\\n`` splits it over two terminal lines."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)  # right-aligned (numeric) columns
    notes: list[str] = field(default_factory=list)


def fmt(v: float | None, spec: str = ".4g") -> str:
    """A number for a table cell; ``-`` when it was not measured."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _param(v: Any) -> str:
    return fmt(v) if isinstance(v, float) else str(v)


def params_text(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k.removeprefix('train.')}={_param(v)}" for k, v in params.items())


def short_metric(metric: str) -> str:
    return metric.rsplit("/", 1)[-1]


def trial_ranges(numbers: Sequence[int], prefix: str = "t") -> str:
    """``t0-3,t7,t9-10``: trial numbers with consecutive runs collapsed (``w1-2``: reruns)."""
    parts: list[str] = []
    ordered = sorted(numbers)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(f"{prefix}{ordered[i]}" if i == j else f"{prefix}{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


INFEASIBLE_MARK = "†"


def _infeasible_note(data: ReportData) -> str:
    return (
        f"{INFEASIBLE_MARK} infeasible: violates a constraint "
        f"({', '.join(data.constraint_names)}); Optuna never counts it as best"
    )


def trial_cell(t: TrialRecord) -> str:
    """``t7``, or ``t7†`` when the trial violates a constraint."""
    return f"t{t.number}" + ("" if t.feasible else INFEASIBLE_MARK)


def _objective_header(o: Objective) -> str:
    return f"{o.metric}\n{'max' if o.maximize else 'min'}"


def front_table(data: ReportData, versions: VersionSplit | None = None) -> TextTable:
    """A multi-objective study's "best trials": its feasible Pareto front.

    One row per front member (Optuna's ``study.best_trials``), best first by the first
    objective: each objective's value, each backend's first-objective metric and step time,
    the params (and the trial's version with ``versions``).
    """
    objectives = data.all_objectives
    front = data.front_trials()
    short = short_metric(data.metric)
    headers = ["trial", *(_objective_header(o) for o in objectives)]
    if versions is not None:
        headers.insert(1, "version")
    for b in data.backends:
        headers += [f"{b}\n{short}", f"{b}\nms/step"]
    headers.append("params")
    rows = []
    for t in front:
        values = list(t.values or ())
        cells = [trial_cell(t), *(fmt(v) for v in values)]
        cells += ["-"] * (len(objectives) - len(values))
        if versions is not None:
            v = versions.version_of(t.number)
            cells.insert(1, "-" if v is None else v.name)
        for b in data.backends:
            m = t.backends.get(b, {})
            cells += [fmt(m.get(data.metric)), fmt(m.get("time/step_ms"))]
        rows.append([*cells, params_text(t.params)])
    complete = data.complete_trials()
    notes = [
        "on the front: no other feasible trial is at least as good on every objective and "
        f"better on one (Optuna study.best_trials); best first by {data.metric}"
    ]
    if data.constraint_names:
        bad = data.infeasible
        notes.append(
            f"constraints: {', '.join(data.constraint_names)}; {len(bad)} of {len(complete)} "
            f"complete trials infeasible{f' ({trial_ranges(bad)})' if bad else ''}, "
            "never on the front"
        )
    if not front and complete:
        notes.append("no feasible complete trial yet: the front is empty")
    over = ", ".join(f"{o.metric} {o.direction}" for o in objectives)
    return TextTable(
        title=f"Pareto front ({len(front)} of {len(complete)} complete trials; {over})",
        headers=headers,
        rows=rows,
        right=set(range(2 if versions is not None else 1, len(headers) - 1)),
        notes=notes,
    )


def best_trials_table(
    data: ReportData, limit: int = 10, versions: VersionSplit | None = None
) -> TextTable:
    """Top trials by the study's value, each backend's metric and step time, the params.

    With ``versions`` (a study that ran several script versions) a column names each
    trial's version (``v1``, ``v2``, as in the "By script version" table).
    """
    done = sorted(
        data.complete_trials(),
        key=lambda t: t.value if t.value is not None else math.nan,
        reverse=data.maximize,
    )[:limit]
    short = short_metric(data.metric)
    headers = ["trial", f"value\n{short}"]
    if versions is not None:
        headers.insert(1, "version")
    for b in data.backends:
        headers += [f"{b}\n{short}", f"{b}\nms/step"]
    headers.append("params")
    rows = []
    for t in done:
        cells = [trial_cell(t), fmt(t.value)]
        if versions is not None:
            v = versions.version_of(t.number)
            cells.insert(1, "-" if v is None else v.name)
        for b in data.backends:
            m = t.backends.get(b, {})
            cells += [fmt(m.get(data.metric)), fmt(m.get("time/step_ms"))]
        rows.append([*cells, params_text(t.params)])
    n = len(data.complete_trials())
    notes = [_infeasible_note(data)] if any(not t.feasible for t in done) else []
    best = next((t for t in done if t.number in data.front), done[0] if done else None)
    test = held_out_note(data, best) if best is not None else None
    return TextTable(
        title=f"Best trials ({len(done)} of {n} complete, {data.metric} {data.direction})",
        headers=headers,
        rows=rows,
        right=set(range(2 if versions is not None else 1, len(headers) - 1)),
        notes=[*notes, *([test] if test else [])],
    )


def held_out_note(data: ReportData, best: TrialRecord) -> str | None:
    """The best trial's test-split metrics, from its latest ``protolab run --best`` per mode.

    A note, not columns: only the best trial has them, and only once rerun on the test split.
    """
    latest: dict[str, Mapping[str, float]] = {}
    for r in data.scored_runs:  # oldest first: the latest run of each mode wins
        if r.matches(best):
            latest[r.backend] = r.metrics
    if not latest:
        return None
    parts = [
        f"{b} " + ", ".join(f"{k} {fmt(v)}" for k, v in sorted(m.items()))
        for b, m in latest.items()
    ]
    return (
        f"test split of t{best.number} (protolab run --best; scored once after training, "
        f"never by the sweep): {'; '.join(parts)}"
    )


def versions_table(split: VersionSplit, data: ReportData) -> TextTable:
    """Per version, in the study's order: trial counts, best and median value, step times."""
    short = short_metric(data.metric)
    what = "script/config" if split.split_by == "script+config" else "script"
    headers = ["version", what, "trials", "complete", "pruned", "failed"]
    headers += [f"best\n{short}", "best\ntrial", f"median\n{short}"]
    headers += [f"{b}\nms/step" for b in data.backends]
    headers.append(f"Δ best {short}\nvs previous")
    rows = []
    bad = set(data.infeasible)
    for v in split.versions:
        cells = [v.name, v.label, trial_ranges(v.trials)]
        cells += [str(v.complete), str(v.pruned), str(v.failed)]
        best = "-" if v.best_trial is None else f"t{v.best_trial}"
        if v.best_trial in bad:
            best += INFEASIBLE_MARK
        cells += [fmt(v.best_value), best, fmt(v.median_value)]
        cells += [fmt(v.step_ms.get(b), ".3g") for b in data.backends]
        cells.append(fmt(v.delta_best, "+.4g"))
        rows.append(cells)
    better = "higher" if data.maximize else "lower"
    notes = [
        f"Δ best: this version's best {data.metric} minus the previous version's "
        f"({better} is better); ms/step: median time/step_ms of its complete runs",
        *split.notes,
    ]
    if any(v.best_trial in bad for v in split.versions):
        notes.append(_infeasible_note(data))
    n = len(split.versions)
    return TextTable(
        title=f"By script version ({n} version{'s' if n != 1 else ''}, in the order the "
        f"study ran them; {data.metric} {data.direction})",
        headers=headers,
        rows=rows,
        right=set(range(3, len(headers))),
        notes=notes,
    )


def _directions(session: WatchSession) -> str:
    """Which way is better for each value shown: the loss always down, the metric as studied."""
    parts = ["val/loss: lower is better"]
    if session.metric != "val/loss" and session.maximize is not None:
        parts.append(f"{session.metric}: {'higher' if session.maximize else 'lower'} is better")
    return "; ".join(parts)


def _watch_mode_cells(m: WatchMode | None, session: WatchSession) -> list[str]:
    """One mode's numbers in a version: last, median and Δ of each value, the first loss."""
    cells = []
    for k in session.value_names:
        st = m.values.get(k) if m is not None else None
        cells += [fmt(st.last if st else None), fmt(st.median if st else None)]
        cells.append(fmt(st.delta if st else None, "+.4g"))
    if session.first_loss_logged:
        cells.append(fmt(m.first_loss_s if m is not None else None, ".3g"))
    return cells


def _watch_rows(v: WatchVersion, session: WatchSession) -> list[list[str]]:
    """A version's lines: its own cells on the first, then one line per mode that ran.

    A line per mode (not a column group per mode) keeps the table as wide for four modes
    as for one; a version none of whose modes ran (its build failed) still gets its line.
    """
    head = [v.name, v.label, str(len(v.reruns)), trial_ranges(v.reruns, "w"), str(v.failed_runs)]
    modes = [b for b in session.backends if b in v.modes] or [""]
    rows = []
    for i, b in enumerate(modes):
        m = v.modes.get(b)
        mode = "-" if m is None else b + (f" ({m.failed} failed)" if m.failed else "")
        rows.append([*(head if i == 0 else [""] * len(head)), mode, *_watch_mode_cells(m, session)])
    return rows


def watch_table(session: WatchSession) -> TextTable:
    """A watch session's reruns per script version: did each edit help, on every mode?

    Versions in the order the session first ran them; under each, per mode, ``val/loss`` and
    the session's metric as the version's latest rerun left them, their median over its
    reruns, the change against the previous version, and the save -> first loss time.
    """
    what = "script/config" if session.split_by == "script+config" else "script"
    headers = ["version", what, "reruns", "which", "failed\nruns", "mode"]
    for k in session.value_names:
        short = short_metric(k)
        headers += [f"{short}\nlast", f"{short}\nmedian", f"Δ {short}\nvs previous"]
    if session.first_loss_logged:
        headers.append("first loss\ns")
    notes = [
        "last: the version's latest rerun; median: over its reruns; Δ: last minus the previous "
        f"version's last ({_directions(session)})",
    ]
    if session.first_loss_logged:
        notes.append(
            "first loss s: median seconds from the save to the end of the mode's first epoch "
            "(w1 starts the session, not a save, and is left out; modes run in turn)"
        )
    n, runs = len(session.versions), len(session.rerun_numbers)
    job = f"; {session.job}" if session.job else ""
    return TextTable(
        title=f"Watch session {session.name} ({runs} rerun{'s' if runs != 1 else ''}, {n} "
        f"version{'s' if n != 1 else ''}{job}; {session.metric})",
        headers=headers,
        rows=[row for v in session.versions for row in _watch_rows(v, session)],
        right={2, 4, *range(6, len(headers))},
        notes=[*notes, *session.notes],
    )


def _mode_note(m: Mode, reference: str | None) -> str:
    notes = []
    if m.name == reference:
        notes.append("eager reference")
    notes += [f"picked by {a.split('->', 1)[0]}" for a in m.auto]
    return ", ".join(notes)


def modes_table(c: Comparison) -> TextTable:
    """Every mode with a COMPLETE run: how it runs, its step time and spread, its start-up."""
    cached = any(m.n_cached for m in c.modes)
    headers = ["mode", "family", "how", "runs", "pairs", "ms/step", "p10-p90\nms", "compile\ns"]
    headers += ["compile\ncold s", "compile\nwarm s"] if cached else []
    headers += ["first step\ns", "steps\ntrained", "note"]
    rows = []
    for m in c.modes:
        spread = "-"
        if m.step_ms_p10 is not None and m.step_ms_p90 is not None:
            spread = f"{m.step_ms_p10:.3g}-{m.step_ms_p90:.3g}"
        head = [m.name, m.family or "-", m.description or "-", str(m.n_runs), str(m.n_pairs)]
        head += [fmt(m.step_ms, ".3g"), spread, fmt(m.compile_s, ".3g")]
        if cached:
            head += [fmt(m.compile_cold_s, ".3g"), fmt(m.compile_warm_s, ".3g")]
        head += [fmt(m.first_step_s, ".3g"), fmt(m.train_steps, ",.0f")]
        rows.append([*head, _mode_note(m, c.reference)])
    notes = ["ms/step: median of the per-epoch steady-state step times (time/epoch_step_ms)"]
    if cached:
        notes.append(
            "compile cold / warm: the compile with an empty and with a warm persistent compile "
            "cache (runs tagged protolab.compile_cache miss or off / hit; a hit keeps the cold "
            "compile beside it as time/compile_cold_s); - not measured"
        )
    return TextTable(
        title=f"Modes measured ({len(c.modes)}; medians over each mode's complete runs)",
        headers=headers,
        rows=rows,
        right=set(range(3, len(headers) - 1)),
        notes=notes,
    )


def matrix_table(c: Comparison) -> TextTable:
    """Row/column step-time ratio of every two modes measured together, with intervals."""
    modes = c.paired
    rows = []
    for a in modes:
        cells = [a]
        for b in modes:
            r = c.matrix.get((a, b))
            cells.append("1" if a == b else "-" if r is None else r.cell())
        rows.append(cells)
    return TextTable(
        title=(
            "Step time, row / column (95 % bootstrap interval over epochs, repeats and pairs; "
            "below 1: the row mode is faster)"
        ),
        headers=["mode", *modes],
        rows=rows,
        right=set(range(1, len(modes) + 1)),
        notes=[
            "~ no clear difference: the interval crosses 1; - never measured in the same pair",
        ],
    )


def break_even_table(c: Comparison) -> TextTable:
    """Per compiled mode: break-even against the eager reference, and did this sweep get there."""
    cached = any(b.cached for b in c.break_even)
    headers = ["mode", "against", "pairs", "break-even\nsteps", "break-even\nwall time"]
    headers += ["cold\nsteps", "warm\nsteps"] if cached else []
    headers += ["steps\ntrained", "paid back"]
    rows = []
    for b in c.break_even:
        seconds = b.seconds
        trained = "-" if b.trained_steps is None else f"~{b.trained_steps:,.0f}"
        paid = "-" if not b.known else f"{b.paid} of {b.known}"
        wall = "-" if seconds is None else format_seconds(seconds)
        row = [b.mode, b.reference, str(b.n_units), format_break_even(b.steps), wall]
        if cached:
            row += [_cell(b.cold_first_step_s, b.cold_steps)]
            row += [_cell(b.warm_first_step_s, b.warm_steps)]
        rows.append([*row, trained, paid])
    return TextTable(
        title="Break-even against the eager reference (medians over the pairs with both)",
        headers=headers,
        rows=rows,
        right=set(range(2, len(headers))),
        notes=[
            "break-even: steps after which the mode's extra time to first step is paid back by "
            "its faster steps, (mode.first_step_s - eager.first_step_s) / "
            "((eager.step_ms - mode.step_ms) / 1000); never: not faster per step; "
            "paid back: measurements whose train/steps reached their own break-even",
            *(
                [
                    "cold / warm: the same with the mode's compile as it is with an empty "
                    "compile cache (a new architecture) and with a warm one (your next run of "
                    "an architecture it has seen); - not measured"
                ]
                if cached
                else []
            ),
        ],
    )


def _cell(first_step_s: float | None, steps: float | None) -> str:
    """A cold or warm break-even cell: ``-`` when the runs do not tell it (no first step)."""
    return "-" if first_step_s is None else format_break_even(steps)


def architectures_table(c: Comparison) -> TextTable:
    """Per architecture: each mode's median step time, the fastest, the metric spread."""
    modes = c.paired
    short = short_metric(c.metric)
    headers = ["arch", "trials", *(f"{m}\nms/step" for m in modes), "fastest"]
    headers.append(f"{short}\nbest - worst")
    rows = []
    for a in c.architectures:
        values = list(a.metric.values())
        spread = max(values) - min(values) if len(values) > 1 else None
        rows.append(
            [a.arch_hash[:8] + ("*" if a.cold_start else ""), trial_ranges(a.trials)]
            + [fmt(a.step_ms.get(m), ".3g") for m in modes]
            + [a.fastest, fmt(spread, ".3g")]
        )
    notes = [f"{short} best - worst: how far apart the modes' {c.metric} ended (same trial)"]
    if any(a.cold_start for a in c.architectures):
        notes.append(
            "* includes a worker's first trial: cold caches and lazy framework set-up in its "
            "time to first step"
        )
    return TextTable(
        title="Per architecture (medians over its paired measurements)",
        headers=headers,
        rows=rows,
        right=set(range(2, len(headers))) - {len(headers) - 2},
        notes=notes,
    )


def importance_table(importances: Mapping[str, float], note: str | None) -> TextTable:
    rows = [[k, fmt(v, ".3f")] for k, v in importances.items()]
    return TextTable(
        title="Parameter importance",
        headers=["param", "importance"],
        rows=rows,
        right={1},
        notes=[note] if note else ["Optuna PED-ANOVA; importances sum to 1"],
    )


def objective_importance_table(
    by_objective: Sequence[tuple[Objective, Mapping[str, float], str | None]],
) -> TextTable:
    """Importances per objective: one column each, params ordered by the first objective."""
    names: dict[str, None] = {}
    for _, imp, _ in by_objective:
        names.update(dict.fromkeys(imp))
    first = by_objective[0][1] if by_objective else {}
    ordered = sorted(names, key=lambda n: (-first.get(n, -1.0), n))
    rows = [
        [n, *(fmt(imp[n], ".3f") if n in imp else "-" for _, imp, _ in by_objective)]
        for n in ordered
    ]
    notes = ["Optuna PED-ANOVA per objective (target = that objective); each column sums to 1"]
    notes += [f"{o.metric}: {note}" for o, _, note in by_objective if note]
    return TextTable(
        title="Parameter importance, per objective",
        headers=["param", *(_objective_header(o) for o, _, _ in by_objective)],
        rows=rows,
        right=set(range(1, len(by_objective) + 1)),
        notes=notes,
    )


_WORD_CAP = 30  # the wrapping (last text) column is never given more than this as a minimum


def _wraps(table: TextTable, i: int) -> bool:
    """Only the last column, when it is text (params, notes), wraps; numbers never do."""
    return i == len(table.headers) - 1 and i not in table.right


def _needed(table: TextTable, i: int) -> int:
    """Characters column ``i`` needs so that none of its cells (or header lines) is cut."""
    header = table.headers[i].split("\n")
    if _wraps(table, i):
        words = [w for c in [*header, *(r[i] for r in table.rows)] for w in c.split()]
        return min(max((len(w) for w in words), default=1), _WORD_CAP)
    return max(len(line) for line in [*header, *(r[i] for r in table.rows)])


def _table_width(widths: Sequence[int]) -> int:
    """A rich table's width: cells, one space of padding each side, a border between."""
    return sum(widths) + 3 * len(widths) + 1


def column_groups(table: TextTable, width: int) -> list[list[int]]:
    """Columns split into tables that each fit ``width``, the first (key) column in each.

    A table as wide as the console is printed whole; a wider one continues in a second
    (third...) table repeating its key column, so no number is folded or cut off.
    """
    need = [_needed(table, i) for i in range(len(table.headers))]
    if len(need) <= 1 or _table_width(need) <= width:
        return [list(range(len(need)))]
    groups: list[list[int]] = [[0]]
    for i in range(1, len(need)):
        current = groups[-1]
        if len(current) > 1 and _table_width([need[j] for j in [*current, i]]) > width:
            groups.append([0])
        groups[-1].append(i)
    return groups


def _part(table: TextTable, columns: Sequence[int], title: str) -> Any:
    """One rich table of ``columns`` (cells are escaped: params hold ``[``)."""
    from rich.markup import escape
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for i in columns:
        wraps = _wraps(table, i)
        out.add_column(
            escape(table.headers[i]),
            justify="right" if i in table.right else "left",
            no_wrap=not wraps,
            overflow="fold",
            min_width=None if wraps else _needed(table, i),
        )
    for row in table.rows:
        out.add_row(*(escape(row[i]) for i in columns))
    return out


class _Fitted:
    """A :class:`TextTable` laid out for the console it is printed on (see column_groups)."""

    def __init__(self, table: TextTable) -> None:
        self.table = table

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.text import Text

        groups = column_groups(self.table, options.max_width)
        for k, columns in enumerate(groups):
            title = self.table.title if k == 0 else f"{self.table.title} (continued)"
            yield _part(self.table, columns, title)
        for note in self.table.notes:
            yield Text(note, style="dim")


def to_rich(table: TextTable) -> Any:
    """A rich renderable: the table (split to fit the console's width), then its notes."""
    return _Fitted(table)


def to_markdown(table: TextTable) -> str:
    """A GitHub-flavoured markdown table, its title in italics above and its notes below."""

    def cell(text: str) -> str:
        return text.replace("\n", " ").replace("|", "\\|")

    def note(text: str) -> str:
        return "\\" + text if text.startswith(("*", "-", "+", "#")) else text

    lines = [f"_{table.title}_", ""]
    if not table.rows:
        lines.append("(nothing to show)")
    else:
        lines.append("| " + " | ".join(cell(h) for h in table.headers) + " |")
        lines.append(
            "|"
            + "|".join("---:" if i in table.right else "---" for i in range(len(table.headers)))
            + "|"
        )
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    for n in table.notes:  # one paragraph each
        lines += ["", note(n)]
    return "\n".join(lines).rstrip() + "\n\n"
