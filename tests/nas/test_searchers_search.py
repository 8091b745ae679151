"""Every registered searcher through the real search loop (``run_search``, as ``nas search`` runs it):
real Fashion-MNIST, real training, real Ray, this machine's latency table — three trials each.

One module-scoped latency table (a copy of the session's calibrated one, tests/conftest.py), one local Ray
instance that every search joins, and the first search's target (MobileNetV3-Small's latency here) for
the soft runs, so that the six searches cost little more than their trials. The hard runs take the
analytic latency model with T = the space's seed architecture's latency under it: deterministic, so
that their trials fall on both sides of T every time (a table's predictions move with each run's
calibration points). What is checked for
every trial of every searcher: the reward written is ACC·(LAT/T)^w with the configured α (LAT ≤ T) or
β (LAT > T), soft and hard; what the study was told (the reward, or nsga2's accuracy and latency with
its feasibility constraint LAT − T); the distinct-proposal share written at the end.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from evaluation.evaluate import EvalConfig
from evaluation.rundir import FOUND_METRICS_FILE, STUDY_FILE
from nas.rewards import RewardConfig
from nas.search import STUDY_NAME, SearchConfig, run_search
from nas.searchers import LATENCY_CONSTRAINT, MULTI_OBJECTIVE, SEARCHERS, trial_reward
from tests.conftest import seed_table

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")

FAST_MEASURE = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2, "sessions": 1}
REWARD = {"rl": "soft", "evolution": "hard", "predictor": "soft", "tpe": "soft", "nsga2": "hard", "random": "hard"}
EXPONENTS = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}
OPTIONS = {"evolution": {"population_size": 3}}  # more than half of 3 trials: warned about, and used


def hard_target_ms() -> float:
    """The analytic latency of the space's seed architecture, as the search's space decodes it."""
    from latency.model import analytic_latency_ms
    from search_spaces.spaces import get_space

    space = get_space("mobilenetv3_small", resolution=64, in_channels=1, num_classes=10)
    (seed,) = space.seeds().values()
    return analytic_latency_ms(space.decode(seed))


def search_config(run_dir: Path, lut: Path, name: str, target_ms: float | None) -> SearchConfig:
    alpha, beta = EXPONENTS[REWARD[name]]
    hard = REWARD[name] == "hard"
    if hard:
        target_ms = hard_target_ms()
    eval_cfg = EvalConfig(holdout=500, train_subset=1000, train={"steps": 2, "batch_size": 32, "threads": 1},
                          deploy_resolution=64, measure=FAST_MEASURE, lut_path=str(lut),
                          latency="analytic" if hard else "predicted")
    return SearchConfig(run_dir=str(run_dir), space="mobilenetv3_small", searcher=name,
                        searcher_options=OPTIONS.get(name, {}), trials=3, target_ms=target_ms,
                        target_like=None if target_ms else "mobilenetv3_small",
                        alpha=alpha, beta=beta, workers=2, top_k=1, eval=eval_cfg)


@pytest.fixture(scope="module")
def runs(module_cache, calibrated_table, shared_ray) -> dict[str, Path]:
    seed_table(calibrated_table, module_cache / "table.sqlite")
    out, target_ms = {}, None
    for name in SEARCHERS:
        run_dir = module_cache / name
        outcome = run_search(search_config(run_dir, module_cache / "table.sqlite", name, target_ms), echo=None)
        assert outcome.completed == 3 and outcome.failed == 0, name
        if REWARD[name] == "soft":
            target_ms = target_ms or json.loads((run_dir / "config.json").read_text())["target_ms"]
        out[name] = run_dir
    return out


def study_of(run_dir: Path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=STUDY_NAME,
                             storage=JournalStorage(JournalFileBackend(str(run_dir / STUDY_FILE))))


@pytest.mark.parametrize("name", SEARCHERS)
def test_every_trial_is_rewarded_as_configured(runs, name):
    run_dir = runs[name]
    config = json.loads((run_dir / "config.json").read_text())
    alpha, beta = EXPONENTS[REWARD[name]]
    assert (config["search"]["alpha"], config["search"]["beta"]) == (alpha, beta)
    assert config["search"]["searcher"] == name
    target = config["target_ms"]
    cfg = RewardConfig(target, alpha, beta)
    trials = study_of(run_dir).get_trials(deepcopy=False)
    rows = {int(r["number"]): r for r in csv.DictReader(open(run_dir / "trials.csv"))}
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        acc, lat, reward = t.user_attrs["accuracy"], t.user_attrs["latency_ms"], t.user_attrs["reward"]
        w = alpha if lat <= target else beta
        assert reward == pytest.approx(acc * (lat / target) ** w, rel=1e-12), (name, t.number)
        assert float(rows[t.number]["reward"]) == pytest.approx(reward, rel=1e-9)
        assert trial_reward(name, t.values, cfg) == pytest.approx(reward, rel=1e-12)
        if name in MULTI_OBJECTIVE:
            assert t.values == [acc, lat]
            constraint = t.constraints[LATENCY_CONSTRAINT]
            assert constraint == pytest.approx(lat - target) and (constraint <= 0) == (lat <= target)
        else:
            assert t.values == [reward] and not t.constraints


def test_hard_rewards_met_both_sides_of_the_target(runs):
    """The hard runs' proposals fell on both sides of T (so both exponents were checked above)."""
    sides = set()
    for name, shape in REWARD.items():
        if shape == "hard":
            target = json.loads((runs[name] / "config.json").read_text())["target_ms"]
            sides |= {(t.user_attrs["latency_ms"] > target) - (t.user_attrs["latency_ms"] < target)
                      for t in study_of(runs[name]).trials}
    assert {-1, 1} <= sides


@pytest.mark.parametrize("name", SEARCHERS)
def test_the_distinct_proposal_share_is_reported(runs, name):
    metrics = json.loads((runs[name] / FOUND_METRICS_FILE).read_text())
    assert metrics["searcher"] == name and metrics["proposals"] == 2  # 3 trials, the space's seed enqueued first
    assert metrics["distinct_proposals"] <= metrics["proposals"]
    if name in ("rl", "evolution", "predictor"):
        assert metrics["distinct_share"] == 1.0
    log = (runs[name] / "log.txt").read_text()
    assert "of 2 proposals were new architectures" in log


def test_a_start_up_larger_than_the_budget_is_logged(runs):
    log = (runs["evolution"] / "log.txt").read_text()
    assert "warning: searcher evolution: population_size=3 spends more than half of the 3-trial budget" in log
    assert "budget rule" in log


def test_an_unknown_searcher_option_is_a_one_line_error(tmp_path):
    nas = str(Path(sys.executable).with_name("nas"))
    proc = subprocess.run([nas, "search", "--run-dir", str(tmp_path / "run"), "--target-ms", "5", "--searcher",
                           "evolution", "--searcher-option", "populaton_size=4"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "populaton_size" in proc.stderr and "population_size" in proc.stderr
    assert not (tmp_path / "run").exists()
