"""Graceful stop of a training run on SIGTERM, SIGUSR1 (what schedulers send before preemption) and SIGINT.

The first signal only sets a flag: the loop finishes the optimizer step under way, writes a checkpoint and
raises :class:`TrainingInterrupted`. A second signal exits at once (exit status 128 + signal number), unless
it comes within :data:`REPEAT_WINDOW_S` of the first: under torchrun one event often arrives twice (Ctrl-C
reaches every process of the terminal's group and the agent forwards it again; Slurm signals every process of
the job step and the agent forwards that too), and such a duplicate must not cancel the checkpoint.

Under torchrun the signal can reach the ranks at different steps (or only some of them), yet every rank must
stop after the same step or the next collective hangs. So the flag is all-reduced (MAX) every step,
asynchronously: the reduction started after step k is read after step k + 1 (no host sync on the step's own
work), and every rank stops after that same step k + 1.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

REPEAT_WINDOW_S = 1.0  # a repeat sooner than this is the same event delivered twice

# SIGUSR1 does not exist on Windows.
STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGUSR1", None), signal.SIGINT)
                     if s is not None)


class TrainingInterrupted(Exception):  # noqa: N818 (it is not an error: the run stopped as asked)
    """The run stopped early on a signal after writing ``checkpoints/step_<step>``; resume it to finish."""

    def __init__(self, step: int, signum: int, run_dir: Path) -> None:
        self.step, self.signum, self.run_dir = step, signum, run_dir
        super().__init__(f"interrupted at step {step}; checkpoint step_{step} written; resume with: "
                         f"trmlab train resume={run_dir}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal."""
        return 128 + self.signum


class StopOnSignal:
    """While installed (or as a context manager), the stop signals request a stop instead of killing.

    Call :meth:`should_stop` once after every optimizer step on every rank; it returns the signal number on
    all ranks after the same step. Outside the main thread (signals cannot be caught there) it is inert.
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}
        self._pending: tuple[Any, Any] | None = None  # (flag tensor, async work) under torchrun

    def install(self) -> StopOnSignal:
        """Catch the stop signals (until :meth:`close`); returns self."""
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def close(self) -> None:
        """Finish the reduction in flight and put the previous signal handlers back."""
        if self._pending is not None:
            # Every rank started it, so it completes whatever happened since.
            self._pending[1].wait()
            self._pending = None
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopOnSignal:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # os.write, not print: the handler may run while the main thread is inside a print to stderr.
        name = signal.Signals(signum).name
        if self.signum is not None and time.monotonic() - self._first_at < REPEAT_WINDOW_S:
            return
        if self.signum is not None:
            # A second signal: whoever sent it will not wait. Checkpoint writes are atomic (temporary
            # directory, then rename), so the newest complete checkpoint stays valid.
            os.write(2, f"trmlab train: second {name}; exiting now without a checkpoint\n".encode())
            os._exit(128 + signum)
        self.signum, self._first_at = signum, time.monotonic()
        if self.ctx.is_main:
            os.write(2, f"trmlab train: got {name}; stopping after the current optimizer step with a "
                        f"checkpoint (send it again, a second or more later, to exit at once)\n".encode())

    def should_stop(self) -> int | None:
        """The signal to stop on now (after the step just finished), the same on every rank; else None.

        Collective under torchrun: every rank calls it after every optimizer step.
        """
        if not self.ctx.distributed:
            return self.signum
        import torch
        import torch.distributed as dist

        agreed = None
        if self._pending is not None:
            flag, work = self._pending
            work.wait()
            agreed = int(flag.item()) or None
        flag = torch.tensor([self.signum or 0], dtype=torch.int32, device=self.ctx.device)
        self._pending = (flag, dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True))
        return agreed


__all__ = ["STOP_SIGNALS", "StopOnSignal", "TrainingInterrupted"]
