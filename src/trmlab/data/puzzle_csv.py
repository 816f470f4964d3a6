"""CSV puzzle datasets (Sudoku, Maze): the Hub files in, the official single-example layout out.

Input: a directory with ``train.csv`` and ``test.csv`` in the format of the Hub datasets
``sapientinc/sudoku-extreme`` and ``sapientinc/maze-30x30-hard-1k`` (header ``source,question,answer,rating``;
one puzzle per row), or ``hf:REPO`` downloaded with the optional ``huggingface_hub`` package.

Output (trm-reference §9, the official builders' layout): per split ``dataset.json`` and ``all__*.npy`` where
every puzzle is one example and every group is one CSV row with its augmented copies (the original first);
``identifiers.json`` is ``["<blank>"]`` (every puzzle identifier is 0). As in the official builders,
``dataset.json`` counts groups as ``total_puzzles`` (``mean_puzzle_examples`` 1.0): kept for byte identity.

Randomness: the official builders draw from numpy's unseeded global RNG; here ``seed`` means the draws the
official builder makes after ``np.random.seed(seed)`` once before the train split: ``choice(n, size,
replace=False)`` for ``subsample_size`` (done by a ``RandomState`` in C), then the augmentation draws
(replayed by :class:`~trmlab.data.legacy_rng.LegacyDraws`). The test split draws nothing.

How the work is done differs (the bytes do not): each CSV file is read twice in chunks, once to validate
and count (nothing is written unless every row of both files is valid), once to encode; only the
subsampled rows are kept in memory (and, when subsampling, an 8-byte slot per training row), and the copies
are produced and streamed to disk in blocks, so peak memory does not grow with the number of augmentations
and barely with the input size.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from trmlab.data import format as fmt
from trmlab.data.build_arc import NpyStreamWriter, check_output_dir
from trmlab.data.legacy_rng import LegacyDraws
from trmlab.errors import ConfigError, DataError
from trmlab.progress import Progress

HEADER = ["source", "question", "answer", "rating"]
CHUNK_ROWS = 65536  # CSV rows validated / encoded at a time, at most...
CHUNK_CELLS = 1 << 22  # ...and at most this many cells (validation holds a few arrays of this size)
BLOCK_ROWS = 8192   # output rows (copies) produced and written at a time
HUB_EXTRA = "pip install 'trmlab[hub]'"
INVALID = 255  # token lookup-table entry of a character outside a puzzle's charset


@dataclass
class CsvBuildOptions:
    """Options shared by the CSV builders (names of the official builders' options where they exist)."""

    output_dir: str
    seed: int
    input_dir: str | None = None
    source: str | None = None
    subsample_size: int | None = None
    overwrite: bool = False


@dataclass
class SplitSummary:
    """One split as written: CSV rows used (= groups) and rows written (copies included)."""

    puzzles: int
    examples: int
    dtype: str


@dataclass
class CsvBuildSummary:
    """What a CSV build produced (also printed by the CLI)."""

    seq_len: int
    vocab_size: int
    splits: dict[str, SplitSummary]
    seconds: float
    output_dir: str


class PuzzleFormat(Protocol):
    """One puzzle kind at one size: validation and tokens (implemented by the Sudoku and Maze builders)."""

    seq_len: int
    vocab_size: int

    def problem(self, questions: np.ndarray, answers: np.ndarray) -> tuple[int, str] | None:
        """First invalid row of a chunk (uint8 ASCII [B, seq_len] each) and why; None if all are valid."""
        ...

    def encode(self, questions: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token arrays (uint8 [B, seq_len]) of valid rows."""
        ...


class Copies(Protocol):
    """How a split turns each puzzle into its group's rows (the original first, then its augmentations)."""

    per_puzzle: int
    dtype: np.dtype

    def __call__(self, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, L] tokens → [B * per_puzzle, L] rows in output order (drawing from the stream as they go)."""
        ...


class Originals:
    """No augmentation: each puzzle is written as is, as uint8."""

    per_puzzle = 1
    dtype = np.dtype(np.uint8)

    def __call__(self, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return inputs, labels


# ----------------------------------------------------------------------------------------------------------
# Input


def check_options(options: CsvBuildOptions) -> None:
    """Option checks that need no data (ConfigErrors naming the option)."""
    if (options.input_dir is None) == (options.source is None):
        raise ConfigError("give exactly one of --input-dir DIR (holding train.csv and test.csv) or "
                          "--source hf:REPO")
    if options.source is not None and (not options.source.startswith("hf:") or options.source == "hf:"):
        raise ConfigError(f"--source {options.source!r}: expected hf://datasets/OWNER/NAME[@REVISION] (or "
                          f"hf:OWNER/NAME; a Hugging Face dataset repository), or use --input-dir DIR")
    if options.subsample_size is not None and options.subsample_size < 1:
        raise ConfigError(f"--subsample-size {options.subsample_size}: must be >= 1")
    if not 0 <= options.seed < 2**32:
        raise ConfigError(f"--seed {options.seed}: numpy's legacy RNG takes 0 <= seed < 2**32")


def hub_download_function() -> Callable[..., str]:
    """``huggingface_hub.hf_hub_download``, or a ConfigError saying how to do without it."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ConfigError(f"--source hf:...: the huggingface_hub package is not installed ({HUB_EXTRA}); "
                          f"or download train.csv and test.csv yourself and pass --input-dir DIR") from None
    return hf_hub_download


def input_files(options: CsvBuildOptions) -> dict[str, Path]:
    """``train.csv`` / ``test.csv`` paths from ``--input-dir`` or downloaded from ``--source hf:REPO``."""
    if options.input_dir is not None:
        paths = {split: Path(options.input_dir) / f"{split}.csv" for split in fmt.SPLITS}
        for path in paths.values():
            if not path.is_file():
                raise DataError(f"{path}: missing; --input-dir must hold train.csv and test.csv with the "
                                f"header {','.join(HEADER)}")
        return paths
    if options.source.startswith("hf://"):  # the Hub path form: its revision and folder, its errors
        from trmlab.interop.hub import parse_hub_path, resolve_path

        folder = parse_hub_path(options.source)
        if folder.repo_type != "dataset":
            raise ConfigError(f"--source {options.source}: a dataset repository is written "
                              "hf://datasets/OWNER/NAME[@REVISION]")
        return {split: resolve_path(folder.url("/".join(filter(None, (folder.path, f"{split}.csv")))))
                for split in fmt.SPLITS}
    repo = options.source.removeprefix("hf:")  # the older alias hf:OWNER/NAME
    download = hub_download_function()
    paths = {}
    for split in fmt.SPLITS:
        try:
            paths[split] = Path(download(repo, f"{split}.csv", repo_type="dataset"))
        except Exception as error:  # network, authentication, missing file: all end the same way
            raise DataError(f"--source {options.source}: could not download {split}.csv "
                            f"({type(error).__name__}: {error}); download train.csv and test.csv yourself "
                            f"and pass --input-dir DIR") from None
    return paths


@dataclass
class Chunk:
    """Up to CHUNK_ROWS CSV rows: file line numbers, ASCII questions/answers [B, L], ratings as written."""

    lines: list[int]
    questions: np.ndarray
    answers: np.ndarray
    ratings: list[str]


def first_question_length(path: Path) -> int:
    """Length of the first data row's question (the puzzle size every row must share)."""
    for _lines, questions, _answers, _ratings in _raw_rows(path, limit=1):
        return len(questions[0])
    raise DataError(f"{path}: no puzzles (only a header); the file needs at least one row")


RawRows = tuple[list[int], list[str], list[str], list[str]]  # line numbers, questions, answers, ratings


def _raw_rows(path: Path, limit: int) -> Iterator[RawRows]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a leading BOM is not part of the header
            reader = csv.reader(f)
            header = next(reader, None)
            if header != HEADER:
                raise DataError(f"{path}: header {','.join(header or [])!r}; expected {','.join(HEADER)!r} "
                                f"(the Hub files' format)")
            lines: list[int] = []
            questions: list[str] = []
            answers: list[str] = []
            ratings: list[str] = []
            for row in reader:
                if len(row) != len(HEADER):
                    raise DataError(f"{path} line {reader.line_num}: {len(row)} fields; expected "
                                    f"{len(HEADER)} ({','.join(HEADER)})")
                lines.append(reader.line_num)
                questions.append(row[1])
                answers.append(row[2])
                ratings.append(row[3])
                if len(lines) == limit:
                    yield lines, questions, answers, ratings
                    lines, questions, answers, ratings = [], [], [], []
            if lines:
                yield lines, questions, answers, ratings
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error}); the CSV files are ASCII") from None
    except csv.Error as error:
        raise DataError(f"{path}: malformed CSV ({error})") from None


def read_chunks(path: Path, seq_len: int, reference: str) -> Iterator[Chunk]:
    """Chunks of a CSV file; every question and answer must be ``seq_len`` ASCII characters.

    ``reference`` names where ``seq_len`` comes from, for the error message.
    """
    rows_per_chunk = max(1, min(CHUNK_ROWS, CHUNK_CELLS // seq_len))
    for lines, questions, answers, ratings in _raw_rows(path, rows_per_chunk):
        for line, question, answer in zip(lines, questions, answers):
            for column, text in (("question", question), ("answer", answer)):
                if len(text) != seq_len:
                    raise DataError(f"{path} line {line}: {column} has {len(text)} characters; expected "
                                    f"{seq_len} ({reference}; all puzzles of a dataset have one size)")
                if not text.isascii():
                    bad = next(c for c in text if not c.isascii())
                    raise DataError(f"{path} line {line}: {column} has the character {bad!r} at position "
                                    f"{text.index(bad)}, outside the puzzle's charset")
        yield Chunk(lines, _ascii_array(questions, seq_len), _ascii_array(answers, seq_len), ratings)


def _ascii_array(texts: list[str], seq_len: int) -> np.ndarray:
    return np.frombuffer("".join(texts).encode("ascii"), dtype=np.uint8).reshape(len(texts), seq_len)


def eligible_rows(chunk: Chunk, path: Path, min_rating: int | None) -> np.ndarray | None:
    """Mask of rows with ``int(rating) >= min_rating`` (the official filter), or None when no filter."""
    if min_rating is None:
        return None
    values = []
    for line, rating in zip(chunk.lines, chunk.ratings):
        try:
            values.append(int(rating))
        except ValueError:
            raise DataError(f"{path} line {line}: rating {rating!r} is not an integer (needed by "
                            f"--min-difficulty)") from None
    return np.array(values, dtype=np.int64) >= min_rating


def scan_file(path: Path, puzzle: PuzzleFormat, reference: str, min_rating: int | None) -> int:
    """Validate every row of ``path``; return the number of rows the build uses."""
    count = 0
    with Progress(f"checking {path.name}", unit="rows") as progress:
        for chunk in read_chunks(path, puzzle.seq_len, reference):
            problem = puzzle.problem(chunk.questions, chunk.answers)
            if problem is not None:
                index, reason = problem
                raise DataError(f"{path} line {chunk.lines[index]}: {reason}; fix or remove the row")
            keep = eligible_rows(chunk, path, min_rating)
            count += len(chunk.lines) if keep is None else int(keep.sum())
            progress.update(len(chunk.lines))
    if count == 0:
        why = f" with rating >= {min_rating} (--min-difficulty)" if min_rating is not None else ""
        raise DataError(f"{path}: no puzzles{why}; the split would be empty")
    return count


def encoded_rows(path: Path, puzzle: PuzzleFormat, min_rating: int | None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Token blocks (inputs, labels) of the rows the build uses, in file order (rows already validated)."""
    for chunk in read_chunks(path, puzzle.seq_len, "checked before"):
        inputs, labels = puzzle.encode(chunk.questions, chunk.answers)
        keep = eligible_rows(chunk, path, min_rating)
        yield (inputs, labels) if keep is None else (inputs[keep], labels[keep])


def subsampled_rows(rows: Iterator[tuple[np.ndarray, np.ndarray]], total: int, chosen: np.ndarray,
                    seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The rows at positions ``chosen`` (in that order) of a stream of ``total`` rows, as one block."""
    slot = np.full(total, -1, dtype=np.int64)
    slot[chosen] = np.arange(len(chosen))
    inputs = np.empty((len(chosen), seq_len), np.uint8)
    labels = np.empty((len(chosen), seq_len), np.uint8)
    start = 0
    with Progress("subsampling train", total, unit="rows") as progress:
        for block_inputs, block_labels in rows:
            where = slot[start:start + len(block_inputs)]
            keep = where >= 0
            inputs[where[keep]] = block_inputs[keep]
            labels[where[keep]] = block_labels[keep]
            start += len(block_inputs)
            progress.update(len(block_inputs))
    yield inputs, labels


# ----------------------------------------------------------------------------------------------------------
# Output


def write_split(split_dir: Path, rows: Iterator[tuple[np.ndarray, np.ndarray]], num_puzzles: int,
                copies: Copies, puzzle: PuzzleFormat) -> SplitSummary:
    """Stream one split: each puzzle becomes a group of ``copies.per_puzzle`` single-example puzzles."""
    split_dir.mkdir()
    per_puzzle = copies.per_puzzle
    examples = num_puzzles * per_puzzle
    shapes = {"inputs": (examples, puzzle.seq_len), "labels": (examples, puzzle.seq_len),
              "puzzle_identifiers": (examples,), "puzzle_indices": (examples + 1,),
              "group_indices": (num_puzzles + 1,)}
    dtypes = {**fmt.ARRAY_DTYPES, "inputs": copies.dtype, "labels": copies.dtype}
    writers = {name: NpyStreamWriter(fmt.array_path(split_dir, name), dtypes[name], shapes[name])
               for name in fmt.ARRAY_DTYPES}
    progress = Progress(f"writing {split_dir.name}", num_puzzles, unit="puzzles",
                        per_unit=(per_puzzle, "examples"))
    try:
        writers["puzzle_indices"].write(np.zeros(1))
        writers["group_indices"].write(np.zeros(1))
        done = 0
        step = max(1, BLOCK_ROWS // per_puzzle)  # puzzles per block: blocks of ~BLOCK_ROWS rows
        for block_inputs, block_labels in rows:
            for start in range(0, len(block_inputs), step):
                inputs, labels = copies(block_inputs[start:start + step], block_labels[start:start + step])
                writers["inputs"].write(inputs)
                writers["labels"].write(labels)
                count = len(inputs) // per_puzzle
                writers["puzzle_indices"].write(done * per_puzzle + np.arange(1, len(inputs) + 1))
                writers["puzzle_identifiers"].write(np.zeros(len(inputs)))
                writers["group_indices"].write((done + np.arange(1, count + 1)) * per_puzzle)
                done += count
                progress.update(count)
        progress.close()
    finally:
        progress.close(finished=False)
        for writer in writers.values():
            writer.file.close()
    for writer in writers.values():
        writer.close()  # checks the row counts against the headers
    fmt.write_json(split_dir / "dataset.json", fmt.dataset_json(
        seq_len=puzzle.seq_len, vocab_size=puzzle.vocab_size, num_puzzle_identifiers=1,
        total_groups=num_puzzles, total_puzzles=num_puzzles, total_examples=num_puzzles))
    return SplitSummary(puzzles=num_puzzles, examples=examples, dtype=str(copies.dtype))


def build_csv_dataset(options: CsvBuildOptions, make_format: Callable[[int, str], PuzzleFormat],
                      make_copies: Callable[[str, PuzzleFormat, LegacyDraws], Copies],
                      min_rating: int | None = None, log: Callable[[str], None] = print) -> CsvBuildSummary:
    """Validate both CSV files, then write the dataset (see the module docstring).

    ``make_format(question length, where it was read)`` gives the puzzle kind at that size (or raises a
    DataError); ``make_copies(split, format, draws)`` gives each split's augmentation.
    """
    started = time.perf_counter()
    check_options(options)
    output = Path(options.output_dir)
    check_output_dir(output, options.overwrite)
    paths = input_files(options)
    reference = f"the length of the first puzzle of {paths['train']}"
    puzzle = make_format(first_question_length(paths["train"]), f"{paths['train']} line 2")
    counts = {split: scan_file(paths[split], puzzle, reference, min_rating) for split in fmt.SPLITS}
    state = np.random.RandomState(options.seed)  # = np.random.seed(seed) before the official train split
    chosen = None
    if options.subsample_size is not None and options.subsample_size < counts["train"]:
        chosen = state.choice(counts["train"], size=options.subsample_size, replace=False)
    draws = LegacyDraws.from_random_state(state)
    splits = {}
    with fmt.staged_directory(output, f"--output-dir {output}") as partial:
        for split in fmt.SPLITS:
            rows = encoded_rows(paths[split], puzzle, min_rating)
            num_puzzles = counts[split]
            if split == "train" and chosen is not None:
                rows, num_puzzles = subsampled_rows(rows, counts[split], chosen, puzzle.seq_len), len(chosen)
            copies = make_copies(split, puzzle, draws)
            splits[split] = write_split(partial / split, rows, num_puzzles, copies, puzzle)
        with open(partial / "identifiers.json", "w") as f:
            json.dump([fmt.BLANK_IDENTIFIER], f)
    summary = CsvBuildSummary(seq_len=puzzle.seq_len, vocab_size=puzzle.vocab_size, splits=splits,
                              seconds=time.perf_counter() - started, output_dir=str(output))
    for split, counted in summary.splits.items():
        log(f"{split}: {counted.puzzles:,} puzzles x {counted.examples // counted.puzzles} copies = "
            f"{counted.examples:,} examples ({counted.dtype})")
    log(f"seq_len {summary.seq_len}, vocab_size {summary.vocab_size}; wrote {output} in "
        f"{summary.seconds:.1f} s")
    return summary


def first_true(masks: list[tuple[np.ndarray, Callable[[int], str]]]) -> tuple[int, str] | None:
    """Earliest row flagged by any mask and the reason of the first mask flagging it (checks in order)."""
    firsts = [(int(np.argmax(mask)), k) for k, (mask, _) in enumerate(masks) if mask.any()]
    if not firsts:
        return None
    index = min(i for i, _ in firsts)
    kind = min(k for i, k in firsts if i == index)
    return index, masks[kind][1](index)
