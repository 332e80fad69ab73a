"""The ``protolab`` command line: type hints are the CLI (Typer).

Heavy modules (frameworks, MLflow, Optuna) are imported inside the commands that need them,
so ``protolab --help`` stays fast. Every :class:`UserInputError` becomes one line on stderr
and exit code 2; no traceback reaches the user for bad input.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

from protolab._tags import ATTR, TAG

if TYPE_CHECKING:
    from protolab.config import Config
    from protolab.sweep import SweepSummary
    from protolab.sweep._context import SweepContext
    from protolab.sweep._run import Outcome
    from protolab.tracking import TrackerProtocol as Tracker


def _early_exit(signum: int, frame: Any) -> None:
    """An interrupt outside a sweep's own handling (start-up, other commands): stop now.

    A sweep installs its own handlers before it writes anything (``_interruptible``), so
    an interrupt here left no study behind; a ``run`` in progress has its run ended by the
    tracking writer ("worker died").
    """
    resume = " ".join(["protolab", *sys.argv[1:]])
    text = f"error: interrupted; stopped before the command finished. Rerun: {resume}\n"
    os.write(2, text.encode())
    os._exit(128 + signum)


if __name__ == "__main__" or Path(sys.argv[0]).name == "protolab":  # the CLI, not an import
    import signal as _signal

    for _s in (_signal.SIGINT, _signal.SIGTERM):  # no KeyboardInterrupt traceback at start-up
        _signal.signal(_s, _early_exit)

import typer  # noqa: E402 - after the start-up handler: this import is most of the start-up

from protolab._quiet import quiet_tensorflow_import  # noqa: E402
from protolab._version import __version__  # noqa: E402
from protolab.errors import ProtolabError, UserInputError  # noqa: E402

__all__ = ["app", "main"]

app = typer.Typer(
    name="protolab",
    help="PyTorch or TensorFlow? Sweep an experiment's architectures on both and measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs ~0.3 s at every start
)

T = TypeVar("T")

ConfigArg = Annotated[Path, typer.Argument(help="YAML config (e.g. configs/digits_mlp.yaml).")]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Dotted overrides with YAML values: study.n_trials=5 backends=[static]."),
]


class RunFailed(ProtolabError):
    """``protolab run`` trained nothing useful: the job raised (exit 1)."""


def _fail(message: str, code: int) -> NoReturn:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(
        f"[bold red]error:[/] {escape(message)}", soft_wrap=True
    )
    raise typer.Exit(code)


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body; protolab errors become one message and their exit code."""
    _quiet_frameworks()
    try:
        return fn()
    except UserInputError as e:
        _fail(str(e), e.exit_code)
    except ProtolabError as e:
        _fail(str(e), e.exit_code)


def _modes_run(summary: Any, configured: list[str]) -> list[str]:
    """The backends trials actually ran (aliases resolve per architecture), in order."""
    seen = [b for t in summary.trials for b in t.user_attrs.get(ATTR.METRICS, {})]
    return list(dict.fromkeys(seen)) or configured


def _quiet_frameworks() -> None:
    """Set the frameworks' process environment before any of them is imported.

    TensorFlow's C++ logs are silenced unless asked for (each backend sets what its
    framework needs when it loads; the start-up notices that ignore the log level are
    filtered out of its import, see ``protolab._quiet``). OpenMP's wait policy is left as
    the user has it: each torch trial measures its thread count instead
    (``protolab.backends._threads.ThreadProbe``; ``benchmarks/threads.py``).
    """
    quiet_tensorflow_import()  # TF_CPP_MIN_LOG_LEVEL=3 unless set, and the import filtered
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run at"


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT/SIGTERM stop the sweep after cleaning up the current trial; exit 130/143.

    The first signal raises inside the sweep, which fails the running trial (reason
    ``interrupted``), ends its MLflow runs KILLED and re-enqueues it. A second signal exits
    at once; the next worker to open the study reaps whatever was left RUNNING.
    """
    import signal

    from protolab._signals import in_native_import
    from protolab.sweep import SweepFailed
    from protolab.sweep._lease import Interrupted, interrupt, interrupt_again, reset_interrupts

    reset_interrupts()

    def hard_exit(signum: int, frame: Any) -> None:
        def now() -> None:
            resume = " ".join(["protolab", *sys.argv[1:]])
            os.write(
                2,
                "error: interrupted again: stopped at once. Left behind: the trial in progress, "
                "RUNNING in the study until the next run of this command fails and retries it "
                "(the tracking writer ends its MLflow runs); finished trials are saved. "
                f"Resume with: {resume}\n".encode(),
            )
            os._exit(128 + signum)

        interrupt_again(now)  # after the store write in progress: never half of one

    def on_signal(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, hard_exit)
        signal.signal(signal.SIGTERM, hard_exit)
        if _EXIT_AT_ONCE and in_native_import():  # a raise here would abort the process
            resume = " ".join(["protolab", *sys.argv[1:]])
            message = f"error: interrupted; finished trials are saved. Resume with: {resume}\n"
            os.write(2, message.encode())
            os._exit(128 + signum)  # nothing is written during an import: nothing is cut
        interrupt(signum)  # raises now, or as soon as a store write in progress is done

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt as e:
        resume = " ".join(["protolab", *sys.argv[1:]])
        code = 128 + e.signum if isinstance(e, Interrupted) else 130
        _stop(f"interrupted; finished trials are saved. Resume with: {resume}", code)
    except SweepFailed as e:
        _fail(str(e), 1)
    finally:
        reset_interrupts()
        for s, handler in previous.items():
            signal.signal(s, handler)


_EXIT_AT_ONCE = False  # set by main(): the process is the command, not a test's caller


def _stop(message: str, code: int) -> NoReturn:
    """Say why, then (as the command) exit at once: the interpreter's teardown with torch
    or TensorFlow loaded took 10+ s on a busy machine, after an interrupt that should stop
    within a second. Every write is done by then, or left to the tracking writer."""
    if not _EXIT_AT_ONCE:
        _fail(message, code)
    with contextlib.suppress(typer.Exit):
        _fail(message, code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"protolab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """PyTorch or TensorFlow? Sweep an experiment's architectures on both and measure."""


NewStudyOpt = Annotated[
    bool,
    typer.Option(
        "--new-study",
        help="The study store lost the study MLflow has runs of: start it over (the old "
        "runs stay, under their own study id).",
    ),
]


WorkersOpt = Annotated[
    str | None,
    typer.Option(
        "--workers", help="Start N workers on this host (auto: one per GPU, else per core)."
    ),
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust",
        envvar="PROTOLAB_TRUST",
        help="Allow hardware.compile_cache_sync: download compiled programs from the tracking "
        "store and run them: only from a store whose writers you trust.",
    ),
]


def _sweep_flags(
    fail_fast: bool, show_all: bool, new_study: bool, trust: bool = False
) -> list[tuple[str, bool]]:
    """The sweep's switches a launcher passes on to each of its workers."""
    flags = [("--fail-fast", fail_fast), ("--all", show_all), ("--new-study", new_study)]
    return [*flags, ("--trust", trust)]


@app.command()
def sweep(
    config: ConfigArg,
    overrides: OverridesArg = None,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first failed trial.")
    ] = False,
    warm_from: Annotated[
        str | None,
        typer.Option(
            "--from", help="Enqueue the best trials of this study (or this MLflow run id) first."
        ),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="List pruned and failed trials in the summary too.")
    ] = False,
    workers: WorkersOpt = None,
    new_study: NewStudyOpt = False,
    trust: TrustOpt = False,
) -> None:
    """Run or resume the Optuna study of CONFIG until it holds study.n_trials finished trials."""
    if workers is not None:  # a launcher: N ordinary workers (commands/_workers.py)
        flags = [f for f, on in _sweep_flags(fail_fast, show_all, new_study, trust) if on]
        flags += ["--from", warm_from] if warm_from else []
        _guard(lambda: _launch_workers(config, overrides or [], workers, flags))
        return

    def body() -> None:
        from protolab.tracking import start_writer

        start_writer()  # MLflow's ~2 s import, in the writer process, while the config loads
        from protolab._display import SweepDisplay

        display = SweepDisplay()  # its phase line covers the imports below
        display.phase("loading the config and the experiment")
        from protolab.backends import NAMES
        from protolab.config import load_config
        from protolab.sweep import prepare
        from protolab.sweep import sweep as run_sweep

        extra = ["study.max_failures=1"] if fail_fast else []
        cfg, script = load_config(config, [*(overrides or []), *extra], backends=NAMES)
        _use_compile_cache(cfg, trust)
        ctx = prepare(cfg, config, script)
        display.phase(f"opening the stores, importing {', '.join(cfg.backends)}")
        with _interruptible():
            try:
                summary = run_sweep(ctx, display, warm_from, new_study)
            finally:
                display.stop()
        _print_summary(summary, ctx, show_all, time.perf_counter() - display.started)
        if summary.recycled:  # under --workers: the launcher starts a fresh worker
            from protolab.sweep import EXIT_RECYCLE

            raise typer.Exit(EXIT_RECYCLE)

    _guard(body)


def _print_summary(summary: SweepSummary, ctx: SweepContext, show_all: bool, wall_s: float) -> None:
    """The trials table, then the best trial (or the Pareto front)."""
    from rich.console import Console

    from protolab._display import summary_table
    from protolab._format import sig3

    out = Console()
    configured = list(ctx.cfg.backends)
    out.print(summary_table(summary, _modes_run(summary, configured), show_all=show_all))
    if len(summary.pareto) > 1 or ctx.multi_objective:
        front = ", ".join(f"t{n}" for n in summary.pareto) or "none yet"
        objectives = ", ".join(f"{m} ({d})" for m, d in ctx.objectives)
        out.print(f"Pareto front (* in the table) over {objectives}: {front}")
    elif summary.best_value is not None:
        out.print(
            f"best: t{summary.best_number} {ctx.metric}={sig3(summary.best_value)}; "
            f"wall {wall_s:.1f} s; see it with `protolab ui`",
            highlight=False,
        )


def _launch_workers(config: Path, overrides: list[str], workers: str, flags: list[str]) -> None:
    from protolab.commands._workers import run_workers

    code = run_workers(config, overrides, workers, [str(config), *overrides, *flags], main)
    if code:
        raise typer.Exit(code)


@app.command()
def run(
    config: ConfigArg,
    overrides: OverridesArg = None,
    params: Annotated[
        str | None, typer.Option(help='Fixed values as JSON: \'{"width": 128, "act": "relu"}\'.')
    ] = None,
    best: Annotated[bool, typer.Option("--best", help="Use the best trial's values.")] = False,
    trust: TrustOpt = False,
) -> None:
    """Train once with fixed values (defaults, --params or --best), logged like a trial."""

    def body() -> None:
        from protolab.tracking import start_writer

        start_writer()
        from protolab.backends import NAMES
        from protolab.commands._params import fixed_values
        from protolab.config import load_config
        from protolab.sweep import best_params, prepare, run_once
        from protolab.sweep._checks import check_context, check_values
        from protolab.sweep._test_split import hold_ends, log_test_metrics

        values = fixed_values(params, best)
        cfg, script = load_config(config, overrides or [], backends=NAMES)
        _use_compile_cache(cfg, trust)
        ctx = prepare(cfg, config, script)
        check_context(ctx)
        if best:
            values = best_params(ctx)
        where = f"--best (study '{ctx.study_name}', renamed a choice?)" if best else "--params"
        check_values(ctx, values, where)
        tracker = _tracker_and_frameworks(ctx)
        label = "best" if best else "run"
        try:
            with hold_ends(tracker) as held:  # runs end once their test/* metrics are in
                out = run_once(ctx, held, None, label, values=values, extra_tags={TAG.MODE: "run"})
                tested = log_test_metrics(ctx, out, held, label)
        except ProtolabError:
            raise
        except Exception as e:  # the run is logged FAILED with its traceback; say why, briefly
            from protolab.sweep._run import fail_reason

            raise RunFailed(
                f"{label} failed: {fail_reason(e)} (traceback in its MLflow run)"
            ) from e
        finally:
            tracker.end()
        _print_run(out, ctx, label, tested)

    _guard(body)


def _use_compile_cache(cfg: Config, trust: bool = False) -> None:
    """The persistent compile cache's folder into the environment, before any framework
    loads: every backend, and each worker process, reads it from there (syncing through
    the tracking store only with ``--trust``: exit 2 before any store is written)."""
    from protolab.backends import configure_compile_cache

    hw = cfg.hardware
    configure_compile_cache(
        hw.compile_cache, hw.compile_cache_max_mb, cfg.tracking.uri, hw.compile_cache_sync, trust
    )


def _tracker_and_frameworks(ctx: SweepContext) -> Tracker:
    """The tracking writer opens its store while the frameworks import here (each on its
    own core), so a cold ``run`` waits for the slower of the two, not for both."""
    from protolab.backends import ALIASES, load_backends
    from protolab.report import study_notes
    from protolab.tracking import open_tracker, wait_open

    opening = open_tracker(ctx, wait=False, describe=study_notes)
    # reported as each job's time/import_s
    load_backends(name for name in ctx.cfg.backends if name not in ALIASES)
    return wait_open(opening)


def _print_run(
    out: Outcome, ctx: SweepContext, label: str, tested: dict[str, dict[str, float]]
) -> None:
    """A line per mode: the metric, step time, first step, params; then its test split."""
    from rich.console import Console

    console = Console()
    for name, result in out.results.items():
        m = result.metrics
        console.print(
            f"{label}-{name}: {ctx.metric}={m.get(ctx.metric, float('nan')):.4g}  "
            f"step {m['time/step_ms']:.3f} ms  first step {m['time/first_step_s']:.2f} s  "
            f"params {int(m['model/params'])}"
        )
        if name in tested:
            line = _test_line(label, name, tested[name], ctx.dataset.n_test)
            console.print(line, soft_wrap=True, highlight=False)


def _test_line(label: str, mode: str, metrics: dict[str, float], n: int) -> str:
    """One line of a mode's test-split metrics, loss last (the headline is acc/rmse)."""
    ordered = sorted(metrics, key=lambda k: (k == "test/loss", k not in ("test/acc", "test/rmse")))
    shown = "  ".join(f"{k}={metrics[k]:.4g}" for k in ordered)
    return f"{label}-{mode}: {shown}  (test split, {n} samples)"


@app.command()
def report(
    target: Annotated[str, typer.Argument(help="A study name or a YAML config.")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the report files (default: reports/STUDY).")
    ] = None,
    uri: Annotated[str | None, typer.Option(help="Tracking URI (default: ./mlruns).")] = None,
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage (default: the config's, or ./mlruns).")
    ] = None,
) -> None:
    """Which backend is faster for this model: comparison, break-even, Pareto front, plots."""

    def body() -> None:
        from protolab.report import run_report

        blocker = next((p for p in (out, *out.parents) if p.exists()), None) if out else None
        if blocker is not None and not blocker.is_dir():
            raise UserInputError(
                f"--out: {out} {'is' if blocker == out else f'lies below {blocker}, which is'} "
                "a file; allowed: a folder (new or existing)"
            )
        if out is not None:  # unwritable: one line now, not a traceback after the work
            from protolab._stores import check_store_path

            check_store_path(out, "--out", kind="dir")
        run_report(target, out_dir=out, tracking_uri=uri, storage=storage)

    _guard(body)


@app.command()
def lineage(
    target: Annotated[str, typer.Argument(help="A study name or a YAML config.")],
    trial: Annotated[
        int | None, typer.Option(help="Trial number (default: the best trial).")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage (default: ./mlruns).")] = None,
) -> None:
    """The family tree of a trial in an evolution or pbt study: each ancestor (pbt: the
    segment whose state it continued) and what it changed."""

    def body() -> None:
        from rich.console import Console

        from protolab.report._data import _open_study, resolve_source
        from protolab.samplers import family_tree

        study = _open_study(resolve_source(target, storage=storage))
        try:
            Console().print(family_tree(study, trial), highlight=False, soft_wrap=True)
        except ValueError as e:
            raise UserInputError(f"lineage: {e}") from None

    _guard(body)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port to serve on (1-65535).")] = 5000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 127.0.0.1 keeps it local.")
    ] = "127.0.0.1",
    uri: Annotated[str | None, typer.Option(help="Tracking URI (default: ./mlruns).")] = None,
    study: Annotated[
        str | None, typer.Option(help="Open this study (default: the most recently active).")
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the printed URL in a web browser.")
    ] = False,
) -> None:
    """MLflow UI over this project's store, opened on the study's runs table."""

    def body() -> None:
        from protolab.commands._ui import open_ui

        if not 1 <= port <= 65535:
            raise UserInputError(f"--port: a TCP port is 1..65535, but got {port}")
        open_ui(port, host, uri, study, open_browser)

    _guard(body)


@app.command()
def server(
    backend_store_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_BACKEND_STORE_URI",
            help="The database: postgresql://USER:PASSWORD@HOST:5432/DB (or the env var).",
        ),
    ] = None,
    artifacts: Annotated[
        str, typer.Option(help="Where uploaded artifacts are kept (a folder, or s3://...).")
    ] = "mlartifacts",
    host: Annotated[
        str,
        typer.Option(help="Interface to bind; 127.0.0.1 keeps it local (others: see --auth)."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on (1-65535).")] = 5000,
    workers: Annotated[int, typer.Option(min=1, help="Server worker processes.")] = 1,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(help="Host headers accepted (MLflow's --allowed-hosts): mlflow.lab:5000."),
    ] = None,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth", help="Turn on MLflow's basic auth (--app-name basic-auth): users log in."
        ),
    ] = False,
) -> None:
    """A team's MLflow tracking server over a database, serving artifacts (docs/deploy.md)."""

    def body() -> None:
        from protolab.commands._server import serve

        code = serve(backend_store_uri, artifacts, host, port, workers, allowed_hosts, auth)
        if code:
            raise typer.Exit(code)

    _guard(body)


@app.command("storage-proxy")
def storage_proxy(
    storage: Annotated[
        str,
        typer.Argument(
            envvar="PROTOLAB_PROXY_STORAGE",
            help="The study database: postgresql://USER:PASSWORD@HOST:5432/DB (or the env var).",
        ),
    ],
    host: Annotated[
        str,
        typer.Option(help="Interface to bind; 127.0.0.1 keeps it local (docs/deploy.md)."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on (1-65535).")] = 13000,
) -> None:
    """Optuna's gRPC storage proxy for many workers: study.storage=grpc://HOST:PORT."""

    def body() -> None:
        from protolab.commands._proxy import run_proxy

        code = run_proxy(storage, host, port)
        if code:
            raise typer.Exit(code)

    _guard(body)


@app.command()
def doctor(
    journal: Annotated[Path, typer.Argument(help="An Optuna journal file (e.g. my.journal).")],
) -> None:
    """Repair a damaged journal store: keep every intact record, back up the original."""

    def body() -> None:
        from protolab._journal import repair_journal

        typer.echo(repair_journal(journal))

    _guard(body)


@app.command()
def init(
    name: Annotated[
        str, typer.Argument(help="Study name: configs/NAME.yaml, experiments/NAME.py.")
    ],
    template: Annotated[
        str, typer.Option(help="mlp | cnn | seq | custom (your own .csv/.npz data).")
    ] = "mlp",
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a new experiment script and config (under ./experiments, ./configs) that sweep."""

    def body() -> None:
        from protolab.commands._init import init_project

        for path in init_project(name, template, Path.cwd(), force):
            typer.echo(f"wrote {path.relative_to(Path.cwd())}")
        typer.echo(f"next: protolab sweep configs/{name}.yaml && protolab ui --study {name}")

    _guard(body)


@app.command(name="cache")
def cache_(
    folder: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="The cache folder (default: $PROTOLAB_COMPILE_CACHE, or mlruns/compile_cache).",
        ),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Delete every cached program.")] = False,
    max_size: Annotated[
        str | None,
        typer.Option("--max-size", help="Trim to this size now, least recently used first (2GiB)."),
    ] = None,
) -> None:
    """Show the persistent compile cache (folder, size, entries per framework); clear or trim it."""

    def body() -> None:
        from protolab.commands._cache import show_cache

        show_cache(folder, clear, max_size)

    _guard(body)


@app.command(name="ls")
def ls_(
    uri: Annotated[str | None, typer.Option(help="Tracking URI (default: ./mlruns).")] = None,
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage (default: ./mlruns/optuna.journal).")
    ] = None,
) -> None:
    """List the studies in the stores: trials complete/pruned/failed, best, last activity."""

    def body() -> None:
        from protolab.commands._ls import list_studies

        list_studies(uri, storage)

    _guard(body)


_LOCAL_CONFIG = typer.Option(
    "--config",
    help="The study's config in your checkout: its script (same hash as the trial's) "
    "rebuilds a native model (pl.native).",
)


@app.command(name="export")
def export_(
    study: Annotated[str, typer.Argument(help="A study name or its YAML config.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="mlflow | savedmodel | pt2 | onnx | hub (what the mode writes)."
        ),
    ],
    trial: Annotated[
        int | None, typer.Option(help="Trial number (default: the study's best kept trial).")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="Mode of the trial (default: the first that writes it).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder (default: exports/STUDY/tN-BACKEND-FORMAT).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Registered model name for mlflow (default: STUDY).")
    ] = None,
    uri: Annotated[str | None, typer.Option(help="Tracking URI (default: ./mlruns).")] = None,
    config: Annotated[Path | None, _LOCAL_CONFIG] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Write into a non-empty --out folder that is no export."),
    ] = False,
) -> None:
    """Export a trial's kept weights: MLflow registry, SavedModel, torch.export, ONNX, hub."""

    def body() -> None:
        from protolab.commands._export import export_model

        done = export_model(study, fmt, trial, backend, out, uri, name, config, force)
        where = done.model_uri or str(done.path)
        alias = " (alias champion)" if done.champion else ""
        typer.echo(f"t{done.trial}-{done.backend} -> {fmt}: {where}{alias} in {done.seconds:.1f} s")
        if done.note:
            typer.echo(done.note)

    _guard(body)


@app.command()
def predict(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL_OR_RUN",
            help="An exported folder, models:/NAME@ALIAS, or a run id with a kept checkpoint.",
        ),
    ],
    file: Annotated[Path, typer.Argument(help="An .npz with inputs x (and targets y).")],
    out: Annotated[
        Path | None, typer.Option(help="Write the outputs here (.npz: outputs, pred).")
    ] = None,
    uri: Annotated[str | None, typer.Option(help="Tracking URI (default: ./mlruns).")] = None,
    config: Annotated[Path | None, _LOCAL_CONFIG] = None,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            envvar="PROTOLAB_TRUST",
            help="Also load models that run code of their own (MLflow pyfunc, pt2, "
            "hubconf.py): only from a store or folder whose writers you trust.",
        ),
    ] = False,
) -> None:
    """Run a kept or exported model on FILE.npz: outputs, and accuracy/RMSE if it has y."""

    def body() -> None:
        from protolab.commands._predict import predict_file

        typer.echo(predict_file(model, file, out, uri, config, trust).summary())

    _guard(body)


@app.command(name="watch")
def watch_(
    config: ConfigArg,
    overrides: OverridesArg = None,
    params: Annotated[
        str | None, typer.Option(help='Fixed values as JSON: \'{"width": 128, "act": "relu"}\'.')
    ] = None,
    best: Annotated[bool, typer.Option("--best", help="Use the best trial's values.")] = False,
    epochs: Annotated[int, typer.Option(help="Epochs per rerun.")] = 1,
    steps: Annotated[
        int | None, typer.Option(help="Steps per epoch (default: the whole epoch).")
    ] = None,
    no_track: Annotated[
        bool, typer.Option("--no-track", help="Do not log the reruns to MLflow.")
    ] = False,
) -> None:
    """Keep the frameworks warm and rerun a short job on every save of the script or config."""

    def body() -> None:
        from protolab.commands._watch import watch_command

        watch_command(config, overrides or [], params, best, epochs, steps, not no_track)

    _guard(body)


def main() -> None:
    if "_PROTOLAB_COMPLETE" in os.environ:  # shell completion (docs/ui.md); --help stays lean
        from typer.completion import completion_init

        completion_init()
    import signal

    for s in (signal.SIGINT, signal.SIGTERM):  # until sweep's own handlers take over
        signal.signal(s, _early_exit)
    global _EXIT_AT_ONCE
    _EXIT_AT_ONCE = True
    app()


if __name__ == "__main__":
    main()
