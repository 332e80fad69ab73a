"""The benchmark harness runs end to end in its smoke mode and writes every row.

Performance itself is never asserted here (no wall-clock bounds): only that each section
produced its rows with finite numbers, so a broken harness or backend is caught in CI.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.long]

SMOKE_MODELS = ("mlp-small",)  # --smoke: the first quick model only, one round
CONTENDERS = (  # issue 26: protolab's modes (one protolab run) and the frameworks' own ways
    "protolab:static",
    "protolab:lightning",
    "protolab:torch-compile",
    "protolab:keras",
    "protolab:tf-graph",
    "protolab:jax",
    "torch:prebatched",
    "torch:dataloader",
    "torch:compile",
    "lightning:Trainer",
    "keras:fit",
    "keras:fit-xla",
    "keras-jax:fit",
)
# Units whose numbers must be > 0 (a difference in points may be 0 or negative).
POSITIVE_UNITS = {"s", "ms", "ms/trial", "x", "epochs", "frac"}


@pytest.mark.timeout(900)
def test_smoke_benchmark_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["mode"] == "smoke"
    assert data["machine"]["gemm_peak_gflops"] > 0
    assert data["versions"]["torch"] and data["versions"]["keras"]
    rows = data["rows"]
    keys = {(r["section"], r["name"], r["contender"], r["metric"]) for r in rows}

    for model in SMOKE_MODELS:
        for contender in CONTENDERS:
            assert ("steps", model, contender, "time/step_ms") in keys, (model, contender)
        assert ("steps", model, "best static", "perf/mfu") in keys
        assert ("steps", model, "protolab:static", "step time vs best mode") in keys
        assert ("steps", model, "protolab:lightning", "step time vs torch:prebatched") in keys
    steps = {r["contender"]: r for r in rows if r["section"] == "steps" and r["status"] == "ok"}
    # each mode is judged against its own framework's best way, never another framework's
    assert steps["protolab:keras"]["ratio_to"] in ("keras:fit", "keras:fit-xla")
    assert steps["protolab:jax"]["ratio_to"] == "keras-jax:fit"
    assert steps["protolab:lightning"]["ratio_to"].startswith(("torch:", "lightning:"))
    assert steps["torch:prebatched"]["extra"]["torch_threads"] >= 1
    sections = {r["section"] for r in rows}
    assert sections == {
        "startup", "steps", "sweep-overhead", "logging", "scaling", "hyperband", "recycling",
        "watch",
    }  # fmt: skip
    names = {(r["section"], r["name"]) for r in rows}
    assert ("startup", "protolab --help") in names
    assert ("startup", "first step, fresh process") in names
    for size in (10, 100):  # --smoke skips the 1000-trial fill
        for what in ("in-memory (sampler only)", "journal file", "SQLite"):
            name = f"optuna tpe+median, {what}"
            assert ("sweep-overhead", name, f"@{size} trials", "ask..tell") in keys
        assert ("sweep-overhead", "mlflow child run (Tracker, SQLite)", f"@{size} trials") in {
            k[:3] for k in keys
        }
    assert sum(r["section"] == "logging" for r in rows) == 3  # off, inline, writer process
    assert any(r["contender"] == "speed-up 2 vs 1 worker" for r in rows)
    assert any(r["metric"] == "sweep/overhead_frac" for r in rows)
    assert sum(r["section"] == "hyperband" for r in rows) == 3
    recycling = {r["contender"]: r for r in rows if r["section"] == "recycling"}  # issue 17
    assert set(recycling) == {"worker kept", "worker recycled every 1"}
    assert len(recycling["worker kept"]["extra"]["rss_by_trial"]) == 2
    watch = {(r["name"], r["contender"]) for r in rows if r["section"] == "watch"}  # issue 15
    assert ("warm save -> first loss, script edits", "protolab:lightning") in watch
    assert ("warm vs cold first loss", "protolab:lightning") in watch
    assert ("cold protolab run, spawn -> first step", "protolab:lightning") in watch
    assert ("warm save -> first loss, config-only edit", "protolab:keras") in watch
    assert ("Arch edit: save -> first loss - compile", "protolab:keras") in watch
    assert any(name.startswith("RSS after") for name, _ in watch)

    for r in rows:
        label = f"{r['section']} / {r['name']} / {r['contender']} / {r['metric']}"
        if r["status"] != "ok":
            # Only torch.compile may be missing (skipped in --quick, or unsupported here).
            assert r["contender"] in ("torch:compile", "protolab:torch-compile"), label
            assert r["note"], label
            continue
        value = r["median"]
        assert value is not None and math.isfinite(value), label
        if r["unit"] in POSITIVE_UNITS:
            assert value > 0, label
        for k in ("p90", "ratio"):
            if r[k] is not None:
                assert math.isfinite(r[k]) and r[k] > 0, f"{label}: {k}={r[k]}"
        if r["target"]:
            assert r["passed"] in (True, False), label
