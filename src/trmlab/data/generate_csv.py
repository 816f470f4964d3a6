"""Puzzle sets in the Hub CSV format (``source,question,answer,rating``) and the generators' shared driver.

The Hub datasets ``sapientinc/sudoku-extreme`` and ``sapientinc/maze-30x30-hard-1k`` (and the official
builders that read them) use one ``train.csv`` and one ``test.csv`` per dataset: a header line, then one
puzzle per row, question and answer each a flattened grid of ``side²`` characters, CRLF line ends (Python's
``csv`` default). The generators (``trmlab data generate-sudoku`` / ``generate-maze``) write exactly that, so
their output goes through the same builders as the Hub files.

Train/test disjointness is by canonical form: every generated puzzle has a key that is the same for all its
symmetric copies (each generator defines its symmetry group); a candidate whose key was already drawn (in
either split) is discarded and counted, so no puzzle nor a symmetric copy of one is in both splits.
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from trmlab.data.build_arc import check_output_dir
from trmlab.data.format import staged_directory
from trmlab.data.puzzle_csv import HEADER
from trmlab.errors import ConfigError, DataError
from trmlab.progress import Progress, add_no_progress_flag

Log = Callable[[str], None]


@dataclass(frozen=True)
class PuzzleRow:
    """One CSV row: where it came from, the question and answer strings, and its difficulty rating."""

    source: str
    question: str
    answer: str
    rating: int


def csv_bytes(rows: list[PuzzleRow]) -> bytes:
    """The rows as a Hub-format CSV file (header first, CRLF line ends)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow((row.source, row.question, row.answer, row.rating))
    return buffer.getvalue().encode()


def read_csv_rows(path: str | Path) -> list[PuzzleRow]:
    """Read a Hub-format CSV (header checked; ratings must be integers)."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or header != HEADER:
            raise DataError(f"{path}: header must be {','.join(HEADER)}, got {header}")
        rows = []
        for line, fields in enumerate(reader, start=2):
            if len(fields) != 4 or not fields[3].lstrip("-").isdigit():
                raise DataError(f"{path}: row {line} must be source,question,answer,rating (an integer)")
            rows.append(PuzzleRow(fields[0], fields[1], fields[2], int(fields[3])))
    return rows


@dataclass
class DrawCounts:
    """How many candidates each split took and how many were discarded as (symmetric) duplicates."""

    train: int = 0
    test: int = 0
    duplicates: int = 0


MAX_DUPLICATES_IN_A_ROW = 500


def draw_disjoint(candidates: Iterator[tuple[PuzzleRow, bytes]], train: int, test: int
                  ) -> tuple[list[PuzzleRow], list[PuzzleRow], DrawCounts]:
    """Take ``train`` then ``test`` rows from ``candidates`` (row, canonical key), skipping repeated keys.

    A key seen before (in train or test) means the candidate is a symmetric copy of an earlier puzzle: it is
    dropped. :data:`MAX_DUPLICATES_IN_A_ROW` drops in a row mean the puzzle space is nearly exhausted (an
    error).
    """
    seen: set[bytes] = set()
    splits: list[list[PuzzleRow]] = [[], []]
    counts = DrawCounts()
    in_a_row = 0
    with Progress("generating", train + test, unit="puzzles") as progress:
        for wanted, rows in ((train, splits[0]), (test, splits[1])):
            while len(rows) < wanted:
                row, key = next(candidates)
                if key in seen:
                    counts.duplicates += 1
                    progress.set_status(f"{counts.duplicates} symmetric duplicates skipped")
                    in_a_row += 1
                    if in_a_row >= MAX_DUPLICATES_IN_A_ROW:
                        raise ConfigError(
                            f"{in_a_row} generated puzzles in a row were copies of earlier ones (up to "
                            f"symmetry) after {len(seen)} distinct ones, before {train} train + {test} test "
                            f"were found; ask for fewer puzzles or a larger size / other difficulty")
                    continue
                in_a_row = 0
                seen.add(key)
                rows.append(row)
                progress.update()
    counts.train, counts.test = len(splits[0]), len(splits[1])
    return splits[0], splits[1], counts


def check_counts(train: int, test: int, seed: int) -> None:
    if train < 1 or test < 1:
        raise ConfigError(f"--train and --test must be at least 1, got {train} and {test}")
    if seed < 0:
        raise ConfigError(f"--seed must be ≥ 0, got {seed}")


def prepare_output(output_dir: str | Path, overwrite: bool) -> Path:
    """Refuse a non-empty ``output_dir`` unless ``overwrite`` (before any generation work)."""
    output = Path(output_dir)
    check_output_dir(output, overwrite)
    return output


def write_splits(output: Path, train: list[PuzzleRow], test: list[PuzzleRow]) -> None:
    """Write ``train.csv`` and ``test.csv`` into a hidden sibling, then rename it into place (atomic)."""
    with staged_directory(output, f"--output-dir {output}") as staging:
        (staging / "train.csv").write_bytes(csv_bytes(train))
        (staging / "test.csv").write_bytes(csv_bytes(test))


def add_common_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The options every generator has: where, how many of ``what`` per split, the seed, --overwrite."""
    parser.add_argument("--output-dir", required=True, help="directory to create (train.csv, test.csv)")
    parser.add_argument("--train", type=int, required=True, help=f"training {what}")
    parser.add_argument("--test", type=int, required=True, help=f"test {what}")
    parser.add_argument("--seed", type=int, required=True, help="seed of every random draw")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output-dir")
    add_no_progress_flag(parser)


def draw_and_write(output: Path, candidates: Iterator[tuple[PuzzleRow, bytes]], train: int, test: int,
                   describe: Callable[[list[PuzzleRow]], str], log: Log) -> dict[str, int]:
    """Draw the disjoint splits, write them, log one line (``describe(rows)`` says what they are)."""
    started = time.perf_counter()
    train_rows, test_rows, counts = draw_disjoint(candidates, train, test)
    write_splits(output, train_rows, test_rows)
    rows = train_rows + test_rows
    log(f"wrote {output}/train.csv ({counts.train}) and test.csv ({counts.test}): {describe(rows)}, "
        f"{rating_summary(rows)}; {counts.duplicates} symmetric duplicates skipped; "
        f"{time.perf_counter() - started:.1f} s")
    return {"train": counts.train, "test": counts.test, "duplicates": counts.duplicates}


def rating_summary(rows: list[PuzzleRow]) -> str:
    ratings = sorted(r.rating for r in rows)
    return f"rating min {ratings[0]}, median {ratings[len(ratings) // 2]}, max {ratings[-1]}"

