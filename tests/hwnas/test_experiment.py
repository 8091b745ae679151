"""`nas experiment run` and `nas experiment table`: real data, training, Ray and ONNX Runtime at tiny budgets.

The module fixture runs one whole experiment (search → training → NetAdapt → final → report) through
the library; the tests then read its directory, resume it, and build a reproduction table from it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.experiment import STAGES, ExperimentConfig, ExperimentError, Recipe, run_experiment
from hwnas.table3 import aggregate, compare, table_rows
from search_spaces import load
from tests.conftest import seed_table
from tests.reliability.procs import kill_after_line

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")
ROOT = Path(__file__).resolve().parents[2]
FAST_MEASURE = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2, "sessions": 1, "min_pairs": 5,
                "max_pairs": 40}


def tiny(lut: Path, **sections) -> dict:
    d = {
        "name": "tiny",
        "data": {"deploy_resolution": 64, "train_subset": 1000, "lut": str(lut), "measure": FAST_MEASURE},
        "search": {"space": "mobilenetv3_small", "searcher": "random", "trials": 2, "target_ms": 1.0, "steps": 4,
                   "batch_size": 32, "holdout": 300, "top_k": 1, "seeds": False},
        "train": {"epochs": 0.05, "batch_size": 32},
        "netadapt": {"reduction": 0.06, "steps": 3, "delta_ratio": 0.05, "max_iters": 2, "holdout": 300},
        "final": {"epochs": 0.05, "batch_size": 32, "holdout": 300, "train_subset": 1000},
        "report": {"references": False},
    }
    for name, values in sections.items():
        d[name] = {**d.get(name, {}), **values} if isinstance(values, dict) else values
    return d


@pytest.fixture(scope="module")
def work(module_cache, calibrated_table):
    """The module's folder, its table ``t.sqlite`` calibrated already (the session's copy: the experiment's
    stages are tested here, not a first calibration)."""
    seed_table(calibrated_table, module_cache / "t.sqlite")
    return module_cache


@pytest.fixture(scope="module")
def experiment(work):
    cfg = ExperimentConfig.from_dict(tiny(work / "t.sqlite"))
    lines: list[str] = []
    out = run_experiment(cfg, work / "exp", echo=lines.append)
    return cfg, out, lines


# ---- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["large", "small"])
def test_the_shipped_experiment_files_load(name):
    cfg = ExperimentConfig.load(ROOT / "experiments" / f"{name}.toml")
    assert cfg.name == name
    assert cfg.search["space"] == {"large": "mobilenetv3", "small": "mobilenetv3_small"}[name]
    assert cfg.search["alpha"] == {"large": -0.07, "small": -0.15}[name]
    assert cfg.search["target_like"] == {"large": "mnasnet_a1", "small": "mobilenetv3_small"}[name]
    assert cfg.netadapt["target_like"] == {"large": "mobilenetv3_large", "small": "mobilenetv3_small"}[name]


def test_large_enqueues_a1s_layout_as_the_v3_large_like_seed():
    from search_spaces.spaces import get_space

    cfg = ExperimentConfig.load(ROOT / "experiments" / "large.toml")
    assert cfg.search["seeds"] and "mobilenetv3_large_like" in get_space(cfg.search["space"]).seeds()


@pytest.mark.parametrize("change, message", [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"search": {"trails": 3}}, "[search] has unknown key 'trails'"),
    ({"search": {"trials": "many"}}, "[search] trials must be int"),
    ({"search": {"target_ms": None}}, "exactly one of target_ms and target_like"),
    ({"search": {"target_like": "mnasnet_a1"}}, "exactly one of target_ms and target_like"),
    ({"netadapt": {"target_like": "resnet50"}}, "exactly one of target_ms, target_like and reduction"),
    ({"netadapt": {"reduction": None, "target_like": "resnet50"}}, "unknown architecture 'resnet50'"),
    ({"final": {"epochs": -1.0}}, "[final] epochs must be a positive number"),
    ({"netadapt": {"reduction_if_met": 1.5}}, "reduction_if_met must be a fraction in"),
    ({"name": ""}, "`name` (a non-empty string) is required"),
])
def test_bad_configs_are_one_clear_error(tmp_path, change, message):
    d = tiny(tmp_path / "t.sqlite", **change)
    with pytest.raises(ExperimentError) as e:
        ExperimentConfig.from_dict(d, "x.toml")
    assert message in str(e.value) and str(e.value).startswith("x.toml")
    assert "\n" not in str(e.value)


def test_cli_names_the_file_of_a_malformed_or_missing_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[search\n")
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    for path, words in ((bad, "not valid TOML"), (tmp_path / "absent.toml", "no such experiment file")):
        p = subprocess.run([sys.executable, "-m", "hwnas.cli", "experiment", "run", str(path), "--run-dir",
                            str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 2
        assert p.stderr.count("\n") == 1 and words in p.stderr and str(path) in p.stderr
    assert not (tmp_path / "run").exists()


def test_recipe_key_depends_on_every_setting_but_ignores_unset_ones():
    assert Recipe().key() == Recipe(train_subset=None).key()
    assert Recipe().key() != Recipe(epochs=4.0).key() != Recipe(seed=1).key()


# ---- one whole experiment --------------------------------------------------------------------


def test_every_stage_runs_and_leaves_its_files(experiment):
    cfg, out, lines = experiment
    d = out.run_dir
    state = json.loads((d / "experiment.json").read_text())
    assert [s for s in STAGES if state["stages"][s]["done"]] == list(STAGES)
    for f in ("search/found.json", "search/trials.csv", "train/model.pt", "train/model.json", "netadapt/refined.json",
              "netadapt/trajectory.csv", "final/model.json", "final/model.pt", "final/row.json",
              "report/report.html", "report/report.md", "report/summary.md", "log.txt"):
        assert (d / f).is_file() and (d / f).stat().st_size > 0, f
    # the chain: the trained winner is the search's, NetAdapt starts from it, the final network is NetAdapt's
    found, trained = load(d / "search/found.json"), load(d / "train/model.json")
    assert found.arch_id == trained.arch_id
    refine_cfg = json.loads((d / "netadapt/config.json").read_text())["refine"]
    assert refine_cfg["arch"].endswith("train/model.json") and refine_cfg["weights"].endswith("train/model.pt")
    assert load(d / "final/model.json").blocks == load(d / "netadapt/refined.json").blocks
    row = json.loads((d / "final/row.json").read_text())
    assert 0 <= row["test_accuracy"] <= 1 and row["latency_fp32_ms"] > 0 and row["latency_int8_ms"] > 0
    assert row["recipe_key"] == cfg.final.key()
    assert "NetAdapt" in (d / "report/summary.md").read_text()
    report_md = (d / "report/report.md").read_text()
    assert "## Experiment tiny" in report_md and "## Run search" in report_md and "## Run netadapt" in report_md
    assert any("[final] done" in line for line in lines)


def test_resuming_a_finished_experiment_runs_nothing_again(experiment):
    cfg, out, _ = experiment
    before = {p: p.stat().st_mtime_ns for p in out.run_dir.rglob("*") if p.is_file() and "report" not in p.parts}
    lines: list[str] = []
    run_experiment(cfg, out.run_dir, resume=True, echo=lines.append)
    assert sum("done already" in line for line in lines) == len(STAGES)
    after = {p: p.stat().st_mtime_ns for p in before}
    changed = [p.name for p in before if before[p] != after[p] and p.name not in ("experiment.json", "log.txt")]
    assert changed == []


def test_a_resume_redoes_only_unfinished_stages(experiment, work):
    """As after a kill during the final stage: search, training and NetAdapt are not run again."""
    cfg, out, _ = experiment
    import shutil

    copy = work / "exp-killed"
    shutil.copytree(out.run_dir, copy)
    state = json.loads((copy / "experiment.json").read_text())
    del state["stages"]["final"], state["stages"]["report"]
    (copy / "experiment.json").write_text(json.dumps(state))
    (copy / "final" / "row.json").unlink()
    trials = (copy / "search" / "trials.csv").read_text()
    trajectory = (copy / "netadapt" / "trajectory.csv").read_text()
    lines: list[str] = []
    run_experiment(cfg, copy, resume=True, echo=lines.append)
    assert [line for line in lines if "done already" in line] == [f"[{s}] done already" for s in
                                                                   ("search", "train", "netadapt")]
    assert (copy / "final" / "row.json").exists() and (copy / "report" / "report.html").exists()
    assert (copy / "search" / "trials.csv").read_text() == trials
    assert (copy / "netadapt" / "trajectory.csv").read_text() == trajectory


def test_resume_refuses_another_configuration_and_a_corrupt_state(experiment, work):
    cfg, out, _ = experiment
    other = ExperimentConfig.from_dict(tiny(work / "t.sqlite", search={"trials": 3}))
    with pytest.raises(ExperimentError, match="another configuration"):
        run_experiment(other, out.run_dir, resume=True, echo=None)
    with pytest.raises(ExperimentError, match="no experiment to resume"):
        run_experiment(cfg, work / "nothing-here", resume=True, echo=None)
    bad = work / "corrupt"
    bad.mkdir()
    (bad / "experiment.json").write_text("{not json")
    with pytest.raises(ExperimentError, match="experiment.json is not valid JSON"):
        run_experiment(cfg, bad, resume=True, echo=None)
    with pytest.raises(ValueError, match="--force"):
        run_experiment(cfg, out.run_dir, echo=None)  # a finished experiment is never overwritten by accident


def test_netadapt_is_skipped_when_the_winner_already_meets_its_target_and_no_reduction_is_asked(work):
    """target_like: the reference is measured here and the winner against it, interleaved."""
    cfg = ExperimentConfig.from_dict(tiny(work / "t.sqlite", netadapt={"reduction": None, "reduction_if_met": 0.0,
                                                                       "target_like": "mobilenetv3_large"},
                                          search={"trials": 1}))
    out = run_experiment(cfg, work / "exp-met", echo=None)
    n, target = out.state["stages"]["netadapt"], out.state["netadapt_target"]
    assert "already meets" in n["skipped"] and not (work / "exp-met" / "netadapt").exists()
    assert target["like"] == "mobilenetv3_large" and 0 < target["start_ms"] < target["target_ms"]
    assert load(work / "exp-met/final/model.json").blocks == load(work / "exp-met/train/model.json").blocks


def test_a_winner_that_already_meets_the_target_is_still_refined_by_the_stated_reduction(work):
    """The default: NetAdapt runs in every experiment, so the table shows what it adds."""
    cfg = ExperimentConfig.from_dict(tiny(work / "t.sqlite", netadapt={"reduction": None,
                                                                       "target_like": "mobilenetv3_large"},
                                          search={"trials": 1}))
    assert cfg.netadapt["reduction_if_met"] == 0.15
    lines: list[str] = []
    out = run_experiment(cfg, work / "exp-met-refined", echo=lines.append)
    n, target = out.state["stages"]["netadapt"], out.state["netadapt_target"]
    assert "skipped" not in n and "already meets" in n["met_before"] and n["reduction"] == 0.15
    assert 0 < target["start_ms"] < target["target_ms"]  # met, yet refined
    refine = json.loads((work / "exp-met-refined/netadapt/config.json").read_text())["refine"]
    assert refine["reduction"] == 0.15 and refine["target_ms"] is None
    # 15 % below NetAdapt's own measurement of its start (two measurements of a 0.15-ms network with the tiny
    # measure settings can differ by more than 15 %, so the target is checked against the one it came from)
    l0 = json.loads((work / "exp-met-refined/netadapt/state.json").read_text())["l0_measured_ms"]
    assert n["target_ms"] == pytest.approx(0.85 * l0) and n["start_ms"] == l0  # one basis, start measured once
    assert any("refining it 15% faster instead" in line for line in lines)
    assert n["result"] == "netadapt/refined.json" and (work / "exp-met-refined/netadapt/refined.json").exists()
    assert "NetAdapt made it 15% faster" in (work / "exp-met-refined/report/summary.md").read_text()


# ---- the reproduction table ------------------------------------------------------------------


def test_table_reuses_the_experiments_row_and_trains_the_references_with_the_same_recipe(experiment, work):
    cfg, out, _ = experiment
    lines: list[str] = []
    rows = table_rows([out.run_dir], work / "table", reference_names=["mobilenetv3_small"], deploy_resolution=64,
                      measure=FAST_MEASURE, seeds=2, echo=lines.append)
    assert [r["name"] for r in rows] == ["tiny-searched", "mobilenetv3_small"]
    assert "2 networks × 2 seed(s), 1 already trained with this recipe" in lines[0] and "training 3" in lines[0]
    searched, ref = rows
    final_row = json.loads((out.run_dir / "final/row.json").read_text())
    second = json.loads((work / "table" / "rows" / "tiny-searched.s1.json").read_text())
    # the recipe seed's row is the experiment's; a further seed only trains (same split, another seed)
    assert second["recipe"] == {**final_row["recipe"], "seed": cfg.final.seed + 1} and "latency_fp32_ms" not in second
    accs = [final_row["test_accuracy"], second["test_accuracy"]]
    assert searched == {**final_row, "paired_vs": "mobilenetv3_small", "paired_ratio": searched["paired_ratio"],
                        "paired_ratio_low": searched["paired_ratio_low"],
                        "paired_ratio_high": searched["paired_ratio_high"],
                        "test_accuracy": statistics.fmean(accs), "test_accuracy_sd": statistics.stdev(accs),
                        "test_accuracies": accs, "seeds": 2,
                        "heldout_accuracy": statistics.fmean([final_row["heldout_accuracy"],
                                                              second["heldout_accuracy"]])}
    assert 0 < searched["paired_ratio_low"] <= searched["paired_ratio"] <= searched["paired_ratio_high"]
    assert ref["recipe_key"] == final_row["recipe_key"] == cfg.final.key() and ref["seeds"] == 2
    with open(work / "table" / "table3.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == ["tiny-searched", "mobilenetv3_small"] and table[0]["seeds"] == "2"
    md = (work / "table" / "table3.md").read_text()
    assert "| mobilenetv3_small |" in md and "2 seeds from 0" in md
    assert f"{searched['paired_ratio']:.3f}× [{searched['paired_ratio_low']:.3f}–" in md
    verdict = compare(searched, ref)["verdict"]
    assert f"- tiny-searched {verdict} mobilenetv3_small:" in md
    # a second run trains nothing: every row and seed is kept in OUT/rows/
    again: list[str] = []
    table_rows([out.run_dir], work / "table", reference_names=["mobilenetv3_small"], deploy_resolution=64,
               measure=FAST_MEASURE, seeds=2, echo=again.append)
    assert "training 0" in again[0]
    # --remeasure times every row again (and pairs the searched one again); accuracies are kept
    rows2 = table_rows([out.run_dir], work / "table", reference_names=["mobilenetv3_small"], deploy_resolution=64,
                       measure=FAST_MEASURE, remeasure=True, seeds=2, echo=None)
    assert [r["test_accuracy"] for r in rows2] == [r["test_accuracy"] for r in rows]
    assert all(r["latency_fp32_ms"] > 0 and r["latency_int8_ms"] > 0 for r in rows2)
    assert rows2[0]["paired_ratio"] > 0 and rows2[0]["paired_vs"] == "mobilenetv3_small"
    saved = json.loads((work / "table" / "rows" / "mobilenetv3_small.json").read_text())
    assert saved["latency_fp32_ms"] == rows2[1]["latency_fp32_ms"]
    with pytest.raises(ExperimentError, match="seeds must be a whole number >= 1"):
        table_rows([out.run_dir], work / "table", seeds=0, echo=None)


@pytest.mark.parametrize("a, b, verdict", [
    ((0.90, 0.91, 0.92), (0.80, 0.81, 0.82), "beats"),   # +10 points, SE 0.8
    ((0.80, 0.81, 0.82), (0.90, 0.91, 0.92), "loses to"),
    ((0.80, 0.85, 0.90), (0.79, 0.84, 0.89), "ties"),     # +1 point, SE 4.1
    ((0.90,), (0.80,), "ties"),                           # one seed: no error bar, never a verdict
])
def test_a_searched_network_beats_a_reference_only_beyond_two_standard_errors(a, b, verdict):
    rows = [aggregate({"test_accuracy": x[0]}, [{"test_accuracy": v} for v in x]) for x in (a, b)]
    c = compare(*rows)
    assert c["verdict"] == verdict and c["diff"] == pytest.approx(100 * (statistics.fmean(a) - statistics.fmean(b)))
    if len(a) > 1:
        assert c["se"] == pytest.approx(100 * math.sqrt(statistics.variance(a) / 3 + statistics.variance(b) / 3))


def test_table_refuses_an_unfinished_experiment_and_unknown_references(experiment, work):
    cfg, out, _ = experiment
    half = work / "half"
    half.mkdir()
    (half / "experiment.json").write_text(json.dumps({"config": cfg.to_dict(), "stages": {"search": {"done": True}}}))
    with pytest.raises(ExperimentError, match="has not finished its final stage"):
        table_rows([half], work / "t2", echo=None)
    with pytest.raises(ExperimentError, match="not an experiment directory"):
        table_rows([work / "absent"], work / "t2", echo=None)
    with pytest.raises(ExperimentError, match="unknown reference"):
        table_rows([out.run_dir], work / "t2", reference_names=["resnet50"], echo=None)


# ---- a real kill -------------------------------------------------------------------------------


def to_toml(d: dict) -> str:
    """Enough TOML for these configs: top-level scalars, then one table per section (inline sub-tables)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items() if x is not None) + "}"
        return json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines += [f"[{k}]"] + [f"{kk} = {value(vv)}" for kk, vv in v.items() if vv is not None]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_killed_during_netadapt_then_resumed_from_the_cli(tmp_path):
    """SIGKILL `nas experiment run` while NetAdapt iterates; `--resume` finishes without redoing the search."""
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    config = tmp_path / "tiny.toml"
    config.write_text(to_toml(tiny(tmp_path / "t.sqlite", netadapt={"reduction": 0.1, "steps": 30, "max_iters": 3})))
    assert ExperimentConfig.load(config).netadapt["steps"] == 30
    run = tmp_path / "run"
    args = [sys.executable, "-m", "hwnas.cli", "experiment", "run", str(config), "--run-dir", str(run)]
    kill_after_line(args, env, "iteration 1:")  # iteration 2 is training now
    state = json.loads((run / "experiment.json").read_text())
    assert [s for s in STAGES if state["stages"].get(s, {}).get("done")] == ["search", "train"]
    trials = (run / "search" / "trials.csv").read_text()
    p = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "[search] done already" in p.stdout and "[train] done already" in p.stdout
    assert (run / "search" / "trials.csv").read_text() == trials
    state = json.loads((run / "experiment.json").read_text())
    assert all(state["stages"][s]["done"] for s in STAGES)
    assert (run / "report" / "report.html").exists()
