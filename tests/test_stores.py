"""Journal stores: protolab's locks never stall them, torn writes are recovered, damage is
refused with a repair command, damaged MLflow stores are never replaced (issue 13, 2-3, 6).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from typer.testing import CliRunner

from protolab._journal import check_journal, repair_journal
from protolab._lock import file_lock
from protolab._stores import open_storage
from protolab.cli import app
from protolab.errors import StorageError
from protolab.sweep._lease import lock_path
from protolab.sweep._study import evolution_defaults, evolution_note, make_sampler
from tests.conftest import TINY_MLP

runner = CliRunner()
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _journal(path: Path, n: int = 3) -> None:
    """A real journal holding study 'tiny' with ``n`` complete trials."""
    study = optuna.create_study(
        study_name="tiny", storage=open_storage(str(path)), direction="maximize"
    )
    for i in range(n):
        study.add_trial(
            optuna.trial.create_trial(
                params={"width": 8 + i}, distributions={"width": IntDistribution(8, 32)}, value=i
            )
        )


def _trials(path: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=open_storage(str(path))).trials


@pytest.mark.parametrize("url", [None, "my.journal", "runs/x.log", "sqlite:///db/optuna.db"])
def test_lock_never_shares_a_store_file_name(url: str | None, tmp_path: Path) -> None:
    default = tmp_path / "mlruns" / "optuna.journal"
    lock = lock_path(url, default)
    assert lock is not None
    store = default if url is None else Path(url.removeprefix("sqlite:///"))
    taken = {f"{store.name}{s}" for s in (".lock", "-journal", "-wal", "-shm", "")}
    assert lock.name not in taken and lock.parent == store.parent


def test_journal_writes_do_not_wait_for_protolab_lock(tmp_path: Path) -> None:
    """Holding protolab's lock (as the sweep loop does) must not block Optuna's own."""
    journal = tmp_path / "my.journal"
    with file_lock(lock_path(str(journal), tmp_path / "unused")):
        t0 = time.perf_counter()
        _journal(journal, n=2)
        assert time.perf_counter() - t0 < 5  # Optuna's stale-lock grace period is 30 s
    assert len(_trials(journal)) == 2


@pytest.mark.slow
def test_named_journal_sweep_has_no_lock_wait(tmp_path: Path) -> None:
    (tmp_path / "exp.py").write_text(TINY_MLP)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        textwrap.dedent(
            """\
            experiment: exp.py
            study: {name: tiny, n_trials: 2, sampler: random, pruner: none, storage: my.journal}
            train: {epochs: 1, batch_size: 128}
            hardware: {accelerator: cpu}
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "sweep", str(cfg)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "taking longer than" not in proc.stderr + proc.stdout
    states = {t.state for t in _trials(tmp_path / "my.journal")}
    assert states == {optuna.trial.TrialState.COMPLETE}
    assert not (tmp_path / "my.journal.lock").exists()


@pytest.mark.parametrize("tail", [b'{"op_code": 5, "worker_id": "x", "tri', b"\x00\x00\xff"])
def test_torn_last_line_is_recovered_with_a_note(
    tmp_path: Path, tail: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "my.journal"
    _journal(journal)
    with journal.open("ab") as f:
        f.write(tail)  # a kill -9 in the middle of an append
    trials = _trials(journal)  # open_storage recovers
    assert [t.value for t in trials] == [0, 1, 2]
    assert "last line was incomplete" in capsys.readouterr().err
    assert journal.read_bytes().endswith(b"\n")
    _journal_add(journal)  # and the journal takes new records again
    assert len(_trials(journal)) == 4


def _journal_add(journal: Path) -> None:
    study = optuna.load_study(study_name="tiny", storage=open_storage(str(journal)))
    study.add_trial(
        optuna.trial.create_trial(
            params={"width": 9}, distributions={"width": IntDistribution(8, 32)}, value=9
        )
    )


def test_whole_record_missing_its_newline_is_kept(tmp_path: Path) -> None:
    journal = tmp_path / "my.journal"
    _journal(journal)
    journal.write_bytes(journal.read_bytes().rstrip(b"\n"))
    assert "is kept" in (check_journal(journal) or "")
    assert len(_trials(journal)) == 3


def _damage(journal: Path, line: int, garbage: bytes) -> None:
    lines = journal.read_bytes().splitlines(keepends=True)
    lines.insert(line - 1, garbage)
    journal.write_bytes(b"".join(lines))


def test_damage_inside_is_exit_2_then_doctor_keeps_every_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "exp.py").write_text(TINY_MLP)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("experiment: exp.py\nstudy: {name: tiny, storage: my.journal}\n")
    journal = tmp_path / "my.journal"
    _journal(journal)
    _damage(journal, 3, b"\xff\xfegarbage\n")
    result = runner.invoke(app, ["sweep", str(cfg), "train.epochs=1"])
    out = result.stderr
    assert result.exit_code == 2, out
    assert "Traceback" not in out
    assert "my.journal:3: not a journal record" in out
    assert "protolab doctor my.journal" in out
    assert not (tmp_path / "mlruns").exists()  # no MLflow store, no parent run left RUNNING
    result = runner.invoke(app, ["doctor", str(journal)])
    assert result.exit_code == 0, result.stderr
    assert "kept" in result.stdout and "dropped damaged line(s) 3" in result.stdout
    assert [t.value for t in _trials(journal)] == [0, 1, 2]
    assert len(list(tmp_path.glob("my.journal.*.bak"))) == 1
    result = runner.invoke(app, ["doctor", str(journal)])
    assert "nothing to repair" in result.stdout


def test_doctor_recovers_a_record_glued_to_a_torn_line(tmp_path: Path) -> None:
    journal = tmp_path / "my.journal"
    _journal(journal, n=1)
    with journal.open("ab") as f:
        f.write(b'{"op_code": 4, "wor')  # torn by a crash, then a later run appended:
    good = tmp_path / "good.journal"
    _journal(good, n=2)
    journal.write_bytes(journal.read_bytes() + good.read_bytes().splitlines(keepends=True)[-1])
    with pytest.raises(StorageError, match="protolab doctor"):
        check_journal(journal)
    assert "cut garbage before the record on line(s) 3" in repair_journal(journal)
    assert check_journal(journal) is None
    assert len(_trials(journal)) == 2  # the glued record (the second trial) is back


def test_doctor_refuses_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["doctor", str(tmp_path / "none.journal")])
    assert result.exit_code == 2
    assert "is not a file" in result.stderr


def test_damaged_sqlite_study_store_is_refused(tmp_path: Path) -> None:
    from protolab._stores import check_storage_url

    db = tmp_path / "optuna.db"
    db.write_bytes(b"")
    with pytest.raises(StorageError, match="is empty"):
        check_storage_url(f"sqlite:///{db}")
    assert db.read_bytes() == b""  # never replaced


def test_a_store_another_worker_is_creating_is_waited_for_not_refused(tmp_path: Path) -> None:
    """Two workers started at once on a fresh store: one creates it (0 bytes at first)
    under the store's lock; the other's check waits for that lock instead of calling the
    file truncated."""
    import sqlite3
    import threading

    from protolab._lock import lock_for
    from protolab._stores import check_tracking_uri

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")
    held = threading.Event()

    def create() -> None:
        with file_lock(lock_for(db)):
            held.set()
            time.sleep(0.5)
            con = sqlite3.connect(db)
            con.execute("CREATE TABLE t (x INTEGER)")
            con.commit()
            con.close()

    creator = threading.Thread(target=create)
    creator.start()
    held.wait()
    check_tracking_uri(f"sqlite:///{db}", "unused")  # waits, then finds a whole store
    creator.join()
    assert db.stat().st_size > 0


# --- evolution defaults fit the study (item 6) ------------------------------------------------


@pytest.mark.parametrize(
    ("n_trials", "population"), [(4, 2), (10, 5), (20, 10), (40, 20), (1000, 20)]
)
def test_evolution_population_mutates_within_n_trials(n_trials: int, population: int) -> None:
    opts = evolution_defaults({}, n_trials)
    assert opts["population_size"] == population
    assert opts["tournament_size"] <= population
    sampler = make_sampler("evolution", 0, {}, n_trials=n_trials)
    assert sampler._n_startup_trials == population < n_trials
    assert evolution_note({}, n_trials) is None


def test_evolution_keeps_given_options_and_warns_when_nothing_mutates() -> None:
    assert evolution_defaults({"population_size": 30}, 20) == {"population_size": 30}
    assert evolution_defaults({"tournament_size": 8}, 10)["population_size"] == 8
    note = evolution_note({"population_size": 20}, 20)
    assert note is not None and "all 20 trials stay random" in note
    assert "population_size" in note
    assert evolution_note({"n_startup_trials": 4}, 20) is None


def test_evolution_sweep_warns_at_start(tmp_path: Path) -> None:
    """The note reaches the user before the first trial (read from the display's output)."""
    from protolab.backends import NAMES
    from protolab.config import load_config
    from protolab.sweep import prepare
    from protolab.sweep._worker import open_study

    (tmp_path / "exp.py").write_text(TINY_MLP)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        "experiment: exp.py\nstudy: {name: evo, n_trials: 6, sampler: evolution,"
        " sampler_options: {population_size: 10}}\n"
    )
    cfg, script = load_config(cfg_path, backends=NAMES)
    ctx = prepare(cfg, cfg_path, script)
    notes: list[str] = []

    class Display:
        def note(self, text: str) -> None:
            notes.append(text)

    open_study(ctx, open_storage(str(tmp_path / "s.journal")), Display())
    assert any("all 6 trials stay random" in n for n in notes)


def test_an_unreachable_env_tracking_uri_is_blamed_on_the_env_var(
    make_project: Callable[..., Path], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URI came from ``$MLFLOW_TRACKING_URI``: the message says so, not ``tracking.uri``
    (which the user never set and would look for in the config in vain)."""
    from tests import _servers

    port = _servers.free_port()  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    result = runner.invoke(app, ["sweep", str(make_project())])
    assert result.exit_code == 2, result.output
    assert "$MLFLOW_TRACKING_URI (from the environment" in result.stderr, result.stderr
    assert "tracking.uri: cannot open" not in result.stderr and str(port) in result.stderr
    assert not (workdir / "mlruns").exists()
