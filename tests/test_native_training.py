"""A LightningModule trains as it is: through Lightning's Trainer and its own hooks.

protolab measures the user's training, not a re-implementation of it: these tests count
what Lightning calls (``training_step``, the schedulers' steps), check that what the module
logs reaches the metrics and MLflow under its own name (and may be the objective), that a
pruning or an interrupt raised at an epoch's end stops the Trainer and comes out as itself,
and that what would silently not apply (a config learning rate, a reused module or
callback) is refused.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn

import protolab as pl
from protolab.backends import Hardware, Job, TrainSettings, get_backend
from protolab.config import check_metric_name, infer_direction, logged_names_problem
from protolab.data import load_dataset
from protolab.errors import ArchError

CPU = Hardware(accelerator="cpu", threads=1)
ROOT = Path(__file__).resolve().parents[1]


class AutoEncoder(L.LightningModule):
    """Lightning's LitAutoEncoder (no forward), counting the calls Lightning makes."""

    def __init__(self, schedule: str | None = None) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
        self.decoder = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 64))
        self.schedule, self.calls = schedule, 0

    def _loss(self, batch: Any) -> torch.Tensor:
        x, _ = batch
        x = x.view(x.size(0), -1)
        return nn.functional.mse_loss(self.decoder(self.encoder(x)), x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.calls += 1
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        if self.schedule is None:
            return opt
        decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + k))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": decay, "interval": self.schedule}}


class Classifier(L.LightningModule):
    """A forward, a loss returned by validation_step and nothing logged."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        self(x)  # returns nothing, logs nothing: val/loss and val/acc come from forward

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _job(builder: Callable[[], Any], epochs: int = 2, **train: Any) -> Job:
    settings = TrainSettings(epochs=epochs, batch_size=64, optimizer="adam", lr=1e-3, **train)
    return Job(pl.native(torch=builder), load_dataset("digits"), settings, CPU)


# ------------------------------------------------------------------ rules (no training)


def test_a_name_the_model_logs_may_be_the_objective() -> None:
    assert check_metric_name("val_loss") == "val_loss"
    assert check_metric_name("val_accuracy") == "val_accuracy"
    assert infer_direction("val_acc") == "maximize"
    assert infer_direction("val_loss") == "minimize"
    for typo in ("val/kappa", "accuracy", "loss", "test/acc", "1st"):  # still refused
        with pytest.raises(ValueError, match="metric"):
            check_metric_name(typo)
    problem = logged_names_problem(["val_loss"], [], native=False, configured=False)
    assert problem is not None and not problem[0]
    assert "@experiment(metric=...)" in problem[1] and "native model" in problem[1]
    assert logged_names_problem(["val_loss"], [], native=True, configured=False) is None
    assert logged_names_problem(["val/acc"], [], native=False, configured=True) is None


def test_a_module_without_forward_is_counted_not_refused() -> None:
    info = pl.native(torch=AutoEncoder).infer((8, 8, 1))
    assert info.params == (64 * 16 + 16 + 16 * 3 + 3) + (3 * 16 + 16 + 16 * 64 + 64)
    assert info.output_shape == ()  # its training_step defines what comes out

    class WithExample(AutoEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.example_input_array = torch.zeros(2, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.encoder(x)

    # forward takes flat rows only: the sample batch fails, its own example does not
    assert pl.native(torch=WithExample).infer((8, 8, 1)).output_shape == (3,)


def test_torch_callbacks_must_be_a_function() -> None:
    with pytest.raises(ArchError, match=r"torch_callbacks= must be a function.*got list"):
        pl.native(torch=AutoEncoder, torch_callbacks=[L.Callback()])


def test_a_module_made_once_is_refused() -> None:
    made = AutoEncoder()
    with pytest.raises(ArchError, match="same AutoEncoder object"):
        pl.native(torch=lambda: made).infer((8, 8, 1))


# ------------------------------------------------------------------ training


@pytest.mark.slow
def test_training_step_runs_once_per_step_and_the_contract_is_reported() -> None:
    made: list[AutoEncoder] = []

    def build() -> AutoEncoder:
        made.append(AutoEncoder())
        return made[-1]

    result = get_backend("lightning").run(_job(build, epochs=3))
    m, trained = result.metrics, made[-1]
    assert m["train/steps_per_epoch"] == 1222 // 64 == 19  # drop_last
    assert trained.calls == m["train/steps"] == 19 * 3
    assert trained is result.model.native  # type: ignore[union-attr]
    for name in ("time/step_ms", "time/first_step_s", "time/train_s", "time/epoch_s"):
        assert name in m or name in result.history[-1]
    for name in ("time/step_ms", "time/first_step_s", "throughput/samples_per_s", "val/loss"):
        assert m[name] > 0, name
    assert m["val/loss"] == m["val_loss"]  # the module's own val_loss is the contract's
    assert m["train_loss"] > 0 and m["model/params"] == 2243
    assert [len(h) > 0 and "val_loss" in h for h in result.history] == [True] * 3
    assert result.tags["loop"] == "lightning.Trainer"
    assert result.tags["optimizer"] == "configure_optimizers"
    assert result.tags["val_loss"] == "logged"


@pytest.mark.slow
@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_the_scheduler_steps_as_its_interval_says(interval: str) -> None:
    result = get_backend("lightning").run(_job(lambda: AutoEncoder(interval), epochs=3))
    lrs = [h["train/lr"] for h in result.history]  # read at each epoch's end
    steps = 19
    if interval == "step":  # stepped after every optimizer step
        want = [0.1 / (1 + e * steps) for e in (1, 2, 3)]
    else:  # Lightning steps it when the epoch's last batch is done, before validation
        want = [0.1 / (1 + e) for e in (1, 2, 3)]
    assert lrs == pytest.approx(want)


@pytest.mark.slow
def test_pruning_at_an_epoch_end_stops_the_trainer_and_propagates() -> None:
    import optuna

    made: list[AutoEncoder] = []
    seen: list[int] = []

    def prune(epoch: int, metrics: dict[str, float]) -> None:
        seen.append(epoch)
        if epoch == 2:
            raise optuna.TrialPruned("pruned at 2")

    def build() -> AutoEncoder:
        made.append(AutoEncoder())
        return made[-1]

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(optuna.TrialPruned, match="pruned at 2"):
        get_backend("lightning").run(_job(build, epochs=5), prune)
    assert seen == [1, 2] and made[-1].calls == 2 * 19
    with pytest.raises(KeyboardInterrupt) as info:  # not Lightning's SystemExit(1)

        def interrupt(epoch: int, metrics: dict[str, float]) -> None:
            raise KeyboardInterrupt("stop")

        get_backend("lightning").run(_job(AutoEncoder, epochs=3), interrupt)
    assert type(info.value) is KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) == handler  # a second Ctrl-C still reaches it


@pytest.mark.slow
def test_declared_lightning_callbacks_run_and_are_new_per_trial() -> None:
    from lightning.pytorch.callbacks import EarlyStopping

    def stop_soon() -> list[L.Callback]:  # never improves by 1.0: stops after 1 + patience
        return [EarlyStopping("val_loss", min_delta=1.0, patience=1)]

    arch = pl.native(torch=AutoEncoder, torch_callbacks=stop_soon)
    job = _job(AutoEncoder, epochs=6)
    job = Job(arch, job.dataset, job.train, job.hardware)
    result = get_backend("lightning").run(job)
    assert len(result.history) == 2
    assert result.tags["stopped_by"] == "lightning callback"

    shared = [EarlyStopping("val_loss")]
    arch = pl.native(torch=AutoEncoder, torch_callbacks=lambda: shared)
    get_backend("lightning").run(Job(arch, job.dataset, job.train, job.hardware))
    with pytest.raises(ArchError, match="same EarlyStopping object as for an earlier trial"):
        get_backend("lightning").run(Job(arch, job.dataset, job.train, job.hardware))


@pytest.mark.slow
def test_settings_that_would_not_reach_the_module_are_refused() -> None:
    with pytest.raises(ArchError, match=r"train.lr=0.01 does not reach a LightningModule"):
        job = _job(AutoEncoder)
        get_backend("lightning").run(
            Job(job.arch, job.dataset, TrainSettings(1, 64, "adam", 0.01), CPU)
        )
    with pytest.raises(ArchError, match=r"train\.schedule='cosine'"):
        get_backend("lightning").run(_job(AutoEncoder, schedule="cosine"))


@pytest.mark.slow
def test_forward_gives_the_contract_where_the_module_logs_nothing() -> None:
    result = get_backend("lightning").run(_job(Classifier, epochs=3))
    m = result.metrics
    assert 0.5 < m["val/acc"] <= 1.0 and m["val/loss"] > 0
    assert result.tags["val_loss"] == "forward"
    out = result.model.predict(load_dataset("digits").x_val[:5])  # type: ignore[union-attr]
    assert out.shape == (5, 10)


@pytest.mark.slow
def test_the_module_s_own_dataloaders_are_used() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    class OwnData(AutoEncoder):
        def train_dataloader(self) -> DataLoader[Any]:
            x = torch.rand(100, 8, 8, 1)
            return DataLoader(TensorDataset(x, torch.zeros(100)), batch_size=10)

    made: list[OwnData] = []
    result = get_backend("lightning").run(_job(lambda: made.append(OwnData()) or made[-1]))
    assert result.metrics["train/steps_per_epoch"] == 10 and made[-1].calls == 20
    assert result.tags["data"] == "train_dataloader"


@pytest.mark.slow
def test_the_compiled_mode_compiles_the_module_as_lightning_users_do() -> None:
    class Quiet(Classifier):  # no self.log: see docs/porting.md for one that logs
        def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

    result = get_backend("torch-compile").run(_job(Quiet, epochs=2))
    assert result.tags["loop"] == "lightning.Trainer+torch.compile"
    assert result.tags["val_loss"] == "validation_step"
    assert result.metrics["val/loss"] > 0 and result.metrics["time/compile_s"] > 0


# ------------------------------------------------------------------ through the CLI

SCRIPT = """
import lightning as L
import torch
from torch import nn

import protolab as pl


class Lit(L.LightningModule):
    def __init__(self, width):
        super().__init__()
        layers = [nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10)]
        self.net = nn.Sequential(*layers)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


@pl.experiment(data="digits", metric="METRIC")
def model(space):
    width = space.int("width", 8, 32, log=True)
    return pl.native(torch=lambda: Lit(width))
"""

CONFIG = """\
experiment: exp.py
backends: [lightning]
study: {name: lit, n_trials: 2, sampler: random, pruner: median}
train: {epochs: 3, batch_size: 128}
hardware: {accelerator: cpu, threads: 1}
"""


@pytest.mark.slow
def test_a_sweep_optimises_what_the_module_logs(workdir: Path) -> None:
    from mlflow.tracking import MlflowClient

    (workdir / "exp.py").write_text(textwrap.dedent(SCRIPT).replace("METRIC", "val_loss"))
    (workdir / "cfg.yaml").write_text(CONFIG)
    proc = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "sweep", "cfg.yaml"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lit: 2 complete" in proc.stdout and "val_loss" in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lit")
    assert exp is not None
    runs = [
        r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags
    ]
    import optuna

    from protolab._stores import open_storage

    study = optuna.load_study(
        study_name="lit", storage=open_storage(str(workdir / "mlruns" / "optuna.journal"))
    )
    values = sorted(t.value for t in study.trials if t.value is not None)
    assert len(runs) == 2 and len(values) == 2
    assert sorted(r.data.metrics["val_loss"] for r in runs) == pytest.approx(values)
    for run in runs:
        m = run.data.metrics
        assert m["val/loss"] == m["val_loss"] and 0 < m["val_acc"] <= 1 and m["train_loss"] > 0
        assert m["time/step_ms"] > 0 and m["train/steps"] == 3 * (1222 // 128)
        curve = client.get_metric_history(run.info.run_id, "val_loss")
        assert sorted(p.step for p in curve) == [1, 2, 3]
        assert run.data.tags["protolab.loop"] == "lightning.Trainer"


def test_a_logged_name_on_a_plain_arch_is_refused_up_front(workdir: Path) -> None:
    from typer.testing import CliRunner

    from protolab.cli import app

    (workdir / "exp.py").write_text(
        "import protolab as pl\nfrom protolab import layers as L\n\n"
        "@pl.experiment(data='digits', metric='val_loss')\n"
        "def model(space):\n    return pl.Arch(L.Flatten(), L.Dense(10))\n"
    )
    (workdir / "cfg.yaml").write_text(CONFIG)
    result = CliRunner().invoke(app, ["sweep", "cfg.yaml"])
    assert result.exit_code == 2, result.output
    for part in ("exp.py", "@experiment(metric=...)", "unknown metric 'val_loss'", "val/acc"):
        assert part in result.stderr, result.stderr
    assert not (workdir / "mlruns").exists()


def test_the_shipped_ports_build_the_originals_at_their_defaults() -> None:
    from protolab.script import load_experiment
    from protolab.space import Space

    def default(name: str) -> int:
        arch = load_experiment(ROOT / "experiments" / f"{name}.py").build(Space())
        return arch.infer((8, 8, 1)).params

    # the docs' LitAutoEncoder (hidden 64, code 3) on 64 inputs
    assert default("port_lightning_autoencoder") == (64 * 64 + 64) * 2 + (64 * 3 + 3) + (
        3 * 64 + 64
    )
    assert default("port_lightning_net") == 2287  # = port_lightning_mlp's Arch, as the original
