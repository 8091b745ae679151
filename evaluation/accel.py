"""Where training runs: the one device abstraction of the training code (CPU, or CUDA when present).

Every device-dependent line of the training paths (:mod:`evaluation.training`, :mod:`evaluation.supernet`)
goes through these helpers, so that the default tests run each of them on the CPU: ``device(name)``
resolves ``auto|cpu|cuda``, :func:`autocast` and :func:`grad_scaler` turn mixed precision on for CUDA
only (float16 autocast with a loss scaler; on the CPU both are disabled and change nothing), and
:func:`to_device` moves batches (non-blocking from pinned memory on CUDA, a no-op on the CPU).

Latency is never taken here: it stays on the latency backend (:mod:`latency.model`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so that the CLIs' option tables stay light
    import torch

DEVICES = ("auto", "cpu", "cuda")
"""Accepted device names: ``auto`` is CUDA when this process sees a GPU, else the CPU."""
DEFAULT_DEVICE = "auto"
"""The default of every ``device`` setting (``TrainConfig.device``, ``--device``)."""


class DeviceError(ValueError):
    """A device that was asked for and is not there (``--device cuda`` without CUDA), or an unknown name."""


def cuda_available() -> bool:
    """True when torch was built with CUDA and this process sees at least one GPU."""
    import torch

    return torch.cuda.is_available()


def device(name: str | None = "auto") -> torch.device:
    """The torch device of ``name`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``; None = ``auto``).

    ``auto`` picks CUDA when this process sees a GPU: a Ray task that requested none sees none (Ray
    hides them), so it trains on the CPU. ``cuda`` without a GPU raises :class:`DeviceError`.
    """
    import torch

    name = "auto" if name is None else str(name)
    if name == "auto":
        return torch.device("cuda") if cuda_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not cuda_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise DeviceError(f"--device {name}: CUDA is not available on this machine ({why}, torch "
                              f"{torch.__version__}); use --device cpu or auto")
        return torch.device(name)
    raise DeviceError(f"unknown device {name!r}; known: {', '.join(DEVICES)}")


def check_device(name: str | None) -> None:
    """Raise :class:`DeviceError` now (before anything starts) if ``name`` cannot be used in this process."""
    device(name)


def uses_amp(dev: torch.device) -> bool:
    """Mixed precision (float16 autocast + loss scaling) is used on CUDA only."""
    return dev.type == "cuda"


def autocast(dev: torch.device):
    """The autocast context of ``dev``: float16 on CUDA; disabled (a plain context) on the CPU."""
    import torch

    if not uses_amp(dev):
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=torch.float16)


def grad_scaler(dev: torch.device) -> torch.amp.GradScaler:
    """A loss scaler for float16 training on CUDA; on the CPU a disabled one (``scale`` returns the loss
    unchanged, ``step`` is ``optimizer.step()``), so that one code path serves both."""
    import torch

    return torch.amp.GradScaler(dev.type, enabled=uses_amp(dev))


def to_device(x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """``x`` on ``dev`` (a no-op when it is there already; non-blocking from pinned memory on CUDA)."""
    if x.device == dev:
        return x
    return x.to(dev, non_blocking=x.is_pinned())


def synchronize(dev: torch.device) -> None:
    """Wait for the device's queued work (so that timings cover it); nothing to wait for on the CPU."""
    if dev.type == "cuda":
        import torch

        torch.cuda.synchronize(dev)


def describe(dev: torch.device) -> str:
    """A short name of the device for logs: ``cpu (2 threads)`` or ``cuda:0 (NVIDIA ..., float16 AMP)``."""
    import torch

    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}, float16 AMP, channels_last)"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"
