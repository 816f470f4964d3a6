"""``trmlab checkpoint known`` (the published TRM checkpoints) and ``trmlab checkpoint push`` (to the Hub)."""

from __future__ import annotations

import argparse
import json
import sys

from trmlab.grammar import Setting, add_settings, boolean, parse_words

PUSH_SETTINGS = (
    Setting("private", "true|false", "a new repository only (default false)", boolean),
    Setting("layout", "trmlab|official", "official: the step_N + all_config.yaml export (default trmlab)",
            choices=("trmlab", "official")),
    Setting("out", "DIR", "--dry-run: where the folder goes (default runs/push-ORG--REPO, a fresh name)"),
)


def register_hub_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``known`` and ``push`` to the ``checkpoint`` group."""
    known = commands.add_parser(
        "known", help="the published TRM checkpoints: Hub path, task, dataset needed, score, verified",
        description="List the published TRM checkpoints trmlab knows: their hf:// path, task and "
        "architecture, the dataset they need (recipe, identifier count, seq_len, layout) with the command "
        "that builds it, the published score with its source, and what trmlab has verified about them. "
        "`trmlab eval` on one of these paths checks the dataset against it before downloading anything.")
    known.add_argument("--json", action="store_true", help="print the table as one JSON object")
    known.set_defaults(func=_known)

    push = commands.add_parser(
        "push", help="upload a trmlab checkpoint to the Hub with a model card that carries its exact config",
        description="Upload CKPT (a trmlab step_N/ directory) to the Hub model repository REPO with a "
        "generated README.md: every architecture key that differs from the official repository's defaults, "
        "the full resolved config, provenance, dataset fingerprint and recipe, the run's evaluation metrics, "
        "and the commands that load and evaluate it. Needs network and a token (hf auth login or HF_TOKEN).",
        epilog="--dry-run writes the folder and uploads nothing.")
    push.add_argument("checkpoint", metavar="CKPT", help="a trmlab step_N/ checkpoint directory (or hf://)")
    push.add_argument("repo", metavar="REPO", help="hf://ORG/REPO, the model repository to upload to")
    add_settings(push, PUSH_SETTINGS)
    push.add_argument("--dry-run", action="store_true", help="write the folder that would be uploaded; stop")
    push.add_argument("--overwrite", action="store_true", help="--dry-run: replace an existing out=DIR")
    push.set_defaults(func=_push)


def _known(args: argparse.Namespace) -> int:
    from trmlab.interop.releases import format_releases, releases_as_json

    if args.json:
        print(json.dumps({"releases": releases_as_json()}, indent=2))
    else:
        sys.stdout.write(format_releases())
    return 0


def _push(args: argparse.Namespace) -> int:
    from trmlab.interop.push import PushSettings, push

    settings, _ = parse_words(args.settings, PUSH_SETTINGS, "trmlab checkpoint push")
    request = PushSettings(args.checkpoint, args.repo, private=settings.get("private", False),
                           layout=settings.get("layout", "trmlab"), out=settings.get("out"),
                           dry_run=args.dry_run, overwrite=args.overwrite)
    result = push(request)
    if args.dry_run:
        kept = "".join(f" {word}" for word in args.settings if not word.startswith("out="))
        print(f"wrote {result} (README.md = the model card); nothing uploaded. Upload it with: "
              f"trmlab checkpoint push {args.checkpoint} {args.repo}{kept}")
    else:
        print(f"uploaded {args.checkpoint} to {args.repo}: {result}")
    return 0
