"""The persistent compile cache (issue 23): fresh ``protolab run`` processes of one new
architecture miss, then hit; a shape or framework-version change misses; workers share one
folder; the LRU cap bounds it; ``protolab cache`` shows, trims and clears it.

Real frameworks and real stores. Hit or miss is what the run's own tag says; no test looks
at a clock (the 0.3x warm/cold target is measured by ``benchmarks/run.py cache``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from protolab.backends import clear_compile_cache, compile_cache_usage, trim_compile_cache
from protolab.cli import app

SCRIPT = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    return pl.Arch(L.Flatten(), L.Dense({width}, activation="relu"), L.Dense(10))
"""


def _project(root: Path, backend: str, cache: Path | str, width: int = 23) -> Path:
    """A one-architecture project in ``root`` whose compile cache is ``cache``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "exp.py").write_text(SCRIPT.format(width=width))
    cfg = root / "cfg.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [{backend}]
            study: {{name: cc, n_trials: 1, sampler: random, pruner: none}}
            train: {{epochs: 1, batch_size: 128, lr: 0.005}}
            hardware: {{accelerator: cpu, compile_cache: "{cache}"}}
            """
        )
    )
    return cfg


def _start(cfg: Path, *overrides: str, **extra_env: str) -> subprocess.Popen[str]:
    """A fresh ``protolab run`` process (nothing compiled in it yet)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "TF_XLA_FLAGS")}
    env.pop("PROTOLAB_COMPILE_CACHE", None)
    env.update(extra_env)
    return subprocess.Popen(
        [sys.executable, "-m", "protolab.cli", "run", str(cfg), *overrides],
        cwd=cfg.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], cfg: Path) -> dict[str, Any]:
    """The run's tags and metrics, from its own MLflow store."""
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cfg.parent / 'mlruns' / 'mlflow.db'}")
    runs = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id], order_by=["attributes.start_time DESC"])
        if "protolab.compile_cache" in r.data.tags
    ]
    assert runs, out[-3000:]
    latest = max(runs, key=lambda r: r.info.start_time)
    return {**latest.data.tags, **latest.data.metrics}


def _run(cfg: Path, *overrides: str, **extra_env: str) -> dict[str, Any]:
    return _finish(_start(cfg, *overrides, **extra_env), cfg)


def _framework_folders(cache: Path, framework: str) -> list[Path]:
    return [p for p in cache.iterdir() if p.name.startswith(f"{framework}-")]


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "framework"), [("torch-compile", "torch"), ("jax", "jax")])
def test_a_second_fresh_run_hits_and_a_new_shape_or_version_misses(
    tmp_path: Path, backend: str, framework: str
) -> None:
    cache = tmp_path / "cache"
    cfg = _project(tmp_path / "p", backend, cache)
    first = _run(cfg)
    assert first["protolab.compile_cache"] == "miss"
    assert "time/compile_cold_s" not in first  # a miss: time/compile_s is the cold compile
    second = _run(cfg)
    assert second["protolab.compile_cache"] == "hit"
    assert second["time/compile_cold_s"] > 0  # the first run's cold compile, kept beside it
    # another batch size: other shapes, other programs
    assert _run(cfg, "train.batch_size=96")["protolab.compile_cache"] == "miss"
    # another framework version: its entries sit in a folder this version never reads
    (folder,) = _framework_folders(cache, framework)
    folder.rename(cache / f"{framework}-0.0.1-{folder.name.split('-', 2)[2]}")
    assert _run(cfg)["protolab.compile_cache"] == "miss"
    assert len(_framework_folders(cache, framework)) == 2


@pytest.mark.slow
def test_off_compiles_cold_and_touches_no_cache(tmp_path: Path) -> None:
    """``off``: inductor compiles into a throwaway folder, never its default one, so an
    ``off`` run is a cold compile every time (and says so)."""
    cfg = _project(tmp_path / "p", "torch-compile", tmp_path / "unused")
    tmp = tmp_path / "tmp"  # the system temp folder, where inductor's default cache lives
    tmp.mkdir()
    for _ in range(2):  # a bare `off` (YAML reads it as false) on the command line
        tags = _run(cfg, "hardware.compile_cache=off", TMPDIR=str(tmp))
        assert tags["protolab.compile_cache"] == "off"
    assert not (tmp_path / "unused").exists()
    assert not list(tmp.glob("protolab-compile-off-*"))  # the throwaway folders are deleted
    # inductor's default folder holds at most its precompiled C++ headers (global by design:
    # one per compiler and flags, no model's program): no FX graph, no kernel
    written = {p.relative_to(tmp).parts[1] for p in tmp.glob("torchinductor_*/*")}
    assert written <= {"precompiled_headers"}


@pytest.mark.slow
def test_two_workers_share_one_cache(tmp_path: Path) -> None:
    """Two runs compiling at once into one folder both finish (the frameworks write entries
    atomically); whichever wrote is a miss, and a later run of either project hits."""
    cache = tmp_path / "shared"
    cfgs = [_project(tmp_path / name, "torch-compile", cache) for name in ("a", "b")]
    procs = [_start(cfg) for cfg in cfgs]
    tags = [_finish(p, cfg)["protolab.compile_cache"] for p, cfg in zip(procs, cfgs, strict=True)]
    assert set(tags) <= {"hit", "miss"} and "miss" in tags
    assert _run(cfgs[1])["protolab.compile_cache"] == "hit"


@pytest.mark.slow
def test_the_size_cap_evicts_after_a_run(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cfg = _project(tmp_path / "p", "jax", cache)
    assert _run(cfg)["protolab.compile_cache"] == "miss"
    full = sum(u.bytes for u in compile_cache_usage(cache))
    assert full > 2**17
    _run(cfg, "hardware.compile_cache_max_mb=1", "train.batch_size=64")  # new shapes: new entries
    assert sum(u.bytes for u in compile_cache_usage(cache)) <= 2**20


def test_trim_drops_the_least_recently_used_first(tmp_path: Path) -> None:
    folder = tmp_path / "torch-9.9-cpu"
    (folder / "locks").mkdir(parents=True)
    (folder / "locks" / "ab.lock").write_bytes(b"x" * 5000)  # not an entry: never counted
    now = time.time()
    for i in range(6):  # entry 0 used longest ago
        f = folder / "ab" / f"entry{i}"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"x" * 1000)
        os.utime(f, (now - 1000 + i, now - 1000 + i))
    assert trim_compile_cache(tmp_path, 3500) == 3
    left = sorted(p.name for p in (folder / "ab").iterdir())
    assert left == ["entry3", "entry4", "entry5"]
    assert (folder / "locks" / "ab.lock").is_file()  # inductor's lock files are not entries
    assert clear_compile_cache(tmp_path) == 3 and not folder.exists()


def test_cache_command_shows_trims_and_refuses_bad_input(tmp_path: Path) -> None:
    folder = tmp_path / "jax-9.9-cpu"
    folder.mkdir()
    for i in range(3):
        (folder / f"k{i}-cache").write_bytes(b"x" * 2048)
    runner = CliRunner()
    shown = runner.invoke(app, ["cache", "--dir", str(tmp_path)])
    assert shown.exit_code == 0 and "jax-9.9-cpu" in shown.output and "3 entries" in shown.output
    trimmed = runner.invoke(app, ["cache", "--dir", str(tmp_path), "--max-size", "4KiB"])
    assert trimmed.exit_code == 0 and "trimmed 1 files" in trimmed.output
    bad = runner.invoke(app, ["cache", "--dir", str(tmp_path), "--max-size", "2x"])
    assert bad.exit_code == 2 and "--max-size" in bad.output and "'2x'" in bad.output
    assert len(list(folder.iterdir())) == 2  # nothing deleted by the refused call
    cleared = runner.invoke(app, ["cache", "--dir", str(tmp_path), "--clear"])
    assert cleared.exit_code == 0 and "total: 0 entries" in cleared.output


def test_a_file_as_the_cache_folder_is_exit_2_before_any_store(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    cfg = _project(tmp_path, "torch-compile", blocker)
    proc = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "run", str(cfg)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "hardware.compile_cache" in proc.stderr and str(blocker) in proc.stderr
    assert not (tmp_path / "mlruns" / "optuna.journal").exists()
