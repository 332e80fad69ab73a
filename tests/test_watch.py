"""``protolab watch`` (issue 15): real processes, real file edits, real MLflow store.

One session per test, kept short (a tiny MLP, 2-3 steps per rerun): a save reruns exactly
once, a broken script shows its own lines and the next good save recovers, a config-only
edit on the XLA mode compiles nothing (the compile counter), the reruns are MLflow runs
under one session parent, and Ctrl-C exits 130 with nothing left RUNNING.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_MLP

pytestmark = pytest.mark.slow

CONFIG = """\
experiment: exp.py
backends: [{backend}]
study: {{name: tiny, n_trials: 2, sampler: random, pruner: none}}
train: {{epochs: 2, batch_size: 64, lr: {lr}}}
hardware: {{accelerator: cpu, threads: 1}}
"""
# Loaded CI machines run this many times slower than an idle one: waits are generous.
WAIT_S = 240.0


class _Watch:
    """A ``protolab watch`` process whose output (stdout + stderr) is read as it comes."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "protolab.cli", "watch", "cfg.yaml", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = WAIT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text, re.MULTILINE)
            if found:
                return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"no {pattern!r} in the output:\n{self.text[-4000:]}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return code


def _project(root: Path, backend: str, lr: float = 0.01) -> None:
    (root / "exp.py").write_text(textwrap.dedent(TINY_MLP))
    (root / "cfg.yaml").write_text(CONFIG.format(backend=backend, lr=lr))


def _runs(root: Path) -> list[object]:
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    return list(client.search_runs([exp.experiment_id]))


def test_save_reruns_once_a_broken_script_recovers_and_ctrl_c_leaves_nothing_running(
    workdir: Path,
) -> None:
    _project(workdir, "lightning")
    watch = _Watch(workdir, "--steps", "3")
    watch.wait_for(r"^\[w1\] val/acc=")
    script = workdir / "exp.py"
    script.write_text(script.read_text().replace('["relu", "tanh"]', '["tanh", "relu"]'))
    watch.wait_for(r"^\[w2\] val/acc=.*first loss [\d.]+ s after save")
    time.sleep(3)  # one save, one rerun: nothing else may start
    assert "[w3]" not in watch.text
    script.touch()  # a save that changes no byte is not a rerun
    broken = script.read_text().replace("return pl.Arch(", "return 1 / 0 + pl.Arch(")
    script.write_text(broken)
    watch.wait_for(r"^\[w3\] failed; still watching")
    assert re.search(r"ZeroDivisionError: division by zero", watch.text)
    assert re.search(r"exp\.py:\d+ in model: return 1 / 0", watch.text)  # the user's line
    assert "Traceback" not in watch.text
    script.write_text(broken.replace("return 1 / 0 + pl.Arch(", "return pl.Arch("))
    watch.wait_for(r"^\[w4\] val/acc=")
    assert watch.stop() == 130
    assert "[w5]" not in watch.text

    runs = _runs(workdir)
    assert all(r.info.status != "RUNNING" for r in runs), [
        (r.info.run_name, r.info.status) for r in runs
    ]
    by_name = {r.info.run_name: r for r in runs}
    (session,) = [r for r in runs if r.data.tags.get("protolab.role") == "watch"]
    assert session.info.status == "FINISHED"
    assert {"w1-lightning", "w2-lightning", "w3-failed", "w4-lightning"} <= set(by_name)
    assert by_name["w3-failed"].info.status == "FAILED"
    for name in ("w1-lightning", "w2-lightning", "w4-lightning"):
        run = by_name[name]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == session.info.run_id
        assert run.data.tags["protolab.watch"] == session.data.tags["protolab.watch"]
        assert run.data.metrics["train/steps"] == 3
    scripts = {
        by_name[n].data.tags["protolab.script_hash"] for n in ("w1-lightning", "w2-lightning")
    }
    assert len(scripts) == 2  # each rerun records the script version it ran


def test_config_only_edit_does_not_recompile_the_xla_program(workdir: Path) -> None:
    _project(workdir, "keras", lr=0.01)
    watch = _Watch(workdir, "--steps", "2")
    watch.wait_for(r"^\[w1\] val/acc=")
    assert re.search(r"keras .*compiles 2 \(miss\)", watch.text), watch.text
    config = workdir / "cfg.yaml"
    config.write_text(config.read_text().replace("lr: 0.01", "lr: 0.002"))
    watch.wait_for(r"^\[w2\] val/acc=")
    assert re.search(r"^\[w2\] cfg\.yaml changed", watch.text, re.MULTILINE)
    assert re.search(r"lr 0\.00200", watch.text)
    assert re.search(r"keras .*compiles 0 \(hit\)", watch.text.split("[w2]", 1)[1])
    script = workdir / "exp.py"
    script.write_text(script.read_text().replace("L.Dense(10)", "L.Dense(12), L.Dense(10)"))
    watch.wait_for(r"^\[w3\] val/acc=")
    assert re.search(r"keras .*compiles 2 \(miss\)", watch.text.split("[w3]", 1)[1])
    assert watch.stop() == 130

    tags = {r.info.run_name: r.data.tags for r in _runs(workdir)}
    assert tags["w2-keras"]["protolab.compiles"] == "0"
    assert tags["w2-keras"]["protolab.program_cache"] == "hit"
    assert tags["w3-keras"]["protolab.compiles"] == "2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--params", '{"width": 8}', "--best"], "--params and --best are exclusive"),
        (["--params", "[8]"], "--params must be a JSON object"),
        (["--steps", "0"], "--steps: at least 1 step"),
    ],
)
def test_bad_flags_exit_2_before_anything_is_written(
    workdir: Path, args: list[str], message: str
) -> None:
    _project(workdir, "lightning")
    proc = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "watch", "cfg.yaml", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not (workdir / "mlruns").exists()


def test_a_cached_program_trains_exactly_like_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes reuse safe: a cache hit with another lr and seed equals a fresh build."""
    from protolab import Arch
    from protolab import layers as L
    from protolab.backends import Hardware, Job, TrainSettings, get_backend
    from protolab.backends.tensorflow import trainer
    from protolab.data import load_dataset

    ds = load_dataset("digits")
    arch = Arch(L.Flatten(), L.Dense(16, "relu"), L.Dropout(0.3), L.BatchNorm(), L.Dense(10))

    def run(lr: float, seed: int) -> tuple[list[float], dict[str, str]]:
        settings = TrainSettings(2, 64, "adam", lr, seed=seed, max_steps=3)
        result = get_backend("tf-graph").run(Job(arch, ds, settings, Hardware(accelerator="cpu")))
        return [e["train/loss"] for e in result.history], result.tags

    monkeypatch.setenv("PROTOLAB_PROGRAM_CACHE", "2")
    trainer._CACHE.clear()
    _, first = run(1e-2, seed=0)
    assert (first["program_cache"], first["compiles"]) == ("miss", "2")
    again, tags = run(1e-3, seed=1)
    assert (tags["program_cache"], tags["compiles"]) == ("hit", "0")
    monkeypatch.setenv("PROTOLAB_PROGRAM_CACHE", "0")
    trainer._CACHE.clear()
    fresh, tags = run(1e-3, seed=1)
    assert tags["program_cache"] == "off"
    assert again == pytest.approx(fresh, rel=1e-6)


def test_the_program_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from protolab.backends._cache import ProgramCache

    cache: ProgramCache[int] = ProgramCache()
    monkeypatch.setenv("PROTOLAB_PROGRAM_CACHE", "0")
    cache.put("a", 1)
    assert len(cache) == 0 and cache.get("a") is None  # off: keeps nothing
    monkeypatch.setenv("PROTOLAB_PROGRAM_CACHE", "2")
    for i, key in enumerate("abc"):
        cache.put(key, i)
    assert len(cache) == 2 and cache.get("a") is None and cache.get("c") == 2
