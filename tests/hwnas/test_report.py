"""``nas report``: real (tiny) search run directories, a synthetic NetAdapt run, and bad input."""

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from hwnas import cli, report
from hwnas.report import latency_error_stats, write_report
from nas.search import run_search
from search_spaces import load, references, walk
from tests.conftest import seed_table
from tests.nas.test_search import FMNIST, tiny

needs_data = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")
CHEAP_REFERENCE = "mobilenetv3_small_050"


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_self_contained(html: str, pngs: int) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html
    assert html.count('src="data:image/png;base64,') == pngs


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    """Two real search runs sharing one latency table: `run_search` (random) and `nas search` (tpe).

    The table starts calibrated (the session's copy): the report is tested here, not a first calibration."""
    if not FMNIST.exists():
        pytest.skip("needs the dataset-fashion-mnist Debian package")
    root = tmp_path_factory.mktemp("report")
    seed_table(request.getfixturevalue("calibrated_table"), root / "t.sqlite")
    request.getfixturevalue("shared_ray")  # both searches join one local Ray
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWNAS_CACHE_DIR", str(root / "cache"))
        run_search(tiny(root / "random", trials=4), echo=None)
        code = cli.main(["search", "--run-dir", str(root / "tpe"), "--space", "mobilenetv3_small", "--searcher", "tpe",
                         "--target-ms", "1.0", "--trials", "2", "--steps", "4", "--batch-size", "32", "--holdout",
                         "500", "--train-subset", "1000", "--deploy-resolution", "64", "--top-k", "1",
                         "--lut", str(root / "t.sqlite"), "--json"])
        assert code == 0
        yield root


@needs_data
def test_search_report_files_plots_and_tables(runs, monkeypatch):
    run = runs / "random"
    html_path = write_report([run], references=[CHEAP_REFERENCE])
    out = run / "report"
    assert html_path == out / "report.html"
    pngs = ["accuracy_latency.png", "reward.png", "latency_error.png"]
    tables = ["summary.csv", "pareto.csv", "references.csv", "latency_error.csv", "found_architecture.csv",
              "environment.csv"]
    for name in ["report.html", "report.md", *pngs, *tables]:
        assert (out / name).stat().st_size > 0, name
    assert_self_contained(html_path.read_text(), len(pngs))
    md = (out / "report.md").read_text()
    assert all(f"]({name})" in md for name in pngs + tables)

    found = load(run / "found.json")
    arch = read_csv(out / "found_architecture.csv")
    assert len(arch) == len(walk(found)) + 1 and arch[-1]["operator"] == "total"
    assert int(arch[-1]["params"]) == json.loads((run / "found_metrics.json").read_text())["params"]
    assert [r["number"] for r in read_csv(out / "pareto.csv")] == [r["number"] for r in read_csv(run / "pareto.csv")]
    summary = read_csv(out / "summary.csv")
    assert len(summary) == 1 and summary[0]["searcher"] == "random" and summary[0]["trials"] == "4"
    env = {r["setting"]: r["random"] for r in read_csv(out / "environment.csv")}
    assert env["torch"] == torch.__version__ and env["seed"] == "0" and env["proxy steps"] == "4"
    # the re-measured top-k trials and the reference have both latencies
    remeasured = json.loads((run / "remeasured.json").read_text())
    pairs = {p["architecture"] for p in read_csv(out / "latency_error.csv")}
    assert pairs == {f"trial {n}" for n in remeasured} | {f"reference {CHEAP_REFERENCE}"}

    cached = read_csv(run / "references.csv")
    assert [r["name"] for r in cached] == [CHEAP_REFERENCE] and float(cached[0]["accuracy"]) >= 0
    assert float(cached[0]["latency_measured_ms"]) > 0 and float(cached[0]["latency_predicted_ms"]) > 0
    # a second report takes the reference from the cache instead of training it again
    monkeypatch.setattr(report, "evaluate_reference", lambda *a: pytest.fail("reference evaluated twice"))
    write_report([run], references=[CHEAP_REFERENCE])
    write_report([run], references=False)
    assert [r["name"] for r in read_csv(out / "references.csv")] == [CHEAP_REFERENCE]


@needs_data
def test_nas_search_writes_its_report_and_several_runs_compare(runs, tmp_path, capsys):
    assert (runs / "tpe" / "report" / "report.html").exists()  # written by `nas search` at the end
    assert not (runs / "tpe" / "references.csv").exists()  # no reference training by default

    assert cli.main(["report", str(runs / "random"), str(runs / "tpe"), "--out", str(tmp_path / "cmp"),
                     "--no-references", "--json"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert paths["html"] == str(tmp_path / "cmp" / "report.html")
    summary = read_csv(tmp_path / "cmp" / "summary.csv")
    assert [(r["run"], r["searcher"]) for r in summary] == [("random", "random"), ("tpe", "tpe")]
    for prefix in ("r1_", "r2_"):
        assert (tmp_path / "cmp" / f"{prefix}accuracy_latency.png").exists()
        assert (tmp_path / "cmp" / f"{prefix}found_architecture.csv").exists()
    env = read_csv(tmp_path / "cmp" / "environment.csv")
    assert list(env[0]) == ["setting", "random", "tpe"]
    pngs = len(list((tmp_path / "cmp").glob("*.png")))
    assert_self_contained((tmp_path / "cmp" / "report.html").read_text(), pngs)


def netadapt_dir(path: Path, final: bool = True) -> Path:
    """A NetAdapt-style run directory: a start row and three iterations of three proposals each."""
    path.mkdir()
    rows = [dict(iteration=0, proposal=0, kind="start", accuracy=0.80, latency_pred_ms=10.0, latency_measured_ms=10.2,
                 madds=200e6, params=4e6, chosen=True)]
    acc, lat = 0.80, 10.0
    for it in range(1, 4):
        for p, kind in enumerate(("expansion", "bottleneck", "head")):
            chosen = p == it % 3
            rows.append(dict(iteration=it, proposal=p, kind=kind, group=f"g{p}", blocks="1,2", old_width=64,
                             new_width=48, accuracy=acc - 0.01 * (p + 1), delta_acc=-0.01 * (p + 1),
                             latency_pred_ms=lat - 1 - p, delta_latency_pred_ms=-1 - p,
                             latency_measured_ms=lat - 1.1 - p, madds=150e6, params=3e6, slope=0.01, chosen=chosen,
                             error="RuntimeError: diverged" if (it, p) == (2, 0) else ""))
        acc, lat = acc - 0.01 * (it % 3 + 1), lat - 1 - it % 3
    pd.DataFrame(rows).to_csv(path / "trajectory.csv", index=False)
    if final:
        metrics = {"accuracy": 0.75, "latency_pred_ms": 5.0, "latency_measured_ms": 5.1, "madds": 1e8, "params": 2e6}
        (path / "final_metrics.json").write_text(json.dumps(
            {"start": metrics, "refined": metrics, "baseline": {**metrics, "width_multiplier": 0.75}}))
    (path / "config.json").write_text(json.dumps({"refine": {"target_ms": 5.0, "steps": 100}, "dataset": {"name": "x"},
                                                  "environment": {"torch": torch.__version__}}))
    references.get("mobilenetv3_small_050").save(path / "refined.json")
    (path / "log.txt").write_text("23:59:00 start\n00:01:30 done\n")
    return path


def test_netadapt_trajectory_report(tmp_path):
    run = netadapt_dir(tmp_path / "na")
    html = write_report([run], references=False)
    out = run / "report"
    traj = read_csv(out / "netadapt_trajectory.csv")
    assert [r["iteration"] for r in traj] == ["0", "1", "2", "3"]
    assert [r["kind"] for r in traj] == ["start", "bottleneck", "head", "expansion"]
    assert [r["network"] for r in read_csv(out / "netadapt_summary.csv")] == ["start", "refined", "baseline"]
    failed = read_csv(out / "netadapt_failed.csv")
    assert len(failed) == 1 and "diverged" in failed[0]["error"]
    summary = read_csv(out / "summary.csv")
    assert summary[0]["type"] == "netadapt" and summary[0]["iterations"] == "3" and summary[0]["accuracy"] == "0.75"
    env = {r["setting"]: r["na"] for r in read_csv(out / "environment.csv")}
    assert env["wall time"] == "2.5 min" and env["refine.steps"] == "100" and env["dataset"] == "x"  # from log.txt
    assert "dataset.name" not in env
    arch = read_csv(out / "refined_architecture.csv")
    assert len(arch) == len(walk(references.get("mobilenetv3_small_050"))) + 1
    assert_self_contained(html.read_text(), 1)
    assert "bottleneck 1, head 1, expansion 1" in (out / "report.md").read_text()
    # final_metrics.json is optional
    write_report([netadapt_dir(tmp_path / "bare", final=False)], references=False)
    assert (tmp_path / "bare" / "report" / "netadapt_trajectory.png").exists()


def trials_dir(path: Path, data: bytes, config: str | None = None) -> Path:
    path.mkdir()
    (path / "trials.csv").write_bytes(data)
    if config is not None:
        (path / "config.json").write_text(config)
    return path


HEADER = b"number,state,accuracy,latency_ms,reward\n"
BAD_DIRS = {
    "missing": (lambda p: p, "no such run directory"),
    "empty": (lambda p: p.mkdir() or p, "is not a run directory"),
    "columns": (lambda p: trials_dir(p, b"number,state\n0,COMPLETE\n"),
                "missing column(s) accuracy, latency_ms, reward"),
    "text": (lambda p: trials_dir(p, HEADER + b"0,COMPLETE,high,1,1\n"), "column accuracy is not numeric"),
    "binary": (lambda p: trials_dir(p, b"\xff\xfe\x00garbage\n\xff,\x00"), "trials.csv: not a readable"),
    "config": (lambda p: trials_dir(p, HEADER, config="{oops"), "config.json: not valid JSON"),
}


@pytest.mark.parametrize("case", BAD_DIRS)
def test_bad_run_directories_give_one_line_errors(tmp_path, capsys, case):
    make, message = BAD_DIRS[case]
    run = make(tmp_path / case)
    with pytest.raises(ValueError, match=re.escape(message)):
        write_report([run], references=False)
    assert cli.main(["report", str(run), "--no-references"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: ") and message in err and err.count("\n") == 1


def test_unknown_reference_name_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown reference architecture"):
        write_report([netadapt_dir(tmp_path / "na")], references=["mobilenetv9"])


def test_latency_error_statistics():
    pairs = pd.DataFrame({"error_pct": [1.0, -5.0, 20.0, -12.0]})
    stats = latency_error_stats(pairs)
    assert stats == {"n": 4, "median_abs_error_pct": 8.5, "within_10pct": 0.5, "max_abs_error_pct": 20.0}


def test_an_experiment_directory_reports_its_stages_and_its_runs(tmp_path):
    """`nas report EXP_DIR` (what `nas experiment run` writes at the end) expands to its search and NetAdapt runs."""
    import json

    from hwnas.report import experiment_stages

    exp = {"config": {"name": "demo"}, "stages": {
        "search": {"done": True, "wall_s": 60.0, "trial": 3, "accuracy": 0.8},
        "netadapt": {"done": True, "wall_s": 0.0, "skipped": "the winner already meets 1.0 ms"},
        "final": {"done": False}}}
    df = experiment_stages(exp)
    assert list(df["stage"]) == ["search", "netadapt", "final"] and list(df["done"]) == [True, True, False]
    assert df.loc[0, "wall_min"] == 1.0 and "trial 3" in df.loc[0, "result"] and "already meets" in df.loc[1, "result"]
    bad = tmp_path / "bad"
    (bad / "search").mkdir(parents=True)
    (bad / "experiment.json").write_text(json.dumps(exp))
    with pytest.raises(ValueError, match="has no search results yet"):
        write_report([bad], references=False)  # no finished run inside yet: a clear error, not a crash
