"""A Ray worker killed while it evaluates a trial, and a node lost mid-search.

A killed worker's task is retried by Ray (``max_retries``); a trial whose every attempt dies fails with
the reason in trials.csv and the search goes on; on a two-node local cluster, removing the node that is
evaluating a trial re-runs that trial on the other node. The kills are real SIGKILLs of the worker
processes, found under the process tree from the outside.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from evaluation.execution import loopback_only
from nas.search import run_search
from tests.reliability import procs
from tests.reliability.conftest import check_run_dir_intact, needs_fmnist, read_csv, tiny_search

pytestmark = [needs_fmnist, pytest.mark.slow]
TASK_TITLE = "ray::_evaluate_task"


class Watcher(threading.Thread):
    """Counts evaluation executions under ``root()`` (a worker's title turning into TASK_TITLE) and calls
    ``act(pid, n)`` on the n-th (1-based) for n in ``targets``, ``delay_s`` after it started."""

    def __init__(self, root, targets: set[int], act, delay_s: float = 0.3):
        super().__init__(daemon=True)
        self.root, self.targets, self.act, self.delay_s = root, targets, act, delay_s
        self.executions: list[int] = []
        self.acted: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        titles: dict[int, str] = {}
        try:
            while not self.stop.is_set():
                root = self.root()
                for pid in procs.descendants(root) if root else ():
                    title = procs.cmdline(pid)
                    if title.startswith(TASK_TITLE) and not titles.get(pid, "").startswith(TASK_TITLE):
                        self.executions.append(pid)
                        if len(self.executions) in self.targets:
                            time.sleep(self.delay_s)
                            if procs.cmdline(pid).startswith(TASK_TITLE):  # still evaluating
                                self.act(pid, len(self.executions))
                                self.acted.append(len(self.executions))
                    titles[pid] = title
                time.sleep(0.05)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


def _sigkill(pid: int, _n: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_killed_workers_are_retried_and_a_trial_that_always_dies_fails(tmp_path, no_leftover_processes):
    # executions (workers=1: one at a time): 1 = trial 0 (killed), 2 = its retry (runs), 3 = trial 1 (killed),
    # 4 = its only retry (killed: max_retries=1 spent, the trial fails), 5, 6 = trials 2 and 3
    watcher = Watcher(os.getpid, {1, 3, 4}, _sigkill, delay_s=0.2)
    watcher.start()
    try:  # 10 training steps: each evaluation lasts well beyond the kill delay
        cfg = tiny_search(tmp_path / "run", trials=4, workers=1, max_retries=1,
                          eval_changes={"train": {"steps": 10, "batch_size": 16, "threads": 1}})
        out = run_search(cfg, echo=None)
    finally:
        watcher.stop.set()
        watcher.join(10)
    assert watcher.error is None, watcher.error
    assert watcher.acted == [1, 3, 4] and len(watcher.executions) == 6, watcher.executions
    rows = read_csv(tmp_path / "run" / "trials.csv")
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert rows[1]["error"].startswith("worker lost after retries: WorkerCrashedError"), rows[1]["error"]
    assert rows[0]["error"] == "" and float(rows[0]["accuracy"]) >= 0, "the retried trial has no result"
    assert (out.completed, out.failed) == (3, 1) and out.found is not None
    assert "FAILED: worker lost after retries" in (tmp_path / "run" / "log.txt").read_text()
    check_run_dir_intact(tmp_path / "run")


def test_a_node_removed_mid_search_has_its_trials_rerun_elsewhere(tmp_path, no_leftover_processes):
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    with loopback_only():  # the test cluster and its driver on 127.0.0.1
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})  # node A: head and worker
        try:
            node_a = cluster.head_node
            node_b = cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            raylet_b = node_b.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
            node_b_procs = {raylet_b: procs.start_time(raylet_b), **procs.descendants(raylet_b)}
            removed = threading.Event()

            def remove_b(pid: int, _n: int) -> None:
                node_b_procs.update(procs.descendants(raylet_b))
                cluster.remove_node(node_b, allow_graceful=False)
                removed.set()

            watcher = Watcher(lambda: raylet_b if not removed.is_set() else None, {1}, remove_b, delay_s=0.5)
            watcher.start()
            try:
                cfg = tiny_search(tmp_path / "run", trials=6, workers=2, max_retries=2, ray_address=cluster.address)
                out = run_search(cfg, echo=None)
            finally:
                watcher.stop.set()
                watcher.join(10)
                ray.shutdown()
            assert watcher.error is None, watcher.error
            assert removed.is_set() and watcher.acted == [1], "node B never evaluated a trial"
            assert not procs.wait_gone(node_b_procs, 30), "processes of the removed node are still running"
            assert node_a.all_processes  # the survivor did the rest
            rows = read_csv(tmp_path / "run" / "trials.csv")
            assert [r["state"] for r in rows] == ["COMPLETE"] * 6, [r["error"] for r in rows]
            assert (out.completed, out.failed) == (6, 0)
            check_run_dir_intact(tmp_path / "run")
        finally:
            cluster.shutdown()
