"""The config walkthrough shown by ``make demo`` until training lands."""

from __future__ import annotations

from trmlab.config.diff import diff_table, format_diff_table
from trmlab.config.loader import load_config
from trmlab.config.show import render_show

_SHOWN_ROWS = 26


def walkthrough() -> str:
    """``config show trm-arc1`` (abridged) and ``config diff trm-arc1 trm-arc1-repo-default``, as text."""
    shown = render_show("trm-arc1", load_config("trm-arc1")).splitlines()
    hidden = len(shown) - _SHOWN_ROWS
    released, repo_default = load_config("trm-arc1").config, load_config("trm-arc1-repo-default").config
    pairs = [("trm-arc1", released), ("trm-arc1-repo-default", repo_default)]
    status = 1 if any(row.differs for row in diff_table(pairs)) else 0
    parts = [
        "trmlab configs: every value has a type, a source, and a check.",
        "",
        "$ trmlab config show trm-arc1",
        *shown[:_SHOWN_ROWS],
        f"  ... ({hidden} more rows: run `trmlab config show trm-arc1`)",
        "",
        "The released ARC-AGI-1 checkpoint was trained with L_cycles 4 and EMA on; the official repository's",
        "defaults say L_cycles 6 and EMA off. trmlab ships both recipes and shows the difference:",
        "",
        "$ trmlab config diff trm-arc1 trm-arc1-repo-default",
        format_diff_table(pairs),
        f"(exit status {status}: scripts can gate on it)",
    ]
    return "\n".join(parts) + "\n"
