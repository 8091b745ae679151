"""Evaluating one candidate: proxy accuracy on held-out training images, and latency on the device.

This is what one Ray task runs (:mod:`evaluation.execution`). It is a plain function of plain data (a spec
as JSON, an :class:`EvalConfig`) so that it runs the same in a local worker, on a cluster node, or in
the driver. Nothing here knows about searchers or Optuna.

MnasNet trained each candidate for 5 epochs and measured accuracy on 50K images held out from the
ImageNet *training* set; here the budget is a number of optimizer steps and the held-out images are a
fixed, seeded part of the training split. The test split is never touched during a search.
"""

from __future__ import annotations

import io
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from search_spaces import ArchSpec, count

# Per-process cache: Ray reuses worker processes, so each worker loads the data set once, not once per
# trial (latency.model.latency_model keeps the latency models, and their tables, the same way).
_DATA_CACHE: dict[tuple, Any] = {}


FAULT_ENV = "HWNAS_INJECT_FAULT"
"""Fault injection for the reliability tests (``tests/reliability``); off unless this variable is set.

``FAULT:ARCH_ID[,FAULT:ARCH_ID...]`` (ARCH_ID ``*``: every candidate) makes the evaluation of that
architecture fail for real: ``nan-weights`` puts a NaN into its first weight (the training loss is
NaN), ``huge-weights`` scales every parameter by 1e4 (the loss explodes), ``export`` exports it with a
wrong input shape (the exporter fails)."""


def injected_fault(arch_id: str) -> str | None:
    """The fault :data:`FAULT_ENV` asks for on ``arch_id``, if any."""
    for item in os.environ.get(FAULT_ENV, "").split(","):
        fault, _, target = item.strip().partition(":")
        if fault and target in (arch_id, "*"):
            return fault
    return None


PROXY_TRAIN = {"batch_size": 128, "resolution_px": 32}
"""The proxy task's batch and input size (28×28 Fashion-MNIST resized to 32×32), shared by the search and
NetAdapt; each adds its length (the search's steps, NetAdapt's fine-tune steps and epochs)."""


@dataclass(frozen=True)
class EvalConfig:
    """How candidates are evaluated (everything a worker needs, as plain values).

    Attributes:
        dataset, data_dir: the proxy data set (see :func:`evaluation.data.load_dataset`).
        holdout: held-out training images used for accuracy (count or fraction).
        train_subset: train on at most this many of the remaining training images (None = all).
        train: :class:`evaluation.training.TrainConfig` as a dict (steps, batch size, resolution, ...).
        latency: ``"predicted"`` (the calibrated lookup table), ``"measured"`` (whole network) or
            ``"analytic"`` (no device); see :func:`latency_model`.
        lut_path: the lookup table file.
        measure: :class:`latency.measure.MeasureConfig` as a dict.
        deploy_resolution: input resolution at which latency is predicted/measured (224 = paper).
        split_seed: seed of the held-out split (fixed for the whole search).
        keep_weights: return the trained weights (for the best candidates).
        evaluator: how held-out accuracy is obtained (:mod:`evaluation.evaluators`): ``"proxy"`` trains
            each candidate from scratch with ``train``; ``"supernet"`` scores it as a subnet of a
            trained weight-sharing supernet (:mod:`evaluation.supernet`), BatchNorm recalibrated, at
            the supernet's resolution (of ``train`` only the threads, device and evaluation batch
            settings apply).
        supernet: the supernet file of the ``supernet`` evaluator (None: the cache's, found when the
            search starts).
        task: ``classification`` (the proxy), ``segmentation`` or ``detection`` (:mod:`evaluation.dense_task`:
            the candidate with a dense head, trained on mosaics; "accuracy" is then mIoU or mAP).
        dense: :class:`evaluation.dense_task.DenseTaskConfig` as a dict (head, RF2, mosaic data; dense tasks only).
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    holdout: int = 10_000
    train_subset: int | None = None
    train: dict = field(default_factory=dict)
    latency: str = "predicted"
    lut_path: str | None = None
    measure: dict = field(default_factory=dict)
    deploy_resolution: int = 224
    split_seed: int = 0
    keep_weights: bool = True
    evaluator: str = "proxy"
    supernet: str | None = None
    task: str = "classification"
    dense: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def measure_config(self):
        """The :class:`latency.measure.MeasureConfig` of ``measure`` (defaults when empty)."""
        from latency.measure import MeasureConfig

        return MeasureConfig.from_dict(self.measure) if self.measure else MeasureConfig()


@dataclass
class EvalResult:
    """The outcome of one evaluation; ``error`` is set (and metrics are None) when it failed."""

    arch_id: str
    accuracy: float | None = None
    val_loss: float | None = None
    latency_ms: float | None = None
    latency_predicted_ms: float | None = None
    latency_measured_ms: float | None = None
    madds: int | None = None
    params: int | None = None
    train_s: float = 0.0
    eval_s: float = 0.0
    latency_s: float = 0.0
    total_s: float = 0.0
    images_per_s: float | None = None
    steps: int | None = None
    error: str | None = None
    error_kind: str | None = None
    weights: bytes | None = None

    def metrics(self) -> dict:
        d = asdict(self)
        d.pop("weights")
        return d


def dataset_split(cfg: EvalConfig):
    """``(data, train_idx, val_idx)``: the data set and its seeded held-out split, loaded once per process."""
    from evaluation.data import holdout_split, load_dataset

    key = (cfg.dataset, cfg.data_dir, cfg.holdout, cfg.split_seed, cfg.train_subset)
    if key not in _DATA_CACHE:
        data = load_dataset(cfg.dataset, cfg.data_dir)
        train_idx, val_idx = holdout_split(len(data.train_labels), cfg.holdout, cfg.split_seed)
        if cfg.train_subset is not None:
            train_idx = train_idx[: cfg.train_subset]
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = (data, train_idx, val_idx)
    return _DATA_CACHE[key]


def latency_model(cfg: EvalConfig, kind: str | None = None):
    """The :class:`latency.model.LatencyModel` of ``cfg`` (or of ``kind`` instead of ``cfg.latency``), kept per process.

    ``"predicted"`` is the table at ``cfg.lut_path`` (default: this machine's): a
    :class:`latency.model.TableLatency`, or a :class:`latency.model.DeviceTableLatency` when the
    file is another device's. Every model times specs at ``cfg.deploy_resolution``.
    """
    from latency.model import latency_model as build

    return build(kind or cfg.latency, lut_path=cfg.lut_path, measure_config=cfg.measure_config(),
                 resolution=cfg.deploy_resolution)


def latency_table(cfg: EvalConfig):
    """The :class:`latency.lut.LatencyTable` of ``cfg`` (opened once per process)."""
    return latency_model(cfg, "predicted").table


def candidate_latency(spec: ArchSpec, cfg: EvalConfig) -> tuple[float | None, float | None]:
    """(predicted, measured) latency in ms at the deployment resolution; one of them per mode
    (``"predicted"`` and ``"analytic"`` fill the first)."""
    model = latency_model(cfg)
    ms = model.latency_ms(spec)
    return (None, ms) if model.kind == "measured" else (ms, None)


MAX_CHECKPOINT_BYTES = 2_000_000_000


class WeightsError(ValueError):
    """A checkpoint that cannot be used (unreadable, too large, not a weights-only state dict).

    ``unpickling`` is the loader's own first line when the file could not be unpickled at all (corrupt,
    truncated or carrying code), else empty."""

    def __init__(self, message: str, unpickling: str = ""):
        super().__init__(message)
        self.unpickling = unpickling


def read_weights_only(source: bytes | str | Path, *, limit: int = MAX_CHECKPOINT_BYTES, what: str = "weights") -> Any:
    """The object in a PyTorch file (or its bytes), loaded with ``weights_only=True`` (no pickled code runs).

    The one reader of checkpoints: a file over ``limit`` bytes is refused before it is read, and any
    unpickling failure (a truncated, corrupt or code-carrying file) becomes a one-line :class:`WeightsError`
    whose text starts with ``what`` (and the path) and says "not a weights-only PyTorch checkpoint".
    """
    import torch

    label = what
    if not isinstance(source, bytes):
        path = Path(source)
        label = f"{what} {path}"
        try:
            size = path.stat().st_size
        except OSError as e:
            raise WeightsError(f"cannot read {label}: {e.strerror}") from None
        if size > limit:
            raise WeightsError(f"{label} is {size} bytes; at most {limit} allowed")
        source = path.read_bytes()
    try:
        return torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        first = next((line for line in lines if "Unpickler error" in line), lines[0])[:200]
        raise WeightsError(f"{label}: not a weights-only PyTorch checkpoint ({first})", unpickling=first) from None


def load_weights(data: bytes | str | Path) -> dict:
    """A state dict from checkpoint bytes or a file, read by :func:`read_weights_only`."""
    import torch

    state = read_weights_only(data)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError("the checkpoint does not hold a state dict of tensors")
    return state


def weights_bytes(state: dict) -> bytes:
    """A state dict as checkpoint bytes (contiguous tensors, loadable by :func:`load_weights`)."""
    import torch

    buf = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in state.items()}, buf)
    return buf.getvalue()


def failure(e: BaseException) -> tuple[str, str]:
    """``(message, kind)`` of a candidate's own failure: ``diverged`` or ``error`` (one line, ≤ 500 chars)."""
    from evaluation.training import TrainingDiverged

    if isinstance(e, TrainingDiverged):
        return str(e), "diverged"
    last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return (message + (f" ({last.name})" if last else ""))[:500], "error"


def train_candidate(spec: ArchSpec, cfg: EvalConfig, train: dict, seed: int,
                    init: Callable[[Any], None] | None = None):
    """Build ``spec``, let ``init`` set its weights (if given), train it on the proxy split.

    Returns ``(model, TrainResult, TrainConfig)``. A non-finite held-out loss or accuracy raises
    :class:`evaluation.training.TrainingDiverged`. This is the one training path of a candidate: the
    search's evaluations, NetAdapt's fine-tunes and the pipelines' trainings all go through it.
    """
    import torch

    from evaluation.training import TrainConfig, TrainingDiverged, train_model
    from search_spaces.builder import build_model

    data, train_idx, val_idx = dataset_split(cfg)
    tcfg = TrainConfig(**{**train, "seed": seed, "in_channels": spec.in_channels})
    torch.manual_seed(seed)
    model = build_model(spec)
    if init is not None:
        init(model)
    tr = train_model(model, data, train_idx, val_idx, tcfg)
    if not math.isfinite(tr.val_loss) or not math.isfinite(tr.val_accuracy):
        raise TrainingDiverged(tr.steps, tr.val_loss)
    return model, tr, tcfg


def _inject(fault: str | None, model) -> None:
    import torch

    if fault in ("nan-weights", "huge-weights"):
        with torch.no_grad():
            params = list(model.parameters())
            for p in params[:1] if fault == "nan-weights" else params:
                p.mul_(math.nan if fault == "nan-weights" else 1e4)


def _is_candidate_failure(e: BaseException) -> bool:
    """Whether ``e`` is the candidate's own failure (recorded, the search goes on), not a set-up error.

    Its own: a model that cannot be built, exported or run, or that diverged (``ValueError``,
    ``RuntimeError``), and a measurement that failed on its backend (``BackendFault``, e.g. a latency
    command's bad output). Set-up errors (data set, latency configuration, device, evaluator, supernet,
    task) stop the search, though some of them are ``ValueError`` or ``RuntimeError`` too.
    """
    from evaluation.accel import DeviceError
    from evaluation.data import DatasetError
    from evaluation.dense_task import TaskError
    from evaluation.evaluators import EvaluatorError
    from evaluation.supernet import SupernetError
    from latency.backends import BackendFault
    from latency.measure import LatencyError

    if isinstance(e, BackendFault):  # a LatencyError, but this model's own
        return True
    if isinstance(e, (DatasetError, LatencyError, DeviceError, EvaluatorError, SupernetError, TaskError)):
        return False
    return isinstance(e, (ValueError, RuntimeError))


def evaluate_candidate(spec_json: str, cfg: EvalConfig, seed: int = 0) -> EvalResult:
    """Score ``spec`` by ``cfg.evaluator`` (train it on the proxy task, or score it as a subnet of the
    supernet: :mod:`evaluation.evaluators`) and time it; failures come back as an ``error``, not raised.

    Failures that are the candidate's own (a diverged/NaN loss, a model that cannot be built or
    exported) are returned in the result so the search records the trial as failed and goes on.
    """
    from evaluation.evaluators import score

    t_start = time.perf_counter()
    spec = ArchSpec.from_json(spec_json)
    result = EvalResult(arch_id=spec.arch_id)
    cost = count(spec.replace(resolution=cfg.deploy_resolution))
    result.madds, result.params = cost.madds, cost.params
    fault = injected_fault(spec.arch_id)
    try:
        if fault == "export":  # the real exporter, traced with one input channel too many
            from search_spaces.export import export_onnx

            export_onnx(spec.replace(resolution=cfg.deploy_resolution), in_channels=spec.in_channels + 1)
        t0 = time.perf_counter()
        result.latency_predicted_ms, result.latency_measured_ms = candidate_latency(spec, cfg)
        result.latency_ms = result.latency_measured_ms or result.latency_predicted_ms
        result.latency_s = time.perf_counter() - t0

        model, tr = score(spec, cfg, seed, init=lambda m: _inject(fault, m))
        result.accuracy, result.val_loss = tr.val_accuracy, tr.val_loss
        result.train_s, result.eval_s = tr.train_time_s, tr.eval_time_s
        result.images_per_s, result.steps = tr.images_per_s, tr.steps
        if cfg.keep_weights:
            result.weights = weights_bytes(model.state_dict())
    except Exception as e:  # noqa: BLE001 - sorted by _is_candidate_failure; the rest is re-raised
        if not _is_candidate_failure(e):
            raise  # the search's set-up is wrong, not this candidate: stop the search with the message
        result.error, result.error_kind = failure(e)
    result.total_s = time.perf_counter() - t_start
    return result


def train_task(spec_json: str, cfg: EvalConfig, train: dict, seed: int, test: bool = False,
               init: Callable[[Any], None] | None = None) -> dict:
    """Train ``spec`` (from scratch, or from what ``init`` loads), score it; a Ray task of plain data.

    Returns ``{arch_id, accuracy, val_loss, test_accuracy, steps, train_s, weights, error, total_s}``
    (held-out accuracy; the test split's only when ``test``; ``weights`` only with ``cfg.keep_weights``);
    a diverged or broken network comes back with ``error`` set, not raised (:func:`_is_candidate_failure`:
    a set-up error, such as a missing data set or device, is raised). Used by NetAdapt (with ``init``
    inheriting a parent's weights), the experiment pipeline and the reproduction table.
    """
    from evaluation.training import evaluate

    spec = ArchSpec.from_json(spec_json)
    out: dict = {"arch_id": spec.arch_id, "accuracy": None, "test_accuracy": None, "weights": None, "error": None}
    t0 = time.perf_counter()
    if cfg.task != "classification":  # a dense network: trained on mosaics, scored by mIoU / mAP
        return _train_dense_task(spec, cfg, train, seed, test, init, out, t0)
    try:
        model, tr, tcfg = train_candidate(spec, cfg, train, seed, init)
        out.update(accuracy=tr.val_accuracy, val_loss=tr.val_loss, steps=tr.steps, train_s=tr.train_time_s)
        if test:
            data, _, _ = dataset_split(cfg)
            out["test_accuracy"], _ = evaluate(model, data.test_images, data.test_labels, tcfg, stats=tr.input_stats)
        out["weights"] = weights_bytes(model.state_dict()) if cfg.keep_weights else None
    except Exception as e:  # noqa: BLE001 - sorted by _is_candidate_failure; the rest is re-raised
        if not _is_candidate_failure(e):
            raise  # the set-up is wrong (data set, device, task), not this network
        out["error"], _ = failure(e)
    out["total_s"] = time.perf_counter() - t0
    return out


def _train_dense_task(spec: ArchSpec, cfg: EvalConfig, train: dict, seed: int, test: bool, init, out: dict,
                      t0: float) -> dict:
    """:func:`train_task` for a dense task: "accuracy" and "test_accuracy" are the task's metric
    (:func:`evaluation.dense_task.metric_name`), on held-out and test mosaics."""
    from evaluation.dense_task import score_test_split, train_dense_candidate

    try:
        model, sc, dcfg = train_dense_candidate(spec, cfg, train, seed, init)
        out.update(accuracy=sc.val_accuracy, val_loss=None, steps=sc.steps, train_s=sc.train_time_s, metric=sc.metric)
        if test:
            out["test_accuracy"] = score_test_split(model, spec, cfg, dcfg, sc.result.input_stats)
        out["weights"] = weights_bytes(model.state_dict()) if cfg.keep_weights else None
    except Exception as e:  # noqa: BLE001 - sorted by _is_candidate_failure; the rest is re-raised
        if not _is_candidate_failure(e):
            raise
        out["error"], _ = failure(e)
    out["total_s"] = time.perf_counter() - t0
    return out


def score_task(spec_json: str, weights: bytes, cfg: EvalConfig, train: dict, test: bool = False) -> dict:
    """Held-out (and test) accuracy of trained weights, without training."""
    from evaluation.training import TrainConfig, channel_stats, evaluate
    from search_spaces.builder import build_model

    spec = ArchSpec.from_json(spec_json)
    data, train_idx, val_idx = dataset_split(cfg)
    tcfg = TrainConfig(**{**train, "in_channels": spec.in_channels})
    model = build_model(spec)
    model.load_state_dict(load_weights(weights))
    stats = channel_stats(data.train_images[train_idx])
    acc, _ = evaluate(model, data.train_images[val_idx], data.train_labels[val_idx], tcfg, stats=stats)
    out = {"accuracy": acc, "test_accuracy": None}
    if test:
        out["test_accuracy"], _ = evaluate(model, data.test_images, data.test_labels, tcfg, stats=stats)
    return out


def calibration_inputs(spec, n: int, dataset: str, data_dir: str | None, seed: int = 0) -> list:
    """``n`` real images of the dataset, preprocessed to the spec's input (for int8 calibration)."""
    import numpy as np
    import torch

    from evaluation.data import load_dataset
    from evaluation.training import TrainConfig, channel_stats, preprocess

    data = load_dataset(dataset, data_dir)
    rng = np.random.default_rng(seed)
    idx = torch.as_tensor(rng.choice(len(data.train_images), size=n, replace=False))
    images = data.train_images[idx]
    cfg = TrainConfig(resolution_px=spec.resolution, in_channels=spec.in_channels, channels_last=False)
    x = preprocess(images, cfg, channel_stats(data.train_images[:5000]))
    return [x[i:i + 1].numpy() for i in range(n)]
