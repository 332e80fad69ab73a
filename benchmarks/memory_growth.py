"""Memory over many trials in one worker: does framework state leak between trials?

Runs N tiny trials per backend in one process (as a long sweep does) and prints the
resident set after 10 and after N trials. Usage: python benchmarks/memory_growth.py [N]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(n: int = 100) -> None:
    from protolab import Arch
    from protolab import layers as L
    from protolab.backends import Hardware, Job, TrainSettings, get_backend
    from protolab.backends._timing import peak_rss_mb
    from protolab.data import load_dataset

    ds = load_dataset("digits")
    hw = Hardware(accelerator="cpu")
    settings = TrainSettings(epochs=1, batch_size=128, optimizer="adam", lr=1e-3)
    for name in ("lightning", "keras"):
        backend = get_backend(name)
        marks = {}
        for i in range(1, n + 1):
            width = 8 + i % 7  # a new architecture each trial, as in a sweep
            arch = Arch(L.Flatten(), L.Dense(width, "relu"), L.Dropout(0.1), L.Dense(10))
            try:
                backend.run(Job(arch, ds, settings, hw))
            finally:
                backend.release()
            if i in (10, n):
                marks[i] = rss_mb()
        growth = marks[n] - marks[10]
        print(
            f"{name:9s} rss after 10 trials {marks[10]:7.1f} MB, after {n}: {marks[n]:7.1f} MB "
            f"(+{growth:.1f} MB, {growth / (n - 10) * 1000:.0f} kB/trial); "
            f"process peak {peak_rss_mb():.1f} MB"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
