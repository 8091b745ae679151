"""Run directories: every file name the framework writes, and the helpers that create, log to and read them.

One place for the layout of the three kinds of run directory, so that the search and NetAdapt (which
write them), the experiment pipeline (which nests them) and reports (which read them) agree::

    search run (nas search)        NetAdapt run (netadapt refine)     experiment (nas experiment run)
      config.json                    config.json                        experiment.json
      log.txt, elapsed.json          log.txt                            log.txt
      study.journal                  state.json                         search/    a search run
      trials.csv, pareto.csv         trajectory.csv                     train/     model.json, model.pt, metrics.json
      remeasured.json                start.json                         netadapt/  a NetAdapt run
      found.json, found.pt           refined.json, .pt, .onnx           final/     model.json, model.pt, row.json
      found_metrics.json             baseline.json, final_metrics.json  report/
      weights/trial_N.pt             weights/start.pt, iter_K.pt

Every write goes through :func:`search_spaces.files.atomic_write_bytes` (temp file + ``os.replace``):
a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from search_spaces.files import atomic_write_bytes, atomic_write_text, read_json

__all__ = [
    "BASELINE_FILE", "CONFIG_FILE", "ELAPSED_FILE", "EXPERIMENT_FILE", "FINAL_METRICS_FILE", "FOUND_FILE",
    "FOUND_METRICS_FILE", "FOUND_WEIGHTS_FILE", "LOG_FILE", "PARETO_FILE", "REFINED_FILE", "REFINED_ONNX_FILE",
    "REFINED_WEIGHTS_FILE", "REMEASURED_FILE", "RunClock", "RunDirError", "START_FILE", "STATE_FILE", "STUDY_FILE",
    "TRAJECTORY_FILE", "TRIALS_FILE", "WEIGHTS_DIR", "atomic_write_bytes", "atomic_write_text", "environment",
    "load_config", "log_line", "missing_dirs", "prepare_run_dir", "read_json", "recorded_wall_s", "write_csv",
]

# common to every kind
CONFIG_FILE = "config.json"
LOG_FILE = "log.txt"
WEIGHTS_DIR = "weights"
# a search run
ELAPSED_FILE = "elapsed.json"  # the run's wall time (RunClock); a NetAdapt run keeps it in state.json
STUDY_FILE = "study.journal"
TRIALS_FILE = "trials.csv"
PARETO_FILE = "pareto.csv"
REMEASURED_FILE = "remeasured.json"
FOUND_FILE = "found.json"
FOUND_WEIGHTS_FILE = "found.pt"
FOUND_METRICS_FILE = "found_metrics.json"
# a NetAdapt run
STATE_FILE = "state.json"
TRAJECTORY_FILE = "trajectory.csv"
START_FILE = "start.json"
REFINED_FILE = "refined.json"
REFINED_WEIGHTS_FILE = "refined.pt"
REFINED_ONNX_FILE = "refined.onnx"
BASELINE_FILE = "baseline.json"
FINAL_METRICS_FILE = "final_metrics.json"
# an experiment: its stages' folders, and the files of a trained model in train/ and final/
EXPERIMENT_FILE = "experiment.json"
SEARCH_DIR, TRAIN_DIR, NETADAPT_DIR, FINAL_DIR, REPORT_DIR = "search", "train", "netadapt", "final", "report"
MODEL_FILE = "model.json"
MODEL_WEIGHTS_FILE = "model.pt"
METRICS_FILE = "metrics.json"
ROW_FILE = "row.json"


class RunDirError(ValueError):
    """A run directory that cannot be used (in the way, not writable, holding no run to resume, ...)."""


def prepare_run_dir(path: Path, force: bool, error: type[Exception] = RunDirError) -> None:
    """Create ``path``; refuse one that already holds a run unless ``force`` (then it is cleared)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"run directory {path} exists and is not a directory")
    if path.exists() and any(path.iterdir()):
        if not force:
            raise error(f"run directory {path} is not empty; use --resume {path} to continue it, "
                        "--force to overwrite it, or another --run-dir")
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise error(f"run directory {path} is not writable ({e.strerror})") from None


def missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing, p = [], Path(path).absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def load_config(run_dir: Path, section: str, what: str, error: type[Exception] = RunDirError) -> dict:
    """The ``section`` object of ``run_dir/config.json`` (what ``--resume`` continues); ``error`` if absent.

    ``what`` names the run in messages (``search``, ``refinement``)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise error(f"{run_dir} holds no {what} to resume (no {CONFIG_FILE})")
    config = read_json(path, error)
    if not isinstance(config, dict) or not isinstance(config.get(section), dict):
        raise error(f"{path} holds no {what} configuration (no \"{section}\" object)")
    return config[section]


def environment() -> dict:
    """Versions and machine facts recorded in every run's ``config.json``."""
    import numpy as np
    import onnxruntime
    import optuna
    import ray
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "optuna": optuna.__version__, "ray": ray.__version__,
            "numpy": np.__version__, "cpus": os.cpu_count(), "argv": sys.argv}


class RunClock:
    """A run's wall time: the one figure the console, ``log.txt`` and the report show.

    It is the time the processes that worked on the run directory spent on it: this process's time
    since the clock was made, plus, for a resumed run, what earlier processes recorded
    (:func:`recorded_wall_s`). :meth:`record` stores it in ``elapsed.json``; the report reads it back.
    """

    def __init__(self, run_dir: Path, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.before_s = (recorded_wall_s(self.run_dir) or 0.0) if resume else 0.0
        self.t0 = time.perf_counter()

    @property
    def wall_s(self) -> float:
        return self.before_s + time.perf_counter() - self.t0

    def record(self) -> float:
        """Write the wall time so far to ``elapsed.json``; returns the value written."""
        wall = round(self.wall_s, 3)
        atomic_write_text(self.run_dir / ELAPSED_FILE, json.dumps({"wall_s": wall}) + "\n")
        return wall


def recorded_wall_s(run_dir: Path) -> float | None:
    """The wall time recorded in a run directory (``elapsed.json``, or a NetAdapt run's ``state.json``
    ``elapsed_s``); None if there is none (a run that has not finished a trial or an iteration yet)."""
    for name, key in ((ELAPSED_FILE, "wall_s"), (STATE_FILE, "elapsed_s")):
        path = Path(run_dir) / name
        if path.exists():
            try:
                value = json.loads(path.read_text()).get(key)
            except (ValueError, OSError, AttributeError):
                continue
            if isinstance(value, (int, float)):
                return float(value)
    return None


def log_line(run_dir: Path, line: str, echo: Callable[[str], None] | None) -> None:
    """Append ``line`` with the time to ``run_dir/log.txt`` and pass it to ``echo`` (if any)."""
    with open(Path(run_dir) / LOG_FILE, "a") as f:
        f.write(time.strftime("%H:%M:%S ") + line + "\n")
    if echo:
        echo(line)


def write_csv(path: Path, rows: list[dict], fieldnames: tuple[str, ...] | list[str] | None = None) -> None:
    """``rows`` as CSV, atomically (columns: ``fieldnames``, else the first row's keys)."""
    if not rows and fieldnames is None:
        atomic_write_text(path, "")
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames or rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
