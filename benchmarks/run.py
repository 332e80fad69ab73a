"""protolab's benchmark harness: one command, every number of issue 7, side by side.

    .venv/bin/python benchmarks/run.py [--quick | --smoke] [--out benchmarks/results/NAME.json]

Sections (all in this one run; see benchmarks/README.md for what each row means):
  startup   protolab --help vs mlflow --help; time to first step in a fresh process
  steps     step time per model: protolab's modes (protolab run) vs each framework's own ways
            (plain loops, torch.compile, Trainer, Keras fit), every one a process of its own
  sweep     per-trial cost of sampler + storage + tracking at 10/100/1000 trials
  logging   tiny trials with MLflow tracking on vs off
  scaling   1 vs 2 local workers on one study; the sweep's overhead fraction
  hyperband unpruned vs Hyperband sweep: epochs trained and best val/acc
  recycling memory of a long static sweep: one worker kept vs recycled (--workers)
  watch     protolab watch: save -> first loss warm vs a cold run, XLA config edit, memory
  cache     persistent compile cache: cold vs warm compile and first step, fresh processes

Prints the machine, versions and one table per section with the issue-7 targets (✓/✗),
and writes every row as JSON (compare two runs with ``benchmarks/compare.py A B``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# OpenMP's wait policy is left as it is, as protolab leaves it. The step-time contenders
# run in processes of their own: the frameworks' own ways in ``_common.user_env``,
# protolab's modes with whatever its CLI sets.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _cache
import _recycling
import _scaling
import _startup
import _sweep_overhead
import _watch
from _baselines import ALIASES, FAMILIES
from _common import (
    BENCH_DIR,
    Row,
    Target,
    contention,
    cpu_sample,
    gemm_peak_gflops,
    machine_info,
    versions,
)
from _models import CASES
from rich.console import Console
from rich.table import Table

SECTIONS = (
    "startup", "steps", "sweep", "logging", "scaling", "hyperband", "recycling", "watch",
    "cache",
)  # fmt: skip
# Issue 26: every protolab mode within 1.1x of its framework's best own way; the aliases
# within 1.1x of the best mode of their family; the eager mode within 1.15x of a plain loop.
MODE_TARGET = Target("<=", 1.1, "≤ 1.1x")
ALIAS_TARGET = Target("<=", 1.1, "≤ 1.1x")
PLAIN_LOOP = "torch:prebatched"
EAGER_TARGET = ("protolab:lightning", Target("<=", 1.15, "≤ 1.15x"))
MFU_TARGETS = {"mlp-small": Target(">=", 0.40, "≥ 40 %"), "mlp-wide": Target(">=", 0.70, "≥ 70 %")}
STATIC_MODES = FAMILIES["tensorflow"][0] + FAMILIES["jax"][0]
# Each mode against the framework's own way with the same technique (eager loop, inductor,
# XLA, TF graph, Keras on JAX): protolab's cost alone, where the best own way may use
# another compiler (TF's oneDNN graph beats XLA on CPU convolutions, eager beats inductor).
SAME_WAY = {
    "protolab:lightning": ("torch:prebatched", "torch:dataloader", "lightning:Trainer"),
    "protolab:torch-compile": ("torch:compile",),
    "protolab:keras": ("keras:fit-xla",),
    "protolab:tf-graph": ("keras:fit",),
    "protolab:jax": ("keras-jax:fit",),
}
PEAKS: list[float] = []  # GEMM peak samples taken between models (the best one is the peak)

err = Console(stderr=True, highlight=False)
out = Console(highlight=False, width=160)


def log(msg: str) -> None:
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {msg}")


# --- measuring -----------------------------------------------------------------------------


def configure_threads(threads: int) -> dict[str, Any]:
    """Same intra-op threads for torch and TensorFlow in this process; report what took."""
    import tensorflow as tf
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already started: keep the default
        torch.set_num_interop_threads(threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
    }


def step_rows(
    quick: bool, rounds: int, models: list[str], compile_: bool, smoke: bool = False
) -> list[Row]:
    """Every model's contenders, each in processes of its own (``_baselines.run_case``)."""
    from _baselines import run_case

    rows: list[Row] = []
    for case in CASES:
        if case.key not in models:
            continue
        skip = {}
        if not compile_:
            for name in ("torch:compile", "protolab:torch-compile"):
                skip[name] = (
                    "skipped (--quick / --no-compile): inductor compiles take ~15-60 s per model"
                )
        log(f"[bold]steps[/] {case.key}: {case.title}, {rounds} rounds")
        c0 = cpu_sample()
        epochs = min(case.epochs_for(quick), 2) if smoke else case.epochs_for(quick)
        res = run_case(case, rounds, epochs, skip=skip, log=log)
        busy = contention(c0, cpu_sample())
        PEAKS.append(gemm_peak_gflops(repeats=4)["gflops"])
        common = {
            "flops_per_step": 3 * res.flops_per_sample * case.batch,
            "params": res.params,
            "steps_per_epoch": res.steps_per_epoch,
            "epochs_per_round": epochs,
            "foreign_cpu_frac": busy["foreign_cpu_frac"],
        }
        rows += case_rows(case.key, case.title, case.batch, res.contenders, common)
    return rows


def _best(names: tuple[str, ...], ok: dict[str, Any]) -> str | None:
    """The fastest of ``names`` that ran (by median step time), or None."""
    ran = [n for n in names if n in ok]
    return min(ran, key=lambda n: ok[n].median_ms) if ran else None


def case_rows(
    model: str, title: str, batch: int, contenders: dict[str, Any], common: dict[str, Any]
) -> list[Row]:
    """A step row per contender, its ratio to its framework's best own way; the alias rows
    and the eager mode against a plain loop."""
    ok = {n: c for n, c in contenders.items() if c.ok}
    rows: list[Row] = []
    best_own = {}
    for modes, own in FAMILIES.values():
        for name in (*modes, *own):
            best_own[name] = _best(own, ok)
    for name, c in contenders.items():
        if not c.ok:
            rows.append(
                Row("steps", model, name, "time/step_ms", "ms", None, status="n/a",
                    note=c.error or "no rounds")
            )  # fmt: skip
            continue
        to = best_own.get(name)
        if name in ALIASES and (picked := c.extra_last("mode")):  # its mode's framework
            to = best_own.get(f"protolab:{picked}")
        extra = {**common, "round_medians_ms": [r.median_ms for r in c.rounds],
                 "samples_per_s": batch / (c.median_ms / 1000)}  # fmt: skip
        for key in ("compile_s", "setup_s"):
            if any(key in r.extra for r in c.rounds):
                extra[key] = c.extra_median(key)
        for key in ("mode", "auto", "threads", "torch_threads", "tf_intra_op_threads"):
            if (value := c.extra_last(key)) not in (None, ""):
                extra[key] = value
        row = Row("steps", model, name, "time/step_ms", "ms", c.median_ms, c.p90_ms, c.samples,
                  ratio=c.median_ms / ok[to].median_ms if to else None, ratio_to=to or "",
                  note=title, extra=extra)  # fmt: skip
        rows.append(row.check(MODE_TARGET) if name.startswith("protolab:") and to else row)
    rows += alias_rows(model, ok)
    eager, target = EAGER_TARGET
    if eager in ok and PLAIN_LOOP in ok:
        ratio = ok[eager].median_ms / ok[PLAIN_LOOP].median_ms
        rows.append(
            Row("steps", model, eager, f"step time vs {PLAIN_LOOP}", "x", ratio, None,
                ok[eager].samples, ratio=ratio, ratio_to=PLAIN_LOOP,
                note="the eager mode against a plain PyTorch loop, default environment"
                ).check(target)
        )  # fmt: skip
    return rows


def alias_rows(model: str, ok: dict[str, Any]) -> list[Row]:
    """Each alias's run (the mode it picked) against the best mode of its family."""
    rows: list[Row] = []
    families = {"static": STATIC_MODES, "dynamic": FAMILIES["torch"][0]}
    for alias, family in ALIASES.items():
        best = _best(families[family], ok)
        if alias not in ok or best is None:
            continue
        ratio = ok[alias].median_ms / ok[best].median_ms
        picked = ok[alias].extra_last("mode")
        rows.append(
            Row("steps", model, alias, "step time vs best mode", "x", ratio, None,
                ok[alias].samples, ratio=ratio, ratio_to=best,
                note=f"picked {picked}; best measured {best}").check(ALIAS_TARGET)
        )  # fmt: skip
    return rows


def add_mfu(rows: list[Row], peak_gflops: float) -> None:
    """MFU = 3 x forward FLOPs x samples/s / measured GEMM peak, on every step row; the
    best static mode's is checked on the two MLPs."""
    best: dict[str, Row] = {}
    for r in rows:
        if r.section != "steps" or r.metric != "time/step_ms" or r.median is None:
            continue
        gflops = r.extra["flops_per_step"] / (r.median / 1000) / 1e9
        r.extra["gflops"] = gflops
        r.extra["mfu"] = gflops / peak_gflops
        if r.contender in STATIC_MODES and (
            r.name not in best or r.median < (best[r.name].median or math.inf)
        ):
            best[r.name] = r
    for model, r in best.items():
        if model in MFU_TARGETS:
            rows.append(
                Row("steps", model, "best static", "perf/mfu", "frac", r.extra["mfu"], None,
                    r.n, note=f"{r.contender}: {r.extra['gflops']:.1f} GFLOP/s of a "
                    f"{peak_gflops:.1f} GFLOP/s GEMM peak").check(MFU_TARGETS[model], on="median")
            )  # fmt: skip


# --- printing ------------------------------------------------------------------------------


def _num(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if unit == "frac":
        return f"{100 * v:.1f} %"
    a = abs(v)
    s = f"{v:.3g}" if a < 100 else f"{v:.0f}"
    return s


def _mark(r: Row) -> str:
    if not r.target:
        return ""
    sym = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[yellow]?[/]"}[r.passed]
    return f"{r.target} {sym}"


def _load(avg: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in avg)


def print_machine(meta: dict[str, Any]) -> None:
    m, v = meta["machine"], meta["versions"]
    out.print(
        f"[bold]machine[/] {m['cpu']}, {m['logical_cpus']} logical CPUs "
        f"({m['usable_cpus']} usable), threads: torch {m['torch_threads']} "
        f"(interop {m['torch_interop_threads']}), TF intra {m['tf_intra_op_threads']} / "
        f"inter {m['tf_inter_op_threads']}, OMP_WAIT_POLICY={m['omp_wait_policy']}, "
        f"torch CPU capability {m['torch_cpu_capability']}"
    )
    out.print(
        f"[bold]float32 GEMM peak[/] {m['gemm_peak_gflops']:.1f} GFLOP/s "
        f"(best torch.mm 2048² of {2 + len(m['gemm_between_models'])} samples, start "
        f"{m['gemm_start']['gflops']:.1f} / end {m['gemm_end']['gflops']:.1f}); other "
        f"processes used {100 * m['foreign_cpu_frac']:.0f} % of the CPU during the run, steal "
        f"{100 * m['steal_frac']:.0f} %, load avg {_load(m['loadavg_start'])} -> "
        f"{_load(m['loadavg_end'])}"
    )
    out.print("[bold]versions[/] " + ", ".join(f"{k} {val}" for k, val in v.items()))
    out.print(f"[bold]mode[/] {meta['mode']}, {meta['duration_s']:.0f} s, results {meta['out']}")


def _table(title: str, *columns: str) -> Table:
    """A left-titled table; a column name starting with ``>`` is right-justified."""
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col.lstrip(">"), justify="right" if col.startswith(">") else "left")
    return table


def print_steps(rows: list[Row]) -> None:
    table = _table(
        "Step time (median of interleaved rounds, every contender a process of its own; "
        "ratio vs its framework's best own way)",
        "model", "contender", ">ms/step", ">p90", ">ratio", "vs", ">MFU", ">compile s",
        "threads", "target (issue 26)",
    )  # fmt: skip
    last = ""
    for r in rows:
        if r.section != "steps" or r.metric != "time/step_ms":
            continue
        if last and r.name != last:
            table.add_section()
        name = r.name if r.name != last else ""
        last = r.name
        if r.status != "ok":
            table.add_row(name, r.contender, "n/a", "", "", "", "", "", "", r.note[:60])
            continue
        threads = r.extra.get("torch_threads") or r.extra.get("threads") or ""
        table.add_row(
            name, r.contender, _num(r.median), _num(r.p90),
            f"{r.ratio:.2f}x" if r.ratio else "-", r.ratio_to,
            _num(r.extra.get("mfu"), "frac"),
            _num(r.extra.get("compile_s", r.extra.get("setup_s"))), str(threads), _mark(r),
        )  # fmt: skip
    out.print(table)
    print_mode_matrix(rows)


def print_mode_matrix(rows: list[Row]) -> None:
    """Per model, each protolab mode's ratio to its framework's best own way (the README's
    table): one line per model, markdown, so it can be pasted as it is."""
    steps = [r for r in rows if r.section == "steps" and r.contender.startswith("protolab:")]
    present = {r.contender for r in steps if r.metric == "time/step_ms"}
    order = [m for modes, _ in FAMILIES.values() for m in modes] + list(ALIASES)
    cols = [c for c in order if c in present]
    if not cols:
        return
    by = {(r.name, r.contender, r.metric): r for r in steps}
    own = {(r.name, r.contender): r.median for r in rows if r.metric == "time/step_ms"}
    names = [c.removeprefix("protolab:") for c in cols]
    lines = ["| model | " + " | ".join(names) + " | aliases vs best mode |",
             "|---" * (len(cols) + 2) + "|"]  # fmt: skip
    for model in dict.fromkeys(r.name for r in steps):
        cells = []
        for c in cols:
            r = by.get((model, c, "time/step_ms"))
            ok = r is not None and r.ratio is not None and r.status == "ok"
            base = own.get((model, r.ratio_to)) if ok and r else None
            cells.append(
                f"{r.ratio:.2f}x ({_num(r.median)} / {_num(base)} ms {r.ratio_to})"
                if ok and r and r.ratio is not None
                else "n/a"
            )
        alias = [
            f"{a.removeprefix('protolab:')} {r.ratio:.2f}x ({r.note.split(';')[0]})"
            for a in ALIASES
            if (r := by.get((model, a, "step time vs best mode"))) and r.ratio is not None
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {'; '.join(alias)} |")
    out.print("\n[bold]protolab modes / their framework's best own way[/]")
    out.print("\n".join(lines), markup=False, soft_wrap=True)
    print_same_way(steps, own)


def print_same_way(steps: list[Row], own: dict[tuple[str, str], float | None]) -> None:
    """Per model, each mode against its framework's own way with the same technique."""
    cols = [c for c in SAME_WAY if any(r.contender == c for r in steps)]
    lines = ["| model | " + " | ".join(c.removeprefix("protolab:") for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]  # fmt: skip
    for model in dict.fromkeys(r.name for r in steps):
        cells = []
        for c in cols:
            mine = own.get((model, c))
            ways = [(w, t) for w in SAME_WAY[c] if (t := own.get((model, w)))]
            if not mine or not ways:
                cells.append("n/a")
                continue
            way, base = min(ways, key=lambda wt: wt[1])
            cells.append(f"{mine / base:.2f}x ({_num(mine)} / {_num(base)} ms {way})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    out.print("\n[bold]protolab modes / their framework's own way with the same technique[/]")
    out.print("\n".join(lines), markup=False, soft_wrap=True)


def print_other(rows: list[Row], section: str, title: str) -> None:
    sel = [r for r in rows if r.section == section]
    if not sel:
        return
    table = _table(
        title, "benchmark", "contender", ">median", ">p90", "unit", ">n", ">ratio", "target", "note"
    )
    for r in sel:
        ratio = f"{r.ratio:.2f}x vs {r.ratio_to}" if r.ratio is not None else ""
        unit = "%" if r.unit == "frac" else r.unit
        table.add_row(
            r.name,
            r.contender,
            "n/a" if r.status != "ok" else _num(r.median, r.unit),
            _num(r.p90, r.unit),
            unit,
            str(r.n),
            ratio,
            _mark(r),
            r.note,
        )
    out.print(table)


def print_targets(rows: list[Row]) -> None:
    table = Table(title="Targets (issues 7, 26)", title_justify="left")
    for col in ("benchmark", "contender", "metric", "value", "target", ""):
        table.add_column(col)
    for r in rows:
        if not r.target:
            continue
        value = r.ratio if r.target_on == "ratio" else r.median
        shown = f"{value:.2f}x" if r.target_on == "ratio" and value is not None else ""
        shown = shown or _num(value, r.unit) + ("" if r.unit == "frac" else f" {r.unit}")
        sym = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[yellow]?[/]"}[r.passed]
        table.add_row(r.name, r.contender, r.metric, shown, r.target, sym)
    out.print(table)


# --- main ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, trials (~2.5 min)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest run of every section: proves the harness, measures little (tests)",
    )
    ap.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads, torch and TF")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per model (default 3; quick 2)")
    ap.add_argument("--only", help="comma list of sections (default: all; --smoke: all but cache)")
    ap.add_argument("--models", help="comma list of step-time models (default: all)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument(
        "--table", nargs="+", type=Path, metavar="JSON",
        help="print the modes-vs-own-ways table of earlier results (one per model) and exit",
    )  # fmt: skip
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.table:
        print_mode_matrix([Row(**r) for f in args.table for r in json.loads(f.read_text())["rows"]])
        return 0
    args.quick = args.quick or args.smoke
    # --smoke (the harness test) leaves out the cache section's fresh cold compiles (~2 min)
    only_text = args.only or ",".join(s for s in SECTIONS if not (args.smoke and s == "cache"))
    only = [s.strip() for s in only_text.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        ap.error(f"--only: unknown section(s) {unknown}; allowed: {', '.join(SECTIONS)}")
    default_models = [c.key for c in CASES if c.quick or not args.quick]
    if args.smoke:
        default_models = default_models[:1]
    models = args.models.split(",") if args.models else default_models
    rounds = args.rounds or (1 if args.smoke else 2 if args.quick else 3)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = args.out or BENCH_DIR / "results" / f"{stamp}{'-quick' if args.quick else ''}.json"

    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    c0 = cpu_sample()
    machine = machine_info(args.threads)
    log("importing torch and TensorFlow; measuring the GEMM peak")
    machine |= configure_threads(args.threads)
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import optuna
    import tensorflow as tf

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tf.get_logger().setLevel("ERROR")  # retracing notes: every trial builds a new model
    gemm_start = gemm_peak_gflops()

    rows: list[Row] = []
    quick, smoke = args.quick, args.smoke
    compile_ = not (quick or args.no_compile)
    plan: list[tuple[str, str, Callable[[], list[Row]]]] = [
        ("startup", "protolab --help, mlflow --help, first step in fresh processes",
         lambda: _startup.measure_startup(quick, log=log, smoke=smoke)),
        ("steps", f"{len(models)} models, modes vs own ways, {rounds} interleaved rounds",
         lambda: step_rows(quick, rounds, models, compile_, smoke)),
        ("sweep", "sampler, storage and tracking per trial at 10/100/1000 trials",
         lambda: _sweep_overhead.measure_components(quick, log=log, smoke=smoke)),
        ("sweep", "protolab's sweep loop with a backend that trains nothing",
         lambda: _sweep_overhead.measure_null_sweep(quick, smoke=smoke)),
        ("logging", "tiny trials, MLflow tracking on vs off",
         lambda: _sweep_overhead.measure_logging(quick, log=log, smoke=smoke)),
        ("scaling", "1 vs 2 local workers (1 thread each)",
         lambda: _scaling.measure_scaling(quick, log=log, smoke=smoke)),
        ("hyperband", "unpruned vs Hyperband sweeps, side by side",
         lambda: _scaling.measure_hyperband(quick, log=log, smoke=smoke)),
        ("recycling", "a long static sweep: one worker kept vs recycled workers",
         lambda: _recycling.measure_recycling(quick, log=log, smoke=smoke)),
        ("watch", "protolab watch: warm reruns vs a cold protolab run, memory over edits",
         lambda: _watch.measure_watch(quick, log=log, smoke=smoke)),
        ("cache", "persistent compile cache: cold vs warm compile, fresh processes",
         lambda: _cache.measure_cache(quick, log=log, smoke=smoke)),
    ]  # fmt: skip
    for section, what, measure in plan:
        if section not in only:
            continue
        log(f"[bold]{section}[/]: {what}")
        t_section = time.perf_counter()
        try:
            rows += measure()
            log(f"{section}: {time.perf_counter() - t_section:.0f} s")
        except Exception as e:  # one broken section must not lose the others' rows
            log(f"[red]{section} failed[/]: {type(e).__name__}: {e}")
            rows.append(
                Row({"sweep": "sweep-overhead"}.get(section, section), what, "harness", "error",
                    "", None, status="n/a",
                    note=f"{type(e).__name__}: {str(e)[:300]}")
            )  # fmt: skip
    gemm_end = gemm_peak_gflops()
    peak = max(gemm_start["gflops"], gemm_end["gflops"], *PEAKS)
    add_mfu(rows, peak)
    busy = contention(c0, cpu_sample())
    machine |= {
        "gemm_peak_gflops": peak,
        "gemm_start": gemm_start,
        "gemm_end": gemm_end,
        "gemm_between_models": PEAKS,
        "loadavg_end": list(os.getloadavg()),
        **busy,
    }
    meta: dict[str, Any] = {
        "schema": 1,
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "sections": only,
        "rounds": rounds,
        "duration_s": time.perf_counter() - t0,
        "out": str(out_path),
        "machine": machine,
        "versions": versions(),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({**meta, "rows": [r.to_json() for r in rows]}, indent=1) + "\n")

    print_machine(meta)
    if any(r.section == "steps" for r in rows):
        print_steps(rows)
    print_other(rows, "startup", "Startup")
    print_other(rows, "sweep-overhead", "Sweep overhead per trial (no training)")
    print_other(rows, "logging", "Logging overhead (tiny trials)")
    print_other(rows, "scaling", "Local scaling and sweep overhead (protolab sweep CLI)")
    print_other(rows, "hyperband", "Hyperband vs no pruning")
    print_other(rows, "recycling", "Memory of a long static sweep (sweep --workers)")
    print_other(rows, "watch", "protolab watch (issue 15): warm vs cold, memory")
    print_other(rows, "cache", "Persistent compile cache (issue 23): cold vs warm, fresh processes")
    print_targets(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
