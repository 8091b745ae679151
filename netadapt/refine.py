"""NetAdapt refinement: shrink a trained network, one channel group per iteration, to a latency target.

The second stage of the MobileNetV3 recipe (Howard et al. 2019 §4.2, after Yang et al. 2018,
"NetAdapt", https://arxiv.org/abs/1804.03230):

1. start from a trained seed network with latency L0 (predicted by the device's calibrated lookup
   table, so that each step's cut is known before anything is trained);
2. each iteration, make one proposal per channel group (:mod:`netadapt.proposals`): the widest width
   whose predicted latency is at most ``current − δ`` (δ = 0.01·L0 by default);
3. initialize every proposal from the current weights (largest-L2-norm filters,
   :mod:`netadapt.channels`), fine-tune each for T steps as parallel Ray tasks, score it on the
   held-out part of the training split;
4. keep the proposal with the best ΔAcc/|ΔLatency| (``metric="slope"``, MobileNetV3) or the highest
   accuracy (``metric="accuracy"``, NetAdapt); its latency is then measured on the device against
   the start network (interleaved, so that host drift cancels and step errors do not add up);
5. repeat until the *measured* latency meets the target (the predicted one where this machine cannot
   measure, e.g. with another device's table: per-layer tables overstate small cuts); then fine-tune
   the result longer (or retrain it from scratch), train a uniform width-multiplier baseline of the
   same start network at the same latency with the same budget, and measure result and baseline
   against the start on the device (interleaved ratios × the start's one measurement, the basis of
   the target and of every step).

Everything a resume needs is written atomically after each iteration (``state.json`` and the current
weights), so a killed run loses at most the iteration in progress; see :func:`run_refine`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from evaluation import configs, rundir
from evaluation.evaluate import (
    PROXY_TRAIN,
    EvalConfig,
    latency_model,
    load_weights,
    score_task,
    train_task,
    weights_bytes,
)
from evaluation.rundir import (
    BASELINE_FILE,
    CONFIG_FILE,
    FINAL_METRICS_FILE,
    REFINED_FILE,
    REFINED_ONNX_FILE,
    REFINED_WEIGHTS_FILE,
    START_FILE,
    STATE_FILE,
    TRAJECTORY_FILE,
    WEIGHTS_DIR,
    atomic_write_bytes,
    atomic_write_text,
    environment,
    log_line,
    read_json,
)
from latency.model import TableLatency
from search_spaces import ArchSpec, count, resolve_arch
from search_spaces.progress import heartbeat

TRAJECTORY_FIELDS = ("iteration", "proposal", "kind", "group", "blocks", "old_width", "new_width", "accuracy",
                     "delta_acc", "latency_pred_ms", "delta_latency_pred_ms", "latency_measured_ms",
                     "delta_latency_measured_ms", "madds", "params", "slope", "chosen", "error")
DEFAULT_STEPS = 50  # paper: T = 10,000 on TPUs; scaled for 2 CPU cores (see README)


class RefineError(ValueError):
    """A refinement that cannot start or go on (bad options, unreachable target, bad weights, ...)."""


@dataclass(frozen=True)
class RefineConfig(configs.RunConfig):
    """Everything a refinement needs; saved as ``config.json`` and reloaded by ``--resume``.

    Attributes:
        run_dir: the run directory.
        arch: a reference name or a spec file (e.g. ``found.json`` of ``nas search``).
        weights: a state-dict checkpoint of ``arch`` (e.g. ``found.pt``); None = pre-train first.
        target_ms: latency target in ms on this device; or ``reduction``: the fraction of the start
            latency to remove (0.2 = 20 % faster).
        delta_ratio, delta_ms: the least latency cut of one iteration (δ = delta_ms or delta_ratio·L0).
        steps: short-term fine-tune steps per proposal (the paper's T).
        metric: ``slope`` (max ΔAcc/|ΔLat|, MobileNetV3) or ``accuracy`` (max accuracy, NetAdapt).
        max_iters: stop after this many iterations even if the target is not met.
        channel_step, min_width: widths move in multiples of ``channel_step``, never below ``min_width``.
        pretrain_epochs: training of the start network when no ``weights`` are given.
        final_epochs: long-term fine-tune of the result (or its training from scratch with ``retrain``).
        retrain: train the result (and the baseline) from scratch instead of fine-tuning.
        baseline: also train the width-multiplier baseline at the result's latency.
        finetune_lr: peak learning rate of short- and long-term fine-tunes (from-scratch training uses
            ``eval.train``'s, default 0.1).
        seed: seeds pre-training, every fine-tune (all proposals of an iteration share one seed, so they
            see the same batches) and the held-out split.
        cpus_per_trial, ray_address, max_retries: execution on Ray (as ``nas search``); the proposals
            of an iteration run as parallel tasks on every CPU of the cluster.
        eval: data set, held-out split, training settings, latency table and deployment resolution.
    """

    run_dir: str
    arch: str
    weights: str | None = None
    target_ms: float | None = None
    reduction: float | None = None
    delta_ratio: float = 0.01
    delta_ms: float | None = None
    steps: int = DEFAULT_STEPS
    metric: str = "slope"
    max_iters: int = 100
    channel_step: int = 8
    min_width: int = 8
    pretrain_epochs: float = 3.0
    final_epochs: float = 1.0
    retrain: bool = False
    baseline: bool = True
    finetune_lr: float = 0.02
    seed: int = 0
    cpus_per_trial: int = 1
    ray_address: str | None = None
    max_retries: int = 2
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(holdout=5000, train=dict(PROXY_TRAIN)))

    def train_settings(self, **changes) -> dict:
        """The training settings of this refinement's trainings and scorings (``eval.train`` on the proxy's
        defaults, without a length), with ``changes`` (e.g. ``epochs=3``)."""
        base = {**PROXY_TRAIN, "threads": self.cpus_per_trial, **self.eval.train}
        base.pop("epochs", None), base.pop("steps", None)
        return {**base, **changes}

    def finetune_settings(self, **length) -> dict:
        """A fine-tune's settings (``finetune_lr``, no warm-up) of the given length (``steps=`` or ``epochs=``)."""
        return self.train_settings(lr=self.finetune_lr, warmup_fraction=0.0, **length)

    SECTION: ClassVar[str] = "refine"  # to_dict / from_dict / load: see evaluation.configs.RunConfig
    WHAT: ClassVar[str] = "refinement"
    ERROR: ClassVar[type[Exception]] = RefineError
    NESTED: ClassVar[dict] = {"eval": EvalConfig}

    def check(self) -> None:
        if (self.target_ms is None) == (self.reduction is None):
            raise RefineError("give exactly one of --target-ms and --reduction")
        if self.target_ms is not None and not (self.target_ms > 0 and math.isfinite(self.target_ms)):
            raise RefineError(f"--target-ms must be a positive number of milliseconds, got {self.target_ms}")
        if self.reduction is not None and not 0 < self.reduction < 1:
            raise RefineError(f"--reduction must be a fraction in (0, 1), e.g. 0.2 for 20 % faster; "
                              f"got {self.reduction}")
        if self.metric not in ("slope", "accuracy"):
            raise RefineError(f"--metric must be slope or accuracy, got {self.metric!r}")
        if not 0 < self.delta_ratio < 1 or (self.delta_ms is not None and not self.delta_ms > 0):
            raise RefineError("--delta-ratio must be in (0, 1) and --delta-ms positive")
        for name in ("steps", "max_iters", "channel_step", "min_width", "cpus_per_trial"):
            if getattr(self, name) < 1:
                raise RefineError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.pretrain_epochs <= 0 or self.final_epochs < 0:
            raise RefineError("--pretrain-epochs must be positive and --final-epochs not negative")
        if self.eval.task != "classification":
            raise RefineError(f"--task {self.eval.task}: NetAdapt does not refine dense networks yet (its channel "
                              "groups and fine-tuning are classification-only); use --task classification")


@dataclass
class RefineOutcome:
    run_dir: Path
    metrics: dict
    wall_s: float


# ------------------------------------------------------------------------------------------------
# Ray tasks (module-level functions of plain data, like evaluation.evaluate.evaluate_candidate)
# ------------------------------------------------------------------------------------------------


@dataclass
class Refinement:
    """What every stage of a refinement shares: its configuration, Ray pool, latency model, run
    directory, progress output, and the wall time spent before this process (a resumed run)."""

    cfg: RefineConfig
    lat: TableLatency
    run_dir: Path
    echo: Callable[[str], None] | None
    pool: object = None  # evaluation.execution.RayPool, started after the first state is saved
    elapsed_before_s: float = 0.0
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def wall_s(self) -> float:
        return self.elapsed_before_s + time.perf_counter() - self.t_start

    def log(self, line: str) -> None:
        log_line(self.run_dir, line, self.echo)


def finetune_task(parent_json: str, child_json: str, parent_weights: bytes, cfg: EvalConfig, train: dict,
                  seed: int, test: bool = False) -> dict:
    """Build the child, inherit the parent's weights (largest L2 norm, :mod:`netadapt.channels`), train,
    score: :func:`evaluation.evaluate.train_task` with NetAdapt's weight inheritance."""
    from netadapt.channels import inherit_weights

    parent, child = ArchSpec.from_json(parent_json), ArchSpec.from_json(child_json)

    def inherit(model) -> None:
        model.load_state_dict(inherit_weights(parent, load_weights(parent_weights), child))

    return train_task(child_json, cfg, train, seed, test, init=inherit)


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------


def _write_trajectory(run_dir: Path, rows: list[dict]) -> None:
    rundir.write_csv(run_dir / TRAJECTORY_FILE, rows, TRAJECTORY_FIELDS)


def table_latency(cfg: EvalConfig) -> TableLatency:
    """NetAdapt's latency model: the calibrated table of ``cfg`` at its deployment resolution, whatever
    ``cfg.latency`` says (each step's cut must be predicted before anything is trained). A
    :class:`latency.model.DeviceTableLatency` when the table is another device's (nothing measured)."""
    return latency_model(cfg, "predicted")


def calibrate_near(lat: TableLatency, spec: ArchSpec, echo) -> float | None:
    """Measure ``spec`` and two narrower versions whole and refit the table's calibration on them,
    so that predictions are accurate where NetAdapt will walk. Returns the start's measured latency
    (None where this machine cannot measure)."""
    from netadapt.channels import scale_widths

    if not lat.can_measure:
        return None
    measured, cal = lat.calibrate_near([scale_widths(spec, m) for m in (1.0, 0.75, 0.5)])
    if echo:
        echo(f"calibrated the latency table on the start network and two narrower versions "
             f"(leave-one-out error {cal.loo_mean_abs_error:.1%} over {cal.n_points} networks)")
    return measured[0]


def _refuse_dense(arch: str) -> None:
    """A network with a dense head is refused before anything is written (a bad ``arch`` is reported later)."""
    try:
        spec = resolve_arch(arch)
    except (ValueError, OSError):
        return
    if spec.dense is not None:
        raise RefineError(f"{arch} has a {spec.dense.kind.value} head: NetAdapt does not refine dense networks "
                          "yet; give a classification network")


def _start_spec(cfg: RefineConfig, data) -> ArchSpec:
    spec = resolve_arch(cfg.arch)
    if (spec.num_classes, spec.in_channels) != (data.num_classes, data.channels):
        if cfg.weights:
            raise RefineError(f"{cfg.arch} is a network for {spec.num_classes} classes and {spec.in_channels} input "
                              f"channels, but {data.name} has {data.num_classes} and {data.channels}; its weights "
                              "cannot be used (drop --weights to pre-train it on this data set)")
        spec = spec.replace(num_classes=data.num_classes, in_channels=data.channels)
    return spec.replace(resolution=cfg.eval.deploy_resolution, name=spec.name or Path(cfg.arch).stem)


def _metrics(spec: ArchSpec, accuracy, latency_pred, latency_measured=None, **extra) -> dict:
    c = count(spec)
    return {"arch_id": spec.arch_id, "accuracy": accuracy, "latency_pred_ms": latency_pred,
            "latency_measured_ms": latency_measured, "madds": c.madds, "params": c.params, **extra}


def run_refine(cfg: RefineConfig, *, resume: bool = False, force: bool = False,
               echo: Callable[[str], None] | None = print) -> RefineOutcome:
    """Run (or resume) a refinement; see the module docstring. Returns where the result is."""
    from evaluation.data import load_dataset
    from evaluation.execution import RayPool

    t_start = time.perf_counter()
    run_dir = Path(cfg.run_dir)
    cfg.check()
    state_path = run_dir / STATE_FILE
    if resume:
        if not state_path.exists():
            raise RefineError(f"{run_dir} holds no refinement to resume (no {STATE_FILE})")
        state = read_json(state_path, RefineError)
        if not isinstance(state, dict) or "stage" not in state:
            raise RefineError(f"{state_path} holds no refinement state (no \"stage\")")
    else:
        _refuse_dense(cfg.arch)
        rundir.prepare_run_dir(run_dir, force, RefineError)
        state = None

    data = load_dataset(cfg.eval.dataset, cfg.eval.data_dir)  # fail fast, before Ray starts
    ctx = Refinement(cfg, table_latency(cfg.eval), run_dir, echo,
                     elapsed_before_s=state.get("elapsed_s", 0.0) if state else 0.0, t_start=t_start)

    def save(st: dict) -> dict:
        st = {**st, "elapsed_s": ctx.wall_s}
        atomic_write_text(state_path, json.dumps(st, indent=1))
        return st

    try:
        if state is None:
            start = _start_spec(cfg, data)
            state = _begin(ctx, start)
            atomic_write_text(run_dir / CONFIG_FILE, json.dumps(
                {"refine": cfg.to_dict(), "environment": environment(), "device": ctx.lat.fingerprint,
                 "latency_model": ctx.lat.describe(),
                 "dataset": {"name": data.name, "source": data.source, "classes": data.num_classes},
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2, default=str))
            state = save(state)
        if echo:
            echo(f"starting Ray ({'joining ' + cfg.ray_address if cfg.ray_address else 'local, on 127.0.0.1'})")
        with heartbeat(echo, "starting Ray"):
            ctx.pool = RayPool(address=cfg.ray_address, cpus_per_trial=cfg.cpus_per_trial,
                               max_retries=cfg.max_retries)
        if state["stage"] == "pretrain":
            state = save(_pretrain(ctx, state))
        while state["stage"] == "iterate":
            state = save(_iterate(ctx, state))
            _prune_weights(run_dir, state)
        if state["stage"] == "finish":
            state = save(_finish(ctx, state))
    finally:
        if ctx.pool is not None:
            ctx.pool.shutdown()
    metrics = json.loads((run_dir / FINAL_METRICS_FILE).read_text())
    wall_s = state["elapsed_s"]  # the run's one wall time (every session), as state.json records it
    ctx.log(f"refinement finished in {wall_s / 60:.1f} min")
    return RefineOutcome(run_dir, metrics, wall_s)


def _begin(ctx: Refinement, start: ArchSpec) -> dict:
    """Resolve target and δ, check that the target is reachable, save the start; the first state."""
    cfg, lat, run_dir, echo = ctx.cfg, ctx.lat, ctx.run_dir, ctx.echo
    from netadapt.proposals import smallest_network

    measured = calibrate_near(lat, start, echo)
    l0 = lat.latency_ms(start)
    # The target is a latency on the device: compare it with measurements where this machine can
    # measure (each chosen step is measured against the start, interleaved), else with predictions.
    basis = "measured" if measured else "predicted"
    l0_basis = measured or l0
    target = cfg.target_ms if cfg.target_ms is not None else (1 - cfg.reduction) * l0_basis
    delta = cfg.delta_ms if cfg.delta_ms is not None else cfg.delta_ratio * l0
    floor = lat.latency_ms(smallest_network(start, cfg.min_width)) * l0_basis / l0
    if target >= l0_basis:
        raise RefineError(f"{start.name or cfg.arch} already meets the target: {basis} {l0_basis:.3f} ms ≤ "
                          f"{target:.3f} ms on this device; give a lower --target-ms or use --reduction")
    if target < floor:
        raise RefineError(f"target {target:.3f} ms cannot be reached from {start.name or cfg.arch}: even with every "
                          f"layer at {cfg.min_width} channels it takes about {floor:.3f} ms on this device")
    start.save(run_dir / START_FILE)
    log_line(run_dir, f"start {start.name}: predicted {l0:.3f} ms"
                      + (f", measured {measured:.3f} ms" if measured else "")
                      + f" at {lat.resolution}²; target {target:.3f} ms {basis} ({1 - target / l0_basis:.1%} faster); "
                      f"δ = {delta:.4f} ms per iteration; T = {cfg.steps} steps; metric {cfg.metric}", echo)
    if cfg.weights:
        weights = load_weights(cfg.weights)  # checked now, before any training
        from netadapt.channels import inherit_weights

        try:
            inherit_weights(start, weights, start)
        except ValueError as e:
            raise RefineError(f"--weights {cfg.weights} do not fit {cfg.arch}: {e}") from None
        atomic_write_bytes(run_dir / WEIGHTS_DIR / "start.pt", weights_bytes(weights))
    return {"stage": "iterate" if cfg.weights else "pretrain", "iteration": 0, "target_ms": target,
            "delta_ms": delta, "floor_ms": floor, "l0_pred_ms": l0, "l0_measured_ms": measured, "basis": basis,
            "start": start.to_dict(), "current": {"spec": start.to_dict(), "weights": "weights/start.pt",
                                                  "accuracy": None, "latency_pred_ms": l0,
                                                  "latency_measured_ms": measured},
            "rows": [], "path_steps": 0}


def _pretrain(ctx: Refinement, state: dict) -> dict:
    cfg, pool, run_dir, echo = ctx.cfg, ctx.pool, ctx.run_dir, ctx.echo
    spec = ArchSpec.from_dict(state["start"])
    log_line(run_dir, f"no --weights: training the start network for {cfg.pretrain_epochs:g} epochs first", echo)
    cpus = pool.node_cpus  # one task alone: it may use a whole node
    res = pool.result(pool.call(train_task, spec.to_json(), cfg.eval,
                                cfg.train_settings(epochs=cfg.pretrain_epochs, threads=cpus), cfg.seed, num_cpus=cpus))
    if res["error"]:
        raise RefineError(f"training the start network failed: {res['error']}")
    atomic_write_bytes(run_dir / WEIGHTS_DIR / "start.pt", res["weights"])
    log_line(run_dir, f"start network trained: held-out accuracy {res['accuracy']:.4f} ({res['total_s']:.0f} s)", echo)
    return {**state, "stage": "iterate"}


def _start_row(state: dict, spec: ArchSpec, accuracy: float) -> dict:
    c = count(spec)
    return {"iteration": 0, "proposal": 0, "kind": "start", "group": spec.name, "accuracy": accuracy,
            "latency_pred_ms": state["l0_pred_ms"], "latency_measured_ms": state["l0_measured_ms"],
            "madds": c.madds, "params": c.params, "chosen": True}


def _iterate(ctx: Refinement, state: dict) -> dict:
    """One NetAdapt iteration (or the decision that none is needed): returns the next state."""
    cfg, pool, lat, run_dir, echo = ctx.cfg, ctx.pool, ctx.lat, ctx.run_dir, ctx.echo
    from evaluation.execution import WorkerLostError
    from netadapt.proposals import make_proposals

    cur = state["current"]
    spec = ArchSpec.from_dict(cur["spec"])
    weights = (run_dir / cur["weights"]).read_bytes()
    eval_train = cfg.train_settings()
    if cur["accuracy"] is None:  # the start network: score it once
        cur = {**cur, "accuracy": pool.result(pool.call(score_task, spec.to_json(), weights, cfg.eval,
                                                         eval_train))["accuracy"]}
        state = {**state, "current": cur, "rows": [_start_row(state, spec, cur["accuracy"])]}
        log_line(run_dir, f"start network: held-out accuracy {cur['accuracy']:.4f}", echo)
    k = state["iteration"] + 1
    basis = state.get("basis", "predicted")
    now = cur["latency_measured_ms"] if basis == "measured" else cur["latency_pred_ms"]
    if now <= state["target_ms"]:
        log_line(run_dir, f"target met after {k - 1} iterations: {now:.3f} ms ≤ {state['target_ms']:.3f} ms ({basis})",
                 echo)
        return {**state, "stage": "finish", "target_met": True}
    if k > cfg.max_iters:
        log_line(run_dir, f"stopped at --max-iters {cfg.max_iters} before the target", echo)
        return {**state, "stage": "finish", "target_met": False}

    proposals = make_proposals(spec, lat.latency_ms, cur["latency_pred_ms"], state["delta_ms"], cfg.channel_step,
                               cfg.min_width)
    if not proposals:
        log_line(run_dir, "no channel group can cut δ any more: stopping before the target", echo)
        return {**state, "stage": "finish", "target_met": False}
    t0 = time.perf_counter()
    parent_ref = pool.put(weights)
    seed = cfg.seed * 100_003 + k  # one seed per iteration: every proposal sees the same batches
    refs = [pool.call(finetune_task, spec.to_json(), p.spec.to_json(), parent_ref, cfg.eval,
                      cfg.finetune_settings(steps=cfg.steps), seed) for p in proposals]
    results = []
    for ref in refs:
        try:
            results.append(pool.result(ref))
        except WorkerLostError as e:
            results.append({"accuracy": None, "weights": None, "error": f"worker lost after retries: {e}"})

    rows = []
    for n, (p, res) in enumerate(zip(proposals, results), start=1):
        c = count(p.spec)
        d_lat = p.latency_ms - cur["latency_pred_ms"]
        row = {"iteration": k, "proposal": n, "kind": p.kind, "group": p.name,
               "blocks": " ".join(map(str, p.group.blocks)), "old_width": p.group.width, "new_width": p.new_width,
               "latency_pred_ms": p.latency_ms, "delta_latency_pred_ms": d_lat, "madds": c.madds,
               "params": c.params, "chosen": False, "error": res["error"]}
        if res["error"] is None:
            d_acc = res["accuracy"] - cur["accuracy"]
            row.update(accuracy=res["accuracy"], delta_acc=d_acc, slope=d_acc / abs(d_lat))
        rows.append(row)
    i = choose(rows, cfg.metric)
    if i is None:
        raise RefineError(f"iteration {k}: every proposal failed (first error: {results[0]['error']})")
    chosen, res, row = proposals[i], results[i], rows[i]
    if state["l0_measured_ms"] is not None:  # against the start, so that errors do not add up step by step
        ratio = lat.ratio(chosen.spec, ArchSpec.from_dict(state["start"]))
        row["latency_measured_ms"] = ratio * state["l0_measured_ms"]
        row["delta_latency_measured_ms"] = row["latency_measured_ms"] - cur["latency_measured_ms"]
    row["chosen"] = True
    name = f"weights/iter_{k}.pt"
    atomic_write_bytes(run_dir / name, res["weights"])
    log_line(run_dir, f"iteration {k}: {len(proposals)} proposals in {time.perf_counter() - t0:.0f} s; chose "
                      f"{chosen.name} {chosen.group.width}→{chosen.new_width}: accuracy {res['accuracy']:.4f} "
                      f"({row['delta_acc']:+.4f}), {chosen.latency_ms:.3f} ms "
                      f"({row['delta_latency_pred_ms']:+.3f} predicted"
                      + (f", {row['delta_latency_measured_ms']:+.3f} measured" if row.get("latency_measured_ms")
                         else "")
                      + f"); target {state['target_ms']:.3f} ms {basis}", echo)
    new_state = {**state, "iteration": k, "rows": state["rows"] + rows, "path_steps": state["path_steps"] + cfg.steps,
                 "current": {"spec": chosen.spec.replace(name=f"{spec.name.split('@')[0]}@netadapt{k}").to_dict(),
                             "weights": name, "accuracy": res["accuracy"], "latency_pred_ms": chosen.latency_ms,
                             "latency_measured_ms": row.get("latency_measured_ms")}}
    _write_trajectory(run_dir, new_state["rows"])
    return new_state


def choose(rows: list[dict], metric: str) -> int | None:
    """Index of the proposal to keep: max ΔAcc/|ΔLat| (``slope``, MobileNetV3) or max accuracy
    (``accuracy``, NetAdapt); ties go to the larger latency cut. None if every proposal failed."""
    ok = [i for i, r in enumerate(rows) if r.get("error") is None and r.get("accuracy") is not None]
    if not ok:
        return None
    key = "slope" if metric == "slope" else "accuracy"
    return max(ok, key=lambda i: (rows[i][key], -rows[i]["delta_latency_pred_ms"]))


def _prune_weights(run_dir: Path, state: dict) -> None:
    """Delete iteration weights the saved state no longer points at (after the state is written)."""
    for p in (run_dir / WEIGHTS_DIR).glob("iter_*.pt"):
        if f"weights/{p.name}" != state["current"]["weights"]:
            p.unlink(missing_ok=True)


def _baseline_spec(start: ArchSpec, lat: TableLatency, latency_ms: float) -> tuple[ArchSpec, float]:
    """The uniform width multiplier of ``start`` whose predicted latency is closest to ``latency_ms``.

    Widths round to multiples of 8 (the MobileNets' rule), so latency moves in steps; the bisection
    brackets the target and the closer side wins (both latencies are reported, and measured)."""
    from netadapt.channels import scale_widths

    lo, hi = 0.05, 1.0  # lat(lo) <= latency_ms < lat(hi) (the start is slower than the result)
    for _ in range(12):
        mid = (lo + hi) / 2
        if lat.latency_ms(scale_widths(start, mid)) <= latency_ms:
            lo = mid
        else:
            hi = mid
    below, above = scale_widths(start, lo), scale_widths(start, hi)
    if abs(lat.latency_ms(above) - latency_ms) < abs(lat.latency_ms(below) - latency_ms):
        return above, hi
    return below, lo


def _finish(ctx: Refinement, state: dict) -> dict:
    """Long-term fine-tune (or retrain), the width-multiplier baseline, final measurements, files."""
    jobs, baseline = _final_jobs(ctx, state)
    ctx.log("final training of the result" + (" and the baseline" if baseline else ""))
    results = {name: ctx.pool.result(ref) for name, ref in jobs.items()}
    for name, res in results.items():
        if res.get("error"):
            raise RefineError(f"final training of the {name} network failed: {res['error']}")
    metrics = _final_metrics(ctx, state, results, baseline)
    atomic_write_text(ctx.run_dir / FINAL_METRICS_FILE, json.dumps(metrics, indent=2))
    s, r = metrics["start"], metrics["refined"]
    nan = float("nan")
    ctx.log(f"result: {r['name']}: held-out accuracy {r['accuracy']:.4f} (start {s['accuracy']:.4f}), test "
            f"{r['test_accuracy']:.4f} (start {s['test_accuracy']:.4f}); measured "
            f"{r['latency_measured_ms'] or nan:.3f} ms (start {s['latency_measured_ms'] or nan:.3f} ms)")
    if baseline:
        b = metrics["baseline"]
        ctx.log(f"baseline ×{b['width_multiplier']:.3f}: held-out accuracy {b['accuracy']:.4f}, test "
                f"{b['test_accuracy']:.4f}, measured {b['latency_measured_ms'] or nan:.3f} ms")
    return {**state, "stage": "done"}


def _final_jobs(ctx: Refinement, state: dict) -> tuple[dict, tuple[ArchSpec, float] | None]:
    """Submit the final trainings: the result (fine-tune, retrain or score), the start (score) and the
    baseline at the result's predicted latency with the same budget; returns ``(jobs, (baseline, ×))``."""
    cfg, pool = ctx.cfg, ctx.pool
    start, cur = ArchSpec.from_dict(state["start"]), state["current"]
    refined = ArchSpec.from_dict(cur["spec"])
    weights = (ctx.run_dir / cur["weights"]).read_bytes()
    start_weights = (ctx.run_dir / WEIGHTS_DIR / "start.pt").read_bytes()
    jobs = {}
    if cfg.retrain:
        length = {"epochs": cfg.final_epochs} if cfg.final_epochs else {"epochs": cfg.pretrain_epochs}
        jobs["refined"] = pool.call(train_task, refined.to_json(), cfg.eval, cfg.train_settings(**length),
                                    cfg.seed, True)
    elif cfg.final_epochs:
        jobs["refined"] = pool.call(finetune_task, refined.to_json(), refined.to_json(), weights, cfg.eval,
                                    cfg.finetune_settings(epochs=cfg.final_epochs), cfg.seed, True)
    else:
        jobs["refined"] = pool.call(score_task, refined.to_json(), weights, cfg.eval, cfg.train_settings(), True)
    jobs["start"] = pool.call(score_task, start.to_json(), start_weights, cfg.eval, cfg.train_settings(), True)
    if not cfg.baseline:
        return jobs, None
    base_spec, multiplier = _baseline_spec(start, ctx.lat, cur["latency_pred_ms"])
    base_spec = base_spec.replace(name=f"{start.name}@x{multiplier:.3f}")
    if cfg.retrain:
        jobs["baseline"] = pool.call(train_task, base_spec.to_json(), cfg.eval,
                                     cfg.train_settings(epochs=cfg.final_epochs or cfg.pretrain_epochs), cfg.seed, True)
    else:
        # the same fine-tuning budget the refined network had: its path's steps plus the final epochs
        batch = cfg.train_settings()["batch_size"]
        steps_final = math.ceil(cfg.final_epochs * _train_size(cfg) / batch) if cfg.final_epochs else 0
        jobs["baseline"] = pool.call(finetune_task, start.to_json(), base_spec.to_json(), start_weights, cfg.eval,
                                     cfg.finetune_settings(steps=max(1, state["path_steps"] + steps_final)),
                                     cfg.seed, True)
    ctx.log(f"baseline: {start.name} at width multiplier {multiplier:.3f} "
            f"({ctx.lat.latency_ms(base_spec):.3f} ms predicted)")
    return jobs, (base_spec, multiplier)


def _final_metrics(ctx: Refinement, state: dict, results: dict, baseline) -> dict:
    """Write the result's files and measure start, result (and baseline) whole: final_metrics.json's content."""
    from search_spaces.export import export_onnx

    cfg, lat, run_dir = ctx.cfg, ctx.lat, ctx.run_dir
    start, cur = ArchSpec.from_dict(state["start"]), state["current"]
    refined = ArchSpec.from_dict(cur["spec"])
    final_weights = results["refined"].get("weights") or (run_dir / cur["weights"]).read_bytes()
    atomic_write_bytes(run_dir / REFINED_WEIGHTS_FILE, final_weights)
    refined.save(run_dir / REFINED_FILE)
    export_onnx(refined.replace(resolution=lat.resolution), run_dir / REFINED_ONNX_FILE)
    ctx.log(("measuring the result" + (" and the baseline" if baseline else "") + " against the start on the device")
            if state["l0_measured_ms"] is not None else "no measurement on this machine: latencies are predicted")
    metrics = {
        "start": _metrics(start, results["start"]["accuracy"], state["l0_pred_ms"], state["l0_measured_ms"],
                          test_accuracy=results["start"]["test_accuracy"]),
        "refined": _metrics(refined, results["refined"]["accuracy"], cur["latency_pred_ms"],
                            **_against_start(lat, refined, start, state["l0_measured_ms"]),
                            test_accuracy=results["refined"]["test_accuracy"], name=refined.name),
        "target_ms": state["target_ms"], "delta_ms": state["delta_ms"], "target_met": state.get("target_met"),
        "iterations": state["iteration"], "metric": cfg.metric, "steps": cfg.steps,
        "fine_tune_steps_path": state["path_steps"], "retrain": cfg.retrain, "final_epochs": cfg.final_epochs,
        "deploy_resolution": lat.resolution, "dataset": cfg.eval.dataset,
    }
    if baseline:
        base_spec, multiplier = baseline
        base_spec.save(run_dir / BASELINE_FILE)
        metrics["baseline"] = _metrics(base_spec, results["baseline"]["accuracy"], lat.latency_ms(base_spec),
                                       **_against_start(lat, base_spec, start, state["l0_measured_ms"]),
                                       test_accuracy=results["baseline"]["test_accuracy"], width_multiplier=multiplier)
    metrics["wall_s"] = ctx.wall_s
    return metrics


def _against_start(lat: TableLatency, spec: ArchSpec, start: ArchSpec, l0_measured_ms: float | None) -> dict:
    """``spec``'s measured latency on the run's one basis: its interleaved ratio to the start network (host drift
    cancels) × the start's measurement that set the target, as every step's row has it. Measuring the start a
    second time would give a second basis: on this 2-core VM two measurements of a 0.15-ms network differed by
    20 %, more than a 15 % reduction. Nothing where this machine cannot measure."""
    if l0_measured_ms is None:
        return {"latency_measured": None}
    paired = lat.paired(spec, start)
    return {"latency_measured": paired.ratio * l0_measured_ms, "ratio_to_start": paired.ratio,
            "ratio_to_start_ci": [paired.ratio_ci_low, paired.ratio_ci_high]}


def _train_size(cfg: RefineConfig) -> int:
    from evaluation.evaluate import dataset_split

    _, train_idx, _ = dataset_split(cfg.eval)
    return len(train_idx)
