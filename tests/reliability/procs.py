"""Process and socket inspection from /proc (Linux), for the fault tests: no psutil in the venv."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from pathlib import Path


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (with the pid, it names a process unambiguously)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = parent_of(int(entry))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry))
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            st = start_time(child)
            if st is not None and child not in out:
                out[child] = st
                todo.append(child)
    return out


def alive(procs: dict[int, int]) -> dict[int, int]:
    """The processes of ``procs`` ({pid: start time}) still running (zombies count as gone)."""
    out = {}
    for pid, st in procs.items():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if start_time(pid) == st and state != "Z":
            out[pid] = st
    return out


def kill_all(procs: dict[int, int]) -> None:
    """SIGKILL the processes of ``procs`` that are still the ones recorded (pid reuse is checked)."""
    for pid in alive(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(procs: dict[int, int], timeout_s: float) -> dict[int, int]:
    deadline = time.monotonic() + timeout_s
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive(procs)


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 stores the address as four little-endian 32-bit words
    return socket.inet_ntop(socket.AF_INET6, b"".join(struct.pack(">I", w) for w in struct.unpack("<4I", raw)))


def listening_sockets(pids) -> list[tuple[int, str, int, str]]:
    """(pid, address, port, protocol) of every TCP socket in LISTEN state or bound UDP socket of ``pids``."""
    by_inode = {}
    for pid in pids:
        for inode in _socket_inodes(pid):
            by_inode[inode] = pid
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], int(parts[9])
            listening = state == "0A" if proto.startswith("tcp") else True
            if listening and inode in by_inode:
                addr, port = local.split(":")
                out.append((by_inode[inode], _address(addr), int(port, 16), proto))
    return out


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1") or address.startswith("::ffff:127.")


def kill_after_line(args: list[str], env: dict, prefix: str, settle_s: float = 2.0, timeout_s: float = 900) -> None:
    """Start ``args`` in a new session, read its output until a line starts with ``prefix`` (or ``timeout_s``
    passes), wait ``settle_s`` more (so the next unit of work is running) and SIGKILL the whole group."""
    import subprocess

    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + timeout_s
    for line in proc.stdout:
        if line.startswith(prefix) or time.time() > deadline:
            break
    time.sleep(settle_s)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
