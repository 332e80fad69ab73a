"""The shipped ports of public examples build the originals' models, on both frameworks.

Each port under ``experiments/port_*.py`` must make, at its defaults, the same number of
trainable parameters in torch and in Keras, and that number must be the original's: both
on digits (against the original re-implemented in ``benchmarks/porting_originals.py``) and
on the original's own input (against the count its authors' model prints). One paired
trial of one port then runs through the CLI. Accuracy against the originals is
``benchmarks/porting.py``'s job (it trains for minutes).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from protolab import Arch
from protolab.script import load_experiment
from protolab.space import Space

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DIGITS = (8, 8, 1)


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_ports_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def originals() -> ModuleType:
    return _module(ROOT / "benchmarks" / "porting_originals.py")


@pytest.fixture(scope="module")
def ports() -> dict[str, ModuleType]:
    return {p.stem: _module(p) for p in sorted((ROOT / "experiments").glob("port_*.py"))}


def _counts(arch: Arch, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(Arch.infer, torch build, Keras build) trainable parameter counts."""
    from protolab.backends._keras_nn import build_keras
    from protolab.backends._keras_nn import count_params as keras_count
    from protolab.backends.torch.nn import build_torch
    from protolab.backends.torch.nn import count_params as torch_count

    return (
        arch.param_count(shape),
        torch_count(build_torch(arch, shape)),
        keras_count(build_keras(arch, shape)),
    )


def _default_arch(name: str) -> tuple[Arch, dict[str, Any]]:
    exp = load_experiment(ROOT / "experiments" / f"{name}.py")
    space = Space()
    return exp.build(space), space.values


def test_every_port_ships_with_a_config(ports: dict[str, ModuleType]) -> None:
    assert {"port_lightning_mlp", "port_keras_convnet", "port_keras_transformer"} <= set(ports)
    assert {"port_lightning_autoencoder", "port_lightning_net"} <= set(ports)  # as they are
    for name in ports:
        text = (ROOT / "configs" / f"{name}.yaml").read_text()
        assert f"experiment: ../experiments/{name}.py" in text


def test_lightning_mlp_has_the_original_net_parameters(
    ports: dict[str, ModuleType], originals: ModuleType
) -> None:
    arch, values = _default_arch("port_lightning_mlp")
    dims = [values[f"n_units_l{i}"] for i in range(values["n_layers"])]
    assert dims == [23, 23]  # the middle of the original's ranges: protolab run's defaults
    digits = originals.lightning_mlp_params(values["dropout"], dims, input_dim=64)
    assert _counts(arch, DIGITS) == (digits,) * 3 == (2287,) * 3
    # the original's own input (FashionMNIST, 28 * 28) and a wider trial of its space
    mlp = ports["port_lightning_mlp"].mlp
    for dims in ([23, 23], [128, 64, 4]):
        want = originals.lightning_mlp_params(0.2, dims, input_dim=28 * 28)
        assert _counts(mlp(0.2, dims), (28, 28, 1)) == (want,) * 3
    assert originals.lightning_mlp_params(0.2, [128, 64, 4], input_dim=784) == 109_046


def test_keras_convnet_has_the_original_parameters(
    ports: dict[str, ModuleType], originals: ModuleType
) -> None:
    arch, _ = _default_arch("port_keras_convnet")
    assert _counts(arch, DIGITS) == (originals.convnet_params(DIGITS, "same"),) * 3
    assert originals.convnet_params(DIGITS, "same") == 21_386
    # on MNIST with Keras' "valid" padding the port is the original model exactly:
    # keras.io's model.summary() prints "Total params: 34,826"
    original = ports["port_keras_convnet"].convnet(padding="valid")
    assert _counts(original, (28, 28, 1)) == (34_826,) * 3
    assert originals.convnet_params((28, 28, 1), "valid") == 34_826


def test_keras_transformer_has_the_original_parameters(
    ports: dict[str, ModuleType], originals: ModuleType
) -> None:
    arch, _ = _default_arch("port_keras_transformer")
    assert _counts(arch, DIGITS) == (originals.transformer_params(64, 17, 10),) * 3
    assert originals.transformer_params(64, 17, 10) == 14_118
    # the original's IMDB model: 200 token ids over 20,000 words, 2 classes
    imdb = ports["port_keras_transformer"].transformer(
        maxlen=200, vocab_size=20_000, classes=2, scale=1.0
    )
    assert _counts(imdb, (200,)) == (originals.transformer_params(200, 20_000, 2),) * 3
    assert originals.transformer_params(200, 20_000, 2) == 657_758


def test_native_model_example_builds_the_same_model_on_both() -> None:
    arch, values = _default_arch("digits_native")
    width = values["width"]  # conv 3x3x1xw, conv 3x3xwx2w, dense 2w x 10 (+ biases)
    want = (9 * width + width) + (9 * width * 2 * width + 2 * width) + (2 * width * 10 + 10)
    assert _counts(arch, DIGITS) == (want,) * 3
    module = _module(ROOT / "experiments" / "digits_native.py")  # the custom-layer form
    assert _counts(Arch(module.NativeConvNet(width=width)), DIGITS) == (want,) * 3


def test_one_port_runs_paired_through_the_cli(workdir: Path) -> None:
    from typer.testing import CliRunner

    from protolab.cli import app

    cfg = ROOT / "configs" / "port_lightning_mlp.yaml"
    params = json.dumps({"n_layers": 1, "n_units_l0": 16})
    out = CliRunner().invoke(
        app,
        ["run", str(cfg), "train.epochs=1", "hardware.accelerator=cpu", "--params", params],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    for backend in ("lightning", "keras"):  # the config's pair, one epoch of 9 steps each
        assert f"-{backend}: val/acc=" in out.output, out.output
    assert "params 1210" in out.output  # 64*16+16 + 16*10+10, on both
    assert (workdir / "mlruns").is_dir()
