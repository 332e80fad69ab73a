"""The answer, end to end: result first, per step, overtake, accuracy parity, machine; the
MLflow family view's groups; the report at 80 columns; TensorFlow's start-up lines silent.

The study is written into a real Optuna journal and a real MLflow SQLite store the way a
sweep writes it (tags, metrics, per-epoch step histories); mode names are made up. One mode
(``gamma``) is made to diverge on purpose: it gives a result quickest and steps fastest, but
its accuracy is 0.05 below the reference's on every architecture, so the verdict must flag
it and crown neither.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from protolab.report import build_report, load_report_data, resolve_source, write_study_notes


@dataclass(frozen=True)
class Spec:
    name: str
    family: str
    step_ms: float
    first_step_s: float
    trial_s: float
    acc: float
    eager: bool = False


ALPHA = Spec("alpha", "dynamic", 10.0, 0.2, 1.0, 0.90, eager=True)
BETA = Spec("beta", "static", 4.0, 3.0, 4.0, 0.90)
GAMMA = Spec("gamma", "static", 2.0, 0.1, 0.5, 0.85)  # quickest, fastest, and wrong
IMPORT_S = 2.0
STEPS = 200
PAIRS = 6


@dataclass
class Study:
    root: Path
    uri: str
    client: MlflowClient
    experiment_id: str
    parent_id: str
    rng: np.random.Generator

    def run(self, trial: int, spec: Spec, *, cold: bool, state: str = "COMPLETE") -> str:
        tags = {
            "protolab.study": "verdict",
            "protolab.trial": str(trial),
            "protolab.backend": spec.name,
            "protolab.family": spec.family,
            "protolab.mode": "made up",
            "protolab.eager": str(spec.eager).lower(),
            "protolab.pair": f"verdict/t{trial}",
            "protolab.arch_hash": f"arch{trial}",
            "protolab.state": state,
            "protolab.metric": "val/acc",
            "protolab.cold_start": str(cold).lower(),
            "protolab.env.platform": "Linux-test-x86_64",
            "protolab.env.python": "3.11.7",
            "protolab.env.protolab": "0.1.0",
            "protolab.env.mlflow": "3.17.2",
            "protolab.device": f"{spec.name}-device",
            "mlflow.parentRunId": self.parent_id,
        }
        run = self.client.create_run(
            self.experiment_id, run_name=f"t{trial}-{spec.name}", tags=tags
        )
        noise = self.rng.normal
        epochs = [spec.step_ms * float(np.exp(0.02 * noise())) for _ in range(4)]
        metrics = [Metric("time/epoch_step_ms", v, 0, e) for e, v in enumerate(epochs)]
        final = {
            "time/step_ms": statistics.median(epochs),
            "time/first_step_s": spec.first_step_s * float(np.exp(0.05 * noise())),
            "time/trial_s": spec.trial_s * float(np.exp(0.05 * noise())),
            "time/import_s": IMPORT_S,
            "train/steps": float(STEPS),
            # pruned runs stop early with a much worse metric: they must not drag means down
            "val/acc": spec.acc + 0.002 * noise() - (0.3 if state == "PRUNED" else 0.0),
        }
        metrics += [Metric(k, v, 0, 0) for k, v in final.items()]
        params = [Param(k, v) for k, v in (("backend", spec.name), ("family", spec.family))]
        self.client.log_batch(run.info.run_id, metrics=metrics, params=params)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return str(run.info.run_id)


def _write_study(root: Path) -> Study:
    import optuna

    from protolab._stores import open_storage

    (root / "mlruns").mkdir()
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("verdict", tags={"protolab.study": "verdict"})
    parent = client.create_run(
        exp,
        run_name="verdict",
        tags={"protolab.role": "parent", "protolab.study": "verdict"},
    )
    study = Study(root, uri, client, exp, parent.info.run_id, np.random.default_rng(3))
    storage = open_storage(str(root / "mlruns" / "optuna.journal"))
    optuna_study = optuna.create_study(study_name="verdict", storage=storage, direction="maximize")
    optuna_study.set_user_attr("protolab.metric", "val/acc")
    dist = {"width": optuna.distributions.IntDistribution(8, 64)}
    for t in range(PAIRS + 1):
        pruned = t == PAIRS  # the last trial was pruned: its runs must not count anywhere
        optuna_study.add_trial(
            optuna.trial.create_trial(
                params={"width": 8 + t},
                distributions=dist,
                value=None if pruned else 0.9,
                state=optuna.trial.TrialState.PRUNED
                if pruned
                else optuna.trial.TrialState.COMPLETE,
            )
        )
        for spec in (ALPHA, BETA, GAMMA):
            study.run(t, spec, cold=t == 0, state="PRUNED" if pruned else "COMPLETE")
    return study


@dataclass(frozen=True)
class Done:
    study: Study
    report: dict[str, Any]
    text: str


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Done]:
    """The study written, then `protolab report` run on it at 80 columns."""
    from rich.console import Console

    from protolab.report import run_report

    root = tmp_path_factory.mktemp("verdict")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        study = _write_study(root)
        console = Console(record=True, width=80, highlight=False, file=open(os.devnull, "w"))  # noqa: SIM115
        out = run_report(
            "verdict",
            out_dir=root / "out",
            tracking_uri=study.uri,
            storage=str(root / "mlruns" / "optuna.journal"),
            console=console,
        )
        report = json.loads((out / "report.json").read_text())
        yield Done(study, report, console.export_text())


def _from_mlflow(study: Study) -> dict[str, list[float]]:
    """Each mode's time to result per complete run, recomputed from the runs themselves."""
    runs = study.client.search_runs(
        [study.experiment_id], "tags.`protolab.state` = 'COMPLETE'", max_results=1000
    )
    out: dict[str, list[float]] = {}
    for r in runs:
        m, tags = r.data.metrics, r.data.tags
        cold = tags["protolab.cold_start"] == "true"
        seconds = m["time/trial_s"] + (m["time/import_s"] if cold else 0.0)
        out.setdefault(tags["protolab.backend"], []).append(seconds)
    return out


def test_time_to_result_and_first_to_result_agree_with_the_runs(done: Done) -> None:
    head = done.report["comparison"]["headline"]
    want = {m: statistics.median(v) for m, v in _from_mlflow(done.study).items()}
    assert set(head["time_to_result"]) == {"alpha", "beta", "gamma"}
    for mode, seconds in want.items():
        assert head["time_to_result"][mode] == pytest.approx(seconds), mode
        assert head["result_times"][mode]["runs"] == PAIRS  # the pruned trial left out
    # gamma is quickest, but flagged: the crown goes to the quickest mode that is not
    assert min(want, key=want.__getitem__) == "gamma"
    assert head["flagged"] == ["gamma"]
    ok = {m: s for m, s in head["time_to_result"].items() if m not in head["flagged"]}
    assert head["first_to_result"] == min(ok, key=ok.__getitem__) == "alpha"
    firsts = {m: r["first_in_pairs"] for m, r in head["result_times"].items()}
    assert sum(firsts.values()) == PAIRS and firsts["gamma"] == PAIRS


def test_parity_flags_the_mode_made_to_diverge(done: Done) -> None:
    parity = done.report["comparison"]["headline"]["parity"]
    assert set(parity) == {"beta", "gamma"}  # every mode but the reference
    gamma, beta = parity["gamma"], parity["beta"]
    assert gamma["reference"] == "alpha" and gamma["tolerance"] == 0.01
    assert gamma["mean_gap"] == pytest.approx(-0.05, abs=0.005)
    assert gamma["high"] < -gamma["tolerance"] and gamma["passes"] is False
    assert gamma["n_pairs"] == PAIRS
    assert beta["low"] <= beta["mean_gap"] <= beta["high"] and beta["passes"] is True
    assert abs(beta["mean_gap"]) < 0.01


def test_step_and_overtake_crown_no_flagged_mode(done: Done) -> None:
    head = done.report["comparison"]["headline"]
    step = head["step"]
    assert step["fastest"] == "beta" and step["against"] == "alpha"  # gamma steps faster
    assert step["low"] < step["ratio"] < step["high"] < 1.0
    assert "but gamma fails the accuracy parity check" in step["text"]
    over = head["overtake"]
    assert (over["mode"], over["reference"]) == ("beta", "alpha")
    (row,) = [b for b in done.report["comparison"]["break_even"] if b["mode"] == "beta"]
    assert over["steps"] == pytest.approx(row["steps"])
    assert over["low"] <= over["steps"] <= over["high"]
    # (3 - 0.2) s / ((10 - 4) ms / 1000) ~ 467 steps, more than the 200 trained
    assert 300 < over["steps"] < 700
    assert over["text"].endswith("alpha finishes first at this length")


def test_headline_comes_first_and_names_machine_and_versions(done: Done) -> None:
    head = done.report["comparison"]["headline"]
    assert head["machine"]["platform"] == "Linux-test-x86_64"
    assert head["machine"]["gamma"] == "device gamma-device"
    assert head["versions"]["python"] == "3.11.7" and head["versions"]["mlflow"] == "3.17.2"
    lines = head["lines"]
    assert lines[0].startswith("alpha gives a result first:")
    assert "gamma quicker but flagged by the parity check" in lines[0]
    assert lines[-1].startswith("measured on Linux-test-x86_64")
    assert "python 3.11.7" in lines[-1] and "mlflow" not in lines[-1]
    assert done.report["comparison"]["lines"][: len(lines)] == lines
    flat = " ".join(done.text.split())
    for line in lines:
        assert line in flat
    text_lines = done.text.splitlines()
    first_table = next(i for i, line in enumerate(text_lines) if line.startswith("Best trials"))
    said = next(i for i, line in enumerate(text_lines) if "gives a result first" in line)
    assert said == 1 < first_table  # right under the title line


def test_report_fits_80_columns_without_cutting_numbers(done: Done) -> None:
    lines = done.text.splitlines()
    assert max(len(line) for line in lines) <= 80
    data = load_report_data(
        resolve_source(
            "verdict",
            done.study.uri,
            str(done.study.root / "mlruns" / "optuna.journal"),
        )
    )
    tables = build_report(data).tables()
    assert "modes" in tables and len(tables["modes"].headers) > 8  # too wide for one table
    for name, table in tables.items():
        for row in table.rows:
            key = row[0]
            for i in table.right:
                cell = row[i]
                hit = [
                    ln for ln in lines if key in ln and re.search(rf"[│ ]{re.escape(cell)} ", ln)
                ]
                assert hit, f"{name}: {key} {table.headers[i]!r} = {cell!r} cut or missing"


def test_family_view_keeps_pruned_runs_out_of_group_means(done: Done) -> None:
    study = done.study
    write_study_notes(study.client, study.experiment_id, study.parent_id, "verdict")
    exp = study.client.get_experiment(study.experiment_id)
    view = json.loads(exp.tags["mlflow.sharedViewState.protolab-family"])
    keys = view["groupBy"]["groupByKeys"]
    assert {"mode": "param", "groupByData": "family"} in keys
    assert "tags.`protolab.state`" in view["selectedColumns"]
    # Group the real runs as MLflow's UI does (by each key's param or tag value): no group
    # mixes a pruned run with complete ones, so a complete group's mean is theirs alone.
    runs = study.client.search_runs(
        [study.experiment_id], f"tags.`mlflow.parentRunId` = '{study.parent_id}'"
    )
    groups: dict[tuple[str | None, ...], list[Any]] = {}
    for r in runs:
        source = {"param": r.data.params, "tag": r.data.tags}
        key = tuple(source[k["mode"]].get(k["groupByData"]) for k in keys)
        groups.setdefault(key, []).append(r)
    pruned = [
        g for g in groups.values() if any(r.data.tags["protolab.state"] == "PRUNED" for r in g)
    ]
    assert len(pruned) == 2  # one per family, labelled by its state
    for g in groups.values():
        assert len({r.data.tags["protolab.state"] for r in g}) == 1
    complete = [g for g in groups.values() if g[0].data.tags["protolab.state"] == "COMPLETE"]
    dynamic = next(g for g in complete if g[0].data.params["family"] == "dynamic")
    mean = statistics.fmean(r.data.metrics["val/acc"] for r in dynamic)
    assert mean == pytest.approx(0.90, abs=0.005)  # the pruned 0.6 is not in it


# -- TensorFlow's C++ start-up lines ------------------------------------------------------------

NOTICES = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|"
    r"This TensorFlow binary is optimized|To enable the following instructions"
)


def test_filtered_stderr_drops_notices_and_keeps_the_rest() -> None:
    """A real child process writes to fd 2 inside the filter: notices gone, the rest kept."""
    code = textwrap.dedent(
        """
        import os
        from protolab._quiet import filtered_stderr
        with filtered_stderr():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called "
                        b"are written to STDERR\\n")
            os.write(2, b"I0000 00:00:1796571004.339725   14963 port.cc:153] oneDNN custom "
                        b"operations are on.\\nkept line one\\n")
            os.write(2, b"I0000 00:00:17.1   14963 cpu_feature_guard.cc:227] This TensorFlow "
                        b"binary is optimized\\nTo enable the following instructions: AVX2, in "
                        b"other operations, rebuild TensorFlow with the appropriate flags.\\n")
            os.write(2, b"a partial line")
            os.write(2, b" ends here\\n")
        os.write(2, b"after the filter\\n")
        """
    )
    got = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=True
    ).stderr.decode()
    assert got == "kept line one\na partial line ends here\nafter the filter\n"


@pytest.mark.slow
def test_protolab_run_prints_no_tensorflow_startup_lines(workdir: Path, make_project: Any) -> None:
    """A real `protolab run` on the graph mode imports TensorFlow: stderr stays clean."""
    config = make_project(epochs=1)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    exe = Path(sys.executable).with_name("protolab")
    proc = subprocess.run(
        [str(exe), "run", str(config), "backends=[tf-graph]"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run-tf-graph" in proc.stdout
    assert not NOTICES.search(proc.stderr), proc.stderr
