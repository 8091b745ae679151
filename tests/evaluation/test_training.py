"""Tests of evaluation.training: proxy training, evaluation, preprocessing, schedules and failure modes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.data import FASHION_MNIST_DEFAULT_DIR, Dataset, holdout_split, load_dataset
from evaluation.training import (
    ChannelStats,
    Optimizer,
    Schedule,
    TrainConfig,
    TrainingDiverged,
    TrainProgress,
    channel_stats,
    evaluate,
    input_channels,
    learning_rate,
    preprocess,
    train_model,
)

NUM_CLASSES = 4


def tiny_cnn(in_channels: int = 1, num_classes: int = NUM_CLASSES, seed: int = 0) -> nn.Module:
    """Conv-BN-ReLU ×2, pool, Linear: the smallest net that looks like a candidate."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, num_classes),
    )


def synthetic_dataset(n: int = 256, side: int = 12, channels: int = 1, seed: int = 0) -> Dataset:
    """Noise images with a centred square whose brightness is the class: learnable in a few steps.

    Brightness survives the random crop and flip, so augmentation cannot change a label.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    images = torch.randint(0, 40, (n, channels, side, side), generator=generator, dtype=torch.uint8)
    low, high = side // 4, side - side // 4
    images[:, :, low:high, low:high] = (70 + 60 * labels).to(torch.uint8).view(n, 1, 1, 1)
    return Dataset(
        name="synthetic",
        train_images=images,
        train_labels=labels,
        test_images=images[:8],
        test_labels=labels[:8],
        num_classes=NUM_CLASSES,
        class_names=None,
        source="memory",
    )


FAST = dict(batch_size=32, resolution_px=None, threads=1)


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return synthetic_dataset()


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray]:
    return holdout_split(256, 64, seed=0)


# --------------------------------------------------------------------------------------------------
# training end to end


@pytest.mark.skipif(
    not FASHION_MNIST_DEFAULT_DIR.is_dir(),
    reason=f"{FASHION_MNIST_DEFAULT_DIR} absent: install Debian's dataset-fashion-mnist to run this test",
)
def test_tiny_cnn_learns_real_fashion_mnist() -> None:
    data = load_dataset("fashion-mnist", None)
    train_idx, val_idx = holdout_split(len(data.train_labels), 10000, seed=0)
    # 32×32 input, augmented. One thread: on a shared 2-core machine a second thread often slows it.
    cfg = TrainConfig(steps=300, batch_size=64, lr=0.1, max_batches_eval=2, threads=1)
    result = train_model(tiny_cnn(in_channels=1, num_classes=10), data, train_idx[:6000], val_idx, cfg)
    assert result.val_count == 1000
    assert result.val_accuracy > 0.6, result  # chance is 0.1
    assert result.steps == 300 and not result.stopped_early
    assert result.train_loss_curve[-1][1] < result.train_loss_curve[0][1]


def test_training_learns_synthetic_task(synthetic: Dataset, split) -> None:
    result = train_model(tiny_cnn(), synthetic, *split, TrainConfig(steps=60, **FAST))
    assert result.val_accuracy > 0.9
    assert result.val_count == 64
    assert result.images_per_s > 0 and result.train_time_s > 0 and result.eval_time_s > 0
    assert result.input_stats == channel_stats(synthetic.train_images[torch.from_numpy(split[0])])


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_gives_identical_results(synthetic: Dataset, split, threads: int) -> None:
    cfg = TrainConfig(steps=25, log_every_steps=5, **{**FAST, "threads": threads})
    first = train_model(tiny_cnn(seed=1), synthetic, *split, cfg)
    second = train_model(tiny_cnn(seed=1), synthetic, *split, cfg)
    assert first.val_accuracy == second.val_accuracy
    assert first.val_loss == second.val_loss
    assert first.train_loss_curve == second.train_loss_curve
    other = train_model(tiny_cnn(seed=1), synthetic, *split, TrainConfig(steps=25, log_every_steps=5, seed=7, **FAST))
    assert other.train_loss_curve != first.train_loss_curve


class _NaNOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(144, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) * float("nan")


def test_nan_output_raises_training_diverged_at_first_step(synthetic: Dataset, split) -> None:
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 0: training loss is nan$") as caught:
        train_model(_NaNOutput(), synthetic, *split, TrainConfig(steps=5, **FAST))
    assert caught.value.step == 0 and math.isnan(caught.value.loss)


class _NaNWhenEvaluating(_NaNOutput):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        return logits if self.training else logits * float("nan")


def test_non_finite_held_out_loss_raises_training_diverged(synthetic: Dataset, split) -> None:
    with pytest.raises(TrainingDiverged, match="at step 3: held-out loss after training is nan"):
        train_model(_NaNWhenEvaluating(), synthetic, *split, TrainConfig(steps=3, **FAST))


def test_huge_learning_rate_raises_training_diverged(synthetic: Dataset, split) -> None:
    cfg = TrainConfig(steps=50, lr=1e6, warmup_fraction=0.0, **FAST)
    with pytest.raises(TrainingDiverged) as caught:
        train_model(tiny_cnn(), synthetic, *split, cfg)
    assert 0 < caught.value.step < 50
    assert not math.isfinite(caught.value.loss) or caught.value.loss > cfg.max_loss
    assert "\n" not in str(caught.value)


def test_step_budget_is_respected(synthetic: Dataset, split) -> None:
    seen: list[TrainProgress] = []
    cfg = TrainConfig(steps=7, log_every_steps=3, **FAST)
    result = train_model(tiny_cnn(), synthetic, *split, cfg, progress=seen.append)
    assert result.steps == result.planned_steps == 7 and not result.stopped_early
    assert [step for step, _ in result.train_loss_curve] == [3, 6, 7]
    assert [p.step for p in seen] == [3, 6, 7] and all(p.total_steps == 7 for p in seen)
    assert result.epochs == pytest.approx(7 * 32 / 192)


def test_fractional_epochs(synthetic: Dataset, split) -> None:
    # 192 training images / batch 32 = 6 steps per epoch.
    result = train_model(tiny_cnn(), synthetic, *split, TrainConfig(epochs=1.5, **FAST))
    assert result.steps == 9 and result.epochs == pytest.approx(1.5)
    result = train_model(tiny_cnn(), synthetic, *split, TrainConfig(**FAST))
    assert result.steps == 6  # neither epochs nor steps: one epoch


def test_time_budget_stops_training_early(synthetic: Dataset, split) -> None:
    cfg = TrainConfig(steps=100_000, time_budget_s=0.5, **FAST)
    result = train_model(tiny_cnn(), synthetic, *split, cfg)
    assert result.stopped_early and 0 < result.steps < 100_000
    assert 0.5 <= result.train_time_s < 0.5 + 2.0  # at most one step over; slack for a busy machine
    assert result.train_loss_curve[-1][0] == result.steps
    assert 0 <= result.val_accuracy <= 1


def test_rmsprop_and_constant_schedule_train(synthetic: Dataset, split) -> None:
    cfg = TrainConfig(steps=40, optimizer="rmsprop", schedule="constant", lr=0.01, **FAST)
    assert cfg.optimizer is Optimizer.RMSPROP and cfg.schedule is Schedule.CONSTANT
    result = train_model(tiny_cnn(), synthetic, *split, cfg)
    assert result.val_accuracy > 0.5


def test_grayscale_repeated_for_three_channel_model(synthetic: Dataset, split) -> None:
    cfg = TrainConfig(steps=3, in_channels=3, **FAST)
    assert input_channels(synthetic) == 1 and input_channels(synthetic, cfg) == 3
    result = train_model(tiny_cnn(in_channels=3), synthetic, *split, cfg)
    assert result.steps == 3
    rgb = synthetic_dataset(n=16, channels=3)
    with pytest.raises(ValueError, match="only grayscale"):
        input_channels(rgb, TrainConfig(in_channels=1))


def test_model_is_channels_last_and_threads_are_restored(synthetic: Dataset, split) -> None:
    model = tiny_cnn()
    threads_before = torch.get_num_threads()
    train_model(model, synthetic, *split, TrainConfig(steps=2, **FAST))
    assert torch.get_num_threads() == threads_before
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.training  # evaluate restored train mode


def test_wrong_logit_shape_is_reported(synthetic: Dataset, split) -> None:
    with pytest.raises(ValueError, match=r"logits of shape \(32, 10\); expected \(32, 4\)"):
        train_model(tiny_cnn(num_classes=10), synthetic, *split, TrainConfig(steps=2, **FAST))


@pytest.mark.parametrize(
    ("train_idx", "val_idx", "message"),
    [
        ([0, 1, 2], [2, 3], "share 1 indices"),
        ([0, 1, 256], [3], r"outside \[0, 256\)"),
        ([0], [3], "at least 2"),
        ([0, 1], [], "val_idx is empty"),
        ([[0, 1]], [2], "1-D"),
    ],
)
def test_bad_indices_are_rejected(synthetic: Dataset, train_idx, val_idx, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_model(tiny_cnn(), synthetic, train_idx, val_idx, TrainConfig(steps=1, **FAST))


# --------------------------------------------------------------------------------------------------
# evaluate, preprocess, statistics, schedule, config


class _ConstantLogits(nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def test_evaluate_matches_hand_computation(synthetic: Dataset) -> None:
    model = _ConstantLogits([2.0, 0.0, 0.0, 0.0]).train()
    images, labels = synthetic.train_images[:100], synthetic.train_labels[:100]
    stats = channel_stats(images)
    cfg = TrainConfig(eval_batch_size=30, resolution_px=None)
    accuracy, loss = evaluate(model, images, labels, cfg, stats=stats)
    expected_loss = F.cross_entropy(torch.tensor([[2.0, 0, 0, 0]]).expand(100, -1), labels).item()
    assert accuracy == pytest.approx((labels == 0).float().mean().item())
    assert loss == pytest.approx(expected_loss)
    assert model.training
    capped = TrainConfig(eval_batch_size=30, max_batches_eval=2, resolution_px=None)
    accuracy, _ = evaluate(model, images, labels, capped, stats=stats)
    assert accuracy == pytest.approx((labels[:60] == 0).float().mean().item())


def test_channel_stats_are_exact() -> None:
    images = torch.randint(0, 256, (50, 3, 7, 7), dtype=torch.uint8)
    stats = channel_stats(images)
    pixels = images.double().div(255).transpose(0, 1).reshape(3, -1)
    np.testing.assert_allclose(stats.mean, pixels.mean(1).numpy(), rtol=1e-9)
    np.testing.assert_allclose(stats.std, pixels.std(1, unbiased=False).numpy(), rtol=1e-9)
    assert channel_stats(torch.full((2, 1, 3, 3), 9, dtype=torch.uint8)).std == (1 / 255,)


def test_preprocess_resizes_normalizes_and_is_channels_last(synthetic: Dataset) -> None:
    images = synthetic.train_images
    stats = channel_stats(images)
    x = preprocess(images, TrainConfig(resolution_px=12), stats)
    assert x.dtype == torch.float32 and x.shape == (256, 1, 12, 12)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x.mean().item() == pytest.approx(0.0, abs=1e-5) and x.std().item() == pytest.approx(1.0, abs=1e-3)
    up = preprocess(images[:4], TrainConfig(resolution_px=32, in_channels=3, channels_last=False), stats)
    assert up.shape == (4, 3, 32, 32) and up.is_contiguous()
    assert torch.equal(up[:, 0], up[:, 2])


@pytest.mark.parametrize("crop_padding_px", [0, 2])
def test_one_channel_batches_get_the_strides_of_the_asked_format(synthetic: Dataset, crop_padding_px: int) -> None:
    # With one channel both layouts count as contiguous; convolution follows the strides, so they
    # must be the canonical ones of the asked format whatever augmentation did.
    stats = channel_stats(synthetic.train_images)
    images = synthetic.train_images[:4]
    generator = torch.Generator().manual_seed(0)
    for channels_last, strides in ((True, (144, 1, 12, 1)), (False, (144, 144, 12, 1))):
        cfg = TrainConfig(resolution_px=None, crop_padding_px=crop_padding_px, channels_last=channels_last)
        assert preprocess(images, cfg, stats, generator).stride() == strides
        assert preprocess(images, cfg, stats).stride() == strides


def test_augmentation_is_a_padded_crop_and_flip_of_each_image() -> None:
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    stats = ChannelStats(mean=(0.0,), std=(1.0,))
    plain = preprocess(images, TrainConfig(resolution_px=None), stats)
    padded = F.pad(plain, (2, 2, 2, 2))
    cfg = TrainConfig(resolution_px=None, crop_padding_px=2, horizontal_flip=True)
    out = preprocess(images, cfg, stats, torch.Generator().manual_seed(3))
    assert out.shape == plain.shape and out.is_contiguous(memory_format=torch.channels_last)
    flips = 0
    for index in range(len(images)):
        windows = [
            padded[index, :, top : top + 8, left : left + 8] for top in range(5) for left in range(5)
        ]
        if any(torch.equal(out[index], w) for w in windows):
            continue
        assert any(torch.equal(out[index], w.flip(-1)) for w in windows), index
        flips += 1
    assert 10 < flips < 54  # about half of 64
    again = preprocess(images, cfg, stats, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(lr=0.4, warmup_fraction=0.1)
    rates = [learning_rate(step, 100, cfg) for step in range(100)]
    assert rates[0] == pytest.approx(0.04) and rates[9] == pytest.approx(0.4)
    assert rates[10] == pytest.approx(0.4)
    assert rates[55] == pytest.approx(0.2)  # halfway through the cosine part
    assert 0 < rates[-1] < 0.001
    assert all(b <= a for a, b in zip(rates[10:], rates[11:]))
    constant = TrainConfig(lr=0.4, schedule="constant", warmup_fraction=0.0)
    assert {learning_rate(step, 100, constant) for step in range(100)} == {0.4}


def test_config_round_trips_through_json_and_rejects_bad_values() -> None:
    cfg = TrainConfig(epochs=0.5, optimizer="rmsprop", time_budget_s=30.0)
    assert TrainConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg
    for kwargs, message in [
        (dict(epochs=1, steps=10), "epochs or steps, not both"),
        (dict(optimizer="adam"), "optimizer must be one of sgd, rmsprop; got 'adam'"),
        (dict(schedule="step"), "schedule must be one of cosine, constant"),
        (dict(lr=0), r"lr must be > 0"),
        (dict(lr=float("nan")), r"lr must be > 0"),
        (dict(batch_size=0), "batch_size must be an int >= 1"),
        (dict(steps=2.5), "steps must be an int"),
        (dict(momentum=1.0), r"momentum must be in \[0, 1\)"),
        (dict(label_smoothing=-0.1), "label_smoothing"),
        (dict(time_budget_s=0), "time_budget_s"),
        (dict(channels_last="yes"), "channels_last must be a bool"),
        (dict(crop_padding_px=-1), "crop_padding_px"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**kwargs)


def test_result_is_json_ready(synthetic: Dataset, split) -> None:
    result = train_model(tiny_cnn(), synthetic, *split, TrainConfig(steps=2, **FAST))
    record = json.loads(json.dumps(result.to_dict()))
    assert record["steps"] == 2 and record["train_loss_curve"][-1][0] == 2
    assert set(record["input_stats"]) == {"mean", "std"}


def test_short_proxy_training_of_a_reference_block_network_is_not_chance_and_bn_momentum_is_restored() -> None:
    # The reference builders use BN momentum 0.01 (TF decay 0.99): without the proxy's 0.1 the
    # running statistics stay near their initial values for a few hundred steps.
    from search_spaces import references
    from search_spaces.builder import build_model

    data = load_dataset("fashion-mnist") if FASHION_MNIST_DEFAULT_DIR.exists() else pytest.skip("no Fashion-MNIST")
    spec = references.get("mobilenetv3_small_050").replace(in_channels=1, num_classes=10)
    torch.manual_seed(0)
    model = build_model(spec)
    train_idx, val_idx = np.arange(0, 3000), np.arange(50000, 51000)
    result = train_model(model, data, train_idx, val_idx, TrainConfig(steps=60, batch_size=64, threads=1))
    assert result.val_accuracy > 0.4
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}
