"""`protolab report`'s watch section, on runs written by the real `protolab watch` code.

Two stores. The first is written in-process by the watch session's own classes (its
``Session``: loading the files, building the Arch, showing and logging each rerun to MLflow)
with only the training replaced by numbers chosen here, so every expected value is known
exactly: two sessions, a script edit, a broken save, a config-only edit, a failed mode and an
edit undone. The second comes from a real sweep and a real ``protolab watch`` process that
trains, is edited on disk and is stopped with Ctrl-C. Both are reported through the CLI
(typer's CliRunner) and checked against numbers read straight from MLflow or written here,
never against the report's own code. Watch reruns must never show up as sweep trials.
"""

from __future__ import annotations

import json
import statistics
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from protolab._tags import ATTR, TAG
from protolab.cli import app
from tests.conftest import TINY_MLP

runner = CliRunner()

CONFIG = """\
experiment: exp.py
backends: [{backends}]
study: {{name: tiny, n_trials: {trials}, sampler: random, pruner: none}}
train: {{epochs: 2, batch_size: 64, lr: 0.01}}
hardware: {{accelerator: cpu, threads: 1}}
"""
SCRIPT = textwrap.dedent(TINY_MLP)
EDITED = SCRIPT.replace('["relu", "tanh"]', '["tanh", "relu"]')  # another script version
BROKEN = SCRIPT.replace("return pl.Arch(", "return 1 / 0 + pl.Arch(")
LR_EDIT = ("lr: 0.01", "lr: 0.002")  # a config-only edit: a version of its own


def _uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def _report(root: Path) -> tuple[dict[str, Any], str, str]:
    """`protolab report tiny` as a user runs it: report.json, report.md, the terminal text."""
    out = root / "out"
    args = ["report", "tiny", "--uri", _uri(root), "--out", str(out)]
    args += ["--storage", str(root / "mlruns" / "optuna.journal")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((out / "report.json").read_text())
    return report, (out / "report.md").read_text(), result.stdout


def _watch_runs(root: Path, session: str) -> dict[str, Any]:
    """Run name -> MLflow run, for one watch session's reruns (read as any client would)."""
    client = MlflowClient(_uri(root))
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{TAG.WATCH}` = '{session}'", max_results=500
    )
    return {r.info.run_name: r for r in runs if r.data.tags.get(TAG.ROLE) != "watch"}


# -- the sweep side: a study with two paired trials, written with the data contract's tags --


@dataclass
class Sweep:
    """An Optuna study and its MLflow parent and child runs, as a sweep leaves them."""

    root: Path
    client: MlflowClient = field(init=False)
    experiment_id: str = field(init=False)
    parent_id: str = field(init=False)

    def __post_init__(self) -> None:
        import optuna

        from protolab._stores import open_storage

        self.client = MlflowClient(_uri(self.root))
        self.experiment_id = self.client.create_experiment("tiny", tags={TAG.STUDY: "tiny"})
        parent = self.client.create_run(
            self.experiment_id, run_name="tiny", tags={TAG.ROLE: "parent", TAG.STUDY: "tiny"}
        )
        self.parent_id = parent.info.run_id
        storage = open_storage(str(self.root / "mlruns" / "optuna.journal"))
        self.study = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
        self.study.set_user_attr(ATTR.METRIC, "val/acc")

    def trial(self, width: int, acc: float, step_ms: dict[str, float]) -> None:
        import optuna

        dist = optuna.distributions.IntDistribution(8, 32)
        self.study.add_trial(
            optuna.trial.create_trial(
                params={"width": width}, distributions={"width": dist}, value=acc
            )
        )
        n = self.study.trials[-1].number
        for backend, family in (("lightning", "dynamic"), ("keras", "static")):
            tags = {
                TAG.STUDY: "tiny",
                TAG.TRIAL: str(n),
                TAG.BACKEND: backend,
                TAG.FAMILY: family,
                TAG.EAGER: str(family == "dynamic").lower(),
                TAG.PAIR: f"tiny/t{n}",
                TAG.ARCH_HASH: f"arch{n}",
                TAG.STATE: "COMPLETE",
            }
            run = self.client.create_run(self.experiment_id, run_name=f"t{n}-{backend}", tags=tags)
            ms = step_ms[backend]
            metrics = {"time/step_ms": ms, "time/first_step_s": 1.0, "val/acc": acc}
            self.client.log_batch(
                run.info.run_id,
                metrics=[Metric("time/epoch_step_ms", ms, 0, e) for e in range(3)]
                + [Metric(k, v, 0, 0) for k, v in metrics.items()],
                params=[Param("width", str(width))],
            )
            self.client.set_terminated(run.info.run_id, "FINISHED")


# -- the watch side: the real Session, with the training replaced by chosen numbers ----------


@dataclass(frozen=True)
class Out:
    """What one mode's short job "measured": its last epoch and the save -> first loss time."""

    loss: float
    acc: float
    first_s: float


# One entry per rerun, in order: mode -> Out (None: the mode failed). A rerun whose files do
# not load never reaches the modes, so it takes no entry.
PLAN_A: list[dict[str, Out | None]] = [
    {"lightning": Out(1.00, 0.50, 9.0), "keras": Out(1.10, 0.45, 12.0)},  # w1 v1 (start)
    {"lightning": Out(0.90, 0.56, 1.2), "keras": Out(1.00, 0.49, 2.5)},  # w2 v1 (same files)
    {"lightning": Out(0.70, 0.71, 1.0), "keras": None},  # w3 v2: the script edit
    # w4: the script is broken: nothing trains
    {"lightning": Out(0.60, 0.74, 1.1), "keras": Out(0.65, 0.73, 2.0)},  # w5 v3: lr 0.002
    {"lightning": Out(0.85, 0.58, 1.3), "keras": Out(0.98, 0.50, 2.2)},  # w6 v1: all undone
]
PLAN_B: list[dict[str, Out | None]] = [
    {"lightning": Out(0.80, 0.60, 5.0), "keras": Out(0.90, 0.55, 6.0)},  # w1, left running
]


def _fake_modes(plan: list[dict[str, Out | None]]) -> Any:
    """A stand-in for ``run_modes``: each call fills the rerun's modes from the next entry."""
    from protolab.backends import JobResult
    from protolab.watch._rerun import ModeRun

    queue = iter(plan)

    def run_modes(rerun: Any, job: Any, on_epoch: Any) -> None:
        for name, out in next(queue).items():
            if out is None:
                rerun.modes.append(ModeRun(name, error="RuntimeError: boom", traceback="tb"))
                continue
            epoch1 = {"train/loss": out.loss + 0.4, "val/loss": out.loss + 0.3, "val/acc": 0.1}
            last = {"train/loss": out.loss + 0.1, "val/loss": out.loss, "val/acc": out.acc}
            metrics = {**last, "time/step_ms": 2.0, "train/steps": 40.0}
            result = JobResult(metrics=metrics, history=[epoch1, last])
            rerun.modes.append(ModeRun(name, result=result, first_loss_s=out.first_s))
            on_epoch(name, 1, epoch1, out.first_s)

    return run_modes


def _session(root: Path, mp: pytest.MonkeyPatch, plan: list[dict[str, Out | None]]) -> Any:
    """A watch session started as ``protolab watch cfg.yaml`` starts it (frameworks skipped)."""
    from protolab.watch import _loop
    from protolab.watch._loop import Session, WatchOptions

    mp.setattr(_loop, "run_modes", _fake_modes(plan))
    mp.setattr(_loop, "_load_frameworks", lambda names: None)
    session = Session(WatchOptions(root / "cfg.yaml", [], {}, epochs=2))
    session.prepare()
    return session


@dataclass(frozen=True)
class Written:
    root: Path
    sweep: Sweep
    sessions: tuple[str, str]
    report: dict[str, Any]
    markdown: str
    text: str


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written]:
    root = tmp_path_factory.mktemp("watch_report")
    script, config = root / "exp.py", root / "cfg.yaml"
    script.write_text(SCRIPT)
    config.write_text(CONFIG.format(backends="lightning, keras", trials=2))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        (root / "mlruns").mkdir()
        sweep = Sweep(root)
        sweep.trial(16, 0.9, {"lightning": 3.0, "keras": 2.0})
        sweep.trial(24, 0.8, {"lightning": 4.0, "keras": 2.5})

        a = _session(root, mp, PLAN_A)
        a_name = a.tracker.session
        a.rerun(time.time(), "start")  # w1
        a.rerun(time.time(), "exp.py changed")  # w2: touched, same bytes: still v1
        script.write_text(EDITED)
        a.rerun(time.time(), "exp.py changed")  # w3
        script.write_text(BROKEN)
        a.rerun(time.time(), "exp.py changed")  # w4: fails to load
        script.write_text(EDITED)
        config.write_text(config.read_text().replace(*LR_EDIT))
        a.rerun(time.time(), "exp.py, cfg.yaml changed")  # w5
        script.write_text(SCRIPT)
        config.write_text(config.read_text().replace(LR_EDIT[1], LR_EDIT[0]))
        a.rerun(time.time(), "exp.py, cfg.yaml changed")  # w6: the edits undone
        a.close("FINISHED")
        time.sleep(1.1)  # session names are timestamped to the second
        b = _session(root, mp, PLAN_B)
        b.rerun(time.time(), "start")  # not closed: still watching when the report runs
        names = (a_name, b.tracker.session)
        report, markdown, text = _report(root)
    yield Written(root, sweep, names, report, markdown, text)


def _sessions(w: Written) -> dict[str, dict[str, Any]]:
    return {s["session"]: s for s in w.report["watch"]["sessions"]}


def _mode(version: dict[str, Any], backend: str) -> dict[str, Any]:
    mode: dict[str, Any] = version["backends"][backend]
    return mode


def test_each_session_gets_one_row_per_version_in_order_of_first_rerun(written: Written) -> None:
    a, b = written.sessions
    assert [s["session"] for s in written.report["watch"]["sessions"]] == [a, b]
    sa = _sessions(written)[a]
    runs = _watch_runs(written.root, a)
    hashes = {
        n: (runs[f"w{n}-lightning"].data.tags[TAG.SCRIPT_HASH],
            runs[f"w{n}-lightning"].data.tags[TAG.CONFIG_HASH])
        for n in (1, 3, 5)
    }  # fmt: skip
    assert hashes[1][0] != hashes[3][0] and hashes[3][0] == hashes[5][0]  # the script edit
    assert hashes[3][1] != hashes[5][1]  # the config edit
    assert sa["split_by"] == "script+config"  # the lr edit made a version of its own
    assert sa["metric"] == "val/acc" and sa["direction"] == "maximize"
    assert sa["backends"] == ["lightning", "keras"]  # the report's mode order: dynamic first
    assert sa["job"] == "epochs=2 steps=all" and sa["status"] == "FINISHED"
    assert sa["reruns"] == 6
    v1, v2, v3 = sa["versions"]
    assert [v["version"] for v in (v1, v2, v3)] == ["v1", "v2", "v3"]
    assert v1["rerun_numbers"] == [1, 2, 6]  # the undone edit is v1 again, not a v4
    assert (v2["rerun_numbers"], v3["rerun_numbers"]) == ([3], [5])
    for v, n in ((v1, 1), (v2, 3), (v3, 5)):
        script, config = hashes[n]
        assert (v["script_hash"], v["config_hash"]) == (script, config)
        assert v["label"] == f"{script[:8]}/{config[:8]}"
    assert v3["config_changes"] == ["train.lr 0.01 -> 0.002"]
    assert "v3 config: train.lr 0.01 -> 0.002" in sa["notes"]
    assert (v1["failed_runs"], v2["failed_runs"], v3["failed_runs"]) == (0, 1, 0)


def _expected(plan: list[dict[str, Out | None]], reruns: list[int], backend: str) -> list[Out]:
    """The outcomes this test wrote for ``backend`` in the given reruns (w4 took no entry)."""
    index = {1: 0, 2: 1, 3: 2, 5: 3, 6: 4}
    outs = [plan[index[n]][backend] for n in reruns]
    return [o for o in outs if o is not None]


def test_last_median_change_and_first_loss_per_mode(written: Written) -> None:
    sa = _sessions(written)[written.sessions[0]]
    v1, v2, v3 = sa["versions"]
    previous: dict[str, dict[str, float]] = {"lightning": {}, "keras": {}}
    for v in (v1, v2, v3):
        for backend in ("lightning", "keras"):
            outs = _expected(PLAN_A, v["rerun_numbers"], backend)
            mode = _mode(v, backend)
            loss, acc = mode["metrics"]["val/loss"], mode["metrics"]["val/acc"]
            if not outs:  # keras failed in v2: counted, no numbers, no change
                assert (mode["runs"], mode["failed"]) == (0, 1)
                assert loss == {"last": None, "median": None, "delta": None}
                assert acc == {"last": None, "median": None, "delta": None}
                continue
            assert mode["runs"] == len(outs) and mode["failed"] == 0
            # the last epoch's values (not epoch 1's), of the version's latest rerun
            assert loss["last"] == pytest.approx(outs[-1].loss)
            assert acc["last"] == pytest.approx(outs[-1].acc)
            assert loss["median"] == pytest.approx(statistics.median(o.loss for o in outs))
            assert acc["median"] == pytest.approx(statistics.median(o.acc for o in outs))
            before = previous[backend]
            for key, stat, now in (("loss", loss, outs[-1].loss), ("acc", acc, outs[-1].acc)):
                want = None if key not in before else now - before[key]
                assert stat["delta"] == (None if want is None else pytest.approx(want)), (v, key)
                before[key] = now
            # from the save: w1 (the session's start) is left out
            saves = [o.first_s for o, n in zip(outs, v["rerun_numbers"], strict=True) if n > 1]
            want_first = statistics.median(saves) if saves else None
            assert mode["save_to_first_loss_s"] == (
                None if want_first is None else pytest.approx(want_first)
            )
    # spelled out: keras in v3 compares with v1 (v2 has no keras value)
    assert _mode(v3, "keras")["metrics"]["val/acc"]["delta"] == pytest.approx(0.73 - 0.50)
    assert _mode(v2, "lightning")["metrics"]["val/acc"]["delta"] == pytest.approx(0.71 - 0.58)
    assert _mode(v1, "lightning")["save_to_first_loss_s"] == pytest.approx((1.2 + 1.3) / 2)


def test_a_save_that_did_not_load_is_named_not_versioned(written: Written) -> None:
    sa = _sessions(written)[written.sessions[0]]
    (failed,) = sa["failed_before_training"]
    runs = _watch_runs(written.root, written.sessions[0])
    assert failed["rerun"] == 4 and failed["run"] == "w4-failed"
    assert failed["reason"] == runs["w4-failed"].data.tags[TAG.FAIL_REASON]
    assert "ZeroDivisionError" in failed["reason"] or "raised" in failed["reason"]
    assert any(n.startswith("w4 failed before training") for n in sa["notes"])
    assert all(4 not in v["rerun_numbers"] for v in sa["versions"])


def test_a_running_session_with_one_rerun(written: Written) -> None:
    sb = _sessions(written)[written.sessions[1]]
    assert sb["status"] == "RUNNING" and sb["split_by"] == "script"
    (v1,) = sb["versions"]
    assert v1["rerun_numbers"] == [1] and v1["config_hash"] is None
    assert _mode(v1, "keras")["metrics"]["val/acc"] == {"last": 0.55, "median": 0.55, "delta": None}
    assert _mode(v1, "lightning")["save_to_first_loss_s"] is None  # w1 follows no save
    assert any("still watching" in n for n in sb["notes"])


def test_terminal_and_markdown_show_the_watch_tables(written: Written) -> None:
    a, b = written.sessions
    md, text = written.markdown, written.text
    assert "## Watch sessions" in md
    for name in (a, b):
        assert f"Watch session {name}" in md and f"Watch session {name}" in text
    sa = _sessions(written)[a]
    v1, v2, v3 = sa["versions"]
    # a version's own cells, then a line per mode: last, median and Δ of val/loss and val/acc,
    # then the save -> first loss seconds
    rows = [
        f"| v1 | {v1['label']} | 3 | w1-2,w6 | 0 | lightning | 0.85 | 0.9 | - | 0.58 | 0.56 | - "
        "| 1.25 |",
        "|  |  |  |  |  | keras | 0.98 | 1 | - | 0.5 | 0.49 | - | 2.35 |",
        f"| v2 | {v2['label']} | 1 | w3 | 1 | lightning | 0.7 | 0.7 | -0.15 | 0.71 | 0.71 | +0.13 "
        "| 1 |",
        "|  |  |  |  |  | keras (1 failed) | - | - | - | - | - | - | - |",
        f"| v3 | {v3['label']} | 1 | w5 | 0 | lightning | 0.6 | 0.6 | -0.1 | 0.74 | 0.74 | +0.03 "
        "| 1.1 |",
        "|  |  |  |  |  | keras | 0.65 | 0.65 | -0.33 | 0.73 | 0.73 | +0.23 | 2 |",
    ]
    table = md.split(f"Watch session {a}", 1)[1].split("_Watch session", 1)[0]
    assert "\n".join(rows) in table, table
    assert "w4 failed before training" in table
    only_w1 = md.split(f"Watch session {b}", 1)[1].split("\n## ", 1)[0]
    assert "| v1 |" in only_w1 and "first loss s" not in only_w1  # w1 follows no save
    flat = " ".join(text.split())
    for cell in ("w1-2,w6", "keras (1 failed)", "+0.13", "v3 config: train.lr 0.01 -> 0.002"):
        assert cell in flat, cell


def test_watch_reruns_never_count_as_sweep_trials(written: Written) -> None:
    report = written.report
    assert report["trials"] == {"complete": 2, "pruned": 0, "failed": 0, "total": 2}
    assert [t["trial"] for t in report["best_trials"]] == [0, 1]
    assert [h["trial"] for h in report["history"]] == [0, 1]
    assert {m["name"]: m["runs"] for m in report["comparison"]["modes"]} == {
        "lightning": 2,
        "keras": 2,
    }
    for points in report["pareto"].values():
        assert sorted(p["trial"] for p in points) == [0, 1]
    assert not report["by_script_version"]["shown"]
    assert report["parent_run_id"] == written.sweep.parent_id  # not a watch session's parent
    assert "| w1" not in written.markdown.split("## Watch sessions")[0]


# -- a real sweep, then a real `protolab watch` process, edited and stopped ------------------


@pytest.mark.slow
def test_a_real_watch_session_is_compared_across_script_versions(workdir: Path) -> None:
    from tests.test_watch import _Watch

    (workdir / "exp.py").write_text(SCRIPT)
    config = workdir / "cfg.yaml"
    config.write_text(CONFIG.format(backends="lightning", trials=1))
    swept = runner.invoke(app, ["sweep", "cfg.yaml"])
    assert swept.exit_code == 0, swept.output + repr(swept.exception)

    watch = _Watch(workdir, "--steps", "2")
    watch.wait_for(r"^\[w1\] val/acc=")
    (workdir / "exp.py").write_text(EDITED)
    watch.wait_for(r"^\[w2\] val/acc=")
    config.write_text(config.read_text().replace(*LR_EDIT))
    watch.wait_for(r"^\[w3\] val/acc=")
    assert watch.stop() == 130

    report, markdown, text = _report(workdir)
    (session,) = report["watch"]["sessions"]
    runs = _watch_runs(workdir, session["session"])
    assert set(runs) == {"w1-lightning", "w2-lightning", "w3-lightning"}
    assert session["status"] == "FINISHED" and session["split_by"] == "script+config"
    assert session["job"] == "epochs=1 steps=2"
    versions = session["versions"]
    assert [v["rerun_numbers"] for v in versions] == [[1], [2], [3]]
    assert versions[2]["config_changes"] == ["train.lr 0.01 -> 0.002"]
    previous: dict[str, float] = {}
    for v, n in zip(versions, (1, 2, 3), strict=True):
        run = runs[f"w{n}-lightning"]
        assert v["script_hash"] == run.data.tags[TAG.SCRIPT_HASH]
        mode = _mode(v, "lightning")
        for key in ("val/loss", "val/acc"):
            logged = run.data.metrics[key]
            stat = mode["metrics"][key]
            assert stat["last"] == pytest.approx(logged) and stat["median"] == pytest.approx(logged)
            want = None if key not in previous else logged - previous[key]
            assert stat["delta"] == (None if want is None else pytest.approx(want))
            previous[key] = logged
        first = run.data.metrics["watch/save_to_first_loss_s"]
        assert mode["save_to_first_loss_s"] == (None if n == 1 else pytest.approx(first))
    assert f"Watch session {session['session']}" in text and "## Watch sessions" in markdown
    # the sweep's one trial is all the trial tables hold
    assert report["trials"]["total"] == 1
    assert [t["trial"] for t in report["best_trials"]] == [0]
    assert [m["runs"] for m in report["comparison"]["modes"]] == [1]


# -- by hand: a build that failed after its script loaded ------------------------------------


def _run(n: int, backend: str, script: str, config: str, state: str = "COMPLETE") -> Any:
    from protolab.report._watch_runs import WatchRun

    family = {"lightning": "dynamic", "": ""}[backend]
    metrics = {"val/loss": 1.0 / n, "val/acc": 0.1 * n} if state == "COMPLETE" else {}
    return WatchRun(f"r{n}{backend}", f"w{n}-{backend or 'failed'}", "s", n, backend, family,
                    backend == "lightning", state, script, config, "val/acc", metrics,
                    "" if state == "COMPLETE" else "ValueError: no such layer")  # fmt: skip


def test_a_failed_build_joins_its_script_version_or_is_named_when_configs_differ() -> None:
    from protolab.report._watch import summarize_watch
    from protolab.report._watch_runs import WatchRuns, WatchSessionRun

    parent = WatchSessionRun("s", "p", "FINISHED", 0)
    a, b, c1, c2 = "a" * 12, "b" * 12, "1" * 12, "2" * 12
    runs = (_run(1, "lightning", a, c1), _run(2, "", b, "", "FAIL"), _run(3, "lightning", b, c1))
    (by_script,) = summarize_watch(WatchRuns((parent,), runs), "val/acc", maximize=True)
    v1, v2 = by_script.versions
    assert v1.reruns == (1,)
    assert (v2.reruns, v2.failed_runs, by_script.unversioned) == ((2, 3), 1, ())
    assert v2.modes["lightning"].values["val/acc"].delta == pytest.approx(0.3 - 0.1)

    runs = (*runs, _run(4, "lightning", b, c2))  # now the config changed too: script/config
    (by_config,) = summarize_watch(WatchRuns((parent,), runs), "val/acc", maximize=True)
    assert by_config.split_by == "script+config"
    assert [v.reruns for v in by_config.versions] == [(1,), (3,), (4,)]  # no "bbbbbbbb/?"
    assert [r.rerun for r in by_config.unversioned] == [2]
    assert "w2 failed before training (script bbbbbbbb): ValueError: no such layer" in (
        by_config.notes
    )
