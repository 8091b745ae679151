"""Tests of nas.rewards: the MnasNet reward, its presets, the calibration example and bad input."""

from __future__ import annotations

import math

import pytest

from nas.rewards import LARGE_W, SMALL_W, RewardConfig, mnas_reward


def test_soft_is_mnasnet_default():
    cfg = RewardConfig.soft(75.0)
    assert (cfg.target_ms, cfg.alpha, cfg.beta) == (75.0, -0.07, -0.07)
    assert RewardConfig(75.0) == cfg


def test_hard_constraint_values():
    cfg = RewardConfig.hard(80.0)
    assert (cfg.alpha, cfg.beta) == (0.0, -1.0)
    # no reward for being faster than the target...
    assert mnas_reward(0.7, 40.0, cfg) == pytest.approx(0.7)
    # ...and a sharp penalty for being slower: (160 / 80)^-1 = 1/2
    assert mnas_reward(0.7, 160.0, cfg) == pytest.approx(0.35)


def test_presets():
    assert RewardConfig.large(60.0) == RewardConfig(60.0, LARGE_W, LARGE_W)
    assert RewardConfig.small(20.0) == RewardConfig(20.0, SMALL_W, SMALL_W)
    assert (LARGE_W, SMALL_W) == (-0.07, -0.15)


@pytest.mark.parametrize("cfg", [RewardConfig.soft(80.0), RewardConfig.hard(80.0), RewardConfig(80.0, -0.2, -0.5)])
def test_reward_equals_accuracy_at_target(cfg):
    assert mnas_reward(0.5, 80.0, cfg) == pytest.approx(0.5)


def test_custom_exponents_pick_alpha_below_and_beta_above():
    cfg = RewardConfig(50.0, alpha=-0.1, beta=-0.3)
    assert mnas_reward(0.8, 25.0, cfg) == pytest.approx(0.8 * 0.5 ** -0.1)
    assert mnas_reward(0.8, 100.0, cfg) == pytest.approx(0.8 * 2.0 ** -0.3)
    assert cfg.exponent(50.0) == -0.1  # at the target, α applies


def test_calibration_doubling_latency_costs_about_five_percent():
    """MnasNet §3: doubling latency must be worth ~+5 % relative accuracy, hence β ≈ −0.07."""
    cfg = RewardConfig.soft(75.0)
    ratio = mnas_reward(0.75, 150.0, cfg) / mnas_reward(0.75, 75.0, cfg)
    assert ratio == pytest.approx(2 ** -0.07)
    assert 1 - ratio == pytest.approx(0.05, abs=0.005)
    # equal reward for a model twice as slow but 5 % (relatively) more accurate
    assert mnas_reward(0.75 * 1.05, 150.0, cfg) == pytest.approx(mnas_reward(0.75, 75.0, cfg), rel=2e-3)
    assert -math.log(1.05) / math.log(2) == pytest.approx(-0.07, abs=0.001)


def test_faster_is_never_worse_and_more_accurate_is_better():
    cfg = RewardConfig.soft(60.0)
    assert mnas_reward(0.7, 30.0, cfg) > mnas_reward(0.7, 60.0, cfg) > mnas_reward(0.7, 120.0, cfg)
    assert mnas_reward(0.71, 60.0, cfg) > mnas_reward(0.70, 60.0, cfg)


@pytest.mark.parametrize("kwargs, field", [
    ({"target_ms": 0.0}, "target_ms"),
    ({"target_ms": -5.0}, "target_ms"),
    ({"target_ms": float("nan")}, "target_ms"),
    ({"target_ms": float("inf")}, "target_ms"),
    ({"target_ms": "fast"}, "target_ms"),
    ({"target_ms": 60.0, "alpha": 0.1}, "alpha"),
    ({"target_ms": 60.0, "beta": 0.07}, "beta"),
    ({"target_ms": 60.0, "beta": float("nan")}, "beta"),
])
def test_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RewardConfig(**kwargs)


def test_config_is_frozen():
    cfg = RewardConfig.soft(60.0)
    with pytest.raises(AttributeError):
        cfg.target_ms = 10.0  # type: ignore[misc]


@pytest.mark.parametrize("accuracy, latency_ms, field", [
    (float("nan"), 60.0, "accuracy"),
    (-0.1, 60.0, "accuracy"),
    (1.5, 60.0, "accuracy"),
    (0.7, float("nan"), "latency_ms"),
    (0.7, -1.0, "latency_ms"),
    (0.7, 0.0, "latency_ms"),
    (0.7, float("inf"), "latency_ms"),
    (None, 60.0, "accuracy"),
])
def test_reward_rejects_bad_inputs(accuracy, latency_ms, field):
    with pytest.raises(ValueError, match=field):
        mnas_reward(accuracy, latency_ms, RewardConfig.soft(60.0))


def test_zero_accuracy_gives_zero_reward():
    assert mnas_reward(0.0, 30.0, RewardConfig.soft(60.0)) == 0.0
