"""`protolab report` over N modes, on real stores written the way a sweep writes them.

No model is trained: each test writes an Optuna study and MLflow child runs with the data
contract's tags and metrics (per-epoch ``time/epoch_step_ms`` histories included) into a real
journal + SQLite store (or a real ``mlflow server``), runs the report, and recomputes what it
must say independently from the MLflow runs. Mode names are made up on purpose: nothing in
the report may know a backend by name.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import struct
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from protolab.report import PLOTS, SIZE_PX, run_report
from tests._servers import mlflow_server


@dataclass(frozen=True)
class ModeSpec:
    """How one made-up mode behaves: family, eager flag, step time, time to first step."""

    name: str
    family: str
    how: str
    step_ms: float
    first_step_s: float
    eager: bool = False
    compiled_first_epoch: bool = False  # its first epoch is warm-up: not in the history


ALPHA = ModeSpec("alpha", "dynamic", "eager", 10.0, 1.0, eager=True)
ALPHA_JIT = ModeSpec("alpha-jit", "dynamic", "jit", 7.0, 6.0, compiled_first_epoch=True)
BETA_GRAPH = ModeSpec("beta-graph", "static", "graph", 9.0, 3.0)
BETA_FUSED = ModeSpec("beta-fused", "static", "fused epoch", 4.0, 2.2, compiled_first_epoch=True)
FOUR = (ALPHA, ALPHA_JIT, BETA_GRAPH, BETA_FUSED)


@dataclass
class Store:
    """A study being written: Optuna trials and MLflow runs in ``root/mlruns``."""

    root: Path
    study: str
    tracking_uri: str
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    client: MlflowClient = field(init=False)
    experiment_id: str = field(init=False)
    optuna_study: Any = field(init=False)

    def __post_init__(self) -> None:
        import optuna

        from protolab._stores import open_storage

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = self.client.create_experiment(
            self.study, tags={"protolab.study": self.study}
        )
        self.client.create_run(
            self.experiment_id,
            run_name=self.study,
            tags={"protolab.role": "parent", "protolab.study": self.study},
        )
        storage = open_storage(str(self.root / "mlruns" / "optuna.journal"))
        self.optuna_study = optuna.create_study(
            study_name=self.study, storage=storage, direction="maximize"
        )
        self.optuna_study.set_user_attr("protolab.metric", "val/acc")

    def trial(self, width: int, acc: float) -> int:
        import optuna

        dist = optuna.distributions.IntDistribution(8, 64)
        t = optuna.trial.create_trial(
            params={"width": width}, distributions={"width": dist}, value=acc
        )
        self.optuna_study.add_trial(t)
        return int(self.optuna_study.trials[-1].number)

    def run(self, trial: int, spec: ModeSpec, pair: str, *, repeat: str = "", epochs: int = 5,
            noise: float = 0.02, steps: int = 500, state: str = "COMPLETE",
            history: bool = True, auto: str = "") -> str:  # fmt: skip
        """One child run; its epoch step times scatter around ``spec.step_ms`` by ``noise``."""
        tags = {
            "protolab.study": self.study,
            "protolab.trial": str(trial),
            "protolab.backend": spec.name,
            "protolab.family": spec.family,
            "protolab.mode": spec.how,
            "protolab.pair": pair,
            "protolab.arch_hash": f"arch{trial:04d}",
            "protolab.state": state,
        }
        if spec.eager:
            tags["protolab.eager"] = "true"
        if repeat:
            tags["protolab.repeat"] = repeat
        if auto:
            tags["protolab.auto"] = auto
        run = self.client.create_run(
            self.experiment_id, run_name=f"t{trial}-{spec.name}", tags=tags
        )
        first = 1 if spec.compiled_first_epoch else 0
        epoch_ms = [
            float(v) for v in spec.step_ms * np.exp(noise * self.rng.standard_normal(epochs))
        ]
        metrics = [
            Metric("time/epoch_step_ms", v, 0, e) for e, v in enumerate(epoch_ms) if e >= first
        ]
        metrics = metrics if history else []
        kept = [m.value for m in metrics] or epoch_ms
        final = {
            "time/step_ms": statistics.median(kept),
            "time/step_ms_p10": min(kept),
            "time/step_ms_p90": max(kept),
            "time/first_step_s": spec.first_step_s,
            "time/compile_s": max(spec.first_step_s - 0.5, 0.0),
            "train/steps": float(steps),
            "train/steps_per_epoch": steps / epochs,
            "val/acc": 0.9,
        }
        if state != "COMPLETE":
            final = {}
        metrics += [Metric(k, v, 0, 0) for k, v in final.items()]
        self.client.log_batch(
            run.info.run_id, metrics=metrics, params=[Param("train.epochs", str(epochs))]
        )
        self.client.set_terminated(run.info.run_id, "FINISHED" if state == "COMPLETE" else "FAILED")
        return str(run.info.run_id)


def _store(root: Path, study: str, tracking_uri: str | None = None) -> Store:
    uri = tracking_uri or f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir(exist_ok=True)
    return Store(root, study, uri)


def _report(store: Store, **kw: Any) -> tuple[dict[str, Any], str, Path]:
    """Run the report as the CLI does; returns report.json, the terminal text, the folder."""
    from rich.console import Console

    console = Console(record=True, width=200, highlight=False)
    out = run_report(
        store.study, out_dir=store.root / "out", tracking_uri=store.tracking_uri,
        storage=str(store.root / "mlruns" / "optuna.journal"), console=console, **kw,
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    return report, console.export_text(), out


# -- the four-mode study ---------------------------------------------------------------------


@dataclass(frozen=True)
class Four:
    store: Store
    report: dict[str, Any]
    text: str
    out: Path


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Four]:
    """3 pairs on all four modes, one pair missing a mode, one failed run of a fifth."""
    root = tmp_path_factory.mktemp("four")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        store = _store(root, "four")
        for i in range(3):
            t = store.trial(16 + i, 0.9)
            for spec in FOUR:
                auto = "static->beta-fused" if spec is BETA_FUSED else ""
                store.run(t, spec, f"four/t{t}", history=not (i == 0 and spec is BETA_GRAPH),
                          auto=auto)  # fmt: skip
        t = store.trial(40, 0.8)  # alpha-jit failed to build here: the other three still pair
        for spec in (ALPHA, BETA_GRAPH, BETA_FUSED):
            store.run(t, spec, f"four/t{t}")
        store.run(t, ALPHA_JIT, f"four/t{t}", state="FAIL")
        store.run(t, ModeSpec("gamma", "static", "other", 1.0, 1.0), f"four/t{t}", state="FAIL")
        report, text, out = _report(store)
    yield Four(store, report, text, out)


def _recomputed_ratios(store: Store) -> dict[tuple[str, str], float]:
    """Geometric mean over pairs of median(row epochs) / median(col epochs), from MLflow."""
    runs = store.client.search_runs([store.experiment_id], "tags.`protolab.state` = 'COMPLETE'")
    by_pair: dict[str, dict[str, float]] = {}
    for r in runs:
        history = store.client.get_metric_history(r.info.run_id, "time/epoch_step_ms")
        values = [m.value for m in history] or [r.data.metrics["time/step_ms"]]
        by_pair.setdefault(r.data.tags["protolab.pair"], {})[r.data.tags["protolab.backend"]] = (
            statistics.median(values)
        )
    out: dict[tuple[str, str], float] = {}
    names = sorted({b for p in by_pair.values() for b in p})
    for a in names:
        for b in names:
            logs = [math.log(p[a] / p[b]) for p in by_pair.values() if a in p and b in p]
            if a != b and logs:
                out[(a, b)] = math.exp(sum(logs) / len(logs))
    return out


def test_every_complete_mode_is_compared_with_every_other(four: Four) -> None:
    comparison = four.report["comparison"]
    # by family, the eager mode first within it, then by name; the failed "gamma" is absent
    order = ["alpha", "alpha-jit", "beta-fused", "beta-graph"]
    assert [m["name"] for m in comparison["modes"]] == order
    assert comparison["paired_modes"] == order
    assert comparison["reference"] == "alpha"
    assert comparison["n_pairs"] == 4
    expected = _recomputed_ratios(four.store)
    got = {(c["row"], c["col"]): c for c in comparison["matrix"]}
    assert set(got) == set(expected) and len(got) == 12
    for key, value in expected.items():
        cell = got[key]
        assert cell["ratio"] == pytest.approx(value), key
        assert cell["low"] <= cell["ratio"] <= cell["high"], key
        back = got[(key[1], key[0])]  # the opposite cell is the exact inverse
        assert back["ratio"] == pytest.approx(1 / cell["ratio"])
        assert back["low"] == pytest.approx(1 / cell["high"])
    assert got[("alpha-jit", "alpha")]["n_pairs"] == 3  # its fourth pair failed
    assert got[("beta-fused", "alpha")]["n_pairs"] == 4
    assert all(c["clear"] for c in got.values())  # 2 % noise: every difference is real


def test_headline_compares_the_best_of_each_family(four: Four) -> None:
    head = four.report["comparison"]["headline"]
    assert head["families"] == ["dynamic", "static"]
    # alpha-jit (7 ms) is the fastest dynamic mode where it ran, alpha (10 ms) where it failed
    assert head["best"] == {"dynamic": {"alpha-jit": 3, "alpha": 1}, "static": {"beta-fused": 4}}
    assert head["n_pairs"] == 4
    # geometric mean over the 4 pairs: 4 ms / 7 ms in three, 4 ms / 10 ms in one
    want = math.exp((3 * math.log(4 / 7) + math.log(4 / 10)) / 4)
    assert head["ratio"] == pytest.approx(want, rel=0.03)
    assert head["speedup_low"] <= head["speedup"] <= head["speedup_high"]
    assert head["speedup_low"] > 1  # a clear win
    assert head["text"].startswith(
        f"best static (beta-fused) is {head['speedup']:.3g}x faster per step than "
        f"best dynamic (alpha-jit in 3 pairs, alpha in 1) (95% CI {head['speedup_low']:.3g}-"
    )
    assert head["text"] in " ".join(four.text.split())
    assert four.report["comparison"]["lines"][0] == head["text"]


def test_break_even_per_compiled_mode_and_whether_trials_paid_back(four: Four) -> None:
    rows = {b["mode"]: b for b in four.report["comparison"]["break_even"]}
    assert set(rows) == {"alpha-jit", "beta-graph", "beta-fused"}
    for name, spec in (
        ("alpha-jit", ALPHA_JIT),
        ("beta-graph", BETA_GRAPH),
        ("beta-fused", BETA_FUSED),
    ):
        b = rows[name]
        assert b["reference"] == "alpha"
        want = (b["mode_first_step_s"] - b["reference_first_step_s"]) / (
            (b["reference_step_ms"] - b["mode_step_ms"]) / 1000
        )
        assert b["steps"] == pytest.approx(want)
        assert b["mode_first_step_s"] == spec.first_step_s
        assert b["seconds"] == pytest.approx(1.0 + want * b["reference_step_ms"] / 1000)
        assert b["trained_steps"] == 500 and b["known"] == b["n_measurements"]
    # ~ (6 - 1) / 0.003 = 1,667 and (3 - 1) / 0.001 = 2,000 steps: more than the 500 trained
    assert rows["alpha-jit"]["paid_back"] == 0 and rows["beta-graph"]["paid_back"] == 0
    # (2.2 - 1) / 0.006 = 200 steps: every trial paid it back
    assert rows["beta-fused"]["paid_back"] == rows["beta-fused"]["known"] == 4
    text = " ".join(four.text.split())
    jit = rows["alpha-jit"]["text"]
    assert re.fullmatch(
        r"trials trained ~500 steps; alpha-jit pays back after 1,[5-8]\d\d steps \([\d.]+ s\) "
        r"against alpha: compile never paid back in this sweep",
        jit,
    ), jit
    assert rows["beta-fused"]["text"].endswith(": paid back within this sweep's trials")
    for b in rows.values():
        assert b["text"] in text


def test_terminal_and_markdown_show_every_mode(four: Four) -> None:
    text = four.text
    md = (four.out / "report.md").read_text()
    for title in (
        "Modes measured",
        "Step time, row / column",
        "Break-even against",
        "Per architecture",
    ):
        assert title in text and title in md
    for spec in FOUR:
        assert spec.name in text and f"| {spec.name} |" in md
    assert "| gamma |" not in md  # its only run failed: no row, nothing measured
    assert "could not" not in text  # logged to MLflow, and the UI notes refreshed
    assert "| alpha | dynamic | eager | 4 | 4 |" in md
    assert "eager reference" in md
    assert re.search(r"\| beta-fused \| static \| fused epoch \|.*\| picked by static \|", md)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path.name
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_plots_and_relative_links_next_to_report_md(four: Four) -> None:
    files = four.report["files"]
    for name in ("step_scatter.png", "step_ratios.png", "break_even.png"):
        assert name in files and name in PLOTS
    md = (four.out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {"step_ratios.png", "break_even.png", "step_scatter.png"} <= set(links)
    for link in links:  # GitHub and any viewer resolve these next to report.md
        assert "/" not in link and (four.out / link).is_file(), link
        assert _png_size(four.out / link) == SIZE_PX


def test_break_even_plot_marks_the_crossings_and_the_sweeps_steps() -> None:
    """The plot's geometry, read back from the figure the function draws."""
    from matplotlib.collections import PathCollection

    from protolab.report import BreakEven
    from protolab.report._plots import _figure
    from protolab.report._plots_modes import _crossing, _sweep_marks

    b = BreakEven("m", "ref", 3, 1.0, 6.0, 10.0, 7.0, 95.0, (90.0, 100.0))
    _, ax = _figure()
    _crossing(ax, b, "#000000")
    _sweep_marks(ax, [b])
    (marker,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    x, y = marker.get_offsets()[0]
    assert x == pytest.approx(5 / 0.003) and y == pytest.approx(1 + (5 / 0.003) * 0.01)
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [95.0, 95.0]
    assert "1,667 steps" in ax.texts[0].get_text()
    assert "this sweep's trials: ~95 steps" in line.get_label()


# -- a repeated pair, and a noisy one ---------------------------------------------------------


def test_a_pair_repeated_five_times_gives_a_tight_interval(workdir: Path) -> None:
    store = _store(workdir, "repeat")
    t = store.trial(32, 0.9)
    for k in range(5):  # interleaved: each repeat runs both modes
        for spec in (ALPHA, BETA_FUSED):
            store.run(t, spec, f"repeat/t{t}", repeat=str(k), noise=0.03)
    report, text, _ = _report(store)
    (cell,) = [c for c in report["comparison"]["matrix"] if c["row"] == "beta-fused"]
    assert (cell["n_pairs"], cell["n_measurements"]) == (1, 5)
    assert cell["ratio"] == pytest.approx(0.4, rel=0.05)
    assert cell["ratio"] * 0.9 <= cell["low"] and cell["high"] <= cell["ratio"] * 1.1
    assert "1 pair, 5 measurements" in " ".join(text.split())


def test_large_noise_says_no_clear_difference(workdir: Path) -> None:
    store = _store(workdir, "noisy")
    noisy = ModeSpec("beta-fused", "static", "fused epoch", 10.5, 2.0)
    for i in range(2):
        t = store.trial(8 + i, 0.5)
        for spec in (ALPHA, noisy):
            store.run(t, spec, f"noisy/t{t}", epochs=3, noise=0.6)
    report, text, out = _report(store)
    head = report["comparison"]["headline"]
    assert head["low"] < 1 < head["high"] and head["clear"] is False
    assert head["text"].startswith("no clear difference between best static (beta-fused)")
    flat = " ".join(text.split())
    assert "no clear difference" in flat and "~" in flat
    assert "no clear difference" in (out / "report.md").read_text()


def test_old_runs_without_new_tags_still_compare(workdir: Path) -> None:
    """A study from before the N-mode contract: no eager/mode tags, no epoch history."""
    store = _store(workdir, "old")
    old_dyn = ModeSpec("alpha", "dynamic", "", 10.0, 1.0)  # not tagged eager
    for i in range(2):
        t = store.trial(8 + i, 0.5)
        for spec in (old_dyn, BETA_FUSED):
            store.run(t, spec, f"old/t{t}", history=False)
    report, _, _ = _report(store)
    comparison = report["comparison"]
    (b,) = comparison["break_even"]
    assert (b["mode"], b["reference"]) == ("beta-fused", "alpha")  # the only dynamic run
    assert comparison["headline"]["n_pairs"] == 2
    runs = [r for m in comparison["measurements"] for r in m["runs"].values()]
    assert all(r["epochs_measured"] == 0 for r in runs)


# -- the MLflow copy of report.md, served by a real tracking server ---------------------------


@pytest.mark.slow
def test_mlflow_copy_links_images_the_server_serves(workdir: Path) -> None:
    """MLflow's artifact preview shows only absolute http(s) images: the logged copy has them.

    The MLflow UI (3.x) prints a relative markdown image as literal ``[alt](name)`` text, so
    the copy logged to the parent run links each image through the server's own
    ``/get-artifact`` route; fetching every link must return the PNG the report wrote.
    """
    for url in mlflow_server(workdir / "server"):
        store = _store(workdir, "served", tracking_uri=url)
        for i in range(2):
            t = store.trial(8 + i, 0.5)
            for spec in (ALPHA, BETA_FUSED):
                store.run(t, spec, f"served/t{t}")
        report, _, out = _report(store)
        parent = report["parent_run_id"]
        logged = Path(store.client.download_artifacts(parent, "report/report.md", str(workdir)))
        links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", logged.read_text())
        assert links and len(links) == len(re.findall(r"!\[", logged.read_text()))
        for link in links:
            assert link.startswith(f"{url}/get-artifact?path=report%2F"), link
            with urllib.request.urlopen(link, timeout=30) as response:
                body = response.read()
            name = re.search(r"report%2F([^&]+)", link)
            assert name is not None
            assert body == (out / name.group(1)).read_bytes()
        local = (out / "report.md").read_text()  # the folder's copy stays relative
        assert "get-artifact" not in local and "](break_even.png)" in local


def test_report_code_names_no_backend() -> None:
    """The report derives everything from tags: no backend name in its source."""
    root = Path(__file__).resolve().parents[1] / "src" / "protolab" / "report"
    pattern = re.compile(r"\b(lightning|keras|jax|torch|tensorflow|xla|fabric)\b", re.IGNORECASE)
    for path in sorted(root.glob("*.py")):
        found = pattern.findall(path.read_text())
        assert not found, f"{path.name} names {sorted(set(found))}"
