"""The thread rule: a torch thread count chosen by timing the first real training steps
(``protolab.backends._threads.ThreadProbe``), recorded in ``threads_rule`` and
``torch_threads`` (benchmarks/threads.py is the measurement the rule stands on)."""

from __future__ import annotations

import pytest

from protolab import Arch
from protolab import layers as L
from protolab.backends import Hardware, Job, TrainSettings, get_backend
from protolab.backends._threads import ThreadProbe, torch_default_threads
from protolab.data import load_dataset

BLOCK = ThreadProbe.BLOCK


def _probe(times: dict[int, float], default: int = 2) -> tuple[ThreadProbe, list[int]]:
    """Feed a probe steps that take ``times[count]`` at each count; return it and the
    counts it set, in order."""
    set_calls: list[int] = []
    current = [default]

    def set_threads(n: int) -> None:
        set_calls.append(n)
        current[0] = n

    probe = ThreadProbe(default, set_threads)
    for _ in range(ThreadProbe.WARMUP + 4 * BLOCK):
        if probe.feed(times[current[0]]):
            break
    return probe, set_calls


def test_probe_keeps_the_faster_count_in_abba_order() -> None:
    probe, calls = _probe({2: 2.4e-3, 1: 0.6e-3})
    assert probe.done and probe.chosen == 1
    assert calls == [2, 1, 1, 2, 1]  # ABBA blocks, then the choice
    assert probe.rule() == "measured (1: 0.6 ms, 2: 2.4 ms)"


def test_probe_keeps_the_default_on_a_near_tie() -> None:
    probe, _ = _probe({2: 1.0e-3, 1: 0.95e-3})  # 5 % faster: inside the margin
    assert probe.chosen == 2
    probe, _ = _probe({2: 10e-3, 1: 20e-3})  # a wide model: all cores
    assert probe.chosen == 2


def test_probe_drops_the_first_step_after_a_switch() -> None:
    """A block's first step pays the switch (threads waking): it must not decide."""
    set_calls: list[int] = []
    current = [2]

    def set_threads(n: int) -> None:
        set_calls.append(n)
        current[0] = n

    probe = ThreadProbe(2, set_threads)
    for _ in range(ThreadProbe.WARMUP):
        probe.feed(1.0)  # warm-up steps: never counted, however slow
    fed = 0
    while not probe.done:
        first = fed % BLOCK == 0
        # 1 thread: one very slow first step per block, fast otherwise
        probe.feed(50e-3 if first and current[0] == 1 else (0.5e-3 if current[0] == 1 else 2e-3))
        fed += 1
    assert probe.chosen == 1


def test_a_single_thread_default_needs_no_probe() -> None:
    probe = ThreadProbe(1, lambda n: None)
    assert probe.done and probe.chosen == 1 and probe.rule() == "default"


SETTINGS = TrainSettings(epochs=3, batch_size=64, optimizer="adam", lr=1e-3, seed=0)


def _run(backend: str, threads: int | None, settings: TrainSettings = SETTINGS) -> dict[str, str]:
    hw = Hardware(accelerator="cpu", threads=threads)
    arch = Arch(L.Flatten(), L.Dense(32, "relu"), L.Dense(10))
    return get_backend(backend).run(Job(arch, load_dataset("digits"), settings, hw)).tags


def test_a_trial_too_short_to_measure_keeps_the_default_count() -> None:
    """An unfinished probe would leave the trial on whichever count its last block tried
    (a wide MLP of 12 steps trained at 1 thread: 90 against 50 ms a step)."""
    import dataclasses

    if torch_default_threads() == 1:
        pytest.skip("one core: nothing to choose")
    short = dataclasses.replace(SETTINGS, epochs=1)
    tags = _run("lightning", None, short)
    assert tags["threads_rule"].startswith("default (a trial of ")
    assert tags["torch_threads"] == str(torch_default_threads())


def test_lightning_tags_the_measured_choice_and_the_next_trial_starts_from_the_default() -> None:
    import torch

    default = torch_default_threads()
    tags = _run("lightning", None)
    if default == 1:  # a one-core machine: nothing to choose
        assert tags["threads_rule"] == "default (one thread)"
        return
    rule = tags["threads_rule"]
    assert rule.startswith("measured (1: ") and f", {default}: " in rule, rule
    chosen = int(tags["torch_threads"])
    assert chosen in (1, default)
    # the next trial probes again from torch's own default, whatever this one chose
    assert _run("lightning", None)["threads_rule"].startswith("measured")
    assert torch.get_num_threads() in (1, default)


def test_hardware_threads_overrides_the_probe() -> None:
    import torch

    try:
        tags = _run("lightning", 1)
    finally:
        torch.set_num_threads(torch_default_threads())
    assert tags["threads_rule"] == "hardware.threads" and tags["torch_threads"] == "1"


@pytest.mark.slow
def test_a_compiled_program_reuses_its_eager_twins_choice() -> None:
    """torch.compile bakes the count into its kernels (each count recompiles), so the
    compiled mode takes the eager probe's choice for the same architecture."""
    if torch_default_threads() == 1:
        pytest.skip("one core: no choice to reuse")
    eager = _run("lightning", None)
    compiled = _run("torch-compile", None)
    assert compiled["threads_rule"] == "eager probe"
    assert compiled["torch_threads"] == eager["torch_threads"]


_MKL_AFTER_PROBE = """
import sys
import torch
from protolab.backends._threads import (
    ThreadProbe, mkl_local_threads, set_torch_threads, torch_default_threads)

if sys.argv[2] == "user-set":  # the user's own script fixed the count first
    torch.set_num_threads(torch.get_num_threads())
default = torch_default_threads()
before = mkl_local_threads()
fast = int(sys.argv[1])  # the count whose steps are fast: the probe keeps it
probe = ThreadProbe(default, set_torch_threads)
while not probe.feed(1e-3 if torch.get_num_threads() == fast else 5e-3):
    pass
print(default, before, probe.chosen, torch.get_num_threads(), mkl_local_threads())
"""


def _after_probe(fast: str, how: str = "untouched") -> list[int]:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _MKL_AFTER_PROBE, fast, how],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return [int(v) for v in out.stdout.split()]


def test_a_probe_that_keeps_the_default_leaves_mkl_as_torch_had_it() -> None:
    """``torch.set_num_threads`` fixes MKL's per-thread count and turns its dynamic choice
    off (a transformer step 2.9 -> 3.45 ms at the same count): a probe that went to 1
    thread and back must undo that, so the trial trains as a user's own loop would.
    A fresh process each: MKL's state is per process and thread."""
    from protolab.backends._threads import mkl_local_threads

    if torch_default_threads() == 1 or mkl_local_threads() is None:
        pytest.skip("one core or no MKL: no probe, or nothing to restore")
    default, before, chosen, now, mkl = _after_probe(str(torch_default_threads()))
    assert (before, chosen, now) == (0, default, default)
    assert mkl == 0  # MKL's own choice again, as before the probe (not `default`)
    _, _, chosen, now, mkl = _after_probe("1")  # 1 thread kept: MKL is set to 1
    assert (chosen, now, mkl) == (1, 1, 1)
    default, before, chosen, _, mkl = _after_probe(str(default), "user-set")
    assert before == default and chosen == default and mkl == default  # theirs, kept


def _probe_blocks(block_s: list[float]) -> ThreadProbe:
    """A probe fed one step time per block (ABBA: 2, 1, 1, 2), its warm-up at the first."""
    probe = ThreadProbe(2, lambda n: None)
    for _ in range(ThreadProbe.WARMUP):
        probe.feed(block_s[0])
    for t in block_s:
        for _ in range(BLOCK):
            probe.feed(t)
    assert probe.done
    return probe


def test_a_burst_in_one_block_does_not_decide_but_a_neighbour_that_stays_does() -> None:
    """Interference only adds time: a burst that lands in one of the default count's
    blocks must not make the probe leave it (an LSTM at 2.03 ms a step on 2 threads chose
    1 thread, 2.9 ms); a neighbour slowing both blocks of 2 threads still moves it to 1."""
    assert _probe_blocks([2.0e-3, 2.9e-3, 2.9e-3, 6.0e-3]).chosen == 2  # burst at the end
    assert _probe_blocks([6.0e-3, 2.9e-3, 2.9e-3, 2.0e-3]).chosen == 2  # ... or the start
    probe = _probe_blocks([6.0e-3, 2.9e-3, 2.9e-3, 5.5e-3])  # contended throughout
    assert probe.chosen == 1 and probe.rule() == "measured (1: 2.9 ms, 2: 5.5 ms)"
    assert _probe_blocks([2.0e-3, 9.0e-3, 1.0e-3, 2.0e-3]).chosen == 1  # a burst at 1, too
