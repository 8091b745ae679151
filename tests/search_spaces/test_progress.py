"""Progress lines: at most one per interval, done/total with elapsed time and ETA, a closing line only
after work that printed something."""

from __future__ import annotations

import time

from search_spaces.progress import Progress, format_duration, heartbeat


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_format_duration():
    assert [format_duration(s) for s in (0, 7.4, 222, 3900)] == ["0m00s", "0m07s", "3m42s", "1h05m"]


def test_a_line_before_the_interval_would_pass_with_eta_then_a_closing_line():
    lines, clock = [], Clock()
    progress = Progress(lines.append, "layer entries measured", "entries", every_s=10, clock=clock)
    for done in range(1, 41):  # 40 entries, 1 s each: the 10th would end 10 s after the start
        clock.t += 1
        progress(done, 40)
    assert lines == ["  layer entries measured: 9/40 entries, 0m09s, ETA 0m31s",
                     "  layer entries measured: 18/40 entries, 0m18s, ETA 0m22s",
                     "  layer entries measured: 27/40 entries, 0m27s, ETA 0m13s",
                     "  layer entries measured: 36/40 entries, 0m36s, ETA 0m04s",
                     "  layer entries measured: 40/40 entries in 0m40s"]


def test_quick_work_prints_nothing_and_no_echo_is_fine():
    lines, clock = [], Clock()
    progress = Progress(lines.append, "x", every_s=10, clock=clock)
    for done in range(1, 6):
        clock.t += 1
        progress(done, 5)
    assert lines == []
    Progress(None, "x")(1, 2)  # no echo: nothing to do


def test_heartbeat_speaks_while_a_silent_call_blocks_and_stops_with_it():
    lines: list[str] = []
    with heartbeat(lines.append, "starting Ray", every_s=0.05):
        time.sleep(0.23)
    n = len(lines)
    time.sleep(0.12)
    assert n >= 3 and len(lines) == n and lines[0] == "  starting Ray (0m00s so far)"
    with heartbeat(None, "nothing"):
        pass
