"""Hugging Face Hub paths: ``hf://ORG/REPO[@REVISION]/PATH`` (a model repository) and
``hf://datasets/ORG/REPO[@REVISION]/PATH`` (a dataset repository), the spelling of huggingface_hub's own file
system, accepted wherever trmlab reads a checkpoint or dataset path.

:func:`resolve_path` turns such a path into a local one through ``huggingface_hub`` (the ``[hub]`` extra):
its cache (``HF_HOME`` / ``HF_HUB_CACHE``), ``HF_HUB_OFFLINE``, its token (``HF_TOKEN`` / ``hf auth login``)
and its download progress bar. For an official ``step_N`` file the ``all_config.yaml`` beside it is fetched
too (the architecture is only there). A folder (a trmlab ``step_N/`` checkpoint, a dataset directory) is
fetched with ``snapshot_download`` limited to that folder.

The local path lies in the cache's ``snapshots/<commit>/`` folder, so :func:`hub_origin` can always say which
repository and which commit a file came from; evaluation and training record it.

Errors end as one line: a path that does not exist (repository, revision or file) is exit 2; a Hub that cannot
be reached (offline, no network, server error) is exit 3, and says what to do.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from trmlab.errors import TrmlabError

SCHEME = "hf://"
HUB_EXTRA = "pip install 'trmlab[hub]' or pip install 'huggingface_hub>=0.20'"
OFFICIAL_CONFIG = "all_config.yaml"
_STEP_FILE = re.compile(r"step_\d+")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REPO_FOLDER = re.compile(r"(models|datasets|spaces)--(.+)")
# hf:// URLs given on this process's command line / API calls, by local path: the revision the user asked for.
_REQUESTED: dict[str, str] = {}


class HubError(TrmlabError):
    """A Hub path could not be resolved; ``exit_code`` 2 (it does not exist) or 3 (the Hub is unreachable)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class HubPath:
    """One parsed ``hf://`` path."""

    repo_id: str          # ORG/REPO
    repo_type: str        # "model" or "dataset"
    revision: str | None  # branch, tag or commit; None = the default branch
    path: str             # inside the repository ("" = its root)

    def url(self, path: str | None = None) -> str:
        """The ``hf://`` spelling of this repository (at this revision) and ``path`` (default: its own)."""
        kind = "datasets/" if self.repo_type == "dataset" else ""
        revision = f"@{self.revision}" if self.revision else ""
        inner = self.path if path is None else path
        return f"{SCHEME}{kind}{self.repo_id}{revision}" + (f"/{inner}" if inner else "")


def is_hub_path(value: Any) -> bool:
    """True for a string that starts with ``hf://``."""
    return isinstance(value, str) and value.startswith(SCHEME)


def parse_hub_path(text: str) -> HubPath:
    """``hf://[datasets/]ORG/REPO[@REVISION][/PATH]`` → :class:`HubPath` (HubError when malformed)."""
    rest = text[len(SCHEME):] if text.startswith(SCHEME) else text
    repo_type = "model"
    if rest.startswith("datasets/"):
        repo_type, rest = "dataset", rest[len("datasets/"):]
    elif rest.startswith(("spaces/", "buckets/")):
        raise HubError(f"{text}: Spaces and buckets hold no checkpoints or datasets for trmlab; use "
                       "hf://ORG/REPO/PATH (a model repository) or hf://datasets/ORG/REPO/PATH")
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1].split("@", 1)[0]:
        raise HubError(f"{text}: expected hf://ORG/REPO[@REVISION]/PATH or "
                       "hf://datasets/ORG/REPO[@REVISION]/PATH")
    name, _, revision = parts[1].partition("@")
    if "@" in parts[1] and not revision:
        raise HubError(f"{text}: '@' must be followed by a revision (branch, tag or commit)")
    path = "/".join(part for part in parts[2:] if part)
    return HubPath(f"{parts[0]}/{name}", repo_type, unquote(revision) or None, path)


def hub_module() -> Any:
    """``huggingface_hub``, or a one-line HubError saying how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise HubError(f"hf:// paths need the huggingface_hub package, which is not installed ({HUB_EXTRA}); "
                       "or download the files yourself and give their local path") from None
    return huggingface_hub


# ----------------------------------------------------------------------------------------------- resolving


def resolve_path(path: Any, *, progress: bool | None = None) -> Any:
    """A local path for ``path``: unchanged unless it is an ``hf://`` path, which is downloaded (or found in
    the cache) and returned as a :class:`~pathlib.Path` inside the cache's ``snapshots/<commit>/`` folder.

    A file is fetched with ``hf_hub_download``; an official ``step_N`` file brings its ``all_config.yaml``
    along. A path that is a folder in the repository is fetched with ``snapshot_download`` (that folder only).
    ``progress``: show huggingface_hub's bar (default: when stderr is a terminal; otherwise one plain line).
    """
    if not is_hub_path(str(path)):
        return path
    target = parse_hub_path(str(path))
    if not target.path:
        raise HubError(f"{path}: name a file or folder inside the repository (e.g. "
                       f"{target.url('arc_v1_public/step_518071')})")
    hub = hub_module()
    if progress is None:  # the command's progress mode (--no-progress, rank 0 only), as everywhere else
        from trmlab.progress import uses_bar

        progress = uses_bar()
    show = progress
    with _progress_bars(hub, show):
        if not show:
            print(f"fetching {path} through the Hugging Face cache (no progress bar: stderr is not a "
                  "terminal, or --no-progress)", file=sys.stderr)
        local = _fetch_file_or_folder(hub, target, str(path))
        if _STEP_FILE.fullmatch(Path(target.path).name) and local.is_file():
            _fetch_sibling_config(hub, target)
    _REQUESTED[str(local)] = str(path)
    return local


def _fetch_file_or_folder(hub: Any, target: HubPath, text: str) -> Path:
    try:
        return Path(_download(hub, target, target.path))
    except Exception as error:  # huggingface_hub's errors differ between releases: classified below
        if not _is_missing_entry(error):
            raise _hub_error(hub, text, target, error) from None
        file_error = error
    folder = _fetch_folder(hub, target, text)
    if folder is None:
        raise _hub_error(hub, text, target, file_error) from None
    return folder


def _download(hub: Any, target: HubPath, filename: str) -> str:
    return hub.hf_hub_download(target.repo_id, filename, repo_type=target.repo_type, revision=target.revision)


def _fetch_folder(hub: Any, target: HubPath, text: str) -> Path | None:
    """``target.path`` as a folder of the repository (fetched, or found in the cache), else None."""
    try:
        snapshot = hub.snapshot_download(target.repo_id, repo_type=target.repo_type, revision=target.revision,
                                         allow_patterns=[f"{target.path}/*"])
    except Exception as error:
        if _is_missing_entry(error):
            return None
        raise _hub_error(hub, text, target, error) from None
    folder = Path(snapshot) / target.path
    return folder if folder.is_dir() and any(folder.iterdir()) else None


def _fetch_sibling_config(hub: Any, target: HubPath) -> None:
    """Fetch ``all_config.yaml`` beside an official ``step_N`` (the architecture is only there). A repository
    without one is fine here: loading then asks for a preset, as for a local file without it."""
    sibling = str(Path(target.path).parent / OFFICIAL_CONFIG).removeprefix("./")
    try:
        _download(hub, target, sibling)
    except Exception as error:
        if _is_missing_entry(error) and (_known_absent(hub, target, sibling) or not _is_offline(error)):
            return
        raise _hub_error(hub, target.url(sibling), target, error, sibling, beside=target.url()) from None


@contextlib.contextmanager
def _progress_bars(hub: Any, show: bool) -> Iterator[None]:
    """huggingface_hub's own download bars, switched off when they would put carriage returns in a log."""
    utils = _submodule("utils")
    was_disabled = utils.are_progress_bars_disabled()
    if not show and not was_disabled:
        utils.disable_progress_bars()
    try:
        yield
    finally:
        if not show and not was_disabled:
            utils.enable_progress_bars()


# ----------------------------------------------------------------------------------------------- errors


def _submodule(name: str) -> Any:
    import importlib

    return importlib.import_module(f"huggingface_hub.{name}")


def _error_class(name: str) -> type:
    """An exception class of huggingface_hub (``huggingface_hub.errors`` since 0.23, ``.utils`` before)."""
    try:
        return getattr(_submodule("errors"), name)
    except (ImportError, AttributeError):
        return getattr(_submodule("utils"), name)


def _is_missing_entry(error: Exception) -> bool:
    """A file that is not there: on the Hub (404) or, offline, in the cache."""
    return isinstance(error, _error_class("EntryNotFoundError"))


def _is_offline(error: Exception) -> bool:
    """The error came from not reaching the Hub (offline mode, no connection), not from its answer."""
    return isinstance(error, _error_class("LocalEntryNotFoundError"))


def _known_absent(hub: Any, target: HubPath, filename: str) -> bool:
    """The cache remembers that the Hub answered 404 for ``filename`` at this revision (``.no_exist``)."""
    try:
        cached = hub.try_to_load_from_cache(target.repo_id, filename, revision=target.revision,
                                            repo_type=target.repo_type)
    except Exception:  # an unusual cache layout: we cannot tell
        return False
    return cached is not None and not isinstance(cached, str)


def _hub_error(hub: Any, text: str, target: HubPath, error: Exception, filename: str | None = None,
               beside: str | None = None) -> HubError:
    """One line for ``error`` about ``filename`` (default: ``target.path``), naming ``text`` and what to do;
    exit 2 when it does not exist, 3 when the Hub cannot be read."""
    where = f"{text}" + (f" (beside {beside})" if beside else "")
    repo = f"{target.repo_type} repository {target.repo_id}"
    revision = target.revision or "the default branch"
    cls = _error_class
    if isinstance(error, cls("GatedRepoError")):
        return HubError(f"{where}: {repo} is gated; accept its conditions on huggingface.co, then log in "
                        "(hf auth login, or set HF_TOKEN)")
    if isinstance(error, cls("RepositoryNotFoundError")):
        hint = ("" if target.repo_type == "dataset" else
                "; a dataset repository is written hf://datasets/ORG/REPO/PATH")
        return HubError(f"{where}: no {repo} (or it is private: log in with hf auth login, or set "
                        f"HF_TOKEN){hint}")
    if isinstance(error, cls("RevisionNotFoundError")):
        return HubError(f"{where}: {repo} has no revision {target.revision!r}; give an existing branch, tag "
                        "or commit after '@'")
    if _is_offline(error):
        if _known_absent(hub, target, filename or target.path):
            return HubError(f"{where}: no such file in {repo} at {revision} (the Hub said so earlier; the "
                            "cache remembers it); check the path")
        return HubError(f"{where}: not in the local Hugging Face cache ({_cache_dir(hub)}) and the Hub "
                        f"cannot be reached ({_offline_reason(hub)}); connect to the network and run the "
                        "command again, or download the files yourself and give their local path", 3)
    if isinstance(error, cls("EntryNotFoundError")):
        return HubError(f"{where}: no such file or folder in {repo} at {revision}; check the path (the "
                        "repository's files are listed on huggingface.co)")
    if isinstance(error, ValueError):  # HFValidationError: a repository id the Hub refuses
        return HubError(f"{where}: not a valid Hub path ({error}); expected hf://ORG/REPO[@REVISION]/PATH")
    cause = f"{type(error).__name__}: {error}".splitlines()[0]
    return HubError(f"{where}: the Hub could not be read ({cause}); check the network and run the command "
                    "again, or download the files yourself and give their local path", 3)


def _cache_dir(hub: Any) -> str:
    return str(_submodule("constants").HF_HUB_CACHE)


def _offline_reason(hub: Any) -> str:
    offline = _submodule("constants").HF_HUB_OFFLINE
    return "HF_HUB_OFFLINE is set" if offline else "no network, or the Hub is down"


# ----------------------------------------------------------------------------------------------- provenance


def hub_origin(path: str | Path) -> dict[str, Any] | None:
    """Where a local file of the Hugging Face cache came from: ``{"url", "repo", "repo_type", "revision"
    (the commit), "path"}`` plus ``"requested"`` (the ``hf://`` path as given, when this process resolved it);
    None for a path outside the cache. Read from the cache layout ``<type>s--ORG--REPO/snapshots/<commit>/``.
    """
    parts = Path(path).parts
    for index in range(len(parts) - 2, 0, -1):
        folder = _REPO_FOLDER.fullmatch(parts[index - 1])
        if parts[index] == "snapshots" and folder and index + 1 < len(parts) and _COMMIT.fullmatch(
                parts[index + 1]):
            repo_type = folder.group(1).removesuffix("s")
            repo_id = folder.group(2).replace("--", "/", 1)
            inner = "/".join(parts[index + 2:])
            origin = {"url": HubPath(repo_id, repo_type, parts[index + 1], inner).url(), "repo": repo_id,
                      "repo_type": repo_type, "revision": parts[index + 1], "path": inner}
            if str(path) in _REQUESTED:
                origin["requested"] = _REQUESTED[str(path)]
            return origin
    return None


def describe_origin(path: str | Path) -> str | None:
    """``"hf://ORG/REPO/PATH at revision <commit>"`` for a cached Hub file, else None (for provenance)."""
    origin = hub_origin(path)
    if origin is None:
        return None
    asked = origin.get("requested")
    return f"{asked or origin['url']} (revision {origin['revision']})"
