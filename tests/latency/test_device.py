"""Tests for latency.device: fingerprint and the cross-process device lock."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import time

import onnxruntime
import pytest

from latency.device import (
    DeviceFingerprint,
    DeviceLockTimeout,
    cpu_info,
    device_fingerprint,
    device_lock,
    lock_dir,
    lock_path,
)

HOLD_S = 0.5


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------ fingerprint


def test_fingerprint_fields_are_filled():
    fp = device_fingerprint()
    assert fp.cpu_model and fp.cpu_model != "unknown"
    assert fp.cpu_id
    assert fp.logical_cores >= 1
    assert fp.ort_version == onnxruntime.__version__
    assert fp.provider == "CPUExecutionProvider"
    assert fp.backend == "ort-cpu"
    assert fp.intra_op_threads == 1 and fp.inter_op_threads == 1
    assert fp.graph_optimization == "all" and fp.precision == "fp32"
    assert list(fp.cpu_flags) == sorted(fp.cpu_flags)
    if fp.machine == "x86_64":
        assert "avx" in fp.cpu_flags or "sse4_2" in fp.cpu_flags


def test_fingerprint_key_is_stable_and_sensitive():
    a, b = device_fingerprint(), device_fingerprint()
    assert a == b and a.key == b.key and len(a.key) == 16
    int8 = device_fingerprint(precision="int8")
    two_threads = device_fingerprint(intra_op_threads=2)
    extended = device_fingerprint(graph_optimization="extended")
    assert len({a.key, int8.key, two_threads.key, extended.key}) == 4
    # Same hardware: one lock for every runtime setting.
    assert a.hardware_key == int8.hardware_key == two_threads.hardware_key
    assert lock_path(a) == lock_path(int8) == lock_path(None)


def test_fingerprint_key_is_stable_across_processes():
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        other = pool.apply(_child_key)
    assert other == device_fingerprint().key


def _child_key() -> str:
    return device_fingerprint().key


def test_fingerprint_round_trips_json():
    fp = device_fingerprint(precision="int8")
    again = DeviceFingerprint.from_dict(json.loads(json.dumps(fp.to_dict())))
    assert again == fp and again.key == fp.key
    with pytest.raises(ValueError, match="unknown"):
        DeviceFingerprint.from_dict({**fp.to_dict(), "gpu": "none"})
    broken = fp.to_dict()
    del broken["cpu_model"]
    with pytest.raises(ValueError, match="missing"):
        DeviceFingerprint.from_dict(broken)


def test_cpu_info_is_cached():
    assert cpu_info() is cpu_info()


# ------------------------------------------------------------------------------ lock


def _hold_lock(name, cache_dir, barrier, results, hold_s=HOLD_S):
    import os

    os.environ["HWNAS_CACHE_DIR"] = cache_dir
    barrier.wait(timeout=30)  # both processes ask for the lock at the same moment
    with device_lock(name):
        start = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
        time.sleep(hold_s)
        end = time.monotonic()
    results.put((os.getpid(), start, end))


def _intervals(names: list[str], cache_dir: str) -> list[tuple[float, float]]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(names))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_hold_lock, args=(name, cache_dir, barrier, results)) for name in names
    ]
    for proc in procs:
        proc.start()
    out = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return sorted((start, end) for _, start, end in out)


def test_lock_excludes_other_processes(tmp_path):
    (s1, e1), (s2, e2) = _intervals(["dev", "dev"], str(tmp_path / "cache"))
    assert e1 <= s2, f"intervals overlap: [{s1}, {e1}] and [{s2}, {e2}]"


def test_different_locks_do_overlap(tmp_path):
    """Control for the test above: without a shared lock the two holders run concurrently."""
    (s1, e1), (s2, e2) = _intervals(["dev-a", "dev-b"], str(tmp_path / "cache"))
    assert s2 < e1


def test_lock_times_out_while_another_process_holds_it(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    proc = ctx.Process(
        target=_hold_lock, args=("dev", str(tmp_path / "cache"), barrier, results, 1.5)
    )
    proc.start()
    try:
        barrier.wait(timeout=30)
        path = lock_path("dev")
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:  # wait until it is taken
            time.sleep(0.01)
        time.sleep(0.2)
        with pytest.raises(DeviceLockTimeout, match="pid"):
            with device_lock("dev", timeout_s=0.2):
                pass
    finally:
        proc.join(timeout=30)
    with device_lock("dev", timeout_s=5):  # released when the holder exits the block
        pass


def test_lock_is_reentrant_in_one_thread_and_exclusive_between_threads():
    inner_ran = []
    with device_lock("dev") as path:
        with device_lock("dev"):
            inner_ran.append(True)
        errors = []

        def other_thread():
            try:
                with device_lock("dev", timeout_s=0.1):
                    errors.append("acquired")
            except DeviceLockTimeout:
                errors.append("timeout")

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert inner_ran == [True]
    assert errors == ["timeout"]
    assert path.parent == lock_dir()
    assert path.is_relative_to(lock_dir().parent)


def test_lock_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "elsewhere"))
    with device_lock(device_fingerprint()) as path:
        assert path.is_file()
        assert path.parent == tmp_path / "elsewhere" / "locks"


@pytest.mark.parametrize("bad", ["", "   ", 42])
def test_lock_rejects_bad_names(bad):
    with pytest.raises(ValueError):
        with device_lock(bad):
            pass


def test_lock_names_are_sanitised():
    assert lock_path("../../etc/passwd").parent == lock_dir()


def _try_lock_in_child(cache_dir, results):
    import os

    os.environ["HWNAS_CACHE_DIR"] = cache_dir
    try:
        with device_lock("dev", timeout_s=0.2):
            results.put("acquired")
    except DeviceLockTimeout:
        results.put("timeout")


def test_forked_child_does_not_inherit_the_parents_lock(tmp_path):
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    with device_lock("dev"):
        child = ctx.Process(target=_try_lock_in_child, args=(str(tmp_path / "cache"), results))
        child.start()
        child.join(timeout=30)
        assert results.get(timeout=10) == "timeout"
    child = ctx.Process(target=_try_lock_in_child, args=(str(tmp_path / "cache"), results))
    child.start()
    child.join(timeout=30)
    assert results.get(timeout=10) == "acquired"


# -- compute_slot: training steps yield to measurements ---------------------------------------------


def _hold_measurement(cache: str, seconds: float, started, done) -> None:
    os.environ["HWNAS_CACHE_DIR"] = cache
    from latency.device import device_lock

    with device_lock():
        started.set()
        time.sleep(seconds)
        done.value = time.monotonic()  # still holding the lock: whoever enters after it sees a later time


def _hold_slot(cache: str, seconds: float, started, entered) -> None:
    os.environ["HWNAS_CACHE_DIR"] = cache
    from latency.device import compute_slot

    started.set()
    with compute_slot():
        entered.value = time.monotonic()
        time.sleep(seconds)


def test_compute_slot_waits_for_a_measurement_and_a_measurement_waits_for_slots(tmp_path, monkeypatch):
    import multiprocessing as mp

    from latency.device import compute_slot, device_lock

    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path))
    ctx = mp.get_context("spawn")
    started, done = ctx.Event(), ctx.Value("d", 0.0)
    p = ctx.Process(target=_hold_measurement, args=(str(tmp_path), 0.6, started, done))
    p.start()
    assert started.wait(30)
    with compute_slot():  # must not enter while the measurement holds the device
        entered = time.monotonic()
    p.join(30)
    assert entered >= done.value > 0

    # two trainers share the device; a measurement waits until the running step is over
    started2, entered2 = ctx.Event(), ctx.Value("d", 0.0)
    q = ctx.Process(target=_hold_slot, args=(str(tmp_path), 0.6, started2, entered2))
    q.start()
    assert started2.wait(30)
    deadline = time.monotonic() + 30
    while entered2.value == 0.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    with compute_slot():  # shared: no waiting for the other trainer
        assert time.monotonic() - entered2.value < 0.5
    with device_lock():
        measured_at = time.monotonic()
    q.join(30)
    assert measured_at >= entered2.value + 0.55
