"""The command-line grammar (../shared/style/cli.md) and docs/cli.md cannot drift apart.

Every command's ``--help`` is read as a user reads it: its positionals, its ``--flags`` and the ``key=`` lines
of its ``settings:`` block must be exactly those in docs/cli.md's table. Every old spelling of a concept is
refused with one line that names this command's spelling (exit 2), before anything is read or written.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from trmlab.cli import build_parser, main

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


# ------------------------------------------------------------------------------------- reading --help


def leaf_parsers() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every runnable command path, e.g. ("eval",), ("checkpoint", "convert"), with its parser."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            found[path] = parser
        for group in groups:
            for name, sub in group.choices.items():
                walk(sub, (*path, name))

    walk(build_parser(), ())
    return found


def leaf_commands() -> list[tuple[str, ...]]:
    return list(leaf_parsers())


def help_text(command: tuple[str, ...], capsys: pytest.CaptureFixture) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def sections(text: str) -> dict[str, list[str]]:
    """Lines under each ``header:`` line that starts at column 0 (argparse's and the settings block's)."""
    parts: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        header = re.fullmatch(r"([a-z][\w ()/-]*):", line)
        if header:
            current = header.group(1)
            parts.setdefault(current, [])
        elif current:
            parts[current].append(line)
    return parts


def read_help(text: str) -> dict[str, set[str]]:
    """{"positionals", "flags", "settings"} as --help shows them (settings with "=", KEY= for overrides)."""
    parts = sections(text)
    positionals = set()
    for line in parts.get("positional arguments", []):
        name = re.match(r"  (\S+(?: \S+)*?)(?: {2,}|$)", line)
        if name:
            positionals |= {word for word in name.group(1).split() if "=" not in word}
    flags = {m.group(1) for lines in parts.values() for line in lines
             if (m := re.match(r"  (?:-\w, )?(--[\w-]+)", line))} - {"--help"}
    settings = {m.group(1) + "=" for line in parts.get("settings", [])
                if (m := re.match(r"  ([a-zA-Z_][\w.]*)=", line))}
    return {"positionals": positionals, "flags": flags, "settings": settings}


# ------------------------------------------------------------------------------------- reading the table


def doc_table() -> dict[tuple[str, ...], dict[str, set[str]]]:
    """docs/cli.md's per-command table: {command path: {"positionals", "settings", "flags"}}."""
    rows: dict[tuple[str, ...], dict[str, set[str]]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        row = re.match(r"\| `trmlab ([a-z -]+)` \|", line)
        if not row:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) >= 7, f"docs/cli.md: a table row needs 7 cells: {line}"
        command = tuple(row.group(1).split())
        assert command not in rows, f"docs/cli.md lists trmlab {' '.join(command)} twice"
        rows[command] = {
            "positionals": set(re.findall(r"`([A-Z][A-Z_]*)`", cells[1])),
            "settings": set(re.findall(r"`([a-zA-Z_][\w.]*=)", cells[2])),
            "flags": set(re.findall(r"`(--[\w-]+)", cells[3])),
        }
    return rows


def test_every_command_is_in_the_table():
    assert set(doc_table()) == set(leaf_commands())


@pytest.mark.parametrize("command", leaf_commands(), ids=" ".join)
def test_help_and_table_agree(command, capsys):
    shown = read_help(help_text(command, capsys))
    documented = doc_table()[command]
    for kind in ("positionals", "settings", "flags"):
        assert shown[kind] == documented[kind], (
            f"trmlab {' '.join(command)} {kind}: --help shows {sorted(shown[kind])}, docs/cli.md's table "
            f"{sorted(documented[kind])}")


def test_flags_outside_the_data_group_take_no_value():
    """cli.md: a flag that takes a value is a setting in disguise (the data group keeps the official ones)."""
    for command, parser in leaf_parsers().items():
        if command[0] == "data":
            continue
        takes_value = [s for a in parser._actions for s in a.option_strings if a.nargs != 0]
        assert not takes_value, f"trmlab {' '.join(command)}: {takes_value} take a value; make them key=value"


# ------------------------------------------------------------------------------------- old spellings

CK, DATA, RUN = "no/such/step_1", "no/such/data", "no/such/run"
BUILD = ["data", "build-arc", "--input-file-prefix", "no/such/prefix", "--output-dir", "no/such/out"]
OLD_SPELLINGS = [
    # checkpoint: --set/--preset/--seq-len/--to/--raw became key=value
    (["checkpoint", "inspect", CK, "--set", "arch.L_cycles=4"], "key=value without --set"),
    (["checkpoint", "inspect", CK, "--preset", "tiny"], "preset="),
    (["checkpoint", "inspect", CK, "--seq-len", "900"], "seq_len="),
    (["checkpoint", "convert", CK, "dst", "to=trmlab", "--set", "arch.L_cycles=4"],
     "key=value without --set"),
    (["checkpoint", "convert", CK, "dst", "to=trmlab", "--preset", "tiny"], "preset="),
    (["checkpoint", "convert", CK, "dst", "to=trmlab", "--seq-len", "900"], "seq_len="),
    (["checkpoint", "convert", CK, "dst", "--to", "official"], "to="),
    (["checkpoint", "convert", CK, "dst", "to=official", "--raw"], "weights=raw"),
    # augmentations: num_augmentations= outside the data group, --num-aug inside it
    (["adapt", CK, "tasks.json", "out=x", "steps=1", "num_aug=8"], "num_augmentations="),
    (["adapt", CK, "tasks.json", "out=x", "steps=1", "--num-aug", "8"], "num_augmentations="),
    (["eval", CK, DATA, "num_aug=2"], "num_augmentations="),
    (["eval", CK, DATA, "eval.num_augmentations=2"], "num_augmentations="),
    (["score", DATA, "raw.npz", "--num-aug", "2"], "num_augmentations="),
    (["train", "tiny", "num_aug=2"], "eval.num_augmentations="),
    ([*BUILD, "num_augmentations=8"], "--num-aug"),
    ([*BUILD, "--num-augmentations", "8"], "--num-aug"),
    # batch size: global_batch_size=
    (["eval", CK, DATA, "batch_size=4"], "global_batch_size="),
    (["eval", CK, DATA, "--batch-size", "4"], "global_batch_size="),
    (["eval", CK, DATA, "eval.global_batch_size=4"], "global_batch_size="),
    (["train", "tiny", "batch_size=4"], "global_batch_size="),
    # task limit: max_tasks= (eval.max_tasks inside a config)
    (["eval", CK, DATA, "eval.max_tasks=3"], "max_tasks="),
    (["score", DATA, "raw.npz", "--max-tasks", "3"], "max_tasks="),
    (["train", "tiny", "max_tasks=3"], "eval.max_tasks="),
    # where to write: out= (run_dir= for train, --output-dir in the data group)
    (["eval", CK, DATA, "--out", "x"], "out="),
    (["eval", CK, DATA, "--output-dir", "x"], "out="),
    (["eval", CK, DATA, "run_dir=x"], "out="),
    (["score", DATA, "raw.npz", "--out", "x"], "out="),
    (["report", RUN, "--out", "x.html"], "out="),
    (["demo", "--out", "x"], "out="),
    (["demo", "--data", "x"], "data="),
    (["demo", "run_dir=x"], "out="),
    (["report", RUN, "output_dir=x"], "out="),
    (["adapt", CK, "tasks.json", "steps=1", "--out", "x"], "out="),
    (["train", "tiny", "out=x"], "run_dir="),
    (["train", "tiny", "--output-dir", "x"], "run_dir="),
    ([*BUILD, "out=x"], "--output-dir"),
    (["checkpoint", "push", CK, "hf://me/x", "--dry-run", "--out", "x"], "out="),
    (["checkpoint", "push", CK, "hf://me/x", "--layout", "official"], "layout="),
    # device, weights, seed, config files, formats: key=value
    (["eval", CK, DATA, "--device", "cpu"], "device="),
    (["eval", CK, DATA, "--weights", "raw"], "weights="),
    (["eval", CK, DATA, "--raw"], "weights=raw"),
    (["adapt", CK, "tasks.json", "out=x", "steps=1", "--seed", "3"], "seed="),
    (["train", "tiny", "--seed", "3"], "seed="),
    (["train", "tiny", "--config", "extra.yaml"], "config="),
    (["config", "show", "tiny", "--config", "extra.yaml"], "config="),
    (["config", "show", "tiny", "--format", "yaml"], "format="),
    (["config", "diff", "tiny", "trm-arc1", "--format", "json"], "format="),
]


def _words(value: object) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


@pytest.mark.parametrize("argv, spelling", OLD_SPELLINGS, ids=_words)
def test_old_spellings_fail_with_a_suggestion(argv, spelling, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written: the directory stays empty
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trmlab: error: "), err
    assert f"did you mean {spelling}" in err or f"or {spelling}" in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    ([], "a command is needed"),
    (["evl"], "did you mean eval?"),
    (["eval"], "the following arguments are required: CKPT, DATA"),
    (["data"], "a subcommand is needed"),
    (["checkpoint", "convrt"], "did you mean convert?"),
    ([*BUILD, "--num-au", "3"], "did you mean --num-aug?"),   # no abbreviations: one spelling per option
    (["report", RUN, "top=0"], "top=0: must be at least 1"),
    (["eval", CK, DATA, "max_tasks=x"], "max_tasks=x: is not an integer"),
    (["checkpoint", "convert", CK, "dst"], "to=trmlab|official|research is required"),
])
def test_usage_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trmlab: error: ") and message in err, err
    assert "usage:" not in err


def test_every_problem_is_reported_at_once(capsys):
    assert main(["eval", CK, DATA, "batch_size=4", "max_tasks=0", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err and "global_batch_size=" in err and "at least 1" in err and "out=" in err
