"""Do protolab's ports train like the originals? Original vs port, on both backends.

For each shipped port (``configs/port_*.yaml``) with fixed hyperparameters (the original's
values: each experiment's defaults), for every seed: the original, re-implemented line for
line in plain Lightning / plain Keras (``porting_originals.py``), then protolab's port on
each backend (``lightning``, ``keras``) through protolab's Python API (``Backend.run``:
what ``protolab run CONFIG study.seed=S`` trains, without MLflow). All three train on the
same digits split for the seed (protolab's loader; the seed also moves the split), for the
config's epochs, batch size and learning rate. Prints a markdown table: final validation
accuracy, mean ± standard deviation over seeds, the port's gap to the original in points,
and trainable parameter counts; writes every run as JSON.

    .venv/bin/python benchmarks/porting.py                  # 3 seeds, all three ports
    .venv/bin/python benchmarks/porting.py --seeds 0 --only convnet --epochs 2   # smoke

Runs are interleaved per seed (original, lightning, keras), so machine drift hits all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import porting_originals as orig  # noqa: E402

BACKENDS = ("lightning", "keras")
GOAL_POINTS = 1.5


@dataclass(frozen=True)
class Example:
    key: str
    title: str
    config: str
    framework: str  # what the original runs on
    original: Callable[..., orig.Outcome]
    # --investigate: the original with one of protolab's defaults switched on
    variants: tuple[tuple[str, dict[str, Any]], ...] = ()


def _mlp(seed: int, epochs: int, params: dict[str, Any], batch: int, **kw: Any) -> orig.Outcome:
    return orig.lightning_mlp_original(seed, epochs, params, batch_size=batch, **kw)


def _convnet(seed: int, epochs: int, params: dict[str, Any], batch: int) -> orig.Outcome:
    return orig.convnet_original(seed, epochs, batch_size=batch)


def _transformer(seed: int, epochs: int, params: dict[str, Any], batch: int) -> orig.Outcome:
    return orig.transformer_original(seed, epochs, batch_size=batch)


EXAMPLES = (
    Example(
        "mlp",
        "Optuna `pytorch_lightning_simple.py` MLP",
        "configs/port_lightning_mlp.yaml",
        "Lightning `Trainer`",
        _mlp,
        (("original + Glorot init", {"glorot": True}),),
    ),
    Example(
        "convnet",
        "Keras simple MNIST convnet",
        "configs/port_keras_convnet.yaml",
        "Keras `fit`",
        _convnet,
    ),
    Example(
        "transformer",
        "Keras text-classification Transformer",
        "configs/port_keras_transformer.yaml",
        "Keras `fit`",
        _transformer,
    ),
)


@dataclass
class Result:
    example: str
    contender: str  # "original" or a protolab backend
    seed: int
    val_acc: float
    params: int
    seconds: float


@dataclass
class Plan:
    example: Example
    arch: Any
    params: dict[str, Any]
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    hardware: Any
    options: dict[str, Any]  # the rest of TrainSettings, from the config
    results: list[Result] = field(default_factory=list)


def _plan(example: Example, epochs: int | None) -> Plan:
    from protolab.backends import NAMES
    from protolab.config import load_config
    from protolab.script import load_experiment
    from protolab.space import Space

    cfg, script = load_config(ROOT / example.config, backends=NAMES)
    exp = load_experiment(script)
    space = Space()  # no values given: every choice takes its default (the original's)
    arch = exp.build(space)
    train = cfg.train
    fixed = ("batch_size", "lr", "optimizer", "weight_decay", "label_smoothing", "loss")
    for name in fixed:
        if not isinstance(getattr(train, name), int | float | str):
            raise SystemExit(f"{example.config}: train.{name} must be a fixed value here")
    if train.schedule != "constant" or train.grad_clip is not None or train.early_stopping:
        raise SystemExit(f"{example.config}: schedules, clipping, early stopping: not here")
    return Plan(
        example,
        arch,
        space.values,
        epochs or train.epochs,
        int(train.batch_size),  # type: ignore[arg-type]
        float(train.lr),  # type: ignore[arg-type]
        str(train.optimizer),
        cfg.hardware,
        {
            "weight_decay": float(train.weight_decay),  # type: ignore[arg-type]
            "label_smoothing": float(train.label_smoothing),  # type: ignore[arg-type]
            "loss": str(train.loss),
            "optimizer_options": train.optimizer_options.given(),
            "drop_last": bool(train.drop_last),
        },
    )


def _protolab(plan: Plan, backend: str, seed: int) -> Result:
    from protolab.backends import Job, TrainSettings, get_backend
    from protolab.data import load_dataset

    t0 = time.perf_counter()
    data = load_dataset("digits", seed=seed)
    settings = TrainSettings(
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        optimizer=plan.optimizer,
        lr=plan.lr,
        seed=seed,
        **plan.options,
    )
    out = get_backend(backend).run(Job(plan.arch, data, settings, plan.hardware))
    return Result(
        plan.example.key,
        backend,
        seed,
        float(out.metrics["val/acc"]),
        int(out.metrics["model/params"]),
        time.perf_counter() - t0,
    )


def _original(plan: Plan, seed: int, variant: str = "original", **kw: Any) -> Result:
    got = plan.example.original(seed, plan.epochs, plan.params, plan.batch_size, **kw)
    return Result(plan.example.key, variant, seed, got.val_acc, got.params, got.seconds)


def _keep(plan: Plan, r: Result) -> None:
    plan.results.append(r)
    print(
        f"  seed {r.seed} {plan.example.key:<12} {r.contender[:24]:<24} val/acc {r.val_acc:.4f}  "
        f"params {r.params:>7,}  {r.seconds:5.1f} s",
        flush=True,
    )


def _gap(port: list[Result], original: list[Result]) -> str:
    """Port minus original in points, paired by seed (the same split): mean ± sd."""
    base = {r.seed: r.val_acc for r in original}
    diffs = [100 * (r.val_acc - base[r.seed]) for r in port if r.seed in base]
    if not diffs:
        return "n/a"
    mean, sd = _stats(diffs)
    return f"{mean:+.1f} ± {sd:.1f}"


def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def table(plans: list[Plan]) -> str:
    head = (
        "| example | epochs x batch | original (framework) | protolab `lightning` | "
        "protolab `keras` | gap lightning / keras (points) | params original / lightning / keras |"
    )
    rows = [head, "|" + "---|" * 7]
    for plan in plans:
        by: dict[str, list[Result]] = {}
        for r in plan.results:
            by.setdefault(r.contender, []).append(r)
        cells, means = [], {}
        for contender in ("original", *BACKENDS):
            accs = [100 * r.val_acc for r in by.get(contender, [])]
            if not accs:
                cells.append("n/a")
                continue
            mean, sd = _stats(accs)
            means[contender] = mean
            cell = f"{mean:.1f} ± {sd:.1f}"
            cells.append(f"{cell} ({plan.example.framework})" if contender == "original" else cell)
        gaps = [_gap(by.get(b, []), by.get("original", [])) for b in BACKENDS]
        counts = []
        for contender in ("original", *BACKENDS):
            seen = {r.params for r in by.get(contender, [])}
            counts.append(f"{next(iter(seen)):,}" if len(seen) == 1 else "/".join(map(str, seen)))
        n = len({r.seed for r in plan.results})
        rows.append(
            f"| {plan.example.title} | {plan.epochs} x {plan.batch_size} | {cells[0]} | "
            f"{cells[1]} | {cells[2]} | {' / '.join(gaps)} | {' / '.join(counts)} |"
        )
    rows.append("")
    rows.append(
        f"Validation accuracy in %, mean ± standard deviation over {n} seeds "
        f"({', '.join(str(s) for s in sorted({r.seed for p in plans for r in p.results}))}); "
        f"gap = port - original, paired by seed, mean ± sd (goal: within {GOAL_POINTS} points)."
    )
    return "\n".join(rows)


def investigation(plans: list[Plan]) -> str:
    """The original with protolab's differences switched on, next to the port."""
    rows = ["| example | run | val/acc % | gap to the original (points) |", "|---|---|---|---|"]
    for plan in plans:
        if not plan.example.variants:
            continue
        accs: dict[str, list[float]] = {}
        for r in plan.results:
            accs.setdefault(r.contender, []).append(100 * r.val_acc)
        base = _stats(accs["original"])[0]
        names = ["original", *(v for v, _ in plan.example.variants), *BACKENDS]
        for name in names:
            if name not in accs:
                continue
            mean, sd = _stats(accs[name])
            label = f"protolab `{name}`" if name in BACKENDS else name
            gap = "" if name == "original" else f"{mean - base:+.1f}"
            rows.append(f"| {plan.example.title} | {label} | {mean:.1f} ± {sd:.1f} | {gap} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="comma list (default 0,1,2)")
    ap.add_argument("--only", default="", help="comma list of: mlp, convnet, transformer")
    ap.add_argument("--epochs", type=int, default=None, help="override every config's epochs")
    ap.add_argument(
        "--investigate",
        action="store_true",
        help="also run the originals with protolab's differences switched on (init, batches)",
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON (default: benchmarks/results/)")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    chosen = [e for e in EXAMPLES if not args.only or e.key in args.only.split(",")]
    if not chosen:
        raise SystemExit(f"--only: none of {[e.key for e in EXAMPLES]}")

    t_all = time.perf_counter()
    plans = [_plan(e, args.epochs) for e in chosen]
    for plan in plans:
        print(f"{plan.example.key}: {plan.params} {plan.options}", flush=True)
    for seed in seeds:
        for plan in plans:
            for run in ("original", *BACKENDS):
                r = _original(plan, seed) if run == "original" else _protolab(plan, run, seed)
                _keep(plan, r)
            for variant, kw in plan.example.variants if args.investigate else ():
                _keep(plan, _original(plan, seed, variant, **kw))
    wall = time.perf_counter() - t_all
    text = table(plans)
    print()
    print(text)
    extra = investigation(plans) if args.investigate else ""
    if extra:
        print()
        print(extra)
    print(f"\nwall time {wall:.0f} s")

    import platform

    from protolab.backends._env import package_versions

    out = args.out or BENCH_DIR / "results" / f"porting-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "versions": package_versions(),
                "wall_s": wall,
                "examples": [
                    {
                        "key": p.example.key,
                        "config": p.example.config,
                        "params": p.params,
                        "epochs": p.epochs,
                        "batch_size": p.batch_size,
                        "lr": p.lr,
                        "runs": [asdict(r) for r in p.results],
                    }
                    for p in plans
                ],
                "table": text,
                "investigation": extra,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
