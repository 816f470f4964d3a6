"""The trmlab checkpoint bundle: a directory written atomically, with a manifest of checksums written last.

Layout (docs/design.md, "Checkpoints"): ``model.safetensors``, ``ema.safetensors``,
``puzzle_embedding.safetensors``, ``config.yaml``, ``train_state.pt``, ``manifest.json``. The directory is
written into a temporary sibling and renamed into place, and ``manifest.json`` is the last file written, so a
directory with a manifest is complete; :func:`read_checkpoint` verifies every file's sha256 against it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trmlab.errors import CheckpointError, write_errors_as_os_error
from trmlab.staging import make_parents, remove_created

FORMAT = "trmlab-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE, EMA_FILE, TABLE_FILE = "model.safetensors", "ema.safetensors", "puzzle_embedding.safetensors"
CONFIG_FILE, TRAIN_STATE_FILE = "config.yaml", "train_state.pt"
TABLE_KEY = "puzzle_embedding.weights"

Part = bytes | Mapping[str, torch.Tensor] | Any


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git_commit() -> str | None:
    """The commit of the trmlab source tree, when it is a git checkout (best effort, never fails)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _write_part(path: Path, name: str, part: Part) -> dict[str, Any] | None:
    """Write one file (streamed: tables can be gigabytes) and return, for tensor files, key → shape/dtype."""
    table = None
    if isinstance(part, bytes):
        path.write_bytes(part)
    elif name.endswith(".safetensors"):
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in part.items()}
        table = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                 for k, v in tensors.items()}
        save_file(tensors, str(path))
    elif name.endswith(".pt"):
        torch.save(part, path)
    elif name.endswith(".json"):
        path.write_text(json.dumps(part, indent=2, sort_keys=True))
    elif name.endswith((".yaml", ".yml")):
        # The config's own dumper: it quotes strings YAML would read back as another type ("1e5", "true").
        from trmlab.config.yamlio import dump_yaml

        path.write_text(dump_yaml(part))
    else:
        raise CheckpointError(f"checkpoint part {name!r}: give bytes, or a .safetensors/.pt/.json/.yaml name")
    _fsync(path)
    return table


def _write_part_or_os_error(path: Path, name: str, part: Part) -> dict[str, Any] | None:
    """:func:`_write_part`, with a writer library's disk failure (safetensors, torch.save) as an OSError."""
    with write_errors_as_os_error(path):
        return _write_part(path, name, part)


def _fsync(path: Path) -> None:
    os.chmod(path, 0o666 & ~_umask())  # temp-file helpers create 0600 files; use the usual permissions
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_checkpoint(directory: str | Path, parts: Mapping[str, Part],
                     manifest_extra: Mapping[str, Any] | None = None, *, overwrite: bool = False) -> Path:
    """Write ``parts`` (file name → bytes, tensor dict for ``.safetensors``, object for ``.pt``, data for
    ``.json``/``.yaml``) as the checkpoint directory ``directory``, atomically.

    The files go to a temporary sibling, ``manifest.json`` (format, versions, git commit, ``manifest_extra``,
    tensor shapes/dtypes and the sha256 of every file) is written last, then the directory is renamed into
    place. An existing ``directory`` is an error unless ``overwrite``.
    """
    directory = Path(directory)
    if MANIFEST in parts:
        raise CheckpointError(f"{MANIFEST} is written by write_checkpoint itself; do not pass it as a part")
    if directory.exists() and not overwrite:
        raise CheckpointError(f"{directory} already exists; refusing to overwrite a checkpoint")
    created = make_parents(directory)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        files, tensors = {}, {}
        for name, part in parts.items():
            if not _is_plain_file_name(name):
                raise CheckpointError(f"checkpoint part name {name!r} must be a plain file name")
            table = _write_part_or_os_error(tmp / name, name, part)
            files[name] = {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
            if table is not None:
                tensors[name] = table
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "trmlab_version": _version(),
                    "git_commit": _git_commit(),
                    "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                    **dict(manifest_extra or {}), "files": files, "tensors": tensors}
        _write_part_or_os_error(tmp / MANIFEST, MANIFEST, manifest)
        _replace_dir(tmp, directory)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        remove_created(created)
        raise
    return directory


def _is_plain_file_name(name: Any) -> bool:
    """A name inside the checkpoint directory: no directory part, not hidden (no ``..``), not the manifest."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name \
        and not name.startswith(".") and name != MANIFEST


def _version() -> str:
    from trmlab import __version__

    return __version__


def _replace_dir(tmp: Path, directory: Path) -> None:
    """Rename ``tmp`` to ``directory``; an old ``directory`` is moved aside first and deleted after."""
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass
class CheckpointBundle:
    """A read (and, by default, verified) trmlab checkpoint directory."""

    path: Path
    manifest: dict[str, Any]
    # train_state.pt once read: resume reads it to validate the checkpoint, then to restore from it.
    _train_state: Any = field(default=None, init=False, repr=False, compare=False)

    def has(self, name: str) -> bool:
        """Whether the manifest lists file ``name``."""
        return name in self.manifest["files"]

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors of a ``.safetensors`` file (CheckpointError naming the file when unreadable)."""
        self._require(name)
        from safetensors.torch import load_file

        try:
            return load_file(str(self.path / name))
        except Exception as error:  # safetensors raises its own types for corrupt headers
            raise CheckpointError(f"{self.path / name} is not a readable safetensors file "
                                  f"({error})") from None

    def config(self) -> Any:
        """The stored ``config.yaml`` as a ``ResolvedConfig`` (strict)."""
        from trmlab.config.loader import load_resolved

        self._require(CONFIG_FILE)
        return load_resolved(self.path / CONFIG_FILE)

    def train_state(self) -> Any:
        """``train_state.pt``, loaded weights-only (read once per bundle)."""
        from trmlab.interop.safe_load import safe_torch_load

        if self._train_state is None:
            self._require(TRAIN_STATE_FILE)
            self._train_state = safe_torch_load(self.path / TRAIN_STATE_FILE)
        return self._train_state

    def _require(self, name: str) -> None:
        if not self.has(name):
            raise CheckpointError(f"{self.path} has no {name} (its manifest lists: "
                                  f"{', '.join(sorted(self.manifest['files']))})")


def is_trmlab_checkpoint(path: str | Path) -> bool:
    """True for a directory holding a trmlab ``manifest.json``."""
    return (Path(path) / MANIFEST).is_file()


def read_checkpoint(directory: str | Path, verify: bool = True) -> CheckpointBundle:
    """Open a checkpoint directory; with ``verify`` every listed file must exist with the recorded sha256.

    Raises CheckpointError naming the directory (no manifest: incomplete or not a checkpoint) or the file
    (missing, or checksum mismatch: corrupt or modified).
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory (a trmlab checkpoint is a step_N/ directory)")
    if not manifest_path.is_file():
        raise CheckpointError(f"{directory} has no {MANIFEST}: an interrupted write or not a trmlab "
                              "checkpoint; use an earlier complete checkpoint")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{manifest_path} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{manifest_path} is not a {FORMAT} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path} has format_version {manifest['format_version']}, newer than "
                              f"this trmlab reads ({FORMAT_VERSION}); upgrade trmlab")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(i, dict) and "sha256" in i for i in files.values()):
        raise CheckpointError(f"{manifest_path}: 'files' must map file names to their sha256 and size")
    unsafe = [name for name in files if not _is_plain_file_name(name)]
    if unsafe:
        # A crafted manifest must not make trmlab read (and hash) files outside the checkpoint directory.
        raise CheckpointError(f"{manifest_path}: lists {unsafe[0]!r}, which is not a plain file name inside "
                              "the checkpoint (a corrupt or crafted manifest); do not use this checkpoint")
    bundle = CheckpointBundle(directory, manifest)
    if verify:
        missing = [name for name in manifest["files"] if not (directory / name).is_file()]
        if missing:
            raise CheckpointError(f"{directory / missing[0]} is listed in the manifest but missing"
                                  + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""))
        for name, info in manifest["files"].items():
            path = directory / name
            if _sha256(path) != info["sha256"]:
                raise CheckpointError(f"{path} does not match its sha256 in {MANIFEST}: the file is corrupt "
                                      "or was modified")
    return bundle


def save_model_checkpoint(directory: str | Path, model: torch.nn.Module, *, config: Any, step: int,
                          ema_state: Mapping[str, torch.Tensor] | None = None, train_state: Any = None,
                          dataset_fingerprint: str | None = None, overwrite: bool = False,
                          extra: Mapping[str, Any] | None = None) -> Path:
    """Write a model checkpoint in the bundle layout.

    Args:
        model: a trmlab model (``model.state_dict()`` gives the raw weights; its puzzle table, if any, goes to
            ``puzzle_embedding.safetensors``).
        config: the ``ResolvedConfig`` the model was built from (stored as ``config.yaml`` with provenance).
        step: optimizer updates done.
        ema_state: {canonical key: EMA tensor} for the parameters (buffers are taken from the model).
        train_state: anything ``torch.load(weights_only=True)`` can read back (optimizer states, RNG ...).
    """
    state = {k: v for k, v in model.state_dict().items()}
    table = state.pop(TABLE_KEY, None)
    parts: dict[str, Part] = {MODEL_FILE: state}
    if ema_state is not None:
        unknown = sorted(set(ema_state) - set(state))
        if unknown:
            raise CheckpointError(f"ema_state has keys the model does not: {', '.join(unknown[:5])}")
        parts[EMA_FILE] = {**state, **ema_state}
    if table is not None:
        parts[TABLE_FILE] = {"weights": table}
    parts[CONFIG_FILE] = _config_document(config)
    if train_state is not None:
        parts[TRAIN_STATE_FILE] = train_state
    contents = {"raw": True, "ema": ema_state is not None, "table": table is not None,
                "train_state": train_state is not None}
    dims = {"seq_len": model.core.seq_len, "vocab_size": model.core.vocab_size,
            "num_puzzle_identifiers": getattr(model, "num_puzzle_identifiers", None)}
    manifest = {"step": int(step), "contents": contents, "dataset_fingerprint": dataset_fingerprint,
                "model": dims, **dict(extra or {})}
    return write_checkpoint(directory, parts, manifest, overwrite=overwrite)


def _config_document(config: Any) -> dict[str, Any]:
    """``{"config": nested dict, "provenance": {...}}`` for a ResolvedConfig (or a bare Config)."""
    from trmlab.config.fields import schema_fields
    from trmlab.config.loader import config_to_dict

    resolved_config = getattr(config, "config", config)
    provenance = getattr(config, "provenance", {})
    return {"config": config_to_dict(resolved_config),
            "provenance": {key: provenance.get(key, "unknown") for key in schema_fields()}}
