"""CLI for trmlab.config (placeholder until its commands land)."""

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this module's subcommands (none yet)."""
