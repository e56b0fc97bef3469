"""Progress of long work on stderr: rows done, rows/s and the time left, from the first batch.

One line, redrawn in place on a terminal (at most every half second); plain lines, fewer of
them, when asked for while stderr is a file or a pipe (a log stays readable). The time left is
from the share of the work done: rows, or a measure of their size (bytes of text) where the
rows are not alike, since a length-sorted run does its short texts first.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

TERMINAL_EVERY = 0.5  # seconds between redraws on a terminal
LOG_EVERY = 10.0  # seconds between lines in a log


def wanted(flag: bool | None, stream: IO[str] | None = None) -> bool:
    """Whether to show progress: as asked (``--progress``/``--no-progress``), or by default
    only when ``stream`` (stderr) is a terminal."""
    if flag is not None:
        return flag
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``: what a person reads at a glance."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def line(
    done: int,
    total: int | None,
    rate: float,
    left: float | None,
    elapsed: float,
    *,
    unit: str = "rows",
) -> str:
    """One progress line: ``1,024/20,000 rows (5.1%)  256 rows/s  4s elapsed  ETA 1m14s``.
    ``total`` None: the count is unknown, and so is the ETA; ``left`` None: not yet known."""
    if total is None:
        count, eta = f"{done:,} {unit}", "unknown"
    else:
        share = 100 * done / total if total else 100.0
        count = f"{done:,}/{total:,} {unit} ({share:.1f}%)"
        eta = "0s" if done >= total else ("--" if left is None else duration(left))
    return f"{count}  {rate:,.0f} {unit}/s  {duration(elapsed)} elapsed  ETA {eta}"


class Progress:
    """Counts work and shows :func:`line` on ``stream``: the first update at once, then at
    most one every ``TERMINAL_EVERY`` (terminal) or ``LOG_EVERY`` seconds, and the last.

    ``total_work``/``work``: a size of the work (bytes of text, say) that the time left is
    reckoned from instead of rows; ``done``/``done_work``: what an earlier run finished
    (not counted in the rate)."""

    def __init__(
        self,
        total: int | None,
        done: int = 0,
        stream: IO[str] | None = None,
        *,
        total_work: float | None = None,
        done_work: float = 0.0,
        unit: str = "rows",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.done, self.start_done = total, done, done
        self.total_work, self.work, self.start_work = total_work, done_work, done_work
        self.stream = stream or sys.stderr
        self.unit = unit
        self.clock = clock
        self.terminal = wanted(None, self.stream)
        self.every = TERMINAL_EVERY if self.terminal else LOG_EVERY
        self.started = clock()
        self.last: float | None = None  # when a line was last shown
        self.shown = 0  # lines shown

    def skip_done(self, rows: int, work: float = 0.0) -> None:
        """Rows an earlier run finished, found after the start (not counted in the rate)."""
        self.done += rows
        self.start_done += rows
        self.work += work
        self.start_work += work

    def left(self, now: float) -> float | None:
        """Seconds still to go at this run's pace so far; None before anything was done."""
        elapsed = now - self.started
        if self.total_work:
            this_run, to_go = self.work - self.start_work, self.total_work - self.work
        elif self.total is not None:
            this_run, to_go = self.done - self.start_done, self.total - self.done
        else:
            return None
        if this_run <= 0 or elapsed <= 0:
            return None
        return max(0.0, to_go) * elapsed / this_run

    def render(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self.started
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        return line(self.done, self.total, rate, self.left(now), elapsed, unit=self.unit)

    def update(self, rows: int, work: float = 0.0, *, final: bool = False) -> None:
        """Count ``rows`` (and ``work``) more; show the line if it is time (always: the first
        update and the final one)."""
        self.done += rows
        self.work += work
        now = self.clock()
        if not final and self.last is not None and now - self.last < self.every:
            return
        self.last = now
        self.shown += 1
        text = self.render(now)
        if self.terminal:
            self.stream.write("\r" + text + "   " + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
