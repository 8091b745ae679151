"""Searchers: Optuna samplers that propose architectures of a :class:`~search_spaces.spaces.FactorizedSpace`.

Every searcher is an :class:`optuna.samplers.BaseSampler`, so the search loop is plain Optuna
ask/tell and every searcher runs with several trials in flight, failed trials, enqueued seeds and a
:class:`~optuna.storages.JournalStorage` study that a later process reopens:

=============  ===============================================================================
name           sampler
=============  ===============================================================================
``rl``         :class:`nas.searchers.rl.RLSampler`: MnasNet's recurrent controller trained with
               PPO on the reward (Tan et al., CVPR 2019, https://arxiv.org/abs/1807.11626)
``evolution``  :class:`nas.searchers.evolution.RegularizedEvolutionSampler`: aging evolution
               (Real et al., AAAI 2019, https://arxiv.org/abs/1802.01548)
``predictor``  :class:`nas.searchers.predictor.PredictorSampler`: a surrogate of accuracy and latency
               fitted on the completed trials screens many mutations of the best architectures and
               sends the best predicted one to evaluation (BANANAS, White et al., AAAI 2021,
               https://arxiv.org/abs/1910.11858; FBNetV3, Dai et al., https://arxiv.org/abs/2006.02049)
``tpe``        Optuna's multivariate :class:`~optuna.samplers.TPESampler` (constant liar on)
``nsga2``      Optuna's :class:`~optuna.samplers.NSGAIISampler` on (accuracy ↑, latency_ms ↓),
               latency target as the constraint ``latency_ms − target_ms ≤ 0``
``random``     Optuna's :class:`~optuna.samplers.RandomSampler`
=============  ===============================================================================

What a study is told is one rule keyed on :data:`MULTI_OBJECTIVE` (:func:`tell`, used by every search
loop): all but ``nsga2`` maximize one value, the MnasNet reward (:func:`nas.rewards.mnas_reward`);
``nsga2`` is told ``[accuracy, latency_ms]`` after ``trial.set_constraint("latency", latency_ms −
target_ms)`` (Optuna ≥ 5.0; a trial is feasible when every constraint is ≤ 0, and NSGA-II reads
``FrozenTrial.constraints``). :func:`study_directions` and :func:`trial_reward` follow the same rule.

Our own samplers (``rl``, ``evolution``, ``predictor``) derive from :class:`SpaceSampler`, which binds a
sampler to one search space and reads the study only through its public API (``study.get_trials``,
``study.directions``, ``study.study_name``, ``FrozenTrial`` fields). Their per-trial randomness is a
:class:`numpy.random.Generator` seeded from ``(seed, trial.number)``, so a proposal is a pure function
of the seed, the trial number and the learned state; with that state rebuilt from the study history,
a resumed search proposes exactly what the uninterrupted one would have. They never propose an
architecture that an earlier trial of the study already has (compared as decoded specs, so two
decision vectors that build the same network are one architecture): a duplicate is drawn again
(:data:`DUPLICATE_REDRAWS` times, then uniformly at random), so no trial of the budget re-evaluates a
known network. :func:`proposal_stats` counts the distinct proposals of any study.

**Budget rule** (:func:`budget_defaults`, applied by :func:`make_sampler` when it is given the budget):
whatever learns from completed trials needs some first, and those first trials are random samples.
With ``N`` trials and ``k`` evaluations in flight, each searcher's start-up is
``clamp(⌈N / 5⌉, max(2, k), cap)`` trials — at most a fifth of the budget, at least one round of the
workers — with the cap its full-scale setting: evolution's population P (cap 20; tournament
S = max(2, ⌈P / 4⌉), Real et al.'s ratio), NSGA-II's generation (cap 20), TPE's random start-up (cap 10), the
predictor's random start (cap 20); the RL controller's update interval (batch) is
``clamp(⌈N / 20⌉, max(2, k), 8)``: about every twentieth of the budget, every 2 to 8 completions. Options
given explicitly win; a start-up that takes more than half the budget is warned about
(:class:`BudgetWarning`), and an option a searcher does not take is a one-line :class:`ValueError`.
"""

from __future__ import annotations

import abc
import inspect
import json
import math
import warnings
from datetime import datetime
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from nas.rewards import RewardConfig, mnas_reward
from search_spaces.spaces import FactorizedSpace
from search_spaces.suggest import unknown_name

SEARCHERS = ("rl", "evolution", "predictor", "tpe", "nsga2", "random")
"""Registered searcher names, in the order reports list them."""

MULTI_OBJECTIVE = frozenset({"nsga2"})
"""Searchers told ``[accuracy, latency_ms]`` instead of ``[reward]``."""


def _check_name(name: str) -> None:
    if name not in SEARCHERS:
        raise ValueError(unknown_name("searcher", name, SEARCHERS))


def study_directions(name: str) -> list[str]:
    """Directions for ``optuna.create_study``: reward ↑, or (accuracy ↑, latency_ms ↓) for nsga2."""
    _check_name(name)
    return ["maximize", "minimize"] if name in MULTI_OBJECTIVE else ["maximize"]


def metric_names(name: str) -> list[str]:
    """The names of the values a study of searcher ``name`` is told, in :func:`study_directions`' order:
    ``["reward"]``, or ``["accuracy", "latency_ms"]`` for :data:`MULTI_OBJECTIVE` (set on the study, so
    that Optuna's tools, ``optuna-dashboard`` among them, show the objectives by name)."""
    _check_name(name)
    return ["accuracy", "latency_ms"] if name in MULTI_OBJECTIVE else ["reward"]


def distributions(space: FactorizedSpace) -> dict[str, CategoricalDistribution]:
    """One categorical distribution per decision of ``space``, in the space's decision order."""
    return {d.name: CategoricalDistribution(list(d.choices)) for d in space.decisions()}


def trial_reward(name: str, values: Sequence[float], cfg: RewardConfig) -> float:
    """The MnasNet reward of a completed trial's ``values`` for searcher ``name``.

    For single-objective searchers the value *is* the reward; for nsga2 it is computed from
    ``(accuracy, latency_ms)`` so that all searchers can be compared on one scale.
    """
    _check_name(name)
    if name in MULTI_OBJECTIVE:
        accuracy, latency_ms = values
        return mnas_reward(accuracy, latency_ms, cfg)
    return float(values[0])


LATENCY_CONSTRAINT = "latency"
"""Key of the latency constraint set on the trials of a multi-objective study."""


def tell_values(name: str, accuracy: float, latency_ms: float, reward: float) -> list[float]:
    """The values a completed trial's study is told: ``[accuracy, latency_ms]`` for the searchers of
    :data:`MULTI_OBJECTIVE` (the order of :func:`study_directions`), ``[reward]`` for the others."""
    _check_name(name)
    return [float(accuracy), float(latency_ms)] if name in MULTI_OBJECTIVE else [float(reward)]


def latency_constraint(latency_ms: float, target_ms: float) -> float:
    """The latency constraint's value: ``latency_ms − target_ms``, feasible (Optuna: ≤ 0) at or under the target."""
    return float(latency_ms) - float(target_ms)


def tell(study: Study, trial: optuna.trial.Trial, name: str, *, accuracy: float, latency_ms: float,
         reward: float, target_ms: float) -> None:
    """Tell ``study`` that ``trial`` completed, as searcher ``name`` needs it.

    For the searchers of :data:`MULTI_OBJECTIVE` the trial first gets the constraint
    :data:`LATENCY_CONSTRAINT` = :func:`latency_constraint` (``trial.set_constraint``, read by NSGA-II),
    then the study is told :func:`tell_values`. Failed trials are told by the caller
    (``study.tell(trial, state=TrialState.FAIL)``).
    """
    values = tell_values(name, accuracy, latency_ms, reward)
    if name in MULTI_OBJECTIVE:
        trial.set_constraint(LATENCY_CONSTRAINT, latency_constraint(latency_ms, target_ms))
    study.tell(trial, values)


class BudgetWarning(UserWarning):
    """A searcher option that leaves little of the budget after the searcher's random start-up."""


BUDGET_RULE = ("start-up = clamp(ceil(trials/5), max(2, workers), cap): evolution population (cap 20; "
               "tournament max(2, ceil(P/4))), nsga2 generation (cap 20), tpe random start-up (cap 10), "
               "predictor random start (cap 20); rl updates every clamp(ceil(trials/20), max(2, workers), 8) trials")
"""The budget rule of :func:`budget_defaults` in one line (``nas search --help`` shows it)."""

STARTUP_OPTION = {"rl": "batch_size", "evolution": "population_size", "predictor": "n_initial",
                  "tpe": "n_startup_trials", "nsga2": "population_size"}
"""The option of each searcher that the budget rule sizes (random's proposals are all random)."""

_STARTUP_CAP = {"evolution": 20, "predictor": 20, "tpe": 10, "nsga2": 20}


def budget_defaults(name: str, trials: int, workers: int = 1) -> dict[str, Any]:
    """The options :data:`BUDGET_RULE` gives searcher ``name`` for ``trials`` trials, ``workers`` in flight.

    ``clamp(x, lo, cap)`` is ``max(lo, min(cap, x))``: with more workers than the cap, one round of the
    workers wins (they would all be random anyway, since nothing has completed when they are asked).
    """
    _check_name(name)
    n, k = max(1, int(trials)), max(1, int(workers or 1))
    lo = max(2, k)
    if name == "rl":
        return {"batch_size": max(lo, min(8, math.ceil(n / 20)))}
    if name == "random":
        return {}
    startup = max(lo, min(_STARTUP_CAP[name], math.ceil(n / 5)))
    if name == "evolution":
        return {"population_size": startup, "sample_size": max(2, math.ceil(startup / 4))}
    return {STARTUP_OPTION[name]: startup}


def sampler_options(name: str) -> tuple[str, ...]:
    """The options searcher ``name`` takes (keyword arguments of its sampler's constructor, less ``seed``)."""
    _check_name(name)
    cls = _sampler_class(name)
    skip = {"self", "space", "seed", "reward", "args", "kwargs"}
    return tuple(p for p in inspect.signature(cls.__init__).parameters if p not in skip)


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``["population_size=8", "model=rf"]`` → ``{"population_size": 8, "model": "rf"}``: each value is read as
    JSON when it is JSON (numbers, ``true``/``false``, ``null``), else kept as a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"searcher option {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out[key.strip()] = value
    return out


def check_options(name: str, options: Mapping[str, Any], trials: int | None = None, workers: int = 1) -> None:
    """Refuse an option searcher ``name`` does not take (a one-line :class:`ValueError` naming the known
    ones); warn (:class:`BudgetWarning`, naming :data:`BUDGET_RULE`) when the start-up option leaves less
    than half of ``trials`` to the searcher."""
    known = sampler_options(name)
    for key in options:
        if key not in known:
            raise ValueError(unknown_name(f"option of searcher {name}:", key, known))
    option = STARTUP_OPTION.get(name)
    if trials is None or option not in options:
        return
    value = options[option]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > trials / 2:
        rule = budget_defaults(name, trials, workers)[option]
        warnings.warn(f"searcher {name}: {option}={value} spends more than half of the {trials}-trial budget "
                      f"before it learns anything (budget rule: {BUDGET_RULE}; here {option}={rule})",
                      BudgetWarning, stacklevel=3)


def _sampler_class(name: str) -> type:
    if name == "rl":
        from nas.searchers.rl import RLSampler  # torch is imported only when asked for

        return RLSampler
    if name == "evolution":
        from nas.searchers.evolution import RegularizedEvolutionSampler

        return RegularizedEvolutionSampler
    if name == "predictor":
        from nas.searchers.predictor import PredictorSampler  # scikit-learn likewise

        return PredictorSampler
    return {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
            "random": optuna.samplers.RandomSampler}[name]


def make_sampler(name: str, space: FactorizedSpace, seed: int | None = None, *, trials: int | None = None,
                 workers: int = 1, reward: RewardConfig | None = None, **options: Any) -> BaseSampler:
    """A fresh sampler for searcher ``name`` on ``space``.

    Args:
        name: one of :data:`SEARCHERS`.
        space: the search space (``rl``, ``evolution`` and ``predictor`` use it directly; Optuna's
            samplers see it through the distributions passed to ``study.ask``).
        seed: seed of all randomness; ``None`` draws one from the OS.
        trials: the budget; given, :func:`budget_defaults` sizes the start-up options (the module's
            budget rule) and :func:`check_options` warns about a start-up that eats the budget.
        workers: evaluations in flight (the budget rule's lower bound).
        reward: the MnasNet reward; the ``predictor`` ranks its candidates by the reward predicted with
            it (the others ignore it).
        options: keyword arguments of the sampler's constructor; they override the budget rule and our
            defaults (``rl``: :class:`~nas.searchers.rl.RLSampler`; ``evolution``:
            :class:`~nas.searchers.evolution.RegularizedEvolutionSampler`; ``predictor``:
            :class:`~nas.searchers.predictor.PredictorSampler`; ``tpe``, ``nsga2``, ``random``: the
            Optuna sampler's own arguments).

    Raises:
        ValueError: unknown name, or an option the sampler does not take (one line, naming the known ones).
    """
    _check_name(name)
    check_options(name, options, trials, workers)
    if trials is not None:
        rule = budget_defaults(name, trials, workers)
        if name == "evolution" and "population_size" in options and "sample_size" not in options:
            rule["sample_size"] = max(1, min(int(options["population_size"]), rule["sample_size"],
                                             math.ceil(int(options["population_size"]) / 4)))
        options = {**rule, **options}
    cls = _sampler_class(name)
    if name == "predictor":
        return cls(space, seed=seed, reward=reward, **options)
    if name in ("rl", "evolution"):
        return cls(space, seed=seed, **options)
    if name == "tpe":
        # Multivariate TPE models the joint distribution of the decisions (they interact through
        # channel counts); the constant liar keeps parallel workers from proposing the same point.
        return cls(**{"multivariate": True, "constant_liar": True, "seed": seed, **options})
    if name == "nsga2":
        # Optuna's default population (50) is too large for the few hundred trials a proxy-trained
        # search affords; 20 gives a dozen generations in 250 trials.
        return cls(**{"population_size": 20, "seed": seed, **options})
    return cls(**{"seed": seed, **options})


DUPLICATE_REDRAWS = 20
"""How often :class:`SpaceSampler` asks :meth:`~SpaceSampler.propose` again for a proposal the study already has."""
RANDOM_REDRAWS = 100
"""Then how many uniform random draws it tries before it gives up (only a nearly exhausted space gets there)."""


def proposal_stats(study: Study, space: FactorizedSpace) -> dict[str, Any]:
    """How many of the study's proposals were new architectures.

    A *proposal* is a trial whose point was chosen by the searcher (not enqueued: seeds, re-runs of
    interrupted trials and user-fixed points are left out); it is *distinct* when no earlier trial (by
    number, enqueued ones included) has the same architecture (decoded spec's ``arch_id``). Returns
    ``{"proposals", "distinct", "distinct_share"}`` (the share is None without proposals).
    """
    names = [d.name for d in space.decisions()]
    seen: set[str] = set()
    proposals = distinct = 0
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if any(n not in t.params for n in names):
            continue
        arch_id = t.user_attrs.get("arch_id")
        if arch_id is None:
            try:
                arch_id = space.decode({n: t.params[n] for n in names}).arch_id
            except ValueError:
                continue
        if "fixed_params" not in t.system_attrs:
            proposals += 1
            distinct += arch_id not in seen
        seen.add(arch_id)
    return {"proposals": proposals, "distinct": distinct,
            "distinct_share": distinct / proposals if proposals else None}


def fresh_seed() -> int:
    """A 32-bit seed from the OS's entropy (used when a sampler is given ``seed=None``)."""
    return int(np.random.SeedSequence().generate_state(1)[0])


def completed_in_order(study: Study) -> list[FrozenTrial]:
    """The study's COMPLETE trials in completion order (``datetime_complete``, then ``number``)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: (t.datetime_complete or datetime.max, t.number))


class SpaceSampler(BaseSampler):
    """Base of our samplers: one search space, whole-architecture (relative) proposals.

    A subclass implements the abstract :meth:`propose`, which returns one choice index per decision.
    This class turns that into Optuna's relative sampling, validates the study (one objective), reads
    rewards with the study's direction, recovers decision indices from any trial's params (enqueued
    ones included), and provides the per-trial generator.

    Unless ``avoid_duplicates`` is off, a proposal whose architecture an earlier trial of the study already
    has (any state; compared by the decoded spec's ``arch_id``) is replaced by another :meth:`propose`
    with the same generator, up to :data:`DUPLICATE_REDRAWS` times, then by uniform random draws.

    Args:
        space: the search space whose decisions are sampled.
        seed: seed of all randomness; ``None`` draws one from the OS.
        avoid_duplicates: never propose an architecture the study already has (see above).
    """

    def __init__(self, space: FactorizedSpace, seed: int | None = None, *, avoid_duplicates: bool = True):
        self._space = space
        self._decisions = tuple(space.decisions())
        self._distributions = distributions(space)
        self._seed = fresh_seed() if seed is None else int(seed)
        self._sample_seed = self._seed
        self._fallback = optuna.samplers.RandomSampler(seed=self._seed)
        self.avoid_duplicates = bool(avoid_duplicates)
        self._keys: dict[tuple[int, ...], str | None] = {}  # decision indices → arch_id (None: not decodable)
        self._trial_keys: dict[tuple[str, int], str | None] = {}  # (study, trial number) → arch_id
        self.redrawn = 0  # proposals of this process that were a known architecture and drawn again

    # -- what subclasses implement ----------------------------------------------------------
    @abc.abstractmethod
    def propose(self, study: Study, trial: FrozenTrial, rng: np.random.Generator) -> list[int]:
        """One choice index per decision (in ``space.decisions()`` order) for ``trial``.

        Args:
            study: the study (read through its public API only).
            trial: the running trial being sampled.
            rng: :meth:`trial_rng` of ``trial.number``, the only randomness a proposal may use.
        """

    # -- BaseSampler ------------------------------------------------------------------------
    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        self._check_study(study)
        return dict(self._distributions)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        rng = self.trial_rng(trial.number)
        indices = self.propose(study, trial, rng)
        if self.avoid_duplicates:
            indices = self._distinct(study, trial, rng, indices)
        params = {d.name: d.choices[i] for d, i in zip(self._decisions, indices)}
        return {name: value for name, value in params.items() if name in search_space}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        # Only parameters outside the space get here (the loop asks for the space's distributions,
        # which are all relative); sample them uniformly.
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        """Draw a new sampling seed (Optuna calls this on copies of a sampler used in threads)."""
        self._sample_seed = fresh_seed()
        self._fallback.reseed_rng()

    # -- helpers for subclasses -------------------------------------------------------------
    @property
    def space(self) -> FactorizedSpace:
        return self._space

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def decisions(self) -> tuple:
        """The space's decisions, in the order :meth:`propose` returns indices for."""
        return self._decisions

    def trial_rng(self, trial_number: int) -> np.random.Generator:
        """The generator of one trial: a function of the sampling seed and the trial number only."""
        return np.random.default_rng([self._sample_seed, int(trial_number)])

    def indices_of(self, params: Mapping[str, Any]) -> list[int] | None:
        """Choice index per decision for a trial's params, or None if they are not a point of the space."""
        out = []
        for d in self._decisions:
            if d.name not in params:
                return None
            value = params[d.name]
            if isinstance(value, bool) or value not in d.choices:
                return None
            out.append(d.choices.index(value))
        return out

    def arch_key(self, indices: Sequence[int]) -> str | None:
        """The ``arch_id`` of the architecture ``indices`` decode to (None if they decode to no valid spec);
        memoized, so that two decision vectors building the same network are recognized as one."""
        key = tuple(int(i) for i in indices)
        if key not in self._keys:
            try:
                spec = self._space.decode({d.name: d.choices[i] for d, i in zip(self._decisions, key)})
                self._keys[key] = spec.arch_id
            except ValueError:  # SpecError is a ValueError
                self._keys[key] = None
        return self._keys[key]

    def remember_key(self, indices: Sequence[int], arch_id: str | None) -> None:
        """Memoize the ``arch_key`` of ``indices`` (a subclass that decoded them anyway saves a decode)."""
        self._keys[tuple(int(i) for i in indices)] = arch_id

    def taken_keys(self, study: Study, exclude: int | None = None) -> set[str]:
        """The architectures (``arch_key``) of every trial of ``study`` with a whole point of the space,
        whatever its state, but trial ``exclude``."""
        out = set()
        for t in study.get_trials(deepcopy=False):
            if t.number == exclude:
                continue
            memo = (study.study_name, t.number)
            if memo not in self._trial_keys:
                indices = self.indices_of(t.params)
                if indices is None:
                    continue  # not (yet) a whole point: not memoized, looked at again next time
                self._trial_keys[memo] = self.arch_key(indices)
            key = self._trial_keys[memo]
            if key is not None:
                out.add(key)
        return out

    def _distinct(self, study: Study, trial: FrozenTrial, rng: np.random.Generator, indices: list[int]) -> list[int]:
        taken = self.taken_keys(study, exclude=trial.number)
        for attempt in range(DUPLICATE_REDRAWS + RANDOM_REDRAWS):
            key = self.arch_key(indices)
            if key is not None and key not in taken:
                return indices
            if attempt == 0:
                self.redrawn += 1
            if attempt < DUPLICATE_REDRAWS:
                indices = self.propose(study, trial, rng)
            else:
                indices = [int(rng.integers(len(d.choices))) for d in self._decisions]
        return indices  # a (nearly) exhausted space: the loop reuses the earlier result

    def score(self, study: Study, values: Sequence[float] | None) -> float | None:
        """The value to maximize (the reward, sign-flipped for a minimize study); None if unusable."""
        if values is None or len(values) != 1:
            return None
        value = float(values[0])
        if not math.isfinite(value):
            return None
        return -value if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else value

    def history(self, study: Study) -> list[tuple[FrozenTrial, list[int], float]]:
        """Usable completed trials in completion order, as (trial, indices, score)."""
        out = []
        for t in completed_in_order(study):
            indices = self.indices_of(t.params)
            value = self.score(study, t.values)
            if indices is not None and value is not None:
                out.append((t, indices, value))
        return out

    def _check_study(self, study: Study) -> None:
        if len(study.directions) != 1:
            raise ValueError(
                f"{type(self).__name__} optimizes one value (the reward); this study has "
                f"{len(study.directions)} objectives (use the 'nsga2' searcher for accuracy and latency)"
            )


def __getattr__(name: str):
    # Lazy re-exports, so that importing nas.searchers does not import torch.
    if name == "RLSampler":
        from nas.searchers.rl import RLSampler

        return RLSampler
    if name == "RegularizedEvolutionSampler":
        from nas.searchers.evolution import RegularizedEvolutionSampler

        return RegularizedEvolutionSampler
    if name == "PredictorSampler":
        from nas.searchers.predictor import PredictorSampler

        return PredictorSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUDGET_RULE", "DUPLICATE_REDRAWS", "LATENCY_CONSTRAINT", "MULTI_OBJECTIVE", "PredictorSampler", "RANDOM_REDRAWS",
    "SEARCHERS", "STARTUP_OPTION", "BudgetWarning", "RLSampler", "RegularizedEvolutionSampler", "SpaceSampler",
    "budget_defaults", "check_options", "completed_in_order", "distributions", "fresh_seed", "latency_constraint",
    "make_sampler", "parse_options", "proposal_stats", "sampler_options", "study_directions", "tell", "tell_values",
    "trial_reward",
]
