"""Workers that cannot see each other: a real PostgreSQL study, a real ``protolab server``.

Three workers, each its own process tree (own session: its tracking writer dies with it),
share one study; one is killed with -9 mid-trial. Nothing it could do on its way out ran,
so the others must notice it by its Optuna heartbeat alone (it runs in a pid namespace of
its own, as pid 1 like in a container, so they cannot see its pid), fail its trial, end its
MLflow runs and retry its configuration, and stop at exactly ``n_trials``. Every run and
artifact lives on the tracking server.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from protolab.cli import app
from protolab.sweep._lease import worker_scope
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


def _project(root: Path, storage: str, tracking: str, name: str = "team") -> Path:
    (root / "exp.py").write_text(TINY_MLP)
    cfg = root / "cfg.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [lightning]
            study: {{name: {name}, n_trials: {N_TRIALS}, sampler: random, pruner: none,
                     storage: '{storage}', heartbeat_s: 3}}
            train: {{epochs: 2, batch_size: 128, lr: 0.005}}
            hardware: {{accelerator: cpu, threads: 1}}
            tracking: {{uri: '{tracking}'}}
            """
        )
    )
    return cfg


# A worker in a pid namespace of its own sees itself as pid 1, as in a container, and no
# other worker can see its pid: it must be found dead by its heartbeat or lease alone.
APART = ["unshare", "--pid", "--fork", "--kill-child"]


def _can_stand_apart() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*APART, "true"], capture_output=True)
    return probe.returncode == 0


def _worker(cfg: Path, home: Path, *overrides: str, apart: bool = False) -> subprocess.Popen[str]:
    """A worker in its own session and folder (and pid namespace, ``apart``)."""
    home.mkdir()
    prefix = APART if apart else []
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "protolab.cli", "sweep", str(cfg), *overrides],
        cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def _running_trial_of(study: optuna.Study, client: MlflowClient) -> int | None:
    """The trial the victim (the only worker in another pid namespace) trains now, once its
    run and artifacts are on the server."""
    exp = client.get_experiment_by_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        if exp is None or t.user_attrs.get("protolab.worker_scope") == worker_scope():
            continue
        name = f"attributes.run_name = 't{t.number}-lightning'"
        runs = client.search_runs([exp.experiment_id], name)
        live = runs and runs[0].info.status == "RUNNING"
        if live and "arch.json" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}:
            return t.number
    return None


@functools.cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    """One storage (one connection pool) per URL: a new one per poll leaks connections until
    the team database refuses more (max_connections)."""
    return optuna.storages.RDBStorage(url)


def _kill_mid_trial(
    study_url: str, client: MlflowClient, victim: subprocess.Popen[str], name: str = "team"
) -> int:
    """Once the victim trains a trial (and another trial finished), kill its whole tree."""
    deadline = time.time() + 150
    while time.time() < deadline:
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        try:
            study = optuna.load_study(study_name=name, storage=_storage(study_url))
        except KeyError:
            time.sleep(0.5)
            continue
        done = study.get_trials(deepcopy=False, states=(State.COMPLETE,))
        number = _running_trial_of(study, client)
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
    if not _can_stand_apart():
        pytest.skip("unshare --pid is not permitted here: every pid would be visible")
    cfg = _project(tmp_path, study_url, tracking)
    victim = _worker(cfg, tmp_path / "a", "train.epochs=300", apart=True)  # caught mid-trial
    others = [_worker(cfg, tmp_path / h) for h in ("b", "c")]
    client = MlflowClient(tracking)
    killed = _kill_mid_trial(study_url, client, victim)
    for proc in others:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out[-3000:]

    trials = optuna.load_study(study_name="team", storage=_storage(study_url)).trials
    seen = [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert sum(t.state == State.COMPLETE for t in trials) == N_TRIALS, seen  # exactly
    assert not [t for t in trials if t.state in (State.RUNNING, State.WAITING)], seen
    lost = trials[killed]
    assert lost.state == State.FAIL and lost.user_attrs["protolab.fail_reason"] == "worker died"
    (retried,) = [t for t in trials if t.user_attrs.get("protolab.retry_of") == killed]
    assert retried.state == State.COMPLETE and retried.params == lost.params
    owners = {str(t.user_attrs["protolab.worker"]) for t in trials}
    assert len(owners) == 3  # host:pid:token, one per worker
    assert lost.user_attrs["protolab.worker"].split(":")[1] == "1"  # pid 1, as in a container
    assert len({t.user_attrs["protolab.worker_scope"] for t in trials}) == 2  # "two hosts"

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


@pytest.mark.slow
def test_workers_through_the_grpc_proxy_reap_a_killed_worker_by_its_lease(
    tmp_path: Path, team_stores: tuple[str, str, Path]
) -> None:
    """Through the gRPC proxy (no heartbeats) a killed worker's trial is found by its lease."""
    study_url, tracking, _ = team_stores
    if not _can_stand_apart():
        pytest.skip("unshare --pid is not permitted here: every pid would be visible")
    proxy = _servers.storage_proxy(tmp_path, study_url)
    cfg = _project(tmp_path, next(proxy), tracking, name="proxied")
    try:
        victim = _worker(cfg, tmp_path / "a", "train.epochs=300", apart=True)
        other = _worker(cfg, tmp_path / "b")
        killed = _kill_mid_trial(study_url, MlflowClient(tracking), victim, "proxied")
        out, _ = other.communicate(timeout=240)
        assert other.returncode == 0, out[-3000:]
    finally:
        next(proxy, None)
    trials = optuna.load_study(study_name="proxied", storage=_storage(study_url)).trials
    seen = [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert sum(t.state == State.COMPLETE for t in trials) == N_TRIALS, seen
    assert not [t for t in trials if t.state in (State.RUNNING, State.WAITING)], seen
    lost = trials[killed]
    assert lost.state == State.FAIL and lost.user_attrs["protolab.fail_reason"] == "worker died"
    assert isinstance(lost.user_attrs["protolab.lease_until"], float)  # it was leased
    (retried,) = [t for t in trials if t.user_attrs.get("protolab.retry_of") == killed]
    assert retried.state == State.COMPLETE and retried.params == lost.params


def test_a_trial_asked_past_n_trials_is_surplus() -> None:
    """Two workers that both counted n-1 and asked: the later-numbered trial is surplus."""
    from protolab.sweep._lease import surplus

    study = optuna.create_study()
    first, second = study.ask(), study.ask()  # n_trials = 1: both asked at once
    assert not surplus(study, first, 1) and surplus(study, second, 1)
    study.tell(first, state=State.FAIL)  # a failed trial frees its place
    assert not surplus(study, second, 1)


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("{tmp}/x.journal", "databases only"),
        ("redis://127.0.0.1:1/0", "databases only"),
        ("sqlite://", "names no file"),
    ],
)
def test_storage_proxy_bad_input_exits_2(workdir: Path, storage: str, expected: str) -> None:
    result = CliRunner().invoke(app, ["storage-proxy", storage.format(tmp=workdir)])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not list(workdir.iterdir())


def test_a_grpc_storage_nobody_serves_exits_2_before_any_store(
    make_project: Callable[..., Path],
) -> None:
    cfg = make_project()
    port = _servers.free_port()
    result = CliRunner().invoke(app, ["sweep", str(cfg), f"study.storage=grpc://127.0.0.1:{port}"])
    assert result.exit_code == 2, result.output
    assert "no storage proxy answers" in result.stderr and "Traceback" not in result.stderr
    assert not (cfg.parent / "mlruns").exists()
    bad = CliRunner().invoke(app, ["sweep", str(cfg), "study.storage=grpc://nohostport"])
    assert bad.exit_code == 2 and "grpc://HOST:PORT" in bad.stderr, bad.output


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
