"""One rerun: build the Arch from the freshly loaded script and train a short job per mode.

The job is the config's, shortened (``--epochs``, ``--steps``); the modes are the config's
(aliases resolve per architecture, as in a sweep). Each mode's first epoch is reported the
moment it ends, timed from the save that caused the rerun. A failing mode is recorded with
its reason and the rerun goes on with the next; an interrupt stops it at once.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protolab.arch import Arch
from protolab.backends import Hardware, Job, JobResult, TrainSettings, get_backend
from protolab.backends._calibrate import Choice, resolve
from protolab.space import Space
from protolab.sweep import fail_reason, make_settings, sample_train
from protolab.watch._source import Loaded

__all__ = ["ModeRun", "Rerun", "run_modes", "start_rerun"]

# (mode, epoch, metrics, seconds since the save) -> None: live output.
EpochFn = Callable[[str, int, dict[str, float], float], None]


@dataclass
class ModeRun:
    """One mode's short job: its result, or why it failed."""

    name: str
    choice: Choice | None = None
    result: JobResult | None = None
    error: str = ""  # one line
    traceback: str = ""  # for the run's traceback.txt artifact
    first_loss_s: float = float("nan")  # save -> end of the first epoch


@dataclass
class Rerun:
    """What one save produced: the configuration, and a job per mode (or why none ran)."""

    number: int
    saved_at: float  # wall-clock time of the save (file mtime), or of the start
    loaded: Loaded | None = None
    arch: Arch | None = None
    params: dict[str, Any] = field(default_factory=dict)  # sampled values + train settings
    settings: TrainSettings | None = None
    modes: list[ModeRun] = field(default_factory=list)
    error: str = ""  # the script, config or build failed: nothing trained
    traceback: str = ""


def start_rerun(rerun: Rerun, loaded: Loaded, epochs: int, steps: int | None) -> Job:
    """Build the Arch with the fixed values and the job every mode trains (may raise)."""
    ctx = loaded.ctx
    arch_space = Space(values=loaded.values)
    train_space = Space(values=loaded.values, prefix="train.")
    rerun.loaded = loaded
    rerun.arch = ctx.experiment.build(arch_space)
    train = sample_train(ctx.cfg.train, train_space)
    fixed = {f"train.{k}": v for k, v in ctx.cfg.train.model_dump(mode="json").items()}
    sampled = {f"train.{k}": v for k, v in train_space.values.items()}
    script = {f"train.{k}": v for k, v in arch_space.train_settings.items()}
    rerun.params = {
        **arch_space.values,
        **fixed,
        **sampled,
        **script,
        "study.seed": ctx.cfg.study.seed,
    }
    rerun.settings = make_settings(
        ctx, train, arch_space.train_settings, epochs=epochs, max_steps=steps
    )
    hardware = Hardware.of(ctx.cfg.hardware)
    return Job(rerun.arch, ctx.dataset, rerun.settings, hardware, ctx.scores)


def run_modes(rerun: Rerun, job: Job, on_epoch: EpochFn) -> None:
    """Train ``job`` on every configured mode, in order, filling ``rerun.modes``."""
    assert rerun.loaded is not None
    for name, choice in resolve(list(rerun.loaded.ctx.cfg.backends), job):
        mode = ModeRun(name, choice)
        rerun.modes.append(mode)

        def hook(epoch: int, metrics: dict[str, float], mode: ModeRun = mode) -> None:
            since = time.time() - rerun.saved_at
            if epoch == 1:
                mode.first_loss_s = since
            on_epoch(mode.name, epoch, metrics, since)

        try:
            mode.result = get_backend(name).run(job, hook)
        except Exception as e:  # this mode failed: say why, go on with the next
            mode.error = fail_reason(e)
            mode.traceback = "".join(traceback.format_exception(e))
