"""The MobileNetV3 process end to end: search → training of the winner → NetAdapt → final training → report.

An experiment is a TOML file (``experiments/large.toml``, ``experiments/small.toml``) and one
directory that holds every stage::

    RUN_DIR/
      experiment.json        the config as loaded, and each finished stage's summary (written atomically)
      log.txt                what happened, one line per event
      search/                a `nas search` run directory (resumable on its own)
      train/                 the winner trained from scratch: model.json, model.pt, metrics.json
      netadapt/              a `netadapt refine` run directory (absent when the winner already met the target)
      final/                 the result trained from scratch with the *recipe*: model.json, model.pt, row.json
      report/                report.html / report.md over search/ and netadapt/, and summary.md

A stage is done when ``experiment.json`` says so; ``nas experiment run CONFIG --run-dir DIR --resume``
skips finished stages and resumes the search and NetAdapt from their own state files, so a killed
experiment loses at most one search trial, one NetAdapt iteration or one training.

The *recipe* (``[final]``) is how every network of the reproduction table is trained (the searched
ones and the references), so that the table compares architectures and nothing else;
:func:`hwnas.table3.table_rows` reuses an experiment's ``final/row.json`` when its recipe is the table's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import tomllib

from evaluation import rundir
from evaluation.evaluate import PROXY_TRAIN
from evaluation.rundir import EXPERIMENT_FILE as STATE_FILE
from evaluation.rundir import atomic_write_bytes, atomic_write_text, log_line, read_json
from nas.search import SearchConfig
from netadapt.refine import RefineConfig
from search_spaces import ArchSpec, count, references
from search_spaces.spec import load as load_spec
from search_spaces.suggest import unknown_name

STAGES = ("search", "train", "netadapt", "final", "report")
RAY_STAGES = STAGES[:-1]
"""Every stage but the report runs its work as Ray tasks."""


_SEARCH = SearchConfig(run_dir="")  # the defaults an experiment file starts from
_REFINE = RefineConfig(run_dir="", arch="")


class ExperimentError(ValueError):
    """An experiment that cannot start or go on (a bad config, a failed stage, ...)."""


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How the networks of the reproduction table are trained (from scratch, the same for all).

    Attributes mirror :class:`evaluation.training.TrainConfig`; ``holdout`` images of the training split are
    kept for a held-out accuracy, the test split gives the table's accuracy.
    """

    epochs: float = 3.0
    batch_size: int = PROXY_TRAIN["batch_size"]
    lr: float = 0.1
    # 64², not the proxy's 32²: measured per CPU-second it is the better recipe (experiments/bench_recipe.py;
    # MobileNetV3-Small 90.2 % in 3 epochs at 64² where 32² needs 12 epochs, and the Large-Small gap of a
    # long recipe already at 3 epochs); README "How long the recipe trains"
    resolution_px: int = 64
    holdout: int = 5000
    train_subset: int | None = None
    seed: int = 0

    def train(self, threads: int) -> dict:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "resolution_px": self.resolution_px, "threads": threads}

    def key(self) -> str:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment file, validated. See ``experiments/large.toml`` for every key with a comment."""

    name: str
    seed: int = 0
    data: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    netadapt: dict = field(default_factory=dict)
    final: Recipe = field(default_factory=Recipe)
    report: dict = field(default_factory=dict)

    # The keys each section accepts, with their defaults: the search's and NetAdapt's own (one
    # definition, in SearchConfig, RefineConfig and EvalConfig), except where an experiment differs on
    # purpose (NetAdapt's shorter run: max_iters, final_epochs, baseline).
    DATA = {"dataset": _SEARCH.eval.dataset, "data_dir": None, "deploy_resolution": _SEARCH.eval.deploy_resolution,
            "lut": None, "cpus_per_trial": _SEARCH.cpus_per_trial, "ray_address": None, "train_subset": None,
            "measure": None, "task": _SEARCH.eval.task, "dense": None}
    SEARCH = {"space": _SEARCH.space, "searcher": _SEARCH.searcher, "trials": _SEARCH.trials, "target_ms": None,
              "target_like": None, "alpha": _SEARCH.alpha, "beta": _SEARCH.beta, "seeds": _SEARCH.seeds,
              "steps": _SEARCH.eval.train["steps"], "batch_size": _SEARCH.eval.train["batch_size"],
              "train_resolution": _SEARCH.eval.train["resolution_px"], "holdout": _SEARCH.eval.holdout,
              "latency": _SEARCH.eval.latency, "top_k": _SEARCH.top_k, "workers": None,
              "evaluator": _SEARCH.eval.evaluator, "supernet": _SEARCH.eval.supernet}
    TRAIN = {"epochs": 2.0, "batch_size": PROXY_TRAIN["batch_size"], "lr": 0.1,
             "resolution_px": PROXY_TRAIN["resolution_px"]}
    # reduction_if_met: a winner that already meets the NetAdapt target is still refined, by this fraction
    # of its latency, so that every experiment shows what NetAdapt adds (0: skip NetAdapt then)
    NETADAPT = {"enabled": True, "target_ms": None, "target_like": None, "reduction": None, "steps": _REFINE.steps,
                "delta_ratio": _REFINE.delta_ratio, "metric": _REFINE.metric, "max_iters": 20, "final_epochs": 0.0,
                "baseline": False, "holdout": _REFINE.eval.holdout, "reduction_if_met": 0.15}
    REPORT = {"references": True}
    FINAL = {f.name: f.default for f in dataclasses.fields(Recipe)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "ExperimentConfig":
        d = dict(d)
        known = {"name", "seed", "data", "search", "train", "netadapt", "final", "report"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ExperimentError(f"{source}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        name = d.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ExperimentError(f"{source}: `name` (a non-empty string) is required")
        seed = d.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ExperimentError(f"{source}: `seed` must be an integer, got {seed!r}")
        sections = {}
        for section, defaults in (("data", cls.DATA), ("search", cls.SEARCH), ("train", cls.TRAIN),
                                  ("netadapt", cls.NETADAPT), ("final", cls.FINAL), ("report", cls.REPORT)):
            given = d.get(section, {})
            if not isinstance(given, dict):
                raise ExperimentError(f"{source}: [{section}] must be a table")
            bad = sorted(set(given) - set(defaults))
            if bad:
                raise ExperimentError(f"{source}: [{section}] has unknown key {bad[0]!r}; "
                                      f"known: {', '.join(sorted(defaults))}")
            values = dict(defaults)
            for k, v in given.items():
                default = defaults[k]
                if default is not None and not _same_kind(v, default):
                    raise ExperimentError(f"{source}: [{section}] {k} must be {type(default).__name__}, got {v!r}")
                values[k] = float(v) if isinstance(default, float) else v
            sections[section] = values
        measure = sections["data"].get("measure")  # the latency backend and its settings (a MeasureConfig)
        if measure is not None:
            from latency.measure import MeasureConfig

            if not isinstance(measure, dict):
                raise ExperimentError(f"{source}: [data] measure must be a table, e.g. "
                                      f"{{ backend = \"ort-cpu\", intra_op_threads = 2 }}, got {measure!r}")
            try:
                MeasureConfig.from_dict(measure)
            except ValueError as e:
                raise ExperimentError(f"{source}: [data] measure: {e}") from None
        final = sections.pop("final")
        if "seed" not in d.get("final", {}):
            final["seed"] = seed
        cfg = cls(name=name, seed=seed, final=Recipe(**final), **sections)
        cfg.check(source)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "ExperimentConfig":
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ExperimentError(f"{path}: no such experiment file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ExperimentError(f"{path}: cannot read ({e})") from None
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ExperimentError(f"{path}: not valid TOML ({e})") from None
        return cls.from_dict(d, str(path))

    def check(self, source: str) -> None:
        s, n = self.search, self.netadapt
        if (s["target_ms"] is None) == (s["target_like"] is None):
            raise ExperimentError(f"{source}: [search] needs exactly one of target_ms and target_like")
        from evaluation.evaluators import EVALUATORS

        if s["evaluator"] not in EVALUATORS:
            raise ExperimentError(f"{source}: [search] evaluator must be one of {', '.join(EVALUATORS)}, "
                                  f"got {s['evaluator']!r}")
        if s["supernet"] is not None and not isinstance(s["supernet"], str):
            raise ExperimentError(f"{source}: [search] supernet must be a file name, got {s['supernet']!r}")
        self.check_task(source)
        if n["enabled"] and sum(n[k] is not None for k in ("target_ms", "target_like", "reduction")) != 1:
            raise ExperimentError(f"{source}: [netadapt] needs exactly one of target_ms, target_like and reduction")
        if not 0 <= n["reduction_if_met"] < 1:
            raise ExperimentError(f"{source}: [netadapt] reduction_if_met must be a fraction in [0, 1) (e.g. 0.15 "
                                  f"for 15 % faster; 0 skips NetAdapt when the winner meets the target), "
                                  f"got {n['reduction_if_met']!r}")
        for section, key in (("search", "target_like"), ("netadapt", "target_like")):
            name = getattr(self, section)[key]
            if name is not None and name not in references.names():
                raise ExperimentError(f"{source}: [{section}] target_like: "
                                      f"{unknown_name('architecture', name, references.names())}")
        for section, key in (("search", "trials"), ("search", "steps"), ("netadapt", "steps"),
                             ("netadapt", "max_iters"), ("data", "cpus_per_trial")):
            if getattr(self, section)[key] < 1:
                raise ExperimentError(f"{source}: [{section}] {key} must be at least 1")
        for section, value in (("train", self.train["epochs"]), ("final", self.final.epochs)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ExperimentError(f"{source}: [{section}] epochs must be a positive number, got {value!r}")

    def check_task(self, source: str) -> None:
        """``[data] task`` (and ``dense``, a table of :class:`evaluation.dense_task.DenseTaskConfig` keys): a dense
        task needs whole-network latency in the search and NetAdapt off (it does not refine dense networks yet)."""
        from evaluation.dense_task import TaskError, check_task
        from evaluation.evaluate import EvalConfig

        d = self.data
        if d["dense"] is not None and not isinstance(d["dense"], dict):
            raise ExperimentError(f"{source}: [data] dense must be a table, e.g. {{ head = \"lraspp\" }}")
        try:
            check_task(EvalConfig(task=d["task"], dense=d["dense"] or {}, evaluator=self.search["evaluator"]))
        except TaskError as e:
            raise ExperimentError(f"{source}: [data] {e}") from None
        if d["task"] == "classification":
            return
        if self.search["latency"] == "predicted":
            raise ExperimentError(f"{source}: [search] latency = \"predicted\" does not cover dense heads yet; with "
                                  f"[data] task = \"{d['task']}\" use \"measured\" or \"analytic\"")
        if self.netadapt["enabled"]:
            raise ExperimentError(f"{source}: [netadapt] enabled must be false with [data] task = \"{d['task']}\" "
                                  "(NetAdapt does not refine dense networks yet)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


# ------------------------------------------------------------------------------------------------
# Shared pieces: the data/latency settings of every stage, training, one table row
# ------------------------------------------------------------------------------------------------


def eval_config(cfg: ExperimentConfig, holdout: int, train: dict, latency: str = "predicted",
                train_subset: int | None = None):
    """The stages' shared data and latency settings (``train_subset``: the recipe's, else ``[data]``'s)."""
    from evaluation.evaluate import EvalConfig

    d = cfg.data
    return EvalConfig(dataset=d["dataset"], data_dir=d["data_dir"], holdout=holdout,
                      train_subset=train_subset or d["train_subset"], train=train, latency=latency,
                      lut_path=d["lut"], measure=d["measure"] or {}, deploy_resolution=d["deploy_resolution"],
                      split_seed=cfg.seed, task=d["task"], dense=d["dense"] or {})


def measure_row(spec: ArchSpec, eval_cfg, int8: bool = True, workdir: Path | None = None) -> dict:
    """fp32 and int8 latency of ``spec`` at the deployment resolution, with MAdds and params."""
    import tempfile

    from evaluation.evaluate import latency_model
    from search_spaces.export import export_onnx

    model = latency_model(eval_cfg, "measured")
    deploy = model.deploy(spec)
    c = count(deploy)
    mcfg = model.measure_config
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(deploy, fp32)  # kept: the int8 model is quantized from this file
        m = model.measurement(spec, fp32)
        row = {"latency_fp32_ms": m.median_ms, "latency_fp32_cv": m.cv, "latency_int8_ms": None,
               "madds": c.madds, "params": c.params, "deploy_resolution": deploy.resolution,
               "device": f"{m.fingerprint.cpu_model}, {m.fingerprint.intra_op_threads} thread(s), "
                         f"ORT {m.fingerprint.ort_version}"}
        if int8:
            from evaluation.evaluate import calibration_inputs
            from latency.quantize import quantize_and_measure

            samples = calibration_inputs(deploy, 32, eval_cfg.dataset, eval_cfg.data_dir, seed=0)
            row["latency_int8_ms"] = quantize_and_measure(fp32, samples, Path(tmp) / "model.int8.onnx", mcfg).median_ms
    return row


def paired_ratio(spec: ArchSpec, other: ArchSpec, eval_cfg) -> dict:
    """latency(spec) / latency(other), measured interleaved (steadier than two medians on a shared host):
    ``{paired_ratio, paired_ratio_low, paired_ratio_high}``, the bounds its paired-burst bootstrap 95 % CI."""
    from evaluation.evaluate import latency_model

    m = latency_model(eval_cfg, "measured").paired(spec, other)
    return {"paired_ratio": m.ratio, "paired_ratio_low": m.ratio_ci_low, "paired_ratio_high": m.ratio_ci_high}


def trained_row(name: str, spec: ArchSpec, res: dict, recipe: Recipe, eval_cfg, int8: bool,
                measure: bool = True) -> dict:
    """A table row of a trained network: test and held-out accuracy, and (``measure``) its latency."""
    if res.get("error"):
        raise ExperimentError(f"training {name} failed: {res['error']}")
    return {"name": name, "arch_id": spec.arch_id, "test_accuracy": res["test_accuracy"],
            "heldout_accuracy": res["accuracy"], "train_s": res.get("train_s"),
            **(measure_row(spec, eval_cfg, int8) if measure else {}),
            "recipe": dataclasses.asdict(recipe), "recipe_key": recipe.key()}


# ------------------------------------------------------------------------------------------------
# The experiment driver
# ------------------------------------------------------------------------------------------------


@dataclass
class ExperimentOutcome:
    run_dir: Path
    state: dict
    wall_s: float


def _with_defaults(stored: Any) -> Any:
    """A stored config with the keys added since it was written set to their defaults (so that an
    experiment started before a new key existed still resumes); as stored if it does not load."""
    try:
        return json.loads(json.dumps(ExperimentConfig.from_dict(dict(stored)).to_dict()))
    except (ExperimentError, TypeError, ValueError):
        return stored


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, *, resume: bool = False, force: bool = False,
                   echo: Callable[[str], None] | None = print) -> ExperimentOutcome:
    """Run (or resume) every stage not yet done; see the module docstring."""
    from evaluation.data import load_dataset

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    state_path = run_dir / STATE_FILE
    if resume:
        if not state_path.exists():
            raise ExperimentError(f"{run_dir} holds no experiment to resume (no {STATE_FILE})")
        state = read_json(state_path, ExperimentError)
        if _with_defaults(state.get("config")) != json.loads(json.dumps(cfg.to_dict())):
            raise ExperimentError(f"{run_dir} was started with another configuration; resume it with the same file "
                                  f"(or start a new --run-dir)")
    else:
        rundir.prepare_run_dir(run_dir, force, ExperimentError)
        state = {"config": cfg.to_dict(), "stages": {}, "elapsed_s": 0.0}
    load_dataset(cfg.data["dataset"], cfg.data["data_dir"])  # fail fast, before any stage starts
    elapsed_before = state.get("elapsed_s", 0.0)

    def save(stage: str, summary: dict) -> None:
        state["stages"][stage] = {**summary, "done": True}
        state["elapsed_s"] = elapsed_before + time.perf_counter() - t0
        atomic_write_text(state_path, json.dumps(state, indent=2, default=str))

    atomic_write_text(state_path, json.dumps(state, indent=2, default=str))
    log_line(run_dir, f"experiment {cfg.name}: " + ("resuming" if resume else "starting") + f" in {run_dir}", echo)
    runners = {"search": _stage_search, "train": _stage_train, "netadapt": _stage_netadapt, "final": _stage_final,
               "report": _stage_report}
    shared_ray = _shared_local_ray(cfg, state, run_dir, echo)
    try:
        for stage in STAGES:
            if state["stages"].get(stage, {}).get("done"):
                log_line(run_dir, f"[{stage}] done already", echo)
                continue
            log_line(run_dir, f"[{stage}] starting", echo)
            t_stage = time.perf_counter()
            summary = runners[stage](cfg, run_dir, state, echo)
            save(stage, {**summary, "wall_s": time.perf_counter() - t_stage})
            log_line(run_dir, f"[{stage}] done in {(time.perf_counter() - t_stage) / 60:.1f} min", echo)
    finally:
        if shared_ray is not None:
            shared_ray.shutdown()
    return ExperimentOutcome(run_dir, state, state["elapsed_s"])


def _shared_local_ray(cfg: ExperimentConfig, state: dict, run_dir: Path, echo):
    """One local Ray instance for every stage still to run (each stage joins the running instance instead of
    starting and stopping its own, which costs seconds per stage); None when the experiment joins a cluster
    (``[data] ray_address``) or no Ray stage is left."""
    from evaluation.execution import RayPool

    if cfg.data["ray_address"] or all(state["stages"].get(s, {}).get("done") for s in RAY_STAGES):
        return None
    t_ray = time.perf_counter()
    pool = RayPool(cpus_per_trial=1)
    log_line(run_dir, f"local Ray for the experiment's stages, on 127.0.0.1 (ready in "
                      f"{time.perf_counter() - t_ray:.1f} s)", echo)
    return pool


def _stage_search(cfg: ExperimentConfig, run_dir: Path, state: dict, echo) -> dict:
    from evaluation.rundir import CONFIG_FILE
    from nas.search import SearchConfig, run_search

    s, d = cfg.search, cfg.data
    train = {"steps": s["steps"], "batch_size": s["batch_size"], "resolution_px": s["train_resolution"],
             "threads": d["cpus_per_trial"]}
    scfg = SearchConfig(
        run_dir=str(run_dir / "search"), space=s["space"], searcher=s["searcher"], trials=s["trials"],
        target_ms=s["target_ms"], target_like=s["target_like"], alpha=s["alpha"], beta=s["beta"], seed=cfg.seed,
        seeds=s["seeds"], workers=s["workers"], cpus_per_trial=d["cpus_per_trial"], ray_address=d["ray_address"],
        top_k=s["top_k"], eval=dataclasses.replace(eval_config(cfg, s["holdout"], train, s["latency"]),
                                                   evaluator=s["evaluator"], supernet=s["supernet"]))
    resume = (run_dir / "search" / CONFIG_FILE).exists()
    outcome = run_search(scfg, resume=resume, force=not resume, echo=echo)
    if outcome.found is None:
        raise ExperimentError("the search found no architecture: every trial failed (see search/trials.csv)")
    m = outcome.found_metrics
    return {"found": "search/found.json", "trial": m["trial"], "arch_id": m["arch_id"], "accuracy": m["accuracy"],
            "latency_measured_ms": m["latency_measured_ms"], "target_ms": m["target_ms"],
            "completed": outcome.completed, "failed": outcome.failed}


def _train(spec: ArchSpec, eval_cfg, train: dict, seed: int, ray_address: str | None, whole_node: bool = True) -> dict:
    """One training from scratch as a Ray task on a whole node; returns train_task's dict."""
    from evaluation.evaluate import train_task
    from evaluation.execution import RayPool

    pool = RayPool(address=ray_address, cpus_per_trial=1)
    try:
        cpus = pool.node_cpus if whole_node else 1
        return pool.result(pool.call(train_task, spec.to_json(), eval_cfg, {**train, "threads": cpus},
                                     seed, True, num_cpus=cpus))
    finally:
        pool.shutdown()


def _stage_train(cfg: ExperimentConfig, run_dir: Path, state: dict, echo) -> dict:
    t = cfg.train
    spec = load_spec(run_dir / rundir.SEARCH_DIR / rundir.FOUND_FILE)
    log_line(run_dir, f"[train] training the winner {spec.name} from scratch for {t['epochs']:g} epochs", echo)
    eval_cfg = eval_config(cfg, cfg.netadapt["holdout"], {})
    res = _train(spec, eval_cfg, dict(t), cfg.seed, cfg.data["ray_address"])
    if res.get("error"):
        raise ExperimentError(f"training the winner failed: {res['error']}")
    out = run_dir / "train"
    out.mkdir(exist_ok=True)
    atomic_write_bytes(out / "model.pt", res["weights"])
    spec.save(out / rundir.MODEL_FILE)
    metrics = {"accuracy": res["accuracy"], "test_accuracy": res["test_accuracy"], "train_s": res.get("train_s"),
               "epochs": t["epochs"]}
    atomic_write_text(out / rundir.METRICS_FILE, json.dumps(metrics, indent=2))
    log_line(run_dir, f"[train] held-out accuracy {res['accuracy']:.4f}, test {res['test_accuracy']:.4f}", echo)
    return {"model": "train/model.json", **metrics}


def _stage_netadapt(cfg: ExperimentConfig, run_dir: Path, state: dict, echo) -> dict:
    from evaluation.rundir import STATE_FILE as REFINE_STATE
    from hwnas.report import write_report
    from netadapt.refine import RefineConfig, run_refine

    n = cfg.netadapt
    spec = load_spec(run_dir / rundir.TRAIN_DIR / rundir.MODEL_FILE)
    if not n["enabled"]:
        return {"skipped": "disabled in the config", "result": "train/model.json"}
    eval_cfg = eval_config(cfg, n["holdout"], {"batch_size": cfg.train["batch_size"],
                                               "resolution_px": cfg.train["resolution_px"],
                                               "threads": cfg.data["cpus_per_trial"]})
    if "netadapt_target" not in state:
        # resolved once and kept, so that a resumed experiment refines towards the same number
        from netadapt.refine import table_latency

        lat = table_latency(eval_cfg)
        target_ms = n["target_ms"]
        if n["target_like"] and lat.can_measure:
            # the winner against the reference, interleaved: two medians taken a minute apart on a
            # shared host can differ by a few percent, which is the size of the decision here
            ref = references.get(n["target_like"]).replace(in_channels=spec.in_channels, num_classes=spec.num_classes)
            target_ms = lat.measure_ms(ref)
            start_ms = lat.ratio(spec, ref) * target_ms
        elif n["target_like"]:
            ref = references.get(n["target_like"]).replace(in_channels=spec.in_channels, num_classes=spec.num_classes)
            target_ms, start_ms = lat.latency_ms(ref), lat.latency_ms(spec)
        else:
            start_ms = lat.measure_ms(spec) or lat.latency_ms(spec)
        state["netadapt_target"] = {"target_ms": target_ms, "start_ms": start_ms, "like": n["target_like"]}
        atomic_write_text(run_dir / STATE_FILE, json.dumps(state, indent=2, default=str))
        log_line(run_dir, f"[netadapt] the trained winner takes {start_ms:.3f} ms on this device"
                      + (f"; target {target_ms:.3f} ms" + (f" ({n['target_like']})" if n["target_like"] else "")
                         if target_ms is not None else f"; target {n['reduction']:.0%} faster"), echo)
    target_ms, start_ms = state["netadapt_target"]["target_ms"], state["netadapt_target"]["start_ms"]
    reduction, met = n["reduction"], None
    if target_ms is not None and start_ms <= target_ms:
        met = f"the winner ({start_ms:.3f} ms) already meets {target_ms:.3f} ms"
        if not n["reduction_if_met"]:
            if not (run_dir / "netadapt" / REFINE_STATE).exists():
                log_line(run_dir, "[netadapt] the winner already meets the target: nothing to remove", echo)
                return {"skipped": met, "result": "train/model.json", "target_ms": target_ms}
        else:  # still refined, so that the experiment shows what NetAdapt adds
            target_ms, reduction = None, n["reduction_if_met"]
            log_line(run_dir, f"[netadapt] {met}: refining it {reduction:.0%} faster instead (reduction_if_met)", echo)
    rcfg = RefineConfig(
        run_dir=str(run_dir / rundir.NETADAPT_DIR), arch=str(run_dir / rundir.TRAIN_DIR / rundir.MODEL_FILE),
        weights=str(run_dir / "train" / "model.pt"), target_ms=target_ms, reduction=reduction,
        delta_ratio=n["delta_ratio"], steps=n["steps"], metric=n["metric"], max_iters=n["max_iters"],
        final_epochs=n["final_epochs"], baseline=n["baseline"], seed=cfg.seed,
        cpus_per_trial=cfg.data["cpus_per_trial"], ray_address=cfg.data["ray_address"], eval=eval_cfg)
    resume = (run_dir / "netadapt" / REFINE_STATE).exists()
    outcome = run_refine(rcfg, resume=resume, force=not resume, echo=echo)
    m = outcome.metrics
    try:
        write_report([run_dir / "netadapt"], references=False)
    except (ValueError, OSError) as e:
        log_line(run_dir, f"[netadapt] warning: its report was not written ({e})", echo)
    if not m.get("target_met"):
        log_line(run_dir, f"[netadapt] warning: the target {m['target_ms']:.3f} ms was not met in {m['iterations']} "
                      f"iterations; going on with the closest network", echo)
    return {"result": "netadapt/refined.json", "target_ms": m["target_ms"], "target_met": m.get("target_met"),
            "iterations": m["iterations"], "start_ms": m["start"]["latency_measured_ms"],
            "refined_ms": m["refined"]["latency_measured_ms"],
            **({"met_before": met, "reduction": reduction} if met else {})}


def _stage_final(cfg: ExperimentConfig, run_dir: Path, state: dict, echo) -> dict:
    spec = load_spec(run_dir / state["stages"]["netadapt"]["result"])
    spec = spec.replace(name=f"{cfg.name}-searched")
    recipe = cfg.final
    log_line(run_dir, f"[final] training {spec.name} from scratch with the recipe ({recipe.epochs:g} epochs), then "
                  f"measuring it fp32 and int8", echo)
    eval_cfg = eval_config(cfg, recipe.holdout, {}, train_subset=recipe.train_subset)
    res = _train(spec, eval_cfg, recipe.train(1), recipe.seed, cfg.data["ray_address"])
    row = trained_row(spec.name, spec, res, recipe, eval_cfg, int8=True)
    out = run_dir / "final"
    out.mkdir(exist_ok=True)
    spec.save(out / rundir.MODEL_FILE)
    atomic_write_bytes(out / "model.pt", res["weights"])
    atomic_write_text(out / rundir.ROW_FILE, json.dumps(row, indent=2))
    log_line(run_dir, f"[final] test accuracy {row['test_accuracy']:.4f}; {row['latency_fp32_ms']:.3f} ms fp32, "
                  f"{row['latency_int8_ms']:.3f} ms int8; {row['madds'] / 1e6:.1f}M MAdds, {row['params']:,} params",
         echo)
    return {"row": "final/row.json", "test_accuracy": row["test_accuracy"], "latency_fp32_ms": row["latency_fp32_ms"],
            "latency_int8_ms": row["latency_int8_ms"]}


def _stage_report(cfg: ExperimentConfig, run_dir: Path, state: dict, echo) -> dict:
    from hwnas.report import write_report

    out = run_dir / "report"
    path = write_report([run_dir], out_dir=out, references=cfg.report["references"], echo=echo)
    atomic_write_text(out / "summary.md", summary_markdown(cfg, state))
    return {"report": str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)}


def summary_markdown(cfg: ExperimentConfig, state: dict) -> str:
    """The experiment's stages in a few lines (also printed by the CLI at the end)."""
    st = state["stages"]

    def num(d: dict, key: str, fmt: str) -> str:  # a missing or None value prints as nan
        v = d.get(key)
        return format(float("nan") if v is None else v, fmt)

    lines = [f"# Experiment {cfg.name}", ""]
    s = st.get("search", {})
    if s:
        lines.append(f"- search ({cfg.search['searcher']}, {s.get('completed')} trials, {cfg.search['space']} space): "
                     f"trial {s.get('trial')}, held-out accuracy {num(s, 'accuracy', '.4f')} at "
                     f"{num(s, 'latency_measured_ms', '.3f')} ms measured (target {num(s, 'target_ms', '.3f')} ms)")
    t = st.get("train", {})
    if t:
        lines.append(f"- winner trained {t.get('epochs'):g} epochs: test accuracy {num(t, 'test_accuracy', '.4f')}")
    n = st.get("netadapt", {})
    if n.get("skipped"):
        lines.append(f"- NetAdapt skipped: {n['skipped']}")
    elif n:
        if n.get("met_before"):
            lines.append(f"- {n['met_before']}: NetAdapt made it {n['reduction']:.0%} faster (reduction_if_met)")
        lines.append(f"- NetAdapt: {n.get('iterations')} iterations, {num(n, 'start_ms', '.3f')} → "
                     f"{num(n, 'refined_ms', '.3f')} ms measured (target {num(n, 'target_ms', '.3f')} ms"
                     f"{'' if n.get('target_met') else ', not met'})")
    f = st.get("final", {})
    if f:
        lines.append(f"- final ({cfg.final.epochs:g} epochs from scratch): test accuracy "
                     f"{num(f, 'test_accuracy', '.4f')}, {num(f, 'latency_fp32_ms', '.3f')} ms fp32, "
                     f"{num(f, 'latency_int8_ms', '.3f')} ms int8")
    if state.get("elapsed_s"):
        lines.append(f"- wall time so far: {state['elapsed_s'] / 60:.1f} min")
    return "\n".join(lines) + "\n"
