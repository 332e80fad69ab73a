"""Bad configs, overrides and scripts: exit 2, one message naming file/field/value/allowed.

These run the real CLI in-process; every case must fail before any store is written.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from protolab.backends import NAMES
from protolab.cli import app
from protolab.config import apply_overrides, load_config
from protolab.errors import ConfigError

ROOT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits_mlp.yaml"

runner = CliRunner()

BASE = """\
experiment: exp.py
backends: [lightning]
study: {name: tiny, n_trials: 2}
train: {epochs: 1}
"""

# (overrides, substrings the one-line message must contain)
BAD_OVERRIDES: list[tuple[list[str], list[str]]] = [
    (["study.n_trails=3"], ["study.n_trails: unknown key", "allowed keys here:", "n_trials"]),
    (["studdy.n_trials=3"], ["studdy: unknown key", "backends, data, experiment, hardware"]),
    (["study.n_trials=abc"], ["study.n_trials", "valid integer", "'abc'"]),
    (["study.n_trials=0"], ["study.n_trials", "greater than or equal to 1", "got 0"]),
    (["study.sampler=tpx"], ["study.sampler", "'tpe'", "'random'", "'tpx'"]),
    (["study.pruner=fast"], ["study.pruner", "'median'", "'hyperband'", "'fast'"]),
    (["study.timeout_s=-5"], ["study.timeout_s", "greater than 0", "-5"]),
    (["backends=[pytorch]"], ["backends", "unknown backend 'pytorch'", "lightning", "keras"]),
    (["backends=[lightning,lightning]"], ["backends", "once", "['lightning', 'lightning']"]),
    (["backends=[]"], ["backends", "at least 1", "[]"]),
    (
        ["train.lr={low: 1, high: 0.1}"],
        ["train.lr", "`low <= high` must hold", "low=1.0, high=0.1"],
    ),
    (["train.lr={low: 0, high: 1, log: true}"], ["train.lr", "`low > 0` must hold", "low=0.0"]),
    (["train.lr=-0.1"], ["train.lr", "`lr > 0` must hold", "-0.1"]),
    (["train.batch_size=0"], ["train.batch_size", "`batch_size >= 1` must hold", "0"]),
    (["train.optimizer=adamx"], ["train.optimizer", "'adam'", "'sgd'", "'adamx'"]),
    (["train.epochs=0"], ["train.epochs", "greater than or equal to 1"]),
    (["train.lr={choices: []}"], ["train.lr", "at least 1 item"]),
    (["hardware.accelerator=npu"], ["hardware.accelerator", "'cpu'", "'gpu'", "'npu'"]),
    (["hardware.precision=16", "hardware.accelerator=cpu"], ["hardware", "needs a GPU"]),
    (["hardware.precision=8"], ["hardware.precision", "'32'", "'bf16'", "'8'"]),
    (["hardware.threads=0"], ["hardware.threads", "greater than or equal to 1", "got 0"]),
    (["hardware.threads=abc"], ["hardware.threads", "valid integer", "'abc'"]),
    (["study"], ["override 'study' must look like dotted.key=value"]),
    (
        ["hardware.devices=2", "backends=[torch-compile]"],
        ["hardware.devices", "at most 1 device", "devices=2"],
    ),
    (["study.sampler_options={populaton_size: 3}"], ["unknown option 'populaton_size'"]),
    (["study.pruner=threshold"], ["needs pruner_options {lower: X}"]),
    (["study.constraints=['params < 3']"], ["METRIC <= NUMBER", "'params < 3'"]),
    (["study.objectives=[{metric: accuracy}]"], ["unknown metric 'accuracy'", "val/acc"]),
    (["=3"], ["must look like dotted.key=value"]),
    (["study.name.x=1"], ["'study.name' is 'tiny', not a section"]),
    (["experiment=missing.py"], ["experiment:", "missing.py", "does not exist"]),
    (["study.storage=ftp://host/db"], ["study.storage", "unsupported URL", "postgresql://"]),
    (["tracking.uri=ftp://host"], ["tracking.uri", "unsupported URI", "http(s)://"]),
]


@pytest.fixture
def project(make_project: Callable[..., Path]) -> Path:
    return make_project(config=BASE)


@pytest.mark.parametrize(("overrides", "expected"), BAD_OVERRIDES, ids=lambda v: str(v)[:40])
def test_bad_override_exits_2_with_message(
    project: Path, overrides: list[str], expected: list[str]
) -> None:
    result = runner.invoke(app, ["sweep", str(project), *overrides])
    message = result.stderr
    assert result.exit_code == 2, message
    assert "Traceback" not in message
    assert str(project) in message or "cfg.yaml" in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    # Nothing was written: no study, no MLflow store.
    assert not (project.parent / "mlruns").exists()


BAD_FILES: list[tuple[str, list[str]]] = [
    ("experiment: exp.py\nstudy: {n_trials: 3\n", ["cfg.yaml:", "not valid YAML"]),
    ("- a\n- b\n", ["top level must be a mapping", "list"]),
    ("backends: [lightning]\n", ["experiment", "Field required"]),
    ("experiment: exp.py\ntrain: {lr: {low: 1e-3}}\n", ["train.lr.high", "Field required"]),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_bad_config_file(make_project: Callable[..., Path], text: str, expected: list[str]) -> None:
    cfg = make_project(config=text)
    result = runner.invoke(app, ["sweep", str(cfg)])
    assert result.exit_code == 2
    for part in expected:
        assert part in result.stderr, result.stderr
    assert not (cfg.parent / "mlruns").exists()


def test_missing_config_file(workdir: Path) -> None:
    result = runner.invoke(app, ["sweep", "nope.yaml"])
    assert result.exit_code == 2
    assert "config file nope.yaml does not exist" in result.stderr


BAD_SCRIPTS: list[tuple[str, list[str]]] = [
    ("import protolab as pl\ndef f(:\n", ["exp.py:2", "syntax error"]),
    ("x = 1\n", ["declares no experiment", "@protolab.experiment"]),
    (
        "import protolab as pl\n@pl.experiment\ndef a(s): pass\n@pl.experiment\ndef b(s): pass\n",
        ["declares 2 experiments (a, b)", "exactly 1"],
    ),
    ("import protolab as pl\nraise RuntimeError('boom')\n", ["exp.py:2", "RuntimeError: boom"]),
    (
        "import protolab as pl\n@pl.experiment(data='mnist')\ndef a(s):\n    return pl.Arch()\n",
        ["mnist", "digits"],
    ),
    (
        textwrap.dedent(
            """\
            import protolab as pl
            from protolab import layers as L
            @pl.experiment
            def a(s):
                s.int("w", 1, 4)
                s.int("w", 1, 8)
                return pl.Arch(L.Flatten(), L.Dense(10))
            """
        ),
        ["'w' is declared twice with different ranges", "int(1, 4", "int(1, 8"],
    ),
    (
        "import protolab as pl\n@pl.experiment\ndef a(s):\n    return 3\n",
        ["must return a protolab.Arch", "int"],
    ),
    (
        "import protolab as pl\n@pl.experiment\ndef a(s):\n    s.int('w', 5, 1)\n",
        ["`low <= high` must hold, but got low=5, high=1"],
    ),
    (
        "import protolab as pl\n@pl.experiment\ndef a(s):\n    return 1 / 0\n",
        ["exp.py:4", "ZeroDivisionError"],
    ),
]


@pytest.mark.parametrize(("script", "expected"), BAD_SCRIPTS, ids=range(len(BAD_SCRIPTS)))
def test_bad_script_exits_2(
    make_project: Callable[..., Path], script: str, expected: list[str]
) -> None:
    cfg = make_project(script=script, config=BASE)
    result = runner.invoke(app, ["sweep", str(cfg)])
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    for part in expected:
        assert part in result.stderr, result.stderr
    assert not (cfg.parent / "mlruns").exists()


def test_run_rejects_bad_params_json(project: Path) -> None:
    result = runner.invoke(app, ["run", str(project), "--params", "{width: 3"])
    assert result.exit_code == 2
    assert "--params: not valid JSON" in result.stderr
    result = runner.invoke(app, ["run", str(project), "--params", '{"width": 9999}'])
    assert result.exit_code == 2
    assert "'width' must satisfy 8 <= value <= 32, but got 9999" in result.stderr


def test_overrides_apply_as_yaml_values(project: Path) -> None:
    cfg, script = load_config(
        project,
        [
            "study.n_trials=7",
            "backends=[keras, lightning]",
            "train.lr={low: 0.001, high: 0.1, log: true}",
            "train.batch_size={choices: [32, 64]}",
            "hardware.precision=bf16",
            "study.storage=null",
            "tracking.experiment=my exp",
        ],
        backends=NAMES,
    )
    assert cfg.study.n_trials == 7
    assert cfg.backends == ["keras", "lightning"]
    assert cfg.train.lr.low == 0.001 and cfg.train.lr.log is True  # type: ignore[union-attr]
    assert cfg.train.batch_size.choices == [32, 64]  # type: ignore[union-attr]
    assert cfg.hardware.precision == "bf16"
    assert cfg.tracking.experiment == "my exp"
    assert script == (project.parent / "exp.py").resolve()


def test_overrides_do_not_mutate_input_and_create_sections() -> None:
    raw = {"study": {"n_trials": 1}}
    out = apply_overrides(raw, ["study.n_trials=4", "tracking.uri=http://127.0.0.1:5000"], "x")
    assert raw == {"study": {"n_trials": 1}}
    assert out == {"study": {"n_trials": 4}, "tracking": {"uri": "http://127.0.0.1:5000"}}


def test_defaults_and_study_name_from_file(make_project: Callable[..., Path]) -> None:
    cfg_path = make_project(config="experiment: exp.py\n")
    cfg, _ = load_config(cfg_path, backends=NAMES)
    assert cfg.study.name == "cfg"
    assert cfg.backends == ["lightning"]
    assert cfg.study.n_trials == 20 and cfg.study.sampler == "tpe"
    assert cfg.hardware.precision == "32"


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    paths = sorted(root.glob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        cfg, script = load_config(path, backends=NAMES)
        assert script.is_file()
        assert cfg.study.name


def test_config_error_is_a_user_input_error() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides({}, ["nokey"], "f.yaml")
    assert info.value.exit_code == 2


def test_config_hash_ignores_budget_storage_and_threads_only() -> None:
    from protolab.config._load import config_hash

    path = ROOT_CONFIG
    base = config_hash(load_config(path, backends=NAMES)[0])
    for same in (["study.n_trials=50"], ["hardware.threads=1"], ["study.storage=x.journal"]):
        assert config_hash(load_config(path, same, backends=NAMES)[0]) == base, same
    for other in (["train.epochs=3"], ["hardware.precision=bf16"], ["study.sampler=random"]):
        assert config_hash(load_config(path, other, backends=NAMES)[0]) != base, other
