"""Checkpoints load weights-only (a malicious pickle does not run), the local Ray instance
listens on loopback only with its dashboard off, and sizes read from files are bounded before anything
is allocated."""

from __future__ import annotations

import os
import pickle
import resource
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluation.data import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC
from tests.reliability import procs
from tests.reliability.conftest import NAS, one_line_error_problems


class _Payload:
    """Unpickling this runs ``open(marker, "w")`` — what a hostile checkpoint would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_files(folder: Path, marker: Path) -> dict[str, Path]:
    state = {"layers.0.weight": torch.zeros(2), "evil": _Payload(marker)}
    files = {"zip": folder / "zip.pt", "legacy": folder / "legacy.pt", "raw-pickle": folder / "raw.pt"}
    torch.save(state, files["zip"])
    torch.save(state, files["legacy"], _use_new_zipfile_serialization=False)
    files["raw-pickle"].write_bytes(pickle.dumps(_Payload(marker)))
    return files


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_checkpoint_does_not_run_when_loaded(tmp_path):
    """Through the project's checkpoint loader (``evaluation.evaluate.load_weights``, used for found.pt)."""
    from evaluation.evaluate import WeightsError, load_weights

    marker = tmp_path / "pwned"
    files = _malicious_files(tmp_path, marker)
    # the payload is live: an unrestricted load runs it (in a child process)
    code = f"import torch; torch.load({str(files['zip'])!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, cwd=Path(__file__).parents[2])
    assert marker.exists(), "control: an unrestricted torch.load should have run the payload"
    marker.unlink()
    for kind, path in files.items():
        for source in (path, path.read_bytes()):
            with pytest.raises(WeightsError, match="not a weights-only PyTorch checkpoint"):
                load_weights(source)
            assert not marker.exists(), f"{kind}: loading ran the pickled code"


def test_an_oversized_checkpoint_is_refused_before_it_is_read(tmp_path):
    from evaluation.evaluate import MAX_CHECKPOINT_BYTES, WeightsError, load_weights

    path = tmp_path / "huge.pt"
    with open(path, "wb") as f:
        f.truncate(MAX_CHECKPOINT_BYTES + 1)  # sparse: no disk space used
    resource_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(WeightsError, match="at most"):
        load_weights(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - resource_before < 100_000  # KB: nothing read


def test_local_ray_listens_on_loopback_only_and_has_no_dashboard(no_leftover_processes):
    import ray

    from evaluation.execution import RayPool

    pool = RayPool(num_cpus=2)
    try:
        assert ray.get([pool.call(os.path.join, "a", "b") for _ in range(2)]) == ["a/b"] * 2  # workers up
        node = ray._private.worker.global_worker.node
        assert node.node_ip_address == "127.0.0.1"
        assert not node.address_info.get("webui_url"), "the dashboard is on"
        assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") is None, "the switch leaked out of RayPool"
        ours = set(procs.descendants(os.getpid())) | {os.getpid()}
        sockets = procs.listening_sockets(ours)
        assert sockets, "found no listening socket of the Ray processes: the check would prove nothing"
        exposed = [(procs.cmdline(pid)[:40], addr, port) for pid, addr, port, _ in sockets
                   if not procs.is_loopback(addr)]
        assert not exposed, f"listening beyond loopback: {exposed}"
        assert all(port != 8265 for _, _, port, _ in sockets), "the dashboard port is open"
    finally:
        pool.shutdown()


def _idx(magic: int, dims: list[int], payload: bytes = b"") -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def _limited(gigabytes: float):
    limit = int(gigabytes * 1024**3)
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("items,hint", [(5_000_000, "truncated: header says [5000000, 28, 28] = 3920000000 bytes"),
                                        (4_000_000_000, "more than the 10000000 allowed")])
def test_idx_header_sizes_are_bounded_before_allocation(tmp_path, items, hint):
    """A header claiming gigabytes fails at once in a `nas search` limited to 1.5 GB of address space."""
    for name, content in {"train-images-idx3-ubyte": _idx(IDX_IMAGES_MAGIC, [items, 28, 28], bytes(2000)),
                          "train-labels-idx1-ubyte": _idx(IDX_LABELS_MAGIC, [items], bytes(100)),
                          "t10k-images-idx3-ubyte": _idx(IDX_IMAGES_MAGIC, [1, 28, 28], bytes(784)),
                          "t10k-labels-idx1-ubyte": _idx(IDX_LABELS_MAGIC, [1], bytes(1))}.items():
        (tmp_path / name).write_bytes(content)
    proc = subprocess.run([NAS, "search", "--run-dir", str(tmp_path / "run"), "--target-ms", "5", "--data-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, preexec_fn=_limited(1.5))
    assert not one_line_error_problems(proc, hint), proc.stderr


@pytest.mark.parametrize("source", ["/dev/zero", "/dev/urandom"])
def test_spec_file_reads_are_bounded(source):
    """A spec 'file' that never ends (st_size 0) is cut at the size limit, in 1 GB of address space."""
    proc = subprocess.run([NAS, "arch", "show", source], capture_output=True, text=True, timeout=120,
                          preexec_fn=_limited(1.0))
    assert not one_line_error_problems(proc, source, "a spec is at most"), proc.stderr
