"""Short in-process proxy training of candidate networks on the CPU (or a GPU: ``TrainConfig.device``).

MnasNet (Tan et al. 2019, https://arxiv.org/abs/1807.11626, Sec. 5) scores each sampled model by the
accuracy it reaches after a few epochs of training on a proxy task, measured on images held out from
the training split. This module does that training for one model: `train_model` trains, then scores
on the held-out indices with `evaluate`.

Speed on a small CPU box (measured on a 2-core VM; see experiments/bench_training.py): models and
batches use the channels_last memory format (oneDNN's NHWC depthwise/pointwise kernels, about 3× over
NCHW); images stay uint8 in RAM and each batch is resized, augmented and normalized as one tensor in
this process, because DataLoader workers compete with the two compute threads and lose.

A NaN, infinite or exploding loss raises `TrainingDiverged` at once so that the caller can mark the
trial failed instead of scoring a broken model.

On CUDA (``device="cuda"``, or ``auto`` where a GPU is visible) the same loop runs with float16 autocast,
a loss scaler and channels_last; every device-dependent line goes through :mod:`evaluation.accel`,
whose CPU branch is what the tests run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation import accel
from evaluation.data import Dataset
from latency.device import compute_slot
from search_spaces.checks import is_int, is_number

__all__ = [
    "ChannelStats",
    "Optimizer",
    "Schedule",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainRunResult",
    "TrainingDiverged",
    "channel_stats",
    "evaluate",
    "input_channels",
    "learning_rate",
    "memory_format",
    "planned_steps",
    "preprocess",
    "run_steps",
    "train_model",
]

# RMSProp as in MnasNet / MobileNetV3 (decay 0.9, momentum 0.9). Their TF epsilon (1e-3) sits inside
# the square root; torch adds eps outside it, so sqrt(1e-3) gives the same floor on the denominator.
_RMSPROP_ALPHA = 0.9
_RMSPROP_EPS = math.sqrt(1e-3)
# A data set whose pixels are all one value has std 0; this floor (one grey level) avoids dividing by it.
_MIN_STD = 1.0 / 255.0


class Optimizer(str, Enum):
    """Optimizer for proxy training."""

    SGD = "sgd"
    RMSPROP = "rmsprop"


class Schedule(str, Enum):
    """Learning-rate schedule after the linear warm-up."""

    COSINE = "cosine"
    CONSTANT = "constant"


class TrainingDiverged(RuntimeError):
    """The loss became NaN, infinite or larger than `TrainConfig.max_loss`.

    Attributes:
        step: Zero-based optimizer step at which the loss was seen (the number of steps done before).
        loss: The offending loss value.
    """

    def __init__(self, step: int, loss: float, what: str = "training loss") -> None:
        super().__init__(f"training diverged at step {step}: {what} is {loss}")
        self.step = step
        self.loss = loss


@dataclass(frozen=True)
class TrainConfig:
    """How to train one candidate on the proxy task.

    Length: set ``epochs`` or ``steps``, not both; with neither, one epoch is trained.

    Attributes:
        epochs: Passes over the training indices; fractions allowed (0.5 = half an epoch).
        steps: Optimizer steps; an alternative to ``epochs``.
        batch_size: Training images per step (capped at the number of training images).
        eval_batch_size: Images per forward pass in `evaluate`.
        lr: Peak learning rate, reached at the end of the warm-up.
        momentum: Momentum of SGD (Nesterov when ``nesterov``) or of RMSProp.
        nesterov: Use Nesterov momentum with SGD; RMSProp has no Nesterov variant and ignores it.
        weight_decay: L2 penalty on conv and linear weights. Biases and normalization parameters are
            not decayed (standard in MobileNet training recipes; decaying BN scales hurts small nets).
        label_smoothing: Label smoothing of the training loss, in [0, 1). Validation loss is plain
            cross-entropy so that it compares across configs.
        optimizer: `Optimizer` or its value (``"sgd"``, ``"rmsprop"``).
        schedule: `Schedule` or its value (``"cosine"`` decays to 0 at the last planned step,
            ``"constant"``).
        warmup_fraction: Fraction of the planned steps over which the learning rate rises linearly
            from lr/warm-up-steps to lr; 0 disables warm-up.
        resolution_px: Side of the square network input in pixels; images of another size are
            resized by bilinear interpolation per batch (28×28 Fashion-MNIST → 32×32 by default).
            None keeps the stored size.
        crop_padding_px: Random-crop augmentation: zero-pad by this many pixels per side, then crop
            back to the input size at a random offset. 0 disables it.
        horizontal_flip: Flip half of each training batch left-right.
        in_channels: Channels the model expects. None means the data set's own; a larger count is
            allowed only for grayscale data, whose single channel is repeated.
        threads: torch intra-op threads during training (set process-wide, restored afterwards).
            None keeps torch's current setting (its default is the number of physical cores).
        channels_last: Use the channels_last (NHWC) memory format for model and batches; False
            uses NCHW for both.
        seed: Seed of data order, augmentation and of torch's global generator (dropout etc.).
        max_batches_eval: Evaluate on at most this many batches of held-out images; None = all.
        time_budget_s: Stop training once this many seconds of training have passed (checked after
            each step, so a run can overshoot by one step); evaluation is not counted. None = no limit.
        log_every_steps: Length in steps of each window averaged into the train-loss curve.
        max_loss: A training loss above this counts as diverged (uniform guessing over 10 classes
            costs ln 10 ≈ 2.3).
        bn_momentum: Momentum of the BatchNorm running statistics while training (restored after).
            The reference models use 0.01 (TF's decay 0.99), made for hundreds of epochs: after a
            few hundred proxy steps their running statistics would still be mostly the initial
            values and held-out accuracy would be chance. None keeps the model's own.
        yield_to_measurements: Pause between steps while a latency measurement runs on this
            machine (:func:`latency.device.compute_slot`), so that measurements stay trustworthy
            while candidates train on the same cores.
        device: Where to train and evaluate: ``auto`` (CUDA when this process sees a GPU, else the
            CPU), ``cpu`` or ``cuda`` (see :mod:`evaluation.accel`). On CUDA, training uses float16
            mixed precision with loss scaling and channels_last; the CPU path is unchanged by it.
    """

    epochs: float | None = None
    steps: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 500
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-5
    label_smoothing: float = 0.0
    optimizer: Optimizer = Optimizer.SGD
    schedule: Schedule = Schedule.COSINE
    warmup_fraction: float = 0.05
    resolution_px: int | None = 32
    crop_padding_px: int = 4
    horizontal_flip: bool = True
    in_channels: int | None = None
    threads: int | None = None
    channels_last: bool = True
    seed: int = 0
    max_batches_eval: int | None = None
    time_budget_s: float | None = None
    log_every_steps: int = 20
    max_loss: float = 100.0
    bn_momentum: float | None = 0.1
    yield_to_measurements: bool = True
    device: str = accel.DEFAULT_DEVICE

    def __post_init__(self) -> None:
        # Accept the plain strings that come out of JSON or a CLI.
        for name, enum_type in (("optimizer", Optimizer), ("schedule", Schedule)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum_type(value))
            except ValueError:
                allowed = ", ".join(member.value for member in enum_type)
                raise ValueError(f"TrainConfig.{name} must be one of {allowed}; got {value!r}") from None
        if self.epochs is not None and self.steps is not None:
            raise ValueError("TrainConfig: set epochs or steps, not both")
        for name, allowed, is_valid in _FIELD_RULES:
            value = getattr(self, name)
            if not is_valid(value):
                raise ValueError(f"TrainConfig.{name} must be {allowed}; got {value!r}")

    def to_dict(self) -> dict[str, object]:
        """Returns the config as JSON-ready values; ``TrainConfig(**cfg.to_dict())`` rebuilds it."""
        values = asdict(self)
        values["optimizer"] = self.optimizer.value
        values["schedule"] = self.schedule.value
        return values


def _positive_int(value: object) -> bool:
    return is_int(value) and value >= 1


# (field, allowed values in words, check) for every TrainConfig field but the enums.
_FIELD_RULES: tuple[tuple[str, str, Callable[[object], bool]], ...] = (
    ("epochs", "> 0 or None", lambda v: v is None or (is_number(v) and v > 0)),
    *((name, "an int >= 1 or None", lambda v: v is None or _positive_int(v))
      for name in ("steps", "in_channels", "threads", "max_batches_eval", "resolution_px")),
    *((name, "an int >= 1", _positive_int) for name in ("batch_size", "eval_batch_size", "log_every_steps")),
    ("crop_padding_px", "an int >= 0", lambda v: is_int(v) and v >= 0),
    ("lr", "> 0", lambda v: is_number(v) and v > 0),
    ("momentum", "in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    ("weight_decay", ">= 0", lambda v: is_number(v) and v >= 0),
    ("label_smoothing", "in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    ("warmup_fraction", "in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    ("time_budget_s", "> 0 or None", lambda v: v is None or (is_number(v) and v > 0)),
    ("max_loss", "> 0", lambda v: is_number(v) and v > 0),
    ("bn_momentum", "in (0, 1] or None", lambda v: v is None or (is_number(v) and 0 < v <= 1)),
    *((name, "a bool", lambda v: isinstance(v, bool))
      for name in ("nesterov", "horizontal_flip", "channels_last", "yield_to_measurements")),
    ("seed", "an int", is_int),
    ("device", "auto, cpu, cuda or cuda:N",
     lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()))),
)


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and standard deviation of pixel values scaled to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class TrainProgress:
    """What the progress callback of `train_model` receives every ``log_every_steps`` steps.

    Attributes:
        step: Optimizer steps done.
        total_steps: Steps planned.
        train_loss: Mean training loss over the last window of steps.
        elapsed_s: Training time so far in seconds.
    """

    step: int
    total_steps: int
    train_loss: float
    elapsed_s: float


@dataclass(frozen=True, kw_only=True)
class TrainRunResult:
    """What every training run reports, whatever its task; task results add their scores before these.

    Attributes:
        val_count: Held-out samples evaluated (fewer than given when max_batches_eval caps).
        train_loss_curve: ``(step, mean training loss over the window ending at step)`` pairs, one per
            ``log_every_steps`` steps plus one for a final partial window.
        steps: Optimizer steps done.
        planned_steps: Optimizer steps the config asked for.
        epochs: Passes over the training samples done (steps × batch / training samples).
        images_per_s: Training throughput in images per second, data pipeline included.
        train_time_s: Wall time of the training loop in seconds.
        eval_time_s: Wall time of the held-out evaluation in seconds.
        stopped_early: True when the time budget ended training before the planned steps.
        input_stats: Normalization used; pass it to the task's evaluation to score other images exactly
            as training saw them.
    """

    val_count: int
    train_loss_curve: tuple[tuple[int, float], ...]
    steps: int
    planned_steps: int
    epochs: float
    images_per_s: float
    train_time_s: float
    eval_time_s: float
    stopped_early: bool
    input_stats: ChannelStats

    def to_dict(self) -> dict[str, object]:
        """Returns the result as JSON-ready values: the task's own fields first, then the shared ones."""
        values = asdict(self)
        values["train_loss_curve"] = [list(point) for point in self.train_loss_curve]
        values["input_stats"] = {"mean": list(self.input_stats.mean), "std": list(self.input_stats.std)}
        shared = [f.name for f in fields(TrainRunResult)]
        own = {name: value for name, value in values.items() if name not in shared}
        return own | {name: values[name] for name in shared}


@dataclass(frozen=True, kw_only=True)
class TrainResult(TrainRunResult):
    """Outcome of one proxy training run (the shared fields are in :class:`TrainRunResult`).

    Attributes:
        val_accuracy: Top-1 accuracy on the evaluated held-out images, as a fraction in [0, 1].
        val_loss: Mean cross-entropy (no label smoothing) on the evaluated held-out images.
    """

    val_accuracy: float
    val_loss: float


def input_channels(dataset: Dataset, cfg: TrainConfig | None = None) -> int:
    """Returns how many input channels a model must accept to be trained on ``dataset`` with ``cfg``.

    Build candidate models with this count.

    Raises:
        ValueError: ``cfg.in_channels`` asks for a conversion other than repeating a grayscale channel.
    """
    return _resolve_in_channels(dataset.channels, cfg.in_channels if cfg is not None else None)


def _resolve_in_channels(data_channels: int, wanted: int | None) -> int:
    if wanted is None or wanted == data_channels:
        return data_channels
    if data_channels != 1:
        raise ValueError(
            f"TrainConfig.in_channels={wanted} does not fit {data_channels}-channel images; only "
            "grayscale (1-channel) images can be repeated to more channels"
        )
    return wanted


def channel_stats(images: torch.Tensor) -> ChannelStats:
    """Computes per-channel mean and std of uint8 images, exactly, without a float copy.

    A 256-bin histogram per channel gives both moments; a float copy of 60k×28×28 images would need
    188 MB.

    Args:
        images: uint8 tensor N×C×H×W (N >= 1).

    Returns:
        Statistics of the pixel values scaled to [0, 1]; std is floored at 1/255.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"channel_stats needs a non-empty uint8 N×C×H×W tensor, got {images.dtype} {tuple(images.shape)}"
        )
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = float((counts * levels).sum() / total)
        variance = float((counts * levels.square()).sum() / total) - mean**2
        means.append(mean)
        stds.append(max(math.sqrt(max(variance, 0.0)), _MIN_STD))
    return ChannelStats(mean=tuple(means), std=tuple(stds))


def preprocess(
    images: torch.Tensor,
    cfg: TrainConfig,
    stats: ChannelStats,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Turns a batch of uint8 images into normalized float network input, as one tensor.

    Steps: scale to [0, 1]; resize to ``cfg.resolution_px`` (bilinear); when a generator is given,
    augment (random crop from a zero-padded image, random horizontal flip); normalize per channel;
    repeat a grayscale channel to ``cfg.in_channels``; lay out in the memory format that
    ``cfg.channels_last`` asks for.

    Args:
        images: uint8 tensor N×C×H×W.
        cfg: Resolution, augmentation, channel and memory-format settings.
        stats: Per-channel normalization, one entry per channel of ``images``.
        generator: Source of augmentation randomness; None means no augmentation (evaluation).

    Returns:
        float32 tensor N×C'×R×R with C' = ``input_channels`` and R the input resolution.
    """
    x = images.to(torch.float32).div_(255.0)
    size_px = cfg.resolution_px
    if size_px is not None and x.shape[-2:] != (size_px, size_px):
        # Antialiasing matters only when shrinking; upsampling 28 → 32 px takes the plain kernel.
        shrinking = x.shape[-1] > size_px or x.shape[-2] > size_px
        x = F.interpolate(x, size=(size_px, size_px), mode="bilinear", align_corners=False, antialias=shrinking)
    if generator is not None:
        x = _augment(x, cfg.crop_padding_px, cfg.horizontal_flip, generator)
    mean = torch.tensor(stats.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(stats.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    x = (x - mean) / std
    channels = _resolve_in_channels(x.shape[1], cfg.in_channels)
    if channels != x.shape[1]:
        x = x.expand(-1, channels, -1, -1)
    return _in_memory_format(x, _memory_format(cfg))


def _memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def _in_memory_format(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """Returns x with the canonical strides of memory_format, copying only when they differ.

    With one channel, NCHW and NHWC strides both count as contiguous, so ``x.contiguous(...)`` keeps
    whatever strides the batch happens to have, and convolutions choose their kernel layout from those
    strides. Fixing the strides here lets the config, not the batch's history, decide the layout.
    """
    _, channels, height, width = x.shape
    if memory_format == torch.channels_last:
        wanted = (channels * height * width, 1, width * channels, channels)
    else:
        wanted = (channels * height * width, height * width, width, 1)
    return x if x.stride() == wanted else x.clone(memory_format=memory_format)


def _augment(x: torch.Tensor, padding_px: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of a zero-padded batch and random horizontal flip, as one batched gather."""
    n, _, height, width = x.shape
    if padding_px == 0 and not flip:
        return x
    padded = F.pad(x, (padding_px,) * 4) if padding_px else x
    span = 2 * padding_px + 1
    top = torch.randint(0, span, (n, 1), generator=generator)
    left = torch.randint(0, span, (n, 1), generator=generator)
    columns = torch.arange(width).expand(n, width)
    if flip:
        flipped = torch.rand(n, 1, generator=generator) < 0.5
        # Reading columns in reverse order is the flip; doing it in the same gather costs nothing extra.
        columns = torch.where(flipped, columns.flip(1), columns)
    rows = top + torch.arange(height)
    columns = left + columns
    batch = torch.arange(n).view(n, 1, 1)
    # The draws come from the CPU generator on every device (the same crops on CPU and CUDA); the
    # indices go where the images are (a no-op on the CPU).
    batch, rows, columns = (t.to(x.device) for t in (batch, rows, columns))
    # Advanced indices split by a slice put their dimensions first: the result is N×H×W×C, whose
    # NCHW permutation is already channels_last in memory.
    crops = padded[batch, :, rows.view(n, height, 1), columns.view(n, 1, width)]
    return crops.permute(0, 3, 1, 2)


def learning_rate(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for a zero-based step: linear warm-up, then cosine decay or constant.

    Args:
        step: Zero-based optimizer step, in ``[0, total_steps)``.
        total_steps: Steps planned for the run.
        cfg: Supplies lr, warmup_fraction and schedule.

    Returns:
        The learning rate for that step.
    """
    warmup_steps = round(cfg.warmup_fraction * total_steps)
    if step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    if cfg.schedule is Schedule.CONSTANT:
        return cfg.lr
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    *,
    stats: ChannelStats,
) -> tuple[float, float]:
    """Scores a classifier on uint8 images, batched, without gradients, in eval mode.

    The model's train/eval mode is restored afterwards. The model is moved in place to ``cfg.device``
    and converted to the memory format of ``cfg.channels_last`` (channels_last or NCHW).

    Args:
        model: Classifier mapping N×C×H×W float input to N×classes logits.
        images: uint8 tensor N×C×H×W.
        labels: int64 tensor of N class indices.
        cfg: Preprocessing settings, ``eval_batch_size`` and ``max_batches_eval`` (which keeps the
            first batches, so pass images in random order when capping).
        stats: Normalization of the training data, e.g. `TrainResult.input_stats`.

    Returns:
        ``(accuracy, loss)``: top-1 accuracy as a fraction and mean cross-entropy per image. The loss is
        NaN or inf when the model outputs are not finite.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"evaluate needs as many labels as images, at least one; got {len(images)} and {len(labels)}")
    count = _eval_count(len(images), cfg)
    dev = accel.device(cfg.device)
    model.to(dev, memory_format=_memory_format(cfg))
    was_training = model.training
    model.eval()
    correct = 0
    loss_sum = 0.0
    try:
        with torch.inference_mode(), accel.autocast(dev):
            for start in range(0, count, cfg.eval_batch_size):
                stop = min(start + cfg.eval_batch_size, count)
                logits = model(preprocess(accel.to_device(images[start:stop], dev), cfg, stats)).float()
                targets = accel.to_device(labels[start:stop], dev)
                loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
                correct += int((logits.argmax(dim=1) == targets).sum())
    finally:
        model.train(was_training)
    return correct / count, loss_sum / count


def _eval_count(n_images: int, cfg: TrainConfig) -> int:
    if cfg.max_batches_eval is None:
        return n_images
    return min(n_images, cfg.max_batches_eval * cfg.eval_batch_size)


def train_model(
    model: nn.Module,
    data: Dataset,
    train_idx: Sequence[int] | np.ndarray | torch.Tensor,
    val_idx: Sequence[int] | np.ndarray | torch.Tensor,
    cfg: TrainConfig,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Trains ``model`` in place on training images and scores it on held-out training images.

    Runs in this process (no DataLoader workers). Inputs are normalized with statistics of the
    ``train_idx`` images. Two runs with the same seed, config, thread count and initial weights give
    identical results on the CPU.

    Args:
        model: Classifier taking N×C×H×W float input (C = `input_channels`) and returning
            N×num_classes logits. It is trained in place (on ``cfg.device``, and returned to the
            CPU) and converted in place to the memory format of ``cfg.channels_last``.
        data: The data set; only its training split is used.
        train_idx: Indices into the training split to train on (at least 2).
        val_idx: Indices into the training split to score on, disjoint from ``train_idx``
            (see `evaluation.data.holdout_split`).
        cfg: Training settings.
        progress: Called with a `TrainProgress` every ``cfg.log_every_steps`` steps.

    Returns:
        Accuracy, losses, timings and whether the time budget stopped training early.

    Raises:
        TrainingDiverged: The training loss was NaN, inf or above ``cfg.max_loss``, or the held-out
            loss was not finite.
        ValueError: Bad indices, or logits of the wrong shape.
    """
    n_images = len(data.train_labels)
    train_index = _as_index(train_idx, n_images, "train_idx")
    val_index = _as_index(val_idx, n_images, "val_idx")
    if len(train_index) < 2:
        raise ValueError(f"train_idx needs at least 2 indices (batch norm), got {len(train_index)}")
    if len(val_index) == 0:
        raise ValueError("val_idx is empty")
    overlap = np.intersect1d(train_index.numpy(), val_index.numpy())
    if len(overlap):
        raise ValueError(f"train_idx and val_idx share {len(overlap)} indices (e.g. {int(overlap[0])})")
    _resolve_in_channels(data.channels, cfg.in_channels)
    stats = channel_stats(data.train_images[train_index])

    previous_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    previous_momenta = [m.momentum for m in norms]
    if cfg.bn_momentum is not None:
        for m in norms:
            m.momentum = cfg.bn_momentum
    try:
        train_out = _train_loop(model, data, train_index, cfg, stats, progress)
        # Copy out only the images that max_batches_eval lets evaluate look at.
        val_used = val_index[: _eval_count(len(val_index), cfg)]
        started = time.perf_counter()
        val_accuracy, val_loss = evaluate(
            model, data.train_images[val_used], data.train_labels[val_used], cfg, stats=stats
        )
        eval_time_s = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous_threads)
        for m, momentum in zip(norms, previous_momenta):
            m.momentum = momentum
        model.to(torch.device("cpu"))  # back from a GPU (weights, NetAdapt's surgery); a no-op on the CPU
    steps, planned_steps, batch_size, curve, train_time_s = train_out
    if not math.isfinite(val_loss):
        raise TrainingDiverged(steps, val_loss, what="held-out loss after training")
    return TrainResult(
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        val_count=len(val_used),
        train_loss_curve=curve,
        steps=steps,
        planned_steps=planned_steps,
        epochs=steps * batch_size / len(train_index),
        images_per_s=steps * batch_size / train_time_s if train_time_s > 0 else 0.0,
        train_time_s=train_time_s,
        eval_time_s=eval_time_s,
        stopped_early=steps < planned_steps,
        input_stats=stats,
    )


def _as_index(indices: Sequence[int] | np.ndarray | torch.Tensor, size: int, name: str) -> torch.Tensor:
    index = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
    if index.ndim != 1 or (len(index) and index.is_floating_point()) or index.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D sequence of integer indices")
    index = index.to(torch.int64)
    if len(index) and (index.min() < 0 or index.max() >= size):
        raise ValueError(f"{name} holds indices outside [0, {size}): [{int(index.min())}, {int(index.max())}]")
    return index


def _batches(train_index: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless index batches: a fresh shuffle per epoch, last incomplete batch dropped.

    Equal batch sizes keep batch-norm statistics and step sizes comparable from step to step.
    """
    while True:
        order = train_index[torch.randperm(len(train_index), generator=generator)]
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    """The memory format ``cfg.channels_last`` asks for (channels_last or NCHW)."""
    return _memory_format(cfg)


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    groups = [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    if cfg.optimizer is Optimizer.RMSPROP:
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=_RMSPROP_ALPHA, eps=_RMSPROP_EPS, momentum=cfg.momentum)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def planned_steps(cfg: TrainConfig, n_train: int, batch_size: int) -> int:
    """The optimizer steps ``cfg`` plans over ``n_train`` training items: ``cfg.steps``, or ``cfg.epochs``
    (1 when unset) passes of ``n_train // batch_size`` steps, at least one."""
    if cfg.steps is not None:
        return cfg.steps
    epochs = 1.0 if cfg.epochs is None else cfg.epochs
    return max(1, round(epochs * (n_train // batch_size)))


def run_steps(
    model: nn.Module,
    cfg: TrainConfig,
    planned: int,
    step_loss: Callable[[int], torch.Tensor],
    progress: Callable[[TrainProgress], None] | None,
    what: str = "training loss",
) -> tuple[int, tuple[tuple[int, float], ...], float]:
    """The optimizer loop every training path shares (classification here, dense tasks in
    :mod:`evaluation.dense_training`): learning-rate schedule, loss scaling, the divergence check, the loss
    curve, progress and the time budget. ``step_loss(step)`` draws the step's batch and returns its loss
    (the forward pass, under :func:`accel.autocast`); it runs while the step holds a shared claim on the
    device, so a latency measurement (which takes it exclusively) never runs while this process computes
    (:func:`latency.device.compute_slot`). The model is already on its device, in training mode.

    Returns (steps run, loss curve, seconds). Raises :class:`TrainingDiverged` (``what`` names the loss)."""
    optimizer = _make_optimizer(model, cfg)
    scaler = accel.grad_scaler(accel.device(cfg.device))  # float16 loss scaling on CUDA; a pass-through on the CPU
    slot = compute_slot if cfg.yield_to_measurements else contextlib.nullcontext
    curve: list[tuple[int, float]] = []
    window_sum, window_steps, step = 0.0, 0, 0
    started = time.perf_counter()
    while step < planned:
        lr = learning_rate(step, planned, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with slot():
            loss = step_loss(step)
            loss_value = loss.item()
            if not math.isfinite(loss_value) or loss_value > cfg.max_loss:
                raise TrainingDiverged(step, loss_value, what=what)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        step += 1
        window_sum += loss_value
        window_steps += 1
        elapsed_s = time.perf_counter() - started
        out_of_time = cfg.time_budget_s is not None and elapsed_s >= cfg.time_budget_s
        if window_steps == cfg.log_every_steps or step == planned or out_of_time:
            curve.append((step, window_sum / window_steps))
            if progress is not None:
                progress(TrainProgress(step, planned, curve[-1][1], elapsed_s))
            window_sum, window_steps = 0.0, 0
        if out_of_time:
            break
    return step, tuple(curve), time.perf_counter() - started


def _train_loop(
    model: nn.Module,
    data: Dataset,
    train_index: torch.Tensor,
    cfg: TrainConfig,
    stats: ChannelStats,
    progress: Callable[[TrainProgress], None] | None,
) -> tuple[int, int, int, tuple[tuple[int, float], ...], float]:
    """Runs the optimizer steps; returns (steps, planned steps, batch size, loss curve, seconds)."""
    batch_size = min(cfg.batch_size, len(train_index))
    planned = planned_steps(cfg, len(train_index), batch_size)
    # The global seed covers randomness inside the model (dropout, drop-path). Data order and
    # augmentation use their own generator, so every candidate sees the same batches whatever its
    # layers draw.
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    dev = accel.device(cfg.device)
    model.to(dev, memory_format=_memory_format(cfg))
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    batches = _batches(train_index, batch_size, generator)

    def step_loss(step: int) -> torch.Tensor:
        batch = next(batches)
        inputs = preprocess(accel.to_device(data.train_images[batch], dev), cfg, stats, generator)
        with accel.autocast(dev):
            logits = model(inputs)
            if step == 0:
                _check_logits(logits, batch_size, data.num_classes)
            return criterion(logits, accel.to_device(data.train_labels[batch], dev))

    steps, curve, seconds = run_steps(model, cfg, planned, step_loss, progress)
    return steps, planned, batch_size, curve, seconds


def _check_logits(logits: torch.Tensor, batch_size: int, num_classes: int) -> None:
    if logits.ndim != 2 or logits.shape != (batch_size, num_classes):
        raise ValueError(
            f"model returned logits of shape {tuple(logits.shape)}; expected ({batch_size}, {num_classes}) "
            "= (batch, classes of the data set)"
        )
