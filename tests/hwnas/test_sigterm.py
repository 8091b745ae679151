"""`kill PID` (SIGTERM) stops a search the way Ctrl-C does: one line, status 143, no native stack dump
from Ray, no process left behind, and `--resume` finishes it (the interrupted trials run again)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability import procs

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package"),
              pytest.mark.slow]
NAS = str(Path(sys.executable).with_name("nas"))


def test_sigterm_is_handled_like_ctrl_c_and_the_search_resumes(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    args = [NAS, "search", "--run-dir", str(run), "--space", "mobilenetv3_small", "--searcher", "random",
            "--target-ms", "5", "--trials", "3", "--steps", "300", "--batch-size", "32", "--holdout", "300",
            "--train-subset", "2000", "--deploy-resolution", "64", "--latency", "measured", "--top-k", "1",
            "--workers", "2", "--no-report"]
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:  # until trials are training on Ray
            log = (run / "log.txt").read_text() if (run / "log.txt").exists() else ""
            if "at a time on Ray" in log:
                break
            time.sleep(0.5)
        time.sleep(3)
        assert driver.poll() is None, driver.communicate()
        started = procs.descendants(driver.pid)  # Ray's processes, started by the driver
        os.kill(driver.pid, signal.SIGTERM)  # as `kill PID` does
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 143, out[-2000:] + err[-2000:]
    assert err == "nas: terminated\n", err  # one line: no "*** SIGTERM received ... PC: @", no traceback
    assert "SIGTERM received" not in out and "Traceback" not in out
    assert procs.wait_gone(started, 30) == {}, "the driver left Ray processes running"

    done = subprocess.run([NAS, "search", "--resume", str(run), "--no-report"], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "was interrupted; it will run again" in done.stdout
    with open(run / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(r["state"] == "COMPLETE" for r in rows) == 3 and (run / "found.json").exists()
