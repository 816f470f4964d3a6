"""Safe deserialisation of ``torch.save`` files: weights-only, with one clear error per failure mode.

trmlab never unpickles arbitrary objects and never imports code found beside a checkpoint (the released
folders ship ``trm.py`` and ``losses.py``; they are ignored).
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from trmlab.errors import CheckpointError


def safe_torch_load(path: str | Path, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, mapping failures to CheckpointError.

    A pickle that references anything but tensors and plain containers (i.e. would run code) is refused;
    a truncated or corrupt file gives one error naming the file. ``mmap`` maps large zip-format files
    instead of reading them into memory.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of non-torch files: not useful
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower() or "weights_only" in str(error).lower():
            raise CheckpointError(
                f"{path} is not a weights-only torch file (it holds objects other than tensors, or pickle "
                "instructions that could run code); refused. Only weights-only checkpoints are loaded: "
                "re-save the state dict with torch.save from a trusted environment "
                f"({_refused_global(error)})") from None
        raise CheckpointError(f"{path} is corrupt or not a torch checkpoint ({_first_line(error)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError,
            AttributeError, TypeError) as error:
        raise CheckpointError(f"{path} is truncated, corrupt or not a torch checkpoint "
                              f"({type(error).__name__}: {_first_line(error)})") from None


def _refused_global(error: BaseException) -> str:
    """The global the weights-only unpickler refused (torch's own advice, weights_only=False, is unsafe)."""
    match = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
    return f"unpickler: {match.group(1).strip()}" if match else "non-tensor object"


def _first_line(error: BaseException) -> str:
    """The first sentence of an exception's message (torch's run on for lines)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    end = line.find(". ", 40)
    return (line[: end + 1] if end > 0 else line)[:200]
