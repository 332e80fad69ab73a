"""``protolab ui`` and what MLflow shows: a real server over a real store, real notes."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._servers import free_port

PROTOLAB = [sys.executable, "-m", "protolab.cli"]

# (trial, dynamic ms/step, static ms/step, static first step s): dynamic's first step 0.1 s.
PAIRS = [(0, 10.0, 2.0, 5.1), (1, 12.0, 3.0, 9.1), (2, 8.0, 4.0, 4.1)]


def _cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PROTOLAB, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def make_study(root: Path, study: str = "demo") -> str:
    """A paired study written the way a sweep writes it (Tracker, child runs, end)."""
    from protolab.report import study_notes
    from protolab.tracking import Tracker

    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    tracker = Tracker(uri, study, study, describe=study_notes)
    config = {"backends": ["lightning", "keras"], "study": {"name": study, "n_trials": 3}}
    for trial, dyn_ms, sta_ms, sta_first in PAIRS:
        for backend, family, mode, ms, first, compile_s in (
            ("lightning", "dynamic", "eager", dyn_ms, 0.1, 0.01),
            ("keras", "static", "XLA", sta_ms, sta_first, sta_first - 0.2),
        ):
            tags = {
                "protolab.study": study,
                "protolab.trial": str(trial),
                "protolab.backend": backend,
                "protolab.family": family,
                "protolab.mode": mode,
                "protolab.eager": str(family == "dynamic").lower(),
                "protolab.pair": f"{study}/t{trial}",
                "protolab.metric": "val/acc",
            }
            params = {"width": 64, "backend": backend, "family": family, "mode": mode}
            run = tracker.child(f"t{trial}-{backend}", tags, params)
            run.log_texts({"config/resolved.json": json.dumps(config)})
            for epoch in (1, 2, 3):
                run.log_metrics({"val/acc": 0.8 + trial / 100 + epoch / 100}, step=epoch)
            one_off = {"time/step_ms": ms, "time/first_step_s": first, "time/compile_s": compile_s}
            run.log_metrics({**one_off, "train/steps": 66.0}, step=0)
            run.end("COMPLETE")
    tracker.log_parent({"sweep/trials_complete": 3.0}, {"protolab.direction": "maximize"})
    tracker.end()
    return uri


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui")
    make_study(root)
    return root


def test_parent_run_carries_config_metrics_and_description(study_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{study_dir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("demo")
    parent = client.search_runs([exp.experiment_id], "tags.`protolab.role` = 'parent'")[0]
    # The study's config as params.
    assert parent.data.params["backends"] == '["lightning", "keras"]'
    assert parent.data.params["study.n_trials"] == "3"
    # The report's comparison (protolab report says the same): speed-ups 5, 4, 2 -> geometric
    # mean 40 ** (1/3); break-even of the medians (0.1 s vs 5.1 s to first step, 10 vs 3
    # ms/step) 5.0 s / 7 ms = 714.3 steps, never reached by 66-step trials.
    m = parent.data.metrics
    assert m["compare/speedup"] == pytest.approx(40 ** (1 / 3))
    assert m["compare/speedup_low"] < m["compare/speedup"] < m["compare/speedup_high"]
    assert m["compare/break_even_steps/keras"] == pytest.approx(5.0 / 0.007)
    assert m["compare/paid_back_frac/keras"] == 0.0
    assert m["best/keras/val/acc"] == pytest.approx(0.85)
    assert m["best/lightning/val/acc"] == pytest.approx(0.85)
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("## demo: lightning (dynamic, eager) vs keras (static, XLA)")
    assert "**best static (keras) is 3.42x faster per step than best dynamic (lightning)" in note
    assert "keras pays back after 715 steps" in note
    assert "compile never paid back in this sweep" in note
    assert "| t0 | 10.0 | 2.00 | 5.00x | 4.90 | 625 | 0.830 | 0.830 |" in note
    assert "### How to read this" in note
    # The experiment says what the study is and where to start.
    exp_note = exp.tags["mlflow.note.content"]
    assert exp_note.startswith("**Start here") and parent.info.run_id in exp_note
    view = json.loads(exp.tags["mlflow.sharedViewState.protolab-family"])
    assert view["groupBy"]["groupByKeys"] == [  # pruned and failed runs in groups of their own
        {"mode": "param", "groupByData": "family"},
        {"mode": "tag", "groupByData": "protolab.state"},
    ]
    assert "metrics.`val/acc`" in view["selectedColumns"]
    # Charts colour runs by family.
    child = client.search_runs([exp.experiment_id], "tags.`protolab.backend` = 'keras'")[0]
    assert child.data.tags["mlflow.runColor"] == "#ff7f0e"


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


@pytest.fixture
def ui_server(study_dir: Path) -> Iterator[tuple[subprocess.Popen[str], list[str], int]]:
    port = free_port()
    proc = subprocess.Popen(
        [*PROTOLAB, "ui", "--port", str(port)],
        cwd=study_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("ready after"):
                break
        assert any(x.startswith("ready after") for x in lines), "\n".join(lines)
        yield proc, lines, port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_ui_serves_the_runs_table_in_one_local_process(
    ui_server: tuple[subprocess.Popen[str], list[str], int],
) -> None:
    proc, lines, port = ui_server
    text = "\n".join(lines)
    urls = re.findall(r"http://\S+", text)
    landing = urls[0]
    assert re.fullmatch(
        rf"http://127\.0\.0\.1:{port}/#/experiments/\d+/runs\?workflowType=machine_learning",
        landing,
    ), text
    assert any("/runs/" in u for u in urls[1:]), "the parent run's page is printed too"
    assert any(u.endswith("&viewStateShareKey=protolab-family") for u in urls), text
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/health", timeout=10) as r:
        assert r.status == 200
    api = f"{base}/ajax-api/2.0/mlflow/experiments/search?max_results=10"
    with urllib.request.urlopen(api, timeout=30) as r:
        names = [e["name"] for e in json.load(r)["experiments"]]
    assert "demo" in names
    with urllib.request.urlopen(base + "/", timeout=10) as r:
        page = r.read().decode()
    assert "<html" in page.lower() and "static-files/static/js/main" in page  # MLflow's UI
    assert '"mlflow.workflowType_v1"' in page  # "Model training" as the default mode
    assert _children(proc.pid) == [], "one process: no workers, no job runner"
    # Bound to loopback only: another local address does not answer.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(("10.255.255.255", 1))
    own = probe.getsockname()[0]
    probe.close()
    if not own.startswith("127."):
        with pytest.raises(OSError), socket.create_connection((own, port), timeout=2):
            pass


def test_bad_port_is_exit_2_before_anything_is_created(tmp_path: Path) -> None:
    for port in ("0", "70000"):
        r = _cli("ui", "--port", port, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        make_study(tmp_path)
        before = sorted(p.name for p in tmp_path.rglob("*"))
        r = _cli("ui", "--port", str(taken), cwd=tmp_path)
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{taken}" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_no_store_or_unknown_study_is_exit_2(tmp_path: Path) -> None:
    r = _cli("ui", "--port", str(free_port()), cwd=tmp_path)
    assert r.returncode == 2 and "run `protolab sweep CONFIG` first" in r.stderr, r.stderr
    assert not (tmp_path / "mlruns").exists(), "no empty store is created"
    make_study(tmp_path)
    r = _cli("ui", "--port", str(free_port()), "--study", "nope", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "no study 'nope'" in r.stderr and "studies there: demo" in r.stderr
