"""README.md's commands work as written: the front door is tested like any other interface.

Every ```bash block of README.md is read in order (a line ending in ``\\`` continues on the next one). A
command may end with a comment whose first words, before an optional ``:``, are tags (comma-separated):

- ``# long``: too slow for the test suite (a build, a training run of minutes): checked, not run;
- ``# network``: needs a download (the Hub, ``git clone``): checked, not run;
- ``# gpu``: needs GPUs: checked, not run;
- ``# exit N``: runs, and must exit with status N (``config diff``: 1 = the configs differ).

Untagged commands **run for real**, in order, in one empty temporary directory standing for a fresh clone's
root: a command may read only what an earlier one wrote. ``trmlab ...`` runs in this process
(``trmlab.cli.main``, one torch thread), anything else through ``bash``.

**Checked** means, for a ``trmlab ...`` command (also the part after ``torchrun ... -m trmlab``): the command
exists and its parser accepts the flags and positionals; every ``key=value`` setting is one its ``--help``
documents (``key=``) or, for a command that takes config overrides, a config key; a ``train`` line resolves
its preset and overrides as the run would (types and values checked). ``make TARGET`` must be a Makefile
target, ``python benchmarks/X.py`` an existing script, and a ``torchrun`` or ``git`` line must carry a tag.

A README line that needs a change not yet merged into this branch is listed in :data:`AWAITING_MERGE` and
expected to fail (strictly: once it passes, the entry must go).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from trmlab.cli import build_parser, main
from trmlab.errors import TrmlabError

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
TAGS = {"long", "network", "gpu"}
GROUPS = {"config", "data", "checkpoint"}  # commands whose first word is a group: `trmlab data build-arc`
# Commands whose key=value words may also be config overrides (any schema key).
TAKES_CONFIG = {("train",), ("demo",), ("adapt",), ("config", "show"), ("checkpoint", "inspect"),
                ("checkpoint", "convert")}

# README command (as joined, comment removed) → the branch whose merge makes it work.
AWAITING_MERGE: dict[str, str] = {}


@dataclass
class Command:
    line: str          # as in the README, continuations joined, comment removed
    words: list[str]
    tags: set[str]
    exit_code: int     # expected exit status when run

    @property
    def runs(self) -> bool:
        return not (self.tags & TAGS)

    @property
    def trmlab_argv(self) -> list[str] | None:
        """The words after `trmlab` (or after `torchrun ... -m trmlab`); None for other programs."""
        if self.words[0] in ("trmlab", ".venv/bin/trmlab"):
            return self.words[1:]
        if self.words[0] == "torchrun" and "trmlab" in self.words:
            at = self.words.index("trmlab")
            if self.words[at - 1] == "-m":
                return self.words[at + 1:]
        return None


def parse_tags(comment: str) -> tuple[set[str], int]:
    """(tags, expected exit status) from a trailing comment; a comment that starts with no tag has none."""
    head = comment.split(":", 1)[0]
    tags, exit_code = set(), 0
    for word in (w.strip() for w in head.split(",")):
        match = re.fullmatch(r"exit (\d+)", word)
        if match:
            exit_code = int(match.group(1))
        elif word in TAGS:
            tags.add(word)
        else:
            return set(), 0  # ordinary prose: the command runs
    return tags, exit_code


def readme_commands(text: str) -> list[Command]:
    """The commands of every ```bash block, in order."""
    commands: list[Command] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            match = re.search(r"(?:^|\s)#\s?(.*)$", line)
            code = line[:match.start()] if match else line
            if not code.strip():
                continue
            tags, exit_code = parse_tags(match.group(1).strip()) if match else (set(), 0)
            words = shlex.split(code)
            commands.append(Command(" ".join(words), words, tags, exit_code))
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def command_path(argv: list[str]) -> tuple[str, ...]:
    return tuple(argv[:2]) if argv[0] in GROUPS else tuple(argv[:1])


def help_text(path: tuple[str, ...]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser(path[0]).parse_args([*path, "--help"])
    return out.getvalue()


def check_trmlab(argv: list[str]) -> None:
    """The checks of the module docstring; raises AssertionError naming the problem."""
    path = command_path(argv)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            build_parser(argv[0]).parse_args(argv)
    except (SystemExit, TrmlabError) as error:  # trmlab's parser raises a UsageError (one line, exit 2)
        refused = errors.getvalue().strip() or str(error)
        raise AssertionError(f"trmlab {' '.join(argv)}: the parser refuses it: {refused}") from None
    from trmlab.config.fields import schema_fields

    documented = set(re.findall(r"(?<![\w.-])([a-z_][a-z0-9_.]*)=", help_text(path)))
    config_keys = set(schema_fields()) if path in TAKES_CONFIG else set()
    settings = [w.split("=", 1)[0] for w in argv[len(path):] if "=" in w and not w.startswith("-")]
    unknown = [key for key in settings if key not in documented | config_keys]
    assert not unknown, f"trmlab {' '.join(argv)}: settings its --help does not document: {unknown}"
    if path == ("train",) and not any(key == "resume" for key in settings):
        from trmlab.training.cli import resolve_train_words

        words = [w for w in argv[1:] if not w.startswith("--")]
        resolve_train_words(words)  # raises ConfigError for a bad preset, key, type or value


def check_other(command: Command) -> None:
    program = command.words[0]
    if program == "make":
        makefile = (REPO_ROOT / "Makefile").read_text()
        for target in command.words[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"no Makefile target {target}"
    elif program == "python":
        script = REPO_ROOT / command.words[1]
        assert script.is_file(), f"{command.line}: {script} does not exist"
    elif program in ("torchrun", "git"):
        assert command.tags, f"{command.line}: {program} cannot run in tests: tag it (# gpu, # network)"


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[int, tuple[int, str]]:
    """Run the untagged commands in order in one fresh directory: index → (exit status, output)."""
    workdir = tmp_path_factory.mktemp("fresh-clone")
    results: dict[int, tuple[int, str]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(workdir)
            for index, command in enumerate(COMMANDS):
                if command.runs:
                    results[index] = run(command, workdir)
    finally:
        torch.set_num_threads(threads)
    return results


def run(command: Command, workdir: Path) -> tuple[int, str]:
    argv = command.trmlab_argv
    if argv is None:
        path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # `python`, `trmlab` of this venv
        done = subprocess.run(["bash", "-c", command.line], cwd=workdir, capture_output=True, text=True,
                              env={**os.environ, "PATH": path})
        return done.returncode, done.stdout + done.stderr
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            status = main(argv)
        except SystemExit as exit_:  # argparse refusing the command line
            status = exit_.code if isinstance(exit_.code, int) else 2
    return status, output.getvalue()


def test_the_readme_shows_commands_and_tags_them():
    assert len(COMMANDS) >= 20
    ran_for_real = [c for c in COMMANDS if c.runs and c.trmlab_argv]
    assert len(ran_for_real) >= 10, "most recipes should run in the tests, not only be parsed"
    assert {"train", "eval", "report", "data", "config", "checkpoint", "adapt", "score"} <= {
        c.trmlab_argv[0] for c in COMMANDS if c.trmlab_argv}


def test_tag_parsing():
    assert parse_tags("long: 2 minutes") == ({"long"}, 0)
    assert parse_tags("network, gpu") == ({"network", "gpu"}, 0)
    assert parse_tags("exit 1: they differ") == (set(), 1)
    assert parse_tags("the step plan; writes nothing") == (set(), 0)


def _cases() -> list:
    return [pytest.param(index, id=command.line[:70],
                         marks=[pytest.mark.xfail(strict=True, reason=AWAITING_MERGE[command.line])]
                         if command.line in AWAITING_MERGE else [])
            for index, command in enumerate(COMMANDS)]


@pytest.mark.parametrize("index", _cases())
def test_readme_command(index, ran):
    command = COMMANDS[index]
    argv = command.trmlab_argv
    if argv is not None:
        check_trmlab(argv)
    else:
        check_other(command)
    if command.runs:
        status, output = ran[index]
        assert status == command.exit_code, (
            f"`{command.line}` exited {status}, the README implies {command.exit_code}:\n{output[-3000:]}")
