"""``trmlab data inspect DIR``: what a built dataset holds, its grid sizes, and a few examples drawn.

Works on any dataset in the official layout (built by trmlab or the official code) and on the encoder layout.
Grid sizes come from the token layout (a grid's cells are colour tokens ≥ 2, its surroundings EOS/PAD), read
in chunks from the memory-mapped inputs, so even the 3.3 GB ARC-AGI-1 train split does not load into RAM.
Sudoku and Maze datasets (no ``test_puzzles.json``) fill the whole board: they are drawn as boards in their
own characters (digits and '.' for blanks; the maze charset ``# SGo``), without a size histogram.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from trmlab.data.build_maze import MAZE_CHARSET
from trmlab.data.format import COLOR_OFFSET, SPLITS
from trmlab.errors import ConfigError, DataError

# ARC's usual palette (colour 0..9), for the PNG.
ARC_COLOURS = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B",
               "#7FDBFF", "#870C25")
CHUNK_ROWS = 65536
DEFAULT_MAX_SCAN = 200_000


def grid_sizes(tokens: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Height and width of the grid in each row of ``tokens`` [N, side²] (rows/columns holding a colour)."""
    board = tokens.reshape(-1, side, side) >= COLOR_OFFSET
    return board.any(axis=2).sum(axis=1), board.any(axis=1).sum(axis=1)


def crop(tokens: np.ndarray, side: int) -> np.ndarray:
    """The grid (colours 0..9) inside one row of tokens, wherever it sits on the canvas."""
    board = np.asarray(tokens).reshape(side, side)
    colour = board >= COLOR_OFFSET
    if not colour.any():
        return np.zeros((0, 0), dtype=np.uint8)
    rows, cols = np.flatnonzero(colour.any(axis=1)), np.flatnonzero(colour.any(axis=0))
    return (board[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] - COLOR_OFFSET).astype(np.uint8)


def _side(seq_len: int, where: Path) -> int:
    side = round(seq_len**0.5)
    if side * side != seq_len:
        raise DataError(f"{where}: seq_len {seq_len} is not a square canvas; inspect reads grid datasets "
                        f"only")
    return side


def _size_histogram(dataset, side: int, max_scan: int) -> dict[str, Any]:
    """Histogram of grid sizes over the inputs (all of them, or an evenly spaced sample of ``max_scan``)."""
    total = dataset.num_examples
    rows = np.arange(total) if total <= max_scan else np.linspace(0, total - 1, max_scan).astype(np.int64)
    heights, widths = [], []
    for start in range(0, rows.size, CHUNK_ROWS):
        h, w = grid_sizes(dataset.gather("inputs", rows[start:start + CHUNK_ROWS]), side)
        heights.append(h)
        widths.append(w)
    h = np.concatenate(heights) if heights else np.zeros(0, np.int64)
    w = np.concatenate(widths) if widths else np.zeros(0, np.int64)
    longest = Counter(np.maximum(h, w).tolist())
    shapes = Counter(f"{a}x{b}" for a, b in zip(h.tolist(), w.tolist()))
    return {"scanned": int(rows.size), "of": total,
            "max_side": {int(k): v for k, v in sorted(longest.items())},
            "common_shapes": shapes.most_common(5)}


def board(tokens: np.ndarray, side: int, kind: str) -> np.ndarray:
    """A whole Sudoku / Maze board [side, side] of single characters (what the puzzle file showed)."""
    tokens = np.asarray(tokens).reshape(side, side).astype(np.int64)
    if kind == "sudoku":  # token 1 = blank, d + 1 = digit d
        chars = ["?", "."] + [str(d) if d < 10 else chr(ord("A") + d - 10) for d in range(1, side + 1)]
    elif kind == "maze":
        chars = ["?", *MAZE_CHARSET]
    else:  # another non-ARC grid task: the raw tokens, one character each
        chars = [str(t) if t < 10 else chr(ord("a") + t - 10) for t in range(36)]
    known = (tokens >= 0) & (tokens < len(chars))  # anything else shows as '?', never as another character
    return np.where(known, np.array(chars)[np.where(known, tokens, 0)], "?")


def _kind(root: Path, dataset: Any) -> str:
    """``arc`` (a test_puzzles.json beside the splits: ARC and synthetic builds), ``sudoku``, ``maze`` or
    ``grid`` (the evaluator's own classification of the other datasets)."""
    if (root / "test_puzzles.json").is_file() or dataset.layout == "encoder":
        return "arc"
    from trmlab.evaluation.grid import dataset_task

    return dataset_task(dataset)


def _split_summary(root: Path, split: str, examples: int, max_scan: int) -> dict[str, Any]:
    from trmlab.data.dataset import ArcDataset

    dataset = ArcDataset([root], split)
    side = _side(dataset.seq_len, root / split / "dataset.json")
    kind = _kind(root, dataset)
    summary: dict[str, Any] = {
        "layout": dataset.layout, "kind": kind, "seq_len": dataset.seq_len, "canvas": side,
        "groups": dataset.total_groups, "puzzles": dataset.num_puzzles, "examples": dataset.num_examples,
        "identifiers_used": int(np.unique(dataset.puzzle_identifiers).size),
        "num_puzzle_identifiers": dataset.num_puzzle_identifiers,
        "sizes": _size_histogram(dataset, side, max_scan) if kind == "arc" else None,
    }
    if dataset.num_demos is not None:
        summary["demos"] = int(dataset.num_demos.sum())
        summary["queries"] = int(dataset.item_counts().sum())
        summary["max_demos"] = dataset.max_demos
    names = _names(root)
    drawn = []
    # The first example of the first puzzles of evenly spaced groups: original tasks, deterministic.
    groups = np.unique(np.linspace(0, dataset.total_groups - 1, max(examples, 0)).astype(np.int64)) \
        if examples and dataset.total_groups else []
    for group in groups:
        puzzle = int(dataset.group_indices[group])
        example = int(dataset.puzzle_indices[puzzle])
        identifier = int(dataset.puzzle_identifiers[puzzle])
        tokens = {key: dataset.gather(key, [example])[0] for key in ("inputs", "labels")}
        drawn.append({
            "puzzle": names[identifier] if names and identifier < len(names) else f"identifier {identifier}",
            "example": example,
            "demo": bool(dataset.num_demos is not None and dataset.num_demos[puzzle] > 0),
            "input": crop(tokens["inputs"], side) if kind == "arc" else board(tokens["inputs"], side, kind),
            "output": crop(tokens["labels"], side) if kind == "arc" else board(tokens["labels"], side, kind),
        })
    summary["drawn"] = drawn
    return summary


def _names(root: Path) -> list[str] | None:
    path = root / "identifiers.json"
    return json.loads(path.read_text()) if path.is_file() else None


def inspect_dataset(root: str | Path, examples: int = 2, max_scan: int = DEFAULT_MAX_SCAN) -> dict[str, Any]:
    """Counts, grid-size histogram and ``examples`` drawn examples of every split under ``root``."""
    root = Path(root)
    if examples < 0 or max_scan < 1:
        raise ConfigError("--examples must be ≥ 0 and --max-scan ≥ 1")
    splits = [s for s in SPLITS if (root / s / "dataset.json").is_file()]
    if not splits:
        raise DataError(f"{root}: no train/dataset.json or test/dataset.json; point at a dataset directory "
                        f"built by `trmlab data build-arc` / `build-synthetic` or the official builder")
    return {"path": str(root), "splits": {s: _split_summary(root, s, examples, max_scan) for s in splits},
            "identifiers_json": (root / "identifiers.json").is_file(),
            "test_puzzles": _count_test_puzzles(root)}


def _count_test_puzzles(root: Path) -> int | None:
    path = root / "test_puzzles.json"
    return len(json.loads(path.read_text())) if path.is_file() else None


def grid_text(grid: np.ndarray) -> list[str]:
    """A grid as lines of colour digits (0 = black shown as '.'); a board of characters as it is."""
    if grid.dtype.kind == "U":
        return ["".join(row) for row in grid]
    return ["".join("." if v == 0 else str(int(v)) for v in row) for row in grid]


def _side_by_side(left: list[str], right: list[str], gap: str = "  ->  ") -> list[str]:
    width = max((len(line) for line in left), default=0)
    lines = []
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        lines.append(f"    {a.ljust(width)}{gap if i == 0 else ' ' * len(gap)}{b}".rstrip())
    return lines


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of :func:`inspect_dataset`'s result."""
    lines = [f"dataset {report['path']}"]
    if report["test_puzzles"] is not None:
        lines.append(f"  test_puzzles.json: {report['test_puzzles']} tasks")
    if not report["identifiers_json"]:
        lines.append("  identifiers.json: MISSING (names unknown; evaluation needs it)")
    for split, s in report["splits"].items():
        what = "" if s["kind"] == "arc" else f", {s['kind']} boards"
        lines.append(f"{split}: layout {s['layout']}{what}, canvas {s['canvas']}x{s['canvas']} "
                     f"(seq_len {s['seq_len']})")
        lines.append(f"  groups {s['groups']:,}  puzzles {s['puzzles']:,}  examples {s['examples']:,}  "
                     f"identifiers used {s['identifiers_used']:,} of {s['num_puzzle_identifiers']:,}")
        if "demos" in s:
            lines.append(f"  demos {s['demos']:,}  queries (targets) {s['queries']:,}  "
                         f"max demos per puzzle {s['max_demos']}")
        sizes = s["sizes"]
        if sizes is not None:
            sample = "" if sizes["scanned"] == sizes["of"] else \
                f" (evenly spaced sample of {sizes['scanned']:,})"
            lines.append(f"  input grid size (longest side){sample}:")
            peak = max(sizes["max_side"].values(), default=1)
            for side, count in sizes["max_side"].items():
                lines.append(f"    {side:>3} {'#' * max(1, round(30 * count / peak))} {count:,}")
            common = ", ".join(f"{shape} ({count:,})" for shape, count in sizes["common_shapes"])
            lines.append(f"  most common shapes: {common}")
        for item in s["drawn"]:
            kind = " (demo)" if item["demo"] else ""
            lines.append(f"  example {item['example']} of {item['puzzle']}{kind}: "
                         f"{'x'.join(map(str, item['input'].shape))} -> "
                         f"{'x'.join(map(str, item['output'].shape))}")
            lines.extend(_side_by_side(grid_text(item["input"]), grid_text(item["output"])))
    return "\n".join(lines)


def draw_png(report: dict[str, Any], output: str | Path) -> Path:
    """Draw every drawn example (input | output) with the ARC palette into a PNG (needs the [viz] extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError:
        raise ConfigError("--png needs matplotlib: install the viz extra (pip install 'trmlab[viz]')") \
            from None
    if any(s["kind"] != "arc" for s in report["splits"].values()):
        raise ConfigError("--png draws ARC colour grids; Sudoku / Maze boards are shown as text only (drop "
                          "--png)")
    items = [(split, item) for split, s in report["splits"].items() for item in s["drawn"]]
    if not items:
        raise ConfigError("--png: nothing to draw (use --examples K with K ≥ 1)")
    figure, axes = plt.subplots(len(items), 2, figsize=(6, 3 * len(items)), squeeze=False)
    colours = ListedColormap(ARC_COLOURS)
    for row, (split, item) in enumerate(items):
        for col, key in enumerate(("input", "output")):
            axis = axes[row][col]
            axis.imshow(item[key], cmap=colours, vmin=0, vmax=9, interpolation="nearest")
            axis.set_title(f"{split} {item['puzzle']} {key}", fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout()
    output = Path(output)
    temporary = output.with_name(f".{output.name}.tmp.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    temporary.replace(output)  # never leave a half-written PNG under the requested name
    return output
