"""The MnasNet-style search loop: ask a searcher, evaluate on Ray, tell, record — resumably.

Paper: Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile", CVPR 2019,
https://arxiv.org/abs/1807.11626 (reward ACC·(LAT/T)^w, §3; search loop, §4.2).

The search state is an Optuna study in the run directory (``study.journal``); every searcher is an
Optuna sampler, so persistence, resume and the trial table come for free. Each trial's record (arch
id, accuracy, latencies, costs, reward, timings, error) is stored in the trial's user attributes,
and ``trials.csv`` is rewritten from the study after every trial (atomically). At the end the top-k
candidates are re-measured whole on the device while nothing else runs, and the best one is written
as ``found.json`` (a spec: the input of ``netadapt refine --arch``) with its weights ``found.pt``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from evaluation import configs, rundir
from evaluation.evaluate import (
    PROXY_TRAIN,
    EvalConfig,
    EvalResult,
    latency_model,
)
from evaluation.rundir import (
    CONFIG_FILE,
    FOUND_FILE,
    FOUND_METRICS_FILE,
    FOUND_WEIGHTS_FILE,
    LOG_FILE,
    PARETO_FILE,
    REMEASURED_FILE,
    STUDY_FILE,
    TRIALS_FILE,
    WEIGHTS_DIR,
    RunClock,
    atomic_write_bytes,
    atomic_write_text,
    environment,
    log_line,
    missing_dirs,
    read_json,
    write_csv,
)
from search_spaces import ArchSpec, references
from search_spaces.progress import PROGRESS_EVERY_S, Progress, format_duration, heartbeat
from search_spaces.suggest import unknown_name

PRESETS = {
    # MobileNetV3 §4.1: Large reused MnasNet's search (w = −0.07) with A1 as the seed; Small was a
    # new search with w = −0.15 in a smaller space.
    "large": {"space": "mobilenetv3", "alpha": -0.07, "beta": -0.07, "target_like": "mnasnet_a1"},
    "small": {"space": "mobilenetv3_small", "alpha": -0.15, "beta": -0.15, "target_like": "mobilenetv3_small"},
}
SEARCH_TRAIN = {**PROXY_TRAIN, "steps": 150}  # each candidate's proxy training (see the README's figures)
LATENCY_MODES = ("predicted", "measured", "analytic")  # EvalConfig.latency: which latency model scores candidates
# Whole networks the table's calibration is fitted on before a first search. More did not measurably help:
# refitted on 12 / 20 / 30 of 100 networks measured on a quiet host, the held-out share within ±5 % was
# 65 / 74 / 76 % in one window and 50 / 49 / 53 % in another, and a table built on 20 validated no better
# than one on 12 (README, "Measured results"; experiments/bench_lut_accuracy.py --refit).
CALIBRATION_NETWORKS = 12
LATER_HEARTBEAT_S = 60.0  # "training trial(s) ..." after this long without a line, once a result gave an ETA
STUDY_NAME = "search"
START_FILES = (CONFIG_FILE, LOG_FILE, STUDY_FILE, WEIGHTS_DIR)  # what a new search writes before its first trial


class SearchError(ValueError):
    """A search that cannot start or go on (bad options, a run directory in the way, ...)."""


@dataclass(frozen=True)
class SearchConfig(configs.RunConfig):
    """Everything a search needs; saved as ``config.json`` and reloaded by ``--resume``.

    Attributes:
        run_dir: the run directory.
        space: search space name (see :mod:`search_spaces.spaces`).
        searcher: ``rl``, ``evolution``, ``predictor``, ``tpe``, ``nsga2`` or ``random``.
        searcher_options: keyword options of the searcher's sampler (``nas search --searcher-option``);
            they override the budget rule (:data:`nas.searchers.BUDGET_RULE`), which sizes the
            searcher's start-up from ``trials`` and the workers.
        trials: trials to finish (completed or failed), seeds included.
        target_ms: latency target T in ms (or None with ``target_like``).
        target_like: a reference architecture whose latency on this device is the target.
        alpha, beta: reward exponents (w = α if LAT ≤ T else β); soft: −0.07/−0.07, hard: 0/−1.
        seed: seeds the searcher, the held-out split and every candidate's training.
        seeds: enqueue the space's known architectures first.
        workers: concurrent evaluations (None: all CPUs of the Ray cluster / cpus_per_trial).
        cpus_per_trial: CPUs (and torch threads) per evaluation.
        gpus_per_trial: GPUs per evaluation (fractions allowed; 0: trials train on the CPU). Where to
            train is ``eval.train["device"]`` (``auto``: the GPU a trial was given, if any).
        ray_address: join this Ray cluster instead of starting a local one.
        max_retries: Ray retries of an evaluation whose worker died.
        top_k: candidates re-measured whole on the device at the end.
        eval: how candidates are evaluated (data, training budget, latency mode and table).
    """

    run_dir: str
    space: str = "mobilenetv3"
    searcher: str = "rl"
    searcher_options: dict = field(default_factory=dict)
    trials: int = 16
    target_ms: float | None = None
    target_like: str | None = None
    alpha: float = -0.07
    beta: float = -0.07
    seed: int = 0
    seeds: bool = True
    workers: int | None = None
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0
    ray_address: str | None = None
    max_retries: int = 2
    top_k: int = 3
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(train=dict(SEARCH_TRAIN)))

    SECTION: ClassVar[str] = "search"  # to_dict / from_dict / load: see evaluation.configs.RunConfig
    WHAT: ClassVar[str] = "search"
    ERROR: ClassVar[type[Exception]] = SearchError
    NESTED: ClassVar[dict] = {"eval": EvalConfig}


# ------------------------------------------------------------------------------------------------
# Run directory
# ------------------------------------------------------------------------------------------------


def repair_journal(path: Path) -> bool:
    """Cut a torn last record off the study journal; True if there was one.

    A crash in the middle of an append (power loss, a full disk) leaves a last line without its
    newline. Optuna skips it when reading, but appends the next record right after it, and the merged
    line makes the journal unreadable (the resumed search fails at its first ask). The torn operation
    never completed, so dropping it loses nothing that was acknowledged: a trial whose result it held
    is still RUNNING in the journal and runs again as an interrupted trial.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    if not data or data.endswith(b"\n"):
        return False
    atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])
    return True


def remove_failed_start(run_dir: Path, created: list[Path]) -> None:
    """Undo a new search that failed before its first trial: delete the files it wrote and the
    directories it created (``created``, deepest first). Nothing else is touched: a run directory that
    holds anything but :data:`START_FILES` (or weights) is left as it is, and so is one that existed."""
    try:
        names = {p.name for p in run_dir.iterdir()}
        weights = run_dir / WEIGHTS_DIR
        if not names <= set(START_FILES) or (weights.is_dir() and any(weights.iterdir())):
            return
        for name in names:
            path = run_dir / name
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        for d in created:
            d.rmdir()  # only empty directories
    except OSError:
        pass  # best effort: the error that stopped the start is what matters


# ------------------------------------------------------------------------------------------------
# Trials: records in the study's user attributes, trials.csv and pareto.csv
# ------------------------------------------------------------------------------------------------

RECORD_FIELDS = ("arch_id", "seed_name", "duplicate_of", "accuracy", "latency_ms", "latency_predicted_ms",
                 "latency_measured_ms", "reward", "madds", "params", "train_s", "eval_s", "latency_s", "total_s",
                 "images_per_s", "error")


def trial_rows(study, space, remeasured: dict[int, float]) -> list[dict]:
    """One dict per trial, in trial order (the rows of trials.csv)."""
    import optuna

    names = [d.name for d in space.decisions()]
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name}
        row.update({f: t.user_attrs.get(f) for f in RECORD_FIELDS})
        if t.number in remeasured:
            row["latency_measured_ms"] = remeasured[t.number]
        if t.state == optuna.trial.TrialState.FAIL and "error" not in t.user_attrs:
            row["state"] = "INTERRUPTED"  # run again as a later trial (see rerun_of)
        row.update({n: t.params.get(n) for n in names})
        rows.append(row)
    return rows


def pareto_front(rows: list[dict]) -> list[dict]:
    """Completed trials not dominated in (accuracy ↑, latency ↓), sorted by latency."""
    done = [r for r in rows if r["state"] == "COMPLETE" and r["accuracy"] is not None]
    done.sort(key=lambda r: (_latency(r), -r["accuracy"]))
    front, best_acc = [], -1.0
    for r in done:
        if r["accuracy"] > best_acc:
            front.append(r)
            best_acc = r["accuracy"]
    return front


def _latency(row: dict) -> float:
    return row.get("latency_measured_ms") or row["latency_ms"]


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


@dataclass
class SearchOutcome:
    run_dir: Path
    found: ArchSpec | None
    found_metrics: dict | None
    completed: int
    failed: int
    wall_s: float


def check_target(cfg: SearchConfig) -> None:
    """Cheap checks of the target options, before anything is measured or started."""
    if cfg.target_ms is not None:
        if not (math.isfinite(cfg.target_ms) and cfg.target_ms > 0):
            raise SearchError(f"--target-ms must be a positive number, got {cfg.target_ms}")
    elif not cfg.target_like:
        raise SearchError("give --target-ms, --target-like ARCH or --preset large|small")
    elif cfg.target_like not in references.names() + references.dense_names():
        raise SearchError(f"--target-like: {unknown_name('architecture', cfg.target_like, references.names())}")
    elif cfg.target_like in references.dense_names() and cfg.eval.task == "classification":
        raise SearchError(f"--target-like {cfg.target_like} is a dense network; give --task segmentation|detection "
                          "or a classification reference")


def resolve_target(cfg: SearchConfig, space, echo=None) -> float:
    """T in ms: given, or the latency of ``target_like`` on this device (same table/measurer)."""
    check_target(cfg)
    if cfg.target_ms is not None:
        return float(cfg.target_ms)
    ref = references.get(cfg.target_like).replace(in_channels=space.in_channels, num_classes=space.num_classes)
    if cfg.eval.task != "classification":  # the reference with the task's head (a dense reference keeps its own)
        ref = space.with_head(ref)
    target = latency_model(cfg.eval).latency_ms(ref)
    if echo:
        echo(f"target: latency of {cfg.target_like} on this device = {target:.3f} ms")
    return target


def corner_specs(space) -> dict[str, ArchSpec]:
    """The fastest and slowest corners of a space (bounds of its reachable latency range)."""
    low, high = {}, {}
    for d in space.decisions():
        field_name = d.name.split(".", 1)[1]
        fastest = {"op": "dsconv", "kernel": 3, "se": 0.0, "skip": "none", "filters": 0.75, "layers": -1,
                   "act": "relu"}[field_name]
        slowest = {"op": "conv", "kernel": 5, "se": 0.25, "skip": "identity", "filters": 1.25, "layers": 1,
                   "act": "hswish"}[field_name]
        low[d.name], high[d.name] = fastest, slowest
    return {"fastest": space.decode(low), "slowest": space.decode(high)}


def ensure_calibration(cfg: SearchConfig, space, echo=None) -> None:
    """A predicted-latency search needs a calibrated table: fit one on a few whole networks if absent.

    The layer entries the start needs (the calibration networks', the space's corners') are measured
    first, with progress lines. One process at a time calibrates a table
    (:meth:`latency.lut.LatencyTable.calibration_lock`): a second search started meanwhile says that
    it waits, and then uses the calibration the first one stored.
    """
    from latency.model import TableLatency

    model = latency_model(cfg.eval)
    if not isinstance(model, TableLatency) or not model.can_measure:
        return  # measured or analytic latency, or another device's table (calibrated there)
    table = model.table
    corners = [s.replace(resolution=cfg.eval.deploy_resolution) for s in corner_specs(space).values()]
    if table.calibration.n_points >= CALIBRATION_NETWORKS:
        measure_entries(table, corners, echo)
        return

    def waiting(waited_s: float) -> None:
        if echo:
            echo(f"waiting for another process that is calibrating the latency table {table.path} "
                 f"({format_duration(waited_s)} so far); its calibration will be used")

    with table.calibration_lock(on_wait=waiting):
        have = table.calibration.n_points  # re-read under the lock
        if have >= CALIBRATION_NETWORKS:
            if echo:
                echo(f"  using the calibration of {table.path}: {table.calibration.describe()}")
            measure_entries(table, corners, echo)
            return
        # The same list every time (seeds, then random networks drawn with cfg.seed), less the networks
        # already recorded, so that a table calibrated on fewer networks (an older default) is topped
        # up with new ones instead of measuring its own again.
        seen = {p["arch_id"] for p in table.store.points()}
        rng = np.random.default_rng(cfg.seed)
        seeds = (space.decode(v) for v in space.seeds().values())
        draws = (space.decode(space.sample(rng)) for _ in range(100 * CALIBRATION_NETWORKS))  # bounded: a tiny space
        specs = []
        for spec in itertools.chain(seeds, draws):
            if len(specs) >= CALIBRATION_NETWORKS - have:
                break
            spec = spec.replace(resolution=cfg.eval.deploy_resolution)
            if spec.arch_id not in seen:
                seen.add(spec.arch_id)
                specs.append(spec)
        if echo:
            echo(f"calibrating the latency table {table.path} on {len(specs)} whole networks (once per device; "
                 "a few minutes)")
        measure_entries(table, specs + corners, echo)
        cal = table.calibrate(specs, progress=Progress(echo, "whole networks measured", "networks"))
    if echo:
        echo(f"  calibration: {cal.describe()}")


def measure_entries(table, specs, echo=None) -> int:
    """Measure the table entries of ``specs``' layers that are missing, with progress lines; how many."""
    from search_spaces.walk import walk

    missing = table.missing(layer.key for spec in specs for layer in walk(spec))
    if missing and echo:
        echo(f"  measuring {len(missing)} layer entries of the latency table")
    return table.ensure(missing, progress=Progress(echo, "layer entries measured", "entries"))


def run_search(cfg: SearchConfig, *, resume: bool = False, force: bool = False,
               echo: Callable[[str], None] | None = print) -> SearchOutcome:
    """Run (or resume) a search; returns where the result is. See the module docstring.

    Four steps: :func:`start_search` (checks, run directory, data, calibration, target, config.json),
    :func:`open_study` (the journal, repaired), :func:`requeue_interrupted` (trials a killed driver
    left running), then the loop on Ray and :func:`_finish`.

    A new search that fails before its first trial (an unreachable target, a table lacking entries,
    Ray not starting, ...) removes what it wrote, and the run directory (and parents) it created.
    """
    clock = RunClock(Path(cfg.run_dir), resume)  # the run's one wall time (console, log.txt, report)
    created = [] if resume else missing_dirs(Path(cfg.run_dir))
    progress = {"prepared": False, "asked": False}
    cfg = with_evaluator(cfg, echo)  # the supernet file found and checked before anything is written
    try:
        run = start_search(cfg, resume, force, echo, progress)
        run.clock = clock
        study = open_study(run, cfg, echo)
        requeue_interrupted(study, run, echo)
        if not resume and cfg.seeds:
            for name, params in run.space.seeds().items():
                study.enqueue_trial(params, user_attrs={"seed_name": name})
        _loop(cfg, run, study, echo, progress)
    except BaseException:
        if progress["prepared"] and not progress["asked"]:
            remove_failed_start(Path(cfg.run_dir), created)
        raise
    rows = trial_rows(study, run.space, run.remeasured)
    found, metrics = _finish(cfg, study, run, rows, echo)
    rows = trial_rows(study, run.space, run.remeasured)
    write_csv(run.dir / TRIALS_FILE, rows)
    write_csv(run.dir / PARETO_FILE, pareto_front(rows))
    completed = sum(r["state"] == "COMPLETE" for r in rows)
    failed = sum(r["state"] == "FAIL" and r["error"] is not None for r in rows)
    wall_s = clock.record()
    log_line(run.dir, f"{completed} trials completed, {failed} failed, in {wall_s / 60:.1f} min"
                      + (" (wall time of every session of this run)" if clock.before_s else ""), echo)
    return SearchOutcome(run.dir, found, metrics, completed, failed, wall_s)


@dataclass
class SearchRun:
    """What the steps of a search share: its directory, space, target and reward, re-measurements."""

    dir: Path
    space: object
    reward: object  # nas.rewards.RewardConfig
    remeasured: dict[int, float] = field(default_factory=dict)
    clock: RunClock | None = None  # the run's wall time, recorded after every trial

    @property
    def remeasured_path(self) -> Path:
        return self.dir / REMEASURED_FILE


def check_options(cfg: SearchConfig) -> None:
    """Cheap checks of the options, before anything is written, measured or started."""
    from nas.searchers import SEARCHERS

    if cfg.searcher not in SEARCHERS:
        raise SearchError(unknown_name("searcher", cfg.searcher, SEARCHERS))
    check_searcher_options(cfg)
    if cfg.trials < 1:
        raise SearchError(f"--trials must be at least 1, got {cfg.trials}")
    if cfg.eval.latency not in LATENCY_MODES:
        raise SearchError(f"--latency must be one of {', '.join(LATENCY_MODES)}, got {cfg.eval.latency!r}")
    if cfg.eval.task != "classification" and cfg.eval.latency == "predicted":
        raise SearchError(f"--latency predicted: the per-layer table does not cover dense heads yet; with --task "
                          f"{cfg.eval.task} use --latency measured (whole network) or --latency analytic")
    check_target(cfg)
    check_devices(cfg)


def check_devices(cfg: SearchConfig) -> None:
    """``--device`` and ``--gpus-per-trial`` make sense together and (on a local Ray) on this machine."""
    from evaluation.accel import check_device

    device = cfg.eval.train.get("device") or "auto"
    if not (isinstance(cfg.gpus_per_trial, (int, float)) and cfg.gpus_per_trial >= 0):
        raise SearchError(f"--gpus-per-trial must be 0 or more, got {cfg.gpus_per_trial!r}")
    if device.startswith("cuda") and not cfg.gpus_per_trial:
        raise SearchError(f"--device {device} needs --gpus-per-trial (e.g. 1, or 0.25 for four trials per GPU): "
                          "Ray shows a trial only the GPUs it asks for")
    if cfg.ray_address is None:
        check_device(device)


def eval_resolution(ev: EvalConfig) -> int:
    """The input resolution candidates were scored at: the proxy's training resolution, or the supernet's."""
    from evaluation.evaluators import scoring_resolution

    return scoring_resolution(ev)


def with_evaluator(cfg: SearchConfig, echo: Callable[[str], None] | None = None) -> SearchConfig:
    """``cfg`` with its evaluator resolved (:func:`evaluation.evaluators.resolve_evaluator`): for the
    supernet evaluator, the supernet file of the space, data set and held-out split, found in the cache
    if not given, and checked; an error names a mismatch or the command that trains one."""
    from evaluation.evaluators import resolve_evaluator

    check_options(cfg)
    ev = resolve_evaluator(cfg.eval, cfg.space, echo)
    return cfg if ev is cfg.eval else replace(cfg, eval=ev)


def start_search(cfg: SearchConfig, resume: bool, force: bool, echo: Callable[[str], None] | None,
                 progress: dict) -> SearchRun:
    """Check the options, prepare the run directory, load the data set, calibrate the table if needed,
    resolve the target; a new search also writes ``config.json`` (with the space's latency range)."""
    import optuna

    from evaluation.data import load_dataset
    from evaluation.dense_task import describe, task_space
    from nas.rewards import RewardConfig
    from search_spaces.spaces import get_space

    run_dir = Path(cfg.run_dir)
    check_options(cfg)
    if resume:
        if not (run_dir / CONFIG_FILE).exists():
            raise SearchError(f"{run_dir} holds no search to resume (no {CONFIG_FILE})")
    else:
        rundir.prepare_run_dir(run_dir, force, SearchError)
        progress["prepared"] = True

    data = load_dataset(cfg.eval.dataset, cfg.eval.data_dir)  # fail fast, before Ray starts
    space = get_space(cfg.space, resolution=cfg.eval.deploy_resolution, in_channels=data.channels,
                      num_classes=data.num_classes)
    space = task_space(space, cfg.eval)  # dense tasks: every decoded candidate carries the head
    if cfg.eval.task != "classification" and echo:
        echo(describe(cfg.eval))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ensure_calibration(cfg, space, echo)
    target = resolve_target(cfg, space, echo)
    if not resume:
        _write_start(cfg, run_dir, space, target, data, echo)
    path = run_dir / REMEASURED_FILE
    remeasured = {int(k): v for k, v in read_json(path, SearchError).items()} if path.exists() else {}
    (run_dir / WEIGHTS_DIR).mkdir(exist_ok=True)
    return SearchRun(run_dir, space, RewardConfig(target_ms=target, alpha=cfg.alpha, beta=cfg.beta), remeasured)


def _write_start(cfg: SearchConfig, run_dir: Path, space, target: float, data, echo) -> None:
    """config.json of a new search, after checking the target against the space's latency range."""
    model = latency_model(cfg.eval)
    corners = {k: model.latency_ms(s) for k, s in corner_specs(space).items()}
    low, high = corners["fastest"], corners["slowest"]
    if cfg.target_ms is not None and target < low:  # checked before anything is written
        raise SearchError(f"--target-ms {target:g} is below the fastest architecture of space {cfg.space} "
                          f"on this device ({low:.3f} ms at {cfg.eval.deploy_resolution}²): no candidate can "
                          "meet it; raise the target or use --target-like ARCH")
    from evaluation.dense_task import metric_name

    config = {"search": cfg.to_dict(), "target_ms": target, "space_size": space.size,
              "metric": metric_name(cfg.eval.task),  # what the trials' "accuracy" is (mIoU, mAP for dense tasks)
              "latency_range_ms": [low, high], "environment": environment(),
              "dataset": {"name": data.name, "source": data.source, "train": len(data.train_labels),
                          "classes": data.num_classes, "channels": data.channels},
              "device": model.fingerprint, "latency_model": model.describe(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2, default=str))
    log_line(run_dir, f"space {cfg.space}: {space.size:.2e} architectures; latency on this device ≈ "
                      f"{low:.2f}–{high:.2f} ms at {cfg.eval.deploy_resolution}²; target {target:.2f} ms", echo)
    if target > high:
        log_line(run_dir, f"warning: every architecture of this space meets the target {target:.2f} ms on this "
                          f"device (range {low:.2f}–{high:.2f} ms): the latency term only trades accuracy for "
                          "speed at the reward's rate (w = α); try --target-like or a lower --target-ms", echo)
    elif target < low:  # only with --target-like: a reference faster than the whole space
        log_line(run_dir, f"warning: no architecture of this space meets the target {target:.2f} ms on this "
                          f"device (range {low:.2f}–{high:.2f} ms): the search will favour the fastest ones", echo)


def check_searcher_options(cfg: SearchConfig) -> None:
    """``--searcher-option``: a mapping of options the searcher takes (one-line error naming the known ones)."""
    from nas.searchers import check_options as check_sampler_options

    if not isinstance(cfg.searcher_options, dict):
        raise SearchError(f"searcher_options must be a mapping, got {type(cfg.searcher_options).__name__}")
    try:
        check_sampler_options(cfg.searcher, cfg.searcher_options)
    except ValueError as e:
        raise SearchError(f"--searcher-option: {e}") from None


def planned_workers(cfg: SearchConfig) -> int:
    """The evaluations in flight the budget rule assumes: ``workers``, else this machine's CPUs / cpus_per_trial."""
    return cfg.workers or max(1, (os.cpu_count() or 1) // max(1, cfg.cpus_per_trial))


def make_search_sampler(run: SearchRun, cfg: SearchConfig, echo=None):
    """The searcher's sampler, sized to the budget (:func:`nas.searchers.make_sampler` with ``trials``, the
    planned workers and the reward); a :class:`~nas.searchers.BudgetWarning` is logged as a warning line."""
    from nas.searchers import BudgetWarning, make_sampler

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BudgetWarning)
        sampler = make_sampler(cfg.searcher, run.space, seed=cfg.seed, trials=cfg.trials,
                               workers=planned_workers(cfg), reward=run.reward, **cfg.searcher_options)
    for w in caught:
        if issubclass(w.category, BudgetWarning):
            log_line(run.dir, f"warning: {w.message}", echo)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return sampler


def open_study(run: SearchRun, cfg: SearchConfig, echo=None):
    """The Optuna study in ``study.journal`` (created, or loaded after cutting off a torn last record)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from nas.searchers import metric_names, study_directions

    repair_journal(run.dir / STUDY_FILE)
    storage = JournalStorage(JournalFileBackend(str(run.dir / STUDY_FILE)))
    try:
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage, directions=study_directions(cfg.searcher),
                                    sampler=make_search_sampler(run, cfg, echo), load_if_exists=True)
    except ValueError as e:  # a journal damaged in the middle (a torn last record is repaired above)
        raise SearchError(f"{run.dir / STUDY_FILE}: unreadable study journal ({e})") from None
    names = metric_names(cfg.searcher)
    if study.metric_names != names:  # so that optuna-dashboard shows "reward", not "Objective 0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    return study


def requeue_interrupted(study, run: SearchRun, echo) -> None:
    """Fail the trials a killed driver left RUNNING and enqueue them again.

    A trial killed while its parameters were being written has only some: it runs again only if they
    were fixed in advance (an enqueued seed or re-run); a half-made proposal is dropped (a new one
    replaces it)."""
    import optuna

    from nas.searchers import distributions

    dists = distributions(run.space)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        params = t.params if set(t.params) == set(dists) else t.system_attrs.get("fixed_params")
        if params:
            study.enqueue_trial(params, user_attrs={"rerun_of": t.number}, skip_if_exists=False)
            log_line(run.dir, f"trial {t.number} was interrupted; it will run again", echo)
        else:
            log_line(run.dir, f"trial {t.number} was interrupted while being proposed; a new proposal replaces it",
                     echo)


def finished_trials(study) -> int:
    """Trials that count against the budget: completed, or failed in evaluation (with an error).
    Interrupted trials (failed without an error) were enqueued again and do not count."""
    import optuna

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.COMPLETE
               or (t.state == optuna.trial.TrialState.FAIL and "error" in t.user_attrs))


def _loop(cfg: SearchConfig, run: SearchRun, study, echo, progress: dict) -> None:
    """Ask, evaluate on Ray, tell, record, until ``cfg.trials`` trials have finished."""
    from evaluation.execution import RayPool, WorkerLostError
    from nas.searchers import distributions

    dists = distributions(run.space)
    weights_dir = run.dir / WEIGHTS_DIR
    if echo:
        echo(f"starting Ray ({'joining ' + cfg.ray_address if cfg.ray_address else 'local, on 127.0.0.1'})")
    t_ray = time.perf_counter()
    with heartbeat(echo, "starting Ray"):
        pool = RayPool(address=cfg.ray_address, cpus_per_trial=cfg.cpus_per_trial, max_retries=cfg.max_retries,
                       gpus_per_trial=cfg.gpus_per_trial)
    in_flight: dict = {}
    durations: list[float] = []
    try:
        slots = cfg.workers or pool.slots
        log_line(run.dir, f"searcher {cfg.searcher}, {cfg.trials} trials, {slots} at a time on Ray (ready in "
                          f"{time.perf_counter() - t_ray:.1f} s); latency {cfg.eval.latency}; run directory {run.dir}",
                 echo)
        done_count = finished_trials(study)
        last_line = time.monotonic()  # a line every PROGRESS_EVERY_S until the first result, then every minute
        score_label = _progress_label(cfg.eval.task)

        def complete(trial, res: EvalResult, t0: float) -> None:
            nonlocal done_count, last_line
            _record(study, trial, res, run.reward, cfg)
            if res.weights is not None:
                atomic_write_bytes(weights_dir / f"trial_{trial.number}.pt", res.weights)
            durations.append(time.perf_counter() - t0)
            done_count = finished_trials(study)
            rows = trial_rows(study, run.space, run.remeasured)
            _prune_weights(weights_dir, rows, cfg.top_k)
            write_csv(run.dir / TRIALS_FILE, rows)
            if run.clock is not None:
                run.clock.record()
            log_line(run.dir, _progress_line(rows, done_count, cfg.trials, durations, slots, res, trial.number,
                                             score_label), echo)
            last_line = time.monotonic()

        while done_count + len(in_flight) < cfg.trials or in_flight:
            while len(in_flight) < slots and done_count + len(in_flight) < cfg.trials:
                progress["asked"] = True  # from here on the run directory holds a trial
                trial = study.ask(dists)
                spec = run.space.decode(trial.params)
                trial.set_user_attr("arch_id", spec.arch_id)
                prior = _evaluated(study, spec.arch_id)
                if prior is not None:  # a searcher may propose an architecture again: reuse its result
                    trial.set_user_attr("duplicate_of", prior.number)
                    complete(trial, _result_of(prior), time.perf_counter())
                    continue
                ref = pool.submit(spec.to_json(), cfg.eval, cfg.seed)
                in_flight[ref] = (trial, spec, time.perf_counter())
            for ref in pool.wait(list(in_flight), timeout_s=5.0):
                trial, spec, t0 = in_flight.pop(ref)
                try:
                    res = pool.result(ref)
                except WorkerLostError as e:
                    res = EvalResult(arch_id=spec.arch_id, error=f"worker lost after retries: {e}", error_kind="lost")
                complete(trial, res, t0)
            quiet_s = PROGRESS_EVERY_S if not durations else LATER_HEARTBEAT_S  # results carry an ETA from then on
            if echo and in_flight and time.monotonic() - last_line >= quiet_s:
                echo(_waiting_line(in_flight.values(), durations))
                last_line = time.monotonic()
    except BaseException:
        pool.cancel(list(in_flight))
        raise
    finally:
        pool.shutdown()


def _record(study, trial, res: EvalResult, reward_cfg, cfg: SearchConfig) -> None:
    import optuna

    from nas.rewards import mnas_reward
    from nas.searchers import tell

    metrics = res.metrics()
    for f in RECORD_FIELDS:
        if f in metrics and metrics[f] is not None:
            trial.set_user_attr(f, metrics[f])
    if res.error is not None:
        trial.set_user_attr("error", res.error)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    reward = mnas_reward(res.accuracy, res.latency_ms, reward_cfg)
    trial.set_user_attr("reward", reward)
    tell(study, trial, cfg.searcher, accuracy=res.accuracy, latency_ms=res.latency_ms, reward=reward,
         target_ms=reward_cfg.target_ms)


def _evaluated(study, arch_id: str):
    """An earlier completed trial of the same architecture, if any."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.user_attrs.get("arch_id") == arch_id and "accuracy" in t.user_attrs:
            return t
    return None


def _result_of(trial) -> EvalResult:
    attrs = trial.user_attrs
    fields = ("accuracy", "latency_ms", "latency_predicted_ms", "latency_measured_ms", "madds", "params")
    return EvalResult(arch_id=attrs["arch_id"], **{f: attrs.get(f) for f in fields})


def _prune_weights(weights_dir: Path, rows: list[dict], keep: int) -> None:
    """Keep the weights of the ``keep`` best trials by reward only (each is tens of MB)."""
    ranked = sorted((r for r in rows if r["reward"] is not None), key=lambda r: -r["reward"])
    wanted = {f"trial_{r['number']}.pt" for r in ranked[:keep]}
    for p in weights_dir.glob("trial_*.pt"):
        if p.name not in wanted:
            p.unlink(missing_ok=True)


def _waiting_line(running, durations: list[float]) -> str:
    """What the search waits for between results: the running trials and for how long (console only)."""
    now = time.perf_counter()
    trials = ", ".join(f"{trial.number} ({format_duration(now - t0)})" for trial, _, t0 in running)
    if durations:
        typical = f"a trial takes about {format_duration(sorted(durations)[len(durations) // 2])}"
    else:
        typical = "the first result sets the ETA"
    return f"  training trial(s) {trials}; {typical}"


def _progress_label(task: str) -> str:
    """How progress lines name the trials' score: ``acc`` (classification), ``miou`` or ``map`` (dense tasks)."""
    from evaluation.dense_task import metric_name

    name = metric_name(task)
    return "acc" if name == "accuracy" else name


def _progress_line(rows, done, total, durations, slots, res: EvalResult, number: int, label: str = "acc") -> str:
    best = max((r for r in rows if r["reward"] is not None), key=lambda r: r["reward"], default=None)
    remaining = max(0, total - done)
    eta = (sorted(durations)[len(durations) // 2] * remaining / slots) if durations else 0
    if res.error:
        last = f"trial {number} FAILED: {res.error}"
    else:
        last = f"trial {number}: {label} {res.accuracy:.3f}, {res.latency_ms:.2f} ms"
    head = f"[{done}/{total}] {last}"
    if best:
        head += f" | best reward {best['reward']:.4f} ({label} {best['accuracy']:.3f}, {best['latency_ms']:.2f} ms)"
    return head + f" | ETA {int(eta // 60)}m{int(eta % 60):02d}s"


def _finish(cfg: SearchConfig, study, run: SearchRun, rows: list[dict], echo):
    """Re-measure the top-k whole on the device (nothing else running), pick and save the winner."""
    from evaluation.dense_task import metric_name
    from latency.backends import BackendFault
    from latency.model import TableLatency
    from nas.rewards import mnas_reward
    from nas.searchers import proposal_stats

    space, remeasured, remeasured_path, reward_cfg, run_dir = (run.space, run.remeasured, run.remeasured_path,
                                                                run.reward, run.dir)
    proposals = proposal_stats(study, space)
    if proposals["proposals"]:
        log_line(run_dir, f"searcher {cfg.searcher}: {proposals['distinct']} of {proposals['proposals']} proposals "
                          f"were new architectures ({proposals['distinct_share']:.0%})", echo)
    ranked, seen = [], set()
    for r in sorted((r for r in rows if r["reward"] is not None), key=lambda r: -r["reward"]):
        if r["arch_id"] not in seen and r["duplicate_of"] is None:  # duplicates point at their original
            seen.add(r["arch_id"])
            ranked.append(r)
    ranked = ranked[: cfg.top_k]
    if not ranked:
        log_line(run_dir, "no trial completed: nothing to save (see trials.csv for the errors)", echo)
        return None, None
    measured_model = latency_model(cfg.eval, "measured")
    model = latency_model(cfg.eval)
    table = model.table if isinstance(model, TableLatency) and model.can_measure else None
    trials = study.get_trials(deepcopy=False)
    best, best_reward, faults = None, -1.0, []
    for r in ranked:
        spec = space.decode(trials[r["number"]].params)
        deploy = spec.replace(resolution=cfg.eval.deploy_resolution)
        if r["number"] not in remeasured:
            try:
                remeasured[r["number"]] = measured_model.latency_ms(deploy)
            except BackendFault as e:  # one model's measurement failed: the next of the top-k may stand
                faults.append(f"trial {r['number']}: {e}")
                log_line(run_dir, f"re-measuring trial {r['number']} failed, so it is not a candidate for "
                                  f"{FOUND_FILE}: {e}", echo)
                continue
            atomic_write_text(remeasured_path, json.dumps(remeasured, indent=1))
            if table is not None:
                table.add_point(deploy, remeasured[r["number"]])  # improves the calibration for next time
        measured = remeasured[r["number"]]
        reward = mnas_reward(r["accuracy"], measured, reward_cfg)
        predicted = r["latency_predicted_ms"]  # None when the search measured every candidate
        log_line(run_dir, f"re-measured trial {r['number']}: {measured:.3f} ms"
                          + (f" (predicted {predicted:.3f} ms)" if predicted is not None else "")
                          + f", reward {reward:.4f}", echo)
        if reward > best_reward:
            best, best_reward = (r, spec), reward
    if table is not None and table.store.points():
        table.fit()
    if best is None:
        raise BackendFault(f"re-measuring every one of the top {len(ranked)} trials failed ({'; '.join(faults)}); "
                           "the trials stay in the run, so fix the backend and resume it")
    row, spec = best
    name = f"{cfg.space}-{cfg.searcher}-trial{row['number']}"
    found = spec.replace(name=name)
    found.save(run_dir / FOUND_FILE)
    metrics = {"trial": row["number"], "arch_id": found.arch_id, "accuracy": row["accuracy"],
               "latency_measured_ms": remeasured[row["number"]], "latency_predicted_ms": row["latency_predicted_ms"],
               "reward": best_reward, "target_ms": reward_cfg.target_ms, "madds": row["madds"],
               "params": row["params"], "deploy_resolution": cfg.eval.deploy_resolution,
               "train_resolution": eval_resolution(cfg.eval), "evaluator": cfg.eval.evaluator,
               "dataset": cfg.eval.dataset, "task": cfg.eval.task, "metric": metric_name(cfg.eval.task),
               "searcher": cfg.searcher, "proposals": proposals["proposals"],
               "distinct_proposals": proposals["distinct"], "distinct_share": proposals["distinct_share"]}
    atomic_write_text(run_dir / FOUND_METRICS_FILE, json.dumps(metrics, indent=2))
    weights = run_dir / WEIGHTS_DIR / f"trial_{row['number']}.pt"
    if weights.exists():
        shutil.copyfile(weights, run_dir / FOUND_WEIGHTS_FILE)
    return found, metrics
