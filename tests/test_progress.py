"""trmlab.progress: a bar on a terminal, plain time-throttled lines elsewhere (../shared/style/cli.md)."""

from __future__ import annotations

import io

import pytest

from trmlab import progress
from trmlab.progress import Progress, format_duration, format_rate, track


class FakeClock:
    """A clock the test moves by hand (no sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def default_mode():
    progress.configure()
    yield
    progress.configure()


def _run_steps(stream, clock, steps=100, seconds_per_step=0.5, **options):
    with Progress("train", steps, unit="steps", stream=stream, clock=clock, **options) as bar:
        for _ in range(steps):
            clock.now += seconds_per_step
            bar.update()
    return stream.getvalue()


def test_a_redirected_stream_gets_plain_lines_every_ten_seconds_and_no_carriage_return():
    clock = FakeClock()
    text = _run_steps(io.StringIO(), clock, per_unit=(4, "samples"))
    lines = text.splitlines()
    assert "\r" not in text
    # 100 steps of 0.5 s = 50 s: a line at 10, 20, 30, 40, 50 s, then the closing line
    assert len(lines) == 6
    assert lines[0] == ("train: 20/100 steps (20%), 2 steps/s (8 samples/s), 0:10 elapsed, 0:40 left")
    assert lines[-1] == "train: 100/100 steps, 2 steps/s (8 samples/s), done in 0:50"


def test_lines_carry_the_status_and_work_without_a_total():
    clock = FakeClock()
    stream = io.StringIO()
    with Progress("generate", unit="puzzles", stream=stream, clock=clock) as bar:
        bar.set_status("3 duplicates")
        clock.now += 12
        bar.update(30)
    assert stream.getvalue().splitlines()[0] == \
        "generate: 30 puzzles, 2.5 puzzles/s, 0:12 elapsed; 3 duplicates"


def test_short_work_prints_nothing_to_a_log():
    clock = FakeClock()
    assert _run_steps(io.StringIO(), clock, steps=10) == ""  # 5 s: under the first line's 10 s


def test_a_terminal_gets_a_bar():
    text = _run_steps(Terminal(), FakeClock(), steps=5)
    assert "\r" in text and "5/5" in text and "train" in text


def test_log_lines_go_above_the_bar_or_straight_to_the_log():
    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        with Progress("train", 4, stream=stream, clock=FakeClock()) as bar:
            bar.update()
            bar.write("eval at step 1: exact 0.5")
    assert "\reval at step 1: exact 0.5" in terminal.getvalue().replace("\x1b[A", "")  # the bar cleared first
    assert log.getvalue() == "eval at step 1: exact 0.5\n"


def test_no_progress_leaves_the_plain_lines_on_a_terminal():
    progress.configure(bars=False)
    text = _run_steps(Terminal(), FakeClock())
    assert "\r" not in text and len(text.splitlines()) == 6


def test_quiet_and_other_ranks_show_nothing():
    assert _run_steps(io.StringIO(), FakeClock(), enabled=False) == ""
    assert _run_steps(Terminal(), FakeClock(), enabled=False) == ""
    progress.configure(enabled=False)
    assert _run_steps(Terminal(), FakeClock()) == ""


def test_a_resumed_count_measures_its_rate_from_where_it_started():
    clock = FakeClock()
    stream = io.StringIO()
    with Progress("train", 1000, unit="steps", initial=900, stream=stream, clock=clock) as bar:
        clock.now += 10
        bar.update(20)
    assert stream.getvalue().splitlines()[0] == \
        "train: 920/1,000 steps (92%), 2 steps/s, 0:10 elapsed, 0:40 left"


def test_track_counts_every_item():
    clock = FakeClock()
    stream = io.StringIO()
    for _ in track(range(4), "eval", unit="batches", stream=stream, clock=clock, interval=0):
        clock.now += 1
    assert stream.getvalue().splitlines()[-1] == "eval: 4/4 batches, 1 batches/s, done in 0:04"


def test_formats():
    assert format_duration(7) == "0:07" and format_duration(754) == "12:34"
    assert format_duration(3723) == "1:02:03"
    assert format_rate(0.25, "batches") == "4 s/batch" and format_rate(12345, "rows") == "12,345 rows/s"
