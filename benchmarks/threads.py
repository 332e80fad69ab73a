"""Threads and the OpenMP wait policy: protolab's rule against a user's default, quiet and busy.

protolab leaves OpenMP's wait policy as a user has it and, unless ``hardware.threads`` is
set, times its first training steps at 1 thread and at torch's default and keeps the faster
(``protolab.backends._threads.ThreadProbe``; tag ``protolab.threads_rule``). This benchmark
is the proof the rule stands on. Per model, in rounds that alternate the contenders, each in
a process of its own:

- ``plain``: a plain PyTorch loop as a user writes it, in the default environment (no
  protolab settings: torch's threads, OpenMP's default wait policy);
- ``protolab``: ``protolab run`` of the same model in ``lightning``, as protolab runs it;
- ``protolab-passive``: the rule before: ``OMP_WAIT_POLICY=PASSIVE`` on every core.

The same rounds run twice: on the quiet machine, and beside a CPU-bound neighbour (one
process spinning on one core). The table gives median step ms and the ratio to ``plain``
in the same condition. Run: ``python benchmarks/threads.py [--rounds 3] [--epochs 6]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

MODELS = {"mlp-small": 64, "mlp-mid": 256, "mlp-wide": 1024}  # hidden width, two layers
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
CONTENDERS = ("plain", "protolab", "protolab-passive")
SCRIPT = textwrap.dedent(
    """
    import protolab as pl
    from protolab import layers as L

    @pl.experiment(data="digits", metric="val/acc")
    def model(space: pl.Space) -> pl.Arch:
        w = space.int("width", 8, 4096)
        return pl.Arch(L.Flatten(), L.Dense(w, activation="relu"),
                       L.Dense(w, activation="relu"), L.Dense(10))
    """
)


def user_env() -> dict[str, str]:
    """The environment a user's own script gets: nothing protolab sets."""
    return {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY" and "PROTOLAB" not in k}


def plain(width: int, epochs: int) -> dict[str, float]:
    """A plain PyTorch loop on the digits: AdamW, batch 64, shuffled, per-step times."""
    import time

    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    xt, yt = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
        torch.nn.ReLU(), torch.nn.Linear(width, 10),
    )  # fmt: skip
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    steps: list[float] = []
    for epoch in range(epochs):
        perm = torch.randperm(len(xt))
        t_prev = time.perf_counter()
        for i in range(0, len(xt) - 63, 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
            now = time.perf_counter()
            if epoch > 0:
                steps.append(now - t_prev)
            t_prev = now
    return {"step_ms": statistics.median(steps) * 1e3, "threads": torch.get_num_threads()}


def protolab(
    width: int, epochs: int, threads: int | None, where: Path, env: dict[str, str]
) -> dict[str, float]:
    """``protolab run`` in its own process (protolab's CLI sets its own environment)."""
    from mlflow.tracking import MlflowClient

    run_dir = Path(tempfile.mkdtemp(dir=where))
    (run_dir / "bench.py").write_text(SCRIPT)
    cfg = {
        "experiment": "bench.py", "backends": ["lightning"],
        "study": {"name": "threads", "n_trials": 1, "pruner": "none"},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": "adamw", "lr": 1e-3},
        "hardware": {"threads": threads}, "tracking": {"checkpoints": "none"},
    }  # fmt: skip
    (run_dir / "cfg.yaml").write_text(json.dumps(cfg))
    exe = Path(sys.executable).with_name("protolab")
    params = json.dumps({"width": width})
    subprocess.run(
        [str(exe), "run", "cfg.yaml", "--params", params],
        cwd=run_dir, check=True, capture_output=True, env=env,
    )  # fmt: skip
    client = MlflowClient(f"sqlite:///{run_dir}/mlruns/mlflow.db")
    runs = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
        if "time/step_ms" in r.data.metrics
    ]
    tags = runs[0].data.tags
    return {
        "step_ms": runs[0].data.metrics["time/step_ms"],
        "threads": float(tags.get("protolab.torch_threads", "nan")),
        "rule": tags.get("protolab.threads_rule", ""),  # type: ignore[dict-item]
    }


def one(kind: str, width: int, epochs: int, where: Path) -> dict[str, float]:
    if kind == "plain":
        return plain(width, epochs)
    if kind == "protolab-passive":
        return protolab(width, epochs, os.cpu_count(), where, user_env() | PASSIVE)
    return protolab(width, epochs, None, where, user_env())


def rounds(n: int, epochs: int, where: Path) -> dict[tuple[str, str], list[dict[str, float]]]:
    """Every contender of every model once per round, each in a fresh process, rotated."""
    out: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(n):
        order = CONTENDERS[r % 3 :] + CONTENDERS[: r % 3]
        for name, width in MODELS.items():
            for kind in order:
                cmd = [sys.executable, __file__, "--one", kind, str(width), str(epochs), str(where)]
                text = subprocess.run(
                    cmd, env=user_env(), check=True, capture_output=True, text=True
                ).stdout
                out.setdefault((name, kind), []).append(json.loads(text.splitlines()[-1]))
    return out


def table(results: dict[str, dict[tuple[str, str], list[dict[str, float]]]]) -> str:
    lines = [
        "| condition | model | plain ms | protolab ms (threads, ratio) | PASSIVE ms (ratio) |",
        "|---|---|---|---|---|",
    ]
    for cond, res in results.items():
        for name in MODELS:
            med = {k: statistics.median(r["step_ms"] for r in res[(name, k)]) for k in CONTENDERS}
            chosen = "/".join(str(int(r["threads"])) for r in res[(name, "protolab")])
            base = med["plain"]
            lines.append(
                f"| {cond} | {name} | {base:.3g} | {med['protolab']:.3g} ({chosen}, "
                f"{med['protolab'] / base:.2f}x) | {med['protolab-passive']:.3g} "
                f"({med['protolab-passive'] / base:.2f}x) |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--one", nargs=4, metavar=("KIND", "WIDTH", "EPOCHS", "DIR"))
    a = ap.parse_args()
    if a.one:
        kind, width, epochs, where = a.one
        print(json.dumps(one(kind, int(width), int(epochs), Path(where))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = {"quiet": rounds(a.rounds, a.epochs, Path(tmp))}
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            results["busy neighbour"] = rounds(a.rounds, a.epochs, Path(tmp))
        finally:
            spin.kill()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(table(results))


if __name__ == "__main__":
    main()
