"""The command-line grammar every ``trmlab`` command shares (``../shared/style/cli.md``, ``docs/cli.md``).

- Settings are ``key=value`` words, typed and checked; every problem of a command line is reported at once.
- One name per concept: a spelling that another command (or an earlier trmlab) used for the same idea is
  refused with "did you mean" and this command's own spelling, never silently accepted.
- argparse's own usage errors become one line ``trmlab: error: ...`` (exit 2) that says to run ``--help``.

Light on purpose (no torch, no config loading until a config key has to be checked): ``trmlab --help``
imports it.
"""

from __future__ import annotations

import argparse
import difflib
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trmlab.errors import TrmlabError


class UsageError(TrmlabError):
    """The command line itself is wrong: an unknown option or setting, a missing argument, an old spelling."""


# Each concept and every spelling of it seen across commands. A command answers a spelling of a concept
# with its own name for it (a setting `key=`, a data-group flag, or a config key where overrides go).
CONCEPT_SPELLINGS: tuple[tuple[str, ...], ...] = (
    ("out", "output", "output_dir", "out_dir", "outdir", "run_dir"),                       # where to write
    ("num_augmentations", "num_aug", "num_augs", "augmentations", "aug",
     "eval.num_augmentations"),                                                             # augmentations
    ("global_batch_size", "batch_size", "eval_batch_size", "eval.global_batch_size"),      # batch size
    ("max_tasks", "eval.max_tasks", "max_eval_groups", "num_tasks", "tasks_limit"),        # task limit
    ("device",),
    ("weights", "use_ema", "ema_weights"),
    ("seed",),
    ("preset",),
    ("seq_len",),
    ("config", "config_file"),
    ("format",),
    ("to",),
)

# Flags that stood for a setting with a fixed value.
FLAG_AS_SETTING = {"--raw": "weights=raw", "--ema": "weights=ema", "--set": "key=value without --set"}


def _bare(spelling: str) -> str:
    """``--num-aug 8`` / ``--seq-len=36`` / ``num_aug=8`` → the comparable name ``num_aug`` / ``seq_len``."""
    return spelling.split("=", 1)[0].lstrip("-").replace("-", "_")


def boolean(text: str) -> bool:
    """``true`` / ``false``; anything else is a ValueError (never a silently truthy string)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ValueError(text)


_KIND_NAMES: dict[Any, str] = {int: "an integer", float: "a number", str: "text", boolean: "true or false"}


@dataclass(frozen=True)
class Setting:
    """One ``key=value`` setting of a command: its type, allowed values and help line."""

    name: str
    metavar: str
    help: str
    kind: Callable[[str], Any] = str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    repeatable: bool = False   # given several times: a list, in command-line order
    required: bool = False
    kind_name: str = ""        # what a valid value is, for errors (default: from ``kind``)

    def parse(self, text: str) -> Any:
        """The typed value of ``text``; raises ValueError with the problem (no key, no command)."""
        if self.choices and text not in self.choices:
            raise ValueError(f"choose {' or '.join(self.choices)}")
        try:
            value = self.kind(text)
        except ValueError:
            raise ValueError(f"is not {self.kind_name or _KIND_NAMES.get(self.kind, self.metavar)}") from None
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}")
        return value


# ------------------------------------------------------------------------------------------ parsing words


def parse_words(words: Sequence[str], settings: Sequence[Setting], command: str, *,
                overrides: bool = False, earlier: Sequence[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """Split ``key=value`` words into this command's settings (typed) and config overrides.

    ``overrides``: keys that are not settings are config overrides (checked against the schema here, their
    values later by the config layer); otherwise they are errors. Every problem is collected and raised as
    one :class:`UsageError` (after the ``earlier`` problems, e.g. from :func:`take_flags`); an old spelling of
    a concept is answered with this command's spelling.
    """
    values, passed, problems = _read_words(words, settings, command, overrides)
    raise_usage([*earlier, *problems], command)
    return values, passed


def _read_words(words: Sequence[str], settings: Sequence[Setting], command: str, overrides: bool,
                check_required: bool = True) -> tuple[dict[str, Any], list[str], list[str]]:
    by_name = {s.name: s for s in settings}
    values: dict[str, Any] = {}
    passed: list[str] = []
    problems: list[str] = []
    for word in words:
        key, sep, text = word.partition("=")
        key = key.strip()
        if key in by_name and sep:
            problems += _take(by_name[key], text, values)
        elif sep and overrides and _is_config_key(key):
            passed.append(word)
        else:
            problems.append(_unknown_word(word, command, settings, (), overrides))
    problems += [f"{s.name}={s.metavar} is required" for s in settings
                 if check_required and s.required and s.name not in values]
    return values, passed, problems


def _take(setting: Setting, text: str, values: dict[str, Any]) -> list[str]:
    if not text.strip():
        return [f"{setting.name}= is empty; give {setting.name}={setting.metavar}"]
    try:
        value = setting.parse(text.strip())
    except ValueError as error:
        return [f"{setting.name}={text}: {error}"]
    if setting.repeatable:
        values.setdefault(setting.name, []).append(value)
    elif setting.name in values:
        return [f"{setting.name} is given twice; keep one"]
    else:
        values[setting.name] = value
    return []


def raise_usage(problems: list[str], command: str) -> None:
    """Raise one UsageError for ``problems`` (none: nothing), in the config layer's style."""
    if not problems:
        return
    if len(problems) == 1:
        raise UsageError(f"{command}: {problems[0]}")
    listed = "\n  - ".join(problems)
    raise UsageError(f"{command}: {len(problems)} problems on the command line:\n  - {listed}")


def _is_config_key(key: str) -> bool:
    from trmlab.config.fields import schema_fields

    return key in schema_fields()


def _unknown_word(word: str, command: str, settings: Sequence[Setting], flags: Sequence[str],
                  overrides: bool) -> str:
    """The problem for a word this command does not take, with the closest spelling it does take."""
    is_flag = word.startswith("-")
    shown = word.split("=", 1)[0] if is_flag else word
    what = "option" if is_flag else ("setting" if "=" in word else "argument")
    if not is_flag and "=" not in word:
        return f"{word!r} is not key=value (settings are key=value; run `{command} --help`)"
    hint = suggestion(word, settings, flags, overrides)
    if hint:
        return f"unknown {what} {shown}: did you mean {hint}?"
    if overrides and not is_flag:
        from trmlab.config.fields import unknown_key_message

        return unknown_key_message(_bare(word), "command line")
    names = ", ".join([f"{s.name}=" for s in settings] + list(flags)) or "none"
    return f"unknown {what} {shown} ({command} takes: {names})"


def suggestion(word: str, settings: Sequence[Setting], flags: Sequence[str], overrides: bool) -> str | None:
    """This command's spelling of what ``word`` (``--num-aug``, ``num_aug=8``, ``--raw``) meant, or None.

    Order: a flag that stood for a fixed setting; the same name as a setting or flag (dashes ↔ underscores);
    another spelling of the same concept; a config key of that concept (commands taking overrides); a close
    match (difflib).
    """
    flag = word.split("=", 1)[0]
    names = {s.name: f"{s.name}=" for s in settings}
    names.update({_bare(f): f for f in flags})
    if overrides:
        from trmlab.config.fields import schema_fields

        config_keys = list(schema_fields())
    else:
        config_keys = []
    if word.startswith("-") and flag in FLAG_AS_SETTING:
        target = FLAG_AS_SETTING[flag]
        if target.split("=")[0] in names or (target.startswith("key=value") and overrides):
            return target
    bare = _bare(word)
    if bare in names and names[bare] != flag:
        return names[bare]
    for spellings in CONCEPT_SPELLINGS:
        if bare not in spellings:
            continue
        own = [names[s] for s in spellings if s in names] or [f"{k}=" for k in spellings if k in config_keys]
        if own:
            return " or ".join(own)
    close = difflib.get_close_matches(bare, list(names), n=1, cutoff=0.7)
    return names[close[0]] if close else None


# ------------------------------------------------------------------------------------------ the parser


class Parser(argparse.ArgumentParser):
    """argparse with trmlab's grammar: no abbreviated options (a second spelling), and usage errors as one
    line with "did you mean" and the ``--help`` to run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.settings_spec: tuple[Setting, ...] = ()
        self.accepts_overrides = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        if not hasattr(parsed, "_grammar_leaf"):  # the innermost (sub)command parser returns first
            parsed._grammar_leaf = self
        return parsed, extras

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        leaf = vars(parsed).pop("_grammar_leaf", self)
        if extras:  # named by the subcommand that would have taken them, with its own spellings
            leaf.error("unrecognized arguments: " + " ".join(extras), getattr(parsed, "settings", None))
        return parsed

    def error(self, message: str, settings: Sequence[str] | None = None) -> Any:  # argparse: never returns
        """Raise the one-line UsageError; for unknown options, with this command's spelling of each and the
        problems of the ``settings`` words parsed so far (every problem at once)."""
        unknown = re.fullmatch(r"unrecognized arguments: (.*)", message)
        if unknown:
            problems = [self._unknown(word) for word in unknown.group(1).split() if self._is_unwanted(word)]
            if settings and self.settings_spec:
                # A required setting given as an unknown option (--out for out=) is named once: as that.
                words = _read_words(settings, self.settings_spec, self.prog, self.accepts_overrides,
                                    check_required=False)
                problems = words[2] + problems
            problems = list(dict.fromkeys(problems))  # each once, in order
            if len(problems) > 1:
                raise_usage(problems, f"{self.prog} (run `{self.prog} --help`)")
            message = problems[0] if problems else message
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2)) or choice.group(2).split(", ")
            close = difflib.get_close_matches(choice.group(1), options, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]}?"
        where = "" if self.prog == "trmlab" else f"{self.prog}: "
        raise UsageError(f"{where}{message} (run `{self.prog} --help`)")

    def _flags(self) -> list[str]:
        return [s for s in self._option_string_actions if s.startswith("--") and s != "--help"]

    def _is_unwanted(self, word: str) -> bool:
        # After an unknown option, argparse leaves its value (and later words) unparsed too: name the options
        # and the key=value words this command does not take, not the values and settings that follow them.
        if word.startswith("-"):
            return True
        key, sep, _ = word.partition("=")
        if not sep or key in {s.name for s in self.settings_spec}:
            return False
        return not (self.accepts_overrides and _is_config_key(key))

    def _unknown(self, word: str) -> str:
        return _unknown_word(word, self.prog, self.settings_spec, self._flags(), self.accepts_overrides)


def add_settings(parser: argparse.ArgumentParser, settings: Sequence[Setting], *, overrides: str = "",
                 positional: bool = True) -> None:
    """Give ``parser`` its ``key=value`` settings: the positional words, and a ``settings:`` block (one line
    per setting, ``  key=VALUE  help``, the form tests/test_cli_grammar.py reads) before its epilog.

    ``overrides``: the help line for plain config overrides (``KEY=VALUE``) when the command takes them.
    """
    if positional:
        parser.add_argument("settings", nargs="*", metavar="key=value", help="settings (below)")
    if isinstance(parser, Parser):
        parser.settings_spec = tuple(settings)
        parser.accepts_overrides = bool(overrides)
    lines = [_setting_line(f"{s.name}={s.metavar}", s.help + (" (required)" if s.required else ""))
             for s in settings]
    if overrides:
        lines.append(_setting_line("KEY=VALUE", overrides))
    block = "settings:\n" + "\n".join(lines)
    parser.epilog = block + (f"\n\n{parser.epilog}" if parser.epilog else "")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _setting_line(left: str, text: str, width: int = 100, column: int = 26) -> str:
    head = f"  {left}".ljust(column - 1) + " "
    if len(head) > column:
        head = f"  {left}\n" + " " * column
    return head + ("\n" + " " * column).join(textwrap.wrap(text, width - column))


def require_subcommand(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The ``func`` of a command group run without its subcommand (``trmlab data``): a usage error."""

    def missing(_args: argparse.Namespace) -> int:
        commands = [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                    for name in action.choices]
        raise UsageError(f"{parser.prog}: a subcommand is needed ({', '.join(commands)}); "
                         f"run `{parser.prog} --help`")

    return missing


def take_flags(words: Sequence[str], flags: Sequence[str], command: str, settings: Sequence[Setting] = (),
               overrides: bool = False) -> tuple[list[str], set[str], list[str]]:
    """(the other words, the mode flags seen, problems) for words that may hold value-less flags anywhere
    (argparse ``REMAINDER`` leaves them there); any other option is a problem, with this command's spelling
    of it (pass the problems to :func:`parse_words` to report them with the settings')."""
    rest: list[str] = []
    seen: set[str] = set()
    problems: list[str] = []
    after_unknown = False
    for word in words:
        if word in flags:
            seen.add(word)
        elif word.startswith("-"):
            problems.append(_unknown_word(word, command, settings, flags, overrides))
            after_unknown = "=" not in word
            continue
        elif not (after_unknown and "=" not in word):  # the value of an unknown option is not named again
            rest.append(word)
        after_unknown = False
    return rest, seen, problems
