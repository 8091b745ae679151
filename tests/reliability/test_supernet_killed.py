"""Supernet training is killed (SIGKILL) and run again: it resumes from its last checkpoint, ends with the
planned number of steps, and gives the same weights as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch

from evaluation.supernet import partial_path, read_checkpoint
from tests.reliability.conftest import NAS, needs_fmnist

pytestmark = [needs_fmnist, pytest.mark.slow]

STEPS = 12


def _args(out) -> list[str]:
    return [NAS, "supernet", "train", "--space", "mobilenetv3_small", "--steps", str(STEPS), "--batch-size", "8",
            "--resolution", "32", "--holdout", "500", "--train-subset", "1000", "--n-random", "1",
            "--checkpoint-every", "3", "--threads", "1", "--out", str(out)]


def test_sigkill_of_supernet_training_then_resume(tmp_path):
    killed = tmp_path / "killed.pt"
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen(_args(killed), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    partial = partial_path(killed)
    step_at_kill = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists():
                try:
                    step_at_kill = read_checkpoint(partial)["step"]
                except ValueError:
                    step_at_kill = None  # being replaced right now: the rename is atomic, so read again
                if step_at_kill is not None and step_at_kill >= 3:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert step_at_kill is not None and 3 <= step_at_kill < STEPS, (tmp_path / "train.log").read_text()[-2000:]
    assert not killed.exists()
    resumed = subprocess.run(_args(killed), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming supernet training from step" in resumed.stdout
    straight = tmp_path / "straight.pt"
    done = subprocess.run(_args(straight), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = read_checkpoint(killed), read_checkpoint(straight)
    assert a["meta"]["trained_steps"] == b["meta"]["trained_steps"] == STEPS and a["meta"]["complete"]
    assert not partial.exists()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
