"""The run directory, a contract users script against (documented in docs/training.md)::

    <run_dir>/
      config.yaml            {"config": <resolved config>, "provenance": {<dotted key>: <source>}}
      metrics.jsonl          one JSON object per line: {"step", "epoch", "split": "train"|"eval", ...}
      checkpoints/step_<N>/  model.safetensors, ema.safetensors, puzzle_embedding.safetensors,
                             train_state.pt, config.yaml, manifest.json (written last)
      eval/step_<N>/         the evaluator's outputs for evaluations during training

N counts optimizer updates. Writes are atomic (temporary file or directory, then rename).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from trmlab.errors import ConfigError, RunBusyError, write_failure
from trmlab.staging import make_parents, process_alive, remove_created

_ADJECTIVES = ("amber", "brisk", "calm", "dapper", "eager", "fuzzy", "gentle", "hardy", "icy", "jolly",
               "keen", "lucid", "mellow", "nimble", "odd", "plucky", "quiet", "rapid", "sunny", "tidy",
               "vivid", "witty")
_NOUNS = ("otter", "heron", "lynx", "maple", "comet", "falcon", "badger", "cedar", "puffin", "quartz",
          "raven", "tulip", "walrus", "yak", "zebra", "willow", "marten", "osprey", "gecko", "koala",
          "ibis", "bison")


def generate_run_name() -> str:
    """A readable unique-enough name: ``<adjective>-<noun>-<YYYYmmdd-HHMMSS>`` (own RNG: seeds untouched)."""
    rng = random.Random()
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{time.strftime('%Y%m%d-%H%M%S')}"


DATA_PATH_KEYS = ("data_paths", "data_paths_test")


def with_absolute_data_paths(resolved: Any) -> Any:
    """``resolved`` with relative ``data_paths``/``data_paths_test`` made absolute (against the current
    directory), so the run resumes from any directory; the provenance keeps the spelling as given.

    ``resolved``: a ResolvedConfig (or any dataclass with ``config`` and ``provenance``); not modified.
    """
    changes, provenance = {}, dict(resolved.provenance)
    for key in DATA_PATH_KEYS:
        given = list(getattr(resolved.config, key))
        absolute = [str(Path(path).expanduser().resolve()) for path in given]
        if absolute != given:
            changes[key] = absolute
            provenance[key] = f"{provenance.get(key, 'unknown')}; given as [{', '.join(given)}]"
    if not changes:
        return resolved
    return dataclasses.replace(resolved, config=dataclasses.replace(resolved.config, **changes),
                               provenance=provenance)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary sibling and a rename (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints_path(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints_path / f"step_{step}"

    def eval_path(self, step: int) -> Path:
        return self.path / "eval" / f"step_{step}"

    def create(self, resolved: Any) -> None:
        """Create a new run directory with the resolved config (refusing to reuse one that holds a run)."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run_dir {self.path}: exists and is a file, not a directory; choose another "
                              f"run_dir")
        if self.config_path.exists():
            if self.checkpoint_steps():
                raise ConfigError(f"run_dir {self.path} already holds a run; continue it with "
                                  f"resume={self.path} or choose another run_dir")
            # A run that stopped before its first checkpoint left nothing to resume: start it over.
            print(f"trmlab train: {self.path} holds a run without any checkpoint; starting it over",
                  file=sys.stderr)
            self.metrics_path.unlink(missing_ok=True)
        self._populate(resolved)

    def _populate(self, resolved: Any) -> None:
        from trmlab.config import save_resolved

        created = None
        try:
            created = make_parents(self.config_path)
            self.checkpoints_path.mkdir(exist_ok=True)
            save_resolved(resolved, self.config_path)
        except OSError as error:
            remove_created(created)  # only what this call created: never a directory the user already had
            raise write_failure(f"run_dir {self.path}", error) from error

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl and flush it (a kill loses at most the line being written)."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")
            f.flush()

    def truncate_metrics(self, step: int) -> None:
        """On resume from ``step``: drop lines logged after it (they will be logged again) and torn lines."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the torn last line of a killed run
            if int(record.get("step", 0)) <= step:
                kept.append(line)
        atomic_write_text(self.metrics_path, "".join(f"{line}\n" for line in kept))

    def has_eval_record(self, step: int) -> bool:
        """Whether metrics.jsonl holds the evaluation of ``step``."""
        if not self.metrics_path.exists():
            return False
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("split") == "eval" and record.get("step") == step:
                return True
        return False

    def checkpoint_steps(self) -> list[int]:
        """Steps of the checkpoint directories present, complete or not, newest first."""
        if not self.checkpoints_path.is_dir():
            return []
        steps = []
        for child in self.checkpoints_path.iterdir():
            if child.is_dir() and child.name.startswith("step_") and child.name[5:].isdigit():
                steps.append(int(child.name[5:]))
        return sorted(steps, reverse=True)

    def prune(self, keep_last: int) -> list[Path]:
        """Delete all but the newest ``keep_last`` checkpoints and stale temporary dirs; return what went."""
        removed = []
        for step in self.checkpoint_steps()[keep_last:]:
            path = self.checkpoint_path(step)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        for child in self.checkpoints_path.iterdir():
            if child.name.startswith(".tmp-") or child.name.startswith(".step_"):
                shutil.rmtree(child, ignore_errors=True)
        return removed


LOCK_FILE = ".trmlab-lock.json"


class RunLock:
    """The one-writer lock of a run directory (cli.md: "a run directory has one writer").

    ``<run_dir>/.trmlab-lock.json`` names the holder (pid, host, start time, command). It is created with a
    hard link of a complete temporary file, so it is either absent or whole, and two processes can never both
    create it. A lock whose holder is gone (same host, no such process) is taken over with a message; any
    other holder is named in a :class:`~trmlab.errors.RunBusyError` (exit 3).
    """

    def __init__(self, run_dir: str | Path, say: Any = None) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.say = say or (lambda message: print(message, file=sys.stderr, flush=True))
        self.held = False
        self.created: Path | None = None

    def acquire(self) -> RunLock:
        """Take the lock (creating the run directory if needed) or raise RunBusyError naming the holder."""
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise ConfigError(f"run_dir {self.path.parent}: exists and is a file, not a directory; choose "
                              f"another run_dir")
        try:
            if not self.path.parent.is_dir():
                self.created = make_parents(self.path)  # the run directory and any parent it needs
            mine = self._holder_record()
            for _ in range(3):  # a taken-over lock may be raced for by another process: try again
                if self._create(mine):
                    self.held = True
                    return self
                holder = self._read()
                if holder is not None and not _holder_gone(holder):
                    raise RunBusyError(f"run_dir {self.path.parent} is being written by another process "
                                       f"({_describe(holder)}); wait for it to finish, or stop it "
                                       f"(a lock left by a dead process is taken over automatically)")
                self.say(f"trmlab: taking over the lock of {self.path.parent} left by "
                         f"{_describe(holder) if holder else 'a process that did not finish writing it'}, "
                         f"which is gone")
                self.path.unlink(missing_ok=True)
        except OSError as error:
            remove_created(self.created)  # a run directory made only for the lock it could not hold
            raise write_failure(f"run_dir {self.path.parent}", error) from error
        raise RunBusyError(f"run_dir {self.path.parent}: could not take its lock {self.path} (other "
                           f"processes keep taking it); try again")

    def release(self) -> None:
        """Drop the lock if this process holds it (and a run directory created only for it)."""
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == _host():
            self.path.unlink(missing_ok=True)
        if self.created is not None and self.path.parent.is_dir() and not any(self.path.parent.iterdir()):
            shutil.rmtree(self.created, ignore_errors=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def _holder_record() -> dict[str, Any]:
        return {"pid": os.getpid(), "host": _host(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "command": " ".join(sys.argv)}

    def _create(self, record: dict[str, Any]) -> bool:
        tmp = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {"pid": -1, "host": _host()}  # released meanwhile: counts as gone
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None


def _host() -> str:
    import socket

    return socket.gethostname()


def _holder_gone(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    return holder.get("host") == _host() and isinstance(pid, int) and (pid < 0 or not process_alive(pid))


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
            + (f": {holder['command']}" if holder.get("command") else ""))
