"""Device fingerprint, a per-device, cross-process measurement lock, and compute slots for training.

A latency number is only meaningful together with the machine and runtime settings that
produced it: ONNX Runtime picks different kernels for AVX2, AVX-512, VNNI and AMX, the NCHWc
layout transformer runs only at ``ORT_ENABLE_ALL``
(https://onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html), and
kernels and graph rewrites change between ORT releases, so results are not portable across ORT
versions (nn-Meter notes the same of TFLite's ``benchmark_model`` versions:
https://github.com/microsoft/nn-Meter/blob/main/docs/builder/prepare_backend.md).
:class:`DeviceFingerprint` captures exactly those inputs, and its :attr:`DeviceFingerprint.key`
names per-device caches (lookup tables, calibration factors).

:func:`device_lock` serialises measurements on one machine. Two concurrent measurements on
the same core leave the median unchanged but triple the p90 (a one-off measurement on the
development VM, quoted in :mod:`latency.measure`), so a pipeline that looks at medians only
would not notice; the lock makes overlap impossible instead of merely detectable. It is an
``fcntl.flock`` on a file under the cache directory, so it works across unrelated processes
(Ray workers, several CLI runs), and it is re-entrant inside one process so that a caller may
hold it around a batch of measurements. Training steps take a :func:`compute_slot` (a shared
lock behind a "gate" file): a measurement first closes the gate, so that no new step starts,
then waits for the steps in progress, measures on a quiet machine and reopens the gate; so
measurements overlap neither each other nor training, while trainers never wait for each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import platform
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DeviceFingerprint",
    "DeviceLockTimeout",
    "RELEVANT_CPU_FLAGS",
    "cache_dir",
    "cpu_info",
    "device_fingerprint",
    "device_lock",
    "lock_dir",
    "lock_path",
]

#: Environment variable that overrides the cache root (default ``~/.cache/hwnas``).
CACHE_DIR_ENV = "HWNAS_CACHE_DIR"

#: CPU features that change which ORT / MLAS kernels run (x86 and Arm). Only these are kept in
#: the fingerprint, so that unrelated flags (e.g. mitigations) do not split caches.
RELEVANT_CPU_FLAGS: tuple[str, ...] = (
    # x86
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    # Arm (/proc/cpuinfo "Features")
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
)

_FINGERPRINT_SCHEMA_VERSION = 1


class DeviceLockTimeout(TimeoutError):
    """Raised when :func:`device_lock` cannot get the lock within ``timeout_s``."""


@dataclasses.dataclass(frozen=True)
class DeviceFingerprint:
    """Everything that decides which kernels run, hence what a latency number means.

    Attributes:
        backend: Measurement backend, e.g. ``"ort-cpu"``.
        provider: ONNX Runtime execution provider, e.g. ``"CPUExecutionProvider"``.
        ort_version: ``onnxruntime.__version__``.
        cpu_model: ``model name`` from ``/proc/cpuinfo`` (generic under some hypervisors,
            hence ``cpu_id`` too).
        cpu_id: Vendor / family / model / stepping (x86) or implementer / part (Arm).
        cpu_flags: Sorted subset of :data:`RELEVANT_CPU_FLAGS` present on this CPU.
        logical_cores: ``os.cpu_count()`` of the machine.
        machine: ``platform.machine()``, e.g. ``"x86_64"``.
        intra_op_threads: ORT intra-op threads used for the measurement.
        inter_op_threads: ORT inter-op threads used for the measurement.
        allow_spinning: ORT ``session.intra_op.allow_spinning`` (matters above one thread).
        graph_optimization: ORT graph optimization level name (``"all"``, ``"extended"``, ...).
        precision: ``"fp32"`` or ``"int8"``.
        schema_version: Version of this record's layout.
    """

    backend: str
    provider: str
    ort_version: str
    cpu_model: str
    cpu_id: str
    cpu_flags: tuple[str, ...]
    logical_cores: int
    machine: str
    intra_op_threads: int
    inter_op_threads: int
    allow_spinning: bool
    graph_optimization: str
    precision: str
    schema_version: int = _FINGERPRINT_SCHEMA_VERSION

    @property
    def key(self) -> str:
        """Stable 16-hex-digit hash of all fields; names per-device caches."""
        return _short_hash(self.to_dict())

    @property
    def hardware_key(self) -> str:
        """Hash of the hardware fields only (CPU and core count), not of runtime settings."""
        hardware = {
            "cpu_model": self.cpu_model,
            "cpu_id": self.cpu_id,
            "cpu_flags": list(self.cpu_flags),
            "logical_cores": self.logical_cores,
            "machine": self.machine,
        }
        return _short_hash(hardware)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["cpu_flags"] = list(self.cpu_flags)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceFingerprint:
        """Inverse of :meth:`to_dict`; rejects unknown or missing fields."""
        kwargs = checked_fields(cls, data)
        kwargs["cpu_flags"] = tuple(kwargs["cpu_flags"])
        return cls(**kwargs)


def _short_hash(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def checked_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` restricted to ``cls`` fields, raising on unknown or missing ones."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(fields)}")
    missing = sorted(
        name
        for name, f in fields.items()
        if name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"{cls.__name__}: missing field(s) {missing}")
    return dict(data)


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """CPU model, identity, relevant flags and core count of this machine (cached).

    Returns:
        Dict with ``cpu_model``, ``cpu_id``, ``cpu_flags`` (sorted tuple), ``logical_cores``
        and ``machine``. Falls back to :mod:`platform` where ``/proc/cpuinfo`` is missing.
    """
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    # The first processor block describes the CPU; all blocks are identical on the machines
    # we target (no big.LITTLE handling: pin to a core type and say so in the report).
    for line in text.split("\n\n", 1)[0].splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), value.strip())
    flags_text = fields.get("flags") or fields.get("features") or ""
    present = set(flags_text.split())
    flags = tuple(sorted(flag for flag in RELEVANT_CPU_FLAGS if flag in present))
    if "vendor_id" in fields:
        cpu_id = "/".join(
            fields.get(k, "?") for k in ("vendor_id", "cpu family", "model", "stepping")
        )
    elif "cpu implementer" in fields:
        cpu_id = "/".join(
            fields.get(k, "?") for k in ("cpu implementer", "cpu architecture", "cpu part")
        )
    else:
        cpu_id = "unknown"
    cpu_model = fields.get("model name") or platform.processor() or "unknown"
    return {
        "cpu_model": cpu_model,
        "cpu_id": cpu_id,
        "cpu_flags": flags,
        "logical_cores": os.cpu_count() or 0,
        "machine": platform.machine() or "unknown",
    }


def device_fingerprint(
    *,
    backend: str = "ort-cpu",
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
    allow_spinning: bool = True,
    graph_optimization: str = "all",
    precision: str = "fp32",
    provider: str = "CPUExecutionProvider",
) -> DeviceFingerprint:
    """Fingerprint of this machine plus the given runtime settings.

    ``latency.measure`` calls this with the fields of a ``MeasureConfig``; the arguments are
    plain values so that this module does not depend on the measurer.

    Returns:
        A :class:`DeviceFingerprint`; equal arguments on one machine give an equal ``key``.
    """
    import onnxruntime  # local: importing this module must stay cheap (lock users need no ORT)

    info = cpu_info()
    return DeviceFingerprint(
        backend=backend,
        provider=provider,
        ort_version=onnxruntime.__version__,
        cpu_model=info["cpu_model"],
        cpu_id=info["cpu_id"],
        cpu_flags=info["cpu_flags"],
        logical_cores=info["logical_cores"],
        machine=info["machine"],
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        allow_spinning=allow_spinning,
        graph_optimization=graph_optimization,
        precision=precision,
    )


def cache_dir() -> Path:
    """Cache root: ``$HWNAS_CACHE_DIR`` if set, else ``~/.cache/hwnas``."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "hwnas"


def lock_dir() -> Path:
    """Directory holding the lock files (``<cache_dir>/locks``)."""
    return cache_dir() / "locks"


_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]+")


def _lock_name(fingerprint_or_name: DeviceFingerprint | str | None) -> str:
    if fingerprint_or_name is None:
        fingerprint_or_name = _machine_lock_name()
    if isinstance(fingerprint_or_name, DeviceFingerprint):
        # The lock protects the *hardware*: fp32 and int8 (or 1- and 2-thread) measurements on
        # the same machine must exclude each other, so runtime settings are left out. The host
        # name keeps machines apart if the cache directory is on a shared file system.
        return f"{_hostname()}-{fingerprint_or_name.hardware_key}"
    if not isinstance(fingerprint_or_name, str) or not fingerprint_or_name.strip():
        raise ValueError(
            "device_lock: expected a DeviceFingerprint, a non-empty name or None, "
            f"got {fingerprint_or_name!r}"
        )
    return _NAME_OK.sub("_", fingerprint_or_name.strip())


def _hostname() -> str:
    return _NAME_OK.sub("_", socket.gethostname() or "localhost")


def _machine_lock_name() -> str:
    info = cpu_info()
    hardware = {
        "cpu_model": info["cpu_model"],
        "cpu_id": info["cpu_id"],
        "cpu_flags": list(info["cpu_flags"]),
        "logical_cores": info["logical_cores"],
        "machine": info["machine"],
    }
    return f"{_hostname()}-{_short_hash(hardware)}"


def lock_path(fingerprint_or_name: DeviceFingerprint | str | None = None) -> Path:
    """Path of the lock file that :func:`device_lock` uses for this device or name.

    A fingerprint and ``None`` (this machine) map to the same file, whatever the runtime
    settings in the fingerprint.
    """
    return lock_dir() / f"{_lock_name(fingerprint_or_name)}.lock"


class _HeldLock:
    """Per-process state of one lock file: a thread lock plus the flock'ed descriptor."""

    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None
        self.gate_fd: int | None = None


_registry: dict[str, _HeldLock] = {}
_registry_guard = threading.Lock()


def _reset_after_fork() -> None:
    # A forked child does not own its parent's lock: start it with a clean registry, and close
    # its copies of the parent's descriptors (closing a copy never unlocks; it only stops the
    # child from keeping the lock alive should the parent die first).
    global _registry, _registry_guard, _compute_fds
    for held in _registry.values():
        for fd in (held.fd, held.gate_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
    for fds in _compute_fds.values():
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    _compute_fds = {}
    _registry = {}
    _registry_guard = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _holder_info(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown holder"
    return text or "unknown holder"


@contextlib.contextmanager
def device_lock(
    fingerprint_or_name: DeviceFingerprint | str | None = None,
    *,
    timeout_s: float | None = None,
    poll_s: float = 0.01,
) -> Iterator[Path]:
    """Hold the exclusive measurement lock of one device, across processes.

    Re-entrant within a process (a caller can hold it around many measurements, and the
    measurer takes it again inside without deadlocking); exclusive between threads and
    between processes. Released when the block exits or the process dies (flock semantics).

    Args:
        fingerprint_or_name: A :class:`DeviceFingerprint` (its hardware part picks the lock,
            so different precisions or thread counts on one machine share it), a lock name, or
            ``None`` for this machine.
        timeout_s: Give up after this many seconds with :class:`DeviceLockTimeout`; ``None``
            waits forever.
        poll_s: Polling interval in seconds while waiting with a timeout.

    Yields:
        The lock file path.

    Raises:
        DeviceLockTimeout: The lock was not free within ``timeout_s``.
        ValueError: Invalid name or timeout.
    """
    if timeout_s is not None and timeout_s < 0:
        raise ValueError(f"device_lock: timeout_s must be >= 0 or None, got {timeout_s}")
    path = lock_path(fingerprint_or_name)
    key = str(path)
    with _registry_guard:
        held = _registry.setdefault(key, _HeldLock())

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    got_thread = held.thread_lock.acquire(timeout=-1 if timeout_s is None else timeout_s)
    if not got_thread:
        raise DeviceLockTimeout(
            f"device lock {path} is held by another thread of this process (pid {os.getpid()})"
        )
    try:
        if held.depth == 0:
            # The gate first: it stops training steps (compute_slot) from starting, so the
            # measurement lock below is not starved by overlapping steps of several trainers.
            gate = _acquire_file_lock(gate_path(path), deadline, poll_s)
            try:
                held.fd = _acquire_file_lock(path, deadline, poll_s)
            except BaseException:
                _unlock(gate)
                raise
            held.gate_fd = gate
        held.depth += 1
        try:
            yield path
        finally:
            held.depth -= 1
            if held.depth == 0 and held.fd is not None:
                fd, held.fd = held.fd, None
                gate, held.gate_fd = held.gate_fd, None
                try:
                    _unlock(fd)
                finally:
                    if gate is not None:
                        _unlock(gate)
    finally:
        held.thread_lock.release()


def _unlock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def gate_path(path: Path) -> Path:
    """The gate file beside a device lock file (see :func:`compute_slot`)."""
    return path.with_suffix(".gate")


_compute_fds: dict[str, tuple[int, int]] = {}


@contextlib.contextmanager
def compute_slot(fingerprint_or_name: DeviceFingerprint | str | None = None) -> Iterator[None]:
    """Hold a *shared* claim on the device for a short burst of other work (one training step).

    Latency measured while training shares the cores is inflated (measured here: 2.5x on a 2-core
    machine with two training processes). Training takes this slot around each step; a
    measurement (:func:`device_lock`) first closes the gate — no new step starts — then waits for
    the steps in progress to end, measures on a quiet machine, and opens the gate again. Many
    trainers can hold slots at once; they only ever wait for measurements, never for each other.
    """
    path = lock_path(fingerprint_or_name)
    key = str(path)
    fds = _compute_fds.get(key)
    if fds is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fds = (os.open(gate_path(path), os.O_RDWR | os.O_CREAT, 0o644), os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
        _compute_fds[key] = fds
    gate, main = fds
    fcntl.flock(gate, fcntl.LOCK_SH)  # waits while a measurement holds the gate
    fcntl.flock(gate, fcntl.LOCK_UN)
    fcntl.flock(main, fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(main, fcntl.LOCK_UN)


def _acquire_file_lock(path: Path, deadline: float | None, poll_s: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if deadline is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise DeviceLockTimeout(
                            f"device lock {path} not free in time; held by {_holder_info(path)}"
                        ) from None
                    time.sleep(poll_s)
        # Record the holder for error messages; informational only (the flock is the lock).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd
