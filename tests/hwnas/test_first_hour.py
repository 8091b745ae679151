"""A new user's first run, end to end (issue 18): one real `nas search` as a user starts it, then what
they look at — the console, log.txt, the report in a real browser, the study in optuna-dashboard, the
files' modes, what Ray left in the temp folder. Tiny budgets; nothing is mocked.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from hwnas import report_plots as plots
from hwnas.report import accuracy_latency_caption, accuracy_latency_figure, load_run, pareto_table, write_report
from tests.hwnas.browser import CHROMIUM, Browser
from tests.hwnas.test_report import netadapt_dir

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")
BIN = Path(sys.executable).parent
NAS = str(BIN / "nas")
UMASK = 0o027  # not the usual 022, so that a mode that ignores the umask shows
FILE_MODE, DIR_MODE = 0o666 & ~UMASK, 0o777 & ~UMASK
TINY = ["--space", "mobilenetv3_small", "--searcher", "random", "--target-ms", "5", "--trials", "2", "--steps", "4",
        "--batch-size", "32", "--holdout", "300", "--train-subset", "1000", "--deploy-resolution", "64",
        "--latency", "measured", "--top-k", "1"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """`nas search` (2 trials) under umask 027, with its own Ray temp folder; its console and run directory."""
    root = tmp_path_factory.mktemp("first-hour")
    ray_tmp = tempfile.mkdtemp(prefix="hwnas-ray-")
    env = {**os.environ, "HWNAS_CACHE_DIR": str(root / "cache"), "RAY_TMPDIR": ray_tmp}
    run = root / "run"
    t0 = time.monotonic()
    proc = subprocess.run([NAS, "search", "--run-dir", str(run), *TINY], capture_output=True, text=True, env=env,
                          timeout=600, preexec_fn=lambda: os.umask(UMASK))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    left_by_ray = sorted(str(p.relative_to(ray_tmp)) for p in Path(ray_tmp).rglob("*"))
    shutil.rmtree(ray_tmp, ignore_errors=True)
    yield {"run": run, "stdout": proc.stdout, "stderr": proc.stderr, "wall": time.monotonic() - t0,
           "ray_left": left_by_ray, "root": root}


def test_one_wall_time_in_console_log_and_report(first_run):
    run, out = first_run["run"], first_run["stdout"]
    pattern = r"(\d+) trials completed, (\d+) failed, in ([\d.]+) min"
    console = re.findall(pattern, out)
    logged = re.findall(pattern, (run / "log.txt").read_text())
    assert console == logged and len(console) == 1 and console[0][:2] == ("2", "0"), out
    minutes = console[0][2]
    recorded = json.loads((run / "elapsed.json").read_text())["wall_s"]
    assert f"{recorded / 60:.1f}" == minutes and 0 < recorded < first_run["wall"]
    env = {r["setting"]: r["run"] for r in read_csv(run / "report" / "environment.csv")}
    assert env["wall time"] == f"{minutes} min"
    assert float(read_csv(run / "report" / "summary.csv")[0]["wall time (min)"]) == float(minutes)


def test_the_console_says_what_it_waits_for_and_what_it_wrote(first_run):
    out = first_run["stdout"]
    assert "starting Ray (local, on 127.0.0.1)" in out and re.search(r"at a time on Ray \(ready in [\d.]+ s\)", out)
    run = first_run["run"]
    assert f"wrote {run}/: found.json, found.pt, found_metrics.json, trials.csv, pareto.csv, log.txt, " \
           "report/report.html" in out
    assert f"next: netadapt refine --arch {run}/found.json --weights {run}/found.pt" in out
    assert first_run["stderr"] == ""


def test_every_file_gets_the_mode_of_the_umask(first_run):
    """Search and report files (temp file + rename must not leave them 0600): 0640 and 0750 under umask 027."""
    wrong = {str(p.relative_to(first_run["run"])): oct(stat.S_IMODE(p.stat().st_mode))
             for p in first_run["run"].rglob("*")
             if stat.S_IMODE(p.stat().st_mode) != (DIR_MODE if p.is_dir() else FILE_MODE)}
    assert not wrong, wrong
    assert (first_run["run"] / "report" / "report.html").exists() and (first_run["run"] / "found.pt").exists()


def test_ray_leaves_nothing_in_the_temp_folder(first_run):
    assert first_run["ray_left"] == []


def test_optuna_dashboard_shows_the_objective_by_name(first_run):
    """The README's one command, `optuna-dashboard RUN/study.journal`, on a free port; read through its HTTP API."""
    port = free_port()
    dash = subprocess.Popen([str(BIN / "optuna-dashboard"), str(first_run["run"] / "study.journal"), "--host",
                             "127.0.0.1", "--port", str(port), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline and dash.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, dash.stdout.read() if dash.poll() is not None else "no answer"
        assert [s["study_name"] for s in studies] == ["search"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", timeout=30) as r:
            detail = json.load(r)
    finally:
        dash.terminate()
        dash.wait(30)
    assert detail["objective_names"] == ["reward"] and detail["directions"] == ["maximize"]
    trials = detail["trials"]
    assert len(trials) == 2 and all(t["state"] == "Complete" for t in trials)
    attrs = {a["key"] for a in trials[0]["user_attrs"]}
    assert {"arch_id", "accuracy", "latency_ms", "reward", "madds", "params"} <= attrs


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium (/usr/bin/chromium; `make browser`, "
                                                  "as root, installs the Debian package)")
def test_the_report_in_a_real_browser(first_run):
    """report.html in headless Chromium: no console error, every image embedded and drawn, and no sentence
    about something the plots do not show (reference networks, a flag the user never passed)."""
    run = first_run["run"]
    with Browser() as browser:
        browser.open(run / "report" / "report.html")
        problems = browser.problems()
        images = browser.evaluate("[...document.images].map(i => ({src: i.src.slice(0, 22), complete: i.complete, "
                                  "natural: i.naturalWidth, shown: i.getBoundingClientRect().width, "
                                  "caption: i.closest('figure')?.querySelector('figcaption')?.textContent}))")
        text = browser.evaluate("document.body.innerText")
    assert problems == []
    assert len(images) == len(list((run / "report").glob("*.png"))) == 2  # reward; accuracy vs latency
    for image in images:
        assert image["src"] == "data:image/png;base64," and image["complete"], image
        assert image["natural"] > 100 and image["shown"] > 100, image
    captions = [i["caption"] for i in images]
    accuracy = next(c for c in captions if "completed trial" in c)
    assert "diamonds" not in accuracy and "reference" not in accuracy and "star" in accuracy
    assert "--no-references" not in text and f"nas report {run}" in text
    # every caption names what the figure draws
    fig = accuracy_latency_figure(load_run(run, "run"), pareto_table(load_run(run, "run").trials),
                                  pd.DataFrame(columns=["name", "accuracy", "latency_ms", "latency_measured_ms"]))
    assert accuracy_latency_caption(fig, 5.0) == accuracy


def _legend_outside_every_axes(fig) -> None:
    FigureCanvasAgg(fig).draw()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent()
        for other in fig.axes:
            assert not box.overlaps(other.get_window_extent()), "the legend lies on the data"


def test_legends_lie_outside_the_data(first_run, tmp_path):
    run = load_run(first_run["run"], "run")
    refs = pd.DataFrame({"name": ["mobilenetv3_small"], "accuracy": [0.5], "latency_ms": [1.0],
                         "latency_measured_ms": [1.1]})
    fig = accuracy_latency_figure(run, pareto_table(run.trials), refs)
    assert any(label.startswith("references") for label in plots.legend_labels(fig))
    assert "(diamonds)" in accuracy_latency_caption(fig, 5.0)
    trials = pd.DataFrame({"number": range(12), "reward": [0.5 + 0.01 * i for i in range(12)]})
    pairs = pd.DataFrame({"architecture": ["trial 1", "reference x"], "measured_ms": [1.0, 2.0],
                          "predicted_ms": [1.1, 1.9]})
    na = load_run(netadapt_dir(tmp_path / "na"), "na")
    chosen = na.trajectory[na.trajectory["chosen"]]
    for figure in (fig, plots.rewards([("a", trials), ("b", trials.assign(reward=trials["reward"] - 0.1))]),
                   plots.latency_error(pairs), plots.trajectory(chosen, (5.0, 0.75, "baseline (width ×0.75)"))):
        _legend_outside_every_axes(figure)
    write_report([na.path], references=False)  # the trajectory's caption names the baseline it draws
    assert "dotted: the width-multiplier baseline" in (na.path / "report" / "report.md").read_text()


@pytest.mark.slow
def test_netadapt_and_a_combined_report_get_the_mode_of_the_umask(first_run):
    """`netadapt refine` on the search's winner and `nas report` of both runs, under umask 027."""
    root, run = first_run["root"], first_run["run"]
    env = {**os.environ, "HWNAS_CACHE_DIR": str(root / "cache")}
    umask = {"env": env, "capture_output": True, "text": True, "preexec_fn": lambda: os.umask(UMASK)}
    refine = subprocess.run([str(BIN / "netadapt"), "refine", "--arch", str(run / "found.json"), "--weights",
                             str(run / "found.pt"), "--reduction", "0.06", "--steps", "3", "--final-epochs", "0.02",
                             "--batch-size", "32", "--holdout", "300", "--train-subset", "1000",
                             "--deploy-resolution", "64", "--run-dir", str(root / "na")], timeout=900, **umask)
    assert refine.returncode in (0, 1), refine.stdout[-3000:] + refine.stderr[-3000:]  # 1: target not met
    report = subprocess.run([NAS, "report", str(run), str(root / "na"), "--out", str(root / "both"),
                             "--no-references"], timeout=300, **umask)
    assert report.returncode == 0, report.stderr
    for folder in (root / "na", root / "both"):
        wrong = {str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]
                 if stat.S_IMODE(p.stat().st_mode) != (DIR_MODE if p.is_dir() else FILE_MODE)}
        assert not wrong, wrong
    assert (root / "na" / "refined.pt").exists() and (root / "both" / "report.html").exists()
    minutes = re.search(r"refinement finished in ([\d.]+) min", refine.stdout)[1]
    assert f"({minutes} min)" in refine.stdout  # the closing line shows the same wall time
