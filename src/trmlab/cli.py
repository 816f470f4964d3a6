"""The ``trmlab`` command: a thin dispatcher over the pipeline's subcommand modules.

Each module in :data:`SUBCOMMAND_MODULES` exposes ``register(subparsers)``, which adds its parser(s) and sets
``func`` (called with the parsed namespace, returning an exit code). Modules keep heavy imports (torch) inside
their functions so ``trmlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import signal
import sys
import threading
from typing import Any

from trmlab import __version__
from trmlab.errors import Terminated, TrmlabError
from trmlab.grammar import Parser, UsageError

# Order = the pipeline: config → data → models/checkpoints → training → evaluation → reports.
SUBCOMMAND_MODULES = (
    "trmlab.config.cli",       # config show | diff
    "trmlab.data.cli",         # data build-arc | build-synthetic | inspect
    "trmlab.interop.cli",      # checkpoint inspect | convert
    "trmlab.training.cli",     # train, adapt, demo
    "trmlab.evaluation.cli",   # eval, score
    "trmlab.reports.cli",      # report
)

# The module registering each command: `trmlab <command> ...` imports only that one (so the data commands
# never load the config machinery); `trmlab --help` and names not listed import them all.
# tests/test_cli.py checks this table against what the modules register.
COMMAND_MODULES = {
    "config": "trmlab.config.cli", "data": "trmlab.data.cli", "checkpoint": "trmlab.interop.cli",
    "train": "trmlab.training.cli", "adapt": "trmlab.training.cli", "demo": "trmlab.training.cli",
    "eval": "trmlab.evaluation.cli", "score": "trmlab.evaluation.cli", "report": "trmlab.reports.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``trmlab`` parser; with a known ``command``, only the module registering it is imported."""
    parser = Parser(
        prog="trmlab",
        description="Train, evaluate and transfer Tiny Recursive Models (TRM, ETRM, ETRMTRM) on ARC-AGI.",
        epilog="Run `trmlab <command> --help` for each command. `python -m trmlab` works the same "
        "(use it under torchrun).",
    )
    parser.add_argument("--version", action="version", version=f"trmlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    modules = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else SUBCOMMAND_MODULES
    for module_name in modules:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``trmlab`` command; every failure ends as one line on stderr and a non-zero exit code.

    Exit codes (``../shared/style/cli.md``): 2 bad usage or input (a :class:`TrmlabError`), 3 the
    environment failed (an :class:`~trmlab.errors.OutputError` or another operating-system error, named with
    its path), 130 interrupted (Ctrl-C outside the training loop, which handles its own signals), 141 stdout
    closed by its reader (``trmlab ... | head``: quiet, like any Unix tool killed by SIGPIPE), 4 a bug: the
    traceback goes to a file that the one-line message names.
    """
    previous = _terminate_like_interrupt()
    try:
        try:
            return _dispatch(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows up here when the output fitted in the buffer
    except TrmlabError as error:
        return _fail(str(error), error.exit_code)
    except Terminated:
        return _fail("terminated (SIGTERM); partial output was removed", 128 + Terminated.signum)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        _discard_stdout()
        return 141
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        return _fail(f"{where}{error.strerror or error}", 3)
    except Exception:
        return _fail(f"internal error (a bug in trmlab); traceback written to {_save_traceback()}; "
                     "please report it with that file", 4)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_like_interrupt() -> Any:
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) so that every command cleans up on it as on
    Ctrl-C; the training loop installs its own handler while it trains. Returns the handler replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(_signum: int, _frame: Any) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)


def _save_traceback() -> str:
    import tempfile
    import time
    import traceback

    text = traceback.format_exc()
    try:
        handle, path = tempfile.mkstemp(prefix=f"trmlab-crash-{time.strftime('%Y%m%d-%H%M%S')}-",
                                        suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        return path
    except OSError:
        sys.stderr.write(text)  # no writable temporary directory: the traceback itself is all we can give
        return "stderr above"


def _dispatch(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        raise UsageError(f"a command is needed ({', '.join(COMMAND_MODULES)}); run `trmlab --help`")
    from trmlab import progress

    # One progress mode per command (cli.md "Progress and logs"): --no-progress keeps only plain lines,
    # --quiet (data commands) shows none. Set on every call: tests run many commands in one process.
    progress.configure(bars=not getattr(args, "no_progress", False),
                       enabled=not getattr(args, "quiet", False))
    return int(args.func(args) or 0)


def _fail(message: str, code: int) -> int:
    # One line (cli.md), also for messages that list several problems on lines of their own.
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    one_line = lines[0] if lines else ""
    for line in lines[1:]:
        one_line += (" " if one_line.endswith(":") else "; ") + line
    print(f"trmlab: error: {one_line}", file=sys.stderr)
    return code


def _discard_stdout() -> None:
    # Python flushes stdout again at exit; pointing it at /dev/null keeps that flush from failing loudly.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is not a real file (a test's capture): nothing will flush it at exit


if __name__ == "__main__":
    sys.exit(main())
