"""EvolutionSampler: mutation, aging population, tournament, storage/process safety, lineage."""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState, create_trial

from protolab.samplers import (
    MUTATED_ATTR,
    PARENT_ATTR,
    EvolutionSampler,
    family_tree,
    format_diff,
    lineage,
    mutation_diff,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Shared with the worker processes below, so both sides optimise the same objective.
DEEP_OBJECTIVE = '''
def deep_objective(trial):
    """Define-by-run: ``depth`` decides which ``width_i``/``drop_i`` names exist."""
    score = 0.0
    depth = trial.suggest_int("depth", 1, 4)
    for i in range(depth):
        score += trial.suggest_int(f"width_{i}", 8, 256, log=True) / 256
        score -= trial.suggest_float(f"drop_{i}", 0.0, 0.5, step=0.1)
    act = trial.suggest_categorical("act", ["relu", "gelu", "tanh"])
    return score + {"relu": 0.0, "gelu": 0.5, "tanh": 0.2}[act]
'''
_namespace: dict[str, Any] = {}
exec(DEEP_OBJECTIVE, _namespace)
deep_objective: Callable[[Trial], float] = _namespace["deep_objective"]


def fixed_objective(trial: Trial) -> float:
    """A fixed space where every distribution has at least two values."""
    a = trial.suggest_int("a", 0, 10)
    b = trial.suggest_int("b", 2, 64, step=2)
    c = trial.suggest_int("c", 1, 1000, log=True)
    d = trial.suggest_float("d", -1.0, 1.0)
    e = trial.suggest_float("e", 1e-5, 1e-1, log=True)
    f = trial.suggest_float("f", 0.0, 1.0, step=0.25)
    g = trial.suggest_categorical("g", ["x", "y", None, 3])
    h = trial.suggest_categorical("h", [True, False])
    return a + b / 64 + np.log(c) + d + e + f + (g == "x") + h


def _children(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if PARENT_ATTR in t.user_attrs]


def _check_children(study: optuna.Study, n_mutations: int) -> int:
    """Every child: a complete, earlier parent; 1..n_mutations of the shared names changed,
    all of them among the recorded ``mutated``; every value valid for its distribution."""
    trials = study.get_trials(deepcopy=False)
    children = _children(study)
    for child in children:
        parent = trials[child.user_attrs[PARENT_ATTR]]
        mutated = child.user_attrs[MUTATED_ATTR]
        assert parent.state == TrialState.COMPLETE
        assert parent.number < child.number
        assert mutated == sorted(set(mutated)) and set(mutated) <= set(parent.params)
        assert 1 <= len(mutated) <= n_mutations
        shared = set(parent.params) & set(child.params)
        changed = {n for n in shared if parent.params[n] != child.params[n]}
        assert 1 <= len(changed) <= n_mutations, (parent.params, child.params, mutated)
        assert changed <= set(mutated)
        for name, dist in child.distributions.items():
            assert dist._contains(dist.to_internal_repr(child.params[name]))
    return len(children)


# -- construction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population_size": 1}, "`population_size >= 2` must hold, but got 1"),
        ({"tournament_size": 0}, "`1 <= tournament_size <= population_size` must hold, but got 0"),
        ({"population_size": 4, "tournament_size": 5}, "tournament_size <= population_size"),
        ({"n_mutations": 0}, "`n_mutations >= 1` must hold, but got 0"),
        ({"n_startup_trials": -1}, "`n_startup_trials >= 0` must hold, but got -1"),
        ({"population_size": 2.5}, "`population_size >= 2` must hold, but got 2.5"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        EvolutionSampler(**kwargs)


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        EvolutionSampler(10)  # type: ignore[misc]


# -- the algorithm -------------------------------------------------------------------------


def test_startup_trials_are_random_roots_then_children() -> None:
    sampler = EvolutionSampler(population_size=8, n_startup_trials=5, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(fixed_objective, n_trials=30)
    roots = [t.number for t in study.trials if PARENT_ATTR not in t.user_attrs]
    assert roots == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("n_mutations", [1, 2, 3])
def test_define_by_run_children_change_1_to_n_mutations_shared_names(n_mutations: int) -> None:
    sampler = EvolutionSampler(population_size=10, tournament_size=3, n_mutations=n_mutations)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(deep_objective, n_trials=120)
    assert _check_children(study, n_mutations) == 110
    # A depth change adds or drops names, and those added are sampled, not inherited.
    trials = study.trials
    depth_changed = [
        c
        for c in _children(study)
        if trials[c.user_attrs[PARENT_ATTR]].params["depth"] != c.params["depth"]
    ]
    assert depth_changed
    for child in depth_changed:
        assert set(child.params) != set(trials[child.user_attrs[PARENT_ATTR]].params)


@pytest.mark.parametrize("n_mutations", [1, 3, 8, 20])
def test_fixed_space_children_change_exactly_n_mutations(n_mutations: int) -> None:
    sampler = EvolutionSampler(population_size=6, n_mutations=n_mutations, seed=1)
    study = optuna.create_study(sampler=sampler)
    study.optimize(fixed_objective, n_trials=80)
    trials = study.trials
    expected = min(n_mutations, 8)  # the space has 8 params
    for child in _children(study):
        parent = trials[child.user_attrs[PARENT_ATTR]]
        changed = set(mutation_diff(parent.params, child.params))
        assert changed == set(child.user_attrs[MUTATED_ATTR])
        assert len(changed) == expected
    assert _check_children(study, n_mutations) == 74


def test_numeric_mutations_are_local_and_valid() -> None:
    def objective(trial: Trial) -> float:
        x = trial.suggest_float("x", 0.0, 100.0)
        n = trial.suggest_int("n", 0, 1000, step=10)
        lg = trial.suggest_float("lg", 1e-4, 1.0, log=True)
        return x + n + lg

    study = optuna.create_study(sampler=EvolutionSampler(population_size=5, n_mutations=3, seed=3))
    study.optimize(objective, n_trials=200)
    trials = study.trials
    for child in _children(study):
        parent = trials[child.user_attrs[PARENT_ATTR]]
        assert 0 < abs(child.params["x"] - parent.params["x"]) <= 25.0 + 1e-9
        assert 0 < abs(child.params["n"] - parent.params["n"]) <= 250
        assert child.params["n"] % 10 == 0
        log_step = abs(np.log(child.params["lg"]) - np.log(parent.params["lg"]))
        assert 0 < log_step <= 0.25 * np.log(1e4) + 1e-9


def test_single_valued_params_are_never_chosen_to_mutate() -> None:
    def objective(trial: Trial) -> float:
        trial.suggest_int("fixed", 3, 3)
        trial.suggest_categorical("only", ["one"])
        return trial.suggest_float("x", 0.0, 1.0)

    study = optuna.create_study(
        sampler=EvolutionSampler(population_size=3, tournament_size=2, n_mutations=2)
    )
    study.optimize(objective, n_trials=20)
    assert all(c.user_attrs[MUTATED_ATTR] == ["x"] for c in _children(study))


def _flaky(trial: Trial) -> float:
    value = deep_objective(trial)
    if trial.number % 5 == 3:
        raise optuna.TrialPruned()
    if trial.number % 7 == 4:
        raise ValueError("a failed trial")
    return value


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_parent_comes_from_the_aging_population_by_tournament(direction: str) -> None:
    """Sequential trials: the population is the last 6 complete trials by number; with the
    tournament as large as the population the parent is the population's best."""
    for tournament in (2, 6):
        sampler = EvolutionSampler(population_size=6, tournament_size=tournament, seed=4)
        study = optuna.create_study(direction=direction, sampler=sampler)
        study.optimize(_flaky, n_trials=80, catch=(ValueError,))
        trials = study.trials
        assert {t.state for t in trials} == {
            TrialState.COMPLETE,
            TrialState.PRUNED,
            TrialState.FAIL,
        }
        for child in _children(study):
            done = [t for t in trials[: child.number] if t.state == TrialState.COMPLETE]
            population = done[-6:]
            parent = trials[child.user_attrs[PARENT_ATTR]]
            assert parent in population
            if tournament == 6:
                best = max if direction == "maximize" else min
                assert parent.value == best(t.value for t in population)


def test_multi_objective_parent_is_non_dominated_in_the_tournament() -> None:
    def objective(trial: Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0.0, 1.0)
        y = trial.suggest_int("y", 0, 10)
        return x + y / 10, (1 - x) ** 2 + trial.suggest_categorical("z", [0.0, 0.5])

    sampler = EvolutionSampler(population_size=5, tournament_size=5, seed=5)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=60)
    trials = study.trials
    for child in _children(study):
        population = trials[child.number - 5 : child.number]
        parent = trials[child.user_attrs[PARENT_ATTR]]
        assert parent in population
        assert not any(
            all(a <= b for a, b in zip(t.values, parent.values, strict=True))
            and t.values != parent.values
            for t in population
        )
    assert _check_children(study, 1) == 55


def test_enqueued_trials_are_roots() -> None:
    study = optuna.create_study(
        sampler=EvolutionSampler(population_size=3, tournament_size=3, seed=6)
    )
    study.optimize(fixed_objective, n_trials=5)
    study.enqueue_trial({"a": 1, "g": "x"})
    study.optimize(fixed_objective, n_trials=1)
    assert PARENT_ATTR not in study.trials[-1].user_attrs
    assert study.trials[-1].params["a"] == 1


def test_a_changed_range_gets_valid_values() -> None:
    """A name reused with a narrower range cannot inherit a value outside it."""
    sampler = EvolutionSampler(population_size=3, tournament_size=3, seed=7)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: t.suggest_int("k", 50, 100) + t.suggest_float("x", 5, 9), n_trials=5)
    study.optimize(lambda t: t.suggest_int("k", 0, 3) + t.suggest_float("x", 0, 1), n_trials=5)
    for t in study.trials[5:]:
        assert t.params["k"] in range(4) and 0 <= t.params["x"] <= 1


def test_threads_share_one_sampler() -> None:
    study = optuna.create_study(sampler=EvolutionSampler(population_size=5, n_mutations=2))
    study.optimize(deep_objective, n_trials=40, n_jobs=2)
    assert len(study.trials) == 40
    _check_children(study, 2)


# -- seeds ---------------------------------------------------------------------------------


def _params(sampler: EvolutionSampler) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=sampler)
    study.optimize(deep_objective, n_trials=30)
    return [t.params for t in study.trials]


def test_seed_reproduces_and_reseed_rng_departs() -> None:
    first = _params(EvolutionSampler(population_size=5, seed=42))
    assert _params(EvolutionSampler(population_size=5, seed=42)) == first
    reseeded = EvolutionSampler(population_size=5, seed=42)
    reseeded.reseed_rng()
    assert _params(reseeded) != first


# -- storages and processes --------------------------------------------------------------


def test_journal_file_storage_and_reload(tmp_path: Path) -> None:
    path = str(tmp_path / "study.journal")
    sampler = EvolutionSampler(population_size=5, n_mutations=2, seed=8)
    study = optuna.create_study(
        study_name="evo", storage=JournalStorage(JournalFileBackend(path)), sampler=sampler
    )
    study.optimize(deep_objective, n_trials=40)
    reloaded = optuna.load_study(study_name="evo", storage=JournalStorage(JournalFileBackend(path)))
    assert _check_children(reloaded, 2) == 35
    best = reloaded.best_trial.number
    assert lineage(reloaded, best) == lineage(study, best)
    assert family_tree(reloaded) == family_tree(study)


WORKER = """
import sys

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from protolab.samplers import EvolutionSampler

{objective}

def objective(trial):
    trial.set_user_attr("worker", int(sys.argv[2]))
    return deep_objective(trial)

optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = JournalStorage(JournalFileBackend(sys.argv[1]))
sampler = EvolutionSampler(population_size=6, tournament_size=3, n_mutations=2)
study = optuna.load_study(study_name="evo", storage=storage, sampler=sampler)
study.optimize(objective, n_trials=int(sys.argv[3]))
"""


@pytest.mark.slow
def test_two_worker_processes_share_one_journal_study(tmp_path: Path) -> None:
    path = str(tmp_path / "study.journal")
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(objective=textwrap.dedent(DEEP_OBJECTIVE)))
    optuna.create_study(
        study_name="evo", direction="maximize", storage=JournalStorage(JournalFileBackend(path))
    )
    workers = [
        subprocess.Popen([sys.executable, str(script), path, str(i), "30"], stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err.decode()[-2000:]

    study = optuna.load_study(study_name="evo", storage=JournalStorage(JournalFileBackend(path)))
    trials = study.trials
    assert len(trials) == 60
    assert sorted(t.number for t in trials) == list(range(60))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert _check_children(study, 2) >= 60 - 6 - 1  # start-up may overshoot by a worker
    for t in trials:
        assert lineage(study, t.number)[-1] < 6 + 2  # every chain ends in a start-up trial


# -- search quality ------------------------------------------------------------------------


def _toy(seed: int) -> Callable[[Trial], float]:
    """3 categorical and 3 int choices with a hidden target; the optimum scores 6."""
    rng = np.random.RandomState(1000 + seed)
    cats = ["abc"[i] for i in rng.randint(3, size=3)]
    ints = [int(i) for i in rng.randint(5, size=3)]

    def objective(trial: Trial) -> float:
        score = sum(
            trial.suggest_categorical(f"c{i}", list("abc")) == c for i, c in enumerate(cats)
        )
        return score + sum(
            1 - abs(trial.suggest_int(f"n{i}", 0, 4) - n) / 4 for i, n in enumerate(ints)
        )

    return objective


def _trials_to_optimum(sampler: optuna.samplers.BaseSampler, seed: int, cap: int) -> int:
    objective = _toy(seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for i in range(cap):
        trial = study.ask()
        value = objective(trial)
        study.tell(trial, value)
        if value == 6:
            return i + 1
    return cap + 1  # not reached: counts as more than the cap


def test_evolution_reaches_the_optimum_in_fewer_trials_than_random() -> None:
    cap, seeds = 500, range(5)
    evolution = [_trials_to_optimum(EvolutionSampler(seed=s), s, cap) for s in seeds]
    random = [_trials_to_optimum(optuna.samplers.RandomSampler(seed=s), s, cap) for s in seeds]
    assert statistics.median(evolution) < statistics.median(random), (evolution, random)
    assert statistics.median(evolution) <= cap


# -- lineage helpers -----------------------------------------------------------------------


def test_mutation_diff_and_format_diff() -> None:
    parent = {"depth": 2, "width_0": 64, "width_1": 32, "act": "relu", "lr": 0.001}
    child = {"depth": 1, "width_0": 64, "act": "gelu", "lr": 0.002, "norm": True}
    assert mutation_diff(parent, child) == {
        "act": ("relu", "gelu"),
        "depth": (2, 1),
        "lr": (0.001, 0.002),
        "norm": (None, True),
        "width_1": (32, None),
    }
    assert format_diff(parent, child) == (
        "act: relu → gelu, depth: 2 → 1, lr: 0.001 → 0.002, +norm=True, -width_1 (was 32)"
    )
    assert mutation_diff(parent, parent) == {}
    assert format_diff(parent, parent) == "(no change)"


def _add(study: optuna.Study, value: float | None, parent: int | None, **params: Any) -> None:
    dists = {
        k: CategoricalDistribution(["relu", "gelu"])
        if isinstance(v, str)
        else FloatDistribution(1e-4, 1.0, log=True)
        if isinstance(v, float)
        else IntDistribution(1, 4)
        for k, v in params.items()
    }
    attrs = {} if parent is None else {PARENT_ATTR: parent, MUTATED_ATTR: []}
    state = TrialState.COMPLETE if value is not None else TrialState.PRUNED
    study.add_trial(
        create_trial(state=state, value=value, params=params, distributions=dists, user_attrs=attrs)
    )


def test_lineage_and_family_tree() -> None:
    study = optuna.create_study(direction="maximize")
    _add(study, 0.5, None, depth=1, act="relu", lr=0.01)  # 0: root
    _add(study, 0.4, None, depth=2, act="relu", lr=0.01)  # 1: another root
    _add(study, 0.6, 0, depth=2, act="relu", lr=0.01, width_1=3)  # 2 <- 0
    _add(study, None, 2, depth=2, act="gelu", lr=0.01, width_1=3)  # 3 <- 2, pruned
    _add(study, 0.75, 2, depth=2, act="gelu", lr=0.01, width_1=3)  # 4 <- 2
    _add(study, 0.875, 4, depth=1, act="gelu", lr=0.01)  # 5 <- 4: best

    assert lineage(study, 5) == [5, 4, 2, 0]
    assert lineage(study, 3) == [3, 2, 0]
    assert lineage(study, 1) == [1]
    with pytest.raises(ValueError, match="no trial number 9"):
        lineage(study, 9)

    assert family_tree(study) == textwrap.dedent(
        """\
        gen  trial  value  change
          0  #0     0.5    (root) act=relu, depth=1, lr=0.01
          1  #2     0.6    depth: 1 → 2, +width_1=3
          2  #4     0.75   act: relu → gelu
          3  #5     0.875  depth: 2 → 1, -width_1 (was 3)"""
    )
    assert family_tree(study, 3).splitlines()[-1] == "  2  #3     pruned  act: relu → gelu"
