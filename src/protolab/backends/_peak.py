"""The device's peak matmul throughput, measured once per machine, device and dtype.

MFU needs a denominator. Spec-sheet peaks are wrong for most CPUs (turbo, AVX clocks,
thread count), so we measure: a few large square GEMMs, best of several runs, in the dtype
and thread count the trials use. The result is cached in a small JSON file
(``~/.cache/protolab/peak.json``, override with ``$PROTOLAB_CACHE``) keyed by host, device
name, dtype and threads, so only the first trial on a machine pays ~1 s for the probe.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["GemmFactory", "cpu_name", "peak_tflops"]

_SIZE = {"cpu": 1024, "cuda": 8192}
_MIN_REPEATS, _MAX_REPEATS, _BUDGET_S = 5, 200, 1.0


def _cache_path() -> Path:
    root = os.environ.get("PROTOLAB_CACHE") or Path.home() / ".cache" / "protolab"
    return Path(root) / "peak.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# (n, dtype) -> a callable running one synchronous n x n GEMM in the job's own framework.
GemmFactory = Callable[[int, str], Callable[[], None]]


def peak_tflops(kind: str, name: str, dtype: str, threads: int, gemm: GemmFactory) -> float:
    """Measured peak TFLOP/s of a ``cpu`` or ``cuda`` device for ``dtype``; cached on disk.

    Reading the cache imports nothing; a missing entry runs the probe in the framework the
    job already loaded (``gemm``), so a TensorFlow-only sweep never imports torch.
    """
    key = f"{socket.gethostname()}|{kind}|{name}|{dtype}|{threads}"
    path = _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return float(cache[key])
    value = _probe(gemm(_SIZE.get(kind, 2048), dtype), _SIZE.get(kind, 2048))
    cache[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: concurrent workers never read half a file
    except OSError:
        pass  # a read-only home still gets the measured value, just not cached
    return value


def _probe(matmul: Callable[[], None], n: int) -> float:
    matmul()  # warm-up: kernels selected, caches and clocks up
    best = float("inf")
    deadline = time.perf_counter() + _BUDGET_S
    for i in range(_MAX_REPEATS):  # best of many: a busy neighbour only slows some runs
        t0 = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - t0)
        if i >= _MIN_REPEATS and time.perf_counter() > deadline:
            break
    return 2 * n**3 / best / 1e12
