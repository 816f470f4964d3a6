"""Report pictures of Sudoku and Maze evaluations: each test puzzle's input, target and prediction.

An eval directory of a grid dataset (``metrics.json`` with ``"task"``: sudoku, maze or grid) holds
``raw_predictions.npz`` (inputs and final-step predictions, one row per test puzzle in file order); targets
come from the dataset recorded in ``metrics.json``. Sudoku grids are drawn as HTML tables (givens bold on
grey, predicted digits green when right, red with the target beside them when wrong, a given the model changed
red with a dark frame); mazes as PNG images (wall black, open white, S green, G red, path blue; wrong cells
of the prediction magenta). Each view opens with a legend of its colours.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from trmlab.data.build_sudoku import SUDOKU_BOXES
from trmlab.reports.png import encode_png, grid_image

GRID_TASKS = ("sudoku", "maze", "grid")
# Maze tokens 0..5: PAD, wall, open, start, goal, path; 6 marks a wrong cell in a prediction.
MAZE_PALETTE = np.array([(0xEE, 0xEE, 0xEE), (0x22, 0x22, 0x22), (0xFF, 0xFF, 0xFF), (0x2E, 0xCC, 0x40),
                         (0xFF, 0x41, 0x36), (0x00, 0x74, 0xD9), (0xF0, 0x12, 0xBE)], dtype=np.uint8)
WRONG = 6
STYLE = """
table.sudoku{border-collapse:collapse;margin:0;font-family:monospace;font-size:1em}
table.sudoku td{width:1.7em;height:1.7em;text-align:center;border:1px solid #bbb;padding:0}
table.sudoku td.given{font-weight:bold;background:#e4e4e4} table.sudoku td.ok{color:#1a7a1a}
table.sudoku td.bad{color:#fff;background:#c33} table.sudoku td sub{font-size:.6em;color:#fdd}
table.sudoku td.given.bad{background:#c33;color:#fff;box-shadow:inset 0 0 0 2px #500}
table.sudoku td.br{border-right:2px solid #333} table.sudoku td.bb{border-bottom:2px solid #333}
"""


def _sudoku_table(tokens: np.ndarray, givens: np.ndarray, target: np.ndarray | None, caption: str) -> str:
    side = math.isqrt(tokens.size)
    box_rows, box_cols = SUDOKU_BOXES.get(side, (side, side))
    cells = []
    for r in range(side):
        row = []
        for c in range(side):
            i = r * side + c
            css = ["br"] if (c + 1) % box_cols == 0 and c + 1 < side else []
            css += ["bb"] if (r + 1) % box_rows == 0 and r + 1 < side else []
            value = int(tokens[i]) - 1  # tokens are value + 1 (blank 1)
            text = str(value) if value > 0 else ""
            given = givens[i] > 1
            # A given is never to be changed: a prediction that changes one is wrong, however it looks.
            expected = target[i] if target is not None else givens[i] if given else None
            css += ["given"] if given else []
            if expected is not None and tokens[i] != expected:
                css.append("bad")  # the right digit beside the wrong one ("·" for a predicted blank)
                text = f"{text or '·'}<sub>{int(expected) - 1}</sub>"
            elif expected is not None and not given:
                css.append("ok")
            row.append(f'<td class="{" ".join(css)}">{text}</td>')
        cells.append(f"<tr>{''.join(row)}</tr>")
    return (f'<figure><table class="sudoku">{"".join(cells)}</table>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def legend(entries: list[tuple[str, str]], title: str = "legend") -> str:
    """A row of colour keys: (swatch HTML, meaning) pairs, shown above the pictures they explain."""
    keys = "".join(f'<span class="key">{swatch}<span class="meaning">{html.escape(meaning)}</span></span>'
                   for swatch, meaning in entries)
    return f'<div class="legend" role="note"><b>{html.escape(title)}:</b>{keys}</div>'


def swatch(background: str, text: str = "", style: str = "") -> str:
    """One legend key's square (``background`` a CSS colour)."""
    return f'<span class="swatch" style="background:{background};{style}">{text}</span>'


def sudoku_legend() -> str:
    return legend([
        (swatch("#e4e4e4", "<b>5</b>"), "given (from the input)"),
        (swatch("#fff", "5", "color:#1a7a1a"), "filled in right"),
        (swatch("#c33", "5<sub>7</sub>", "color:#fff"), "filled in wrong (small digit: the right one)"),
        (swatch("#c33", "<b>5</b><sub>7</sub>", "color:#fff;box-shadow:inset 0 0 0 2px #500"),
         "a given changed by the model (wrong)"),
    ], "Sudoku colours")


MAZE_KEYS = ("padding", "wall", "open", "start (S)", "goal (G)", "path", "wrong cell (prediction only)")


def maze_legend() -> str:
    colours = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in MAZE_PALETTE.tolist()]
    return legend([(swatch(c), name) for c, name in zip(colours, MAZE_KEYS) if name != "padding"],
                  "Maze colours")


def _maze_image(tokens: np.ndarray, target: np.ndarray | None, caption: str) -> str:
    import base64

    side = math.isqrt(tokens.size)
    grid = np.clip(tokens.astype(np.int64), 0, 5).reshape(side, side)
    if target is not None:
        grid = np.where(tokens.reshape(side, side) == target.reshape(side, side), grid, WRONG)
    cell = max(2, min(8, 240 // side - 1))
    png = encode_png(grid_image(grid, cell, MAZE_PALETTE))
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    return (f'<figure><img src="{uri}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
            f"</figcaption></figure>")


def _grid_text(tokens: np.ndarray, caption: str) -> str:
    side = math.isqrt(tokens.size)
    rows = tokens.reshape(side, -1) if side * side == tokens.size else tokens.reshape(1, -1)
    text = "\n".join(" ".join(str(int(v)) for v in row) for row in rows)
    return f"<figure><pre>{html.escape(text)}</pre><figcaption>{html.escape(caption)}</figcaption></figure>"


def _labels(metrics: dict[str, Any], rows: int) -> tuple[np.ndarray | None, str]:
    """The first ``rows`` test labels of the dataset recorded in metrics.json, or a note why not."""
    dataset = metrics.get("dataset")
    path = Path(dataset) / "test" / "all__labels.npy" if dataset else None
    if path is None or not path.is_file():
        return None, f"the test labels ({path}) are not readable here: targets are not shown."
    return np.load(path, mmap_mode="r", allow_pickle=False)[:rows], ""


def puzzle_section(eval_dir: Path, metrics: dict[str, Any], max_tasks: int | None) -> str:
    """Per test puzzle (the first ``max_tasks``; default 24): input, target and prediction pictures."""
    raw_path = eval_dir / "raw_predictions.npz"
    if not raw_path.is_file():
        return f"<p>{html.escape(str(raw_path))} is missing: no per-puzzle view.</p>"
    with np.load(raw_path, allow_pickle=False) as raw:
        inputs, preds = raw["inputs"], raw["preds"]
    shown = min(len(inputs), max_tasks or 24)
    labels, note = _labels(metrics, shown)
    task = metrics.get("task", "grid")
    sections, solved = [], 0
    for row in range(shown):
        target = None if labels is None else np.asarray(labels[row])
        right = target is not None and bool(np.array_equal(preds[row], target))
        solved += right
        if task == "sudoku":
            pictures = [_sudoku_table(inputs[row], inputs[row], None, "input"),
                        _sudoku_table(preds[row], inputs[row], target, "prediction")]
        elif task == "maze":
            pictures = [_maze_image(inputs[row], None, "input"),
                        _maze_image(preds[row], target, "prediction")]
            if target is not None:
                pictures.insert(1, _maze_image(target, None, "target"))
        else:
            pictures = [_grid_text(inputs[row], "input"), _grid_text(preds[row], "prediction")]
        mark = "✔ solved" if right else ("✘ unsolved" if target is not None else "")
        css = "solved" if right else "unsolved"
        sections.append(f'<section class="task {css}"><h3><span class="mark">{mark}</span> test puzzle {row}'
                        f'</h3><div class="row">{"".join(pictures)}</div></section>')
    key = {"sudoku": sudoku_legend(), "maze": maze_legend()}.get(task, "")
    head = (f"<p>{shown} of {len(inputs)} test puzzles shown"
            + (f"; {solved} of them solved (whole grid right)" if labels is not None else "")
            + f". {html.escape(note)}</p>")
    return f"<style>{STYLE}</style>{head}{key}{''.join(sections)}"
