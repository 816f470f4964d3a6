"""User-facing errors. The CLI prints them as one clear message, without a traceback.

Every message names the file, key, task or tensor at fault and says what to do.
"""

import contextlib
import errno
from collections.abc import Iterator


class TrmlabError(Exception):
    """Base class of every error trmlab raises for bad input.

    ``exit_code`` is what the command line exits with (``../shared/style/cli.md``): 2 for bad usage or bad
    input; subclasses for a failing environment use 3.
    """

    exit_code = 2


class ConfigError(TrmlabError, ValueError):
    """A config key, value or source is invalid."""


class DataError(TrmlabError, ValueError):
    """Input data (ARC JSON, a built dataset) is invalid."""


class CheckpointError(TrmlabError, ValueError):
    """A checkpoint is unreadable, corrupt, unsafe or does not match the requested model."""


class OutputError(TrmlabError):
    """Writing an output failed: a read-only or full disk, or a file where a directory belongs.

    Exit code 3: the environment failed, not the user's input.
    """

    exit_code = 3


class DeviceError(TrmlabError):
    """The device asked for is not there (``device=cuda`` on a machine without CUDA): exit code 3."""

    exit_code = 3


class RunBusyError(TrmlabError):
    """Another live process writes the run directory (its lock names it): exit code 3."""

    exit_code = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop: unwinds like Ctrl-C (so every cleanup handler runs), exit 143."""

    signum = 15


_WRITE_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EACCES: "choose a directory you can write to",
    errno.EPERM: "choose a directory you can write to",
    errno.EROFS: "choose a directory on a writable file system",
    errno.ENOTDIR: "a part of the path is a file, not a directory; choose another path",
    errno.EEXIST: "a file is in the way; choose another path",
}


def not_utf8(path: object, error: UnicodeDecodeError) -> str:
    """The message for a text file that is not UTF-8 (JSON and YAML inputs must be)."""
    return (f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
            f"save the file as UTF-8")


def write_failure(target: str, error: OSError, *, cleaned: bool = True) -> OutputError:
    """The one-line error for an OSError raised while writing ``target`` (a file or directory, as named
    to the user, e.g. ``--output-dir data/x``): the cause, the file it happened on, what to do, and
    whether partial output was removed."""
    cause = error.strerror or str(error) or type(error).__name__
    where = f" ({error.filename})" if error.filename and str(error.filename) not in target else ""
    hint = _WRITE_HINTS.get(error.errno or -1, "check the path and try again")
    cleanup = "; partial output was removed" if cleaned else ""
    return OutputError(f"{target}: cannot write: {cause}{where}; {hint}{cleanup}")


def as_write_os_error(error: BaseException, path: object) -> OSError | None:
    """The OSError behind a writer library's own exception, or None when ``error`` is not about the disk.

    safetensors reports a full disk as ``SafetensorError('... I/O error: No space left on device (os error
    28)')`` and ``torch.save`` as a bare ``RuntimeError`` from its zip writer; both are made an OSError (with
    the errno, and ``path``) so that the command names the cause and exits 3. A library error without an
    errno counts as a full disk only when the file system of ``path`` has no free space left.
    """
    import os
    import re
    import shutil

    if isinstance(error, OSError):
        return error
    if isinstance(error, TrmlabError) or not isinstance(error, Exception):
        return None
    found = re.search(r"os error (\d+)", str(error))
    if found:
        number = int(found.group(1))
        return OSError(number, os.strerror(number), str(path))
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(str(path))) or ".").free
    except OSError:
        return None
    if free < 1 << 20:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


@contextlib.contextmanager
def write_errors_as_os_error(path: object) -> Iterator[None]:
    """Re-raise a writer library's disk failure inside the block as the OSError :func:`as_write_os_error`
    finds behind it (chained); any other exception passes unchanged."""
    try:
        yield
    except Exception as error:
        cause = as_write_os_error(error, path)
        if cause is None or cause is error:
            raise
        raise cause from error
