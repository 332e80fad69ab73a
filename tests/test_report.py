"""`protolab report` on a real paired sweep (Lightning + Keras), and its arithmetic by hand.

One sweep for the whole module (it trains real models on both backends); every check reads
the same stores the way a user's client would, and recomputes the comparison independently
from the MLflow runs rather than trusting the report's own code.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from protolab.cli import app
from protolab.report import (
    FRONT_PLOT,
    PLOTS,
    SIZE_PX,
    RunRecord,
    TrialRecord,
    break_even_steps,
    compare_modes,
    format_break_even,
    pareto_front,
    run_report,
    split_by_version,
)

pytestmark = pytest.mark.slow
runner = CliRunner()

SCRIPT = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    width = space.int("width", 8, 32, log=True)
    act = space.choice("act", ["relu", "tanh"])
    return pl.Arch(L.Flatten(), L.Dense(width, activation=act), L.Dense(10))
"""

PAIRED_CONFIG = """\
experiment: exp.py
backends: [lightning, keras]
study: {name: tiny, n_trials: 3, sampler: random, pruner: none}
train: {epochs: 2, batch_size: 128, lr: 0.005}
hardware: {accelerator: cpu}
"""


# -- the arithmetic, on hand numbers ---------------------------------------------------------


def test_break_even_when_static_steps_faster() -> None:
    # static starts 4 s later and saves 2 ms per step: 4 / 0.002 = 2000 steps
    assert break_even_steps(1.0, 5.0, 3.0, 1.0) == pytest.approx(2000.0)
    assert format_break_even(2000.0) == "2,000"
    assert format_break_even(1999.2) == "2,000"  # the step at which it has paid back


def test_break_even_never_when_static_steps_slower() -> None:
    assert break_even_steps(1.0, 5.0, 1.0, 2.0) is None
    assert break_even_steps(1.0, 5.0, 2.0, 2.0) is None  # same speed: never recovered
    assert break_even_steps(5.0, 1.0, 1.0, 2.0) is None  # starts sooner, but slower per step
    assert format_break_even(None) == "never"


def test_break_even_zero_when_static_also_starts_sooner() -> None:
    assert break_even_steps(5.0, 1.0, 3.0, 1.0) == 0.0
    assert break_even_steps(2.0, 2.0, 3.0, 1.0) == 0.0
    assert format_break_even(0.0) == "0"


def _record(
    trial: int, backend: str, family: str, ms: float, first_s: float, **kw: Any
) -> RunRecord:
    metrics = {"time/step_ms": ms, "time/first_step_s": first_s, "train/steps": 100.0}
    return RunRecord(f"r{trial}{backend}", f"t{trial}-{backend}", trial, backend, family,
                     "COMPLETE", f"s/t{trial}", "a", metrics=metrics, **kw)  # fmt: skip


def test_a_third_mode_keeps_every_comparison() -> None:
    """Three modes in each pair: all three compare (the old rule kept exactly one per family)."""
    runs = [
        r
        for t, (d, s1, s2) in enumerate([(2.0, 1.0, 4.0), (3.0, 1.0, 6.0), (1.0, 2.0, 2.0)])
        for r in (
            _record(t, "d", "dynamic", d, 0.0, eager=True),
            _record(t, "s1", "static", s1, 1.0 + t),
            _record(t, "s2", "static", s2, 0.5),
        )
    ]
    c = compare_modes(runs, "val/acc", n_boot=200)
    assert c.paired == ["d", "s1", "s2"] and len(c.units) == 3
    assert c.matrix[("s1", "d")].value == pytest.approx((0.5 * (1 / 3) * 2.0) ** (1 / 3))
    assert c.matrix[("s2", "d")].value == pytest.approx((2.0 * 2.0 * 2.0) ** (1 / 3))
    assert c.headline is not None
    # the fastest static mode per pair: s1, s1, then s1 and s2 tie at 2 ms (first by name)
    assert c.headline.winners == {"dynamic": {"d": 3}, "static": {"s1": 3}}
    assert c.headline.ratio.value == pytest.approx(c.matrix[("s1", "d")].value)
    s1, s2 = c.break_even
    assert (s1.mode, s1.reference, s2.mode) == ("s1", "d", "s2")
    # s1, medians over the pairs: 2 ms (d) and 1 ms, first steps 0 s and 2 s -> 2,000 steps;
    # each pair on its own: 1 / 0.001, 2 / 0.002, never (slower in the third)
    assert s1.steps == pytest.approx(2000.0)
    assert s1.per_unit == (pytest.approx(1000.0), pytest.approx(1000.0), None)
    assert (s1.paid, s1.known) == (0, 3)
    assert s1.text.endswith("against d: compile never paid back in this sweep")
    assert s2.steps is None and "never pays back against d" in s2.text


def test_pareto_front_both_directions() -> None:
    steps = [1.0, 2.0, 3.0, 2.5]
    acc = [0.5, 0.8, 0.9, 0.7]  # (2.5, 0.7) is beaten by (2.0, 0.8)
    assert pareto_front(steps, acc, maximize=True) == [True, True, True, False]
    rmse = [0.5, 0.4, 0.6, 0.3]  # lower is better: (3.0, 0.6) is beaten by all
    assert pareto_front(steps, rmse, maximize=False) == [True, True, False, True]


# -- a real paired sweep ---------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    root: Path
    output: str  # what `protolab report tiny` printed
    out_dir: Path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """Sweep 3 paired trials once, then `protolab report tiny`; cwd and env are restored."""
    root = tmp_path_factory.mktemp("report")
    (root / "exp.py").write_text(SCRIPT)
    (root / "cfg.yaml").write_text(PAIRED_CONFIG)
    with pytest.MonkeyPatch.context() as mp:  # undone on exit, even when the sweep fails
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        swept = runner.invoke(app, ["sweep", "cfg.yaml", "study.n_trials=3"])
        assert swept.exit_code == 0, swept.output + repr(swept.exception)
        reported = runner.invoke(app, ["report", "tiny"])
        assert reported.exit_code == 0, reported.output + repr(reported.exception)
    yield Project(root, reported.stdout, root / "reports" / "tiny")


def _client(root: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def _report_json(project: Project | Edited) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.out_dir / "report.json").read_text())
    return data


def _expected_pairs(root: Path) -> dict[int, dict[str, Any]]:
    """The comparison recomputed straight from the MLflow child runs, formula written out."""
    client = _client(root)
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=100)
    by_pair: dict[str, dict[str, Any]] = {}
    for r in runs:
        if "protolab.pair" in r.data.tags:
            by_pair.setdefault(r.data.tags["protolab.pair"], {})[r.data.tags["protolab.family"]] = r

    def step_ms(run: Any) -> float:  # per-epoch steady medians; the run's median before them
        history = client.get_metric_history(run.info.run_id, "time/epoch_step_ms")
        return statistics.median([m.value for m in history] or [run.data.metrics["time/step_ms"]])

    out: dict[int, dict[str, Any]] = {}
    for members in by_pair.values():
        d, s = members["dynamic"], members["static"]
        d_ms, s_ms = step_ms(d), step_ms(s)
        extra = s.data.metrics["time/first_step_s"] - d.data.metrics["time/first_step_s"]
        saved = (d_ms - s_ms) / 1000
        if extra <= 0 and saved >= 0:
            steps: float | None = 0.0
        elif saved > 0:
            steps = extra / saved
        else:
            steps = None
        out[int(d.data.tags["protolab.trial"])] = {
            "names": (d.data.tags["protolab.backend"], s.data.tags["protolab.backend"]),
            "step_ms": (d_ms, s_ms),
            "first_step_s": (
                d.data.metrics["time/first_step_s"],
                s.data.metrics["time/first_step_s"],
            ),
            "break_even_steps": steps,
            "metric": (d.data.metrics["val/acc"], s.data.metrics["val/acc"]),
        }
    return out


def test_report_numbers_equal_those_recomputed_from_mlflow(project: Project) -> None:
    report = _report_json(project)
    assert report["study"] == "tiny" and report["metric"] == "val/acc"
    assert report["direction"] == "maximize"
    assert report["trials"] == {"complete": 3, "pruned": 0, "failed": 0, "total": 3}
    comparison = report["comparison"]
    expected = _expected_pairs(project.root)
    assert sorted(expected) == [0, 1, 2]
    dyn, sta = expected[0]["names"]
    assert comparison["paired_modes"] == [dyn, sta]
    got = {m["trial"]: m for m in comparison["measurements"]}
    assert sorted(got) == [0, 1, 2]
    for trial, want in expected.items():
        runs = got[trial]["runs"]
        for i, name in enumerate((dyn, sta)):
            assert runs[name]["step_ms"] == pytest.approx(want["step_ms"][i]), (trial, name)
            assert runs[name]["first_step_s"] == pytest.approx(want["first_step_s"][i])
            assert runs[name]["metric"] == pytest.approx(want["metric"][i])

    # static/dynamic step time: the geometric mean over the pairs, with its interval
    logs = [math.log(w["step_ms"][1] / w["step_ms"][0]) for w in expected.values()]
    (cell,) = [c for c in comparison["matrix"] if (c["row"], c["col"]) == (sta, dyn)]
    assert cell["ratio"] == pytest.approx(math.exp(sum(logs) / 3))
    assert cell["n_pairs"] == 3 and cell["low"] <= cell["ratio"] <= cell["high"]
    head = comparison["headline"]
    assert head["best"] == {"dynamic": {dyn: 3}, "static": {sta: 3}}
    assert head["ratio"] == pytest.approx(cell["ratio"])
    assert head["text"] in " ".join(project.output.split())

    # break-even of the static mode against the dynamic (eager) one: each pair's own, and
    # the one of the median inputs, which the sentence and the plot show
    (b,) = comparison["break_even"]
    assert (b["mode"], b["reference"]) == (sta, dyn)
    in_order = [expected[t] for t in sorted(expected)]  # measurements are in trial order
    for mine, want in zip(b["per_measurement_steps"], in_order, strict=True):
        if want["break_even_steps"] is None:
            assert mine is None
        else:
            assert mine == pytest.approx(want["break_even_steps"])
    inputs = (("first_step_s", 0), ("first_step_s", 1), ("step_ms", 0), ("step_ms", 1))
    medians = [statistics.median(w[k][i] for w in expected.values()) for k, i in inputs]
    want_steps = break_even_steps(*medians)
    assert b["steps"] == (None if want_steps is None else pytest.approx(want_steps))
    assert b["text"] in " ".join(project.output.split())

    # One row per architecture; each trial's pair lands in its arch's row.
    archs = comparison["architectures"]
    assert sorted(t for a in archs for t in a["trials"]) == [0, 1, 2]
    for a in archs:
        if a["n_measurements"] == 1:
            (t,) = a["trials"]
            assert a["step_ms"] == {dyn: pytest.approx(expected[t]["step_ms"][0]),
                                    sta: pytest.approx(expected[t]["step_ms"][1])}  # fmt: skip


def test_best_trials_history_and_pareto_follow_the_study(project: Project) -> None:
    import optuna

    from protolab._stores import open_storage

    study = optuna.load_study(
        study_name="tiny", storage=open_storage(str(project.root / "mlruns/optuna.journal"))
    )
    report = _report_json(project)
    best = report["best_trials"]
    assert best[0]["trial"] == study.best_trial.number
    assert [b["value"] for b in best] == sorted(
        (t.value for t in study.trials if t.value is not None), reverse=True
    )
    for row in best:
        assert row["params"] == study.trials[row["trial"]].params
        assert set(row["backends"]) == {"lightning", "keras"}
    assert [h["trial"] for h in report["history"]] == [0, 1, 2]
    assert report["history"][-1]["best_so_far"] == pytest.approx(study.best_value)
    for backend in ("lightning", "keras"):
        points = report["pareto"][backend]
        assert len(points) == 3 and any(p["on_front"] for p in points)
    assert set(report["importance"]["values"]) == {"width", "act"}
    assert sum(report["importance"]["values"].values()) == pytest.approx(1.0)
    assert "Best trials" in project.output and "Parameter importance" in project.output


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_every_plot_is_a_png_of_the_promised_size(project: Project) -> None:
    import matplotlib.image

    assert SIZE_PX == (1000, 600)
    for name in PLOTS:
        path = project.out_dir / name
        assert path.is_file(), name
        assert _png_size(path) == SIZE_PX, name
    pixels = matplotlib.image.imread(project.out_dir / "pareto.png")
    assert pixels.shape[:2] == (600, 1000)
    md = (project.out_dir / "report.md").read_text()
    for name in PLOTS:
        assert f"]({name})" in md
    assert _report_json(project)["files"] == ["report.md", "report.json", *PLOTS]


def test_files_are_logged_to_the_parent_run(project: Project) -> None:
    client = _client(project.root)
    report = _report_json(project)
    parent = client.get_run(report["parent_run_id"])
    assert parent.data.tags["protolab.role"] == "parent"
    logged = {Path(f.path).name for f in client.list_artifacts(parent.info.run_id, "report")}
    assert logged == set(report["files"])
    copy = client.download_artifacts(parent.info.run_id, "report/report.json")
    assert json.loads(Path(copy).read_text())["comparison"] == report["comparison"]


def test_a_config_target_and_out_dir(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = project.root / "elsewhere"
    assert run_report(str(project.root / "cfg.yaml"), out_dir=out) == out
    again = json.loads((out / "report.json").read_text())
    assert again["comparison"] == _report_json(project)["comparison"]


def test_an_unknown_study_exits_2_naming_the_studies(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = runner.invoke(app, ["report", "nope"])
    assert result.exit_code == 2
    assert "unknown study 'nope'" in result.stderr and "studies there: tiny" in result.stderr
    assert "Traceback" not in result.output
    assert not (project.root / "reports" / "nope").exists()


def test_an_empty_directory_creates_no_store(workdir: Path) -> None:
    result = runner.invoke(app, ["report", "tiny"])
    assert result.exit_code == 2 and "no study store exists there yet" in result.stderr
    assert list(workdir.iterdir()) == []


def test_a_single_script_version_shows_no_version_section(project: Project) -> None:
    split = _report_json(project)["by_script_version"]
    assert split["shown"] is False and split["changes"] == []
    assert [v["trials"]["complete"] for v in split["versions"]] == [3]
    assert "By script version" not in project.output
    assert "By script version" not in (project.out_dir / "report.md").read_text()


# -- the script edited between two sweeps ----------------------------------------------------

LIGHTNING_CONFIG = """\
experiment: exp.py
backends: [lightning]
study: {name: edited, n_trials: 2, sampler: random, pruner: none}
train: {epochs: 2, batch_size: 128, lr: 0.005}
hardware: {accelerator: cpu}
"""


@dataclass(frozen=True)
class Edited:
    root: Path
    scripts: tuple[str, str]  # sha256[:12] of the script before and after the edit
    second_sweep_stderr: str
    output: str  # what `protolab report edited` printed
    out_dir: Path


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edited]:
    """Sweep 2 trials, widen the script's width range, top the study up to 4, report."""
    root = tmp_path_factory.mktemp("edited")
    script = root / "exp.py"
    script.write_text(SCRIPT)
    (root / "cfg.yaml").write_text(LIGHTNING_CONFIG)
    before = hashlib.sha256(script.read_bytes()).hexdigest()[:12]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        first = runner.invoke(app, ["sweep", "cfg.yaml"])
        assert first.exit_code == 0, first.output + repr(first.exception)
        assert "changed since" not in first.stderr
        script.write_text(SCRIPT.replace('"width", 8, 32', '"width", 48, 96'))
        second = runner.invoke(app, ["sweep", "cfg.yaml", "study.n_trials=4"])
        assert second.exit_code == 0, second.output + repr(second.exception)
        reported = runner.invoke(app, ["report", "edited"])
        assert reported.exit_code == 0, reported.output + repr(reported.exception)
    after = hashlib.sha256(script.read_bytes()).hexdigest()[:12]
    yield Edited(root, (before, after), second.stderr, reported.stdout, root / "reports/edited")


def _runs_by_script(root: Path) -> dict[str, list[Any]]:
    """The study's child runs from MLflow, grouped by their ``protolab.script_hash`` tag."""
    client = _client(root)
    exp = client.get_experiment_by_name("edited")
    assert exp is not None
    groups: dict[str, list[Any]] = {}
    for r in client.search_runs([exp.experiment_id], max_results=100):
        if r.data.tags.get("protolab.trial", "").isdigit():
            groups.setdefault(r.data.tags["protolab.script_hash"], []).append(r)
    return groups


def test_the_second_sweep_says_the_script_changed(edited: Edited) -> None:
    text = " ".join(edited.second_sweep_stderr.split())  # rich may wrap the note
    before, after = edited.scripts
    assert "the experiment script changed since this study's earlier trials" in text
    assert f"{before} -> {after}" in text


def test_report_splits_trials_by_script_version(edited: Edited) -> None:
    split = _report_json(edited)["by_script_version"]
    groups = _runs_by_script(edited.root)
    before, after = edited.scripts
    assert set(groups) == {before, after}
    # `study.n_trials=4` only tops the study up: not a config version of its own
    assert split["split_by"] == "script" and split["shown"] is True
    assert split["notes"] == [] and split["pending_script_hash"] is None

    v1, v2 = split["versions"]
    assert (v1["version"], v2["version"]) == ("v1", "v2")
    assert (v1["script_hash"], v2["script_hash"]) == (before, after)
    for v in (v1, v2):
        runs = groups[v["script_hash"]]
        assert v["label"] == v["script_hash"][:8]
        assert v["config_hashes"] == [runs[0].data.tags["protolab.config_hash"]]
        assert v["config_changes"] == []
        assert v["trials"] == {"complete": 2, "pruned": 0, "failed": 0, "running": 0, "total": 2}
        assert v["trial_numbers"] == sorted(int(r.data.tags["protolab.trial"]) for r in runs)
        accs = [r.data.metrics["val/acc"] for r in runs]
        assert v["best_value"] == pytest.approx(max(accs))
        assert v["median_value"] == pytest.approx(statistics.median(accs))
        steps = [r.data.metrics["time/step_ms"] for r in runs]
        assert v["step_ms"] == {"lightning": pytest.approx(statistics.median(steps))}
    assert v1["trial_numbers"] == [0, 1] and v2["trial_numbers"] == [2, 3]
    assert v1["delta_best"] is None
    assert v2["delta_best"] == pytest.approx(v2["best_value"] - v1["best_value"])
    # the edit widened the layer: version 2's trials sampled widths in its new range
    for r in groups[after]:
        assert 48 <= int(r.data.params["width"]) <= 96

    assert split["changes"] == [{"trial": 2, "version": "v2", "label": v2["label"]}]
    history = _report_json(edited)["history"]
    assert [(h["trial"], h["version"]) for h in history] == [
        (0, "v1"),
        (1, "v1"),
        (2, "v2"),
        (3, "v2"),
    ]


def test_version_section_in_terminal_markdown_and_plot(edited: Edited) -> None:
    split = _report_json(edited)["by_script_version"]
    labels = [v["label"] for v in split["versions"]]
    assert "By script version (2 versions" in edited.output
    assert "history.png marks the script version changes: v2 from t2" in edited.output
    md = (edited.out_dir / "report.md").read_text()
    assert "## By script version" in md
    rows = [line for line in md.splitlines() if line.startswith(("| v1 ", "| v2 "))]
    assert len(rows) == 2
    for row, label in zip(rows, labels, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == label and cells[3:6] == ["2", "0", "0"]
    assert _png_size(edited.out_dir / "history.png") == SIZE_PX


def _trial(n: int, script: str, value: float | None, state: str = "COMPLETE") -> TrialRecord:
    return TrialRecord(n, state, value, {}, script_hash=script, config_hash="c" * 12)


def test_versions_by_hand_undo_unrecorded_and_pending() -> None:
    a, b = "a" * 12, "b" * 12
    trials = [
        _trial(0, "", 0.9),  # before script hashes were recorded
        _trial(1, a, 0.5),
        _trial(2, a, 0.3),
        _trial(3, b, 0.4),
        _trial(4, b, None, "FAIL"),
        _trial(5, a, 0.2),  # the edit undone: version a again
        _trial(6, b, None, "PRUNED"),
    ]
    runs = [
        RunRecord(f"r{n}", f"t{n}-lightning", n, "lightning", "dynamic", "COMPLETE", "", "x",
                  metrics={"time/step_ms": ms})
        for n, ms in ((1, 1.0), (2, 3.0), (3, 2.0), (5, 5.0))
    ]  # fmt: skip
    split = split_by_version(trials, runs, ["lightning"], maximize=False, script_hashes=[a, b])
    assert split.split_by == "script" and split.shown and split.pending_script is None
    unrecorded, va, vb = split.versions
    assert (unrecorded.label, va.label, vb.label) == ("unrecorded", "aaaaaaaa", "bbbbbbbb")
    assert va.trials == (1, 2, 5) and (va.complete, va.best_value, va.best_trial) == (3, 0.2, 5)
    assert va.median_value == pytest.approx(0.3) and va.step_ms == {"lightning": 3.0}
    assert va.delta_best is None  # nothing recorded before it
    assert (vb.complete, vb.pruned, vb.failed, vb.best_value) == (1, 1, 1, 0.4)
    assert vb.delta_best == pytest.approx(0.4 - 0.2)  # minimize: positive is worse
    assert [(c.trial, c.version.name) for c in split.changes] == [
        (1, "v2"),
        (3, "v3"),
        (5, "v2"),
        (6, "v3"),
    ]

    # the latest edit has not run yet: shown, with a note naming it
    c = "c" * 12
    pending = split_by_version(trials[1:3], [], ["lightning"], False, script_hashes=[a, c])
    assert pending.shown and pending.pending_script == c
    assert any("cccccccc" in note and "no trial yet" in note for note in pending.notes)

    # a config change alone is a version too, labelled script/config; the sweep's budget
    # (study.n_trials) is not, and an unreadable config counts as a version of its own
    c1, c2, c3, c4 = "1" * 12, "2" * 12, "3" * 12, "4" * 12
    trials = [
        replace(_trial(n, a, 0.5 + n / 10), config_hash=h)
        for n, h in enumerate((c1, c1, c2, c3, c4))
    ]
    docs: dict[str, dict[str, Any] | None] = {
        c1: {"study": {"n_trials": 2, "seed": 0}, "train": {"epochs": 2}},
        c2: {"study": {"n_trials": 4, "seed": 0}, "train": {"epochs": 2}},
        c3: {"study": {"n_trials": 5, "seed": 0}, "train": {"epochs": 5}},
        c4: None,
    }
    by_config = split_by_version(trials, [], [], maximize=True, configs=docs)
    assert by_config.split_by == "script+config" and by_config.shown
    v1, v2, v3 = by_config.versions
    assert (v1.label, v2.label, v3.label) == (
        "aaaaaaaa/11111111",
        "aaaaaaaa/33333333",
        "aaaaaaaa/44444444",
    )
    assert v1.trials == (0, 1, 2) and v1.config_hashes == (c1, c2)
    assert v2.config_changes == ("train.epochs 2 -> 5",) and v3.config_changes == ()
    assert v2.delta_best == pytest.approx(0.8 - 0.7)
    assert "v2 config: train.epochs 2 -> 5" in by_config.notes
    only_budget = split_by_version(trials[:3], [], [], maximize=True, configs=docs)
    assert only_budget.split_by == "script" and not only_budget.shown


# -- a multi-objective study with a constraint ----------------------------------------------

MULTI_SCRIPT = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    width = space.choice("width", [8, 64])  # 64*w + w + 10*w + 10 params: 610 or 4810
    act = space.choice("act", ["relu", "tanh"])
    return pl.Arch(L.Flatten(), L.Dense(width, activation=act), L.Dense(10))
"""

MULTI_CONFIG = """\
experiment: exp.py
backends: [lightning]
study:
  name: multi
  n_trials: 4
  sampler: random
  pruner: none
  objectives: [{metric: val/acc}, {metric: time/step_ms, direction: minimize}]
  constraints: ["model/params <= 2000"]
train: {epochs: 1, batch_size: 128, lr: 0.005}
hardware: {accelerator: cpu}
"""


@dataclass(frozen=True)
class Multi:
    root: Path
    output: str  # what `protolab report multi` printed (stdout and stderr)
    out_dir: Path


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Multi]:
    """Sweep 4 trials over two objectives and a params constraint, then report."""
    root = tmp_path_factory.mktemp("multi")
    (root / "exp.py").write_text(MULTI_SCRIPT)
    (root / "cfg.yaml").write_text(MULTI_CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        swept = runner.invoke(app, ["sweep", "cfg.yaml"])
        assert swept.exit_code == 0, swept.output + repr(swept.exception)
        reported = runner.invoke(app, ["report", "multi"])
        assert reported.exit_code == 0, reported.output + repr(reported.exception)
    yield Multi(root, reported.output, root / "reports" / "multi")


def _multi_study(root: Path) -> Any:
    import optuna

    from protolab._stores import open_storage

    return optuna.load_study(
        study_name="multi", storage=open_storage(str(root / "mlruns/optuna.journal"))
    )


def test_multi_objective_report_follows_optuna(multi: Multi) -> None:
    assert "Traceback" not in multi.output and "RuntimeError" not in multi.output
    study = _multi_study(multi.root)
    report = json.loads((multi.out_dir / "report.json").read_text())
    assert report["objectives"] == [
        {"metric": "val/acc", "direction": "maximize"},
        {"metric": "time/step_ms", "direction": "minimize"},
    ]
    assert (report["metric"], report["direction"]) == ("val/acc", "maximize")
    assert report["trials"] == {"complete": 4, "pruned": 0, "failed": 0, "total": 4}

    # The sampler's seed is fixed: its 4 draws include both widths, so the constraint
    # excludes some trials but not all (otherwise this study would test nothing).
    infeasible = sorted(
        t.number for t in study.trials if any(v > 0 for v in t.constraints.values())
    )
    assert 0 < len(infeasible) < 4, [t.params for t in study.trials]
    for t in study.trials:
        assert (t.number in infeasible) == (t.params["width"] == 64)
    assert report["constraints"] == {
        "names": ["model/params <= 2000"],
        "infeasible_trials": infeasible,
    }

    front = study.best_trials  # the feasible Pareto front, read with Optuna directly
    assert [p["trial"] for p in report["pareto_front"]] == [t.number for t in front]
    assert front and not set(infeasible) & {t.number for t in front}
    by_number = {t.number: t for t in front}
    for p in report["pareto_front"]:
        assert p["feasible"] is True
        assert p["values"] == pytest.approx(by_number[p["trial"]].values)

    # "Best trials" is the front, best first by the first objective (val/acc, maximised).
    best = report["best_trials"]
    assert sorted(b["trial"] for b in best) == sorted(by_number)
    assert [b["value"] for b in best] == sorted((t.values[0] for t in front), reverse=True)
    for b in best:
        assert b["values"] == pytest.approx(by_number[b["trial"]].values)
        assert b["params"] == by_number[b["trial"]].params
        assert b["backends"]["lightning"]["step_ms"] == pytest.approx(b["values"][1])

    # Infeasible trials stay visible elsewhere, marked, and never count as the best.
    history = {h["trial"]: h for h in report["history"]}
    assert sorted(history) == [0, 1, 2, 3]
    assert [n for n, h in history.items() if not h["feasible"]] == infeasible
    feasible_accs = [t.values[0] for t in study.trials if t.number not in infeasible]
    assert report["history"][-1]["best_so_far"] == pytest.approx(max(feasible_accs))
    assert [p["trial"] for p in report["pareto"]["lightning"] if not p["feasible"]] == infeasible
    assert not any(p["on_front"] for p in report["pareto"]["lightning"] if not p["feasible"])

    by_objective = report["importance"]["by_objective"]
    assert [(i["metric"], i["direction"]) for i in by_objective] == [
        ("val/acc", "maximize"),
        ("time/step_ms", "minimize"),
    ]
    for i in by_objective:
        if i["values"]:
            assert set(i["values"]) <= {"width", "act"}
            assert sum(i["values"].values()) == pytest.approx(1.0)
        else:
            assert i["note"]

    text = " ".join(multi.output.split())  # rich may wrap
    assert "val/acc (maximize), time/step_ms (minimize) subject to model/params <= 2000" in text
    assert f"({len(infeasible)} infeasible)" in text
    assert "Pareto front (" in text and "Parameter importance, per objective" in text


def test_multi_objective_front_png_and_markdown(multi: Multi) -> None:
    import matplotlib.image

    report = json.loads((multi.out_dir / "report.json").read_text())
    assert report["files"][:3] == ["report.md", "report.json", FRONT_PLOT]
    for name in report["files"][2:]:
        assert _png_size(multi.out_dir / name) == SIZE_PX, name
    pixels = matplotlib.image.imread(multi.out_dir / FRONT_PLOT)
    assert pixels.shape[:2] == (600, 1000)
    assert {"history.png", "pareto.png"} <= set(report["files"])
    assert "step_scatter.png" not in report["files"]  # one backend: no pairs
    md = (multi.out_dir / "report.md").read_text()
    assert "## Pareto front" in md and f"]({FRONT_PLOT})" in md
    assert "## Best trials" not in md
    section = md.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| t")]
    assert rows[0] == "trial" and rows[1:] == [f"t{b['trial']}" for b in report["best_trials"]]
    n_bad = len(report["constraints"]["infeasible_trials"])
    assert f"{n_bad} of 4 complete trials infeasible" in section
