"""Replay the ``pareto`` pruner's rule on recorded curves: how its defaults were chosen.

With the random sampler a study's architectures do not depend on what is pruned, so one
unpruned study per seed, with every epoch's objective vector recorded, answers exactly
what any setting would have pruned and kept, in seconds and without step-time noise. The
defaults (``optimism`` 0.45, ``n_dominators`` 2) were picked here on seeds 20-31 and then
run for real on fresh seeds (``mo_pruning.py 20 40:55 10 pareto --sampler=random``).

Usage: python benchmarks/mo_pruning_replay.py collect FIRST STOP   (unpruned studies, JSON)
       python benchmarks/mo_pruning_replay.py replay                (a grid of settings)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mo_pruning as bench

from protolab.samplers import CURVE_ATTR, dominates, optimistic_vector

if TYPE_CHECKING:
    import optuna

OUT = Path(os.environ.get("REPLAY_DIR", "/tmp/protolab-mo-replay"))
UP_DOWN = [True, False]  # val/acc up, time/step_ms down
# never prunes (startup not reached), but records every epoch's vector
RECORD = ["study.pruner=pareto", "study.pruner_options={n_startup_trials: 100000}"]
Trial = dict[str, Any]  # one recorded trial, as JSON


def _curve(t: optuna.trial.FrozenTrial) -> dict[str, object]:
    """Epoch -> the objective vector the sweep recorded (``protolab.curve.<epoch>``)."""
    return {k.rsplit(".", 1)[1]: v for k, v in t.user_attrs.items() if k.startswith(CURVE_ATTR)}


def collect(first: int, stop: int) -> None:
    bench.SAMPLER[0] = "random"
    OUT.mkdir(parents=True, exist_ok=True)
    os.chdir(OUT)
    for seed in range(first, stop):
        trials = bench.run(f"u{seed}", seed, 20, 10, RECORD)
        rows = [{"state": t.state.name, "values": t.values, "curve": _curve(t)} for t in trials]
        (OUT / f"seed{seed}.json").write_text(json.dumps(rows))
        print("seed", seed, "recorded", flush=True)


def _pruned_at(t: Trial, done: list[Trial], q: float, d: int, startup: int) -> int | None:
    """The epoch the rule stops ``t`` at, given the trials complete before it."""
    for k in range(1, 10):  # nothing is pruned after the last epoch
        finished = [(o["curve"][str(k)], o["values"]) for o in done if str(k) in o["curve"]]
        if len(finished) < startup:
            continue
        gains = [
            [f - a if up else a - f for a, f, up in zip(at, fin, UP_DOWN, strict=True)]
            for at, fin in finished
        ]
        hope = optimistic_vector(t["curve"][str(k)], gains, UP_DOWN, q)
        if sum(dominates(o["values"], hope, UP_DOWN) for o in done) >= d:
            return k
    return None


def replay(trials: list[Trial], q: float, d: int, startup: int = 3) -> tuple[float, int]:
    """(hypervolume, epochs trained) of the study had the rule pruned it."""
    done: list[Trial] = []
    used = 0
    for t in (t for t in trials if t["state"] == "COMPLETE"):
        k = _pruned_at(t, done, q, d, startup)
        used += 10 if k is None else k
        if k is None:
            done.append(t)
    return bench.hypervolume([tuple(o["values"]) for o in done]), used


def grid() -> None:
    studies = [json.loads(p.read_text()) for p in sorted(OUT.glob("seed*.json"))]
    print(len(studies), "recorded studies")
    for q, d in [(0.5, 1), (0.9, 1), (0.5, 2), (0.45, 2), (0.4, 2), (0.5, 3)]:
        hv, ep = [], []
        for trials in studies:
            full = [t for t in trials if t["state"] == "COMPLETE"]
            h, e = replay(trials, q, d)
            hv.append(h / bench.hypervolume([tuple(t["values"]) for t in full]))
            ep.append(e / (10 * len(full)))
        hv_text = f"HV mean {statistics.mean(hv):.3f} min {min(hv):.3f}"
        ep_text = f"epochs mean {statistics.mean(ep):.3f} max {max(ep):.3f}"
        print(f"optimism {q} n_dominators {d}: {hv_text}; {ep_text}")


if __name__ == "__main__":  # the tracking writer re-imports this module: keep work here
    if sys.argv[1:2] == ["collect"]:
        collect(int(sys.argv[2]), int(sys.argv[3]))
    else:
        grid()
