"""Workers that cannot see each other: a real PostgreSQL study, a real ``protolab server``.

Three workers, each its own process tree (own session: its tracking writer dies with it),
share one study; one is killed with -9 mid-trial. Nothing it could do on its way out ran,
so the others must notice it by its Optuna heartbeat alone (they cannot see its pid as
they would on one host), fail its trial, end its MLflow runs and retry its configuration,
and stop at exactly ``n_trials``. Every run and artifact lives on the tracking server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from protolab.cli import app
from tests import _servers
from tests.conftest import TINY_MLP

State = optuna.trial.TrialState
N_TRIALS = 6


@pytest.fixture(scope="module")
def team_stores() -> Iterator[tuple[str, str, Path]]:
    """(study storage URL, tracking server URL, the server's artifact folder)."""
    root = Path(tempfile.mkdtemp(prefix="protolab-team-"))  # pytest's tmp is root-only
    root.chmod(0o755)  # the cluster runs as the postgres user and must reach it
    gen = _servers.postgres(root / "cluster", password="team-pw", databases=("mlflow",))
    try:
        try:
            study_url = next(gen)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            pytest.skip(f"no PostgreSQL server here: {e}")
        server = _servers.protolab_server(root, study_url.rsplit("/", 1)[0] + "/mlflow")
        yield study_url, next(server), root / "artifacts"
        next(server, None)
    finally:
        next(gen, None)
        shutil.rmtree(root, ignore_errors=True)


def _project(root: Path, storage: str, tracking: str) -> Path:
    (root / "exp.py").write_text(TINY_MLP)
    cfg = root / "cfg.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [lightning]
            study: {{name: team, n_trials: {N_TRIALS}, sampler: random, pruner: none,
                     storage: '{storage}', heartbeat_s: 3}}
            train: {{epochs: 2, batch_size: 128, lr: 0.005}}
            hardware: {{accelerator: cpu, threads: 1}}
            tracking: {{uri: '{tracking}'}}
            """
        )
    )
    return cfg


def _worker(cfg: Path, home: Path, *overrides: str) -> subprocess.Popen[str]:
    """A worker in its own session and folder: as apart as this machine allows."""
    home.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "protolab.cli", "sweep", str(cfg), *overrides],
        cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def _running_trial_of(study: optuna.Study, client: MlflowClient, pid: int) -> int | None:
    """The trial ``pid`` trains now, once its run and artifacts are on the server."""
    exp = client.get_experiment_by_name("team")
    for t in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        if exp is None or t.user_attrs.get("protolab.worker", "").split(":")[1:2] != [str(pid)]:
            continue
        name = f"attributes.run_name = 't{t.number}-lightning'"
        runs = client.search_runs([exp.experiment_id], name)
        live = runs and runs[0].info.status == "RUNNING"
        if live and "arch.json" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}:
            return t.number
    return None


def _kill_mid_trial(study_url: str, client: MlflowClient, victim: subprocess.Popen[str]) -> int:
    """Once the victim trains a trial (and another trial finished), kill its whole tree."""
    deadline = time.time() + 150
    while time.time() < deadline:
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        try:
            study = optuna.load_study(study_name="team", storage=study_url)
        except KeyError:
            time.sleep(0.5)
            continue
        done = study.get_trials(deepcopy=False, states=(State.COMPLETE,))
        number = _running_trial_of(study, client, victim.pid)
        if done and number is not None:
            time.sleep(1.0)  # well inside its 300 epochs
            os.killpg(victim.pid, signal.SIGKILL)  # the worker and its tracking writer
            victim.wait()
            return number
        time.sleep(0.3)
    raise AssertionError("the victim never ran a trial while another finished")


@pytest.mark.slow
def test_three_workers_one_killed_by_9_finish_on_the_team_stores(
    tmp_path: Path, team_stores: tuple[str, str, Path]
) -> None:
    study_url, tracking, artifacts = team_stores
    cfg = _project(tmp_path, study_url, tracking)
    victim = _worker(cfg, tmp_path / "a", "train.epochs=300")  # slow: caught mid-trial
    others = [_worker(cfg, tmp_path / h) for h in ("b", "c")]
    client = MlflowClient(tracking)
    killed = _kill_mid_trial(study_url, client, victim)
    for proc in others:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out[-3000:]

    trials = optuna.load_study(study_name="team", storage=study_url).trials
    seen = [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert sum(t.state == State.COMPLETE for t in trials) == N_TRIALS, seen  # exactly
    assert not [t for t in trials if t.state in (State.RUNNING, State.WAITING)], seen
    lost = trials[killed]
    assert lost.state == State.FAIL and lost.user_attrs["protolab.fail_reason"] == "worker died"
    (retried,) = [t for t in trials if t.user_attrs.get("protolab.retry_of") == killed]
    assert retried.state == State.COMPLETE and retried.params == lost.params
    owners = {str(t.user_attrs["protolab.worker"]) for t in trials}
    assert len(owners) == 3  # host:pid:token, one per worker
    assert str(victim.pid) == lost.user_attrs["protolab.worker"].split(":")[1]
    assert len({t.user_attrs["protolab.worker_scope"] for t in trials}) == 1  # one machine

    exp = client.get_experiment_by_name("team")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    (parent,) = [r for r in runs if r.data.tags.get("protolab.role") == "parent"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert len(children) == N_TRIALS + 1
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    (dead,) = [r for r in children if r.info.run_name == f"t{killed}-lightning"]
    assert dead.info.status == "FAILED"
    assert dead.data.tags["protolab.fail_reason"] == "worker died"
    assert len({r.data.tags["protolab.worker"] for r in children}) == 3
    for run in children:  # artifacts went through the server into its folder
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert "arch.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
        stored = artifacts / exp.experiment_id / run.info.run_id / "artifacts" / "arch.json"
        assert stored.is_file()


BAD_SERVER_ARGS = [
    ([], "--backend-store-uri: missing"),
    (["--backend-store-uri", "ftp://db/x"], "unsupported URL 'ftp://db/x'"),
    (["--backend-store-uri", "postgresql://u:hunter2@127.0.0.1:{port}/db"], "cannot open"),
    (["--backend-store-uri", "sqlite:///{tmp}/db.sqlite", "--port", "0"], "--port"),
    (["--backend-store-uri", "sqlite:///{tmp}/db.sqlite", "--artifacts", "{tmp}/f"], "a file"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_SERVER_ARGS)
def test_server_bad_input_exits_2_before_starting(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], expected: str
) -> None:
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    (workdir / "f").write_text("not a folder")
    fill = {"port": _servers.free_port(), "tmp": workdir}
    argv = ["server", "--artifacts", str(workdir / "art"), *[a.format(**fill) for a in args]]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr
    assert not (workdir / "art").exists() and not (workdir / "db.sqlite").exists()
