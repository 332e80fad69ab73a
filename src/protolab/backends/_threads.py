"""``hardware.threads``: cap the CPU threads a trial's framework uses inside one op.

Why a knob and not only ``OMP_NUM_THREADS``: several local workers on one study (``protolab
sweep`` started more than once on the same config) share the machine's cores. With every
worker running an all-cores intra-op pool, small GEMMs thrash under contention (2 threads
per trial on 2 busy cores ran ~5x slower than 1). threads = cores / workers keeps each
worker on its own cores. Environment variables still work, but must be set before the
framework loads and are easy to forget; the config travels with the study.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import sys
from collections.abc import Callable, Hashable
from typing import Any

__all__ = [
    "ThreadProbe",
    "chosen_threads",
    "mkl_local_threads",
    "pin_loaded_frameworks",
    "set_tf_threads",
    "set_torch_threads",
    "torch_default_threads",
]

_TORCH_DEFAULT: list[int] = []  # torch's own thread count, read before protolab changes it
_MKL_UNTOUCHED: list[bool] = []  # MKL as torch leaves it until set_num_threads is called
_CHOSEN: dict[Hashable, int] = {}  # architecture key -> threads an eager probe chose


def pin_loaded_frameworks(n: int | None) -> None:
    """Apply ``n`` now to each framework the experiment script already imported.

    A script that builds a compiled ``keras.Model`` or a ``tf.data`` pipeline starts
    TensorFlow's runtime in the sweep's own dry run, before any trial could set its pools:
    called right after the script is imported, this is the first setting TF sees. Imports
    nothing: a framework the script did not import is set by its trials as before.
    """
    if n is None:
        return
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "config"):
        set_tf_threads(tf, n)
    if "torch" in sys.modules:
        set_torch_threads(n)


def set_torch_threads(n: int | None) -> None:
    """Set torch's intra-op thread pool to ``n`` threads; ``None`` leaves torch's default.

    ``torch.set_num_threads`` may be called at any time, so every trial applies its own value.
    The inter-op pool is left alone: eager training does not use it, and
    ``torch.set_num_interop_threads`` raises once any inter-op work has started.
    """
    import torch

    default = torch_default_threads()  # read before the first change, or it reads ours
    n = n if n is not None else default
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
        if n == default and _MKL_UNTOUCHED[0]:
            _restore_mkl()


def torch_default_threads() -> int:
    """torch's intra-op thread count before protolab set any: what ``None`` restores, so a
    trial whose probe chose 1 thread does not leave the next trial with 1."""
    if not _TORCH_DEFAULT:
        import torch

        _TORCH_DEFAULT.append(torch.get_num_threads())
        _MKL_UNTOUCHED.append(mkl_local_threads() == 0)
    return _TORCH_DEFAULT[0]


@functools.cache
def _mkl() -> Any:
    """MKL's C service API inside torch's CPU library, or None (a build without MKL: ARM,
    macOS). Its documented functions; torch exports the ones it calls itself. Looked up
    once per process."""
    import ctypes
    import os

    import torch

    if not torch.backends.mkl.is_available():
        return None
    folder = os.path.join(os.path.dirname(torch.__file__), "lib")
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        try:
            lib = ctypes.CDLL(os.path.join(folder, name))
            lib.MKL_Set_Dynamic, lib.MKL_Set_Num_Threads_Local  # noqa: B018 (both exported)
        except (OSError, AttributeError):
            continue
        return lib
    return None


def mkl_local_threads() -> int | None:
    """This thread's MKL thread count as torch set it (0: none set, MKL's own choice per
    call), read by setting it and putting it back; None without MKL."""
    lib = _mkl()
    if lib is None:
        return None
    found = int(lib.MKL_Set_Num_Threads_Local(0))  # returns the value it replaces
    lib.MKL_Set_Num_Threads_Local(found)
    return found


def _restore_mkl() -> None:
    """Put MKL back as it was before any ``torch.set_num_threads``.

    That call also fixes MKL's thread count for the thread and turns MKL's dynamic
    adjustment off, so every small GEMM then runs on all threads: a transformer-encoder
    step on 2 cores went from 2.9 to 3.45 ms (5 of 5 processes) after
    ``torch.set_num_threads(2)``, the count it already had; putting both back gave 2.9
    again (either alone did not). A probe that tried 1 thread and went back to torch's
    default must leave torch as a user's own loop has it.
    """
    import os

    lib = _mkl()
    if lib is None:
        return
    lib.MKL_Set_Num_Threads_Local(0)  # follow MKL's global setting (MKL_NUM_THREADS, cores)
    dynamic = os.environ.get("MKL_DYNAMIC", "true").strip().lower() not in ("false", "0", "no")
    lib.MKL_Set_Dynamic(int(dynamic))


def chosen_threads(key: Hashable) -> int | None:
    """The thread count a finished probe chose for ``key`` in this process, if any: a
    compiled program bakes its thread count into its kernels when it compiles, so it
    cannot probe (each count recompiles), but can reuse its eager twin's choice."""
    return _CHOSEN.get(key)


def set_tf_threads(tf: Any, n: int | None) -> None:
    """Set TensorFlow's intra- and inter-op thread pools to ``n``; ``None`` leaves the default.

    TF reads these only when its runtime initialises, i.e. before the first op runs in the
    process; afterwards the setters raise ``RuntimeError``. That error is swallowed here, so
    the first value wins for the process: a later trial asking for a different count trains
    with the pools already built rather than crashing (the ``tf_intra_threads`` tag records
    what TF actually uses). Within one sweep every trial has the same config, so in practice
    this only matters when one process runs jobs with different settings.
    """
    if n is None:
        return
    threading = tf.config.threading
    with contextlib.suppress(RuntimeError):  # runtime already initialised: first value wins
        threading.set_intra_op_parallelism_threads(n)
    with contextlib.suppress(RuntimeError):
        threading.set_inter_op_parallelism_threads(n)


class ThreadProbe:
    """Chooses the intra-op thread count by timing the training's own first steps.

    Why measure: with OpenMP's default spin-waiting, a 2-thread step collapses beside any
    busy process (a second worker, the tracking writer, another job: a 1024-wide MLP 23.7
    ms a step against 11.7 ms on one thread), while on a quiet machine the second thread
    is worth having on all but the smallest models; sleeping threads
    (``OMP_WAIT_POLICY=PASSIVE``) instead make each op of a small model pay a wake-up
    (3.2x a plain loop). Which count wins depends on the model and on what else runs now,
    so the loop times blocks of its real steps at each count (``ABBA`` order, so a drift
    of the machine hits both alike; the first step after a switch is dropped) and keeps
    the fastest (``benchmarks/threads.py``). Nothing extra is trained: the probe's steps
    are the training's steps, each a full step at some thread count. The default count is
    kept unless another is faster by ``MARGIN``, so near-ties (where a choice would flip
    between runs) stay on the framework's default.

    Each count is judged by its faster block (the median of a block's steps; two blocks a
    count). Something else running only ever adds time, and a burst of it that lands in
    one block must not decide: an LSTM whose 2-thread steps take 2.03 ms chose 1 thread
    (2.9 ms) after 2-thread blocks timed at 3.35 on a noisy host. A neighbour that stays
    (the case the probe is for) slows both blocks of the count it contends with.
    """

    BLOCK = 4  # steps per block: the first is dropped, the median of the other 3 kept
    WARMUP = 4  # first steps not timed: allocator and caches warming would favour the later
    LENGTH = WARMUP + 4 * BLOCK  # steps from the first timed one to the choice
    MARGIN = 0.10

    def __init__(
        self, default: int, set_threads: Callable[[int], None], key: Hashable = None
    ) -> None:
        self.default, self.set_threads, self.key = default, set_threads, key
        one = [1] if default > 1 else []
        self.order = [default, *one, *one, default] if one else []  # ABBA
        self.samples: dict[int, list[float]] = {}  # count -> its blocks' medians
        self.block: list[float] = []
        self.warmup = self.WARMUP
        self.chosen: int | None = None if self.order else default
        if self.order:
            set_threads(self.order[0])

    @property
    def done(self) -> bool:
        return self.chosen is not None

    def feed(self, step_s: float) -> bool:
        """One step's time at the current count; True once a count is chosen (and set)."""
        if self.chosen is not None:
            return True
        if self.warmup > 0:
            self.warmup -= 1
            return False
        self.block.append(step_s)
        if len(self.block) < self.BLOCK:
            return False
        count = self.order.pop(0)
        self.samples.setdefault(count, []).append(statistics.median(self.block[1:]))
        self.block = []
        if self.order:
            self.set_threads(self.order[0])
            return False
        self.chosen = self._choose()
        self.set_threads(self.chosen)
        if self.key is not None:
            _CHOSEN[self.key] = self.chosen
        return True

    def _choose(self) -> int:
        fastest = {n: min(v) for n, v in self.samples.items()}
        best = min(fastest, key=fastest.__getitem__)
        if fastest[best] < fastest[self.default] * (1 - self.MARGIN):
            return best
        return self.default

    def rule(self) -> str:
        """The ``threads_rule`` tag: what was measured (each count's faster block), in ms
        per step."""
        if not self.samples:
            return "default"
        timed = ", ".join(f"{n}: {min(v) * 1e3:.3g} ms" for n, v in sorted(self.samples.items()))
        return f"measured ({timed})" if self.done else f"probing ({timed})"


def torch_thread_plan(
    threads: int | None,
    on_cpu: bool,
    ranks: int,
    compiled: bool,
    key: Hashable,
    steps: int | None = None,
) -> tuple[ThreadProbe | None, str]:
    """How a torch trial gets its thread count: a probe to feed, or none, and why (the
    ``threads_rule`` tag). Sets the count a trial without a probe starts with.

    ``steps``: the trial's training steps, where known. A trial too short for the probe
    to finish and then train at least as long at its choice keeps the default: an
    unfinished probe would leave it on whichever count its last block tried.
    """
    set_torch_threads(threads)
    default = torch_default_threads()
    if threads is not None:
        return None, "hardware.threads"
    if steps is not None and steps < 2 * ThreadProbe.LENGTH:
        return None, f"default (a trial of {steps} steps is too short to measure)"
    if not on_cpu:
        return None, "default (accelerator)"
    if ranks > 1:
        return None, "default (DDP ranks)"
    if default == 1:
        return None, "default (one thread)"
    if compiled:
        chosen = chosen_threads(key)
        if chosen is None:  # each count is a compile of its own: no probe
            return None, "default (compiled kernels fix their count; no eager probe yet)"
        set_torch_threads(chosen)
        return None, "eager probe"
    return ThreadProbe(default, set_torch_threads, key), "probe"
