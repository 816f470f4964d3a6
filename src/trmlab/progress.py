"""Progress of long work on stderr, as ``../shared/style/cli.md`` ("Progress and logs") asks.

One helper for every command (training, evaluation, adapt, the data builders and generators): a tqdm bar when
the stream is a terminal, otherwise one plain line at least every :data:`LINE_INTERVAL_S` seconds saying what
runs, how far it is, its rate and the time left. A redirected log therefore never holds carriage-return bar
updates. ``--no-progress`` (the CLI calls :func:`configure`) keeps the plain lines even on a terminal;
``--quiet`` (data commands) and ranks other than 0 show nothing.

No torch import here: the data commands use it without loading torch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

LINE_INTERVAL_S = 10.0  # a plain line at least this often (cli.md: "at least every ~10 s")

Item = TypeVar("Item")


@dataclass
class _Settings:
    bars: bool = True     # False: --no-progress (plain lines even on a terminal)
    enabled: bool = True  # False: --quiet (nothing at all)


_settings = _Settings()


def configure(*, bars: bool = True, enabled: bool = True) -> None:
    """Set this process's progress mode (the CLI calls it once per command from its flags)."""
    _settings.bars, _settings.enabled = bars, enabled


def uses_bar(stream: TextIO | None = None, allowed: bool = True) -> bool:
    """True when progress on ``stream`` (default stderr) is a bar: a terminal, and bars not turned off."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return allowed and _settings.bars and _settings.enabled and bool(isatty and isatty())


NO_PROGRESS_HELP = "no progress bar, even on a terminal: plain progress lines every ~10 s instead"


def add_no_progress_flag(parser: Any) -> None:
    """Add ``--no-progress`` to a command's parser (trmlab.cli reads it and calls :func:`configure`)."""
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03`` (what a log reader scans fastest)."""
    whole = round(max(seconds, 0.0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(per_second: float, unit: str) -> str:
    """``12.3 steps/s``, or ``4.2 s/step`` when slower than one per second (no ``0.0238 steps/s``)."""
    if per_second <= 0:
        return f"- {unit}/s"
    if per_second >= 1:
        return f"{per_second:,.3g} {unit}/s" if per_second < 1000 else f"{per_second:,.0f} {unit}/s"
    return f"{1 / per_second:.3g} s/{_singular(unit)}"


def _singular(unit: str) -> str:
    if unit.endswith(("ches", "shes", "sses", "xes")):
        return unit[:-2]
    return unit[:-1] if unit.endswith("s") and len(unit) > 1 else unit


class Progress:
    """Progress of one piece of work counted in ``unit`` (``total`` of them when known).

    Call :meth:`update` as units finish, :meth:`set_status` for a short trailing note (e.g. the last loss)
    and :meth:`close` at the end (or use it as a context manager). On a terminal it is a tqdm bar; elsewhere
    (or after ``--no-progress``) a line such as
    ``train: 120/1,000 steps (12%), 3.2 steps/s (12.8 samples/s), 0:37 elapsed, 4:35 left; lm_loss 1.2``
    every ``interval`` seconds (default :data:`LINE_INTERVAL_S`), and a last line on close if any line was
    printed. ``per_unit=(k, name)`` adds a second rate (k ``name`` per unit). ``enabled=False`` (rank ≠ 0)
    shows nothing; ``bars=False`` forbids the bar for this one. ``clock`` is for tests.
    """

    def __init__(self, what: str, total: int | None = None, *, unit: str = "it", initial: int = 0,
                 per_unit: tuple[float, str] | None = None, enabled: bool = True, bars: bool = True,
                 stream: TextIO | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.unit, self.per_unit = what, total, unit, per_unit
        self.done = self.initial = initial
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled and _settings.enabled
        self.interval = LINE_INTERVAL_S if interval is None else interval  # tests shorten the module's
        self.clock = clock
        self.started = self.last_line = clock()
        self.status = ""
        self.lines = 0
        self.closed = False
        self.bar = self._open_bar() if self.enabled and uses_bar(self.stream, bars) else None

    def _open_bar(self) -> Any:
        from tqdm import tqdm

        return tqdm(total=self.total, initial=self.initial, desc=self.what, unit=self.unit, file=self.stream,
                    dynamic_ncols=True, leave=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(finished=exc_info[0] is None)

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and self.clock() - self.last_line >= self.interval:
            self._line()

    def write(self, message: str) -> None:
        """Print a log line without breaking the bar (on a terminal tqdm redraws the bar below it)."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def set_status(self, text: str) -> None:
        """A short note shown after the counts (bar postfix or the end of each line)."""
        self.status = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def close(self, finished: bool = True) -> None:
        """End the bar; in line mode, a last line when lines were printed (so a log shows where it ended)."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.lines and finished:
            self._line(final=True)

    # -- the plain line -------------------------------------------------------------------------------------

    def _line(self, final: bool = False) -> None:
        print(self.describe(final=final), file=self.stream, flush=True)
        self.lines += 1
        self.last_line = self.clock()

    def describe(self, final: bool = False) -> str:
        """The plain progress line for the work as it stands now."""
        elapsed = self.clock() - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        count = f"{self.done:,}/{self.total:,} {self.unit}" if self.total else f"{self.done:,} {self.unit}"
        if self.total and not final:
            count += f" ({100 * self.done / self.total:.0f}%)"
        parts = [count, format_rate(rate, self.unit)]
        if self.per_unit is not None:
            parts[-1] += f" ({format_rate(rate * self.per_unit[0], self.per_unit[1])})"
        if final:
            parts.append(f"done in {format_duration(elapsed)}")
        else:
            parts.append(f"{format_duration(elapsed)} elapsed")
            if self.total and rate > 0:
                parts.append(f"{format_duration((self.total - self.done) / rate)} left")
        status = f"; {self.status}" if self.status else ""
        return f"{self.what}: {', '.join(parts)}{status}"


def track(items: Iterable[Item], what: str, total: int | None = None, **options: Any) -> Iterator[Item]:
    """Yield ``items``, counting each one on a :class:`Progress` (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(what, total, **options) as progress:
        for item in items:
            yield item
            progress.update()


__all__ = ["LINE_INTERVAL_S", "NO_PROGRESS_HELP", "Progress", "add_no_progress_flag", "configure",
           "format_duration", "format_rate", "track", "uses_bar"]
