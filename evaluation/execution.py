"""Running evaluations as Ray tasks, locally or on a cluster.

Each evaluation is one task declaring the CPUs it uses. Without ``--ray-address`` a private local
Ray instance is started on the loopback address with the dashboard off (``address="local"``, so a
stray ``ray start`` on the machine is never joined by accident), and torn down at the end; with an
address (or ``auto``), the search joins that cluster. Worker crashes (a killed process, a lost node)
are retried by Ray up to ``max_retries`` times; errors raised by the evaluation code are not retried
— a candidate that diverges would diverge again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

from evaluation.evaluate import EvalConfig, EvalResult, evaluate_candidate


class WorkerLostError(RuntimeError):
    """A task's worker or node died more often than the retry budget allows."""


class GPUUnavailableError(ValueError):
    """Trials ask for GPUs (``--gpus-per-trial``) that the Ray cluster does not have."""


def _ray_env_defaults() -> None:
    # No telemetry, no token file in $HOME: this framework never talks to the network.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@contextlib.contextmanager
def loopback_only():
    """Make a local Ray instance started inside this block listen on 127.0.0.1 only.

    Ray ignores ``_node_ip_address="127.0.0.1"`` on Linux (it swaps loopback for the machine's
    routable address) and its GCS, raylet, workers and agents then listen on every interface. With
    clusters disabled (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's own switch, read at import and
    inherited by the processes it starts) the node address stays 127.0.0.1. Restored on exit, so that
    joining a real cluster later in this process is unaffected.
    """
    name = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    old_env = os.environ.get(name)
    os.environ[name] = "0"
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - a Ray without this module: the variable alone must do
        ray_constants = None
    old_flag = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if ray_constants is not None and old_flag is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False  # ray was imported before the variable was set
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old_env
        if ray_constants is not None and old_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = old_flag


@contextlib.contextmanager
def keeping_sigterm_handler():
    """Keep the process's own SIGTERM handler across ``ray.init``.

    ``ray.init`` replaces it in the driver: with a Python handler that exits with status 1, and with
    the core worker's native one, which prints a stack dump (``*** SIGTERM received ... PC: @ ...``).
    A command that handles SIGTERM itself (:func:`hwnas.cli.run_cli`: like Ctrl-C, one line, status
    143, resumable) gets its handler back; a process that had none of its own keeps Ray's.
    """
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and callable(before):
            signal.signal(signal.SIGTERM, before)


def _evaluate_task(spec_json: str, cfg: EvalConfig, seed: int) -> EvalResult:
    return evaluate_candidate(spec_json, cfg, seed)


@dataclass
class RayPool:
    """A thin wrapper over Ray tasks: submit evaluations, wait for some, get results.

    Args:
        address: a Ray cluster address (``auto``, ``ray://...``, ``host:port``) or None for a
            private local instance.
        num_cpus: CPUs of the local instance (default: all).
        cpus_per_trial: CPUs each evaluation declares (torch threads follow it).
        max_retries: retries after a worker/node dies while evaluating.
        dashboard: start Ray's dashboard (local instance only; bound to 127.0.0.1).
        gpus_per_trial: GPUs each evaluation declares (fractions share a GPU: 0.25 = four trials per
            GPU); Ray shows a task only the GPUs it declared, so with 0 trials train on the CPU. A
            cluster without that many GPUs is a :class:`GPUUnavailableError` before any task starts.
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_trial: int = 1
    max_retries: int = 2
    dashboard: bool = False
    gpus_per_trial: float = 0.0

    def __post_init__(self):
        _ray_env_defaults()
        import ray

        self._ray = ray
        self._owns_instance = False
        self._temp_dir: str | None = None
        if not ray.is_initialized():
            if self.address:
                with keeping_sigterm_handler():
                    ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                # A private temp folder, removed at shutdown: Ray leaves a session folder per instance
                # in its temp root otherwise (one per search, dozens per test run).
                # (A short name: Ray's socket paths inside it must stay under 108 bytes.)
                self._temp_dir = tempfile.mkdtemp(prefix="ray-", dir=os.environ.get("RAY_TMPDIR") or None)
                with loopback_only(), keeping_sigterm_handler():
                    ray.init(
                        address="local",
                        _temp_dir=self._temp_dir,
                        num_cpus=self.num_cpus or os.cpu_count(),
                        include_dashboard=self.dashboard,
                        dashboard_host="127.0.0.1",
                        _node_ip_address="127.0.0.1",
                        object_store_memory=512 * 1024 * 1024,
                        logging_level=logging.WARNING,
                        log_to_driver=False,
                    )
                self._owns_instance = True
        if self.gpus_per_trial:
            gpus = self._ray.cluster_resources().get("GPU", 0)
            if gpus < self.gpus_per_trial:
                self.shutdown()
                raise GPUUnavailableError(
                    f"--gpus-per-trial {self.gpus_per_trial:g}: the Ray cluster has {gpus:g} GPU(s)"
                    + ("" if self.address else " (the local Ray sees this machine's, none)" if not gpus else "")
                    + "; use --gpus-per-trial 0 to train on the CPUs")
        self._remotes: dict = {}
        self._task = self._remote(_evaluate_task)

    def _remote(self, fn):
        if fn not in self._remotes:
            self._remotes[fn] = self._ray.remote(num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial,
                                                 max_retries=self.max_retries, retry_exceptions=False)(fn)
        return self._remotes[fn]

    @property
    def slots(self) -> int:
        """Evaluations that can run at once on the whole cluster."""
        resources = self._ray.cluster_resources()
        slots = int(resources.get("CPU", 1)) // self.cpus_per_trial
        if self.gpus_per_trial:
            slots = min(slots, int(resources.get("GPU", 0) / self.gpus_per_trial + 1e-9))
        return max(1, slots)

    @property
    def node_cpus(self) -> int:
        """CPUs one task may use when it runs alone (a single long training): a node's, at most."""
        return max(1, min(os.cpu_count() or 1, self.slots * self.cpus_per_trial))

    def submit(self, spec_json: str, cfg: EvalConfig, seed: int) -> Any:
        return self._task.remote(spec_json, cfg, seed)

    def call(self, fn, *args, num_cpus: int | None = None) -> Any:
        """Submit ``fn(*args)`` as a task with the pool's retries and ``cpus_per_trial`` CPUs (or
        ``num_cpus``, e.g. all of a node for a single long training); fn is a module-level function."""
        remote = self._remote(fn)
        return (remote.options(num_cpus=num_cpus) if num_cpus else remote).remote(*args)

    def put(self, value) -> Any:
        """Store a large argument once in the object store (pass the ref to several calls)."""
        return self._ray.put(value)

    def wait(self, refs: list, timeout_s: float) -> list:
        done, _ = self._ray.wait(refs, num_returns=1, timeout=timeout_s)
        if done:  # collect everything else that is already finished too
            more, _ = self._ray.wait([r for r in refs if r not in done], num_returns=len(refs) - len(done),
                                     timeout=0)
            done = done + more
        return done

    def result(self, ref) -> Any:
        """The task's result; application errors re-raise as themselves, lost workers as WorkerLostError."""
        from ray import exceptions as rex

        try:
            return self._ray.get(ref)
        except rex.RayTaskError as e:
            cause = e.as_instanceof_cause()
            raise cause from None
        except (rex.WorkerCrashedError, rex.NodeDiedError, rex.OwnerDiedError, rex.ObjectLostError,
                rex.TaskUnschedulableError) as e:
            raise WorkerLostError(f"{type(e).__name__}: {str(e).splitlines()[0]}") from None

    def cancel(self, refs: list) -> None:
        for r in refs:
            try:
                self._ray.cancel(r, force=True)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass

    def shutdown(self) -> None:
        if self._owns_instance and self._ray.is_initialized():
            self._ray.shutdown()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
