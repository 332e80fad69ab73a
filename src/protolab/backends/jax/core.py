"""JAX set-up: devices, CPU threads and the peak probe."""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["device_kind", "gemm", "set_threads"]


def set_threads(n: int | None) -> None:
    """CPU threads for XLA: read when JAX's CPU client starts (the first computation)."""
    if n is None or "--xla_cpu_multi_thread_eigen" in os.environ.get("XLA_FLAGS", ""):
        return
    if n == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def device_kind() -> str:
    """``cpu``, ``cuda`` or ``tpu``: where JAX puts arrays by default."""
    platform = jax.default_backend()
    return "cuda" if platform == "gpu" else platform


def gemm(n: int, dtype: str) -> Callable[[], None]:
    """One synchronous n x n matmul (the MFU peak probe), in JAX."""
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (n, n), dtype=getattr(jnp, dtype))
    b = jax.random.normal(key, (n, n), dtype=getattr(jnp, dtype))
    mm = jax.jit(jnp.matmul)

    def run() -> None:
        mm(a, b).block_until_ready()

    return run
