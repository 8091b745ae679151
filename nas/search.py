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

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

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
    atomic_write_bytes,
    atomic_write_text,
    environment,
    log_line,
    missing_dirs,
    read_json,
    write_csv,
)
from search_spaces import ArchSpec, references

PRESETS = {
    # MobileNetV3 §4.1: Large reused MnasNet's search (w = −0.07) with A1 as the seed; Small was a
    # new search with w = −0.15 in a smaller space.
    "large": {"space": "mobilenetv3", "alpha": -0.07, "beta": -0.07, "target_like": "mnasnet_a1"},
    "small": {"space": "mobilenetv3_small", "alpha": -0.15, "beta": -0.15, "target_like": "mobilenetv3_small"},
}
SEARCH_TRAIN = {**PROXY_TRAIN, "steps": 150}  # each candidate's proxy training (see the README's figures)
LATENCY_MODES = ("predicted", "measured", "analytic")  # EvalConfig.latency: which latency model scores candidates
CALIBRATION_NETWORKS = 12  # whole networks the table's calibration is fitted on before a first search
STUDY_NAME = "search"
START_FILES = (CONFIG_FILE, LOG_FILE, STUDY_FILE, WEIGHTS_DIR)  # what a new search writes before its first trial


class SearchError(ValueError):
    """A search that cannot start or go on (bad options, a run directory in the way, ...)."""


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search needs; saved as ``config.json`` and reloaded by ``--resume``.

    Attributes:
        run_dir: the run directory.
        space: search space name (see :mod:`search_spaces.spaces`).
        searcher: ``rl``, ``evolution``, ``tpe``, ``nsga2`` or ``random``.
        trials: trials to finish (completed or failed), seeds included.
        target_ms: latency target T in ms (or None with ``target_like``).
        target_like: a reference architecture whose latency on this device is the target.
        alpha, beta: reward exponents (w = α if LAT ≤ T else β); soft: −0.07/−0.07, hard: 0/−1.
        seed: seeds the searcher, the held-out split and every candidate's training.
        seeds: enqueue the space's known architectures first.
        workers: concurrent evaluations (None: all CPUs of the Ray cluster / cpus_per_trial).
        cpus_per_trial: CPUs (and torch threads) per evaluation.
        ray_address: join this Ray cluster instead of starting a local one.
        max_retries: Ray retries of an evaluation whose worker died.
        top_k: candidates re-measured whole on the device at the end.
        eval: how candidates are evaluated (data, training budget, latency mode and table).
    """

    run_dir: str
    space: str = "mobilenetv3"
    searcher: str = "rl"
    trials: int = 16
    target_ms: float | None = None
    target_like: str | None = None
    alpha: float = -0.07
    beta: float = -0.07
    seed: int = 0
    seeds: bool = True
    workers: int | None = None
    cpus_per_trial: int = 1
    ray_address: str | None = None
    max_retries: int = 2
    top_k: int = 3
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(train=dict(SEARCH_TRAIN)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["eval"] = self.eval.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "search config") -> "SearchConfig":
        """From :meth:`to_dict`'s form; an unknown key (here or in ``eval``) is a :class:`SearchError`."""
        return configs.from_dict(cls, d, where=where, error=SearchError, nested={"eval": EvalConfig})

    @classmethod
    def load(cls, run_dir: str | Path) -> "SearchConfig":
        """The configuration a search run directory was started with (what ``--resume`` continues)."""
        where = str(Path(run_dir) / CONFIG_FILE)
        return cls.from_dict(rundir.load_config(run_dir, "search", "search", SearchError), where)


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
    elif cfg.target_like not in references.names():
        raise SearchError(f"--target-like: unknown architecture {cfg.target_like!r}; "
                          f"known: {', '.join(references.names())}")


def resolve_target(cfg: SearchConfig, space, echo=None) -> float:
    """T in ms: given, or the latency of ``target_like`` on this device (same table/measurer)."""
    check_target(cfg)
    if cfg.target_ms is not None:
        return float(cfg.target_ms)
    ref = references.get(cfg.target_like).replace(in_channels=space.in_channels, num_classes=space.num_classes)
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
    """A predicted-latency search needs a calibrated table: fit one on a few whole networks if absent."""
    from latency.model import TableLatency

    model = latency_model(cfg.eval)
    if not isinstance(model, TableLatency) or not model.can_measure:
        return  # measured or analytic latency, or another device's table (calibrated there)
    table = model.table
    have = table.calibration.n_points
    if have >= CALIBRATION_NETWORKS:
        return
    rng = np.random.default_rng(cfg.seed)
    specs = [space.decode(v) for v in space.seeds().values()]
    while len(specs) < CALIBRATION_NETWORKS - have:
        specs.append(space.decode(space.sample(rng)))
    specs = [s.replace(resolution=cfg.eval.deploy_resolution) for s in specs]
    if echo:
        echo(f"calibrating the latency table {table.path} on {len(specs)} whole networks (once per device)")
    cal = table.calibrate(specs)
    if echo:
        echo(f"  calibration: {cal.describe()}")


def run_search(cfg: SearchConfig, *, resume: bool = False, force: bool = False,
               echo: Callable[[str], None] | None = print) -> SearchOutcome:
    """Run (or resume) a search; returns where the result is. See the module docstring.

    Four steps: :func:`start_search` (checks, run directory, data, calibration, target, config.json),
    :func:`open_study` (the journal, repaired), :func:`requeue_interrupted` (trials a killed driver
    left running), then the loop on Ray and :func:`_finish`.

    A new search that fails before its first trial (an unreachable target, a table lacking entries,
    Ray not starting, ...) removes what it wrote, and the run directory (and parents) it created.
    """
    t_start = time.perf_counter()
    created = [] if resume else missing_dirs(Path(cfg.run_dir))
    progress = {"prepared": False, "asked": False}
    try:
        run = start_search(cfg, resume, force, echo, progress)
        study = open_study(run, cfg)
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
    return SearchOutcome(run.dir, found, metrics, completed, failed, time.perf_counter() - t_start)


@dataclass
class SearchRun:
    """What the steps of a search share: its directory, space, target and reward, re-measurements."""

    dir: Path
    space: object
    reward: object  # nas.rewards.RewardConfig
    remeasured: dict[int, float] = field(default_factory=dict)

    @property
    def remeasured_path(self) -> Path:
        return self.dir / REMEASURED_FILE


def check_options(cfg: SearchConfig) -> None:
    """Cheap checks of the options, before anything is written, measured or started."""
    from nas.searchers import SEARCHERS

    if cfg.searcher not in SEARCHERS:
        raise SearchError(f"unknown searcher {cfg.searcher!r}; known: {', '.join(SEARCHERS)}")
    if cfg.trials < 1:
        raise SearchError(f"--trials must be at least 1, got {cfg.trials}")
    if cfg.eval.latency not in LATENCY_MODES:
        raise SearchError(f"--latency must be one of {', '.join(LATENCY_MODES)}, got {cfg.eval.latency!r}")
    check_target(cfg)


def start_search(cfg: SearchConfig, resume: bool, force: bool, echo: Callable[[str], None] | None,
                 progress: dict) -> SearchRun:
    """Check the options, prepare the run directory, load the data set, calibrate the table if needed,
    resolve the target; a new search also writes ``config.json`` (with the space's latency range)."""
    import optuna

    from evaluation.data import load_dataset
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
    config = {"search": cfg.to_dict(), "target_ms": target, "space_size": space.size,
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


def open_study(run: SearchRun, cfg: SearchConfig):
    """The Optuna study in ``study.journal`` (created, or loaded after cutting off a torn last record)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from nas.searchers import make_sampler, study_directions

    repair_journal(run.dir / STUDY_FILE)
    storage = JournalStorage(JournalFileBackend(str(run.dir / STUDY_FILE)))
    try:
        return optuna.create_study(study_name=STUDY_NAME, storage=storage, directions=study_directions(cfg.searcher),
                                   sampler=make_sampler(cfg.searcher, run.space, seed=cfg.seed), load_if_exists=True)
    except ValueError as e:  # a journal damaged in the middle (a torn last record is repaired above)
        raise SearchError(f"{run.dir / STUDY_FILE}: unreadable study journal ({e})") from None


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
    pool = RayPool(address=cfg.ray_address, cpus_per_trial=cfg.cpus_per_trial, max_retries=cfg.max_retries)
    in_flight: dict = {}
    durations: list[float] = []
    try:
        slots = cfg.workers or pool.slots
        log_line(run.dir, f"searcher {cfg.searcher}, {cfg.trials} trials, {slots} at a time on Ray; "
                          f"latency {cfg.eval.latency}; run directory {run.dir}", echo)
        done_count = finished_trials(study)

        def complete(trial, res: EvalResult, t0: float) -> None:
            nonlocal done_count
            _record(study, trial, res, run.reward, cfg)
            if res.weights is not None:
                atomic_write_bytes(weights_dir / f"trial_{trial.number}.pt", res.weights)
            durations.append(time.perf_counter() - t0)
            done_count = finished_trials(study)
            rows = trial_rows(study, run.space, run.remeasured)
            _prune_weights(weights_dir, rows, cfg.top_k)
            write_csv(run.dir / TRIALS_FILE, rows)
            log_line(run.dir, _progress_line(rows, done_count, cfg.trials, durations, slots, res, trial.number), echo)

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


def _progress_line(rows, done, total, durations, slots, res: EvalResult, number: int) -> str:
    best = max((r for r in rows if r["reward"] is not None), key=lambda r: r["reward"], default=None)
    remaining = max(0, total - done)
    eta = (sorted(durations)[len(durations) // 2] * remaining / slots) if durations else 0
    if res.error:
        last = f"trial {number} FAILED: {res.error}"
    else:
        last = f"trial {number}: acc {res.accuracy:.3f}, {res.latency_ms:.2f} ms"
    head = f"[{done}/{total}] {last}"
    if best:
        head += f" | best reward {best['reward']:.4f} (acc {best['accuracy']:.3f}, {best['latency_ms']:.2f} ms)"
    return head + f" | ETA {int(eta // 60)}m{int(eta % 60):02d}s"


def _finish(cfg: SearchConfig, study, run: SearchRun, rows: list[dict], echo):
    """Re-measure the top-k whole on the device (nothing else running), pick and save the winner."""
    from latency.model import TableLatency
    from nas.rewards import mnas_reward

    space, remeasured, remeasured_path, reward_cfg, run_dir = (run.space, run.remeasured, run.remeasured_path,
                                                                run.reward, run.dir)
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
    best, best_reward = None, -1.0
    for r in ranked:
        spec = space.decode(trials[r["number"]].params)
        deploy = spec.replace(resolution=cfg.eval.deploy_resolution)
        if r["number"] not in remeasured:
            remeasured[r["number"]] = measured_model.latency_ms(deploy)
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
    row, spec = best
    name = f"{cfg.space}-{cfg.searcher}-trial{row['number']}"
    found = spec.replace(name=name)
    found.save(run_dir / FOUND_FILE)
    metrics = {"trial": row["number"], "arch_id": found.arch_id, "accuracy": row["accuracy"],
               "latency_measured_ms": remeasured[row["number"]], "latency_predicted_ms": row["latency_predicted_ms"],
               "reward": best_reward, "target_ms": reward_cfg.target_ms, "madds": row["madds"],
               "params": row["params"], "deploy_resolution": cfg.eval.deploy_resolution,
               "train_resolution": cfg.eval.train.get("resolution_px", 32), "dataset": cfg.eval.dataset}
    atomic_write_text(run_dir / FOUND_METRICS_FILE, json.dumps(metrics, indent=2))
    weights = run_dir / WEIGHTS_DIR / f"trial_{row['number']}.pt"
    if weights.exists():
        shutil.copyfile(weights, run_dir / FOUND_WEIGHTS_FILE)
    return found, metrics
