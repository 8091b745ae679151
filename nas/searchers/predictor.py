"""Predictor-guided search: a surrogate model screens many candidates, the best few are evaluated.

The idea of BANANAS (White, Neiswanger and Savani, AAAI 2021, https://arxiv.org/abs/1910.11858) and
of FBNetV3's predictor-based search (Dai et al., CVPR 2021, https://arxiv.org/abs/2006.02049): an
evaluation costs minutes of proxy training, a prediction microseconds, so a model fitted on the
trials evaluated so far decides which of many candidate architectures is worth the next evaluation.

Each proposal (:meth:`PredictorSampler.propose`):

1. while fewer than ``n_initial`` trials have completed: a uniform random architecture;
2. otherwise a *pool* of ``candidates`` architectures: mutations (one or two decisions changed) of the
   ``parents`` best completed trials — BANANAS' mutation-based acquisition search — and a share of
   uniform random ones; architectures the study already has are dropped;
3. every candidate is encoded as the one-hot vector of its decisions plus free cost features of its
   decoded spec: log MAdds and log parameters (:func:`search_spaces.count`) and the log of the
   analytic latency (:func:`latency.model.analytic_latency_ms`, no device);
4. the candidate with the highest **predicted reward** is proposed.

The predicted reward is the MnasNet reward (:func:`nas.rewards.mnas_reward`) of a predicted accuracy
and a predicted latency when the sampler knows the reward (``reward``, which ``nas search`` passes)
and the completed trials carry ``accuracy`` and ``latency_ms`` user attributes (the search loop and
:func:`nas.objective_analytic.run_analytic_search` record them):

* accuracy: a gradient-boosted tree ensemble (``model="gbr"``, scikit-learn's
  ``GradientBoostingRegressor``) or a random forest (``model="rf"``) on the whole encoding;
* latency: the trials' recorded latencies (the search's own latency model: this device's table, a
  measurement, or the analytic model) regressed in log space on the three log cost features (ridge).
  The sampler never measures anything: a latency table would measure missing entries and a measured
  search whole networks, far too slow and noisy for hundreds of candidates per proposal, while the
  analytic latency is free and ranks networks much as a device does; the fitted map turns it into
  this device's milliseconds, so the target, α and β apply as they do to evaluated trials.

Without the reward or the attributes the model is fitted on the reward itself.

Resume: the model used for a proposal is fitted on the first ``m`` completed trials (completion
order), ``m`` the last point of a fixed refit schedule (every completion at first, then every
``refit_growth`` × m completions) at or below the number completed, with a fixed ``random_state``; the
pool comes from the trial's generator. So, like ``rl`` and ``evolution``, a resumed search rebuilds
the same models from the study history and proposes what the uninterrupted one would have.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from optuna.study import Study
from optuna.trial import FrozenTrial

from latency.model import analytic_latency_ms
from nas.rewards import RewardConfig, mnas_reward
from nas.searchers import SpaceSampler
from search_spaces import count
from search_spaces.spaces import FactorizedSpace

MODELS = ("gbr", "rf")
"""Accuracy surrogates: gradient-boosted trees, random forest."""

COST_FEATURES = 3
"""Trailing features of the encoding: log MAdds, log params, log analytic latency (ms)."""


class PredictorSampler(SpaceSampler):
    """Surrogate-screened proposals over the decisions of a factorized space (see the module doc).

    Args:
        space: the search space.
        seed: seed of the pools and the models; ``None`` draws one from the OS.
        reward: the search's MnasNet reward (target, α, β); with it the acquisition is the reward of
            predicted accuracy and latency, without it a model of the reward itself.
        n_initial: completed trials before the first model (uniform random proposals until then;
            ``nas search`` sizes it to the budget, :data:`nas.searchers.BUDGET_RULE`).
        candidates: architectures screened per proposal.
        parents: the best completed trials whose mutations make the pool.
        random_share: share of the pool drawn uniformly instead (keeps the model honest far from the
            best trials).
        max_mutations: a pool member changes 1 to this many decisions of its parent. One keeps most of
            the pool in the neighbourhoods of the best trials, whose encodings are memoized; on the
            stand-in objective (300 trials, 3 seeds) two changes gave the same best reward at 1.6× the
            time, and 200 candidates +0.0005 at 1.4× the time.
        model: accuracy surrogate, one of :data:`MODELS`.
        trees: trees of the surrogate ensemble.
        max_features: share of the features each split considers (scikit-learn's ``max_features``).
        refit_growth: refit once the completed trials have grown by this fraction since the last fit
            (at least one trial; 0: every completion).
        avoid_duplicates: see :class:`~nas.searchers.SpaceSampler` (the pool already leaves out
            architectures the study has).
    """

    def __init__(self, space: FactorizedSpace, seed: int | None = None, *, reward: RewardConfig | None = None,
                 n_initial: int = 20, candidates: int = 100, parents: int = 10, random_share: float = 0.1,
                 max_mutations: int = 1, model: str = "gbr", trees: int = 100, max_features: float = 0.5,
                 refit_growth: float = 0.1, avoid_duplicates: bool = True):
        super().__init__(space, seed, avoid_duplicates=avoid_duplicates)
        if reward is not None and not isinstance(reward, RewardConfig):
            raise ValueError(f"reward must be a RewardConfig, got {type(reward).__name__}")
        for name, value, low in (("n_initial", n_initial, 2), ("candidates", candidates, 1), ("parents", parents, 1),
                                 ("max_mutations", max_mutations, 1), ("trees", trees, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
        if not 0 <= random_share <= 1:
            raise ValueError(f"random_share must be in [0, 1], got {random_share!r}")
        if model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
        if not (math.isfinite(refit_growth) and refit_growth >= 0):
            raise ValueError(f"refit_growth must be ≥ 0, got {refit_growth!r}")
        if not 0 < max_features <= 1:
            raise ValueError(f"max_features must be in (0, 1], got {max_features!r}")
        self.reward = reward
        self.n_initial = int(n_initial)
        self.candidates = int(candidates)
        self.parents = int(parents)
        self.random_share = float(random_share)
        self.model = model
        self.refit_growth = float(refit_growth)
        self.trees = int(trees)
        self.max_mutations = int(max_mutations)
        self.max_features = float(max_features)
        sizes = [len(d.choices) for d in self.decisions]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._width = int(sum(sizes)) + COST_FEATURES
        self._features: dict[tuple[int, ...], np.ndarray | None] = {}
        self._fitted: tuple[str, int, Any] | None = None  # (study name, m, surrogate)
        self.n_fits = 0

    # -- proposals ----------------------------------------------------------------------------
    def propose(self, study: Study, trial: FrozenTrial, rng: np.random.Generator) -> list[int]:
        history = self.history(study)
        if len(history) < self.n_initial:
            return self.random_indices(rng)
        surrogate = self.surrogate(study, history)
        taken = self.taken_keys(study, exclude=trial.number)
        pool, seen = [], set()
        for indices in self.pool(history, rng):
            if self.features(indices) is None:
                continue
            key = self.arch_key(indices)
            if key in taken or key in seen:
                continue
            seen.add(key)
            pool.append(indices)
        if not pool:
            return self.random_indices(rng)
        predicted = surrogate.predict_reward(np.stack([self.features(i) for i in pool]))
        return pool[int(np.argmax(predicted))]

    def random_indices(self, rng: np.random.Generator) -> list[int]:
        return [int(rng.integers(len(d.choices))) for d in self.decisions]

    def pool(self, history: Sequence[tuple[FrozenTrial, list[int], float]],
             rng: np.random.Generator) -> list[list[int]]:
        """``candidates`` architectures: mutations of the best ``parents`` trials and uniform random ones."""
        best = sorted(history, key=lambda h: (-h[2], h[0].number))[: self.parents]
        n_random = int(round(self.candidates * self.random_share))
        mutable = [i for i, d in enumerate(self.decisions) if len(d.choices) > 1]
        out = []
        for _ in range(self.candidates - n_random):
            child = list(best[int(rng.integers(len(best)))][1])
            changes = min(len(mutable), 1 + int(rng.integers(self.max_mutations)))
            for i in rng.choice(mutable, size=changes, replace=False):
                n = len(self.decisions[i].choices)
                child[i] = (child[i] + 1 + int(rng.integers(n - 1))) % n
            out.append(child)
        out.extend(self.random_indices(rng) for _ in range(n_random))
        return out

    # -- encoding -----------------------------------------------------------------------------
    def features(self, indices: Sequence[int]) -> np.ndarray | None:
        """One-hot decisions + log MAdds, log params, log analytic latency (None if not decodable); memoized."""
        key = tuple(int(i) for i in indices)
        if key not in self._features:
            try:
                spec = self.space.decode({d.name: d.choices[i] for d, i in zip(self.decisions, key)})
            except ValueError:
                self._features[key] = None
                return None
            self.remember_key(key, spec.arch_id)
            x = np.zeros(self._width)
            x[self._offsets + np.asarray(key)] = 1.0
            cost = count(spec)
            x[-3:] = (math.log(max(cost.madds, 1)), math.log(max(cost.params, 1)),
                      math.log(max(analytic_latency_ms(spec), 1e-9)))
            self._features[key] = x
        return self._features[key]

    # -- the model ----------------------------------------------------------------------------
    def fit_size(self, completed: int) -> int:
        """``m``: how many of ``completed`` trials the model is fitted on (the refit schedule's point)."""
        m = self.n_initial
        while True:
            step = max(1, int(m * self.refit_growth))
            if m + step > completed:
                return min(m, completed)
            m += step

    def surrogate(self, study: Study, history: Sequence[tuple[FrozenTrial, list[int], float]]) -> "Surrogate":
        m = self.fit_size(len(history))
        if self._fitted is None or self._fitted[:2] != (study.study_name, m):
            self._fitted = (study.study_name, m, self._fit(history[:m]))
            self.n_fits += 1
        return self._fitted[2]

    def _fit(self, rows: Sequence[tuple[FrozenTrial, list[int], float]]) -> "Surrogate":
        x = np.stack([self.features(indices) for _, indices, _ in rows])
        acc = [t.user_attrs.get("accuracy") for t, _, _ in rows]
        lat = [t.user_attrs.get("latency_ms") for t, _, _ in rows]
        factorized = self.reward is not None and all(_positive(a) for a in acc) and all(_positive(v) for v in lat)
        seed = self.seed % 2**32
        if factorized:
            return Surrogate(self._regressor(x, np.asarray(acc, float), seed), _latency_fit(x, np.asarray(lat, float)),
                             self.reward)
        return Surrogate(self._regressor(x, np.array([score for _, _, score in rows]), seed), None, None)

    def _regressor(self, x: np.ndarray, y: np.ndarray, seed: int):
        from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

        if self.model == "rf":
            model = RandomForestRegressor(n_estimators=self.trees, min_samples_leaf=2, max_features=self.max_features,
                                          random_state=seed, n_jobs=1)
        else:
            model = GradientBoostingRegressor(n_estimators=self.trees, max_depth=3, learning_rate=0.1,
                                              max_features=self.max_features, random_state=seed)
        return model.fit(x, y)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _latency_fit(x: np.ndarray, latency_ms: np.ndarray):
    """Ridge regression of log latency on the log cost features (see the module doc)."""
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1e-3).fit(x[:, -COST_FEATURES:], np.log(latency_ms))


class Surrogate:
    """Predicted reward of encoded architectures: MnasNet's reward of predicted accuracy and latency, or a
    model of the reward itself (``latency`` and ``reward`` None)."""

    def __init__(self, accuracy, latency, reward: RewardConfig | None):
        self.accuracy, self.latency, self.reward = accuracy, latency, reward

    def predict_reward(self, x: np.ndarray) -> np.ndarray:
        value = self.accuracy.predict(x)
        if self.latency is None:
            return value
        acc = np.clip(value, 0.0, 1.0)
        lat = np.exp(self.latency.predict(x[:, -COST_FEATURES:]))
        return np.array([mnas_reward(a, max(v, 1e-9), self.reward) for a, v in zip(acc, lat)])


__all__ = ["COST_FEATURES", "MODELS", "PredictorSampler", "Surrogate"]
