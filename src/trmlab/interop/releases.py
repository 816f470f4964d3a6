"""The published TRM checkpoints trmlab knows, as data: where they are, what they need, what they scored.

``trmlab checkpoint known`` prints this table; ``trmlab eval hf://...`` on one of them checks the dataset
against what the release needs (layout, sequence length, puzzle identifiers) before anything is downloaded,
and on a mismatch prints the command that builds the right one.

``verified`` says honestly what trmlab has checked: "evaluated" (scored with trmlab), "loaded" (loaded with
trmlab), "layout from the card" (the file layout stated by the model card or the reference notes, not
downloaded by trmlab), "not checked" (only the score is published; the files were not seen).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trmlab.errors import DataError

ARC1_BUILD = ("git clone https://github.com/SamsungSAILMontreal/TinyRecursiveModels && "
              "trmlab data build-arc --input-file-prefix TinyRecursiveModels/kaggle/combined/arc-agi "
              "--output-dir data/arc1concept-aug-1000 --subsets training evaluation concept "
              "--test-set-name evaluation --num-aug 1000")
ARC2_BUILD = ("git clone https://github.com/SamsungSAILMontreal/TinyRecursiveModels && "
              "trmlab data build-arc --input-file-prefix TinyRecursiveModels/kaggle/combined/arc-agi "
              "--output-dir data/arc2concept-aug-1000 --subsets training2 evaluation2 concept "
              "--test-set-name evaluation2 --num-aug 1000")
SUDOKU_BUILD = ("trmlab data build-sudoku --source hf://datasets/sapientinc/sudoku-extreme "
                "--output-dir data/sudoku-extreme-1k-aug-1000 --subsample-size 1000 --num-aug 1000 --seed 0")
MAZE_BUILD = ("trmlab data build-maze --source hf://datasets/sapientinc/maze-30x30-hard-1k "
              "--output-dir data/maze-30x30-hard-1k --seed 0")
GAOXIN = ("reproduction README (github.com/gaoxin492/TinyRecursiveModels; 8 GPUs, global batch 4608); the "
          "same figure on the model card gaoxin492/TinyRecursiveModels-*")
TRELIS_NOTE = ("pre-trained on Trelis' own ARC-AGI-2 splits (TrelisResearch/TinyRecursiveModels: re-arc, "
               "tama, evaluation2 train/eval/test): its identifier count is not published, so only the "
               "layout and sequence length are checked")


@dataclass(frozen=True)
class Release:
    """One published checkpoint (or one folder of a repository holding several)."""

    repo: str                 # ORG/REPO on the Hub (a model repository)
    folder: str               # folder inside it that holds step_N + all_config.yaml ("" = the root)
    step_file: str | None     # the step_N file, when its name is known here
    task: str                 # ARC-AGI-1, ARC-AGI-2, Sudoku-Extreme, Maze-Hard
    architecture: str
    dataset: str              # the dataset the puzzle table was trained on (folder name of the recipe)
    build_command: str
    identifiers: int | None   # rows of the puzzle table = the dataset's num_puzzle_identifiers
    seq_len: int
    layout: str               # "arc" (test_puzzles.json beside the splits) or "grid" (Sudoku, Maze)
    score: str
    score_source: str
    verified: str
    note: str = ""

    @property
    def path(self) -> str:
        """The ``hf://`` path to evaluate (the folder with a trailing ``/`` when the file name is unknown)."""
        inner = "/".join(part for part in (self.folder, self.step_file) if part)
        return f"hf://{self.repo}/{inner}" + ("" if self.step_file or not inner else "/")


def _sanjin(name: str, task: str, architecture: str, dataset: str, build: str, identifiers: int, seq_len: int,
            layout: str, score: str) -> Release:
    return Release(f"Sanjin2024/TinyRecursiveModel-{name}", "", None, task, architecture, dataset, build,
                   identifiers, seq_len, layout, score, GAOXIN, "not checked",
                   "the card gives the score only; list the repository's files for the step_N name")


RELEASES: tuple[Release, ...] = (
    Release("arcprize/trm_arc_prize_verification", "arc_v1_public", "step_518071", "ARC-AGI-1",
            "TRM attention, H_cycles 3, L_cycles 4, 2 layers, hidden 512; EMA weights (ema: true)",
            "arc1concept-aug-1000", ARC1_BUILD, 876_406, 900, "arc",
            "40.0% semi-private (ARC Prize verified); ~45% public eval pass@2",
            "ARC Prize verified leaderboard; trm-reference §10", "layout from the card",
            "step_518071 (1,822,205,258 B, sha256 53689643…) beside all_config.yaml, trm.py, losses.py "
            "(trm-reference §5.6); trmlab has not downloaded it"),
    Release("arcprize/trm_arc_prize_verification", "arc_v2_public", "step_723914", "ARC-AGI-2",
            "TRM attention, 2 layers, hidden 512 (cycles from its all_config.yaml)",
            "arc2concept-aug-1000", ARC2_BUILD, 1_191_730, 900, "arc",
            "6.2% semi-private (model card; leaderboard 6.3%)", "ARC Prize verified leaderboard; model card",
            "layout from the card",
            "step_723914 (2,467,988,810 B) beside all_config.yaml (trm-reference §5.6); users report ~2% for "
            "this final step and 7-8% for an earlier one (official issue #26)"),
    _sanjin("ARC-AGI-1", "ARC-AGI-1", "TRM attention (official ARC recipe)", "arc1concept-aug-1000",
            ARC1_BUILD, 876_406, 900, "arc", "41.0% pass@2 (public eval)"),
    _sanjin("ARC-AGI-2", "ARC-AGI-2", "TRM attention (official ARC recipe)", "arc2concept-aug-1000",
            ARC2_BUILD, 1_191_730, 900, "arc", "3.33% pass@2 (public eval)"),
    _sanjin("Sudoku-Extreme-att", "Sudoku-Extreme", "TRM attention, L_cycles 6", "sudoku-extreme-1k-aug-1000",
            SUDOKU_BUILD, 1, 81, "grid", "77.7% exact (test split)"),
    _sanjin("Sudoku-Extreme-mlp", "Sudoku-Extreme", "TRM mlp_t (MLP over the sequence), L_cycles 6",
            "sudoku-extreme-1k-aug-1000", SUDOKU_BUILD, 1, 81, "grid", "84.8% exact (test split)"),
    _sanjin("Maze-Hard", "Maze-Hard", "TRM attention, L_cycles 4", "maze-30x30-hard-1k", MAZE_BUILD, 1, 900,
            "grid", "78.7% exact (test split)"),
    *(Release(f"Trelis/{name}", "", None, "ARC-AGI-2", "TRM attention (Trelis pre-training)",
              "Trelis ARC-AGI-2 splits", "see github.com/TrelisResearch/TinyRecursiveModels (its own dataset "
              "builder and splits)", None, 900, "arc",
              "~10% public eval pass@2 after test-time adaptation" if name == "TRM-ARC-AGI-II" else
              "not published separately", "Trelis paper, arXiv 2511.02886", "not checked", TRELIS_NOTE)
      for name in ("TRM-ARC-AGI-II", "TRM-ARC-AGI-II-all-200k", "TRM-ARC-AGI-II-hard-1M")),
)


def find_release(path: Any) -> Release | None:
    """The known release an ``hf://`` checkpoint path points into (any revision), else None."""
    from trmlab.interop.hub import is_hub_path, parse_hub_path

    if not is_hub_path(str(path)):
        return None
    target = parse_hub_path(str(path))
    if target.repo_type != "model":
        return None
    for release in RELEASES:
        inside = not release.folder or target.path == release.folder or target.path.startswith(
            release.folder + "/")
        if target.repo_id.lower() == release.repo.lower() and inside:
            return release
    return None


def dataset_mismatches(release: Release, data_dir: str | Path) -> list[str]:
    """How the dataset at ``data_dir`` differs from what ``release`` needs (empty when it fits)."""
    data_dir = Path(data_dir)
    meta_path = data_dir / "test" / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return [f"{meta_path} cannot be read (not a dataset built by trmlab data build-* or the official "
                "builders)"]
    problems = []
    layout = "arc" if (data_dir / "test_puzzles.json").is_file() else "grid"
    if layout != release.layout:
        wanted = "an ARC dataset (test_puzzles.json)" if release.layout == "arc" else "a Sudoku/Maze dataset"
        problems.append(f"layout: it needs {wanted}, {data_dir} is {'ARC' if layout == 'arc' else 'not ARC'}")
    if meta.get("layout", "trm") != "trm":
        problems.append(f"layout: {data_dir} is in the {meta.get('layout')} layout; the release needs the "
                        "official (trm) layout")
    if meta.get("seq_len") != release.seq_len:
        problems.append(f"seq_len: it needs {release.seq_len}, {data_dir} has {meta.get('seq_len')}")
    rows = meta.get("num_puzzle_identifiers")
    if release.identifiers is not None and rows != release.identifiers:
        has = f"{rows:,}" if isinstance(rows, int) else str(rows)
        problems.append(f"puzzle identifiers: its table has {release.identifiers:,} rows, {data_dir} has "
                        f"{has}")
    return problems


def check_release_dataset(checkpoint: Any, data_dir: str | Path) -> None:
    """For a known release: DataError (exit 2) naming each mismatch and the command that builds the dataset
    it needs; nothing for any other checkpoint."""
    release = find_release(checkpoint)
    if release is None:
        return
    problems = dataset_mismatches(release, data_dir)
    if problems:
        raise DataError(f"{checkpoint} is the {release.task} release {release.repo}"
                        f"{'/' + release.folder if release.folder else ''}, trained on {release.dataset}; "
                        f"{data_dir} does not fit it ({'; '.join(problems)}). Build the right dataset with: "
                        f"{release.build_command}")


# ----------------------------------------------------------------------------------------------- the table


def releases_as_json() -> list[dict[str, Any]]:
    """Every release as a JSON-ready dict (``trmlab checkpoint known --json``)."""
    return [{"path": release.path, **asdict(release)} for release in RELEASES]


def format_releases() -> str:
    """The table ``trmlab checkpoint known`` prints: one block per release."""
    lines = ["Published TRM checkpoints (trmlab eval PATH DATA_DIR; network needed the first time)", ""]
    for release in RELEASES:
        identifiers = f"{release.identifiers:,}" if release.identifiers is not None else "not published"
        layout = "ARC" if release.layout == "arc" else "grid"
        lines += [f"{release.path}",
                  f"  task          {release.task}: {release.architecture}",
                  f"  needs         {release.dataset} ({layout} layout, "
                  f"seq_len {release.seq_len}, {identifiers} puzzle identifiers)",
                  f"  build it      {release.build_command}",
                  f"  score         {release.score} — {release.score_source}",
                  f"  verified      {release.verified}" + (f" ({release.note})" if release.note else ""),
                  ""]
    return "\n".join(lines).rstrip() + "\n"
