"""Regularized (aging) evolution as an Optuna sampler.

Real, Aggarwal, Huang and Le, "Regularized Evolution for Image Classifier Architecture Search",
AAAI 2019, https://arxiv.org/abs/1802.01548 (Algorithm 1). The population is a queue of the P most
recently evaluated models; each new model is a one-decision mutation of the best of S models drawn at
random from it, and the oldest model leaves when a new one arrives ("aging": a good model survives
only by having good descendants, which regularizes against lucky evaluations).

Mapped onto ask/tell with workers in flight:

* the population is the P most recently *completed* trials (completion order: ``datetime_complete``,
  then number); failed trials never enter it; enqueued seeds enter it like any other trial;
* while fewer than P trials have completed, proposals are uniform random (the paper's random
  initial population), so k workers in flight at the start simply draw k random models;
* the tournament draws S distinct members, the parent is the one with the highest reward (ties: the
  earliest drawn), and the child changes exactly one decision to a different value.

All state is the study history, so a sampler made for a reopened study continues exactly; the only
randomness is the per-trial generator of :class:`~nas.searchers.SpaceSampler` (seeded from the seed
and the trial number), so the proposal for a trial number is reproducible.
"""

from __future__ import annotations

import numpy as np
from optuna.study import Study
from optuna.trial import FrozenTrial

from nas.searchers import SpaceSampler, completed_in_order
from search_spaces.spaces import FactorizedSpace
from search_spaces.spec import SpecError

SILENT_MUTATION_TRIES = 20
"""Bound on redraws of a mutation that decodes to the parent's architecture."""


class RegularizedEvolutionSampler(SpaceSampler):
    """Aging evolution over the decisions of a factorized space.

    Args:
        space: the search space.
        seed: seed of all randomness; ``None`` draws one from the OS.
        population_size: P, how many of the most recently completed trials form the population
            (the paper uses 100 for 20 000 models; 20 suits a few hundred trials; ``nas search`` sizes it
            to the budget, see :data:`nas.searchers.BUDGET_RULE`).
        sample_size: S, tournament size (1 ≤ S ≤ P; larger is greedier; the paper's P = 100, S = 25).
        skip_silent_mutations: redraw (at most :data:`SILENT_MUTATION_TRIES` times) a mutation that
            decodes to the same architecture as its parent, e.g. editing the kernel of a block that
            the layer decision removed, or the skip of a block where no residual fits. Such a child
            would only re-evaluate its parent; the paper's space has no such redundancy.
        avoid_duplicates: draw again a child that an earlier trial already evaluated (tournament and
            mutation again; see :class:`~nas.searchers.SpaceSampler`).
    """

    def __init__(self, space: FactorizedSpace, seed: int | None = None, *, population_size: int = 20,
                 sample_size: int = 5, skip_silent_mutations: bool = True, avoid_duplicates: bool = True):
        super().__init__(space, seed, avoid_duplicates=avoid_duplicates)
        if int(population_size) != population_size or population_size < 2:
            raise ValueError(f"population_size must be an integer ≥ 2, got {population_size!r}")
        if int(sample_size) != sample_size or not 1 <= sample_size <= population_size:
            raise ValueError(f"sample_size must be an integer in [1, population_size={population_size}], "
                             f"got {sample_size!r}")
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.skip_silent_mutations = bool(skip_silent_mutations)

    def propose(self, study: Study, trial: FrozenTrial, rng: np.random.Generator) -> list[int]:
        population = self.population(study)
        if len(population) < self.population_size:
            return [int(rng.integers(len(d.choices))) for d in self.decisions]
        drawn = rng.choice(len(population), size=self.sample_size, replace=False)
        parent = max((population[int(i)] for i in drawn), key=lambda member: member[2])[1]
        return self.mutate(parent, rng)

    def population(self, study: Study) -> list[tuple[FrozenTrial, list[int], float]]:
        """The (at most P) most recently completed usable trials, oldest first, as (trial, indices, reward)."""
        members = []
        for t in reversed(completed_in_order(study)):
            indices = self.indices_of(t.params)
            value = self.score(study, t.values)
            if indices is not None and value is not None:
                members.append((t, indices, value))
                if len(members) == self.population_size:
                    break
        return members[::-1]

    def mutate(self, parent: list[int], rng: np.random.Generator) -> list[int]:
        """``parent`` with exactly one decision changed to a different value (see the class doc)."""
        mutable = [i for i, d in enumerate(self.decisions) if len(d.choices) > 1]
        parent_spec = self._decode(parent) if self.skip_silent_mutations else None
        child = list(parent)
        for _ in range(SILENT_MUTATION_TRIES):
            child = list(parent)
            i = mutable[int(rng.integers(len(mutable)))]
            offset = 1 + int(rng.integers(len(self.decisions[i].choices) - 1))
            child[i] = (parent[i] + offset) % len(self.decisions[i].choices)
            if parent_spec is None:
                break
            child_spec = self._decode(child)
            if child_spec is not None and child_spec != parent_spec:
                break
        return child

    def _decode(self, indices: list[int]):
        try:
            return self.space.decode({d.name: d.choices[i] for d, i in zip(self.decisions, indices)})
        except SpecError:
            return None


__all__ = ["RegularizedEvolutionSampler", "SILENT_MUTATION_TRIES"]
