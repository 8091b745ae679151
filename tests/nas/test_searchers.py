"""Conformance tests of every searcher (one parametrized fixture), the budget rule and duplicate avoidance,
then rl-, evolution- and predictor-specific ones.

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
    BUDGET_RULE,
    LATENCY_CONSTRAINT,
    MULTI_OBJECTIVE,
    SEARCHERS,
    BudgetWarning,
    SpaceSampler,
    budget_defaults,
    distributions,
    latency_constraint,
    make_sampler,
    parse_options,
    proposal_stats,
    sampler_options,
    study_directions,
    tell_values,
    trial_reward,
)
from nas.searchers import tell as tell_study
from nas.searchers.evolution import RegularizedEvolutionSampler
from nas.searchers.predictor import PredictorSampler
from nas.searchers.rl import RLSampler
from search_spaces.spaces import get_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = get_space("mobilenetv3")
CFG = RewardConfig.soft(DEFAULT_TARGET_MS)
N = 30  # the budget rule gives every searcher a start-up of 6 (rl: batch 2), so most of N is learned from
OWN = ("rl", "evolution", "predictor")  # SpaceSampler subclasses: state rebuilt from the study, no duplicates


def quick(searcher: str) -> dict:
    """Options that keep the suite quick: a smaller predictor pool and ensemble (the benchmark,
    experiments/bench_searchers.py, runs the defaults)."""
    return {"candidates": 25, "trees": 30} if searcher == "predictor" else {}


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
    study = run_analytic_search(searcher, SPACE, sampler_options=quick(searcher), n_trials=N, cfg=CFG, seed=0)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == N
    names = [d.name for d in SPACE.decisions()]
    for t in trials:
        assert list(t.params) == names
        SPACE.decode(t.params)  # raises SpecError if invalid
    assert 0 < best_reward(study, searcher, CFG) <= 1


def test_seeds_are_enqueued_first(searcher):
    study = run_analytic_search(searcher, SPACE, sampler_options=quick(searcher), n_trials=3, cfg=CFG, seed=0)
    (seed_params,) = SPACE.seeds().values()
    assert study.trials[0].params == seed_params


def test_same_seed_same_proposals(searcher):
    def run(seed):
        return params_of(run_analytic_search(searcher, SPACE, sampler_options=quick(searcher), n_trials=N, cfg=CFG,
                                             seed=seed))

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first != other


def test_trials_in_flight_and_failures(searcher):
    """Four workers in flight, told out of order, every third evaluation failing."""
    study = optuna.create_study(directions=study_directions(searcher),
                                sampler=make_sampler(searcher, SPACE, seed=1, **quick(searcher)))
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
    """Stop after 21 trials, reopen the journal with a new sampler, run 12 more (the budget, 33, as for
    ``nas search --resume``: the budget rule sizes both samplers alike).

    rl, evolution and predictor rebuild their state from the study history, so the resumed run proposes
    what an uninterrupted run with the same seed proposes; the other searchers just continue.
    """
    storage = journal(tmp_path)
    run_analytic_search(searcher, SPACE, sampler_options=quick(searcher), n_trials=21, cfg=CFG, seed=5, storage=storage,
                        study_name="s", budget=33)
    resumed = run_analytic_search(searcher, SPACE, sampler_options=quick(searcher), n_trials=12, cfg=CFG, seed=5,
                                  storage=journal(tmp_path), study_name="s", budget=33)
    assert len(resumed.trials) == 33
    assert all(t.state == TrialState.COMPLETE for t in resumed.trials)
    if searcher in OWN:
        uninterrupted = run_analytic_search(searcher, SPACE, sampler_options=quick(searcher), n_trials=33, cfg=CFG,
                                            seed=5)
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
    with pytest.raises(ValueError, match=r"unknown option of searcher evolution: 'no_such_option'.*population_size"):
        make_sampler("evolution", SPACE, seed=0, no_such_option=1)


def test_distributions_follow_decision_order():
    dists = distributions(SPACE)
    assert list(dists) == [d.name for d in SPACE.decisions()]
    assert all(tuple(dists[d.name].choices) == d.choices for d in SPACE.decisions())


@pytest.mark.parametrize("name", OWN)
def test_own_searchers_propose_no_architecture_twice(name):
    """Every proposal of rl, evolution and predictor is an architecture the study did not have (here with
    trials in flight, so running trials count too)."""
    study = run_analytic_search(name, SPACE, sampler_options=quick(name), n_trials=60, cfg=CFG, seed=3, in_flight=3)
    stats = proposal_stats(study, SPACE)
    assert stats["proposals"] == 59 and stats["distinct"] == 59 and stats["distinct_share"] == 1.0  # + 1 seed
    assert len({t.user_attrs["arch_id"] for t in study.trials}) == len(study.trials)


# -- the budget rule, options, duplicates ------------------------------------------------------

def test_budget_rule_sizes_the_start_up_to_the_budget():
    # 16 trials, 2 workers (the README's main job): a start-up of 4, never most of the budget
    assert budget_defaults("evolution", 16, 2) == {"population_size": 4, "sample_size": 2}
    assert budget_defaults("nsga2", 16, 2) == {"population_size": 4}
    assert budget_defaults("tpe", 16, 2) == {"n_startup_trials": 4}
    assert budget_defaults("predictor", 16, 2) == {"n_initial": 4}
    assert budget_defaults("rl", 16, 2) == {"batch_size": 2}
    assert budget_defaults("random", 16, 2) == {}
    # large budgets: the full-scale settings (caps)
    assert budget_defaults("evolution", 300) == {"population_size": 20, "sample_size": 5}
    assert budget_defaults("tpe", 300) == {"n_startup_trials": 10}
    assert budget_defaults("rl", 300) == {"batch_size": 8}
    assert budget_defaults("rl", 100) == {"batch_size": 5}
    # more workers than the cap: one round of them (they all start before anything completes)
    assert budget_defaults("nsga2", 1000, 32) == {"population_size": 32}
    for name in SEARCHERS:
        for trials in (1, 3, 10, 16, 100, 300, 1000):
            for workers in (1, 2, 8):
                options = budget_defaults(name, trials, workers)
                assert all(v <= max(2, workers, math.ceil(trials / 5)) for v in options.values()), (name, trials)
                if name == "evolution":
                    assert 1 <= options["sample_size"] <= options["population_size"]
    assert "ceil(trials/5)" in BUDGET_RULE


def test_make_sampler_applies_the_rule_and_explicit_options_win():
    sampler = make_sampler("evolution", SPACE, seed=0, trials=16, workers=2)
    assert (sampler.population_size, sampler.sample_size) == (4, 2)
    sampler = make_sampler("evolution", SPACE, seed=0, trials=300, population_size=8)
    assert (sampler.population_size, sampler.sample_size) == (8, 2)  # S follows the given P
    assert make_sampler("rl", SPACE, seed=0, trials=16, workers=2).batch_size == 2
    assert make_sampler("predictor", SPACE, seed=0, trials=16, workers=2).n_initial == 4
    assert make_sampler("tpe", SPACE, seed=0, trials=16, workers=2)._n_startup_trials == 4
    assert make_sampler("nsga2", SPACE, seed=0, trials=16, workers=2)._population_size == 4
    assert make_sampler("evolution", SPACE, seed=0).population_size == 20  # no budget: the constructor's default


def test_a_start_up_larger_than_the_budget_is_warned_with_the_rule():
    with pytest.warns(BudgetWarning, match=r"population_size=20 .* 16-trial budget .*budget rule: .*population_size=4"):
        make_sampler("evolution", SPACE, seed=0, trials=16, workers=2, population_size=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)
        make_sampler("evolution", SPACE, seed=0, trials=16, workers=2, population_size=8)  # half: no warning


@pytest.mark.parametrize("name", SEARCHERS)
def test_unknown_options_are_one_line_errors_naming_the_known_ones(name):
    with pytest.raises(ValueError) as info:
        make_sampler(name, SPACE, seed=0, trials=16, populaton_size=4)
    message = str(info.value)
    assert "\n" not in message and "populaton_size" in message
    assert all(option in message for option in sampler_options(name))


def test_parse_options():
    assert parse_options(["population_size=8", "model=rf", "random_share=0.2", "avoid_duplicates=false"]) == \
        {"population_size": 8, "model": "rf", "random_share": 0.2, "avoid_duplicates": False}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["population_size"])


class Stuck(SpaceSampler):
    """Always proposes the first choice of every decision."""

    def propose(self, study, trial, rng):
        return [0] * len(self.decisions)


def test_a_known_architecture_is_drawn_again():
    sampler = Stuck(SPACE, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    first, second = (study.ask(distributions(SPACE)) for _ in range(2))
    assert first.params == {d.name: d.choices[0] for d in SPACE.decisions()}
    assert SPACE.decode(second.params).arch_id != SPACE.decode(first.params).arch_id  # random after the redraws
    assert sampler.redrawn == 1
    stuck = Stuck(SPACE, seed=0, avoid_duplicates=False)
    study = optuna.create_study(direction="maximize", sampler=stuck)
    assert study.ask(distributions(SPACE)).params == study.ask(distributions(SPACE)).params


def test_proposal_stats_leaves_out_enqueued_trials_and_counts_repeats():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    (seed_params,) = SPACE.seeds().values()
    study.enqueue_trial(seed_params)
    for _ in range(3):
        study.tell(study.ask(distributions(SPACE)), 0.5)
    study.sampler = Stuck(SPACE, seed=0, avoid_duplicates=False)
    for _ in range(2):
        study.tell(study.ask(distributions(SPACE)), 0.5)
    stats = proposal_stats(study, SPACE)
    assert stats == {"proposals": 4, "distinct": 3, "distinct_share": 0.75}


@pytest.mark.parametrize("name", OWN)
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


def test_rl_learns_once_from_an_architecture():
    """A repeat of an evaluated architecture (its result reused by the loop) is not a new episode."""
    sampler = RLSampler(SPACE, seed=0, batch_size=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng(0)
    params = SPACE.sample(rng)
    for value in (0.5, 0.5):
        study.enqueue_trial(params)
        study.tell(study.ask(distributions(SPACE)), value)
    assert sampler.n_episodes == 1 and sampler.n_updates == 0
    study.enqueue_trial(SPACE.sample(rng))
    study.tell(study.ask(distributions(SPACE)), 0.7)
    assert sampler.n_episodes == 2 and sampler.n_updates == 1


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


# -- predictor ---------------------------------------------------------------------------------

def test_predictor_is_random_until_n_initial_trials_completed():
    study = completed_study(5)
    sampler = PredictorSampler(SPACE, seed=0, n_initial=6, reward=CFG)
    study.sampler = sampler
    trial = study.ask(distributions(SPACE))
    rng = sampler.trial_rng(trial.number)
    assert trial.params == {d.name: d.choices[int(rng.integers(len(d.choices)))] for d in SPACE.decisions()}
    assert sampler.n_fits == 0


def analytic_study(n: int, seed: int = 0):
    """n random architectures scored by the stand-in, recorded as the search loop records them."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="maximize")
    for _ in range(n):
        params = SPACE.sample(rng)
        r = analytic_objective(SPACE.decode(params))
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions(SPACE), value=mnas_reward(r.accuracy, r.latency_ms, CFG),
            user_attrs={"accuracy": r.accuracy, "latency_ms": r.latency_ms}))
    return study


def test_predictor_proposes_the_best_predicted_candidate_of_its_pool():
    study = analytic_study(40)
    sampler = PredictorSampler(SPACE, seed=1, n_initial=10, reward=CFG)
    study.sampler = sampler
    trial = study.ask(distributions(SPACE))
    history = sampler.history(study)
    surrogate = sampler.surrogate(study, history)
    assert surrogate.latency is not None  # accuracy and latency predicted, the reward computed with CFG
    rng = sampler.trial_rng(trial.number)
    pool = sampler.pool(history, rng)
    taken = sampler.taken_keys(study, exclude=trial.number)
    pool = [p for p in pool if sampler.arch_key(p) not in taken]
    scores = surrogate.predict_reward(np.stack([sampler.features(p) for p in pool]))
    proposed = [d.choices.index(trial.params[d.name]) for d in SPACE.decisions()]
    assert scores.max() == pytest.approx(surrogate.predict_reward(sampler.features(proposed)[None])[0])
    # the latency map is the stand-in's own (analytic) latency here: nearly exact on unseen architectures
    rng = np.random.default_rng(99)
    for _ in range(5):
        params = SPACE.sample(rng)
        x = sampler.features([d.choices.index(params[d.name]) for d in SPACE.decisions()])
        predicted = math.exp(surrogate.latency.predict(x[None, -3:])[0])
        assert predicted == pytest.approx(analytic_objective(SPACE.decode(params)).latency_ms, rel=0.01)


def test_predictor_falls_back_to_a_model_of_the_reward():
    study = completed_study(12)  # values only: no accuracy or latency attributes
    sampler = PredictorSampler(SPACE, seed=0, n_initial=10, reward=CFG)
    study.sampler = sampler
    study.ask(distributions(SPACE))
    assert sampler.n_fits == 1 and sampler.surrogate(study, sampler.history(study)).latency is None
    no_reward = PredictorSampler(SPACE, seed=0, n_initial=10)
    assert no_reward.surrogate(analytic_study(12), no_reward.history(analytic_study(12))).latency is None


def test_predictor_refits_on_a_schedule():
    sampler = PredictorSampler(SPACE, seed=0, n_initial=10, refit_growth=0.1)
    sizes = [sampler.fit_size(n) for n in range(10, 60)]
    assert sizes[0] == 10 and sizes == sorted(sizes) and all(m <= n for m, n in zip(sizes, range(10, 60)))
    assert len(set(sizes)) < len(sizes)  # not every completion once the trials are many
    assert PredictorSampler(SPACE, seed=0, n_initial=10, refit_growth=0).fit_size(37) == 37


def test_predictor_rejects_bad_options():
    with pytest.raises(ValueError, match="n_initial"):
        PredictorSampler(SPACE, n_initial=1)
    with pytest.raises(ValueError, match="model"):
        PredictorSampler(SPACE, model="mlp")
    with pytest.raises(ValueError, match="random_share"):
        PredictorSampler(SPACE, random_share=1.5)


# -- quality -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_learning_searchers_beat_random_search():
    """On the mobilenetv3 space, rl, evolution, predictor and tpe beat random on median best reward (3 seeds,
    150 trials; experiments/bench_searchers.py does it with statistics)."""
    def median_best(name):
        return float(np.median([best_reward(run_analytic_search(name, SPACE, n_trials=150, cfg=CFG, seed=s,
                                                                enqueue_seeds=False), name, CFG)
                                for s in range(3)]))

    random_best = median_best("random")
    for name in ("rl", "evolution", "predictor", "tpe"):
        assert median_best(name) > random_best, name
    assert math.isfinite(random_best)
