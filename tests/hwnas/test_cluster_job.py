"""The README's cluster section, run as written: a local Ray head with its job server on 127.0.0.1, a tiny
`nas search` submitted with `ray job submit`, and the run directory it leaves, complete.

Every line of the README's block runs verbatim (in a temporary folder, with the project's environment on
PATH) except `ray stop`: it stops every Ray process of the user on the machine — another search's, another
test's — so the test stops only the processes of the head it started (their session id), by pid.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability import procs

ROOT = Path(__file__).resolve().parents[2]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package"),
              pytest.mark.slow]
PORTS = (6379, 8265, 10001)  # the head's GCS, job server (dashboard), client server
NOT_READY = "No available agent to submit job"  # Ray's answer while the head's job agent is starting


def readme_block() -> list[str]:
    """The command lines of the README's cluster block (the fenced block after its marker comment)."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- tests/hwnas/test_cluster_job.py runs this block -->\s*```bash\n(.*?)```", text, re.S)
    assert m, "the README's cluster block (with its marker comment) is missing"
    return [line for line in m[1].splitlines() if line.strip() and not line.lstrip().startswith("#")]


def session_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def session_processes(session: int) -> dict[int, int]:
    """{pid: start time} of every live process of ``session``."""
    return {int(e): procs.start_time(int(e)) for e in os.listdir("/proc")
            if e.isdigit() and session_of(int(e)) == session and procs.start_time(int(e)) is not None}


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(session: int) -> None:
    """SIGTERM every process of ``session``, then SIGKILL what is left after 30 s (pids checked for reuse)."""
    started = session_processes(session)
    for pid in started:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    procs.kill_all(procs.wait_gone(started, 30))


def test_the_readme_cluster_block_runs_a_search_as_a_ray_job(tmp_path):
    lines = readme_block()
    assert lines[-1].split() == ["ray", "stop"] and len(lines) == 3
    start, submit = lines[0], lines[1]
    assert " ray start --head " in f" {start} " and submit.startswith("ray job submit ")
    busy = [p for p in PORTS if port_in_use(p)]
    if busy:
        pytest.skip(f"port(s) {busy} of 127.0.0.1 in use: another Ray head runs on this machine")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    # `ray start` leaves its daemons in the session it ran in: a new one, whose id is the shell's pid
    head = subprocess.Popen(["bash", "-c", start], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out = head.communicate(timeout=300)[0]
        assert head.returncode == 0, out[-3000:]
        for _ in range(24):  # as the README says: a head that has just started may not take jobs yet
            job = subprocess.run(["bash", "-c", submit], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=900)
            if job.returncode == 0 or NOT_READY not in job.stderr:
                break
            time.sleep(5)
        log = job.stdout[-4000:] + job.stderr[-4000:]
        assert job.returncode == 0 and "succeeded" in job.stdout + job.stderr, log
        listening = procs.listening_sockets(session_processes(head.pid))
        assert listening and all(procs.is_loopback(addr) for _, addr, _, _ in listening), listening
    finally:
        stop(head.pid)
    assert procs.alive(session_processes(head.pid)) == {}  # (zombies reparented to init do not count)

    run = Path(re.search(r"--run-dir \S*?/?(runs/\S+)", submit)[1].strip('"'))
    run = tmp_path / run
    with open(run / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["state"] == "COMPLETE" for r in rows)
    for name in ("config.json", "found.json", "found.pt", "elapsed.json", "report/report.html"):
        assert (run / name).exists(), name
    assert "joining auto" in job.stdout  # the job's driver joined the head, not a Ray of its own
