"""The persistent compile cache (issue 23): cold vs warm compile per mode, in fresh processes.

Per mode and model, in a project of its own with an empty cache folder: ``protolab run``
twice in fresh processes. The first compiles cold (tag ``protolab.compile_cache: miss``),
the second reads what the first wrote (``hit``). Rows: the compile (``time/compile_s``)
cold, warm and warm/cold (target <= 0.3x on torch-compile and jax), and the time to the
first optimizer step of a fresh process (``time/first_step_s``: imports + build + compile
+ one step) cold and warm. tf-graph has no persistent cache (TensorFlow traces and
optimizes its graphs in every process): it is measured too, and says ``off``.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

from _common import Row, Target, quiet_env

__all__ = ["measure_cache"]

MODES = ("torch-compile", "jax", "keras", "tf-graph")
TARGETS = {"torch-compile": Target("<=", 0.3, "≤ 0.3x"), "jax": Target("<=", 0.3, "≤ 0.3x")}
# (name, Arch body): the digits MLP of the quick start, and a deeper one
MODELS = {
    "mlp-small": 'L.Flatten(), L.Dense(64, activation="relu"), L.Dense(10)',
    "mlp-deep": ", ".join(["L.Flatten()", *['L.Dense(128, activation="relu")'] * 4, "L.Dense(10)"]),
}
SCRIPT = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    return pl.Arch({body})
"""


def _project(root: Path, mode: str, body: str) -> Path:
    root.mkdir(parents=True)
    (root / "exp.py").write_text(SCRIPT.format(body=body))
    cfg = root / "cfg.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [{mode}]
            study: {{name: cache-bench, n_trials: 1, sampler: random, pruner: none}}
            train: {{epochs: 2, batch_size: 64, lr: 0.001}}
            hardware: {{accelerator: cpu, compile_cache: {root / "cache"}}}
            """
        )
    )
    return cfg


def _fresh_run(cfg: Path) -> dict[str, float | str]:
    """One ``protolab run`` in a fresh process; its compile, first step and cache tag."""
    env = quiet_env()
    env.pop("PROTOLAB_COMPILE_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "run", str(cfg)],
        cwd=cfg.parent, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"protolab run exited {proc.returncode}: {proc.stderr[-400:]}")
    con = sqlite3.connect(cfg.parent / "mlruns" / "mlflow.db")
    try:
        (run,) = con.execute(
            "select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid "
            "where t.key = 'protolab.compile_cache' order by r.start_time desc limit 1"
        ).fetchone()
        metrics = dict(
            con.execute("select key, value from latest_metrics where run_uuid=?", (run,))
        )
        tag = con.execute(
            "select value from tags where run_uuid=? and key='protolab.compile_cache'", (run,)
        ).fetchone()[0]
    finally:
        con.close()
    return {
        "compile_s": metrics["time/compile_s"],
        "first_step_s": metrics["time/first_step_s"],
        "tag": tag,
    }


def _rows(
    model: str, mode: str, cold: dict[str, float | str], warm: dict[str, float | str]
) -> list[Row]:
    contender, note = f"protolab:{mode}", f"tags {cold['tag']} -> {warm['tag']}"
    first_note = "trial start -> first step: imports + build + compile + step"
    rows: list[Row] = []
    for metric, what in (("compile_s", "compile"), ("first_step_s", "first step, fresh process")):
        c, w = float(cold[metric]), float(warm[metric])
        row_note = note if metric == "compile_s" else first_note
        rows.append(
            Row(
                "cache",
                f"{model}: {what}, cold",
                contender,
                f"time/{metric}",
                "s",
                c,
                None,
                1,
                note=row_note,
            )
        )
        ratio = w / c if c > 0 else None
        rows.append(
            Row("cache", f"{model}: {what}, warm", contender, f"time/{metric}", "s", w, None, 1,
                ratio=ratio, ratio_to="cold", note=row_note)
        )  # fmt: skip
    if mode in TARGETS:
        rows[1].check(TARGETS[mode])
    return rows


def measure_cache(
    quick: bool, log: Callable[[str], None] = print, smoke: bool = False
) -> list[Row]:
    """Cold then warm fresh runs per mode (and per model unless quick or smoke)."""
    models = ["mlp-small"] if quick or smoke else list(MODELS)
    modes = ("torch-compile", "jax") if smoke else MODES
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="protolab-cache-bench-") as tmp:
        for model in models:
            for mode in modes:
                cfg = _project(Path(tmp) / f"{model}-{mode}", mode, MODELS[model])
                log(f"cache: {model} on {mode}, a cold then a warm fresh run")
                try:
                    cold, warm = _fresh_run(cfg), _fresh_run(cfg)
                except RuntimeError as e:
                    what = f"{model}: compile"
                    rows.append(Row("cache", what, f"protolab:{mode}", "time/compile_s", "s", None,
                                    status="n/a", note=str(e)[:300]))  # fmt: skip
                    continue
                rows += _rows(model, mode, cold, warm)
    return rows
