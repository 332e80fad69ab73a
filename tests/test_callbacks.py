"""The sweep's trial callbacks: what the loop and the trial function tell, without training."""

from __future__ import annotations

import optuna
import pytest

from protolab.sweep._callbacks import ReportToPruner, TimeJobs, TrialCallback


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_only_the_lead_job_reports_and_the_last_epoch_is_never_pruned() -> None:
    study = optuna.create_study(direction="maximize", pruner=_AlwaysPrune())
    trial = study.ask()
    pruner = ReportToPruner("val/acc", epochs=2)
    pruner.on_trial_start(trial)
    pruner.on_job_start("keras", lead=False)
    pruner.on_epoch("keras", 1, {"val/acc": 0.5})  # not the lead: Optuna hears nothing
    assert study.trials[0].intermediate_values == {}
    pruner.on_job_start("lightning", lead=True)
    pruner.on_epoch("lightning", 1, {"train/loss": 1.0})  # no metric: nothing to report
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        pruner.on_epoch("lightning", 1, {"val/acc": 0.6})
    pruner.on_epoch("lightning", 2, {"val/acc": 0.7})  # the last epoch: the work is done
    assert study.trials[0].intermediate_values == {1: 0.6, 2: 0.7}


def test_a_callback_overrides_only_what_it_needs() -> None:
    class Counts(TrialCallback):
        def __init__(self) -> None:
            self.epochs = 0

        def on_epoch(self, backend: str, epoch: int, metrics: dict[str, float]) -> None:
            self.epochs += 1

    counts, timing = Counts(), TimeJobs()
    for cb in (counts, timing):  # every hook exists on both; the others do nothing
        cb.on_job_start("lightning", lead=True)
        cb.on_epoch("lightning", 1, {})
        cb.on_job_end(1.5)
        cb.on_trial_end(0, "COMPLETE", 0.5, "", True)
    timing.on_job_end(0.5)
    assert counts.epochs == 1
    assert timing.total == 2.0
