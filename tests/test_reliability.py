"""Sweeps survive kills, interrupts, bad trials and concurrent workers (real processes/stores)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from protolab._stores import open_storage
from protolab.cli import app
from tests import _servers
from tests.conftest import TINY_MLP

pytestmark = pytest.mark.slow
runner = CliRunner()
State = optuna.trial.TrialState


def _config(root: Path, n_trials: int, epochs: int, extra: str = "") -> Path:
    (root / "exp.py").write_text(TINY_MLP)
    cfg = root / "cfg.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [lightning]
            study: {{name: tiny, n_trials: {n_trials}, sampler: random, pruner: none}}
            train: {{epochs: {epochs}, batch_size: 128, lr: 0.005}}
            hardware: {{accelerator: cpu}}
            """
        )
        + extra
    )
    return cfg


def _start(cfg: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "protolab.cli", "sweep", str(cfg), *args],
        cwd=cfg.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(str(root / "mlruns" / "optuna.journal"))
    try:
        return optuna.load_study(study_name="tiny", storage=storage).trials
    except KeyError:
        return []


def _runs(root: Path, study: str = "tiny") -> list:  # type: ignore[type-arg]
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def _wait_for_running_trial(root: Path, proc: subprocess.Popen[str]) -> int:
    """Block until one trial finished and the next is mid-training; return its number."""
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        trials = _trials(root)
        done = [t for t in trials if t.state == State.COMPLETE]
        running = [t for t in trials if t.state == State.RUNNING]
        if done and running:
            number = running[0].number
            names = {r.info.run_name for r in _runs(root) if r.info.status == "RUNNING"}
            if f"t{number}-lightning" in names:
                time.sleep(0.5)  # well inside the training loop
                return number
        time.sleep(0.2)
    raise AssertionError("no trial started within 300 s")


def _assert_nothing_running(root: Path) -> None:
    assert not [r.info.run_name for r in _runs(root) if r.info.status == "RUNNING"]
    assert not [t.number for t in _trials(root) if t.state == State.RUNNING]


def test_kill_9_mid_trial_then_rerun_finishes_the_study(tmp_path: Path) -> None:
    cfg = _config(tmp_path, n_trials=3, epochs=400)  # long enough to be caught mid-trial
    proc = _start(cfg)
    killed = _wait_for_running_trial(tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _trials(tmp_path)[killed].state == State.RUNNING  # left behind by the dead worker
    # ... but not in MLflow: the writer sees its pipe close and ends the parent run and the
    # open child run itself, before any rerun (issue 13, 4: nothing RUNNING after kill -9).
    deadline = time.time() + 120
    while time.time() < deadline:
        status = {r.info.run_name: r.info.status for r in _runs(tmp_path)}
        if status.get("tiny") == "KILLED" and status.get(f"t{killed}-lightning") == "FAILED":
            break
        time.sleep(0.5)
    assert status.get("tiny") == "KILLED", status
    assert status.get(f"t{killed}-lightning") == "FAILED", status

    rerun = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "sweep", str(cfg)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = _trials(tmp_path)
    assert sum(t.state == State.COMPLETE for t in trials) == 3
    lost = trials[killed]
    assert lost.state == State.FAIL
    assert lost.user_attrs["protolab.fail_reason"] == "worker died"
    (retried,) = [t for t in trials if t.user_attrs.get("protolab.retry_of") == killed]
    assert retried.state == State.COMPLETE and retried.params == lost.params
    _assert_nothing_running(tmp_path)
    (dead_run,) = [r for r in _runs(tmp_path) if r.info.run_name == f"t{killed}-lightning"]
    assert dead_run.info.status == "FAILED"
    assert dead_run.data.tags["protolab.fail_reason"] == "worker died"
    (retry_run,) = [r for r in _runs(tmp_path) if r.info.run_name == f"t{retried.number}-lightning"]
    assert retry_run.data.tags["protolab.retry_of"] == str(killed)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_cleans_up_and_resumes(tmp_path: Path, signum: int, code: int) -> None:
    cfg = _config(tmp_path, n_trials=3, epochs=600)  # ~3 s: still training when the signal lands
    proc = _start(cfg)
    stopped = _wait_for_running_trial(tmp_path, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    assert "Resume with: protolab sweep" in err and "Traceback" not in err
    trial = _trials(tmp_path)[stopped]
    assert trial.state == State.FAIL
    assert trial.user_attrs["protolab.fail_reason"] == "interrupted"
    deadline = time.time() + 60  # the writer makes its last writes after the command exits
    while time.time() < deadline:
        runs = {r.info.run_name: r for r in _runs(tmp_path)}
        if not [r for r in runs.values() if r.info.status == "RUNNING"]:
            break
        time.sleep(0.5)
    assert runs[f"t{stopped}-lightning"].info.status == "KILLED"
    assert runs["tiny"].info.status == "KILLED"  # the parent run
    _assert_nothing_running(tmp_path)

    rerun = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "sweep", str(cfg)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = _trials(tmp_path)
    assert sum(t.state == State.COMPLETE for t in trials) == 3
    assert any(t.user_attrs.get("protolab.retry_of") == stopped for t in trials)


def test_three_workers_on_a_fresh_store_reach_exactly_n_trials(tmp_path: Path) -> None:
    cfg = _config(tmp_path, n_trials=7, epochs=2)
    procs = [_start(cfg) for _ in range(3)]  # together, on a store that does not exist yet
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    trials = _trials(tmp_path)
    complete = [t for t in trials if t.state == State.COMPLETE]
    assert len(complete) == 7
    assert len({t.number for t in trials}) == len(trials)
    assert all(t.state == State.COMPLETE for t in trials)  # nobody over-asked
    runs = _runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("protolab.role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 7
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    _assert_nothing_running(tmp_path)


FAILING = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits")
def model(space: pl.Space) -> pl.Arch:
    mode = space.choice("mode", ["ok", "user_error", "bad_arch", "oom"])
    if mode == "user_error":
        raise ValueError("a bug in the user's experiment")
    if mode == "bad_arch":
        return pl.Arch(L.Flatten(), L.Conv2D(8, 3), L.Dense(10))
    if mode == "oom":  # a 77 GB weight matrix: the allocator refuses it
        return pl.Arch(L.Flatten(), L.Dense(300_000_000), L.Dense(10))
    return pl.Arch(L.Flatten(), L.Dense(16, activation="relu"), L.Dense(10))
"""

CASES = [
    ({"mode": "user_error"}, [], "ValueError: a bug in the user's experiment"),
    ({"mode": "bad_arch"}, [], "ArchError: layer 1 Conv2D"),
    ({"mode": "oom"}, [], "out of memory:"),
    ({"mode": "ok"}, ["train.lr=1.0e+30", "train.optimizer=sgd"], "NonFiniteLossError"),
]


@pytest.mark.parametrize(("params", "overrides", "reason"), CASES, ids=lambda v: str(v)[:24])
def test_each_failure_kind_fails_its_run_with_a_reason(
    make_project: Callable[..., Path],
    workdir: Path,
    params: dict[str, str],
    overrides: list[str],
    reason: str,
) -> None:
    cfg = make_project(script=FAILING, epochs=2)
    result = runner.invoke(app, ["run", str(cfg), *overrides, "--params", json.dumps(params)])
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.stderr
    (run,) = [r for r in _runs(workdir) if "mlflow.parentRunId" in r.data.tags]
    assert run.info.status == "FAILED"
    assert run.data.tags["protolab.state"] == "FAIL"
    assert run.data.tags["protolab.fail_reason"].startswith(reason.split(":")[0])
    assert reason in run.data.tags["protolab.fail_reason"]
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    traceback = Path(client.download_artifacts(run.info.run_id, "traceback.txt")).read_text()
    assert "Traceback (most recent call last)" in traceback


def test_sweep_goes_on_past_failures_and_fail_fast_stops(
    make_project: Callable[..., Path], workdir: Path
) -> None:
    cfg = make_project(script=FAILING, epochs=1)
    result = runner.invoke(app, ["sweep", str(cfg), "study.n_trials=2", "study.max_failures=30"])
    assert result.exit_code == 0, result.output
    trials = _trials(workdir)
    assert sum(t.state == State.COMPLETE for t in trials) == 2
    reasons = {t.params["mode"]: t.user_attrs.get("protolab.fail_reason", "") for t in trials}
    assert reasons["ok"] == ""
    assert any(t.state == State.FAIL for t in trials)

    # Passes the start-up dry run (an unbuildable Arch only fails trials), then always fails.
    always = FAILING.replace('["ok", "user_error", "bad_arch", "oom"]', '["bad_arch"]')
    (workdir / "exp.py").write_text(always)
    result = runner.invoke(app, ["sweep", str(cfg), "study.name=broken", "--fail-fast"])
    assert result.exit_code == 1
    assert "stopping: the last 1 trials failed (study.max_failures=1)" in result.stderr
    assert "ArchError: layer 1 Conv2D" in result.stderr
    result = runner.invoke(app, ["sweep", str(cfg), "study.name=broken2", "study.max_failures=3"])
    assert result.exit_code == 1 and "the last 3 trials failed" in result.stderr


BAD_DATA = [
    ("data='missing.npz'", None, ["missing.npz", "does not exist"]),
    ("data='d.npz'", {"a": [1, 2]}, ["d.npz", "x", "y", "x_train"]),
    ("data='d.npz'", {"x": [[1.0], [2.0], [3.0]], "y": [0, 1]}, ["d.npz", "3", "2"]),
    ("data='d.txt'", None, [".npz", ".csv"]),
]


@pytest.mark.parametrize(("decorator", "arrays", "expected"), BAD_DATA)
def test_bad_data_file_exits_2(
    make_project: Callable[..., Path],
    workdir: Path,
    decorator: str,
    arrays: dict[str, list[float]] | None,
    expected: list[str],
) -> None:
    import numpy as np

    script = TINY_MLP.replace('data="digits"', decorator)
    cfg = make_project(script=script)
    if arrays is not None:
        np.savez(workdir / "d.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    (workdir / "d.txt").write_text("1,2\n")
    result = runner.invoke(app, ["sweep", str(cfg)])
    assert result.exit_code == 2, result.output
    for part in expected:
        assert part in result.stderr, result.stderr
    assert not (workdir / "mlruns").exists()


def test_unreachable_stores_exit_2_before_writing(
    make_project: Callable[..., Path], workdir: Path
) -> None:
    cfg = make_project()
    port = _servers.free_port()  # nothing listens there
    result = runner.invoke(app, ["sweep", str(cfg), f"tracking.uri=http://127.0.0.1:{port}"])
    assert result.exit_code == 2, result.output
    assert "tracking.uri: cannot open" in result.stderr and str(port) in result.stderr
    url = f"postgresql://u:hunter2@127.0.0.1:{port}/db"
    result = runner.invoke(app, ["sweep", str(cfg), f"study.storage={url}"])
    assert result.exit_code == 2, result.output
    assert "study.storage: cannot open" in result.stderr
    assert "hunter2" not in result.stderr and "u:***@" in result.stderr
    assert not (workdir / "mlruns").exists()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="protolab-pg-"))  # pytest's tmp is root-only (0700)
    root.chmod(0o755)  # the server runs as the postgres user and must reach its cluster
    try:
        gen = _servers.postgres(root / "cluster", password="s3cr3t-pw")
        try:
            url = next(gen)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            pytest.skip(f"no PostgreSQL server here: {e} {detail.decode(errors='ignore')[-300:]}")
        yield url
        next(gen, None)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_storage_and_no_password_anywhere(
    make_project: Callable[..., Path], workdir: Path, postgres_url: str
) -> None:
    """A real PostgreSQL study; its password appears in no param, tag, artifact or output."""
    secret = "s3cr3t-pw"
    cfg = make_project()
    text = cfg.read_text().replace("study: {", f"study: {{storage: '{postgres_url}', ")
    cfg.write_text(text)
    result = runner.invoke(app, ["sweep", str(cfg)])
    assert result.exit_code == 0, result.output + result.stderr
    assert secret not in result.output + result.stderr
    study = optuna.load_study(study_name="tiny", storage=postgres_url)
    assert sum(t.state == State.COMPLETE for t in study.trials) == 2
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = _runs(workdir)
    assert len(runs) == 3
    for run in runs:
        values = [*run.data.params.values(), *run.data.tags.values()]
        assert not [v for v in values if secret in v]
        if not client.list_artifacts(run.info.run_id):
            continue
        local = Path(client.download_artifacts(run.info.run_id, ""))
        for path in local.rglob("*"):
            if path.is_file():
                assert secret not in path.read_text(errors="ignore"), path
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    resolved = Path(client.download_artifacts(child.info.run_id, "config/resolved.json"))
    assert "protolab:***@127.0.0.1" in resolved.read_text()  # redacted, not dropped


def test_an_interrupt_during_a_store_write_is_raised_after_it() -> None:
    """A signal must not cut an Optuna journal write in half (it then fails with an unrelated
    FileNotFoundError that hides the interrupt); it is raised once the write is done."""
    from protolab.sweep._lease import Interrupted, interrupt, reset_interrupts, shielded

    reset_interrupts()
    done: list[str] = []
    with pytest.raises(Interrupted) as info, shielded():
        with shielded():  # nested writes: raised after the outermost one
            interrupt(signal.SIGTERM)
            done.append("inner")
        done.append("outer")
    assert done == ["inner", "outer"] and info.value.signum == signal.SIGTERM
    with pytest.raises(Interrupted):  # outside a write: at once
        interrupt(signal.SIGINT)
    reset_interrupts()  # what the CLI does when the command ends
    with shielded():  # and nothing is left pending afterwards
        pass


def test_a_swallowed_interrupt_is_raised_at_the_next_store_write() -> None:
    """The lost-signal window: a handler's exception raised while a ``__del__`` runs is
    printed as "Exception ignored" and dropped; the sweep then ran to its end (exit 0)."""
    import gc

    from protolab.sweep._lease import Interrupted, interrupt, reset_interrupts, shielded

    reset_interrupts()

    class Finalised:
        def __del__(self) -> None:
            interrupt(signal.SIGINT)  # as if the signal arrived during this finaliser

    Finalised()
    gc.collect()  # the Interrupted raised in __del__ was swallowed by the interpreter
    try:
        with pytest.raises(Interrupted) as info, shielded():
            pass
        assert info.value.signum == signal.SIGINT
    finally:
        reset_interrupts()


def test_a_message_to_the_writer_is_never_cut_and_cleanup_is_not_re_interrupted() -> None:
    """``deferred`` (the tracking pipe's messages, cleanup writes) raises only a signal that
    arrived inside it; one handled before does not interrupt the cleanup again."""
    from protolab.sweep._lease import Interrupted, deferred, interrupt, reset_interrupts

    reset_interrupts()
    try:
        with pytest.raises(Interrupted), deferred():
            interrupt(signal.SIGINT)  # mid-message: held until the message is whole
        with deferred():  # the cleanup after that interrupt: not raised again
            pass
    finally:
        reset_interrupts()


def test_a_second_ctrl_c_exits_after_the_write_in_progress() -> None:
    """A hard exit inside a journal write would leave Optuna's lock file (30 s wait for the
    next run): it waits for the write; outside one it is immediate."""
    from protolab.sweep._lease import deferred, interrupt_again, reset_interrupts

    exits: list[str] = []
    reset_interrupts()
    try:
        with deferred():
            interrupt_again(lambda: exits.append("exit"))
            assert exits == []  # still inside the write
        assert exits == ["exit"]
        interrupt_again(lambda: exits.append("now"))
        assert exits == ["exit", "now"]
    finally:
        reset_interrupts()
