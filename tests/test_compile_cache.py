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


def _project(root: Path, backend: str, cache: Path | str, width: int = 23, extra: str = "") -> Path:
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
        + extra
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


def _latest(uri: str, tag: str = "protolab.compile_cache", **match: str) -> dict[str, Any]:
    """The tags and metrics of the newest run carrying ``tag`` (and the ``match`` tags)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
        if tag in r.data.tags and all(r.data.tags.get(k) == v for k, v in match.items())
    ]
    assert runs, f"no run tagged {tag} {match} in {uri}"
    latest = max(runs, key=lambda r: r.info.start_time)
    return {**latest.data.tags, **latest.data.metrics}


def _local_uri(cfg: Path) -> str:
    return f"sqlite:///{cfg.parent / 'mlruns' / 'mlflow.db'}"


def _finish(
    proc: subprocess.Popen[str], cfg: Path, tag: str = "protolab.compile_cache", uri: str = ""
) -> dict[str, Any]:
    """The run's tags and metrics, from its MLflow store (its own local one by default)."""
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    return _latest(uri or _local_uri(cfg), tag)


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


def _sweep_workers(cfg: Path, n_trials: int) -> dict[int, str]:
    """``sweep --workers 2`` up to ``n_trials``; every complete trial's cache tag."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "TF_XLA_FLAGS")}
    env.pop("PROTOLAB_COMPILE_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "sweep", str(cfg), f"study.n_trials={n_trials}",
         "--workers", "2"],
        cwd=cfg.parent, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(_local_uri(cfg))
    return {
        int(r.data.tags["protolab.trial"]): r.data.tags["protolab.compile_cache"]
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id], "tags.`protolab.state` = 'COMPLETE'")
        if r.data.tags.get("protolab.trial", "").isdigit()
    }


@pytest.mark.slow
def test_sweep_workers_share_the_configured_cache(tmp_path: Path) -> None:
    """``sweep --workers 2``: every worker compiles into the config's folder (never the
    default one); once one of them compiled the architecture, the next workers' trials
    (a second ``--workers 2`` launch) all hit."""
    cache = tmp_path / "shared"
    cfg = _project(tmp_path / "p", "jax", cache)
    first = _sweep_workers(cfg, 2)
    assert sorted(first) == [0, 1] and set(first.values()) <= {"hit", "miss"}
    assert "miss" in first.values()
    assert compile_cache_usage(cache)[0].entries > 0
    assert not (cfg.parent / "mlruns" / "compile_cache").exists()
    second = _sweep_workers(cfg, 4)
    assert {t: second[t] for t in (2, 3)} == {2: "hit", 3: "hit"}


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


# -- the report: cold and warm compile, and break-even for both --------------------------------

EAGER = "eager-x"  # made-up mode names: the report knows none by name
JIT = "jit-x"


def _write_run(store: Any, parent: str, trial: int, backend: str, cache: str, **m: float) -> None:
    """One child run of a sweep trial, written by a real MLflow client as a sweep writes it."""
    from mlflow.entities import Metric, Param

    tags = {
        "mlflow.parentRunId": parent,
        "protolab.study": store.study,
        "protolab.trial": str(trial),
        "protolab.backend": backend,
        "protolab.family": "dynamic",
        "protolab.mode": "eager" if backend == EAGER else "compiled",
        "protolab.pair": f"cc/t{trial}",
        "protolab.arch_hash": f"arch{trial % 2}",
        "protolab.state": "COMPLETE",
        "protolab.metric": "val/acc",
        **({"protolab.eager": "true"} if backend == EAGER else {}),
        **({"protolab.compile_cache": cache} if cache else {}),
    }
    run = store.client.create_run(store.experiment_id, run_name=f"t{trial}-{backend}", tags=tags)
    step = m.pop("step_ms")
    history = [Metric("time/epoch_step_ms", step, 0, e) for e in range(1, 4)]
    final = {"time/step_ms": step, "train/steps": 300.0, "val/acc": 0.9, **m}
    metrics = history + [Metric(k, v, 0, 0) for k, v in final.items()]
    store.client.log_batch(run.info.run_id, metrics=metrics, params=[Param("train.epochs", "3")])
    store.client.set_terminated(run.info.run_id, "FINISHED")


def test_the_report_shows_cold_and_warm_compile_and_both_break_evens(workdir: Path) -> None:
    """Two trials miss (cold compile 6 s), two hit (warm 1 s, the cold 6 s kept beside):
    every part of the report (terminal, report.json, the parent run's note and metrics)
    says both compiles and both break-evens, recomputed here from the same numbers."""
    from protolab.report import study_notes
    from tests.test_report_modes import _report, _store

    store = _store(workdir, "cc")
    (parent,) = store.client.search_runs([store.experiment_id], "tags.`protolab.role` = 'parent'")
    pid = parent.info.run_id
    for i in range(4):
        t = store.trial(16 + i, 0.9)
        _write_run(store, pid, t, EAGER, "", step_ms=10.0, **{"time/first_step_s": 1.0,
                   "time/compile_s": 0.1})  # fmt: skip
        if i < 2:  # a cold compile: 6 s of the 7 s first step
            timing = {"time/compile_s": 6.0, "time/first_step_s": 7.0}
            _write_run(store, pid, t, JIT, "miss", step_ms=5.0, **timing)
        else:  # warm: 1 s, and the cold compile this architecture paid before
            timing = {"time/compile_s": 1.0, "time/first_step_s": 2.0, "time/compile_cold_s": 6.0}
            _write_run(store, pid, t, JIT, "hit", step_ms=5.0, **timing)
    cold_steps = (7.0 - 1.0) / ((10.0 - 5.0) / 1000)  # 1,200: every run as if cold
    warm_steps = (2.0 - 1.0) / ((10.0 - 5.0) / 1000)  # 200: every run as if warm
    report, text, _ = _report(store)

    c = report["comparison"]
    jit = next(m for m in c["modes"] if m["name"] == JIT)
    assert (jit["compile_cold_s"], jit["compile_warm_s"]) == (6.0, 1.0)
    assert jit["compile_cache_runs"] == {"cached": 4, "warm": 2}
    eager = next(m for m in c["modes"] if m["name"] == EAGER)
    assert eager["compile_cold_s"] is None and eager["compile_cache_runs"]["cached"] == 0
    (even,) = c["break_even"]
    cache = even["compile_cache"]
    assert cache["cold"] == {"compile_s": 6.0, "first_step_s": 7.0, "steps": cold_steps}
    assert cache["warm"] == {"compile_s": 1.0, "first_step_s": 2.0, "steps": warm_steps}
    line = (
        f"{JIT}: a new architecture (cold compile 6 s) pays back after 1,200 steps; your next "
        "run of this architecture (warm compile 1 s) pays back after 200 steps"
    )
    assert cache["text"] == line and line in c["lines"]
    assert line in " ".join(text.split())  # the terminal
    assert c["mlflow_metrics"][f"compare/break_even_steps_cold/{JIT}"] == cold_steps
    assert c["mlflow_metrics"][f"compare/break_even_steps_warm/{JIT}"] == warm_steps
    assert c["mlflow_metrics"][f"compare/compile_warm_s/{JIT}"] == 1.0
    hit = [r for u in c["measurements"] for r in u["runs"].values() if r["compile_cache"] == "hit"]
    assert len(hit) == 2 and all(r["compile_cold_s"] == 6.0 for r in hit)

    notes = study_notes(store.client, store.experiment_id, pid, store.study)  # the parent's note
    assert line in notes.description
    assert notes.metrics[f"compare/break_even_steps_warm/{JIT}"] == warm_steps


def test_the_report_says_warm_is_not_measured_until_a_run_hits(workdir: Path) -> None:
    from tests.test_report_modes import _report, _store

    store = _store(workdir, "cc")
    (parent,) = store.client.search_runs([store.experiment_id], "tags.`protolab.role` = 'parent'")
    for i in range(2):
        t = store.trial(16 + i, 0.9)
        _write_run(store, parent.info.run_id, t, EAGER, "", step_ms=10.0,
                   **{"time/first_step_s": 1.0, "time/compile_s": 0.1})  # fmt: skip
        _write_run(store, parent.info.run_id, t, JIT, "miss", step_ms=5.0,
                   **{"time/first_step_s": 7.0, "time/compile_s": 6.0})  # fmt: skip
    report, _, _ = _report(store)
    (even,) = report["comparison"]["break_even"]
    assert even["compile_cache"]["warm"]["steps"] is None
    assert "warm: no run hit the compile cache yet" in even["compile_cache"]["text"]
    assert even["compile_cache"]["cold"]["steps"] == pytest.approx(1200.0)


# -- LightningModules, the aliases' calibration, watch ------------------------------------------


@pytest.mark.slow
def test_a_lightning_module_under_the_compiled_mode_says_miss_then_hit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A native LightningModule compiled (``torch.compile(module)`` inside Trainer.fit) is
    tagged like an Arch: miss, then hit with the cold compile kept beside it."""
    import torch

    from protolab.backends import get_backend
    from tests.test_native_training import Classifier, _job

    class Quiet(Classifier):  # no self.log (a compiled self.log is a known Lightning issue)
        def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self(x), y)

    monkeypatch.setenv("PROTOLAB_COMPILE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "unused"))  # restored after
    backend = get_backend("torch-compile")
    results = []
    for _ in range(2):
        results.append(backend.run(_job(Quiet, epochs=2)))
        backend.release()  # dynamo forgets the graphs: the second compile reads the disk
    first, second = results
    assert first.tags["loop"] == "lightning.Trainer+torch.compile"
    assert first.tags["compile_cache"] == "miss" and "time/compile_cold_s" not in first.metrics
    assert second.tags["compile_cache"] == "hit"
    assert second.metrics["time/compile_cold_s"] > 0
    assert compile_cache_usage(tmp_path / "cache")[0].entries > 0


@pytest.mark.slow
def test_the_dynamic_alias_tries_the_compiled_mode_once_its_cache_is_warm(tmp_path: Path) -> None:
    """Cold, the alias leaves the slow-compiling mode out; after a run of it filled the
    cache for this architecture, the calibration tries it and its tag says why."""
    cache = tmp_path / "cache"
    cfg = _project(tmp_path / "p", "dynamic", cache)
    cold = _finish(_start(cfg), cfg, tag="protolab.calibration")
    assert "torch-compile" not in cold["protolab.calibration"]
    assert _run(cfg, "backends=[torch-compile]")["protolab.compile_cache"] == "miss"
    warm = _finish(_start(cfg), cfg, tag="protolab.calibration")
    said = warm["protolab.calibration"]
    assert "torch-compile=" in said and "lightning=" in said, said  # both timed
    assert "torch-compile tried because the compile cache holds this model's compile" in said


@pytest.mark.slow
def test_watch_uses_the_runs_compile_cache_and_an_edit_back_compiles_warm(tmp_path: Path) -> None:
    """``watch`` configures the cache ``run`` does (here a folder of the config's own): an
    architecture a run compiled is a hit at the session's first rerun; an edit to a new
    width misses; the edit back hits."""
    from tests.test_watch import _Watch

    root, cache = tmp_path / "p", tmp_path / "cache"
    cfg = _project(root, "jax", cache)
    assert _run(cfg)["protolab.compile_cache"] == "miss"
    watch = _Watch(root)
    try:
        watch.wait_for(r"^\[w1\] val/acc=")
        script = root / "exp.py"
        script.write_text(SCRIPT.format(width=24))
        watch.wait_for(r"^\[w2\] val/acc=")
        script.write_text(SCRIPT.format(width=23))
        watch.wait_for(r"^\[w3\] val/acc=")
    finally:
        assert watch.stop() == 130, watch.text[-3000:]
    uri = _local_uri(cfg)
    tags = [_latest(uri, "protolab.watch", **{"protolab.trial": f"w{n}"}) for n in (1, 2, 3)]
    assert [t["protolab.compile_cache"] for t in tags] == ["hit", "miss", "hit"]
    assert not (root / "mlruns" / "compile_cache").exists()  # never the default folder


# -- carried through a tracking server ---------------------------------------------------------


def _tar(path: Path, members: list[tuple[str, bytes | None]]) -> Path:
    """An archive of regular files (bytes) and symlinks (None) with the names given."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "bad", ["../outside", "/abs/entry", "a/../../outside", "link", "C:/x", "a/./../../b"]
)
def test_an_archive_member_outside_the_folder_or_a_link_refuses_the_archive(
    tmp_path: Path, bad: str
) -> None:
    from protolab.backends._cache_sync import ArchiveError, unpack

    dest = tmp_path / "deep" / "cache"
    dest.mkdir(parents=True)
    data = None if bad == "link" else b"x"
    archive = _tar(tmp_path / "a.tar.gz", [("ok/first", b"ok"), (bad, data)])
    with pytest.raises(ArchiveError):
        unpack(archive, dest)
    assert not any(dest.rglob("*"))  # checked before the first file is written
    assert {p.name for p in tmp_path.rglob("*")} == {"deep", "cache", "a.tar.gz"}


def test_a_safe_archive_unpacks_and_keeps_files_present(tmp_path: Path) -> None:
    from protolab.backends._cache_sync import pack, unpack

    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "ab").mkdir(parents=True)
    (src / "ab" / "entry").write_bytes(b"new")
    (src / "top").write_bytes(b"top")
    (dest / "ab").mkdir(parents=True)
    (dest / "ab" / "entry").write_bytes(b"mine")
    assert pack(src, ["ab/entry", "top", "missing"], tmp_path / "a.tar.gz") == 2
    assert unpack(tmp_path / "a.tar.gz", dest) == 1
    assert (dest / "top").read_bytes() == b"top" and (dest / "ab" / "entry").read_bytes() == b"mine"


@pytest.mark.slow
def test_hosts_sharing_only_a_tracking_server_share_the_cache_with_trust(tmp_path: Path) -> None:
    """Host A compiles (miss) and uploads its entries to a real ``mlflow server``; host B,
    with an empty cache folder of its own, downloads them before compiling: a hit. Without
    --trust the setting is refused (exit 2, one line) before any store is written."""
    from mlflow.tracking import MlflowClient

    from tests._servers import mlflow_server

    for url in mlflow_server(tmp_path / "server"):
        track = f"tracking: {{uri: '{url}'}}\n"
        hosts = [_project(tmp_path / h, "jax", tmp_path / h / "cache", extra=track) for h in "ab"]
        sync = "hardware.compile_cache_sync=true"
        refused = subprocess.run(
            [sys.executable, "-m", "protolab.cli", "run", str(hosts[0]), sync],
            cwd=hosts[0].parent, capture_output=True, text=True, timeout=300,
            env={k: v for k, v in os.environ.items() if k != "PROTOLAB_TRUST"},
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "hardware.compile_cache_sync" in refused.stderr and "--trust" in refused.stderr
        client = MlflowClient(url)
        assert [e.name for e in client.search_experiments()] == ["Default"]
        assert not (hosts[0].parent / "mlruns").exists()

        a = _finish(_start(hosts[0], sync, "--trust"), hosts[0], uri=url)
        assert a["protolab.compile_cache"] == "miss"
        exp = client.get_experiment_by_name("protolab-compile-cache")
        (carrier,) = client.search_runs([exp.experiment_id])
        arts = client.list_artifacts(carrier.info.run_id)
        assert arts and all(f.path.endswith(".tar.gz") for f in arts)
        assert not (tmp_path / "b" / "cache").exists()
        b = _finish(_start(hosts[1], sync, PROTOLAB_TRUST="1"), hosts[1], uri=url)
        assert b["protolab.compile_cache"] == "hit"
        assert b["time/compile_cold_s"] > 0  # host A's cold compile, carried with its entries
        assert compile_cache_usage(tmp_path / "b" / "cache")[0].entries > 0
