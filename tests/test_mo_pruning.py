"""Pruning with several objectives (issue 24, item 1): the Pareto-rank rule on known vectors,
the epoch vector the sweep stores, a real two-objective sweep that prunes a dominated trial
(PRUNED in Optuna, its MLflow run ended), and the pruners that cannot judge a front refused
with exit 2 before anything is written."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from protolab._stores import open_storage
from protolab.cli import app
from protolab.samplers import (
    ObjectiveThresholdPruner,
    OptimisticParetoPruner,
    ParetoRankPruner,
    curve_key,
    dominates,
    optimistic_prune,
    optimistic_vector,
    pareto_fronts,
    pareto_prune,
    upper_quantile,
)
from protolab.sweep import make_pruner
from protolab.sweep._callbacks import ReportVectors
from protolab.sweep._study import vector_pruner

runner = CliRunner()
State = optuna.trial.TrialState
UP_DOWN = (True, False)  # val/acc maximised, time/step_ms minimised


# --- the rule, on known vectors -----------------------------------------------------------


def test_dominance_needs_every_objective_no_worse_and_one_better() -> None:
    assert dominates([0.9, 1.0], [0.8, 2.0], UP_DOWN)
    assert dominates([0.9, 1.0], [0.9, 2.0], UP_DOWN)  # equal accuracy, faster
    assert not dominates([0.9, 1.0], [0.9, 1.0], UP_DOWN)  # equal: neither
    assert not dominates([0.9, 3.0], [0.8, 2.0], UP_DOWN)  # a trade-off
    assert not dominates([0.9, None], [0.1, 2.0], UP_DOWN)  # unknown: never
    assert not dominates([0.9, 1.0], [0.1, math.nan], UP_DOWN)


# Faster models are less accurate: a, b, c trade one for the other (front 0); d is behind
# c (as fast, less accurate) and b (slower and less accurate): front 1; e is behind d:
# front 2.
#   acc
#   0.9 |        c
#   0.8 |     b
#   0.7 |        d
#  0.65 |           e
#   0.6 |  a
#       +-----------> ms   1  2  3  4
A, B, C, D, E = [0.6, 1.0], [0.8, 2.0], [0.9, 3.0], [0.7, 3.0], [0.65, 4.0]


def test_fronts_by_non_dominated_sorting() -> None:
    assert pareto_fronts([A, B, C, D, E], UP_DOWN) == [0, 0, 0, 1, 2]


def test_pruned_when_more_than_the_fraction_is_in_better_fronts() -> None:
    others = [A, B, C, D]
    assert pareto_prune(E, others, UP_DOWN, fraction=0.5)  # 4 of 4 in better fronts
    # on the front (the fastest of all): never pruned, however bad its accuracy
    assert not pareto_prune([0.1, 0.5], others, UP_DOWN, fraction=0.0)
    # (0.75, 2.5) is dominated by b alone, but a, b, c form a better front: 3 of 4 better
    x = [0.75, 2.5]
    assert sum(dominates(o, x, UP_DOWN) for o in others) == 1
    assert pareto_prune(x, others, UP_DOWN, fraction=0.5)
    assert not pareto_prune(x, others, UP_DOWN, fraction=0.75)
    # an objective this epoch does not measure never prunes; nor do others without it
    assert not pareto_prune([0.1, None], others, UP_DOWN, fraction=0.0)
    assert not pareto_prune([0.1, 9.0], [[0.9, None]], UP_DOWN, fraction=0.0)


def test_the_readme_figure() -> None:
    """README "Pruning several objectives": x is dominated by b alone, yet behind a front."""
    a, b, c, d, x = [0.6, 1.0], [0.8, 2.0], [0.9, 3.0], [0.7, 3.0], [0.75, 2.5]
    assert pareto_fronts([a, b, c, x, d], UP_DOWN) == [0, 0, 0, 1, 2]
    assert pareto_prune(x, [a, b, c, d], UP_DOWN, 0.5)
    assert not pareto_prune(x, [a, b, c, d], UP_DOWN, 0.75)


def test_one_objective_is_the_percentile_rule() -> None:
    """In one dimension "more than half in better fronts" is "worse than the median"."""
    others = [[1.0], [2.0], [3.0], [4.0], [5.0]]
    assert pareto_prune([2.5], others, (True,), 0.5)  # 3 of 5 better
    assert not pareto_prune([3.5], others, (True,), 0.5)  # 2 of 5 better


def _study_with(vectors: dict[int, list[float]], epoch: int = 2) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for number, vec in vectors.items():
        trial = study.ask()
        assert trial.number == number
        trial.set_user_attr(curve_key(epoch), vec)
        study.tell(trial, vec)
    return study


def test_pruner_reads_every_trials_vector_at_the_same_epoch_from_the_storage() -> None:
    study = _study_with({0: A, 1: B, 2: C})
    pruner = ParetoRankPruner(percentile=25, n_startup_trials=3, n_warmup_steps=1)
    me = study.ask()
    assert pruner.prune_vector(study, me.number, 2, [0.7, 3.5])  # behind b and c
    assert not pruner.prune_vector(study, me.number, 2, [0.95, 3.5])  # most accurate
    assert not pruner.prune_vector(study, me.number, 1, [0.0, 99.0])  # warm-up epoch
    assert not pruner.prune_vector(study, me.number, 3, [0.0, 99.0])  # nobody reached 3
    # Optuna's API: the frozen trial's last recorded epoch
    me.set_user_attr(curve_key(2), [0.7, 3.5])
    frozen = study.get_trials(deepcopy=False)[me.number]
    assert pruner.prune(study, frozen)
    late = ParetoRankPruner(percentile=25, n_startup_trials=4)
    assert not late.prune_vector(study, me.number, 2, [0.7, 3.5])  # 3 complete < 4


# --- optimistic dominance (``pareto``), on known vectors -----------------------------------

# Three finished trials: (vector at epoch 2, final values), [val/acc up, step ms down].
#   gains (acc, ms): P (0.10, 0.0), Q (0.03, 0.0), R (0.25, 0.2)
#   at optimism 0.9 (linear quantile, position 0.9 * 2 = 1.8 of the sorted gains):
#   acc 0.10 + 0.8 * (0.25 - 0.10) = 0.22, ms 0.0 + 0.8 * 0.2 = 0.16
P, Q, R = ([0.80, 2.0], [0.90, 2.0]), ([0.85, 1.0], [0.88, 1.0]), ([0.70, 4.0], [0.95, 3.8])
FINISHED = [P, Q, R]
FRONT = [final for _, final in FINISHED]


def test_upper_quantile_is_linear_between_order_statistics() -> None:
    assert upper_quantile([0.25, 0.03, 0.10], 0.9) == pytest.approx(0.22)
    assert upper_quantile([0.25, 0.03, 0.10], 0.5) == pytest.approx(0.10)
    assert upper_quantile([0.25, 0.03, 0.10], 1.0) == pytest.approx(0.25)
    assert upper_quantile([0.4], 0.9) == pytest.approx(0.4)


def test_optimistic_vector_moves_each_objective_its_good_way_never_back() -> None:
    gains = [[0.10, 0.0], [0.03, 0.0], [0.25, 0.2]]
    assert optimistic_vector([0.70, 6.0], gains, UP_DOWN, 0.9) == pytest.approx([0.92, 5.84])
    # every finished trial got worse: optimism assumes no loss, not a loss
    assert optimistic_vector([0.70, 6.0], [[-0.1, -1.0]], UP_DOWN, 0.9) == [0.70, 6.0]
    # an unknown value, or an objective no finished trial has a gain for, stays unknown
    assert optimistic_vector([None, 6.0], gains, UP_DOWN, 0.9)[0] is None
    assert optimistic_vector([0.7, 6.0], [[0.1, None]], UP_DOWN, 0.9) == [pytest.approx(0.8), None]


def test_a_dominated_optimistic_vector_prunes() -> None:
    """(0.72, 6.0 ms) at epoch 2 -> optimistic (0.94, 5.84): R (0.95, 3.8) is better in both."""
    slow = [0.72, 6.0]
    assert optimistic_prune(slow, FINISHED, FRONT, UP_DOWN, optimism=0.9)
    # P (0.90, 2.0) is faster but less accurate than 0.94: R alone dominates it
    assert not optimistic_prune(slow, FINISHED, FRONT, UP_DOWN, optimism=0.9, n_dominators=2)
    # optimism 1 (the largest gains, 0.25 and 0.2): (0.97, 5.8), past R's accuracy: kept
    assert not optimistic_prune(slow, FINISHED, FRONT, UP_DOWN, optimism=1.0)


def test_a_fast_slow_learner_is_kept_where_the_rank_rule_prunes_it() -> None:
    """(0.78, 1.0 ms) at epoch 2 is behind Q's (0.85, 1.0) at the same epoch, and a third of
    the others are in a better front: percentile 25 prunes it. Optimistic, it is (1.0, 0.84):
    faster than every finished trial, so no final value can dominate it."""
    fast = [0.78, 1.0]
    assert pareto_prune(fast, [at_k for at_k, _ in FINISHED], UP_DOWN, fraction=0.25)
    assert not optimistic_prune(fast, FINISHED, FRONT, UP_DOWN, optimism=0.9)
    # with no optimism (0: the smallest gains, 0.03 and 0) it is (0.81, 1.0): Q dominates
    assert optimistic_prune(fast, FINISHED, FRONT, UP_DOWN, optimism=0.0)


def test_no_finished_trial_never_prunes() -> None:
    assert not optimistic_prune([0.0, 99.0], [], [], UP_DOWN)
    assert not optimistic_prune([0.0, 99.0], [], FRONT, UP_DOWN)  # no gain known
    assert not optimistic_prune([None, 99.0], FINISHED, FRONT, UP_DOWN)  # unknown accuracy


def _finished_study(trials: list[tuple[list[float], list[float]]], epoch: int = 2) -> optuna.Study:
    """Complete trials with their vector at ``epoch`` and their final values."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for at_k, final in trials:
        trial = study.ask()
        trial.set_user_attr(curve_key(epoch), at_k)
        study.tell(trial, final)
    return study


def test_pareto_pruner_reads_the_complete_trials_from_the_storage() -> None:
    pruner = OptimisticParetoPruner(optimism=0.9, n_dominators=1, n_startup_trials=3)
    empty = optuna.create_study(directions=["maximize", "minimize"])
    running = empty.ask()
    running.set_user_attr(curve_key(2), [0.99, 0.1])  # RUNNING: neither gains nor front
    me = empty.ask()
    assert not pruner.prune_vector(empty, me.number, 2, [0.0, 99.0])  # no COMPLETE trial

    study = _finished_study(FINISHED)
    me = study.ask()
    assert pruner.prune_vector(study, me.number, 2, [0.70, 6.0])
    assert not pruner.prune_vector(study, me.number, 2, [0.78, 1.0])
    assert not pruner.prune_vector(study, me.number, 3, [0.0, 99.0])  # nobody recorded 3
    assert not OptimisticParetoPruner(n_dominators=1, n_startup_trials=4).prune_vector(
        study, me.number, 2, [0.70, 6.0]
    )  # 3 complete < 4
    assert not OptimisticParetoPruner(n_dominators=1, n_warmup_steps=2).prune_vector(
        study, me.number, 2, [0.70, 6.0]
    )
    # Optuna's API: the frozen trial's last recorded epoch
    me.set_user_attr(curve_key(2), [0.70, 6.0])
    assert pruner.prune(study, study.get_trials(deepcopy=False)[me.number])


def test_an_infeasible_trial_is_not_on_the_front() -> None:
    """R violates a constraint: it lends its gain, but cannot dominate (never on the front)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for (at_k, final), slack in zip(FINISHED, [0.0, 0.0, 5.0], strict=True):
        trial = study.ask()
        trial.set_user_attr(curve_key(2), at_k)
        trial.set_constraint("model/params <= 1000", slack)
        study.tell(trial, final)
    me = study.ask()
    assert not OptimisticParetoPruner(0.9, 1).prune_vector(study, me.number, 2, [0.70, 6.0])
    # at optimism 0.45 (gains 0.093 and 0) it is (0.793, 6.0): P (0.90, 2.0) is
    # feasible and dominates it
    assert OptimisticParetoPruner(n_dominators=1).prune_vector(study, me.number, 2, [0.70, 6.0])
    assert OptimisticParetoPruner().prune_vector(study, me.number, 2, [0.70, 6.0])  # P and Q
    # all three finals dominate (0.793, 6.0), but R is infeasible: only two count
    assert not OptimisticParetoPruner(n_dominators=3).prune_vector(study, me.number, 2, [0.70, 6.0])


def test_pareto_with_one_objective_reads_optunas_reported_values() -> None:
    """One objective: "its value plus a top-quantile gain cannot beat the best finished"."""
    study = optuna.create_study(direction="maximize")
    for at_2, final in ((0.80, 0.90), (0.85, 0.88), (0.70, 0.95)):
        trial = study.ask()
        trial.report(at_2, 2)
        study.tell(trial, final)
    pruner = OptimisticParetoPruner(optimism=0.9, n_dominators=1)
    me = study.ask()
    me.report(0.70, 2)  # 0.70 + 0.22 = 0.92 < 0.95
    assert pruner.prune(study, study.get_trials(deepcopy=False)[me.number])
    other = study.ask()
    other.report(0.75, 2)  # 0.75 + 0.22 = 0.97: it could still win
    assert not pruner.prune(study, study.get_trials(deepcopy=False)[other.number])
    one = make_pruner("pareto", {"optimism": 0.5}, [("val/acc", "maximize")])
    assert isinstance(one, OptimisticParetoPruner) and one.optimism == 0.5


def test_threshold_takes_a_bound_per_objective_on_its_bad_side() -> None:
    objectives = [("val/acc", "maximize"), ("time/step_ms", "minimize")]
    pruner = ObjectiveThresholdPruner({"time/step_ms": 5.0}, objectives)
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert pruner.prune_vector(study, 0, 2, [0.99, 6.0])
    assert not pruner.prune_vector(study, 0, 2, [0.01, 4.0])
    assert not pruner.prune_vector(study, 0, 1, [0.99, 6.0])  # warm-up
    both = ObjectiveThresholdPruner({"val/acc": 0.5, "time/step_ms": 5.0}, objectives)
    assert both.prune_vector(study, 0, 2, [0.4, 1.0])
    assert both.prune_vector(study, 0, 2, [math.nan, 1.0])
    with pytest.raises(ValueError, match="'val/loss'"):
        ObjectiveThresholdPruner({"val/loss": 1.0}, objectives)


def test_step_time_stands_in_per_epoch_as_a_running_median_from_epoch_two() -> None:
    report = ReportVectors(["val/acc", "time/step_ms", "model/params"], 5, ParetoRankPruner())
    report.on_job_start("any", lead=True)
    first = report.vector({"val/acc": 0.5, "time/epoch_step_ms": 9.0})
    assert first == [0.5, 9.0, None]  # epoch 1 alone; params unknown per epoch
    assert report.vector({"val/acc": 0.6, "time/epoch_step_ms": 2.0})[1] == 2.0
    assert report.vector({"val/acc": 0.7, "time/epoch_step_ms": 4.0})[1] == 3.0
    report.on_job_start("any", lead=True)  # a new job starts over
    assert report.vector({"time/epoch_step_ms": 7.0})[:2] == [None, 7.0]


def test_each_pruner_name_with_two_objectives() -> None:
    two = [("val/acc", "maximize"), ("time/step_ms", "minimize")]
    median = vector_pruner("median", {}, two)
    assert isinstance(median, ParetoRankPruner) and median.fraction == 0.5
    percentile = vector_pruner("percentile", {"n_startup_trials": 5}, two)
    assert isinstance(percentile, ParetoRankPruner) and percentile.fraction == 0.25
    assert percentile.n_startup_trials == 5
    assert isinstance(vector_pruner("threshold", {"val/acc": 0.5}, two), ObjectiveThresholdPruner)
    assert vector_pruner("none", {}, two) is None
    pareto = vector_pruner("pareto", {"optimism": 0.8, "n_dominators": 2}, two)
    assert isinstance(pareto, OptimisticParetoPruner) and pareto.optimism == 0.8
    assert pareto.n_dominators == 2 and pareto.n_warmup_steps == 0
    default = vector_pruner("pareto", {}, two)
    assert (
        isinstance(default, OptimisticParetoPruner)
        and default.optimism == 0.45
        and default.n_dominators == 2
    )
    assert isinstance(make_pruner("median", {}, two[:1]), optuna.pruners.MedianPruner)  # one


# --- a real sweep --------------------------------------------------------------------------

# The width comes from the environment, so two runs of one study train a good model, then a
# bottleneck (width 1) that is behind it in both objectives at epoch 2.
SCRIPT = """
import os

import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    act = space.choice("act", ["relu"])
    width = int(os.environ.get("WIDTH", "32"))
    return pl.Arch(L.Flatten(), L.Dense(width, activation=act), L.Dense(10))
"""
CONFIG = """\
experiment: exp.py
backends: [lightning]
study:
  name: mo
  n_trials: 1
  sampler: random
  pruner: percentile
  pruner_options: {percentile: 0, n_startup_trials: 1}
  objectives: [{metric: val/acc}, {metric: val/loss, direction: minimize}]
train: {epochs: 3, batch_size: 128, lr: 0.01}
hardware: {accelerator: cpu}
"""


@pytest.mark.slow
def test_a_dominated_trial_is_pruned_and_its_run_ended(workdir: Path) -> None:
    good, bad = _good_then_bottleneck(workdir, CONFIG)
    assert {curve_key(e) for e in (1, 2, 3)} <= set(good.user_attrs)
    assert curve_key(2) in bad.user_attrs and curve_key(3) not in bad.user_attrs  # stopped
    assert dominates(good.user_attrs[curve_key(2)], bad.user_attrs[curve_key(2)], UP_DOWN)
    _assert_pruned_run_ended(workdir, epochs=2)


Trials = tuple[optuna.trial.FrozenTrial, optuna.trial.FrozenTrial]


def _good_then_bottleneck(workdir: Path, config: str) -> Trials:
    """A sweep of one wide trial, then one of a width-1 bottleneck: (good, bad) trials,
    the bad one PRUNED."""
    (workdir / "exp.py").write_text(SCRIPT)
    cfg = workdir / "cfg.yaml"
    cfg.write_text(config)
    first = runner.invoke(app, ["sweep", str(cfg)], env={"WIDTH": "32"})
    assert first.exit_code == 0, first.output + first.stderr
    second = runner.invoke(app, ["sweep", str(cfg), "study.n_trials=2"], env={"WIDTH": "1"})
    assert second.exit_code == 0, second.output + second.stderr
    storage = open_storage(str(workdir / "mlruns" / "optuna.journal"))
    trials = optuna.load_study(study_name="mo", storage=storage).trials
    assert [t.state for t in trials] == [State.COMPLETE, State.PRUNED]
    return trials[0], trials[1]


def _assert_pruned_run_ended(workdir: Path, epochs: int) -> None:
    """Trial 1's MLflow run: tagged PRUNED, ended, with ``epochs`` epochs of val/acc."""
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mo")
    assert exp is not None
    runs = {r.data.tags.get("protolab.trial"): r for r in client.search_runs([exp.experiment_id])}
    pruned = runs["1"]
    assert pruned.data.tags["protolab.state"] == "PRUNED"
    assert pruned.info.status != "RUNNING" and pruned.info.end_time is not None
    assert len(client.get_metric_history(pruned.info.run_id, "val/acc")) == epochs


@pytest.mark.slow
def test_pareto_prunes_a_trial_that_cannot_reach_the_front(workdir: Path) -> None:
    """The same two runs with ``pareto``: the bottleneck's epoch-1 vector, even with the
    good trial's gain from epoch 1 to 3 added, is behind the good trial's final values."""
    config = CONFIG.replace("pruner: percentile", "pruner: pareto").replace(
        "{percentile: 0, n_startup_trials: 1}",
        "{optimism: 0.9, n_dominators: 1, n_startup_trials: 1}",
    )
    good, bad = _good_then_bottleneck(workdir, config)
    assert curve_key(1) in bad.user_attrs and curve_key(2) not in bad.user_attrs  # epoch 1
    finished = [(good.user_attrs[curve_key(1)], good.values)]
    assert optimistic_prune(bad.user_attrs[curve_key(1)], finished, [good.values], UP_DOWN)
    _assert_pruned_run_ended(workdir, epochs=1)


# --- refused up front ----------------------------------------------------------------------


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["study.pruner=hyperband"], ["study", "a Pareto front", "got 'hyperband' with 2"]),
        (["study.pruner=successive_halving"], ["got 'successive_halving' with 2 objectives"]),
        (
            ["study.pruner=threshold", "study.pruner_options={lower: 0.5}"],
            ["a bound per objective metric", "val/acc, time/step_ms", "'lower'"],
        ),
        (
            ["study.pruner=threshold", "study.pruner_options={val/loss: 0.5}"],
            ["a bound per objective metric", "val/loss"],
        ),
        (
            ["study.pruner=median", "study.pruner_options={percentile: 10}"],
            ["study.pruner_options", "unknown option 'percentile'", "n_startup_trials"],
        ),
        (
            ["study.pruner=percentile", "study.pruner_options={percentile: 120}"],
            ["study.pruner_options", "percentile must be between 0 and 100", "120"],
        ),
        (
            ["study.pruner=threshold", "study.pruner_options={val/acc: abc}"],
            ["study.pruner_options.val/acc", "takes a number", "'abc'"],
        ),
        (
            ["study.pruner=pareto", "study.pruner_options={optimism: 1.5}"],
            ["study.pruner_options", "'pareto'", "optimism must be a quantile between 0", "1.5"],
        ),
        (
            ["study.pruner=pareto", "study.pruner_options={n_dominators: 0}"],
            ["study.pruner_options", "n_dominators must be an integer >= 1", "got 0"],
        ),
        (
            ["study.pruner=pareto", "study.pruner_options={percentile: 25}"],
            ["study.pruner_options", "unknown option 'percentile'", "optimism"],
        ),
    ],
    ids=["hyperband", "successive-halving", "threshold-lower", "threshold-other", "median-opt",
         "percentile-range", "threshold-text", "pareto-optimism", "pareto-dominators",
         "pareto-unknown"],
)  # fmt: skip
def test_a_pruner_that_cannot_judge_two_objectives_is_exit_2(
    workdir: Path, args: list[str], expect: list[str]
) -> None:
    (workdir / "exp.py").write_text(SCRIPT)
    cfg = workdir / "cfg.yaml"
    cfg.write_text(
        CONFIG.replace("val/loss, direction: minimize", "time/step_ms").replace(
            "{percentile: 0, n_startup_trials: 1}", "{}"
        )
    )
    before = _snapshot(workdir)
    result = runner.invoke(app, ["sweep", str(cfg), *args])
    out = result.stderr + result.stdout
    assert result.exit_code == 2, out
    assert sum(line.lower().startswith("error:") for line in out.splitlines()) == 1, out
    for part in expect:
        assert part in out, f"{part!r} not in {out!r}"
    assert _snapshot(workdir) == before, "the command wrote to the project"
