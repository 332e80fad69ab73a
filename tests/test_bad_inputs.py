"""Every mistake knowable before training is refused up front (issue 13, item 5).

Each case runs the real CLI in-process on a fresh project and must exit 2 with one message
that names the file or field, what was received and what is allowed, print no traceback,
and leave the project exactly as it was: no study, no MLflow store, no half-written file.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from protolab.cli import app
from tests.conftest import TINY_MLP

runner = CliRunner()

BASE = """\
experiment: exp.py
backends: [lightning]
study: {name: tiny, n_trials: 2}
train: {epochs: 1}
"""


def _script(body: str, data: str = "digits", metric: str = "") -> str:
    head = "import protolab as pl\nfrom protolab import layers as L\n\n\n"
    head += f'@pl.experiment(data="{data}"'
    head += f", metric={metric})" if metric else ")"
    return head + "\ndef model(space):\n" + textwrap.indent(textwrap.dedent(body), "    ")


ARCH = "return pl.Arch(L.Flatten(), L.Dense(10))\n"


@dataclass
class Bad:
    id: str
    args: list[str]
    expect: list[str]
    command: str = "sweep"
    config: str = BASE
    script: str = TINY_MLP
    files: dict[str, str | bytes | None] = field(default_factory=dict)  # None: a folder
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


NO_GPU = {"CUDA_VISIBLE_DEVICES": "-1"}  # deterministic: no GPU visible, on any machine

# --- non-finite and out-of-domain values, in values, ranges and choices (types included) ---
VALUES = [
    Bad("lr-inf", ["train.lr=.inf"], ["train.lr", "finite number", "inf"]),
    Bad("lr-neg-inf", ["train.lr=-.inf"], ["train.lr", "finite number", "-inf"]),
    Bad("wd-nan", ["train.weight_decay=.nan"], ["train.weight_decay", "finite", "nan"]),
    Bad("wd-negative", ["train.weight_decay=-0.5"], ["weight_decay >= 0", "-0.5"]),
    Bad(
        "wd-range-negative",
        ["train.weight_decay={low: -1, high: 0.1}"],
        ["train.weight_decay", "`low >= 0` must hold", "low=-1.0"],
    ),
    Bad("lr-range-nan", ["train.lr={low: .nan, high: 1}"], ["train.lr.low", "finite", "nan"]),
    Bad("lr-range-inf", ["train.lr={low: 0.001, high: .inf}"], ["train.lr.high", "finite"]),
    Bad("lr-choice-nan", ["train.lr={choices: [0.1, .nan]}"], ["train.lr", "finite", "nan"]),
    Bad(
        "lr-choice-negative",
        ["train.lr={choices: [0.01, -0.01]}"],
        ["every choice of lr must be a finite number > 0", "-0.01", "[0.01, -0.01]"],
    ),
    Bad("lr-choice-bool", ["train.lr={choices: [true]}"], ["every choice of lr", "True"]),
    Bad(
        "lr-choice-word",
        ["train.lr={choices: [0.1, slow]}"],
        ["every choice of lr must be a finite number", "'slow'", "not a number"],
    ),
    Bad(
        "batch-choice-zero",
        ["train.batch_size={choices: [32, 0]}"],
        ["every choice of batch_size must be an integer >= 1", "got 0"],
    ),
    Bad(
        "batch-choice-fraction",
        ["train.batch_size={choices: [32.5]}"],
        ["batch_size", "integer", "32.5", "not a whole number"],
    ),
    Bad("batch-choice-word", ["train.batch_size={choices: [big]}"], ["batch_size", "'big'"]),
    Bad(
        "batch-range-fraction",
        ["train.batch_size={low: 16, high: 64.5}"],
        ["train.batch_size", "whole numbers", "high=64.5"],
    ),
    Bad(
        "batch-range-step",
        ["train.batch_size={low: 16, high: 64, step: 0.5}"],
        ["train.batch_size", "whole numbers", "step=0.5"],
    ),
    Bad(
        "batch-range-zero",
        ["train.batch_size={low: 0, high: 64}"],
        ["`low >= 1` must hold for batch_size", "low=0.0"],
    ),
    Bad("batch-bool", ["train.batch_size=true"], ["train.batch_size", "boolean", "True"]),
    Bad("epochs-bool", ["train.epochs=true"], ["train.epochs", "boolean", "True"]),
    Bad("n-trials-bool", ["study.n_trials=yes"], ["study.n_trials", "boolean", "True"]),
    Bad("lr-bool", ["train.lr=false"], ["train.lr", "boolean", "False"]),
    Bad("lr-word", ["train.lr=fast"], ["train.lr", "'fast'"]),
    Bad("timeout-inf", ["study.timeout_s=.inf"], ["study.timeout_s", "finite", "inf"]),
    Bad("seed-negative", ["study.seed=-1"], ["study.seed", "greater than or equal to 0", "-1"]),
    Bad("seed-huge", ["study.seed=99999999999"], ["study.seed", "less than or equal to"]),
    Bad("lr-choice-twice", ["train.lr={choices: [0.1, 0.1]}"], ["distinct", "0.1 appears twice"]),
    Bad(
        "optimizer-choice-twice",
        ["train.optimizer={choices: [adam, adam]}"],
        ["train.optimizer", "distinct", "'adam' appears twice"],
    ),
    Bad("wd-choice-word", ["train.weight_decay={choices: [adam]}"], ["weight_decay", "'adam'"]),
    Bad(
        "sampler-option-nan",
        ["study.sampler_options={n_startup_trials: .nan}"],
        ["study.sampler_options.n_startup_trials", "finite"],
    ),
    Bad("devices-bool", ["hardware.devices=true"], ["hardware.devices", "boolean"]),
    Bad(
        "precision-16-tpu",
        ["hardware.accelerator=tpu", "hardware.precision=16"],
        ["precision '16' needs a GPU", "'tpu'"],
    ),
]

# --- objectives, constraints and metrics the dataset or backends cannot produce -------------
METRICS = [
    Bad(
        "objective-unknown",
        ["study.objectives=[{metric: val/kappa}]"],
        ["study.objectives.0.metric", "unknown metric 'val/kappa'", "val/acc", "time/step_ms"],
    ),
    Bad(
        "objective-twice",
        ["study.objectives=[{metric: val/acc}, {metric: val/acc}, {metric: time/step_ms}]"],
        ["study.objectives", "val/acc appears twice"],
    ),
    Bad(
        "objective-direction",
        ["study.objectives=[{metric: val/acc, direction: up}]"],
        ["study.objectives.0.direction", "'maximize' or 'minimize'", "'up'"],
    ),
    Bad(
        "objective-regression-on-classes",
        ["study.objectives=[{metric: time/step_ms}, {metric: val/rmse}]", "study.pruner=none"],
        ["study.objectives.1.metric", "val/rmse needs a regression dataset", "classification"],
    ),
    Bad(
        "objective-acc-on-regression",
        ["study.objectives=[{metric: val/acc}]"],
        ["study.objectives.0.metric", "val/acc needs a classification dataset", "regression"],
        script=_script(ARCH, data="sine"),
    ),
    Bad(
        "pruner-pareto-optimism",
        ["study.pruner=pareto", "study.pruner_options={optimism: 1.5}"],
        ["study.pruner_options", "'pareto'", "optimism must be a quantile between 0 and 1", "1.5"],
    ),
    Bad(
        "constraint-unknown",
        ["study.constraints=['val/kappa >= 0.5']"],
        ["study.constraints", "unknown metric 'val/kappa'"],
    ),
    Bad(
        "constraint-wrong-task",
        ["study.constraints=['val/rmse <= 0.5']"],
        ["study.constraints.0", "val/rmse needs a regression dataset"],
    ),
    Bad(
        "script-metric-unknown",
        [],
        ["exp.py", "@experiment(metric=...)", "unknown metric 'accuracy'", "val/acc"],
        script=_script(ARCH, metric="'accuracy'"),
    ),
    Bad(
        "script-metric-wrong-task",
        [],
        ["exp.py", "@experiment(metric='val/rmse')", "needs a regression dataset"],
        script=_script(ARCH, metric="'val/rmse'"),
    ),
    Bad(
        "script-metric-not-text",
        [],
        ["exp.py", "unknown metric 42"],
        script=_script(ARCH, metric="42"),
    ),
]

# --- hardware not present, precision the device cannot do ----------------------------------
HARDWARE = [
    Bad(
        "gpu-absent",
        ["hardware.accelerator=gpu"],
        ["hardware.accelerator", "'gpu'", "no GPU", "CUDA_VISIBLE_DEVICES=-1", "auto or cpu"],
        env=NO_GPU,
    ),
    Bad(
        "fp16-on-cpu-auto",
        ["hardware.precision=16"],
        ["hardware.precision", "'16'", "needs a GPU", "'32' or 'bf16'"],
        env=NO_GPU,
    ),
    Bad(
        "gpu-absent-keras",
        ["hardware.accelerator=gpu", "backends=[keras]"],
        ["hardware.accelerator", "no GPU"],
        env=NO_GPU,
    ),
    Bad(  # downloaded compile cache entries are code: only with --trust
        "compile-cache-sync-untrusted",
        ["hardware.compile_cache_sync=true"],
        ["hardware.compile_cache_sync", "runs them here", "--trust (or PROTOLAB_TRUST=1)"],
        env={"PROTOLAB_TRUST": "0"},
    ),
    Bad(
        "compile-cache-sync-cache-off",
        ["hardware.compile_cache_sync=true", "hardware.compile_cache=off", "--trust"],
        ["hardware.compile_cache_sync", "hardware.compile_cache is off"],
    ),
]

# --- YAML: duplicate keys, aliases, size, what the path is ---------------------------------
YAML = [
    Bad(
        "duplicate-section",
        [],
        ["cfg.yaml:5", "duplicate key 'train'", "first at line 4"],
        config=BASE + "train: {epochs: 3}\n",
    ),
    Bad(
        "duplicate-nested",
        [],
        ["cfg.yaml:4", "duplicate key 'name'", "first at line 3"],
        config="experiment: exp.py\nstudy:\n  name: a\n  name: b\n",
    ),
    Bad(
        "duplicate-in-override",
        ["train={epochs: 1, epochs: 2}"],
        ["override train", "duplicate key 'epochs'"],
    ),
    Bad(
        "recursive-alias",
        [],
        ["cfg.yaml", "alias refers to itself"],
        config="experiment: exp.py\nstudy: &s\n  name: x\n  self: *s\n",
    ),
    Bad(
        "alias-bomb",
        [],
        ["cfg.yaml", "expands to more than 100000 values"],
        config="experiment: exp.py\na: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ),
    Bad(
        "oversized",
        [],
        ["cfg.yaml", "MiB", "at most 1 MiB"],
        config=BASE + ("# padding\n" * 120_000),
    ),
    Bad("not-utf8", [], ["cfg.yaml", "not a text file"], config="experiment: \udcff\n"),
    Bad(
        "tabs", [], ["cfg.yaml", "not valid YAML"], config="experiment: exp.py\nstudy:\n\tname: x\n"
    ),
    Bad(
        "deep-nesting",
        [],
        ["cfg.yaml", "nested too deeply"],
        config="experiment: exp.py\nx: " + "[" * 5000 + "]" * 5000 + "\n",
    ),
]

# --- study and experiment names that are not safe path and filter components ---------------
NAMES = [
    Bad("name-slash", ["study.name=a/b"], ["study.name", "letters, digits", "'a/b'"]),
    Bad("name-dotdot", ["study.name=.."], ["study.name", "without '..'", "'..'"]),
    Bad("name-dot-first", ["study.name=.hidden"], ["study.name", "starting with a letter"]),
    Bad("name-quote", ["study.name=it's"], ["study.name", '"it\'s"']),
    Bad("name-space", ["study.name=my study"], ["study.name", "'my study'"]),
    Bad("name-long", ["study.name=" + "x" * 300], ["study.name", "1-100", "characters)"]),
    Bad("name-absolute", ["study.name=/etc/passwd"], ["study.name", "'/etc/passwd'"]),
    Bad(
        "experiment-quote",
        ["tracking.experiment=a'b"],
        ["tracking.experiment", "without quotes", '"a\'b"'],
    ),
    Bad("experiment-padded", ["tracking.experiment=' x'"], ["tracking.experiment", "' x'"]),
]

# --- scripts that exit, raise at import, or declare impossible choices ----------------------
SCRIPTS = [
    Bad(
        "exit-at-import",
        [],
        ["exp.py:2", "loading the script called sys.exit(3)", "must not exit"],
        script="import sys\nsys.exit(3)\n",
    ),
    Bad(
        "exit-in-function",
        [],
        ["exp.py", "experiment 'model' called sys.exit()", "must not exit"],
        script=_script("raise SystemExit\n"),
    ),
    Bad(
        "raise-in-helper",
        [],
        ["exp.py:3", "KeyError: 'width'", "exp.py:5 in <module>", "exp.py:3 in helper"],
        script="import protolab as pl\ndef helper():\n    return {}['width']\n\nhelper()\n",
    ),
    Bad(
        "float-nan-bound",
        [],
        ["exp.py", "`low` must be finite", "nan"],
        script=_script("space.float('p', float('nan'), 1.0)\n" + ARCH),
    ),
    Bad(
        "choice-twice",
        [],
        ["exp.py", "space.choice('act')", "distinct", "'relu' appears twice"],
        script=_script("space.choice('act', ['relu', 'relu'])\n" + ARCH),
    ),
    Bad(
        "train-prefix",
        [],
        ["exp.py", "'train.lr'", "config's train settings"],
        script=_script("space.float('train.lr', 0.1, 1.0)\n" + ARCH),
    ),
    Bad(
        "float-step-word",
        [],
        ["exp.py", "`step` must be a number", "'x'"],
        script=_script("space.float('p', 0.0, 1.0, step='x')\n" + ARCH),
    ),
    Bad(
        "experiment-empty-name",
        [],
        ["exp.py", "name must be a non-empty string"],
        script=_script(ARCH).replace('data="digits"', 'data="digits", name=""'),
    ),
    Bad(
        "script-is-folder",
        ["experiment=sub"],
        ["experiment:", "is a directory"],
        files={"sub": None},
    ),
]

# --- layer arguments and native models: Keras' BatchNorm, a new model per build (issue 22) ---
_MADE_ONCE = """\
import torch
import protolab as pl

NET = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))  # at import


@pl.experiment(data="digits")
def model(space):
    return pl.native(torch=lambda: NET)
"""


_LIT_MODULE = """\
import lightning as L
import torch
import protolab as pl


class Lit(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y.long())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


@pl.experiment(data="digits")
def model(space):
    return pl.native(torch=Lit)
"""


def _batchnorm(args: str) -> str:
    return _script(f"return pl.Arch(L.Flatten(), L.BatchNorm({args}), L.Dense(10))\n")


ARCHS = [
    Bad(
        "batchnorm-momentum",
        [],
        ["exp.py", "BatchNorm: `0 <= momentum <= 1` must hold", "momentum=1.5"],
        script=_batchnorm("momentum=1.5"),
    ),
    Bad(
        "batchnorm-epsilon-zero",
        [],
        ["exp.py", "BatchNorm: `epsilon > 0` must hold", "epsilon=0"],
        script=_batchnorm("epsilon=0"),
    ),
    Bad(
        "batchnorm-epsilon-nan",
        [],
        ["exp.py", "BatchNorm: `epsilon` must be a finite number", "nan"],
        script=_batchnorm("epsilon=float('nan')"),
    ),
    Bad(
        "batchnorm-center-word",
        [],
        ["exp.py", "BatchNorm: `center` must be a bool", "center='yes'"],
        script=_batchnorm("center='yes'"),
    ),
    Bad(
        "batchnorm-batch-axis",
        [],
        ["exp.py", "BatchNorm: `axis` 0 is the batch axis", "-1 (the channels"],
        script=_batchnorm("axis=0"),
    ),
    Bad(
        "native-builder-not-callable",
        [],
        ["exp.py", "pl.native: torch= must be a function", "got int: 3"],
        script=_script("return pl.native(torch=3)\n"),
    ),
    Bad(
        "native-made-once",
        [],
        [
            "pl.native: the torch builder model.<locals>.<lambda> (exp.py:9)",
            "returned the same Sequential object as an earlier call",
            "construct the module inside the builder",
        ],
        script=_MADE_ONCE,
    ),
]

# --- data files -----------------------------------------------------------------------------
_NPY = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"
DATA = [
    Bad(
        "npy-named-npz",
        [],
        ["data.npz", "single .npy array, not an .npz archive", "np.savez"],
        script=_script(ARCH, data="data.npz"),
        files={"data.npz": _NPY.ljust(127) + b"\n" + b"\x00" * 16},
    ),
    Bad(
        "npz-is-text",
        [],
        ["data.npz", "cannot be read as .npz (not a zip archive"],
        script=_script(ARCH, data="data.npz"),
        files={"data.npz": "x,y\n1,2\n"},
    ),
    Bad(
        "csv-is-folder",
        [],
        ["data.csv", "is a directory"],
        script=_script(ARCH, data="data.csv"),
        files={"data.csv": None},
    ),
]

# --- storage and tracking URLs and paths ----------------------------------------------------
STORES = [
    Bad("sqlite-no-file", ["study.storage=sqlite://"], ["study.storage", "names no file"]),
    Bad("sqlite-memory", ["study.storage=sqlite:///:memory:"], ["study.storage", "in-memory"]),
    Bad(
        "journal-below-file",
        ["study.storage=blocker/my.journal"],
        ["study.storage", "lies below", "blocker", "which is a file"],
        files={"blocker": "not a folder\n"},
    ),
    Bad(
        "journal-is-folder",
        ["study.storage=dir.journal"],
        ["study.storage", "dir.journal is a directory"],
        files={"dir.journal": None},
    ),
    Bad(
        "sqlite-below-file",
        ["study.storage=sqlite:///blocker/optuna.db"],
        ["study.storage", "lies below", "which is a file"],
        files={"blocker": "x\n"},
    ),
    Bad(
        "sqlite-not-a-database",
        ["study.storage=sqlite:///notes.db"],
        ["study.storage", "notes.db is not an SQLite database"],
        files={"notes.db": "hello\n"},
    ),
    Bad(
        "redis-without-package",
        ["study.storage=redis://127.0.0.1:6399"],
        ["study.storage", "needs the redis package", "pip install redis"],
    ),
    Bad(
        "tracking-is-folder",
        ["tracking.uri=sqlite:///store"],
        ["tracking.uri", "store is a directory"],
        files={"store": None},
    ),
    Bad("tracking-sqlite-no-file", ["tracking.uri=sqlite://"], ["tracking.uri", "names no file"]),
    Bad(
        "tracking-below-file",
        ["tracking.uri=sqlite:///blocker/mlflow.db"],
        ["tracking.uri", "lies below", "which is a file"],
        files={"blocker": "x\n"},
    ),
    Bad(
        "mlflow-db-empty",
        [],
        ["tracking.uri", "mlflow.db is empty (0 bytes)", "will not replace it"],
        files={"mlruns": None, "mlruns/mlflow.db": b""},
    ),
    Bad(
        "mlflow-db-truncated",
        [],
        ["tracking.uri", "mlflow.db", "damaged", "restore it from a backup"],
        setup=lambda root: _truncated_sqlite(root / "mlruns" / "mlflow.db"),
    ),
    Bad(
        "env-uri-bad-scheme",
        [],
        ["$MLFLOW_TRACKING_URI", "from the environment", "'ftp://host/x'"],
        env={"MLFLOW_TRACKING_URI": "ftp://host/x"},
    ),
    Bad(
        "env-uri-folder",
        [],
        ["$MLFLOW_TRACKING_URI", "is a directory"],
        env={"MLFLOW_TRACKING_URI": "sqlite:///envstore"},
        files={"envstore": None},
    ),
]


def _truncated_sqlite(path: Path) -> None:
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("create table t (x text)")
    con.executemany("insert into t values (?)", [("y" * 500,)] * 200)
    con.commit()
    con.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _study_with_param(name: str) -> Callable[[Path], None]:
    """A study whose best trial used ``name`` (e.g. before the script renamed it)."""

    def setup(root: Path) -> None:
        import optuna
        from optuna.distributions import IntDistribution

        from protolab._stores import open_storage

        (root / "mlruns").mkdir()
        storage = open_storage(str(root / "mlruns" / "optuna.journal"))
        study = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
        study.add_trial(
            optuna.trial.create_trial(
                params={name: 16}, distributions={name: IntDistribution(8, 32)}, value=0.9
            )
        )

    return setup


# --- command-line flags ---------------------------------------------------------------------
FLAGS = [
    Bad(
        "params-typo",
        ["--params", '{"widht": 16}'],
        ["--params", "'widht' is not a choice of experiment 'model'", "allowed: act, width"],
        command="run",
    ),
    Bad(
        "params-fixed-train",
        ["--params", '{"train.lr": 0.1}'],
        ["--params", "'train.lr'", "fixed value in the config"],
        command="run",
    ),
    Bad(
        "params-bad-choice",
        ["--params", '{"act": "swish"}'],
        ["--params", "'act' must be one of ['relu', 'tanh']", "'swish'"],
        command="run",
    ),
    Bad(
        "params-wrong-type",
        ["--params", '{"width": "big"}'],
        ["--params", "'width' must be a number", "'big'"],
        command="run",
    ),
    Bad("params-list", ["--params", "[1]"], ["--params must be a JSON object"], command="run"),
    Bad(
        "params-and-best",
        ["--params", "{}", "--best"],
        ["--params and --best are exclusive"],
        command="run",
    ),
    Bad("best-no-study", ["--best"], ["--best", "does not exist yet", "sweep"], command="run"),
    Bad(
        "best-renamed",
        ["--best"],
        ["--best", "'w' is not a choice", "renamed", "allowed: act, width"],
        command="run",
        setup=_study_with_param("w"),
    ),
    Bad("from-unknown-study", ["--from", "nope"], ["--from", "'nope'", "neither a study"]),
    Bad("from-unknown-run", ["--from", "a" * 32], ["--from", "no MLflow run", "no store"]),
    Bad("ui-port-high", ["--port", "99999"], ["--port", "99999", "65535"], command="ui"),
    Bad("ui-port-zero", ["--port", "0"], ["--port", "1..65535", "got 0"], command="ui"),
    Bad(
        "report-out-file",
        ["--out", "taken.txt"],
        ["--out", "taken.txt is a file", "folder"],
        command="report",
        files={"taken.txt": "x\n"},
    ),
    Bad(
        "report-out-below-file",
        ["--out", "taken.txt/sub"],
        ["--out", "lies below", "taken.txt"],
        command="report",
        files={"taken.txt": "x\n"},
    ),
    Bad("config-is-folder", [], ["config file", "is a directory"], command="sweep-dir"),
]

# --- training options (issue 22): optimizers and their options, plateau, max_steps ---------
_OPT = "_o = pl.Optimizer(torch=lambda p, lr: None)\n\n\n"
_TORCH_ONLY_OPTIMIZER = TINY_MLP.replace("@pl.experiment(", _OPT + "@pl.experiment(optimizer=_o, ")
TRAINING = [
    Bad(
        "optimizer-unknown",
        ["train.optimizer=lino"],
        ["train.optimizer", "'lino'", "adadelta", "adamax", "nadam", "lion", "custom"],
    ),
    Bad(
        "optimizer-option-rho-on-adam",
        ["train.optimizer_options={rho: 0.9}"],
        [
            "train.optimizer_options",
            "rho=0.9 is not an option of optimizer adam",
            "adam takes betas, eps, amsgrad",
        ],
    ),
    Bad(
        "optimizer-option-centered-on-sgd",
        ["train.optimizer=sgd", "train.optimizer_options={centered: true}"],
        ["centered=True is not an option of optimizer sgd", "sgd takes momentum, nesterov"],
    ),
    Bad(
        "optimizer-lion-on-torch",
        ["train.optimizer=lion"],
        [
            "train.optimizer: lion has no torch implementation",
            "'lightning'",
            "lion trains on tf-graph, keras, jax",
        ],
    ),
    Bad(
        "optimizer-custom-without-script",
        ["train.optimizer=custom"],
        ["train.optimizer: 'custom' needs @experiment(optimizer=protolab.Optimizer", "exp.py"],
    ),
    Bad(
        "optimizer-custom-weight-decay",
        ["train.optimizer=custom", "train.weight_decay=0.01"],
        ["custom optimizer sets its own weight decay", "weight_decay=0.01"],
    ),
    Bad(
        "optimizer-script-unused",
        [],
        [
            "script gives protolab.Optimizer",
            "train.optimizer is adam",
            "set train.optimizer: custom",
        ],
        script=_TORCH_ONLY_OPTIMIZER,
    ),
    Bad(
        "optimizer-custom-no-keras",
        ["train.optimizer=custom", "backends=[tf-graph]"],
        ["protolab.Optimizer has no keras=", "'tf-graph'"],
        script=_TORCH_ONLY_OPTIMIZER,
    ),
    Bad(
        "plateau-factor-above-1",
        ["train.schedule=reduce_on_plateau", "train.schedule_options={factor: 1.5}"],
        ["train.schedule_options.factor", "less than 1", "1.5"],
    ),
    Bad(
        "plateau-option-on-cosine",
        ["train.schedule=cosine", "train.schedule_options={patience: 3}"],
        ["train.schedule_options", "patience=3", "cosine takes min_lr"],
    ),
    Bad(
        "plateau-monitor-unmeasured",
        ["train.schedule=reduce_on_plateau", "train.schedule_options={monitor: val/f1}"],
        ["train.schedule_options.monitor", "'val/f1' is not measured", "metrics:"],
    ),
    Bad(
        "plateau-monitor-not-per-epoch",
        ["train.schedule=reduce_on_plateau", "train.schedule_options={monitor: time/step_ms}"],
        ["reduce_on_plateau's monitor needs a metric measured every epoch", "'time/step_ms'"],
    ),
    Bad("max-steps-zero", ["train.max_steps=0"], ["train.max_steps", "greater than or equal to 1"]),
    Bad(
        "restore-best-not-bool",
        ["train.early_stopping={restore_best_weights: maybe}"],
        ["train.early_stopping.restore_best_weights", "boolean", "maybe"],
    ),
]


def _data_script(returns: str) -> str:
    """A script whose @pl.data returns ``returns`` (numpy in scope as np, rng seeded)."""
    return (
        "import numpy as np\nimport protolab as pl\nfrom protolab import layers as L\n\n"
        "rng = np.random.default_rng(0)\nX = rng.normal(size=(60, 4)).astype(np.float32)\n"
        "Y = rng.integers(0, 3, 60)\n\n\n@pl.data\ndef made():\n"
        f"    return {returns}\n\n\n@pl.experiment()\ndef model(space):\n"
        "    return pl.Arch(L.Dense(3))\n"
    )


_VAL = 'val={"x": X[40:], "y": Y[40:]}'
_GEN = "lambda: ((X[i:i + 8], Y[i:i + 8]) for i in range(0, 40, 8))"
# --- streamed sources (pl.Data) and several inputs/outputs: refused before any store ---
SOURCES = [
    Bad("data-bare-callable", [],
        ["@data function 'made'", "or pl.Data(train=..., val=...)", "returned function"],
        script=_data_script("lambda: None")),
    Bad("data-generator-object", [], ["builtins.generator", "a function returning batches"],
        script=_data_script(f"pl.Data(train=(b for b in [(X, Y)]), {_VAL})")),
    Bad("data-unknown-kind", [], ["train=...) is a builtins.int", "a tf.data.Dataset"],
        script=_data_script(f"pl.Data(train=42, {_VAL})")),
    Bad("data-empty-source", [], ["pl.Data(train=...) gave no batch"],
        script=_data_script(f"pl.Data(train=lambda: iter([]), {_VAL})")),
    Bad("data-three-parts", [], ["batch has 3 parts", "(x, y) or x alone"],
        script=_data_script(f"pl.Data(train=lambda: iter([(X, Y, Y)]), {_VAL})")),
    Bad("data-y-in-val-only", [], ["training batches have no y", "both or neither"],
        script=_data_script(f"pl.Data(train=lambda: iter([X]), {_VAL})")),
    Bad("data-labels-offset", [], ["class labels must be 0..K-1", "[1, 2, 3]"],
        script=_data_script("pl.Data(train=lambda: iter([(X, Y + 1)]), val={'x': X, 'y': Y + 1})")),
    Bad("data-steps-zero", [], ["steps_per_epoch=0", "an integer >= 1 or None"],
        script=_data_script(f"pl.Data(train={_GEN}, {_VAL}, steps_per_epoch=0)")),
    Bad("data-source-raises", [], ["reading pl.Data(train=...) raised ZeroDivisionError"],
        script=_data_script(f"pl.Data(train=lambda: (1 / 0 for _ in 'ab'), {_VAL})")),
    Bad("data-arrays-bad-key", [], ["has keys ['inputs', 'y']", "allowed: 'x' and an optional"],
        script=_data_script(f"pl.Data(train={{'inputs': X, 'y': Y}}, {_VAL})")),
    Bad("data-stream-batch-size", ["train.batch_size=32"],
        ["train.batch_size=32 does not reach the script's pl.Data(train=<generator>)",
         "its first has 8"],
        script=_data_script(f"pl.Data(train={_GEN}, {_VAL})")),
    Bad("data-stream-batch-size-searched", ["train.batch_size={choices: [8, 16]}"],
        ["does not reach the script's pl.Data(train=<generator>)", "makes its own batches"],
        script=_data_script(f"pl.Data(train={_GEN}, {_VAL})")),
    Bad("data-stream-own-layers", [],
        ["backends: lightning cannot train on the script's pl.Data(train=<generator>)",
         "modes that take it here: none"],
        script=_data_script(f"pl.Data(train={_GEN}, {_VAL})")),
    Bad("data-several-own-layers", [],
        ["backends: lightning cannot train on the script's several inputs or outputs"],
        script=_data_script('{"x": {"a": X, "b": X[:, :2]}, "y": Y}')),
    Bad("data-several-rows", [], ["x's arrays have different row counts", "'a': 60, 'b': 10"],
        script=_data_script('{"x": {"a": X, "b": X[:10]}, "y": Y}')),
    Bad("data-several-negative", [], ["y['d'] has negative label -1", "labels >= 0"],
        script=_data_script('{"x": {"a": X}, "y": {"d": Y - 1, "p": X[:, :1]}}')),
    Bad("data-several-test", [], ["with several inputs or outputs", "(no test split)"],
        script=_data_script('{"x": {"a": X}, "y": Y, "x_test": X}')),
    Bad("data-several-val-names", [], ["validation x is {'a': (4,)}", "the same names"],
        script=_data_script(
            '{"x_train": {"a": X[:40], "b": X[:40]}, "y_train": Y[:40], '
            '"x_val": {"a": X[40:]}, "y_val": Y[40:]}'
        )),
]  # fmt: skip


# --- hidden bad inputs (issue 25, item 7): once a traceback, a silent collapse or exit 1 ---
_STEP = TINY_MLP.replace('space.int("width", 8, 32, log=True)', 'space.int("width", 8, 12, step=8)')
HIDDEN = [
    Bad("storage-parent-uncreatable", ["study.storage=/proc/protolab-nope/optuna.journal"],
        ["study.storage", "/proc/protolab-nope/optuna.journal cannot be created", "/proc"]),
    Bad("tracking-parent-uncreatable", ["tracking.uri=sqlite:////proc/protolab-nope/mlflow.db"],
        ["tracking.uri", "/proc/protolab-nope/mlflow.db cannot be created"]),
    Bad("range-step-over-range", ["train.lr={low: 0.001, high: 0.01, step: 0.1}"],
        ["train.lr", "`step <= high - low` must hold", "step=0.1", "high=0.01"]),
    Bad("space-step-over-range", [],
        ["space.int('width')", "`step <= high - low` must hold", "step=8"], script=_STEP),
    Bad("params-nan", ["--params", '{"width": NaN}'],
        ["--params", "'width' must be a finite number in [8, 32]", "nan"], command="run"),
    Bad("params-inf", ["--params", '{"width": -Infinity}'],
        ["--params", "'width' must be a finite number", "-inf"], command="run"),
    Bad("report-out-uncreatable", ["--out", "/proc/protolab-nope/report"],
        ["--out", "/proc/protolab-nope/report cannot be created", "/proc"], command="report"),
]  # fmt: skip

# --- population-based training (issue 24): options the sampler or the study cannot take ----
_PBT = "study.sampler=pbt"
_LR_RANGE = "train.lr={low: 0.001, high: 0.1, log: true}"
PBT = [
    Bad("pbt-several-objectives",
        [_PBT, "study.objectives=[{metric: val/acc}, {metric: val/loss}]"],
        ["study", "pbt ranks members by one objective", "2 objectives"]),
    Bad("pbt-truncation-over-half", [_PBT, "study.sampler_options={truncation: 0.6}"],
        ["study.sampler_options", "`0 < truncation <= 0.5`", "0.6"]),
    Bad("pbt-truncation-zero", [_PBT, "study.sampler_options={truncation: 0}"],
        ["study.sampler_options", "`0 < truncation <= 0.5`", "got 0"]),
    Bad("pbt-ready-over-epochs", [_PBT, "study.sampler_options={ready_epochs: 2}"],
        ["train", "ready_epochs 1 to 1", "but got ready_epochs 2"]),
    Bad("pbt-moves-unsearched", [_PBT, "study.sampler_options={moves: [lr]}"],
        ["study.sampler_options.moves", "searched with a range", "'lr'"]),
    Bad("pbt-moves-unknown", [_PBT, _LR_RANGE, "study.sampler_options={moves: [momentum]}"],
        ["study.sampler_options.moves", "allowed: lr", "'momentum'"]),
    Bad("pbt-pruner", [_PBT, "study.pruner=median"],
        ["study", "allowed: pruner none", "'median'"]),
    Bad("pbt-schedule", [_PBT, "train.schedule=cosine"],
        ["train", "allowed: constant", "'cosine'"]),
    Bad("pbt-perturb-zero", [_PBT, "study.sampler_options={perturb: [0, 1.25]}"],
        ["study.sampler_options", "perturb", "[0, 1.25]"]),
    Bad("pbt-population-one", [_PBT, "study.sampler_options={population_size: 1}"],
        ["study.sampler_options", "`population_size >= 2`", "got 1"]),
    Bad("pbt-unknown-option", [_PBT, "study.sampler_options={tournament_size: 3}"],
        ["study.sampler_options", "'tournament_size'", "ready_epochs"]),
    Bad("pbt-devices", [_PBT, "hardware.devices=2", "hardware.accelerator=cpu"],
        ["study.sampler: pbt", "hardware.devices 1", "got 2"]),
    Bad("pbt-lightning-module", [_PBT],
        ["study.sampler: pbt", "trains itself", "backends lightning"], script=_LIT_MODULE),
]  # fmt: skip

CASES = (
    VALUES
    + METRICS
    + HARDWARE
    + YAML
    + NAMES
    + SCRIPTS
    + ARCHS
    + DATA
    + STORES
    + FLAGS
    + TRAINING
    + SOURCES
    + HIDDEN
    + PBT
)


def _snapshot(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size if p.is_file() else -1
        for p in root.rglob("*")
        if "__pycache__" not in p.parts
    }


def _args(case: Bad, cfg: Path) -> list[str]:
    if case.command in ("ui",):
        return [case.command, *case.args]
    if case.command == "report":
        return [case.command, str(cfg), *case.args]
    if case.command == "sweep-dir":
        return ["sweep", str(cfg.parent)]
    return [case.command, str(cfg), *case.args]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_refused_before_anything_runs(
    case: Bad, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "exp.py").write_text(case.script)
    cfg = workdir / "cfg.yaml"
    cfg.write_text(case.config, errors="surrogateescape")
    for name, content in case.files.items():
        path = workdir / name
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if case.setup is not None:
        case.setup(workdir)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before = _snapshot(workdir)
    result = runner.invoke(app, _args(case, cfg))
    out = result.stderr + result.stdout
    assert result.exit_code == 2, out
    assert "Traceback" not in out
    assert len(out) < 3000, f"{len(out)} characters"
    assert sum(line.lower().startswith("error:") for line in out.splitlines()) == 1, out
    for part in case.expect:
        assert part in out, f"{part!r} not in {out!r}"
    assert _snapshot(workdir) == before, "the command wrote to the project"


def test_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
