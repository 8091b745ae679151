"""The MnasNet multi-objective reward: accuracy weighted by how far latency is from a target.

Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile", CVPR 2019, §3
(https://arxiv.org/abs/1807.11626). The search maximizes

    ACC(m) · (LAT(m) / T)^w,   w = α if LAT(m) ≤ T else β,

a weighted product that approximates Pareto-optimal solutions. The exponents are calibrated by the
observation that doubling the latency buys about +5 % *relative* accuracy: for two models on the
same Pareto curve, ``a · (1 + 5 %) · (2l / T)^β = a · (l / T)^β`` gives ``β = −log(1.05) / log 2 ≈
−0.07``. With α = β = −0.07 (the *soft* constraint) the search still explores models well below
and above the target; α = 0, β = −1 (the *hard* constraint) leaves faster models unrewarded and
penalizes slower ones sharply, so the controller concentrates just below the target.

MobileNetV3 (Howard et al., ICCV 2019, §4.1) kept the soft form with w = −0.07 for the Large search
and used w = −0.15 for the Small search, because accuracy falls more steeply with latency for small
models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LARGE_W = -0.07
"""MnasNet's and MobileNetV3-Large's exponent."""
SMALL_W = -0.15
"""MobileNetV3-Small's exponent (MobileNetV3 §4.1)."""


def _finite(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


@dataclass(frozen=True)
class RewardConfig:
    """Target latency and the two exponents of the MnasNet reward.

    Args:
        target_ms: target latency T in milliseconds (> 0, finite).
        alpha: exponent applied when latency ≤ T (≤ 0).
        beta: exponent applied when latency > T (≤ 0).
    """

    target_ms: float
    alpha: float = LARGE_W
    beta: float = LARGE_W

    def __post_init__(self):
        target = _finite(self.target_ms, "target_ms")
        if target <= 0:
            raise ValueError(f"target_ms must be > 0, got {self.target_ms!r}")
        alpha = _finite(self.alpha, "alpha")
        beta = _finite(self.beta, "beta")
        if alpha > 0:
            raise ValueError(f"alpha must be ≤ 0 (a faster model must not lose reward), got {self.alpha!r}")
        if beta > 0:
            raise ValueError(f"beta must be ≤ 0 (a slower model must not gain reward), got {self.beta!r}")
        object.__setattr__(self, "target_ms", target)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)

    @classmethod
    def soft(cls, target_ms: float, w: float = LARGE_W) -> "RewardConfig":
        """MnasNet's default soft constraint, α = β = w (−0.07)."""
        return cls(target_ms, w, w)

    @classmethod
    def hard(cls, target_ms: float) -> "RewardConfig":
        """The hard constraint α = 0, β = −1: no reward for being faster than T."""
        return cls(target_ms, 0.0, -1.0)

    @classmethod
    def large(cls, target_ms: float) -> "RewardConfig":
        """MobileNetV3-Large's search: soft, w = −0.07."""
        return cls.soft(target_ms, LARGE_W)

    @classmethod
    def small(cls, target_ms: float) -> "RewardConfig":
        """MobileNetV3-Small's search: soft, w = −0.15."""
        return cls.soft(target_ms, SMALL_W)

    def exponent(self, latency_ms: float) -> float:
        """The w that applies at ``latency_ms``: α at or below the target, β above it."""
        return self.alpha if latency_ms <= self.target_ms else self.beta

    def to_dict(self) -> dict[str, float]:
        return {"target_ms": self.target_ms, "alpha": self.alpha, "beta": self.beta}


def mnas_reward(accuracy: float, latency_ms: float, cfg: RewardConfig) -> float:
    """``accuracy · (latency_ms / T)^w`` with w = α if latency_ms ≤ T else β (MnasNet §3).

    Args:
        accuracy: top-1 accuracy as a fraction in [0, 1].
        latency_ms: measured or predicted latency in milliseconds (> 0).
        cfg: target and exponents.

    Returns:
        The reward; equals ``accuracy`` at latency_ms == T.

    Raises:
        ValueError: accuracy is NaN, infinite or outside [0, 1], or latency is NaN, infinite or ≤ 0.
    """
    acc = _finite(accuracy, "accuracy")
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}")
    lat = _finite(latency_ms, "latency_ms")
    if lat <= 0:
        raise ValueError(f"latency_ms must be > 0, got {latency_ms!r}")
    return acc * (lat / cfg.target_ms) ** cfg.exponent(lat)


__all__ = ["LARGE_W", "SMALL_W", "RewardConfig", "mnas_reward"]
