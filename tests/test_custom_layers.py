"""Custom layers: hyperparameters in the hash, one builder per framework, counts compared.

Layers are defined in real experiment scripts (loaded as a sweep loads them), so the
Keras-on-JAX mode, which runs in its own worker process, receives them as it would in a
sweep: pickled by value.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest

from protolab.arch import Arch
from protolab.backends import Hardware, Job, TrainSettings, get_backend
from protolab.data import load_dataset
from protolab.errors import ArchError
from protolab.script import load_experiment

CPU = Hardware(accelerator="cpu")
SETTINGS = TrainSettings(epochs=2, batch_size=64, optimizer="adam", lr=3e-3, seed=0)

LAYERS = """
import keras
import torch

import protolab as pl
from protolab import layers as L


class _GatedTorch(torch.nn.Module):
    def __init__(self, fan_in, units, extra=0):
        super().__init__()
        self.value = torch.nn.Linear(fan_in, units)
        self.gate = torch.nn.Linear(fan_in, units + extra)
        self.units = units

    def forward(self, x):
        return self.value(x) * torch.sigmoid(self.gate(x)[..., : self.units])


class _GatedKeras(keras.layers.Layer):
    def __init__(self, units, **kw):
        super().__init__(**kw)
        self.value = keras.layers.Dense(units)
        self.gate = keras.layers.Dense(units)

    def call(self, x):
        return self.value(x) * keras.ops.sigmoid(self.gate(x))


@pl.layer
class Gated(pl.CustomLayer):
    units: int = 16

    def torch(self, input_shape):
        return _GatedTorch(input_shape[-1], self.units)

    def keras(self, input_shape):
        return _GatedKeras(self.units)


@pl.layer
class TorchOnly(pl.CustomLayer):
    units: int = 8

    def torch(self, input_shape):
        return torch.nn.Linear(input_shape[-1], self.units)


@pl.layer
class Mismatched(pl.CustomLayer):
    units: int = 8

    def torch(self, input_shape):
        return _GatedTorch(input_shape[-1], self.units, extra=3)

    def keras(self, input_shape):
        return _GatedKeras(self.units)


@pl.layer
class Broken(pl.CustomLayer):
    def torch(self, input_shape):
        raise ValueError("my builder is broken")


@pl.experiment(data="digits", metric="val/acc")
def model(space):
    kind = space.choice("kind", ["gated", "residual", "torch_only", "mismatched", "broken"])
    body = {
        "gated": [Gated(32)],
        "residual": [Gated(32), L.Residual(Gated(32), L.LayerNorm())],
        "torch_only": [TorchOnly(32)],
        "mismatched": [Mismatched(32)],
        "broken": [Broken()],
    }[kind]
    return pl.Arch(L.Flatten(), *body, L.Dense(10))
"""


@pytest.fixture(scope="module")
def archs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Arch]:
    from protolab.space import Space

    path = tmp_path_factory.mktemp("custom") / "layers.py"
    path.write_text(textwrap.dedent(LAYERS))
    exp = load_experiment(path)
    kinds = ("gated", "residual", "torch_only", "mismatched", "broken")
    return {k: exp.build(Space(values={"kind": k})) for k in kinds}


def _run(mode: str, arch: Arch) -> Any:
    backend = get_backend(mode)
    try:
        return backend.run(Job(arch, load_dataset("digits"), SETTINGS, CPU))
    finally:
        backend.release()


def test_hyperparameters_are_part_of_the_hash_and_json(archs: dict[str, Arch]) -> None:
    gated = archs["gated"]
    layer = gated.layers[1]
    assert type(layer).__name__ == "Gated" and layer.to_dict() == {"type": "Gated", "units": 32}
    assert Arch.from_dict(gated.to_dict()) == gated  # registered: JSON round trip
    other = Arch(gated.layers[0], type(layer)(units=33), gated.layers[2])
    assert other.hash != gated.hash
    info = gated.infer((8, 8, 1))
    assert info.output_shape == (10,)
    assert info.params == 2 * (64 * 32 + 32) + 33 * 10  # value + gate, then the head


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lightning", "tf-graph", "jax"])
@pytest.mark.parametrize("kind", ["gated", "residual"])
def test_both_builders_train_the_same_model_on_every_family(
    archs: dict[str, Arch], mode: str, kind: str
) -> None:
    arch = archs[kind]
    result = _run(mode, arch)
    assert result.metrics["model/params"] == arch.infer((8, 8, 1)).params
    assert all(math.isfinite(h["train/loss"]) for h in result.history)
    assert result.metrics["val/acc"] > 0.5  # it learns (chance 0.1)


@pytest.mark.slow
def test_one_builder_runs_on_its_framework_and_is_refused_elsewhere(
    archs: dict[str, Arch],
) -> None:
    assert _run("lightning", archs["torch_only"]).metrics["val/acc"] > 0.5
    with pytest.raises(ArchError, match=r"TorchOnly\(units=32\) has no keras builder"):
        _run("keras", archs["torch_only"])


def test_mismatched_counts_fail_naming_the_layer_and_both_counts(archs: dict[str, Arch]) -> None:
    arch = archs["mismatched"]
    torch_count = (64 * 32 + 32) + (64 * 35 + 35)  # the gate is 3 units wider
    keras_count = 2 * (64 * 32 + 32)
    # whichever builder the layer's count came from, the other side fails, naming both
    with pytest.raises(ArchError) as e:
        _run("tf-graph", arch)
        _run("lightning", arch)
    text = str(e.value)
    assert "Mismatched(units=32)" in text
    assert str(torch_count) in text and str(keras_count) in text
    assert "both builders must make the same model" in text


def test_a_builder_that_raises_is_named_at_inference(archs: dict[str, Arch]) -> None:
    with pytest.raises(ArchError, match=r"layer 1 Broken\(\).*ValueError: my builder is broken"):
        archs["broken"].infer((8, 8, 1))


def test_config_asking_the_other_framework_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from protolab.cli import app

    script = textwrap.dedent(LAYERS).replace(
        '["gated", "residual", "torch_only", "mismatched", "broken"]', '["torch_only"]'
    )
    (tmp_path / "exp.py").write_text(script)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("experiment: exp.py\nbackends: [lightning, keras]\nstudy: {n_trials: 1}\n")
    out = CliRunner().invoke(app, ["sweep", str(cfg)], catch_exceptions=False)
    assert out.exit_code == 2
    text = out.output
    assert "backends: keras builds with keras" in text and "TorchOnly(units=32)" in text
    assert "lightning" in text and "torch-compile" in text  # the modes that can
    assert "Traceback" not in text
    assert not (tmp_path / "mlruns").exists()


SHARED = """
import torch

import protolab as pl

NET = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))  # at import


@pl.experiment(data="digits", metric="val/acc")
def model(space):
    if space.choice("shared", [False, True]):  # the dry run takes False: a trial finds it
        return pl.native(torch=lambda: NET)
    return pl.native(torch=lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
"""


@pytest.mark.slow
def test_a_trial_whose_builder_hands_its_model_out_again_fails_naming_it(
    make_project: Any, workdir: Path
) -> None:
    """Trials never share weights: the builder that returns a module made at import fails
    its trial (nothing trains), with the reason; the other trial trains."""
    import optuna
    from typer.testing import CliRunner

    from protolab._stores import open_storage
    from protolab.cli import app

    cfg = make_project(script=SHARED, epochs=1)
    out = CliRunner().invoke(app, ["sweep", str(cfg), "study.sampler=grid"])
    assert out.exit_code == 0, out.output
    storage = open_storage(str(workdir / "mlruns" / "optuna.journal"))
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    by_choice = {t.params["shared"]: t for t in trials}
    assert by_choice[False].state == optuna.trial.TrialState.COMPLETE
    failed = by_choice[True]
    assert failed.state == optuna.trial.TrialState.FAIL
    reason = failed.user_attrs["protolab.fail_reason"]
    assert reason.startswith("ArchError") and "pl.native: the torch builder" in reason
    assert "(exp.py:12) returned the same Sequential object" in reason
