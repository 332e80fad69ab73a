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
from pathlib import Path
from typing import Any

__all__ = ["cpu_name", "peak_tflops"]

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


def peak_tflops(kind: str, name: str, dtype: str = "float32", threads: int = 0) -> float:
    """Measured peak TFLOP/s of a ``cpu`` or ``cuda`` device for ``dtype``; cached on disk.

    Reading the cache imports nothing heavy; only a missing entry runs the torch probe.
    """
    key = f"{socket.gethostname()}|{kind}|{name}|{dtype}|{threads}"
    path = _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return float(cache[key])
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        device = torch.device("cuda" if kind == "cuda" else "cpu")
        value = _probe(torch, device, getattr(torch, dtype), _SIZE.get(kind, 2048))
    finally:
        torch.set_num_threads(previous)
    cache[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: concurrent workers never read half a file
    except OSError:
        pass  # a read-only home still gets the measured value, just not cached
    return value


def _probe(torch: Any, device: Any, dtype: Any, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.matmul(a, b)  # warm-up: kernels selected, caches and clocks up
    sync()
    best = float("inf")
    deadline = time.perf_counter() + _BUDGET_S
    for i in range(_MAX_REPEATS):  # best of many: a busy neighbour only slows some runs
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
        if i >= _MIN_REPEATS and time.perf_counter() > deadline:
            break
    return 2 * n**3 / best / 1e12
