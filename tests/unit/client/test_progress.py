"""Progress lines of long work (client/progress.py): their words, when they are shown, and the
time left, on a clock the test moves by hand."""

from __future__ import annotations

import io

import pytest
from bertserve.client.progress import LOG_EVERY, TERMINAL_EVERY, Progress, duration, line, wanted


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (42.4, "42s"), (59.6, "1m00s"), (187, "3m07s"), (7500, "2h05m"), (-3, "0s")],
)
def test_durations_read_at_a_glance(seconds, text):
    assert duration(seconds) == text


def test_a_line_says_rows_rate_elapsed_and_eta():
    assert line(1024, 20000, 256.0, 74.2, 4.0) == (
        "1,024/20,000 rows (5.1%)  256 rows/s  4s elapsed  ETA 1m14s"
    )
    assert line(10, None, 5.0, None, 2.0) == "10 rows  5 rows/s  2s elapsed  ETA unknown"
    assert line(0, 100, 0.0, None, 0.0).endswith("ETA --")  # nothing done yet: no guess
    assert line(100, 100, 9.0, None, 11.0).endswith("(100.0%)  9 rows/s  11s elapsed  ETA 0s")
    assert line(0, 0, 0.0, None, 0.0).startswith("0/0 rows (100.0%)")


def test_shown_only_on_a_terminal_unless_asked():
    assert wanted(None, Terminal()) is True
    assert wanted(None, io.StringIO()) is False
    assert wanted(True, io.StringIO()) is True
    assert wanted(False, Terminal()) is False


def test_the_first_update_shows_at_once_then_rate_limited_on_a_terminal():
    clock, out = Clock(), Terminal()
    bar = Progress(1000, stream=out, clock=clock)
    clock.now += 0.25
    bar.update(32)
    assert out.getvalue() == "\r32/1,000 rows (3.2%)  128 rows/s  0s elapsed  ETA 8s   "
    for _ in range(3):  # within TERMINAL_EVERY of the last line: nothing new
        clock.now += TERMINAL_EVERY / 4
        bar.update(32)
    assert bar.shown == 1
    clock.now += TERMINAL_EVERY
    bar.update(32)
    assert bar.shown == 2 and out.getvalue().count("\r") == 2
    bar.update(0, final=True)  # the last line always, ending the line
    assert bar.shown == 3 and out.getvalue().endswith("\n")
    assert "160/1,000 rows" in out.getvalue().rsplit("\r", 1)[1]


def test_in_a_log_plain_lines_fewer_of_them():
    clock, out = Clock(), io.StringIO()
    bar = Progress(None, stream=out, clock=clock)
    clock.now += 1
    bar.update(10)
    clock.now += LOG_EVERY - 1
    bar.update(10)  # not yet
    clock.now += 1
    bar.update(10)
    assert out.getvalue().splitlines() == [
        "10 rows  10 rows/s  1s elapsed  ETA unknown",
        "30 rows  3 rows/s  11s elapsed  ETA unknown",
    ]
    assert "\r" not in out.getvalue()


def test_time_left_from_work_not_rows_where_rows_differ():
    clock = Clock()
    # 100 rows, 10,000 bytes of text: the first 50 rows were short (1,000 bytes) and took 10 s
    by_rows = Progress(100, stream=io.StringIO(), clock=clock)
    by_work = Progress(100, stream=io.StringIO(), clock=clock, total_work=10000)
    clock.now += 10
    by_rows.update(50)
    by_work.update(50, work=1000)
    assert by_rows.left(clock.now) == pytest.approx(10)
    assert by_work.left(clock.now) == pytest.approx(90)


def test_resumed_rows_count_as_done_but_not_in_the_rate():
    clock, out = Clock(), io.StringIO()
    bar = Progress(1000, done=600, stream=out, clock=clock, total_work=1000)
    bar.skip_done(0, work=600)
    clock.now += 2
    bar.update(100, work=100)
    assert out.getvalue() == "700/1,000 rows (70.0%)  50 rows/s  2s elapsed  ETA 6s\n"
