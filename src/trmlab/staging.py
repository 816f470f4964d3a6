"""Creating an output's parent directories so that a failure can take back exactly what it created.

cli.md: on any failure nothing partial is left, "not even an empty parent directory that the command
created"; a directory the user already had is never removed.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def make_parents(path: str | Path) -> Path | None:
    """Create the missing parent directories of ``path``; return the topmost one created (None: none)."""
    parent = Path(path).parent
    missing = [p for p in (parent, *parent.parents) if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def remove_created(top: Path | None) -> None:
    """Undo :func:`make_parents` (``top`` is what it returned): used on a failure before the output exists."""
    if top is not None:
        shutil.rmtree(top, ignore_errors=True)
