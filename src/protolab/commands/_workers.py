"""``protolab sweep CONFIG --workers N|auto``: N ordinary workers on this host, one study.

Each worker is the same ``protolab sweep`` command in its own process (own framework
import, own tracking writer), so it is exactly what a second terminal would start, and the
study's locks and leases keep them apart. With GPUs each worker sees one device
(``CUDA_VISIBLE_DEVICES``, recorded on its trials as ``protolab.cuda_visible_devices``);
without, each gets ``cores // N`` threads (``hardware.threads``) unless the config or an
override sets them. ``auto`` is one worker per GPU, else one per core.

Imports: on Linux the launcher imports the fork-safe frameworks (PyTorch) once while a
writer pool imports MLflow once (tracking/_pool.py), then forks every worker from itself
(commands/_forked.py), each with a writer forked from the pool: N workers start about as
soon as one does. ``PROTOLAB_WORKERS_FORK=0`` starts each as a new process instead.
Each worker gets its index (``PROTOLAB_WORKER_INDEX``), which seeds its sampler apart.

Memory: TensorFlow keeps every program it compiled for the life of the process (~13 MB a
trial measured), so a worker that ran ``hardware.recycle_after`` trials with a static
backend stops (exit 75) and the launcher starts a fresh one in its place.

Output: workers write to ``mlruns/workers/worker-K.log``; the launcher prints a line per
worker as it ends and then the summary table of the last one (it covers the whole study).
Ctrl-C (or SIGTERM) is passed to every worker: each cleans up its trial and exits, and the
launcher exits 130/143 once they all have. A second Ctrl-C is passed on too (workers stop
at once; the next run reaps what was left).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from protolab.errors import UserInputError

if TYPE_CHECKING:
    from protolab.commands._forked import Entry
    from protolab.tracking import WriterPool

__all__ = [
    "FORK_ENV", "Plan", "Worker", "gpu_ids", "launch", "parse_workers", "plan_workers",
    "run_workers",
]  # fmt: skip

FORK_ENV = "PROTOLAB_WORKERS_FORK"  # 0: every worker a new process (imports its frameworks)


@dataclass(frozen=True)
class Plan:
    count: int
    threads: int | None  # per worker (None: the config's own setting stands)
    devices: list[str]  # CUDA_VISIBLE_DEVICES per worker ([] on CPU)
    recycle_after: int | None = None  # static trials before a worker is replaced
    preload: tuple[str, ...] = ()  # imported once here, then the workers are forked
    tracking_uri: str = ""  # what the forked workers' writers will open (SQL: preloaded)


def parse_workers(text: str) -> int | None:
    """``auto`` -> None, a positive integer -> it; anything else is exit 2."""
    if text.strip().lower() == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1 or n > 1024:
        raise UserInputError(f"--workers: expected a number 1-1024 or 'auto', but got {text!r}")
    return n


def gpu_ids() -> list[str]:
    """GPUs this process may use, without importing a framework (nvidia-smi; the env)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def plan_workers(requested: int | None, config_threads: int | None, accelerator: str) -> Plan:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    gpus = gpu_ids() if accelerator in ("auto", "gpu") else []
    count = requested or (len(gpus) or cores)
    devices = [gpus[i % len(gpus)] for i in range(count)] if gpus else []
    threads = config_threads or max(1, cores // count)
    return Plan(count, threads if config_threads is None else None, devices)


class Worker(Protocol):
    """What the launcher needs of a worker process (``subprocess.Popen`` or forked)."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def send_signal(self, signum: int) -> None: ...


def _start_one(
    args: list[str],
    plan: Plan,
    logs: Path,
    k: int,
    fork: Entry | None,
    writers: Sequence[Any] = (),
) -> Worker:
    """Worker ``k`` in its own session: a terminal's Ctrl-C reaches the launcher only,
    which passes it on once (twice would make a worker stop at once). Forked from this
    process when it preloaded the frameworks (see _forked.py), running the command line's
    entry point ``fork`` with writer ``k`` of ``writers`` (tracking/_pool.py) if given;
    else (``fork`` None) a new process. A recycled worker's successor appends to the same
    log (and starts its own writer)."""
    from protolab.commands._forked import ForkedWorker
    from protolab.sweep import RECYCLE_ENV
    from protolab.sweep._lease import INDEX_ENV

    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, INDEX_ENV[0]: str(k)}  # samplers seeded apart (sweep/_lease.py)
    if plan.devices:
        env["CUDA_VISIBLE_DEVICES"] = plan.devices[k]
    if plan.recycle_after:
        env[RECYCLE_ENV] = str(plan.recycle_after)
    argv = [*args, *([f"hardware.threads={plan.threads}"] if plan.threads else [])]
    log = logs / f"worker-{k}.log"
    if fork is not None:
        return ForkedWorker(fork, argv, log, env, writers, k)
    cmd = [sys.executable, "-m", "protolab.cli", "sweep", *argv]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, env=env, start_new_session=True)


def launch(args: list[str], plan: Plan, logs: Path, entry: Entry) -> int:
    """Start the workers, pass signals on, wait for all; the worst exit code.

    ``entry``: the command line's ``main``, which a forked worker runs (see _forked.py).
    """
    procs: list[Worker] = []
    got: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        got.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        fork = entry if plan.preload else None
        pool = _start_all(args, plan, logs, procs, got, fork)
        if not procs:  # interrupted before any worker started
            return 128 + got[0]
        where = f"; GPUs {','.join(plan.devices)}" if plan.devices else ""
        threads = f", {plan.threads} threads each" if plan.threads else ""
        print(f"{plan.count} workers{threads}{where}; logs in {logs}/", flush=True)
        codes = _wait_all(procs, logs, lambda k: _start_one(args, plan, logs, k, fork), got)
        if pool is not None:
            pool.join()  # its writers have read EOF from their ended workers
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if got:
        return 128 + got[0]
    return max(codes, key=lambda c: (c != 0, abs(c)))


def _start_all(
    args: list[str],
    plan: Plan,
    logs: Path,
    procs: list[Worker],
    got: list[int],
    fork: Entry | None,
) -> WriterPool | None:
    """Start the workers into ``procs`` (none once a signal came). With ``fork`` (the
    entry point, given when ``plan.preload`` names modules) the frameworks and MLflow are
    imported once, side by side (here and in the writer pool, returned), and every worker
    is forked with both imported and runs ``fork``; else each is a new process."""
    from protolab.commands._forked import preload
    from protolab.tracking import WriterPool

    logs.mkdir(parents=True, exist_ok=True)
    for k in range(plan.count):
        (logs / f"worker-{k}.log").unlink(missing_ok=True)
    if fork is None:
        procs += [_start_one(args, plan, logs, k, fork=None) for k in range(plan.count)]
        return None
    pool = WriterPool([logs / f"worker-{k}.log" for k in range(plan.count)], plan.tracking_uri)
    try:
        seconds = preload(list(plan.preload))
        print(f"imported {', '.join(plan.preload)} once for the workers ({seconds:.1f} s)")
        for k in range(plan.count):
            if not got:
                procs.append(_start_one(args, plan, logs, k, fork, writers=pool.ends))
    finally:
        pool.release()  # a writer whose worker never started sees EOF and exits
    return pool


def _wait_all(
    procs: list[Worker],
    logs: Path,
    restart: Callable[[int], Worker],
    signalled: list[int],
) -> list[int]:
    """Wait for every worker, starting a fresh one in the place of each that asks to be
    recycled (unless a signal came); then show the output of the one that ended last."""
    from protolab.sweep import EXIT_RECYCLE

    codes: dict[int, int] = {}
    last = 0
    while len(codes) < len(procs):
        for k, p in enumerate(procs):
            code = None if k in codes else p.poll()
            if code is None:
                continue
            if code == EXIT_RECYCLE and not signalled:
                print(f"worker {k} (pid {p.pid}) recycled (hardware.recycle_after)", flush=True)
                procs[k] = restart(k)
                continue
            codes[k], last = code, k
            print(f"worker {k} (pid {p.pid}) exited {code}", flush=True)
        time.sleep(0.2)
    text = (logs / f"worker-{last}.log").read_text(errors="replace")
    print(text[-6000:], end="", flush=True)
    return [0 if codes[k] == EXIT_RECYCLE else codes[k] for k in range(len(procs))]


def run_workers(
    config: Path, overrides: list[str], workers: str, args: list[str], entry: Entry
) -> int:
    """``--workers``: check everything first (exit 2), then launch; the exit code.

    ``entry`` is the command line's ``main``: the command line hands it in, so that
    commands never import the command line (a forked worker runs it, see _forked.py).
    """
    from protolab._stores import default_tracking_uri
    from protolab.backends import NAMES, fork_safe_modules
    from protolab.config import load_config

    requested = parse_workers(workers)
    cfg, _ = load_config(config, overrides, backends=NAMES)
    plan = plan_workers(requested, cfg.hardware.threads, cfg.hardware.accelerator)
    fork = sys.platform.startswith("linux") and os.environ.get(FORK_ENV, "1") != "0"
    preload = tuple(fork_safe_modules(list(cfg.backends))) if fork else ()
    uri = cfg.tracking.uri or default_tracking_uri()
    plan = dataclasses.replace(
        plan, recycle_after=cfg.hardware.recycle_after, preload=preload, tracking_uri=uri
    )
    return launch(args, plan, Path.cwd() / "mlruns" / "workers", entry)
