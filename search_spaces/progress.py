"""Progress lines for waits a user would otherwise sit through in silence.

The rule of every command: nothing that takes more than :data:`PROGRESS_EVERY_S` seconds runs without
a line saying what is going on — how far (done/total), how long so far, and how long to go (ETA) where
that can be known. Lines are plain text through the command's ``echo`` (a terminal, a log file, a CI
log read them alike), at most one every :data:`PROGRESS_EVERY_S` seconds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

PROGRESS_EVERY_S = 10.0
"""Longest silence while something runs: a progress line at least this often."""


def format_duration(seconds: float) -> str:
    """``0m07s``, ``3m42s``, ``1h05m``."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


class Progress:
    """A ``progress(done, total)`` callback that prints ``  WHAT: done/total UNIT, 0m12s, ETA 0m30s``.

    A line is printed when the next item, at the mean time per item so far, would end more than
    :data:`PROGRESS_EVERY_S` seconds after the last line (or the start) — so lines come at most that
    far apart while items are shorter than that — and a closing ``WHAT: total/total UNIT in 0m42s``
    when the work that printed a line finishes; work done within the interval prints nothing. The ETA
    is the mean time per item so far times the items left.

    Args:
        echo: where lines go (None: nowhere).
        what: what is being done, e.g. ``"measuring layer entries"``.
        unit: the items' name, e.g. ``"entries"``.
        every_s: the longest silence.
        clock: seconds (monotonic); a parameter for tests.
    """

    def __init__(self, echo: Callable[[str], None] | None, what: str, unit: str = "", *,
                 every_s: float = PROGRESS_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.echo, self.what, self.unit, self.every_s, self.clock = echo, what, unit, every_s, clock
        self.t0 = self.last = clock()
        self.printed = 0

    def line(self, done: int, total: int) -> str:
        elapsed = self.clock() - self.t0
        unit = f" {self.unit}" if self.unit else ""
        if done >= total:
            return f"  {self.what}: {done}/{total}{unit} in {format_duration(elapsed)}"
        eta = f", ETA {format_duration(elapsed / done * (total - done))}" if done else ""
        return f"  {self.what}: {done}/{total}{unit}, {format_duration(elapsed)}{eta}"

    def __call__(self, done: int, total: int) -> None:
        if self.echo is None:
            return
        now = self.clock()
        if done >= total:
            if self.printed:
                self.echo(self.line(done, total))
            return
        per_item = (now - self.t0) / done if done else 0.0
        if now - self.last + per_item >= self.every_s:
            self.echo(self.line(done, total))
            self.last = now
            self.printed += 1


@contextlib.contextmanager
def heartbeat(echo: Callable[[str], None] | None, what: str, every_s: float = PROGRESS_EVERY_S) -> Iterator[None]:
    """``  WHAT (0m10s so far)`` every ``every_s`` seconds while the block runs, from a thread: for a wait
    that reports nothing of its own (Ray's start, a blocking call). Nothing if the block ends sooner."""
    if echo is None:
        yield
        return
    stop, t0 = threading.Event(), time.monotonic()

    def beat() -> None:
        while not stop.wait(every_s):
            echo(f"  {what} ({format_duration(time.monotonic() - t0)} so far)")

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
