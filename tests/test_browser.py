"""A real headless Chromium on ``protolab ui`` after a real paired sweep: what a newcomer sees.

Asserts from the DOM that the printed URL lands on the runs table listing the parent run,
that expanding it lists the child runs, that the parent's description tells the verdict
(with the pair table and the report's plot), that a child run's page charts ``val/acc``,
and that the family view groups the runs. The screenshots go to ``$PROTOLAB_SCREENSHOTS``
(``PROTOLAB_SCREENSHOTS=docs/ui`` refreshes the ones ``docs/ui.md`` shows), else to a temporary
folder: a test run never edits the checkout.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright`` package, which
drives that browser; no browser is downloaded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._servers import free_port
from tests.conftest import TINY_MLP

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("PROTOLAB_SCREENSHOTS") or tempfile.mkdtemp(prefix="protolab-shots-"))
WAIT_MS = 120_000  # the UI's bundle on a busy 2-core machine
STUDY = "ui-browser"


def _need_browser() -> Any:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    return sync_playwright


def _cli(*args: str, cwd: Path, timeout: float = 900) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "protolab.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"protolab {' '.join(args)}:\n{r.stdout}\n{r.stderr}"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-trial paired sweep (dynamic and static), then its report."""
    _need_browser()
    root = tmp_path_factory.mktemp("browser")
    (root / "exp.py").write_text(textwrap.dedent(TINY_MLP))
    (root / "sweep.yaml").write_text(
        textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [lightning, keras]
            study: {{name: {STUDY}, n_trials: 2, sampler: random, pruner: none}}
            train: {{epochs: 3, batch_size: 128, lr: 0.005}}
            """
        )
    )
    _cli("sweep", "sweep.yaml", cwd=root)
    _cli("report", STUDY, "--out", str(root / "report"), cwd=root)
    # The report's plots are on the parent run now; its description embeds them once the
    # notes are refreshed (as the next sweep's end does).
    from protolab.commands._studies import find_study, mlflow_client, study_experiments
    from protolab.report import write_study_notes

    client = mlflow_client(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    s = find_study(study_experiments(client), STUDY, "test store")
    write_study_notes(client, s.experiment_id, s.parent_run_id, STUDY)
    return root


@pytest.fixture(scope="module")
def ui_urls(swept: Path) -> Iterator[list[str]]:
    """``protolab ui`` on a free port; the URLs it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "protolab.cli", "ui", "--port", str(free_port())],
        cwd=swept,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not any(x.startswith("ready") for x in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
        assert any(x.startswith("ready") for x in lines), "\n".join(lines)
        yield re.findall(r"http://\S+", "\n".join(lines))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(ui_urls: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A fresh browser profile, as a newcomer's."""
    sync_playwright = _need_browser()
    profile = tmp_path_factory.mktemp("chromium-profile")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(WAIT_MS)
        yield context.new_page()
        context.close()


def _close_assistant(page: Any) -> None:
    """MLflow 3 opens an "Assistant" side panel in a fresh profile; close it for the shots."""
    close = page.get_by_role("button", name="Close")
    if close.count() and close.first.is_visible():
        close.first.click()


def test_printed_url_lands_on_the_runs_table_with_the_parent(page: Any, ui_urls: list[str]) -> None:
    landing = ui_urls[0]
    assert landing.endswith("/runs?workflowType=machine_learning")
    page.goto(landing)
    grid = page.get_by_role("grid").first
    parent = grid.get_by_role("link", name=STUDY, exact=True)
    parent.wait_for()
    _close_assistant(page)
    assert page.get_by_role("heading", name="Runs").first.is_visible()
    assert page.get_by_text("Start here").first.is_visible()  # the experiment's note
    page.screenshot(path=str(SHOTS / "runs.png"))
    row = page.locator("[role=row]").filter(has=page.get_by_role("link", name=STUDY, exact=True))
    row.locator("button[data-component-id*='runnamecellrenderer']").first.click()
    for name in ("t0-lightning", "t0-keras", "t1-lightning", "t1-keras"):
        grid.get_by_role("link", name=name, exact=True).wait_for()
    page.screenshot(path=str(SHOTS / "runs-expanded.png"))


def test_parent_description_tells_the_verdict(page: Any, ui_urls: list[str]) -> None:
    parent = next(u for u in ui_urls if "/runs/" in u)
    page.goto(parent)
    page.get_by_text(re.compile("per step|no clear difference")).first.wait_for()
    _close_assistant(page)
    text = page.inner_text("body")
    verdict = r"best static \(keras\) is [\d.]+x (faster|slower) per step|no clear difference"
    assert re.search(verdict, text), text
    assert re.search(r"keras (pays back after [\d,]+ steps|never pays back)", text), text
    assert "break-even keras" in text and "How to read this" in text
    more = page.get_by_text("Show more", exact=True)
    if more.count() and more.first.is_visible():
        more.first.click()  # MLflow folds long descriptions
    plot = page.locator("img[src*='get-artifact']").first
    plot.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle())
    page.set_viewport_size({"width": 1400, "height": 1500})  # the table and the first plot
    title = page.get_by_text(f"{STUDY}: lightning (dynamic, eager) vs keras (static, XLA)").first
    title.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "parent-description.png"))
    page.set_viewport_size({"width": 1400, "height": 900})


def test_child_run_page_charts_val_acc(page: Any, ui_urls: list[str]) -> None:
    page.goto(next(u for u in ui_urls if "/runs/" in u))
    page.get_by_role("link", name="t0-keras", exact=True).first.click()
    page.get_by_role("tab", name="Model metrics").first.click()
    _close_assistant(page)
    # Charts are grouped by prefix and drawn as they scroll into view; the search shows one.
    page.get_by_placeholder("Search metric charts").fill("val/acc")
    page.locator("[title='val/acc']").first.wait_for()
    page.get_by_text("t0-keras (val/acc)").first.wait_for()  # the chart's legend: it is drawn
    # MLflow's own links drop ?workflowType=; protolab ui's page keeps "Model training" on.
    assert "Evaluation runs" not in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "child-charts.png"))


def test_family_view_groups_dynamic_and_static(page: Any, ui_urls: list[str]) -> None:
    family = next(u for u in ui_urls if "viewStateShareKey=" in u)
    page.goto(family)
    # grouped by family and state (pruned and failed runs apart from the complete ones)
    page.get_by_text("family: static").first.wait_for()
    page.get_by_text("family: dynamic").first.wait_for()
    _close_assistant(page)
    page.screenshot(path=str(SHOTS / "family-view.png"))
