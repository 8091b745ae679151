"""Reports of run directories: ``nas report RUN_DIR [RUN_DIR ...]`` (see docs/REPORTS.md).

A search run directory (``trials.csv``, written by :mod:`nas.search`) gets: accuracy against latency
for every trial with the Pareto front, the found model and reference networks evaluated with the
run's own proxy on this device; reward and best-so-far reward over trials; predicted against measured
latency with its error statistics; the found architecture as the paper's table; the failed trials.
A NetAdapt run directory (``trajectory.csv``) gets latency and accuracy per iteration and the chosen
proposal kinds. Every run gets its environment (device, threads, versions, seed, data, budgets,
wall time). Several run directories give one report with one reward line per run.

Reference networks are trained with the run's :class:`evaluation.evaluate.EvalConfig` and seed, and cached
in ``RUN_DIR/references.csv`` so that the next report is fast.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from evaluation import rundir
from hwnas import report_plots as plots
from hwnas.report_doc import Doc, format_value
from search_spaces import ArchSpec, count, load, references
from search_spaces.files import atomic_write_text
from search_spaces.suggest import unknown_name
from search_spaces.table import COLUMNS, arch_rows

DEFAULT_REFERENCES = ("mobilenetv3_large", "mobilenetv3_large_075", "mobilenetv3_small", "mobilenetv3_small_075",
                      "mobilenetv2", "mnasnet_a1")
REFERENCES_FILE = "references.csv"
REPORT_DIR = "report"

TRIAL_COLUMNS = ("number", "state", "accuracy", "latency_ms", "reward")
TRIAL_OPTIONAL = ("latency_predicted_ms", "latency_measured_ms", "madds", "params", "duplicate_of", "arch_id",
                  "seed_name", "error")
TRIAL_TEXT = ("state", "arch_id", "seed_name", "error")
REFERENCE_COLUMNS = ("name", "arch_id", "accuracy", "latency_ms", "latency_predicted_ms", "latency_measured_ms",
                     "reward", "madds", "params", "train_s", "error")
TRAJECTORY_COLUMNS = ("iteration", "kind", "chosen")
TRAJECTORY_OPTIONAL = ("proposal", "group", "blocks", "old_width", "new_width", "accuracy", "delta_acc",
                       "latency_pred_ms", "delta_latency_pred_ms", "latency_measured_ms",
                       "delta_latency_measured_ms", "madds", "params", "slope", "error")
TRAJECTORY_TEXT = ("kind", "chosen", "proposal", "group", "blocks", "error")

# (row label, dotted path into config.json) for the environment table
ENVIRONMENT_FIELDS = (
    ("CPU", "device.cpu_model"), ("logical cores", "device.logical_cores"), ("CPUs", "environment.cpus"),
    ("platform", "environment.platform"),
    ("ONNX Runtime threads", "device.intra_op_threads"), ("training threads per trial", "search.eval.train.threads"),
    ("latency backend", "device.backend"), ("latency provider", "device.provider"),
    ("concurrent trials", "search.workers"), ("python", "environment.python"), ("torch", "environment.torch"),
    ("onnxruntime", "environment.onnxruntime"), ("optuna", "environment.optuna"), ("ray", "environment.ray"),
    ("numpy", "environment.numpy"), ("seed", "search.seed"), ("dataset", "dataset.name"),
    ("dataset source", "dataset.source"), ("training images", "dataset.train"), ("classes", "dataset.classes"),
    ("space", "search.space"), ("searcher", "search.searcher"), ("trial budget", "search.trials"),
    ("target (ms)", "target_ms"), ("alpha", "search.alpha"), ("beta", "search.beta"),
    ("proxy steps", "search.eval.train.steps"), ("batch size", "search.eval.train.batch_size"),
    ("training resolution", "search.eval.train.resolution_px"), ("held-out images", "search.eval.holdout"),
    ("training subset", "search.eval.train_subset"), ("latency", "search.eval.latency"),
    ("deploy resolution", "search.eval.deploy_resolution"), ("started", "started"),
)


@dataclass
class Run:
    """One run directory, read and checked."""

    path: Path
    label: str
    config: dict
    trials: pd.DataFrame | None
    found: ArchSpec | None
    found_metrics: dict | None
    trajectory: pd.DataFrame | None
    refined: ArchSpec | None
    final_metrics: dict | None
    wall_s: float | None


# ------------------------------------------------------------------------------------------------
# Reading run directories
# ------------------------------------------------------------------------------------------------


def read_table(path: Path, required: Sequence[str], optional: Sequence[str] = (), text: Sequence[str] = (),
               what: str = "CSV") -> pd.DataFrame:
    """Read a CSV file; ValueError naming the file if it is unreadable or lacks ``required`` columns.

    Missing ``optional`` columns are added empty; columns not in ``text`` that are required or
    optional must be numeric. An empty file is a table without rows.
    """
    try:
        df = pd.read_csv(path, dtype={c: str for c in text})
    except pd.errors.EmptyDataError:
        df = pd.DataFrame(columns=[*required])
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable {what} file ({str(e).splitlines()[0]})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a {what} file: missing column(s) {', '.join(missing)}")
    for c in optional:
        if c not in df.columns:
            df[c] = np.nan
    for c in (*required, *optional):
        if c not in text:
            try:
                df[c] = pd.to_numeric(df[c])
            except (ValueError, TypeError):
                raise ValueError(f"{path}: column {c} is not numeric") from None
    return df


def read_json(path: Path) -> dict | None:
    """A JSON object file, None if absent; ValueError naming the file if it is not one."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def run_wall_s(path: Path) -> float | None:
    """The run's wall time: the one recorded in the run directory (:func:`evaluation.rundir.recorded_wall_s`,
    the figure the command printed and logged); for a run made before it was recorded, the span of
    ``log.txt``'s time stamps."""
    recorded = rundir.recorded_wall_s(path)
    return recorded if recorded is not None else wall_time_s(path / rundir.LOG_FILE)


def wall_time_s(log: Path) -> float | None:
    """Seconds from the first to the last time-stamped line of ``log.txt`` (midnight wrap-around handled)."""
    if not log.exists():
        return None
    stamps = []
    for line in log.read_text(errors="replace").splitlines():
        m = re.match(r"(\d\d):(\d\d):(\d\d) ", line)
        if m:
            stamps.append(int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]))
    if len(stamps) < 2:
        return None
    return float(sum((b - a) % 86400 for a, b in zip(stamps, stamps[1:])))


def load_run(path: Path, label: str) -> Run:
    """Read a search or NetAdapt run directory; ValueError if it is neither or a file is corrupt."""
    if not path.is_dir():
        raise ValueError(f"{path}: no such run directory")
    has_trials, has_trajectory = (path / rundir.TRIALS_FILE).exists(), (path / rundir.TRAJECTORY_FILE).exists()
    if not (has_trials or has_trajectory):
        raise ValueError(f"{path} is not a run directory (no trials.csv from `nas search` "
                         "or trajectory.csv from `netadapt refine`)")
    trials = trajectory = None
    if has_trials:
        trials = read_table(path / rundir.TRIALS_FILE, TRIAL_COLUMNS, TRIAL_OPTIONAL, TRIAL_TEXT, "trials")
    if has_trajectory:
        trajectory = read_table(path / rundir.TRAJECTORY_FILE, TRAJECTORY_COLUMNS, TRAJECTORY_OPTIONAL, TRAJECTORY_TEXT,
                                "NetAdapt trajectory")
        trajectory["chosen"] = trajectory["chosen"].str.strip().str.lower() == "true"
    return Run(path=path, label=label, config=read_json(path / rundir.CONFIG_FILE) or {}, trials=trials,
               found=_load_spec(path / rundir.FOUND_FILE), found_metrics=read_json(path / rundir.FOUND_METRICS_FILE),
               trajectory=trajectory, refined=_load_spec(path / rundir.REFINED_FILE),
               final_metrics=read_json(path / rundir.FINAL_METRICS_FILE), wall_s=run_wall_s(path))


def _load_spec(path: Path) -> ArchSpec | None:
    """The spec in ``path``, None if absent; ValueError naming the file if it is not a valid spec."""
    if not path.exists():
        return None
    try:
        return load(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a valid architecture spec ({e})") from None


def load_runs(run_dirs: Sequence[str | Path]) -> list[Run]:
    """Every run directory, labelled by its name (with a number where two names are equal)."""
    if not run_dirs:
        raise ValueError("give at least one run directory")
    paths = [Path(p) for p in run_dirs]
    names = [p.resolve().name for p in paths]
    labels = [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]
    return [load_run(p, label) for p, label in zip(paths, labels)]


def metric_label(run: Run) -> str:
    """What a search's "accuracy" is: ``accuracy``, or ``mIoU`` / ``mAP`` for a dense task (``--task``)."""
    from evaluation.dense_task import metric_label as label

    return label(_get(run.config, "search.eval.task") or "classification")


def _get(config: dict, dotted: str):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


# ------------------------------------------------------------------------------------------------
# Reference networks: evaluated with the run's own proxy on this device, cached in the run directory
# ------------------------------------------------------------------------------------------------


def reference_names(references_arg: bool | Sequence[str]) -> tuple[str, ...]:
    """``True``: the default set; ``False``: none; a sequence: those names (checked)."""
    if references_arg is True:
        return DEFAULT_REFERENCES
    if references_arg is False:
        return ()
    unknown = [n for n in references_arg if n not in references.names()]
    if unknown:
        raise ValueError(unknown_name("reference architecture", unknown[0], references.names()))
    return tuple(references_arg)


def cannot_evaluate_references(run: Run) -> str | None:
    """Why this run's references cannot be evaluated here (None if they can)."""
    from latency.measure import MeasureConfig

    search, dataset = run.config.get("search"), run.config.get("dataset")
    if not search or not dataset or run.config.get("target_ms") is None:
        return "config.json lacks the search, dataset or target"
    device = run.config.get("device")
    measure = search.get("eval", {}).get("measure") or {}
    try:
        here = json.loads(json.dumps(MeasureConfig.from_dict(measure).fingerprint().to_dict(), default=str))
    except ValueError as e:  # e.g. the run's latency backend (ort-cuda) is not available on this machine
        return str(e)
    if device and device != here:
        return (f"this machine ({here.get('cpu_model')}, {here.get('intra_op_threads')} thread(s)) is not the run's "
                f"device ({device.get('cpu_model')}, {device.get('intra_op_threads')} thread(s))")
    return None


def evaluate_reference(spec: ArchSpec, run: Run) -> dict:
    """Train and time ``spec`` as the run's trials were (same EvalConfig and seed); also measured whole."""
    from evaluation.evaluate import evaluate_candidate, latency_model
    from nas.rewards import RewardConfig, mnas_reward
    from nas.search import SearchConfig

    cfg = SearchConfig.from_dict(run.config["search"])
    ev = dataclasses.replace(cfg.eval, keep_weights=False)
    res = evaluate_candidate(spec.to_json(), ev, cfg.seed)
    row = {f: getattr(res, f, None) for f in REFERENCE_COLUMNS}
    if res.error is None:
        if res.latency_measured_ms is None:
            row["latency_measured_ms"] = latency_model(ev, "measured").latency_ms(spec)
        reward_cfg = RewardConfig(target_ms=run.config["target_ms"], alpha=cfg.alpha, beta=cfg.beta)
        row["reward"] = mnas_reward(res.accuracy, res.latency_ms, reward_cfg)
    return row


def reference_table(run: Run, names: Sequence[str], shared: dict, echo: Callable[[str], None] | None
                    ) -> tuple[pd.DataFrame, str | None]:
    """The run's cached references plus ``names`` evaluated now if missing; and why not, if they cannot be.

    ``shared`` carries evaluations between runs of one report that use the same proxy.
    """
    path = run.path / REFERENCES_FILE
    cached = (read_table(path, REFERENCE_COLUMNS[:4], REFERENCE_COLUMNS[4:], ("name", "arch_id", "error"),
                         "references") if path.exists() else pd.DataFrame(columns=list(REFERENCE_COLUMNS)))
    if not names:
        return cached, None
    why_not = cannot_evaluate_references(run)
    if why_not:
        return cached, why_not
    res, channels, classes = (_get(run.config, k) for k in
                              ("search.eval.deploy_resolution", "dataset.channels", "dataset.classes"))
    proxy = json.dumps([run.config["search"]["eval"], run.config["search"].get("seed"), run.config["target_ms"]],
                       sort_keys=True)
    for i, name in enumerate(names):
        spec = references.get(name).replace(resolution=res, in_channels=channels, num_classes=classes)
        if (_get(run.config, "search.eval.task") or "classification") != "classification":  # the run's head too
            from evaluation.dense_task import with_head
            from nas.search import SearchConfig

            spec = with_head(spec, SearchConfig.from_dict(run.config["search"]).eval, classes)
        if ((cached["name"] == name) & (cached["arch_id"] == spec.arch_id)).any():
            continue
        key = (proxy, spec.arch_id)
        if key not in shared:
            if echo:
                echo(f"{run.label}: evaluating reference {name} ({i + 1}/{len(names)}) with the run's proxy")
            shared[key] = evaluate_reference(spec, run)
        row = pd.DataFrame([{**shared[key], "name": name, "arch_id": spec.arch_id}])
        cached = pd.concat([cached[cached["name"] != name], row], ignore_index=True) if len(cached) else row
        atomic_write_text(path, cached[list(REFERENCE_COLUMNS)].to_csv(index=False))
    return cached, None


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


def pareto_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The search's Pareto front (:func:`nas.search.pareto_front`: accuracy ↑, latency ↓)."""
    from nas.search import pareto_front

    records = trials.astype(object).where(trials.notna(), None).to_dict("records")
    cols = ["number", "seed_name", "accuracy", "latency_ms", "latency_measured_ms", "reward", "params", "madds"]
    front = pd.DataFrame(pareto_front(records), columns=list(trials.columns)).infer_objects()
    return front[cols]


def latency_pairs(trials: pd.DataFrame, refs: pd.DataFrame) -> pd.DataFrame:
    """Every architecture with both a predicted and a measured latency, and the relative error in %."""
    t = trials[(trials["state"] == "COMPLETE") & trials["latency_predicted_ms"].notna()
               & trials["latency_measured_ms"].notna()]
    r = refs[refs["latency_predicted_ms"].notna() & refs["latency_measured_ms"].notna()]
    df = pd.DataFrame({
        "architecture": [f"trial {int(n)}" for n in t["number"]] + [f"reference {n}" for n in r["name"]],
        "predicted_ms": [*t["latency_predicted_ms"], *r["latency_predicted_ms"]],
        "measured_ms": [*t["latency_measured_ms"], *r["latency_measured_ms"]],
    })
    df["error_pct"] = (df["predicted_ms"] / df["measured_ms"] - 1) * 100
    return df


def latency_error_stats(pairs: pd.DataFrame) -> dict:
    """n, median |error| %, share within ±10 %, max |error| % (of :func:`latency_pairs`)."""
    err = pairs["error_pct"].abs()
    return {"n": len(err), "median_abs_error_pct": float(err.median()),
            "within_10pct": float((err <= 10).mean()), "max_abs_error_pct": float(err.max())}


def architecture_table(spec: ArchSpec) -> pd.DataFrame:
    """The paper's table (MobileNetV3 Tables 1–2) with params and MAdds per layer and a total row."""
    rows = []
    for r in arch_rows(spec):
        row = {c: r[c] for c in COLUMNS}
        row["SE"] = "✓" if r["SE"] else "-"
        rows.append(row)
    c = count(spec)
    rows.append({"#": None, "operator": "total", "params": c.params, "MAdds": c.madds})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def failed_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that failed in evaluation (not interrupted ones), with their error."""
    failed = trials[(trials["state"] == "FAIL") & trials["error"].notna()]
    return failed[["number", "arch_id", "error"]]


def environment(run: Run) -> dict:
    """Environment and budget rows of one run (only those its config.json has), and its wall time."""
    env = {label: _get(run.config, path) for label, path in ENVIRONMENT_FIELDS}
    if "search" not in run.config:  # a NetAdapt (or other) config: its own settings, flattened
        shown = {path.split(".")[0] for _, path in ENVIRONMENT_FIELDS}
        env.update(_flatten({k: v for k, v in run.config.items() if k not in shown}))
    argv = _get(run.config, "environment.argv")
    env["command"] = " ".join(argv) if isinstance(argv, list) else argv
    env["wall time"] = f"{run.wall_s / 60:.1f} min" if run.wall_s is not None else None
    return {k: v for k, v in env.items() if v is not None}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def environment_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per setting, one column per run."""
    envs = {run.label: environment(run) for run in runs}
    keys = list(dict.fromkeys(k for env in envs.values() for k in env))
    return pd.DataFrame({"setting": keys, **{label: [env.get(k) for k in keys] for label, env in envs.items()}})


def summary_rows(run: Run) -> list[dict]:
    """One summary row per part of the run (search, NetAdapt). ``accuracy`` holds the run's score and
    ``metric`` names it: ``accuracy``, or ``miou``/``map`` for a dense task."""
    rows = []
    wall = round(run.wall_s / 60, 1) if run.wall_s is not None else None  # as the command printed it
    if run.trials is not None:
        t, m = run.trials, run.found_metrics or {}
        rows.append({"run": run.label, "type": "search", "searcher": _get(run.config, "search.searcher"),
                     "space": _get(run.config, "search.space"), "trials": int((t["state"] == "COMPLETE").sum()),
                     "failed": len(failed_trials(t)), "best reward": t["reward"].max(), "found trial": m.get("trial"),
                     "metric": m.get("metric") or "accuracy", "accuracy": m.get("accuracy"),
                     "latency (ms)": m.get("latency_measured_ms"),
                     "params": m.get("params"), "MAdds": m.get("madds"), "wall time (min)": wall})
    if run.trajectory is not None:
        chosen = run.trajectory[run.trajectory["chosen"]].sort_values("iteration")
        last = chosen.iloc[-1].to_dict() if len(chosen) else {}
        final = {**{k: last.get(k) for k in ("accuracy", "latency_measured_ms", "latency_pred_ms", "params", "madds")},
                 **((run.final_metrics or {}).get("refined") or {})}
        rows.append({"run": run.label, "type": "netadapt", "iterations": max(len(chosen) - 1, 0),
                     "metric": "accuracy", "accuracy": final.get("accuracy"),
                     "latency (ms)": _first(final.get("latency_measured_ms"), final.get("latency_pred_ms")),
                     "params": final.get("params"), "MAdds": final.get("madds"), "wall time (min)": wall})
    return rows


def _first(*values):
    return next((v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))), None)


# ------------------------------------------------------------------------------------------------
# Figures from runs (drawn by hwnas.report_plots)
# ------------------------------------------------------------------------------------------------


def _x_ms(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``x_ms``: the measured latency where there is one, else ``latency_ms``."""
    return df.assign(x_ms=df["latency_measured_ms"].fillna(df["latency_ms"]))


def accuracy_latency_figure(run: Run, front: pd.DataFrame, refs: pd.DataFrame) -> Figure:
    """Every completed trial, the Pareto front, the found model and the references on one pair of axes."""
    trials = run.trials[(run.trials["state"] == "COMPLETE") & run.trials["accuracy"].notna()]
    m = run.found_metrics or {}
    found = None
    if m.get("accuracy") is not None:
        found = (_first(m.get("latency_measured_ms"), m.get("latency_predicted_ms")), m["accuracy"],
                 f"found (trial {m.get('trial')})")
    res, mode = _get(run.config, "search.eval.deploy_resolution"), _get(run.config, "search.eval.latency")
    where = " (measured where re-measured, else predicted)" if mode == "predicted" else ""
    return plots.accuracy_latency(_x_ms(trials), _x_ms(front), _x_ms(refs[refs["accuracy"].notna()]), found,
                                  run.config.get("target_ms"), f"latency at {res}² (ms){where}")


def accuracy_latency_caption(fig: Figure, target_ms: float | None) -> str:
    """The caption of :func:`accuracy_latency_figure`, made from what its legend lists (so it names only
    what is drawn)."""
    labels = plots.legend_labels(fig)
    shown = ["every completed trial (dots)"]
    if "Pareto front" in labels:
        shown.append("the Pareto front (line)")
    if any(label.startswith("found") for label in labels):
        shown.append("the found model (star)")
    if any(label.startswith("references") for label in labels):
        shown.append("reference networks trained with the same proxy and timed on the same device (diamonds)")
    target_drawn = any(label.startswith("target") for label in labels)
    if target_drawn:
        shown.append("the latency target (dashed line)")
    text = (", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else shown[0]) + "."
    text = text[0].upper() + text[1:]
    if target_ms is not None and not target_drawn:
        text += f" The target, {target_ms:.3g} ms, lies far to the right of every point and is not drawn."
    return text


def reward_series(runs: Sequence[Run]) -> list[tuple[str, pd.DataFrame]]:
    """(label, trials with a reward in trial order) of every search run that has any."""
    series = []
    for run in runs:
        if run.trials is None:
            continue
        t = run.trials[run.trials["reward"].notna()].sort_values("number")
        searcher = _get(run.config, "search.searcher")
        if len(t):
            series.append((f"{run.label} ({searcher})" if searcher else run.label, t))
    return series


def _baseline(final: dict | None) -> tuple[float | None, float | None, str] | None:
    base = (final or {}).get("baseline")
    if not isinstance(base, dict):
        return None
    width = base.get("width_multiplier")
    label = f"baseline (width ×{width:.3g})" if isinstance(width, (int, float)) else "baseline"
    return _first(base.get("latency_measured_ms"), base.get("latency_pred_ms")), base.get("accuracy"), label


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------


def search_section(doc: Doc, run: Run, prefix: str, names: Sequence[str], shared: dict,
                   echo: Callable[[str], None] | None) -> None:
    """Accuracy vs latency, predicted vs measured latency, the found architecture, failed trials."""
    refs, why_not = reference_table(run, names, shared, echo)
    front = pareto_table(run.trials)
    doc.heading("Accuracy vs latency", 3)
    fig = accuracy_latency_figure(run, front, refs)
    metric = metric_label(run)
    if metric != "accuracy":  # a dense task: the trials' "accuracy" column is this metric
        fig.axes[0].set_ylabel(f"held-out {metric} (mosaics)")
        front = front.rename(columns={"accuracy": metric})
        refs = refs.rename(columns={"accuracy": metric})
    doc.figure(fig, f"{prefix}accuracy_latency.png", accuracy_latency_caption(fig, run.config.get("target_ms")))
    if why_not:
        doc.text(f"Reference networks not evaluated: {why_not}.")
    elif not len(refs):
        doc.text(f"This report has no reference networks: `nas report {run.path}` trains them with this run's proxy "
                 "and timing (minutes) and adds them.")
    doc.table(front, f"{prefix}pareto.csv", f"Pareto front ({metric} ↑, latency ↓).")
    if len(refs):
        columns = [metric if c == "accuracy" else c for c in REFERENCE_COLUMNS]
        doc.table(refs[columns], f"{prefix}references.csv",
                  "Reference networks, same proxy training and latency as the trials.")

    doc.heading("Predicted vs measured latency", 3)
    pairs = latency_pairs(run.trials, refs)
    if len(pairs):
        s = latency_error_stats(pairs)
        doc.text(f"{s['n']} architectures with both: median |error| {s['median_abs_error_pct']:.1f} %, "
                 f"{s['within_10pct']:.0%} within ±10 %, max |error| {s['max_abs_error_pct']:.1f} %.")
        doc.figure(plots.latency_error(pairs), f"{prefix}latency_error.png",
                   "Lookup-table prediction against whole-network measurement.")
        doc.table(pairs, f"{prefix}latency_error.csv")
    else:
        doc.text("No architecture has both a predicted and a measured latency.")

    doc.heading("Found architecture", 3)
    if run.found is not None:
        doc.text(_found_line(run.found, run.found_metrics or {}))
        doc.table(architecture_table(run.found), f"{prefix}found_architecture.csv")
    else:
        doc.text("No found.json: the search has not finished, or every trial failed.")

    doc.heading("Failed trials", 3)
    failed = failed_trials(run.trials)
    interrupted = int((run.trials["state"] == "INTERRUPTED").sum())
    note = f" ({interrupted} interrupted trial(s) were run again)" if interrupted else ""
    if len(failed):
        doc.table(failed, f"{prefix}failed_trials.csv", f"{len(failed)} failed trial(s){note}.")
    else:
        doc.text(f"None{note}.")


def _found_line(spec: ArchSpec, m: dict) -> str:
    c = count(spec)
    line = (f"{spec.name} (id {spec.arch_id}, {spec.resolution}²×{spec.in_channels} input, {spec.num_classes} "
            f"classes): {c.params:,} params, {c.madds / 1e6:.2f}M MAdds")
    if m.get("accuracy") is not None:
        from evaluation.dense_task import METRIC_LABELS

        metric = METRIC_LABELS.get(m.get("metric"), "accuracy")  # dense tasks: mIoU / mAP
        line += f"; trial {m.get('trial')}, held-out {metric} {m['accuracy']:.4f}"
    if m.get("latency_measured_ms") is not None:
        line += f", measured {m['latency_measured_ms']:.3f} ms"
    if m.get("latency_predicted_ms") is not None:
        line += f" (predicted {m['latency_predicted_ms']:.3f} ms)"
    if m.get("reward") is not None:
        line += f", reward {m['reward']:.4f}"
    return line + "."


def netadapt_section(doc: Doc, run: Run, prefix: str) -> None:
    """The NetAdapt trajectory: chosen proposals per iteration, final metrics, failed proposals."""
    traj = run.trajectory
    chosen = traj[traj["chosen"]].sort_values("iteration")
    doc.heading("NetAdapt trajectory", 3)
    if len(chosen):
        kinds = chosen.loc[chosen["kind"] != "start", "kind"].value_counts()
        doc.text(f"{max(len(chosen) - 1, 0)} iteration(s); chosen proposals: "
                 + (", ".join(f"{k} {n}" for k, n in kinds.items()) or "none") + ".")
        fig = plots.trajectory(chosen, _baseline(run.final_metrics))
        baseline = any(label.startswith("baseline") for label in plots.legend_labels(fig))
        doc.figure(fig, f"{prefix}netadapt_trajectory.png",
                   "Latency and accuracy of the network after each iteration; colour: the chosen proposal's kind"
                   + ("; dotted: the width-multiplier baseline." if baseline else "."))
        cols = ["iteration", "kind", "group", "blocks", "old_width", "new_width", "accuracy", "delta_acc",
                "latency_pred_ms", "latency_measured_ms", "madds", "params", "slope"]
        doc.table(chosen[cols], f"{prefix}netadapt_trajectory.csv", "Chosen proposal of each iteration.")
    else:
        doc.text("No chosen proposal in trajectory.csv yet.")
    if run.final_metrics:
        rows = [{"network": k, **v} for k, v in run.final_metrics.items() if isinstance(v, dict)]
        doc.table(pd.DataFrame(rows), f"{prefix}netadapt_summary.csv", "Start, refined and baseline networks.")
    if run.refined is not None:
        doc.heading("Refined architecture", 3)
        doc.text(_found_line(run.refined, {}))
        doc.table(architecture_table(run.refined), f"{prefix}refined_architecture.csv")
    failed = traj[traj["error"].notna()]
    if len(failed):
        doc.table(failed[["iteration", "proposal", "kind", "group", "error"]], f"{prefix}netadapt_failed.csv",
                  f"{len(failed)} failed proposal(s).")


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def experiment_stages(exp: dict) -> pd.DataFrame:
    """One row per stage of an experiment: done, wall time and its main result."""
    rows = []
    for stage, st in exp.get("stages", {}).items():
        if not isinstance(st, dict):
            continue
        result = {k: v for k, v in st.items() if k not in ("done", "wall_s") and not isinstance(v, (dict, list))}
        rows.append({"stage": stage, "done": bool(st.get("done")), "wall_min": (st.get("wall_s") or 0) / 60,
                     "result": "; ".join(f"{k} {format_value(v)}" for k, v in result.items())})
    return pd.DataFrame(rows, columns=["stage", "done", "wall_min", "result"])


def experiment_section(doc: Doc, path: Path, exp: dict, prefix: str) -> None:
    name = exp.get("config", {}).get("name", path.name)
    doc.heading(f"Experiment {name}")
    doc.text(f"`nas experiment run` in {path}: search → training of the winner → NetAdapt → final training "
             f"(from scratch with the recipe) → this report.")
    doc.table(experiment_stages(exp), f"{prefix}stages.csv", "Stages (`experiment.json`).")
    row = read_json(path / rundir.FINAL_DIR / rundir.ROW_FILE)
    if row:
        keep = ("name", "test_accuracy", "heldout_accuracy", "latency_fp32_ms", "latency_int8_ms", "madds", "params",
                "deploy_resolution", "device")
        doc.table(pd.DataFrame([{k: row.get(k) for k in keep}]), f"{prefix}final.csv",
                  "The result after the final training: test accuracy, latency measured fp32 and int8.")


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None,
                 references: bool | Sequence[str] = True, echo: Callable[[str], None] | None = None) -> Path:
    """Write report.html, report.md, PNGs and CSVs for ``run_dirs``; returns report.html's path.

    Args:
        run_dirs: search and/or NetAdapt run directories (several: one comparative report).
        out_dir: where to write (default: ``report/`` inside the first run directory).
        references: evaluate the default reference networks (True), none (False: only cached ones
            are shown) or these names; results are cached in each ``RUN_DIR/references.csv``.
        echo: progress lines.
    """
    experiments, expanded = [], []
    for d in run_dirs:  # an experiment directory (`nas experiment run`) stands for its search and NetAdapt runs
        exp = read_json(Path(d) / rundir.EXPERIMENT_FILE)
        if exp is None:
            expanded.append(d)
            continue
        experiments.append((Path(d), exp))
        inside = [Path(d) / sub for sub in (rundir.SEARCH_DIR, rundir.NETADAPT_DIR)
                  if (Path(d) / sub / rundir.CONFIG_FILE).exists()
                  and any((Path(d) / sub / f).exists() for f in (rundir.TRIALS_FILE, rundir.TRAJECTORY_FILE))]
        if not inside:
            raise ValueError(f"{d}: the experiment has no search results yet (resume it with "
                             f"`nas experiment run CONFIG --run-dir {d} --resume`)")
        expanded += inside
    runs = load_runs(expanded)
    names = reference_names(references)
    default_out = experiments[0][0] if experiments and len(run_dirs) == 1 else runs[0].path
    out = Path(out_dir) if out_dir is not None else default_out / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    title = f"hwnas report: {runs[0].label}" if len(runs) == 1 else f"hwnas report: {len(runs)} runs"
    doc = Doc(out, title)
    doc.text(f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from " + ", ".join(str(r.path) for r in runs) + ".")
    doc.heading("Summary")
    doc.table(pd.DataFrame([row for run in runs for row in summary_rows(run)]), "summary.csv")
    for i, (path, exp) in enumerate(experiments):
        experiment_section(doc, path, exp, f"e{i + 1}_" if len(experiments) > 1 else "")
    series = reward_series(runs)
    if series:
        doc.figure(plots.rewards(series), "reward.png", "Reward of each trial (dots) and the best reward so far (line)"
                   + (", one colour per run." if len(runs) > 1 else "."))
    shared: dict = {}
    for i, run in enumerate(runs):
        prefix = f"r{i + 1}_" if len(runs) > 1 else ""
        doc.heading(f"Run {run.label}")
        if run.trials is not None:
            search_section(doc, run, prefix, names, shared, echo)
        if run.trajectory is not None:
            netadapt_section(doc, run, prefix)
    doc.heading("Environment")
    doc.table(environment_table(runs), "environment.csv")
    path = doc.write()
    if echo:
        echo(f"report: {path} (and report.md, plots as PNG, tables as CSV in {out})")
    return path
