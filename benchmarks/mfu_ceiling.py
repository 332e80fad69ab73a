"""How much of the GEMM peak a model's own matrix shapes can reach: the ceiling under MFU.

The harness's MFU divides a step's useful FLOP/s by the peak of a 2048x2048 float32
``torch.mm``. A small model's matrices are far smaller than that, and a small GEMM cannot
fill the cores however the framework calls it. This runs only the GEMMs of one training
step of each MLP in the harness (forward ``x @ W``, backward ``dY @ W.T`` and ``X.T @ dY``
per dense layer, at the harness's batch), back to back with nothing else, and reports their
FLOP/s against the same peak: no framework can exceed that fraction on those shapes.

Run: ``python benchmarks/mfu_ceiling.py``. Prints one line per model and the peak.
"""

from __future__ import annotations

import itertools
import time

import torch

MODELS = {  # harness name: (layer widths from input to output, batch)
    "mlp-small": ([64, 256, 256, 10], 64),
    "mlp-wide": ([64, 2048, 2048, 10], 256),
}
REPEATS = 200


def best_seconds(fn: object, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls (anything else running only slows a call)."""
    assert callable(fn)
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / best_seconds(lambda: torch.mm(a, b), 30) / 1e9


def step_gemms(widths: list[int], batch: int) -> tuple[float, float]:
    """(FLOPs, best seconds) of one training step's GEMMs for a dense stack."""
    mats = []
    flops = 0.0
    for n_in, n_out in itertools.pairwise(widths):
        x, w, dy = torch.randn(batch, n_in), torch.randn(n_in, n_out), torch.randn(batch, n_out)
        mats.append((x, w, dy))
        flops += 3 * 2 * batch * n_in * n_out  # forward, grad of input, grad of weight

    def run() -> None:
        for x, w, dy in mats:
            torch.mm(x, w)
            torch.mm(dy, w.T)
            torch.mm(x.T, dy)

    return flops, best_seconds(run, REPEATS)


def main() -> None:
    peak = peak_gflops()
    print(f"GEMM peak (2048x2048 torch.mm, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s")
    for name, (widths, batch) in MODELS.items():
        flops, seconds = step_gemms(widths, batch)
        gflops = flops / seconds / 1e9
        print(
            f"{name}: the step's GEMMs alone {seconds * 1e3:.3f} ms, {gflops:.1f} GFLOP/s = "
            f"{gflops / peak:.0%} of the peak (the MFU ceiling on these shapes)"
        )


if __name__ == "__main__":
    main()
