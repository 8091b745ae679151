"""MnasNet's reinforcement-learning controller as an Optuna sampler.

Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile", CVPR 2019, §4.2
(https://arxiv.org/abs/1807.11626): a recurrent controller emits an architecture as a sequence of
tokens, one per decision of the factorized space, and is trained with Proximal Policy Optimization
(Schulman et al. 2017, https://arxiv.org/abs/1707.06347) to maximize the expected reward
``E[ACC · (LAT / T)^w]`` in a sample–evaluate–update loop.

The controller (:class:`Controller`) is an LSTM (one layer, 64 units by default). Its input at step 0
is a learned start vector and at step t the embedding of the token chosen at step t − 1 (each
(decision, choice) pair has its own embedding); a softmax head per decision, sized to that
decision's choices, reads the LSTM output. The heads start at zero, so the first proposals are
uniform random.

Training (:meth:`RLSampler._update`):

* episodes are completed trials in completion order; every ``batch_size`` of them form a batch;
* advantage = reward − baseline, the baseline an exponential moving average of past rewards (decay
  0.95; initialized with the first batch's mean); divided by the moving root-mean-square of past
  advantages, so the entropy bonus and learning rate mean the same whatever the reward's scale;
* π_old is the policy at the start of the update; every decision is an action with the episode's
  advantage (the reward arrives at the end, no discount), and the loss is PPO's clipped surrogate
  (ratio clip 0.2) summed over decisions, minus an entropy bonus, for a few epochs of full-batch Adam.

Trials the policy did not propose (enqueued seeds, parameters fixed by the user) are ordinary
episodes: their tokens are recovered from ``trial.params`` and their π_old log-probabilities come
from the snapshot, like all others. Failed trials are skipped.

**Exploration.** A controller trained on its own samples concentrates on what it has found, and then
proposes it again: on an external benchmark only 47 % of an earlier version's proposals were new. Two
rules keep every evaluation informative. A sample that decodes to an architecture the study already
has (any trial, in flight included) is drawn again from the policy (:class:`~nas.searchers.SpaceSampler`;
the sampler counts these in ``redrawn``), so no trial re-evaluates a known network; and an
architecture is learned from once (``_observe``), so a repeat whose result the search loop reused
adds no episode. The entropy bonus is constant (no decay: at these budgets a decaying one only
hastens the collapse).

**Settings, against the papers.** MnasNet (§4.2) names PPO and the reward but publishes no
controller hyper-parameters; it sampled about 8K models per search. The NASNet controller it builds
on (Zoph et al., CVPR 2018, https://arxiv.org/abs/1707.07012, appendix A) reports a learning rate of
3.5e-4, an entropy weight of 1e-5 and an exponential-moving-average baseline (decay 0.95), over
about 20,000 models. Settings for tens of thousands of episodes learn next to nothing in the 10–1,000
episodes this project affords, so only the baseline is theirs; the rest is sized to the budget:
the update interval (``batch_size``) by :data:`nas.searchers.BUDGET_RULE` (every 2–8 completions,
about every twentieth of the budget), a learning rate of 2e-3 and an entropy weight of 0.03 (per
decision, in units of normalized advantage) chosen on the analytic stand-in objective (see the
arguments), advantages normalized by their running RMS so that these mean the same at any reward
scale. ``experiments/bench_searchers.py`` measures the result against random search.

**Resume.** A new sampler knows nothing. The first time it sees a study (``sample_relative`` or
``after_trial``) it replays the study's completed trials, in completion order, through the same
update procedure, so that the policy, the optimizer state, the baseline and the partial batch equal
those of the process that was stopped. Proposals use a generator seeded from ``(seed, trial
number)`` (see :class:`~nas.searchers.SpaceSampler`), so the resumed search proposes what the
uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from optuna.distributions import BaseDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from nas.searchers import SpaceSampler, completed_in_order
from search_spaces.spaces import FactorizedSpace


@contextlib.contextmanager
def _one_thread():
    """Run the controller on one intra-op thread, then restore the setting.

    The policy is tiny (a 64-unit LSTM over a few dozen steps, batches of 8), so more threads only
    add synchronization, and on a machine whose cores are busy evaluating candidates, spinning
    OpenMP threads can slow the sampler down many times over. The
    setting is process-wide, so torch work in other threads of this process briefly runs on one
    thread too; results do not depend on it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Controller(nn.Module):
    """The recurrent policy: one categorical distribution per decision, conditioned on earlier tokens.

    Args:
        sizes: number of choices of each decision, in emission order.
        hidden_size: LSTM units.
        embedding_size: size of the token embeddings (and of the start vector).
        generator: generator of the initial weights (so that a seed fixes the policy).
    """

    def __init__(self, sizes: Sequence[int], hidden_size: int = 64, embedding_size: int = 64,
                 generator: torch.Generator | None = None):
        super().__init__()
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every decision needs at least one choice, got sizes {list(sizes)}")
        self.sizes = tuple(int(n) for n in sizes)
        offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.long), persistent=False)
        self.start = nn.Parameter(torch.empty(embedding_size))
        self.embed = nn.Embedding(sum(self.sizes), embedding_size)
        self.lstm = nn.LSTM(embedding_size, hidden_size, batch_first=True)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in self.sizes)
        self._init(generator)

    def _init(self, generator: torch.Generator | None) -> None:
        bound = 1.0 / math.sqrt(self.lstm.hidden_size)  # torch's default LSTM range, but seeded
        with torch.no_grad():
            nn.init.normal_(self.start, generator=generator)
            nn.init.normal_(self.embed.weight, generator=generator)
            for p in self.lstm.parameters():
                nn.init.uniform_(p, -bound, bound, generator=generator)
            for head in self.heads:  # zero heads: the initial policy is uniform
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of every decision of a batch of token sequences.

        Args:
            tokens: [batch, decisions] choice indices.

        Returns:
            (log_prob, entropy), both [batch, decisions].
        """
        batch = tokens.shape[0]
        inputs = self.start.expand(batch, 1, -1)
        if tokens.shape[1] > 1:
            previous = self.embed(tokens[:, :-1] + self.offsets[:-1])
            inputs = torch.cat([inputs, previous], dim=1)
        hidden, _ = self.lstm(inputs)
        log_probs, entropies = [], []
        for t, head in enumerate(self.heads):
            logp = torch.log_softmax(head(hidden[:, t]), dim=-1)
            log_probs.append(logp.gather(1, tokens[:, t:t + 1]).squeeze(1))
            entropies.append(-(logp.exp() * logp).sum(-1))
        return torch.stack(log_probs, 1), torch.stack(entropies, 1)

    @torch.no_grad()
    def sample(self, rng: np.random.Generator) -> list[int]:
        """One token per decision, drawn with ``rng`` (inverse CDF of each softmax)."""
        x = self.start.view(1, 1, -1)
        state = None
        tokens: list[int] = []
        for t, head in enumerate(self.heads):
            out, state = self.lstm(x, state)
            probs = torch.softmax(head(out[0, 0]).double(), dim=-1).numpy()
            cdf = np.cumsum(probs)
            choice = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(probs) - 1)
            tokens.append(choice)
            x = self.embed.weight[self.offsets[t] + choice].view(1, 1, -1)
        return tokens

    @torch.no_grad()
    def greedy(self) -> list[int]:
        """The most likely token at every step (the controller's current favourite architecture)."""
        x = self.start.view(1, 1, -1)
        state = None
        tokens: list[int] = []
        for t, head in enumerate(self.heads):
            out, state = self.lstm(x, state)
            choice = int(torch.argmax(head(out[0, 0])))
            tokens.append(choice)
            x = self.embed.weight[self.offsets[t] + choice].view(1, 1, -1)
        return tokens


class RLSampler(SpaceSampler):
    """MnasNet's controller: an LSTM policy over the decisions of ``space``, trained with PPO.

    Args:
        space: the search space.
        seed: seed of the initial policy and of the proposals; ``None`` draws one from the OS.
        batch_size: completed trials per PPO update (MnasNet's controller also learns from batches of
            sampled models; 8 keeps a few hundred trials worth several dozen updates; ``nas search``
            sizes it to the budget, :data:`nas.searchers.BUDGET_RULE`).
        hidden_size: LSTM units.
        learning_rate: Adam's step size. On the analytic stand-in objective (mobilenetv3 space,
            5 seeds, entropy 0.01) 0.003 and above made the policy collapse onto a few architectures within 300
            trials, while 0.001 was still improving at 600 but slower at 150; 0.002 is in between.
            (Tuned on the stand-in, so a starting point for real searches, not a law.)
        ppo_epochs: optimizer passes over each batch (each pass is one full-batch step).
        clip: PPO ratio clip ε (the ratio is kept in [1 − ε, 1 + ε]).
        entropy_coef: weight of the entropy bonus (per decision, in units of normalized advantage);
            0.03 kept the stand-in search improving up to 600 trials where 0.01 stalled after ~250.
        baseline_decay: decay of the moving-average baseline (per episode).
        normalize_advantages: divide advantages by their moving root-mean-square.
        avoid_duplicates: draw again a sample the study already has (see the module doc).
    """

    def __init__(self, space: FactorizedSpace, seed: int | None = None, *, batch_size: int = 8,
                 hidden_size: int = 64, learning_rate: float = 0.002, ppo_epochs: int = 4, clip: float = 0.2,
                 entropy_coef: float = 0.03, baseline_decay: float = 0.95, normalize_advantages: bool = True,
                 avoid_duplicates: bool = True):
        super().__init__(space, seed, avoid_duplicates=avoid_duplicates)
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
        if int(hidden_size) != hidden_size or hidden_size < 1:
            raise ValueError(f"hidden_size must be an integer ≥ 1, got {hidden_size!r}")
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        if int(ppo_epochs) != ppo_epochs or ppo_epochs < 1:
            raise ValueError(f"ppo_epochs must be an integer ≥ 1, got {ppo_epochs!r}")
        if not 0 < clip < 1:
            raise ValueError(f"clip must be in (0, 1), got {clip!r}")
        if not (math.isfinite(entropy_coef) and entropy_coef >= 0):
            raise ValueError(f"entropy_coef must be ≥ 0, got {entropy_coef!r}")
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay!r}")
        self.batch_size = int(batch_size)
        self.hidden_size = int(hidden_size)
        self.learning_rate = float(learning_rate)
        self.ppo_epochs = int(ppo_epochs)
        self.clip = float(clip)
        self.entropy_coef = float(entropy_coef)
        self.baseline_decay = float(baseline_decay)
        self.normalize_advantages = bool(normalize_advantages)
        self._study_name: str | None = None
        self._reset()

    # -- state --------------------------------------------------------------------------------
    def _reset(self) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        self.policy = Controller([len(d.choices) for d in self.decisions], self.hidden_size, self.hidden_size,
                                 generator)
        self._optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.learning_rate)
        self._baseline: float | None = None
        self._mean_square: float | None = None  # moving mean of (reward − baseline)²
        self._buffer: list[tuple[list[int], float]] = []
        self._seen: set[int] = set()
        self._learned: set[str] = set()  # architectures (arch_key) already learned from
        self.n_episodes = 0
        self.n_updates = 0

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of everything learned: policy, optimizer, baseline, partial batch, counters."""
        return copy.deepcopy({
            "policy": self.policy.state_dict(),
            "optimizer": self._optimizer.state_dict(),
            "baseline": self._baseline,
            "mean_square": self._mean_square,
            "buffer": self._buffer,
            "seen": sorted(self._seen),
            "learned": sorted(self._learned),
            "n_episodes": self.n_episodes,
            "n_updates": self.n_updates,
        })

    def greedy_params(self) -> dict[str, Any]:
        """The controller's most likely architecture, as params."""
        with _one_thread():
            tokens = self.policy.greedy()
        return {d.name: d.choices[i] for d, i in zip(self.decisions, tokens)}

    # -- BaseSampler ----------------------------------------------------------------------------
    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        self._sync(study)
        return super().sample_relative(study, trial, search_space)

    def propose(self, study: Study, trial: FrozenTrial, rng: np.random.Generator) -> list[int]:
        with _one_thread():
            return self.policy.sample(rng)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._sync(study)
        if trial.number in self._seen:
            return
        if state == TrialState.COMPLETE:
            self._observe(study, trial.number, trial.params, values)
        # Other states (FAIL, PRUNED) teach nothing; the trial is not marked seen, so if it were
        # ever stored as COMPLETE it would still be learned from in the next sync.

    # -- learning -------------------------------------------------------------------------------
    def _sync(self, study: Study) -> None:
        """Bind to ``study`` (a new study starts from the seed's policy) and learn every completed
        trial not yet learned, in completion order. On first contact this is the resume replay."""
        self._check_study(study)
        if self._study_name != study.study_name:
            if self._study_name is not None:
                self._reset()
            self._study_name = study.study_name
        for t in completed_in_order(study):
            if t.number not in self._seen:
                self._observe(study, t.number, t.params, t.values)

    def _observe(self, study: Study, number: int, params: Mapping[str, Any],
                 values: Sequence[float] | None) -> None:
        self._seen.add(number)
        indices = self.indices_of(params)
        reward = self.score(study, values)
        if indices is None or reward is None:
            return
        key = self.arch_key(indices)
        if key in self._learned:
            return  # a repeat of a known architecture (its result reused) is no new information
        self._learned.add(key)
        self.n_episodes += 1
        self._buffer.append((indices, reward))
        if len(self._buffer) >= self.batch_size:
            batch, self._buffer = self._buffer, []
            self._update(batch)

    def _update(self, batch: list[tuple[list[int], float]]) -> None:
        """One PPO update on ``batch`` (episodes in completion order)."""
        tokens = torch.as_tensor([indices for indices, _ in batch], dtype=torch.long)
        rewards = np.array([reward for _, reward in batch], dtype=np.float64)
        if self._baseline is None:
            self._baseline = float(rewards.mean())
            self._mean_square = float(((rewards - rewards.mean()) ** 2).mean())
        advantages = rewards - self._baseline
        if self.normalize_advantages:
            advantages = advantages / math.sqrt(self._mean_square + 1e-12)
        for reward in rewards:  # the baseline moves after the batch is scored, in completion order
            d = self.baseline_decay
            self._mean_square = d * self._mean_square + (1 - d) * (reward - self._baseline) ** 2
            self._baseline = d * self._baseline + (1 - d) * float(reward)

        adv = torch.as_tensor(advantages, dtype=torch.float32).unsqueeze(1)
        with _one_thread():
            self._ppo_steps(tokens, adv)
        self.n_updates += 1

    def _ppo_steps(self, tokens: torch.Tensor, adv: torch.Tensor) -> None:
        with torch.no_grad():
            old_log_prob, _ = self.policy(tokens)  # π_old: the policy at the start of this update
        for _ in range(self.ppo_epochs):
            log_prob, entropy = self.policy(tokens)
            ratio = torch.exp(log_prob - old_log_prob)
            surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - self.clip, 1 + self.clip) * adv)
            loss = -surrogate.sum(1).mean() - self.entropy_coef * entropy.sum(1).mean()
            self._optimizer.zero_grad()
            loss.backward()
            self._optimizer.step()


__all__ = ["Controller", "RLSampler"]
