"""Conformance tests of every searcher (one parametrized fixture), then rl- and evolution-specific ones.

The objective is the analytic stand-in (:mod:`nas.objective_analytic`) on the real MobileNetV3 space.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pytest
import torch
from optuna.samplers import BaseSampler
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from nas.objective_analytic import (
    DEFAULT_TARGET_MS,
    analytic_objective,
    best_reward,
    run_analytic_search,
)
from nas.rewards import RewardConfig, mnas_reward
from nas.searchers import (
    LATENCY_CONSTRAINT,
    MULTI_OBJECTIVE,
    SEARCHERS,
    SpaceSampler,
    distributions,
    latency_constraint,
    make_sampler,
    study_directions,
    tell_values,
    trial_reward,
)
from nas.searchers import tell as tell_study
from nas.searchers.evolution import RegularizedEvolutionSampler
from nas.searchers.rl import RLSampler
from search_spaces.spaces import get_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = get_space("mobilenetv3")
CFG = RewardConfig.soft(DEFAULT_TARGET_MS)
N = 30  # > evolution's population (20), > TPE's startup (10), > nsga2's population (20), ≥ 3 rl batches


@pytest.fixture(params=SEARCHERS)
def searcher(request) -> str:
    return request.param


def journal(tmp_path) -> JournalStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JournalFileBackend may warn that it is experimental
        return JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))


def tell(study, searcher, trial):
    """Evaluate with the stand-in objective and tell, as the search loop does."""
    result = analytic_objective(SPACE.decode(trial.params))
    tell_study(study, trial, searcher, accuracy=result.accuracy, latency_ms=result.latency_ms,
               reward=mnas_reward(result.accuracy, result.latency_ms, CFG), target_ms=CFG.target_ms)


def params_of(study):
    return [t.params for t in study.get_trials(deepcopy=False)]


# -- conformance: every searcher -------------------------------------------------------------

def test_is_an_optuna_sampler_with_directions(searcher):
    assert isinstance(make_sampler(searcher, SPACE, seed=0), BaseSampler)
    assert study_directions(searcher) == (["maximize", "minimize"] if searcher == "nsga2" else ["maximize"])


def test_proposals_decode_to_valid_specs(searcher):
    study = run_analytic_search(searcher, SPACE, n_trials=N, cfg=CFG, seed=0)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == N
    names = [d.name for d in SPACE.decisions()]
    for t in trials:
        assert list(t.params) == names
        SPACE.decode(t.params)  # raises SpecError if invalid
    assert 0 < best_reward(study, searcher, CFG) <= 1


def test_seeds_are_enqueued_first(searcher):
    study = run_analytic_search(searcher, SPACE, n_trials=3, cfg=CFG, seed=0)
    (seed_params,) = SPACE.seeds().values()
    assert study.trials[0].params == seed_params


def test_same_seed_same_proposals(searcher):
    first = params_of(run_analytic_search(searcher, SPACE, n_trials=N, cfg=CFG, seed=7))
    again = params_of(run_analytic_search(searcher, SPACE, n_trials=N, cfg=CFG, seed=7))
    other = params_of(run_analytic_search(searcher, SPACE, n_trials=N, cfg=CFG, seed=8))
    assert first == again
    assert first != other


def test_trials_in_flight_and_failures(searcher):
    """Four workers in flight, told out of order, every third evaluation failing."""
    study = optuna.create_study(directions=study_directions(searcher), sampler=make_sampler(searcher, SPACE, seed=1))
    for params in SPACE.seeds().values():
        study.enqueue_trial(params)
    dists = distributions(SPACE)
    for _ in range(10):
        batch = [study.ask(dists) for _ in range(4)]
        for trial in reversed(batch):
            SPACE.decode(trial.params)
            if trial.number % 3 == 2:
                study.tell(trial, state=TrialState.FAIL)
            else:
                tell(study, searcher, trial)
    states = [t.state for t in study.trials]
    assert len(states) == 40
    assert states.count(TrialState.FAIL) == 13
    assert states.count(TrialState.COMPLETE) == 27


def test_resume_with_a_new_sampler(searcher, tmp_path):
    """Stop after 21 trials, reopen the journal with a new sampler, run 12 more.

    rl and evolution rebuild their state from the study history, so the resumed run proposes what
    an uninterrupted run with the same seed proposes; the other searchers just continue.
    """
    storage = journal(tmp_path)
    run_analytic_search(searcher, SPACE, n_trials=21, cfg=CFG, seed=5, storage=storage, study_name="s")
    resumed = run_analytic_search(searcher, SPACE, n_trials=12, cfg=CFG, seed=5,
                                  storage=journal(tmp_path), study_name="s")
    assert len(resumed.trials) == 33
    assert all(t.state == TrialState.COMPLETE for t in resumed.trials)
    if searcher in ("rl", "evolution"):
        uninterrupted = run_analytic_search(searcher, SPACE, n_trials=33, cfg=CFG, seed=5)
        assert params_of(resumed) == params_of(uninterrupted)


def test_nsga2_records_the_latency_constraint():
    study = run_analytic_search("nsga2", SPACE, n_trials=5, cfg=CFG, seed=0)
    for t in study.trials:
        assert set(t.constraints) == {"latency"}
        assert t.constraints["latency"] == pytest.approx(t.values[1] - CFG.target_ms)
        assert trial_reward("nsga2", t.values, CFG) == pytest.approx(mnas_reward(*t.values, CFG))


def test_tell_rule_multi_objective_vs_single():
    assert MULTI_OBJECTIVE == {"nsga2"}
    for name in SEARCHERS:
        values = tell_values(name, accuracy=0.7, latency_ms=12.5, reward=0.66)
        if name in MULTI_OBJECTIVE:
            assert values == [0.7, 12.5]
            assert len(values) == len(study_directions(name)) == 2
        else:
            assert values == [0.66]
            assert len(values) == len(study_directions(name)) == 1
        # trial_reward inverts what was told: the reward, whatever the searcher.
        assert trial_reward(name, tell_values(name, 0.7, 12.5, mnas_reward(0.7, 12.5, CFG)), CFG) == \
            pytest.approx(mnas_reward(0.7, 12.5, CFG))
    with pytest.raises(ValueError, match="unknown searcher"):
        tell_values("bayes", 0.7, 12.5, 0.66)


def test_latency_constraint_is_feasible_at_or_under_the_target():
    assert latency_constraint(8.0, 10.0) == pytest.approx(-2.0)  # under: feasible (≤ 0)
    assert latency_constraint(10.0, 10.0) == 0.0  # at the target: feasible
    assert latency_constraint(12.5, 10.0) == pytest.approx(2.5)  # over: infeasible


@pytest.mark.parametrize("name", ["nsga2", "tpe"])
def test_tell_sets_the_constraint_only_for_multi_objective_searchers(name):
    study = optuna.create_study(directions=study_directions(name), sampler=make_sampler(name, SPACE, seed=0))
    for latency_ms in (8.0, 12.5):
        trial = study.ask(distributions(SPACE))
        tell_study(study, trial, name, accuracy=0.7, latency_ms=latency_ms, reward=0.66, target_ms=10.0)
    under, over = study.trials
    if name in MULTI_OBJECTIVE:
        assert under.values == [0.7, 8.0] and over.values == [0.7, 12.5]
        assert under.constraints == {LATENCY_CONSTRAINT: pytest.approx(-2.0)}
        assert over.constraints == {LATENCY_CONSTRAINT: pytest.approx(2.5)}
        assert [t.number for t in study.best_trials] == [under.number]  # the infeasible one is not on the front
    else:
        assert under.values == over.values == [0.66]
        assert not under.constraints and not over.constraints


def test_space_sampler_requires_propose():
    class NoPropose(SpaceSampler):
        pass

    with pytest.raises(TypeError, match="propose"):
        NoPropose(SPACE, seed=0)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown searcher"):
        make_sampler("bayes", SPACE)
    with pytest.raises(ValueError, match="unknown searcher"):
        study_directions("bayes")
    with pytest.raises(TypeError):
        make_sampler("evolution", SPACE, seed=0, no_such_option=1)


def test_distributions_follow_decision_order():
    dists = distributions(SPACE)
    assert list(dists) == [d.name for d in SPACE.decisions()]
    assert all(tuple(dists[d.name].choices) == d.choices for d in SPACE.decisions())


@pytest.mark.parametrize("name", ["rl", "evolution"])
def test_own_samplers_refuse_multi_objective_studies(name):
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(name, SPACE, seed=0))
    with pytest.raises(ValueError, match="nsga2"):
        study.ask(distributions(SPACE))


# -- rl ----------------------------------------------------------------------------------------

def completed_study(n: int, seed: int = 0, fail_every: int = 0, rewards=None):
    """A study of n random trials added in order (so completed in order), some failed."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="maximize")
    for i in range(n):
        params = SPACE.sample(rng)
        failed = fail_every and i % fail_every == fail_every - 1
        if rewards is not None:
            value = rewards[i]
        else:
            result = analytic_objective(SPACE.decode(params))
            value = mnas_reward(result.accuracy, result.latency_ms, CFG)
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions(SPACE), value=None if failed else value,
            state=TrialState.FAIL if failed else TrialState.COMPLETE,
        ))
    return study


def same_state(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        if key in ("policy",):
            if a[key].keys() != b[key].keys() or not all(torch.equal(a[key][k], b[key][k]) for k in a[key]):
                return False
        elif key == "optimizer":
            sa, sb = a[key]["state"], b[key]["state"]
            if sa.keys() != sb.keys():
                return False
            for k in sa:
                if not all(torch.equal(sa[k][f], sb[k][f]) for f in ("exp_avg", "exp_avg_sq", "step")):
                    return False
        elif a[key] != b[key]:
            return False
    return True


def test_rl_replay_restores_the_policy_exactly(tmp_path):
    """Policy, optimizer, baseline and partial batch after replay == those of the uninterrupted run."""
    storage = journal(tmp_path)
    sampler = RLSampler(SPACE, seed=3, batch_size=4)
    study = optuna.create_study(sampler=sampler, storage=storage, study_name="rl")
    for params in SPACE.seeds().values():
        study.enqueue_trial(params)
    dists = distributions(SPACE)
    for i in range(14):  # 14 trials, 2 failed → 12 episodes = 3 updates; then one more → partial batch
        trial = study.ask(dists)
        if i in (4, 9):
            study.tell(trial, state=TrialState.FAIL)
        else:
            tell(study, "rl", trial)
    tell(study, "rl", study.ask(dists))
    live = sampler.state_dict()
    assert (live["n_updates"], live["n_episodes"], len(live["buffer"])) == (3, 13, 1)

    fresh = RLSampler(SPACE, seed=3, batch_size=4)
    assert not same_state(fresh.state_dict(), live)
    reopened = optuna.load_study(study_name="rl", storage=journal(tmp_path), sampler=fresh)
    reopened.ask(dists)  # first use: replay
    assert same_state(fresh.state_dict(), live)


def test_rl_same_seed_same_trials_same_policy_and_failures_skipped():
    study = completed_study(20, fail_every=5)
    a, b, c = (RLSampler(SPACE, seed=s, batch_size=4) for s in (1, 1, 2))
    for sampler in (a, b, c):
        sampler.after_trial(study, study.trials[0], TrialState.COMPLETE, study.trials[0].values)  # first use
    assert a.n_episodes == 16 and a.n_updates == 4
    assert same_state(a.state_dict(), b.state_dict())
    assert not same_state(a.state_dict(), c.state_dict())


def test_rl_learns_from_enqueued_trials():
    sampler = RLSampler(SPACE, seed=0, batch_size=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng(0)
    for _ in range(2):
        study.enqueue_trial(SPACE.sample(rng))
    before = {k: v.clone() for k, v in sampler.policy.state_dict().items()}
    for i in range(2):
        study.tell(study.ask(distributions(SPACE)), [0.5 + 0.1 * i])
    assert sampler.n_updates == 1
    assert any(not torch.equal(before[k], v) for k, v in sampler.policy.state_dict().items())


def test_rl_initial_policy_is_uniform_and_learning_moves_it():
    sampler = RLSampler(SPACE, seed=0, batch_size=4, learning_rate=0.05)
    tokens = torch.zeros(1, len(SPACE.decisions()), dtype=torch.long)
    log_prob, entropy = sampler.policy(tokens)
    sizes = torch.tensor([len(d.choices) for d in SPACE.decisions()], dtype=torch.float32)
    assert torch.allclose(log_prob[0], -torch.log(sizes))
    assert torch.allclose(entropy[0], torch.log(sizes))
    # reward the all-first-choice architecture, punish random ones: its probability must rise
    study = optuna.create_study(direction="maximize", sampler=sampler)
    first = {d.name: d.choices[0] for d in SPACE.decisions()}
    rng = np.random.default_rng(0)
    for i in range(16):
        study.enqueue_trial(first if i % 2 == 0 else SPACE.sample(rng))
        study.tell(study.ask(distributions(SPACE)), [0.9 if i % 2 == 0 else 0.5])
    assert sampler.policy(tokens)[0].sum() > log_prob.sum() + 1.0


# -- evolution ---------------------------------------------------------------------------------

def test_evolution_is_random_until_the_population_is_full():
    study = completed_study(20, fail_every=20)  # 19 completed, 1 failed
    sampler = RegularizedEvolutionSampler(SPACE, seed=0, population_size=20)
    study.sampler = sampler
    trial = study.ask(distributions(SPACE))
    rng = sampler.trial_rng(trial.number)
    expected = {d.name: d.choices[int(rng.integers(len(d.choices)))] for d in SPACE.decisions()}
    assert trial.params == expected


def indices(params):
    return [d.choices.index(params[d.name]) for d in SPACE.decisions()]


def test_evolution_mutates_one_decision_of_the_youngest_populations_best():
    # trial 0 is the best ever but has aged out of a population of the 10 most recent (1..10);
    # with S == P the tournament winner is always the population's best, trial 7.
    rewards = [0.99] + [0.5 + 0.01 * i for i in range(1, 11)]
    rewards[7] = 0.9
    study = completed_study(11, rewards=rewards)
    sampler = RegularizedEvolutionSampler(SPACE, seed=0, population_size=10, sample_size=10)
    study.sampler = sampler
    parent = indices(study.trials[7].params)
    parent_spec = SPACE.decode(study.trials[7].params)
    for _ in range(25):
        trial = study.ask(distributions(SPACE))
        study.tell(trial, state=TrialState.FAIL)  # keep the population fixed
        assert sum(c != p for c, p in zip(indices(trial.params), parent)) == 1
        assert SPACE.decode(trial.params) != parent_spec  # silent mutations are redrawn


def test_evolution_rejects_bad_sizes():
    with pytest.raises(ValueError, match="population_size"):
        RegularizedEvolutionSampler(SPACE, population_size=1)
    with pytest.raises(ValueError, match="sample_size"):
        RegularizedEvolutionSampler(SPACE, population_size=5, sample_size=6)


# -- quality -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_learning_searchers_beat_random_search():
    """On the mobilenetv3 space, rl, evolution and tpe beat random on median best reward (3 seeds, 150 trials)."""
    def median_best(name):
        return float(np.median([best_reward(run_analytic_search(name, SPACE, n_trials=150, cfg=CFG, seed=s,
                                                                enqueue_seeds=False), name, CFG)
                                for s in range(3)]))

    random_best = median_best("random")
    for name in ("rl", "evolution", "tpe"):
        assert median_best(name) > random_best, name
    assert math.isfinite(random_best)
