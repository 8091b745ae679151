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

Our own samplers (``rl``, ``evolution``) derive from :class:`SpaceSampler`, which binds a sampler to
one search space and reads the study only through its public API (``study.get_trials``,
``study.directions``, ``study.study_name``, ``FrozenTrial`` fields). Their per-trial randomness is a
:class:`numpy.random.Generator` seeded from ``(seed, trial.number)``, so a proposal is a pure function
of the seed, the trial number and the learned state; with that state rebuilt from the study history,
a resumed search proposes exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import abc
import math
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

SEARCHERS = ("rl", "evolution", "tpe", "nsga2", "random")
"""Registered searcher names, in the order reports list them."""

MULTI_OBJECTIVE = frozenset({"nsga2"})
"""Searchers told ``[accuracy, latency_ms]`` instead of ``[reward]``."""


def _check_name(name: str) -> None:
    if name not in SEARCHERS:
        raise ValueError(f"unknown searcher {name!r}; known: {', '.join(SEARCHERS)}")


def study_directions(name: str) -> list[str]:
    """Directions for ``optuna.create_study``: reward ↑, or (accuracy ↑, latency_ms ↓) for nsga2."""
    _check_name(name)
    return ["maximize", "minimize"] if name in MULTI_OBJECTIVE else ["maximize"]


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


def make_sampler(name: str, space: FactorizedSpace, seed: int | None = None, **options: Any) -> BaseSampler:
    """A fresh sampler for searcher ``name`` on ``space``.

    Args:
        name: one of :data:`SEARCHERS`.
        space: the search space (only ``rl`` and ``evolution`` use it directly; Optuna's samplers see
            it through the distributions passed to ``study.ask``).
        seed: seed of all randomness; ``None`` draws one from the OS.
        options: keyword arguments of the sampler's constructor; they override our defaults
            (``rl``: :class:`~nas.searchers.rl.RLSampler`; ``evolution``:
            :class:`~nas.searchers.evolution.RegularizedEvolutionSampler`; ``tpe``, ``nsga2``,
            ``random``: the Optuna sampler's own arguments).

    Raises:
        ValueError: unknown name. TypeError: an option the sampler does not take.
    """
    _check_name(name)
    if name == "rl":
        from nas.searchers.rl import RLSampler  # torch is imported only when asked for

        return RLSampler(space, seed=seed, **options)
    if name == "evolution":
        from nas.searchers.evolution import RegularizedEvolutionSampler

        return RegularizedEvolutionSampler(space, seed=seed, **options)
    if name == "tpe":
        # Multivariate TPE models the joint distribution of the decisions (they interact through
        # channel counts); the constant liar keeps parallel workers from proposing the same point.
        return optuna.samplers.TPESampler(**{"multivariate": True, "constant_liar": True, "seed": seed, **options})
    if name == "nsga2":
        # Optuna's default population (50) is too large for the few hundred trials a proxy-trained
        # search affords; 20 gives a dozen generations in 250 trials.
        return optuna.samplers.NSGAIISampler(**{"population_size": 20, "seed": seed, **options})
    return optuna.samplers.RandomSampler(**{"seed": seed, **options})


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

    Args:
        space: the search space whose decisions are sampled.
        seed: seed of all randomness; ``None`` draws one from the OS.
    """

    def __init__(self, space: FactorizedSpace, seed: int | None = None):
        self._space = space
        self._decisions = tuple(space.decisions())
        self._distributions = distributions(space)
        self._seed = fresh_seed() if seed is None else int(seed)
        self._sample_seed = self._seed
        self._fallback = optuna.samplers.RandomSampler(seed=self._seed)

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
        indices = self.propose(study, trial, self.trial_rng(trial.number))
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
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LATENCY_CONSTRAINT", "MULTI_OBJECTIVE", "SEARCHERS", "RLSampler", "RegularizedEvolutionSampler",
    "SpaceSampler", "completed_in_order", "distributions", "fresh_seed", "latency_constraint",
    "make_sampler", "study_directions", "tell", "tell_values", "trial_reward",
]
