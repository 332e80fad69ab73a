"""The ``protolab`` command line: type hints are the CLI (Typer).

Heavy modules (frameworks, MLflow, Optuna) are imported inside the commands that need them,
so ``protolab --help`` stays fast. Every :class:`UserInputError` becomes one line on stderr
and exit code 2; no traceback reaches the user for bad input.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from protolab._version import __version__
from protolab.errors import ProtolabError, UserInputError

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
    typer.Argument(help="Dotted overrides with YAML values: study.n_trials=5 backends=[keras]."),
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


def _quiet_frameworks() -> None:
    """Set the frameworks' process environment before any of them is imported.

    TensorFlow's C++ logs are silenced unless asked for, Keras runs on TensorFlow, and
    OpenMP threads sleep instead of spin-waiting between parallel regions: with spinning,
    any other busy process (a second worker, TensorFlow's pool) made torch steps of the
    digits MLP ~50x slower on 2 cores (152 ms vs 2.9 ms measured).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT/SIGTERM stop the sweep after cleaning up the current trial; exit 130/143.

    The first signal raises inside the sweep, which fails the running trial (reason
    ``interrupted``), ends its MLflow runs KILLED and re-enqueues it. A second signal exits
    at once; the next worker to open the study reaps whatever was left RUNNING.
    """
    import signal

    from protolab.sweep._lease import Interrupted, interrupt
    from protolab.sweep._worker import SweepFailed

    def hard_exit(signum: int, frame: Any) -> None:
        os._exit(128 + signum)

    def on_signal(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, hard_exit)
        signal.signal(signal.SIGTERM, hard_exit)
        interrupt(signum)  # raises now, or as soon as a store write in progress is done

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except Interrupted as e:
        resume = " ".join(["protolab", *sys.argv[1:]])
        _fail(f"interrupted; finished trials are saved. Resume with: {resume}", 128 + e.signum)
    except KeyboardInterrupt:
        resume = " ".join(["protolab", *sys.argv[1:]])
        _fail(f"interrupted; finished trials are saved. Resume with: {resume}", 130)
    except SweepFailed as e:
        _fail(str(e), 1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
) -> None:
    """Run or resume the Optuna study of CONFIG until it holds study.n_trials finished trials."""

    def body() -> None:
        from protolab.tracking import start_writer

        start_writer()  # MLflow's ~2 s import, in the writer process, while the config loads
        from rich.console import Console

        from protolab._display import SweepDisplay, summary_table
        from protolab.config import load_config
        from protolab.sweep import prepare
        from protolab.sweep import sweep as run_sweep

        extra = ["study.max_failures=1"] if fail_fast else []
        cfg, script = load_config(config, [*(overrides or []), *extra])
        ctx = prepare(cfg, config, script)
        with _interruptible():
            summary = run_sweep(ctx, SweepDisplay(), warm_from)
        out = Console()
        out.print(summary_table(summary, cfg.backends))
        if len(summary.pareto) > 1 or ctx.multi_objective:
            front = ", ".join(f"t{n}" for n in summary.pareto) or "none yet"
            objectives = ", ".join(f"{m} ({d})" for m, d in ctx.objectives)
            out.print(f"Pareto front (* in the table) over {objectives}: {front}")
        elif summary.best_value is not None:
            out.print(
                f"best: t{summary.best_number} {ctx.metric}={summary.best_value:.4g} "
                f"in {summary.wall_s:.1f} s; see it with `protolab ui`"
            )

    _guard(body)


@app.command()
def run(
    config: ConfigArg,
    overrides: OverridesArg = None,
    params: Annotated[
        str | None, typer.Option(help='Fixed values as JSON: \'{"width": 128, "act": "relu"}\'.')
    ] = None,
    best: Annotated[bool, typer.Option("--best", help="Use the best trial's values.")] = False,
) -> None:
    """Train once with fixed values (defaults, --params or --best), logged like a trial."""

    def body() -> None:
        from protolab.tracking import open_tracker, start_writer

        start_writer()
        from rich.console import Console

        from protolab.config import load_config
        from protolab.sweep import prepare, run_once
        from protolab.sweep._worker import best_params

        if params is not None and best:
            raise UserInputError("--params and --best are exclusive; give one of them")
        values: dict[str, Any] = {}
        if params is not None:
            try:
                values = json.loads(params)
            except json.JSONDecodeError as e:
                raise UserInputError(
                    f"--params: not valid JSON ({e.msg}), got {params!r}"
                ) from None
            if not isinstance(values, dict):
                raise UserInputError(f"--params must be a JSON object, but got {params!r}")
        cfg, script = load_config(config, overrides or [])
        ctx = prepare(cfg, config, script)
        if best:
            values = best_params(ctx)
        tracker = open_tracker(ctx)
        label = "best" if best else "run"
        try:
            out = run_once(
                ctx, tracker, None, label, values=values, extra_tags={"protolab.mode": "run"}
            )
        except ProtolabError:
            raise
        except Exception as e:  # the run is logged FAILED with its traceback; say why, briefly
            from protolab.sweep._run import fail_reason

            raise RunFailed(
                f"{label} failed: {fail_reason(e)} (traceback in its MLflow run)"
            ) from e
        finally:
            tracker.end()
        console = Console()
        for name, result in out.results.items():
            m = result.metrics
            console.print(
                f"{label}-{name}: {ctx.metric}={m.get(ctx.metric, float('nan')):.4g}  "
                f"step {m['time/step_ms']:.3f} ms  first step {m['time/first_step_s']:.2f} s  "
                f"params {int(m['model/params'])}"
            )

    _guard(body)


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
    """The family tree of a trial in an evolution study: each ancestor and what it changed."""

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
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 5000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 127.0.0.1 keeps it local.")
    ] = "127.0.0.1",
    uri: Annotated[str | None, typer.Option(help="Tracking URI (default: ./mlruns).")] = None,
) -> None:
    """Open the MLflow UI over this project's store (runs table: #/experiments/<id>/runs)."""

    def body() -> None:
        from protolab.tracking import default_tracking_uri

        store = uri or default_tracking_uri()
        cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store]
        cmd += ["--host", host, "--port", str(port)]
        if store.startswith("sqlite:///"):
            root = Path(store.removeprefix("sqlite:///")).parent / "artifacts"
            cmd += ["--default-artifact-root", root.resolve().as_uri()]
        typer.echo(
            f"MLflow UI on http://{host}:{port} over {store}\n"
            "protolab runs are on each experiment's 'Runs' tab (#/experiments/<id>/runs)."
        )
        os.execv(sys.executable, cmd)

    _guard(body)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
