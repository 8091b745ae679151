"""Latency backends: what times a model behind :func:`latency.measure.measure_onnx`.

A backend is chosen by :attr:`latency.measure.MeasureConfig.backend`; each has its own device
fingerprint (so its own lookup table, :func:`latency.lut.default_table_path`) and every consumer keeps
calling the one latency interface (:mod:`latency.model`).

* ``ort-cpu``: ONNX Runtime's CPU execution provider on this machine, ``intra_op_threads`` threads
  (the default, 1 thread; its fingerprint is unchanged by this module).
* ``ort-cuda`` / ``ort-tensorrt``: ONNX Runtime's CUDA / TensorRT execution providers
  (https://onnxruntime.ai/docs/execution-providers/), refused with one line where
  ``onnxruntime.get_available_providers()`` lacks them. Timing needs no extra synchronization: the
  inputs are host (numpy) arrays and ``InferenceSession.run`` returns only after the outputs were
  copied back to the host, so each timed ``run()`` includes the host-to-device copy of the input,
  the kernels and the device-to-host copy of the outputs (what a deployment that feeds numpy
  arrays pays; I/O binding would leave the copies out and is not used). A session whose first
  provider is not the requested one (ONNX Runtime falls back to the CPU silently when the CUDA
  libraries fail to load) is refused.
* ``command``: a user's command template, e.g. ``"adb-bench.sh {onnx} {input_shape}"``. ``{onnx}``
  becomes the path of the model file and ``{input_shape}`` its input shape (``1,3,224,224``); the
  command prints the latency in ms. It runs ``command_repeats`` times (the median is the latency),
  each within ``command_timeout_s``; its output must be exactly one finite number of milliseconds
  in ``(0, command_max_ms)`` (an optional trailing ``ms`` is allowed). For TFLite's benchmark tool
  over adb, a vendor NPU tool and the like; ``experiments/latency_command_example.sh`` is a worked
  template. Any failure raises :class:`BackendFault` saying what was printed.
* ``ray-node``: the measurement runs as a Ray task pinned by the custom resource
  ``latency:<device>`` (:func:`node_resource`) to the node that offers it, with capacity 1 so that
  one measurement runs at a time per device; there it is measured with ``ort-cpu`` under the
  node's own :func:`latency.device.device_lock`, which keeps training steps on that node
  (:func:`latency.device.compute_slot`) off its CPU. A device host joins the cluster with
  ``ray start --address=HEAD --resources='{"latency:pixel7": 1}'``. Where no node offers the
  resource, the measurement waits up to ``node_timeout_s`` and then raises
  :class:`latency.measure.LatencyError` (a set-up error: the search stops and can be resumed).

The fingerprints of ``command`` and ``ray-node`` describe the target, not this machine: its
``cpu_model`` is the device name (``MeasureConfig.device``), its provider the command template or
the Ray resource, and ``ort_version`` is ``"n/a"`` (unknown here).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latency.measure import LatencyError

if TYPE_CHECKING:
    from latency.device import DeviceFingerprint
    from latency.measure import MeasureConfig, Measurement, PairedMeasurement

__all__ = [
    "BACKENDS",
    "EXTERNAL_BACKENDS",
    "PROVIDERS",
    "BackendFault",
    "backend_fingerprint",
    "check_provider",
    "check_table_fingerprint",
    "fingerprint_summary",
    "measure_command",
    "measure_external",
    "measure_on_node",
    "measure_pair_external",
    "node_log",
    "node_resource",
    "parse_command_output",
    "providers_for",
]

BACKENDS = ("ort-cpu", "ort-cuda", "ort-tensorrt", "command", "ray-node")
"""Every value :attr:`latency.measure.MeasureConfig.backend` takes."""

EXTERNAL_BACKENDS = ("command", "ray-node")
"""Backends that do not time the model in this process with ONNX Runtime."""

PROVIDERS = {
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-tensorrt": "TensorrtExecutionProvider",
}
"""The ONNX Runtime execution provider of each in-process backend."""

PLACEHOLDERS = ("{onnx}", "{input_shape}")
"""What a ``command`` template may contain (``{onnx}`` is required)."""

NODE_RESOURCE_PREFIX = "latency:"
DEVICE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class BackendFault(LatencyError):
    """One model's measurement failed on its backend (a command's bad output, exit status or timeout).

    The model's trial fails with this message and the search goes on; nothing is written to a table.
    """


# ------------------------------------------------------------------------------------------------
# Providers (ort-cuda, ort-tensorrt)
# ------------------------------------------------------------------------------------------------


def check_provider(backend: str) -> None:
    """Raise ``ValueError`` (one line) where ``backend``'s execution provider is not in this ONNX Runtime."""
    provider = PROVIDERS.get(backend)
    if provider is None or backend == "ort-cpu":
        return
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if provider not in available:
        raise ValueError(f"latency backend {backend} needs onnxruntime-gpu's {provider}; "
                         f"available: {', '.join(available)}")


def providers_for(backend: str) -> list[str]:
    """The provider list of an ONNX Runtime session for ``backend`` (the CPU last, for unsupported ops)."""
    if backend == "ort-tensorrt":
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    if backend == "ort-cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown GPU"
    name = out.stdout.strip().splitlines()
    return name[0].strip() if out.returncode == 0 and name else "unknown GPU"


# ------------------------------------------------------------------------------------------------
# Fingerprints and the table check
# ------------------------------------------------------------------------------------------------


def node_resource(device: str) -> str:
    """The Ray custom resource of a latency device node: ``latency:<device>``."""
    return f"{NODE_RESOURCE_PREFIX}{device}"


def backend_fingerprint(cfg: MeasureConfig, fingerprint: DeviceFingerprint) -> DeviceFingerprint:
    """``fingerprint`` (this machine's, with ``cfg``'s runtime settings) adapted to ``cfg.backend``.

    ``ort-cpu`` is returned unchanged. The GPU backends name the GPU beside the host CPU; ``command``
    and ``ray-node`` name the target device instead of this machine.
    """
    if cfg.backend == "ort-cpu":
        return fingerprint
    if cfg.backend in ("ort-cuda", "ort-tensorrt"):
        return dataclasses.replace(fingerprint, cpu_model=f"{_gpu_name()} on {fingerprint.cpu_model}")
    if cfg.backend == "command":
        return dataclasses.replace(fingerprint, provider=f"command: {cfg.command}", ort_version="n/a",
                                   cpu_model=cfg.device or "command device", cpu_id="command", cpu_flags=(),
                                   logical_cores=0, machine="external")
    return dataclasses.replace(fingerprint, provider=f"ray-node: {node_resource(str(cfg.device))}",
                               ort_version="n/a", cpu_model=f"ray node {cfg.device}", cpu_id="ray-node",
                               cpu_flags=(), logical_cores=0, machine="ray-node")


def fingerprint_summary(fp: dict) -> str:
    """One phrase naming a fingerprint: backend, provider, device, threads, precision, optimization, key."""
    from latency.model import device_key

    return (f"{fp.get('backend')} ({fp.get('provider')}) on {fp.get('cpu_model')}, "
            f"{fp.get('intra_op_threads')} thread(s), {fp.get('precision')}, "
            f"optimization {fp.get('graph_optimization')}, key {device_key(fp)}")


def _hardware(fp: dict) -> tuple:
    return tuple(str(fp.get(k)) for k in ("cpu_model", "cpu_id", "logical_cores", "machine"))


def check_table_fingerprint(path: str | Path, table_fp: dict | None, local_fp: dict) -> None:
    """Refuse (one line naming both fingerprints) a table of another backend, or one made on this very
    device with other settings (thread count, precision, optimization level).

    A table of another device with the same backend is fine (read-only,
    :class:`latency.model.DeviceTableLatency`: e.g. a phone's table built from an export bundle); the
    refused ones would silently give numbers for settings that are not the ones asked for.
    """
    if not table_fp or table_fp == local_fp:
        return
    same_backend = table_fp.get("backend", "ort-cpu") == local_fp.get("backend", "ort-cpu")
    if same_backend and _hardware(table_fp) != _hardware(local_fp):
        return
    raise LatencyError(f"latency table {path} was made for {fingerprint_summary(table_fp)}, but these settings "
                       f"are {fingerprint_summary(local_fp)}; use the table's settings or another --lut")


# ------------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------------


def measure_external(model: Any, cfg: MeasureConfig) -> Measurement:
    """:func:`latency.measure.measure_onnx` for a backend in :data:`EXTERNAL_BACKENDS`."""
    if cfg.backend == "command":
        return measure_command(model, cfg)
    if cfg.backend == "ray-node":
        return measure_on_node(model, cfg)
    raise ValueError(f"backend {cfg.backend!r} is not an external backend")


def _model_bytes(model: Any) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    elif isinstance(model, (str, os.PathLike)):
        try:
            data = Path(model).read_bytes()
        except OSError as error:
            raise LatencyError(f"cannot read ONNX model {model}: {error.strerror}") from None
    elif hasattr(model, "SerializeToString"):
        data = model.SerializeToString()
    else:
        raise LatencyError(f"model must be a path, bytes or onnx.ModelProto, got {type(model).__name__}")
    if not data:
        raise LatencyError("ONNX model is empty")
    return data


def _input_shape(data: bytes) -> tuple[int, ...]:
    import onnx

    try:
        proto = onnx.load_model_from_string(data)
    except Exception as error:  # noqa: BLE001 - any parse failure means a corrupt model
        raise LatencyError(f"cannot parse ONNX model: {' '.join(str(error).split())[:200]}") from None
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if not inputs:
        raise LatencyError("ONNX model has no input")
    dims = inputs[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)


def _measurement(cfg: MeasureConfig, samples_ms: list[float], data: bytes, shape: tuple[int, ...],
                 wall_start: float, timed_s: float, fingerprint: DeviceFingerprint) -> Measurement:
    import hashlib

    from latency.measure import Measurement, summarize

    samples_ns = [max(1, int(round(ms * 1e6))) for ms in samples_ms]
    stats = summarize(samples_ns, confidence=cfg.confidence)
    return Measurement(
        median_ms=stats.median_ms, p10_ms=stats.p10_ms, p90_ms=stats.p90_ms, mean_ms=stats.mean_ms,
        min_ms=stats.min_ms, cv=stats.cv, ci_low_ms=stats.ci_low_ms, ci_high_ms=stats.ci_high_ms,
        ci_confidence=stats.ci_confidence, rel_ci_half_width=stats.rel_ci_half_width, n_samples=stats.n,
        outlier_share=stats.outlier_share, p90_over_median=stats.p90_over_median, contended=stats.contended,
        warmup_runs=0, timed_s=timed_s, wall_s=time.perf_counter() - wall_start,
        converged=stats.rel_ci_half_width <= cfg.target_rel_ci, stop_reason="command_repeats",
        precision=cfg.precision, fingerprint=fingerprint, pinned_cpu=None, input_shapes=(("input", shape),),
        model_sha256=hashlib.sha256(data).hexdigest()[:16], samples_ns=tuple(samples_ns) if cfg.keep_samples else (),
    )


# ------------------------------------------------------------------------------------------------
# command
# ------------------------------------------------------------------------------------------------


def _shown(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def parse_command_output(stdout: str, max_ms: float) -> float:
    """The latency in ms a command printed: exactly one finite number (an optional ``ms`` after it) in
    ``(0, max_ms)``; otherwise :class:`BackendFault` saying what was printed."""
    tokens = stdout.split()
    if len(tokens) == 2 and tokens[1].lower() == "ms":
        tokens = tokens[:1]
    if not tokens:
        raise BackendFault("latency command printed nothing; expected one number of milliseconds")
    if len(tokens) != 1:
        raise BackendFault(f"latency command printed {_shown(stdout)}; expected exactly one number of milliseconds")
    try:
        value = float(tokens[0])
    except ValueError:
        raise BackendFault(f"latency command printed {_shown(stdout)}, not a number of milliseconds") from None
    if not math.isfinite(value):
        raise BackendFault(f"latency command printed {_shown(stdout)}, not a finite number of milliseconds")
    if value <= 0:
        raise BackendFault(f"latency command printed {_shown(stdout)}; a latency must be > 0 ms")
    if value >= max_ms:
        raise BackendFault(f"latency command printed {_shown(stdout)}; at least command_max_ms={max_ms:g} ms "
                           "is not a plausible latency")
    return value


def _argv(template: str, onnx_path: str, shape: tuple[int, ...]) -> list[str]:
    shape_text = ",".join(str(d) for d in shape)
    return [token.replace("{onnx}", onnx_path).replace("{input_shape}", shape_text)
            for token in shlex.split(template)]


def _run_once(argv: list[str], timeout_s: float, max_ms: float) -> float:
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    except OSError as error:
        raise BackendFault(f"latency command {argv[0]!r} cannot start: {error.strerror}") from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        # The whole process group: a shell's children (adb, a benchmark) must not outlive it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = proc.communicate()
        raise BackendFault(f"latency command did not finish within command_timeout_s={timeout_s:g} s "
                           f"(printed {_shown(stdout or '')})") from None
    if proc.returncode != 0:
        raise BackendFault(f"latency command exited with status {proc.returncode} "
                           f"(stdout {_shown(stdout)}, stderr {_shown(stderr)})")
    return parse_command_output(stdout, max_ms)


def measure_command(model: Any, cfg: MeasureConfig) -> Measurement:
    """Time ``model`` with ``cfg.command``: ``cfg.command_repeats`` runs, the median is the latency.

    Each run gets the model's path (``{onnx}``) and input shape (``{input_shape}``); it is held under
    :func:`latency.device.device_lock` of the target (``cfg.device``) when ``cfg.lock`` is set, so that
    two processes of this host never time one device at once. Raises :class:`BackendFault` when a run
    prints nothing, a non-number, a value outside ``(0, command_max_ms)``, exits non-zero or hangs past
    ``command_timeout_s``.
    """
    import contextlib

    from latency.device import device_lock

    wall_start = time.perf_counter()
    data = _model_bytes(model)
    shape = _input_shape(data)
    fingerprint = cfg.fingerprint()
    lock = device_lock(fingerprint, timeout_s=cfg.lock_timeout_s) if cfg.lock else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="hwnas-command-") as tmp:
        path = Path(tmp) / "model.onnx"
        if isinstance(model, (str, os.PathLike)):
            path = Path(model).absolute()
        else:
            path.write_bytes(data)
        argv = _argv(str(cfg.command), str(path), shape)
        samples: list[float] = []
        with lock:
            t0 = time.perf_counter()
            for _ in range(cfg.command_repeats):
                samples.append(_run_once(argv, cfg.command_timeout_s, cfg.command_max_ms))
            timed_s = time.perf_counter() - t0
    return _measurement(cfg, samples, data, shape, wall_start, timed_s, fingerprint)


# ------------------------------------------------------------------------------------------------
# ray-node
# ------------------------------------------------------------------------------------------------

_NODE_LOG: list[dict] = []
_NODE_LOG_GUARD = threading.Lock()
_REMOTE: dict[str, Any] = {}


def node_log() -> list[dict]:
    """Every ``ray-node`` measurement this process asked for: ``node_id``, ``hostname``, ``start``,
    ``end`` (the node's wall clock, s), ``device``, ``model_sha256`` and ``median_ms``, in order."""
    with _NODE_LOG_GUARD:
        return list(_NODE_LOG)


def _on_node(data: bytes, inner: dict, pair: bytes | None = None) -> dict:
    """Runs on the device node: measure with ``ort-cpu`` (under the node's own device lock)."""
    import socket

    import ray

    from latency.measure import MeasureConfig, measure_onnx, measure_pair

    cfg = MeasureConfig.from_dict(inner)
    start = time.time()
    result = (measure_onnx(data, cfg) if pair is None else measure_pair(data, pair, cfg)).to_dict()
    return {"result": result, "node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
            "start": start, "end": time.time()}


def _remote():
    if "task" not in _REMOTE:
        import ray

        _REMOTE["task"] = ray.remote(max_retries=0)(_on_node)
    return _REMOTE["task"]


def _ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False, logging_level="ERROR")


def _run_on_node(cfg: MeasureConfig, data: bytes, pair: bytes | None = None) -> dict:
    import ray

    _ensure_ray()
    resource = node_resource(str(cfg.device))
    deadline = time.monotonic() + cfg.node_timeout_s
    while ray.cluster_resources().get(resource, 0) < 1:
        if time.monotonic() >= deadline:
            raise LatencyError(f"no Ray node offers the resource {resource} (latency device {cfg.device}) after "
                               f"node_timeout_s={cfg.node_timeout_s:g} s; start the device host with "
                               f"`ray start --address=HEAD --resources='{{\"{resource}\": 1}}'`, then resume")
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
    inner = dataclasses.replace(cfg, backend="ort-cpu", device=None).to_dict()
    ref = _remote().options(num_cpus=0, resources={resource: 1}).remote(data, inner, pair)
    # The wait covers the queue behind other measurements of this device, its lock and the run itself.
    budget = cfg.node_timeout_s + (cfg.lock_timeout_s or 600.0) + 2 * (cfg.time_cap_s + cfg.warmup_min_s) + 60.0
    ready, _ = ray.wait([ref], timeout=budget)
    if not ready:
        ray.cancel(ref, force=True)
        raise LatencyError(f"the measurement on Ray node {resource} did not finish within {budget:.0f} s "
                           "(the node left the cluster or is busy); resume when it is back")
    try:
        out = ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = error.as_instanceof_cause()
        if isinstance(cause, LatencyError):
            raise BackendFault(f"on Ray node {resource}: {cause}") from None
        raise LatencyError(f"the measurement on Ray node {resource} failed: {' '.join(str(cause).split())[:300]}") \
            from None
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as error:
        raise LatencyError(f"Ray node {resource} was lost during a measurement ({type(error).__name__}); "
                           "resume when it is back") from None
    return out


def _log(cfg: MeasureConfig, out: dict, sha: str, median_ms: float) -> None:
    with _NODE_LOG_GUARD:
        _NODE_LOG.append({"node_id": out["node_id"], "hostname": out["hostname"], "start": out["start"],
                          "end": out["end"], "device": cfg.device, "model_sha256": sha, "median_ms": median_ms})


def measure_pair_external(model_a: Any, model_b: Any, cfg: MeasureConfig, *, precision_a: str | None = None,
                          precision_b: str | None = None) -> PairedMeasurement:
    """:func:`latency.measure.measure_pair` for an external backend: ``ray-node`` runs it on the node;
    ``command`` cannot interleave two models and says so."""
    from latency.measure import PairedMeasurement

    if cfg.backend != "ray-node":
        raise LatencyError(f"latency backend {cfg.backend} times one model per command run; an interleaved ratio "
                           "(measure_pair, anchored calibration) needs ort-cpu, ort-cuda, ort-tensorrt or ray-node")
    if (precision_a or cfg.precision) != cfg.precision or (precision_b or cfg.precision) != cfg.precision:
        raise LatencyError("ray-node: measure_pair of two precisions is not supported; measure each side apart")
    out = _run_on_node(cfg, _model_bytes(model_a), _model_bytes(model_b))
    paired = PairedMeasurement.from_dict(out["result"])
    fingerprint = cfg.fingerprint()
    paired = dataclasses.replace(paired, fingerprint_a=fingerprint, fingerprint_b=fingerprint)
    _log(cfg, out, paired.model_a_sha256, paired.median_a_ms)
    return paired


def measure_on_node(model: Any, cfg: MeasureConfig) -> Measurement:
    """Measure ``model`` on the Ray node that offers ``latency:<cfg.device>`` (see the module docstring).

    The result's fingerprint is ``cfg``'s (the ``ray-node`` one); the node's id, host and the wall
    clock interval of the measurement are appended to :func:`node_log`.
    """
    from latency.measure import Measurement

    data = _model_bytes(model)
    out = _run_on_node(cfg, data)
    result = out["result"]
    measurement = Measurement.from_dict(result)
    measurement = dataclasses.replace(measurement, fingerprint=cfg.fingerprint())
    _log(cfg, out, measurement.model_sha256, measurement.median_ms)
    return measurement

