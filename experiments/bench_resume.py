"""Benchmark: how long resuming a 100-trial search takes.

Makes one real 100-trial search (the RL controller, real Fashion-MNIST proxy training of 2 steps, latency
measured whole at 32² — tiny budgets, so it takes minutes), then, on fresh copies of its run directory,
times ``run_search(..., resume=True)``:

* **ready**: from the call to the first new trial being submitted to Ray, when the budget is raised to
  101 (an interrupted search continuing). Covers reading config and journal (100 trials), loading the
  data set, starting the local Ray instance, and the RL controller's replay of the 100 finished trials
  (its state is rebuilt from the study, not stored).
* **no-op resume**: the whole call when nothing is left to do (budget 100): the same start-up, then
  trials.csv / pareto.csv / found.json rewritten (the top-k were re-measured before and are not again).
* **replay**: the controller replay alone (journal read + ``study.ask`` with a fresh sampler), no Ray.
* **ray start**: starting the private local Ray instance alone.

Median (and range) of ``--repeats`` runs each. The run directory is kept under ``--work`` and reused
by later invocations (delete it to rebuild).

Usage (from the repository root, with the package installed and dataset-fashion-mnist present)::

    python experiments/bench_resume.py [--trials 100] [--repeats 3] [--work runs/bench_resume]
        [--out runs/bench_resume.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

FAST_MEASURE = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2}


def search_config(run_dir: Path, trials: int):
    from evaluation.evaluate import EvalConfig
    from nas.search import SearchConfig

    eval_cfg = EvalConfig(holdout=200, train_subset=400, train={"steps": 2, "batch_size": 16, "threads": 1},
                          latency="measured", deploy_resolution=32, measure=FAST_MEASURE)
    return SearchConfig(run_dir=str(run_dir), space="mobilenetv3_small", searcher="rl", trials=trials,
                        target_ms=5.0, top_k=3, eval=eval_cfg)


def finished_trials(run_dir: Path) -> int:
    import csv

    path = run_dir / "trials.csv"
    if not path.exists():
        return 0
    with open(path) as f:
        return sum(1 for r in csv.DictReader(f) if r["state"] == "COMPLETE" or (r["state"] == "FAIL" and r["error"]))


def make_base(base: Path, trials: int) -> float | None:
    from nas.search import run_search

    if finished_trials(base) == trials and (base / "found.json").exists():
        print(f"reusing {base} ({trials} finished trials)")
        return None
    shutil.rmtree(base, ignore_errors=True)
    t0 = time.perf_counter()
    run_search(search_config(base, trials),
               echo=lambda line: print(line, flush=True) if not line.startswith("[") or "0/" in line else None)
    return time.perf_counter() - t0


def time_resume(base: Path, copy: Path, trials: int) -> dict:
    """One resume of a copy of ``base`` with budget ``trials``: seconds to the first submission and in all."""
    from evaluation.execution import RayPool
    from nas.search import run_search

    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(base, copy)
    stamps: list[float] = []
    submit = RayPool.submit

    def timed_submit(self, *args):
        stamps.append(time.perf_counter())
        return submit(self, *args)

    RayPool.submit = timed_submit
    try:
        t0 = time.perf_counter()
        run_search(search_config(copy, trials), resume=True, echo=None)
        total = time.perf_counter() - t0
    finally:
        RayPool.submit = submit
    return {"ready_s": stamps[0] - t0 if stamps else None, "total_s": total, "submitted": len(stamps)}


def time_replay(base: Path, trials: int) -> float:
    """Journal read and RL replay of ``trials`` finished trials, as a resumed driver does (no Ray)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from evaluation.rundir import STUDY_FILE
    from nas.search import STUDY_NAME
    from nas.searchers import distributions, make_sampler, study_directions
    from search_spaces.spaces import get_space

    space = get_space("mobilenetv3_small", resolution=32, in_channels=1, num_classes=10)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    storage = JournalStorage(JournalFileBackend(str(base / STUDY_FILE)))
    sampler = make_sampler("rl", space, seed=0)
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler)
    # ask on an in-memory copy, so that the base journal is not written
    mem = optuna.create_study(directions=study_directions("rl"), sampler=sampler)
    mem.add_trials(study.get_trials(deepcopy=False))
    mem.ask(distributions(space))
    assert sampler.n_episodes >= trials - 5, sampler.n_episodes
    return time.perf_counter() - t0


def time_ray_start() -> float:
    """Start and stop the private local Ray instance alone (the largest part of 'ready')."""
    from evaluation.execution import RayPool

    t0 = time.perf_counter()
    pool = RayPool()
    ready = time.perf_counter() - t0
    pool.shutdown()
    return ready


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default="runs/bench_resume", help="where the run directories go")
    parser.add_argument("--out", default="runs/bench_resume.json")
    args = parser.parse_args(argv)

    work = Path(args.work)
    base = work / "base"
    build_s = make_base(base, args.trials)
    if finished_trials(base) != args.trials:
        print(f"the base run did not finish {args.trials} trials", file=sys.stderr)
        return 1

    ready, noop, replay, ray_start = [], [], [], []
    for i in range(args.repeats):
        cont = time_resume(base, work / "resume", args.trials + 1)
        assert cont["submitted"] == 1, cont
        same = time_resume(base, work / "resume", args.trials)
        assert same["submitted"] == 0, same
        ready.append(cont["ready_s"])
        noop.append(same["total_s"])
        replay.append(time_replay(base, args.trials))
        ray_start.append(time_ray_start())
        print(f"[{i + 1}/{args.repeats}] ready {cont['ready_s']:.2f} s (continue, {args.trials} + 1 trials), "
              f"no-op resume {same['total_s']:.2f} s, RL replay {replay[-1]:.2f} s, Ray start {ray_start[-1]:.2f} s",
              flush=True)
    shutil.rmtree(work / "resume", ignore_errors=True)

    result = {"trials": args.trials, "repeats": args.repeats, "base_build_s": build_s,
              "ready_s": summary(ready), "noop_resume_s": summary(noop), "rl_replay_s": summary(replay),
              "ray_start_s": summary(ray_start),
              "python": platform.python_version(), "platform": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"resume of a {args.trials}-trial search, median of {args.repeats}: ready to evaluate in "
          f"{result['ready_s']['median']:.2f} s (range {min(ready):.2f}–{max(ready):.2f}); no-op resume "
          f"{result['noop_resume_s']['median']:.2f} s; RL replay alone {result['rl_replay_s']['median']:.2f} s, "
          f"Ray start alone {result['ray_start_s']['median']:.2f} s "
          f"→ {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
