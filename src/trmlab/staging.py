"""Creating an output's parent directories so that a failure can take back exactly what it created.

cli.md: on any failure nothing partial is left, "not even an empty parent directory that the command
created"; a directory the user already had is never removed. :func:`process_alive` tells what a dead
process left behind (a data build's staging directory, a run directory's lock) from a live one's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def make_parents(path: str | Path) -> Path | None:
    """Create the missing parent directories of ``path``; return the topmost one created (None: none)."""
    parent = Path(path).parent
    missing = [p for p in (parent, *parent.parents) if not p.exists()]
    top = missing[-1] if missing else None
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        remove_created(top)  # failed part way (a read-only level): the levels made before it go too
        raise
    return top


def remove_created(top: Path | None) -> None:
    """Undo :func:`make_parents` (``top`` is what it returned): used on a failure before the output exists."""
    if top is not None:
        shutil.rmtree(top, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
