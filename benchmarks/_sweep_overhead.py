"""What a sweep costs per trial besides training: sampler, study storage, tracking.

Three kinds of measurement:

- components, at study sizes 10, 100 and 1000 (``measure_components``): Optuna's TPE sampler
  on the digits-MLP space with the median pruner (what ``configs/digits_mlp.yaml`` uses),
  on in-memory storage (sampler cost alone), on the default journal file and on SQLite; and
  the MLflow writes protolab's ``Tracker`` makes per trial (child run, params, the artifacts
  in one upload, 10 epochs of metrics, final metrics and tags in one batch, end) on a SQLite
  store: the CPU the tracking writer process spends per child run. Each size is measured
  on a window of trials that ends at that size; the trials before the window are filled in
  cheaply (``add_trials``, or row copies in SQLite, see ``_clone_rows``) so 1000 trials do
  not take minutes to reach. Timing the window itself always uses the real code paths.
- the whole loop (``measure_null_sweep``): protolab's own ``sweep()`` over a tiny experiment,
  in a fresh process, with a backend that trains nothing, on the default stores.
- logging overhead (``measure_logging``): the same tiny trials run through
  ``protolab.sweep.run_once`` with MLflow tracking off (a tracker that does nothing), inline
  (``Tracker``: the calls made in the trial's process) and as sweeps do it (``AsyncTracker``:
  the calls made by the tracking writer process).

Run as a script (``python benchmarks/_sweep_overhead.py null-sweep DIR N``) it is the
fresh process of ``measure_null_sweep``.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    ROOT,
    Row,
    fresh_store_s,
    median,
    p90,
    quiet_env,
    seed_mlflow_store,
    write_project,
)

__all__ = ["measure_components", "measure_logging", "measure_null_sweep"]

EPOCHS = 10  # intermediate values reported (and metric rows logged) per trial
DIGITS_MLP = ROOT / "experiments" / "digits_mlp.py"
SIZES = (10, 100, 1000)
SMOKE_SIZES = (10, 100)  # --smoke: the harness runs, the 1000-trial fill does not
LABELS = {"memory": "in-memory (sampler only)", "journal": "journal file", "sqlite": "SQLite"}


# --- Optuna: sampler + storage ---------------------------------------------------------------


def _experiment() -> Any:
    from protolab.script import load_experiment

    return load_experiment(DIGITS_MLP)


def _one_trial(study: Any, exp: Any, rng: random.Random) -> None:
    """What protolab's sweep loop asks of Optuna for one trial, without the training."""
    import optuna

    from protolab.space import Space

    State = optuna.trial.TrialState
    study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED, State.RUNNING))
    trial = study.ask()
    trial.set_user_attr("protolab.worker", "bench:0")
    exp.build(Space(trial))
    Space(trial, prefix="train.").float("lr", 1e-4, 1e-2, log=True)
    for epoch in range(1, EPOCHS + 1):
        trial.report(0.5 + 0.04 * epoch + 0.05 * rng.random(), epoch)
        trial.should_prune()  # asked, as the sweep does; ignored so every trial costs alike
    trial.set_user_attr("protolab.arch_hash", "0" * 12)
    trial.set_user_attr("protolab.metrics", {"lightning": {"time/step_ms": 1.0, "val/acc": 0.9}})
    study.tell(trial, 0.8 + 0.2 * rng.random())


def _filler_trials(n: int, seed: int) -> list[Any]:
    """``n`` finished trials over the same space, made with the random sampler in memory."""
    import optuna

    exp, rng = _experiment(), random.Random(seed)
    mem = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.NopPruner(),
    )
    for _ in range(n):
        _one_trial(mem, exp, rng)
    return list(mem.get_trials(deepcopy=False))


def _clone_rows(db: Path, parent: str, key: str, target: int, skip: Mapping[str, str]) -> None:
    """Grow the rows of ``parent`` (and every table keyed by ``key``) to ``target`` by copies.

    Reaching 1000 Optuna trials or MLflow runs through their ORMs costs ~50-70 ms per row
    here, minutes in all; plain SQL copies of the rows already written by the real code take
    well under a second and give the stores the same number of rows, the thing whose effect
    on per-trial cost is being measured. ``skip`` excludes rows (``column: value``) from
    being copied, e.g. the parent run.
    """
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        cols = {t: [r[1] for r in con.execute(f"PRAGMA table_info('{t}')")] for t in tables}
        pks = {t: [r[1] for r in con.execute(f"PRAGMA table_info('{t}')") if r[5]] for t in tables}
        where = " AND ".join(f"{c} != ?" for c in skip) or "1"
        while True:
            sql = f"SELECT count(*) FROM {parent} WHERE {where}"
            n = int(con.execute(sql, tuple(skip.values())).fetchone()[0])
            if n >= target or n == 0:
                break
            m = min(n, target - n)
            old = [
                r[0]
                for r in con.execute(
                    f"SELECT {key} FROM {parent} WHERE {where} ORDER BY rowid LIMIT ?",
                    (*skip.values(), m),
                )
            ]
            mapping = _insert_parent_copies(con, parent, key, cols[parent], pks[parent], old)
            con.execute("DROP TABLE IF EXISTS temp.clone_map")
            con.execute("CREATE TEMP TABLE clone_map (old, new)")
            con.executemany("INSERT INTO clone_map VALUES (?, ?)", mapping)
            for t in tables:
                if t == parent or key not in cols[t]:
                    continue
                keep = [c for c in cols[t] if not (pks[t] == [c] and c != key)]
                select = ", ".join("m.new" if c == key else f"t.{c}" for c in keep)
                con.execute(
                    f"INSERT INTO {t} ({', '.join(keep)}) "
                    f"SELECT {select} FROM {t} t JOIN clone_map m ON t.{key} = m.old"
                )
            con.commit()
    finally:
        con.close()


def _insert_parent_copies(
    con: sqlite3.Connection,
    parent: str,
    key: str,
    cols: list[str],
    pk: list[str],
    old: list[Any],
) -> list[tuple[Any, Any]]:
    import uuid

    mapping: list[tuple[Any, Any]] = []
    if parent == "trials":  # integer key: let SQLite assign it; numbers continue the study's
        (top,) = con.execute("SELECT coalesce(max(number), -1) FROM trials").fetchone()
        keep = [c for c in cols if c != key]
        for i, k in enumerate(old):
            row = con.execute(
                f"SELECT {', '.join(keep)} FROM trials WHERE {key} = ?", (k,)
            ).fetchone()
            values = [top + 1 + i if c == "number" else v for c, v in zip(keep, row, strict=True)]
            cur = con.execute(
                f"INSERT INTO trials ({', '.join(keep)}) VALUES ({', '.join('?' * len(keep))})",
                values,
            )
            mapping.append((k, cur.lastrowid))
    else:  # text key (MLflow run ids): new uuids
        for k in old:
            new = uuid.uuid4().hex
            row = con.execute(f"SELECT {', '.join(cols)} FROM {parent} WHERE {key} = ?", (k,))
            values = [new if c == key else v for c, v in zip(cols, row.fetchone(), strict=True)]
            con.execute(
                f"INSERT INTO {parent} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                values,
            )
            mapping.append((k, new))
    del pk
    return mapping


def _optuna_window(
    kind: str, where: Path, sizes: tuple[int, ...], window: int, log: Callable[[str], None]
) -> list[Row]:
    import optuna

    from protolab._stores import open_storage
    from protolab.sweep import make_pruner, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = where / f"optuna-{kind}.db"
    url = {
        "memory": None,
        "journal": str(where / f"optuna-{kind}.journal"),
        "sqlite": f"sqlite:///{db}",
    }[kind]

    def open_study() -> Any:
        storage = optuna.storages.InMemoryStorage() if url is None else open_storage(url)
        study = optuna.create_study(
            storage=storage,
            study_name="bench",
            direction="maximize",
            pruner=make_pruner("median"),
            load_if_exists=True,
        )
        study.sampler = make_sampler("tpe", 0)
        return study

    import warnings

    warnings.filterwarnings("ignore", module="optuna")  # RDB heartbeat outside optimize()
    study = open_study()
    exp, rng = _experiment(), random.Random(0)
    rows: list[Row] = []
    have = 0
    for size in sizes:
        fill = size - window - 1 - have
        if fill > 0:
            t0 = time.perf_counter()
            if kind == "sqlite" and have:
                _clone_rows(db, "trials", "trial_id", size - window - 1, {})
                study = open_study()  # a fresh storage object: no stale in-process cache
            else:
                study.add_trials(_filler_trials(fill, seed=size))
            took = time.perf_counter() - t0
            log(f"  {kind}: filled to {size - window - 1} trials in {took:.1f} s")
        _one_trial(study, exp, rng)  # untimed: a worker's first ask loads the study's trials
        times = []
        for _ in range(window):
            t0 = time.perf_counter()
            _one_trial(study, exp, rng)
            times.append((time.perf_counter() - t0) * 1000)
        have = len(study.get_trials(deepcopy=False))
        rows.append(
            Row(
                "sweep-overhead",
                f"optuna tpe+median, {LABELS[kind]}",
                f"@{size} trials",
                "ask..tell",
                "ms/trial",
                median(times),
                p90(times),
                len(times),
                note=f"trials {have - window + 1}..{have}",
                extra={"mean_ms": sum(times) / len(times), "study_trials": have},
            )
        )
    return rows


# --- MLflow tracking ---------------------------------------------------------------------------

_ARTIFACTS = {
    "arch.json": "{" + '"layers": []' * 20 + "}",
    "arch.txt": "layer  output  params\n" * 12,
    "config/cfg.yaml": "study: {n_trials: 20}\n" * 10,
    "config/resolved.json": "{}" * 200,
    "script/exp.py": "# experiment\n" * 20,
}


def _track_one(tracker: Any, i: int) -> None:
    """The Tracker calls ``protolab.sweep.run_once`` makes for one trial on one backend."""
    tags = {
        "protolab.study": "bench",
        "protolab.trial": str(i),
        "protolab.backend": "lightning",
        "protolab.family": "dynamic",
        "protolab.arch_hash": "0" * 12,
        "protolab.script_hash": "1" * 12,
        "protolab.config_hash": "2" * 12,
        "protolab.metric": "val/acc",
        "protolab.data": "digits",
    }
    params = {"width": 128, "act": "relu", "depth": 2, "dropout": 0.1, "train.lr": 1e-3}
    params |= {f"train.{k}": v for k, v in {"epochs": 10, "batch_size": 64, "seed": 0}.items()}
    run = tracker.child(f"t{i}-lightning", tags, params)
    run.log_texts(_ARTIFACTS)
    for epoch in range(1, EPOCHS + 1):
        run.log_metrics(
            {"train/loss": 1 / epoch, "val/loss": 1 / epoch, "val/acc": 0.9, "time/epoch_s": 0.1},
            step=epoch,
        )
    run.log_metrics({f"time/m{k}": float(k) for k in range(20)}, step=EPOCHS)
    run.set_tags({"protolab.cold_start": "false", "protolab.device": "cpu"})
    run.end("COMPLETE")


def _mlflow_window(
    where: Path, sizes: tuple[int, ...], window: int, log: Callable[[str], None]
) -> list[Row]:
    from protolab.tracking import Tracker

    db = seed_mlflow_store(where)
    t0 = time.perf_counter()
    tracker = Tracker(f"sqlite:///{db}", "bench", "bench")
    open_s = time.perf_counter() - t0
    rows = [
        Row(
            "sweep-overhead",
            "mlflow store create (fresh SQLite)",
            "MlflowClient()",
            "wall",
            "s",
            fresh_store_s(),
            None,
            1,
            note="a project's first sweep: MLflow creates its schema (alembic migrations)",
        ),
        Row(
            "sweep-overhead",
            "mlflow store open (existing SQLite)",
            "Tracker()",
            "wall",
            "s",
            open_s,
            None,
            1,
            note="every sweep: open the store, create the experiment and the parent run",
        ),
    ]
    have = 0
    for size in sizes:
        if size - window > have:
            t0 = time.perf_counter()
            _clone_rows(db, "runs", "run_uuid", size - window, {"run_uuid": tracker.parent_id})
            log(f"  mlflow: filled to {size - window} runs in {time.perf_counter() - t0:.1f} s")
        times = []
        for i in range(window):
            t0 = time.perf_counter()
            _track_one(tracker, size - window + i)
            times.append((time.perf_counter() - t0) * 1000)
        have = size
        rows.append(
            Row(
                "sweep-overhead",
                "mlflow child run (Tracker, SQLite)",
                f"@{size} trials",
                "child..end",
                "ms/trial",
                median(times),
                p90(times),
                len(times),
                note="params + artifacts (one upload) + 10 epochs of metrics + tags + end",
                extra={"mean_ms": sum(times) / len(times)},
            )
        )
    tracker.end()
    return rows


def measure_components(
    quick: bool, log: Callable[[str], None] = print, smoke: bool = False
) -> list[Row]:
    window = 2 if smoke else 3 if quick else 10
    sizes = SMOKE_SIZES if smoke else SIZES
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="protolab-bench-") as tmp:
        for kind in ("memory", "journal", "sqlite"):
            rows += _optuna_window(kind, Path(tmp), sizes, window, log)
        rows += _mlflow_window(Path(tmp), sizes, window, log)
    return rows


# --- the whole sweep loop, no training -------------------------------------------------------


def _null_classes() -> type:
    """The null backend, built on protolab's own Backend/Program (imported in the child only)."""
    from protolab.backends import Backend, DeviceInfo, EpochFit, Job, Program

    class _NullModel:
        backend = "lightning"
        native = None

        def predict(self, x: Any) -> Any:
            return x

    class NullProgram(Program):
        steps, batch = 1, 1

        def __init__(self) -> None:
            self.epoch = 0

        def fit_epoch(self, epoch: int) -> EpochFit:
            self.epoch = epoch
            return EpochFit(loss=1 / epoch, step_s=[1e-6], first_step_s=1e-6)

        def evaluate(self) -> dict[str, float]:
            return {"val/loss": 1 / self.epoch, "val/acc": 0.5 + self.epoch / 100}

        def device(self) -> DeviceInfo:
            return DeviceInfo("none", "none")

        def trained(self) -> Any:
            return _NullModel()

    class NullBackend(Backend):
        """A backend that trains nothing, through protolab's shared epoch loop."""

        name = "lightning"
        family = "dynamic"

        def program(self, job: Job) -> Program:
            return NullProgram()

    return NullBackend


def __getattr__(name: str) -> Any:  # "_sweep_overhead:NullBackend", resolved lazily
    if name == "NullBackend":
        return _null_classes()
    raise AttributeError(name)


class _NullDisplay:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


def null_sweep_child(where: Path, n_trials: int) -> None:
    """In a fresh process: protolab's sweep() with the null backend; print one JSON line."""
    import os

    os.chdir(where)
    from protolab.backends import register_backend

    register_backend("lightning", "_sweep_overhead:NullBackend", "dynamic", eager=True)
    from protolab.backends import NAMES
    from protolab.config import load_config
    from protolab.sweep import prepare, sweep

    cfg, script = load_config(where / "cfg.yaml", backends=NAMES)
    ctx = prepare(cfg, where / "cfg.yaml", script)
    t0 = time.perf_counter()
    summary = sweep(ctx, _NullDisplay())
    wall = time.perf_counter() - t0
    ends = sorted(t.datetime_complete.timestamp() for t in summary.trials if t.datetime_complete)
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(ends)]
    print(json.dumps({"wall_s": wall, "n": len(summary.trials), "gaps_ms": gaps}), flush=True)


def measure_null_sweep(quick: bool, smoke: bool = False) -> list[Row]:
    n = 4 if smoke else 8 if quick else 30
    with tempfile.TemporaryDirectory(prefix="protolab-bench-") as tmp:
        where = Path(tmp)
        write_project(
            where,
            experiment=DIGITS_MLP,
            study={"n_trials": n, "sampler": "tpe", "pruner": "median"},
            train={"epochs": EPOCHS},
        )
        proc = subprocess.run(
            [sys.executable, str(BENCH_DIR / "_sweep_overhead.py"), "null-sweep", tmp, str(n)],
            env=quiet_env(),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"null sweep exited {proc.returncode}: {proc.stderr[-500:]}")
    got = json.loads(lines[-1])
    return [
        Row(
            "sweep-overhead",
            "protolab sweep loop, no training",
            f"{got['n']} trials",
            "per trial",
            "ms/trial",
            median(got["gaps_ms"]),
            p90(got["gaps_ms"]),
            len(got["gaps_ms"]),
            note="sweep(): TPE+median, journal study, SQLite MLflow, 10 epochs/trial, null backend",
            extra={"wall_s": got["wall_s"], "mean_ms": 1000 * got["wall_s"] / max(got["n"], 1)},
        )
    ]


# --- logging overhead: tracking on vs off ------------------------------------------------------


class _NullRun:
    def log_metrics(self, metrics: Any, step: int = 0) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def log_texts(self, texts: Any) -> None: ...
    def set_tags(self, tags: Any) -> None: ...
    def flush(self) -> None: ...
    def end(self, state: str, reason: str = "") -> None: ...


class NullTracker:
    """Stands in for ``protolab.tracking.Tracker`` with tracking off."""

    def child(self, name: str, tags: Any, params: Any) -> _NullRun:
        return _NullRun()

    def end(self, status: str = "FINISHED") -> None: ...


def measure_logging(
    quick: bool, log: Callable[[str], None] = print, smoke: bool = False
) -> list[Row]:
    """Tiny trials through ``run_once`` (Optuna in memory): tracking off, inline, async."""
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = 2 if smoke else 3 if quick else 10
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tracking cost is the question; 1 thread keeps trials steady
    try:
        return _logging_rows(n)
    finally:
        torch.set_num_threads(threads)


def _logging_rows(n: int) -> list[Row]:
    import optuna

    from protolab.backends import NAMES
    from protolab.config import load_config
    from protolab.sweep import prepare, run_once
    from protolab.sweep._callbacks import KeepCheckpoints
    from protolab.tracking import AsyncTracker, Tracker
    from protolab.tracking._writer import take_writer

    times: dict[str, list[float]] = {"async": [], "inline": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="protolab-bench-") as tmp:
        path = write_project(Path(tmp), train={"epochs": 5})
        cfg, script = load_config(path, backends=NAMES)
        ctx = prepare(cfg, path, script)
        db = Path(tmp) / "mlruns" / "mlflow.db"  # seeded by write_project
        trackers = {
            # the sweep's own: a writer process making the calls, on the same store
            "async": AsyncTracker(take_writer(), f"sqlite:///{db}", "bench", "bench").wait_open(),
            "inline": Tracker(f"sqlite:///{db}", "bench-inline", "bench-inline"),
            "off": NullTracker(),
        }
        studies = {
            mode: optuna.create_study(
                direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
            )
            for mode in times
        }
        warm = studies["off"].ask()  # first-use costs (imports, thread pools) outside the timing
        run_once(ctx, NullTracker(), warm, "warm")
        # checkpoints kept as a sweep keeps them (none with tracking off: nowhere to go)
        keeping = {m: [KeepCheckpoints(ctx, t)] for m, t in trackers.items() if m != "off"}
        modes = list(times)
        for i in range(n):
            for mode in modes[i % 3 :] + modes[: i % 3]:  # rotate the order every trial
                study = studies[mode]
                trial = study.ask()
                t0 = time.perf_counter()
                for cb in keeping.get(mode, []):
                    cb.on_trial_start(trial)
                out = run_once(ctx, trackers[mode], trial, f"t{i}", callbacks=keeping.get(mode, []))
                study.tell(trial, out.value)
                times[mode].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        trackers["async"].end()  # waits for the writer to finish every queued write
        drain_ms = (time.perf_counter() - t0) * 1000
        trackers["inline"].end()
    off = median(times["off"])
    common = {"n": n, "unit": "ms/trial", "metric": "run_once"}
    note = "tiny digits MLP, 5 epochs, lightning (1 thread); Optuna in memory"
    rows = [
        Row("logging", "tiny trial", "tracking off", median=off, p90=p90(times["off"]), **common)
    ]
    for mode, title in (
        ("inline", "tracking inline (MLflow SQLite, same process)"),
        ("async", "tracking on (MLflow SQLite, writer process)"),
    ):
        on = median(times[mode])
        extra = {"added_ms": on - off, "share_of_trial": (on - off) / on}
        if mode == "async":
            extra["drain_at_end_ms"] = drain_ms
        rows.append(
            Row(
                "logging",
                "tiny trial",
                title,
                median=on,
                p90=p90(times[mode]),
                ratio=on / off,
                ratio_to="tracking off",
                note=note,
                extra=extra,
                **common,
            )
        )
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "null-sweep":
        null_sweep_child(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: _sweep_overhead.py null-sweep DIR N_TRIALS")
