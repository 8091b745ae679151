"""A deterministic, cheap stand-in objective for testing and comparing searchers.

**This is not a model of any real device or of real accuracy.** It exists so that the searchers
(:mod:`nas.searchers`) can be tested and benchmarked on the real search spaces in milliseconds per
trial, without training or latency measurement. It maps a decoded :class:`~search_spaces.ArchSpec`
to a plausible ``(accuracy, latency_ms)`` pair with the qualitative shape the MnasNet search faces:

* **accuracy** saturates in MAdds, ``0.821 − 1.984 · (MAdds / 1e6)^−0.58``, a power law fitted to
  the MnasNet-A1 depth-multiplier sweep of the TPU reference README (63 M → 64.1 %, 315 M → 75.2 %,
  591 M → 77.2 %); then small bonuses for squeeze-and-excite, h-swish in the deeper half and 5×5
  kernels, penalties for shallow networks and for dropping identity residuals where they fit, and a
  ±0.4 % perturbation derived from a hash of the architecture id, so that the optimum is not just
  "the right MAdds";
* **latency_ms** is a sum over the layer walk of per-op-kind costs, in the spirit of a Pixel-1 CPU:
  dense (1×1, regular and fully-connected) multiply-adds are cheap per MAdd, depthwise ones are five
  times dearer per MAdd (memory bound), h-swish and the SE pool/scale cost per activation element,
  and every layer pays a fixed overhead. MnasNet-A1 lands near its published 78 ms. This is the
  analytic latency model of :mod:`latency.model` (:func:`latency.model.analytic_latency_ms`, where
  its constants are), the same one :class:`latency.model.AnalyticLatency` serves.

Everything is a pure function of the spec, so the same architecture always scores the same.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from latency.model import analytic_latency_ms
from search_spaces import ArchSpec, count
from search_spaces.spec import Activation

# accuracy ≈ ACC_MAX − ACC_SCALE · (MAdds in millions)^(−ACC_POWER)
ACC_MAX = 0.821
ACC_SCALE = 1.984
ACC_POWER = 0.58
SE_BONUS = 0.0015  # per block with squeeze-and-excite
SE_BONUS_CAP = 0.012
HSWISH_BONUS = 0.002  # per h-swish block in the deeper half of the blocks
HSWISH_BONUS_CAP = 0.012
K5_BONUS = 0.0008  # per 5×5 block (receptive field beyond what MAdds buy)
K5_BONUS_CAP = 0.006
MIN_BLOCKS = 12  # fewer blocks than this cost accuracy
SHALLOW_PENALTY = 0.008  # per missing block below MIN_BLOCKS
NO_RESIDUAL_PENALTY = 0.002  # per block whose identity residual would fit but was not taken
HASH_AMPLITUDE = 0.004  # ± perturbation from the architecture id

DEFAULT_TARGET_MS = 60.0
"""A target near the MobileNetV3-Large-like seed of the ``mobilenetv3`` space under this model."""


@dataclass(frozen=True)
class AnalyticResult:
    """What the stand-in objective says about one architecture."""

    accuracy: float  # fraction in [0, 1]
    latency_ms: float
    madds: int
    params: int


def _hash_unit(arch_id: str) -> float:
    """A deterministic number in [−1, 1) from an architecture id."""
    digest = hashlib.sha256(arch_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**63 - 1.0


def analytic_accuracy(spec: ArchSpec, madds: int | None = None) -> float:
    """The stand-in accuracy of ``spec`` (a fraction); see the module docstring."""
    madds = count(spec).madds if madds is None else madds
    acc = ACC_MAX - ACC_SCALE * max(madds / 1e6, 1.0) ** (-ACC_POWER)
    blocks = spec.blocks
    deep_from = len(blocks) // 2
    acc += min(SE_BONUS_CAP, SE_BONUS * sum(b.se for b in blocks))
    acc += min(HSWISH_BONUS_CAP,
               HSWISH_BONUS * sum(b.activation is Activation.HSWISH for b in blocks[deep_from:]))
    acc += min(K5_BONUS_CAP, K5_BONUS * sum(b.kernel_size == 5 for b in blocks))
    acc -= SHALLOW_PENALTY * max(0, MIN_BLOCKS - len(blocks))
    acc -= NO_RESIDUAL_PENALTY * sum(
        (not b.residual) and b.stride == 1 and b.in_channels == b.out_channels for b in blocks
    )
    acc += HASH_AMPLITUDE * _hash_unit(spec.arch_id)
    return min(1.0, max(0.0, acc))


def analytic_objective(spec: ArchSpec) -> AnalyticResult:
    """Accuracy, latency, MAdds and parameters of ``spec`` under the stand-in model."""
    cost = count(spec)
    return AnalyticResult(
        accuracy=analytic_accuracy(spec, cost.madds),
        latency_ms=analytic_latency_ms(spec),
        madds=cost.madds,
        params=cost.params,
    )




def run_analytic_search(
    searcher: str,
    space,
    *,
    n_trials: int,
    cfg,
    seed: int | None = 0,
    in_flight: int = 1,
    enqueue_seeds: bool = True,
    storage=None,
    study_name: str | None = None,
    sampler_options: dict | None = None,
    budget: int | None = None,
    timings: dict | None = None,
):
    """Run searcher ``searcher`` on ``space`` against the stand-in objective (tests and benchmarks).

    The same ask/tell protocol as the real search loop: seeds enqueued first, ``in_flight`` trials
    asked before any is told (told in the order asked), each recorded like the loop records it (user
    attributes ``arch_id``, ``accuracy``, ``latency_ms``, ``reward``) and told by :func:`nas.searchers.tell`
    (``[accuracy, latency_ms]`` with the latency constraint for nsga2, the MnasNet reward for the
    others). The sampler is made as ``nas search`` makes it: :func:`nas.searchers.make_sampler` with the
    budget (the budget rule), ``in_flight`` workers and the reward. Reopening ``study_name`` in
    ``storage`` continues a previous run with a new sampler (the resume path).

    Args:
        searcher: a name of :data:`nas.searchers.SEARCHERS`.
        space: a :class:`~search_spaces.spaces.FactorizedSpace`.
        n_trials: trials to add to the study in this call.
        cfg: a :class:`nas.rewards.RewardConfig`.
        seed: sampler seed.
        in_flight: trials asked before the oldest is told (≥ 1).
        enqueue_seeds: enqueue ``space.seeds()`` if the study is new.
        storage, study_name: an Optuna storage and study name to create or reopen.
        sampler_options: extra keyword arguments for :func:`nas.searchers.make_sampler`.
        budget: the whole run's trials, for the budget rule (default: the study's trials + ``n_trials``;
            a resumed run gives the same total as the uninterrupted one, as ``nas search --resume`` does).
        timings: if given, CPU seconds of this process (``time.process_time``, so that other work on the
            machine does not count) are added to its keys ``ask`` (the sampler's proposals), ``evaluate``
            (the stand-in objective) and ``tell`` (recording and the sampler's after-trial work).

    Returns:
        The :class:`optuna.Study`.
    """
    import optuna

    from nas.rewards import mnas_reward
    from nas.searchers import distributions, make_sampler, study_directions, tell

    if in_flight < 1:
        raise ValueError(f"in_flight must be ≥ 1, got {in_flight}")
    study = optuna.create_study(directions=study_directions(searcher), storage=storage,
                                study_name=study_name, load_if_exists=True)
    total = budget if budget is not None else len(study.trials) + n_trials
    study.sampler = make_sampler(searcher, space, seed=seed, trials=total, workers=in_flight, reward=cfg,
                                 **(sampler_options or {}))
    if enqueue_seeds and not study.trials:
        for params in space.seeds().values():
            study.enqueue_trial(params)
    dists = distributions(space)
    clock = {"ask": 0.0, "evaluate": 0.0, "tell": 0.0}
    done = 0
    while done < n_trials:
        t0 = time.process_time()
        batch = [study.ask(dists) for _ in range(min(in_flight, n_trials - done))]
        clock["ask"] += time.process_time() - t0
        for trial in batch:
            t0 = time.process_time()
            spec = space.decode(trial.params)
            result = analytic_objective(spec)
            reward = mnas_reward(result.accuracy, result.latency_ms, cfg)
            t1 = time.process_time()
            for key, value in (("arch_id", spec.arch_id), ("accuracy", result.accuracy),
                               ("latency_ms", result.latency_ms), ("reward", reward)):
                trial.set_user_attr(key, value)
            tell(study, trial, searcher, accuracy=result.accuracy, latency_ms=result.latency_ms,
                 reward=reward, target_ms=cfg.target_ms)
            clock["evaluate"] += t1 - t0
            clock["tell"] += time.process_time() - t1
        done += len(batch)
    if timings is not None:
        for key, value in clock.items():
            timings[key] = timings.get(key, 0.0) + value
    return study


def best_reward(study, searcher: str, cfg) -> float:
    """The highest MnasNet reward among the study's completed trials (nsga2's computed from its values)."""
    from optuna.trial import TrialState

    from nas.searchers import trial_reward

    rewards = [trial_reward(searcher, t.values, cfg) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    if not rewards:
        raise ValueError("the study has no completed trial")
    return max(rewards)


__all__ = [
    "AnalyticResult", "DEFAULT_TARGET_MS", "analytic_accuracy", "analytic_latency_ms", "analytic_objective",
    "best_reward", "run_analytic_search",
]
