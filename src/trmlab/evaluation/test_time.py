"""Test-time compute beyond the official protocol: stochastic trajectories, halting with continuous batching,
deeper recursion (``trmlab eval ... samples=K noise=SIGMA select=q|vote|valid halt=q halt_threshold=T
steps=N``; docs/evaluation.md "Test-time compute").

The official protocol (every row runs ``halt_max_steps`` ACT steps in fixed batches, the last step answers)
stays the default; these settings change it only when given, and their scores are reported under their own
metric names.

- **Trajectories.** Each input runs as K trajectories (``samples=K``). Trajectory 0 is the clean one (no
  noise: exactly the default path); trajectories 1..K−1 add Gaussian noise of scale ``noise`` (absolute, in
  z_L units) to z_L after **every L-level update** of every deep-recursion (H) cycle of every ACT step,
  i.e. ``z_L ← L_level(z_L, z_H + x) + σ·ε`` H_cycles × L_cycles times per ACT step, before the z_H update
  reads it. ε is drawn per element from a generator seeded by (``seed``, row, trajectory), so a trajectory's
  noise does not depend on the batch it ran in and reruns are bit for bit identical.
- **Continuous batching.** The device works on ``batch`` slots; a slot's trajectory leaves when it is done
  (at the step limit, or with ``halt=q`` when the halting head says stop) and the next waiting trajectory
  takes the slot, its carry reset from H_init / L_init as training does. When nothing waits, finished slots
  are dropped from the batch instead of being run idle.
- **Halting.** ``halt=q``: a trajectory stops at the first step where ``q_halt > T`` (``q_halt − q_continue >
  T`` for models with a continue head), T = ``halt_threshold`` (default 0: the official training rule and
  ``arch.eval_q_halting``), or at the step limit. Its answer is that step's prediction.
- **Deeper recursion.** ``steps=N``: the step limit, which may exceed the checkpoint's ``halt_max_steps``
  (the carry simply continues; no architecture change).
- **Selection** (grid datasets): ``select=q`` keeps the trajectory with the largest halting logit, ``vote``
  the most frequent grid (ties: larger mean q), ``valid`` the most confident trajectory whose grid passes the
  puzzle's own check (Sudoku: rows, columns, boxes are permutations and the givens are kept; Maze: a simple
  S→G path over open cells as short as the maze's shortest path) and the most confident one when none does.
  On ARC every trajectory votes with the augmentations instead.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trmlab.data.build_maze import MAZE_CHARSET
from trmlab.data.build_sudoku import BLANK_TOKEN, SudokuFormat
from trmlab.data.generate_maze import shortest_paths
from trmlab.errors import ConfigError
from trmlab.evaluation.grid import TASK_NAMES, GridEvalResult, _npz_bytes, accuracies, vote_index
from trmlab.evaluation.outputs import RawPredictions, json_bytes, write_output_dir
from trmlab.progress import Progress

SELECT_RULES = ("q", "vote", "valid")
HALT_RULES = ("none", "q")
WALL, OPEN, START, GOAL, PATH = (1 + MAZE_CHARSET.index(c) for c in "# SGo")


@dataclass(frozen=True)
class TestTimeSettings:
    """The test-time settings of one evaluation; the defaults are the official protocol.

    ``halt`` None and ``steps`` None follow the checkpoint (``arch.eval_q_halting``, ``arch.halt_max_steps``).
    """

    __test__ = False  # not a pytest class

    samples: int = 1
    noise: float = 0.0
    select: str = "q"
    halt: str | None = None
    halt_threshold: float = 0.0
    steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"samples={self.samples}: must be at least 1")
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise ConfigError(f"noise={self.noise}: must be a finite number ≥ 0")
        if self.noise > 0 and self.samples == 1:
            raise ConfigError("noise needs samples ≥ 2: trajectory 0 is always the clean one "
                              "(pass samples=K)")
        if self.select not in SELECT_RULES:
            raise ConfigError(f"select={self.select!r}: choose one of {', '.join(SELECT_RULES)}")
        if self.halt is not None and self.halt not in HALT_RULES:
            raise ConfigError(f"halt={self.halt!r}: choose one of {', '.join(HALT_RULES)}")
        if self.halt_threshold != 0.0 and self.halt != "q":
            raise ConfigError("halt_threshold applies to halt=q; pass halt=q as well")
        if not math.isfinite(self.halt_threshold):
            raise ConfigError(f"halt_threshold={self.halt_threshold}: must be a finite number")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps={self.steps}: must be at least 1")

    @property
    def is_default(self) -> bool:
        """True when nothing differs from the official protocol (the plain evaluation path is used)."""
        return self == TestTimeSettings(seed=self.seed)

    def follows_official_trajectory(self) -> bool:
        """Trajectory 0 is the official one: same step count and halting rule as the checkpoint."""
        return self.steps is None and self.halt is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trajectories:
    """Every trajectory's answer: ``preds`` [N, K, S] (uint8), ``q_halt_logits`` / ``q_continue_logits``
    [N, K] (fp32, of the answering step), ``steps`` [N, K] (ACT steps run), ``seconds`` of model time."""

    preds: np.ndarray
    q_halt_logits: np.ndarray
    q_continue_logits: np.ndarray
    steps: np.ndarray
    seconds: float

    @property
    def act_steps(self) -> int:
        """Compute spent: ACT steps summed over every trajectory (rows × steps in the official protocol)."""
        return int(self.steps.sum())


# -- the engine ---------------------------------------------------------------------------------------------
def _generator(seed: int, row: int, sample: int, device: torch.device) -> torch.Generator:
    words = np.random.SeedSequence([seed, row, sample]).generate_state(2, np.uint32)
    return torch.Generator(device=device).manual_seed(int(words[0]) << 31 | int(words[1]) >> 1)


class _SlotNoise:
    """The z_L hook: adds σ·ε to the rows of slots holding a noisy trajectory (one generator per slot)."""

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma
        self.generators: list[torch.Generator | None] = []

    def __call__(self, z_L: torch.Tensor) -> torch.Tensor:
        noisy = [i for i, g in enumerate(self.generators) if g is not None]
        if not noisy:
            return z_L
        shape, device = z_L.shape[1:], z_L.device
        draws = torch.stack([torch.randn(shape, generator=self.generators[i], device=device) for i in noisy])
        index = torch.tensor(noisy, device=device)
        return z_L.index_add(0, index, (self.sigma * draws).to(z_L.dtype))


def _index_rows(value: Any, keep: torch.Tensor) -> Any:
    if isinstance(value, dict):
        return {k: _index_rows(v, keep) for k, v in value.items()}
    return value[keep] if isinstance(value, torch.Tensor) and value.dim() > 0 else value


def _halting_rule(model: Any, settings: TestTimeSettings
                  ) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """Per step: which slots the halting head stops (never, without halt=q / eval_q_halting)."""
    arch = model.arch
    halt = settings.halt or ("q" if arch.eval_q_halting else "none")
    if halt == "none" or (arch.halt_max_steps <= 1 and settings.halt is None):
        return lambda out: torch.zeros_like(out["q_halt_logits"], dtype=torch.bool)
    threshold = settings.halt_threshold
    if arch.no_ACT_continue:
        return lambda out: out["q_halt_logits"] > threshold
    if threshold == 0.0:  # the official comparison, bit for bit
        return lambda out: out["q_halt_logits"] > out["q_continue_logits"]
    return lambda out: out["q_halt_logits"] - out["q_continue_logits"] > threshold


def run_trajectories(model: Any, fetch: Callable[[np.ndarray], dict[str, torch.Tensor]], rows: int,
                     settings: TestTimeSettings, batch: int, *, row_ids: np.ndarray | None = None,
                     progress: Any = None) -> Trajectories:
    """Run ``settings.samples`` trajectories of each of ``rows`` inputs with continuous batching.

    ``fetch(indices)`` returns the batch dict (inputs, puzzle_identifiers, demo_* ...) of those input rows on
    the model's device. ``row_ids`` (default 0..rows−1) are the rows' global numbers that seed their noise,
    so that a row's trajectories do not depend on which rank or slice ran it. ``progress`` (a tqdm-like
    object or None) is advanced by one per finished input row's trajectory.
    """
    if batch < 1:
        raise ConfigError(f"batch size {batch}: must be at least 1")
    K = settings.samples
    row_ids = np.arange(rows) if row_ids is None else np.asarray(row_ids)
    limit = settings.steps or model.arch.halt_max_steps
    stops = _halting_rule(model, settings)
    compiled = model.__dict__.get("_compiled_step")
    step = model if compiled is None or settings.noise > 0 else compiled  # the hook needs eager mode
    noise = _SlotNoise(settings.noise) if settings.noise > 0 else None
    waiting = deque(range(rows * K))  # item = row * K + sample, row-major: a row's trajectories run together
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        model.core.z_L_noise = noise
        with torch.no_grad():
            answers = _continuous_batches(model, step, fetch, waiting, batch, K, limit, stops, noise,
                                          settings.seed, row_ids, rows, progress)
    finally:
        model.core.z_L_noise = None
        model.train(was_training)
    seconds = time.perf_counter() - started
    return Trajectories(answers["preds"].reshape(rows, K, -1), answers["q_halt"].reshape(rows, K),
                        answers["q_continue"].reshape(rows, K), answers["steps"].reshape(rows, K), seconds)


def _fetch_items(fetch: Callable, items: list[int], K: int) -> dict[str, torch.Tensor]:
    """The batch rows of ``items`` (trajectory numbers): each input row fetched once, however many of its K
    trajectories start together, then repeated on the device."""
    rows, repeat = np.unique(np.array([item // K for item in items]), return_inverse=True)
    data = fetch(rows)
    if len(rows) == len(items):  # rows come in order (row-major items): nothing repeats
        return data
    index = torch.from_numpy(repeat.reshape(-1)).to(next(iter(data.values())).device)
    return {k: v.index_select(0, index) for k, v in data.items()}


def _continuous_batches(model: Any, step: Any, fetch: Callable, waiting: deque, batch: int, K: int,
                        limit: int, stops: Callable, noise: _SlotNoise | None, seed: int, row_ids: np.ndarray,
                        rows: int, progress: Any) -> dict[str, np.ndarray]:
    """The slot loop of :func:`run_trajectories`; returns every trajectory's answer (item order)."""
    first = [waiting.popleft() for _ in range(min(batch, len(waiting)))]
    data = _fetch_items(fetch, first, K)
    device = data["inputs"].device
    slots = list(first)  # the item each slot works on
    carry = model.initial_carry(data)  # every slot starts halted: the first step resets it and takes `data`
    answers_list: dict[int, tuple] = {}

    def assign(slot_items: list[int]) -> list[torch.Generator | None]:
        if noise is None:
            return []
        return [None if item % K == 0 else _generator(seed, int(row_ids[item // K]), item % K, device)
                for item in slot_items]

    if noise is not None:
        noise.generators = assign(slots)
    while slots:
        carry, out = step(carry, data)
        done = (carry.steps >= limit) | stops(out)
        done_slots = done.nonzero(as_tuple=True)[0].tolist()
        if done_slots:
            preds = out["logits"][done_slots].argmax(-1).cpu().numpy().astype(np.uint8)
            q_halt = out["q_halt_logits"][done_slots].float().cpu().numpy()
            q_continue = out["q_continue_logits"][done_slots].float().cpu().numpy()
            steps = carry.steps[done_slots].cpu().numpy()
            for i, slot in enumerate(done_slots):
                answers_list[slots[slot]] = (preds[i], q_halt[i], q_continue[i], steps[i])
            if progress is not None:
                progress.update(len(done_slots))
        carry = replace(carry, halted=done)  # finished slots restart on the next call (with new data)
        refill = done_slots[:len(waiting)]
        if refill:
            new_items = [waiting.popleft() for _ in refill]
            index = torch.tensor(refill, device=device)
            incoming = _fetch_items(fetch, new_items, K)
            data = {k: v.index_copy(0, index, incoming[k].to(v.dtype)) for k, v in data.items()}
            for slot, item in zip(refill, new_items, strict=True):
                slots[slot] = item
                if noise is not None:
                    noise.generators[slot] = assign([item])[0]
        idle = done_slots[len(refill):]
        if idle:  # nothing waits: drop finished slots instead of running them
            idle_slots = set(idle)
            keep_list = [s for s in range(len(slots)) if s not in idle_slots]
            keep = torch.tensor(keep_list, dtype=torch.long, device=device)
            slots = [slots[s] for s in keep_list]
            if noise is not None:
                noise.generators = [noise.generators[s] for s in keep_list]
            data = _index_rows(data, keep)
            carry = replace(carry, z_H=carry.z_H[keep], z_L=carry.z_L[keep], steps=carry.steps[keep],
                            halted=carry.halted[keep], current_data=_index_rows(carry.current_data, keep),
                            extra=_index_rows(carry.extra, keep))
    order = sorted(answers_list)
    assert order == list(range(rows * K)), "every trajectory must finish exactly once"
    return {"preds": np.stack([answers_list[i][0] for i in order]),
            "q_halt": np.array([answers_list[i][1] for i in order], dtype=np.float32),
            "q_continue": np.array([answers_list[i][2] for i in order], dtype=np.float32),
            "steps": np.array([answers_list[i][3] for i in order], dtype=np.int32)}


# -- puzzle checks and selection ----------------------------------------------------------------------------
def sudoku_valid(inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Per row: ``preds`` is a solved Sudoku (every row, column and box a permutation of 1..side) that keeps
    the givens of ``inputs`` (builder tokens: value + 1, blank = 1). Needs no solution."""
    rows, cells = preds.shape
    side = math.isqrt(cells)
    grid = preds.astype(np.int64).reshape(rows, side, side) - 1
    target = np.arange(1, side + 1)
    ok = np.ones(rows, dtype=bool)
    for units in SudokuFormat(side).units(grid).values():  # rows, columns, boxes
        ok &= (np.sort(units, axis=-1) == target).all(axis=(1, 2))
    givens = inputs != BLANK_TOKEN
    return ok & ((preds == inputs) | ~givens).all(axis=1)


def maze_valid(inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Per row: ``preds`` keeps the maze (walls, S, G) and marks a simple S→G path of open cells whose length
    is the maze's shortest S→G distance (breadth-first search on the input). Needs no solution."""
    rows, cells = preds.shape
    side = math.isqrt(cells)
    return np.array([_maze_row_valid(inputs[r].reshape(side, side), preds[r].reshape(side, side))
                     for r in range(rows)], dtype=bool)


def _neighbours(r: int, c: int, side: int) -> list[tuple[int, int]]:
    return [(r + dr, c + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
            if 0 <= r + dr < side and 0 <= c + dc < side]


def _maze_row_valid(maze: np.ndarray, pred: np.ndarray) -> bool:
    fixed = np.isin(maze, (WALL, START, GOAL))
    if not (pred[fixed] == maze[fixed]).all() or not np.isin(pred[~fixed], (OPEN, PATH)).all():
        return False
    side = maze.shape[0]
    on_path = (pred == PATH) | (maze == START) | (maze == GOAL)
    starts, goals = np.argwhere(maze == START), np.argwhere(maze == GOAL)
    if len(starts) != 1 or len(goals) != 1:
        return False
    start, goal = tuple(starts[0]), tuple(goals[0])
    for cell in map(tuple, np.argwhere(on_path)):  # a simple path: endpoints degree 1, others degree 2
        degree = sum(on_path[n] for n in _neighbours(*cell, side))
        if degree != (1 if cell in (start, goal) else 2):
            return False
    path_length = int(on_path.sum()) - 1
    reaches = shortest_paths(on_path, start)[0][goal] >= 0
    return reaches and path_length == shortest_paths(maze != WALL, start)[0][goal]


CHECKERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"sudoku": sudoku_valid,
                                                                       "maze": maze_valid}


def check_select(rule: str, task: str) -> None:
    """``select=valid`` needs a puzzle that checks its own answers (Sudoku, Maze)."""
    if rule == "valid" and task not in CHECKERS:
        raise ConfigError(f"select=valid needs a Sudoku or Maze dataset (a puzzle that can check an answer); "
                          f"this one is {task}: use select=q or select=vote")


def select(trajectories: Trajectories, rule: str, inputs: np.ndarray, task: str) -> np.ndarray:
    """Per row, the index of the chosen trajectory (``select=q|vote|valid``; ties go to the lower index, so
    the clean trajectory 0 wins a tie)."""
    preds, q = trajectories.preds, trajectories.q_halt_logits
    if rule == "q":
        return np.argmax(q, axis=1)
    if rule == "vote":
        return vote_index(preds, q)
    check_select(rule, task)
    rows, K, _ = preds.shape
    valid = CHECKERS[task](np.repeat(inputs, K, axis=0), preds.reshape(rows * K, -1)).reshape(rows, K)
    ranked = np.where(valid, q, -np.inf)
    return np.where(valid.any(axis=1), np.argmax(ranked, axis=1), np.argmax(q, axis=1))


def chosen(trajectories: Trajectories, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chosen trajectory's preds [N, S] and q_halt logits [N]."""
    rows = np.arange(len(index))
    return trajectories.preds[rows, index], trajectories.q_halt_logits[rows, index]


# -- the evaluation hooks (grid datasets and ARC) -----------------------------------------------------------
def _rank_rows(count: int, rank: int, world: int) -> np.ndarray:
    """This rank's rows: every world-th one (a row's K trajectories stay on one rank)."""
    return np.arange(rank, count, world)


def _local_trajectories(model: Any, fetch: Callable, positions: np.ndarray, settings: Any,
                        progress: bool, rank: int) -> dict[str, np.ndarray]:
    tt: TestTimeSettings = settings.test_time
    shown = progress and rank == 0
    with Progress("eval", len(positions) * tt.samples, unit="trajectories", enabled=shown) as bar:
        runs = run_trajectories(model, lambda rows: fetch(positions[rows]), len(positions), tt,
                                settings.global_batch_size, row_ids=positions, progress=bar)
    return {"position": positions, "preds": runs.preds, "q_halt_logits": runs.q_halt_logits,
            "q_continue_logits": runs.q_continue_logits, "steps": runs.steps,
            "seconds": np.full(len(positions), runs.seconds / max(len(positions), 1)),
            "halt_max_steps": np.full(len(positions), model.arch.halt_max_steps)}


def _as_trajectories(rows: dict[str, np.ndarray]) -> Trajectories:
    return Trajectories(rows["preds"], rows["q_halt_logits"], rows["q_continue_logits"], rows["steps"],
                        float(rows["seconds"].sum()))


def compute_counts(runs: Trajectories, halt_max_steps: int) -> dict[str, Any]:
    """What the trajectories cost: ACT steps summed over trajectories, per input row, and relative to the
    official protocol (every row for halt_max_steps steps)."""
    rows = runs.preds.shape[0]
    official = rows * halt_max_steps
    return {"act_steps": runs.act_steps, "mean_act_steps_per_row": runs.act_steps / max(rows, 1),
            "mean_act_steps_per_trajectory": float(runs.steps.mean()) if runs.steps.size else 0.0,
            "official_act_steps": official, "relative_compute": runs.act_steps / max(official, 1)}


def describe_compute(counts: dict[str, Any], seconds: float) -> str:
    """One terminal line: ACT steps per input row, against the official protocol, and rows per second."""
    rows = counts["act_steps"] / max(counts["mean_act_steps_per_row"], 1e-9)
    rate = rows / seconds if seconds > 0 else float("nan")
    return (f"compute: {counts['act_steps']} ACT steps ({counts['mean_act_steps_per_row']:.2f} per input "
            f"row, {counts['mean_act_steps_per_trajectory']:.2f} per trajectory; "
            f"{counts['relative_compute']:.2f}x the official protocol), {rate:.1f} input rows/s")


def run_arc_rows(model: Any, dataset: Any, examples: np.ndarray, puzzles: np.ndarray, settings: Any,
                 rank: int, world: int, progress: bool) -> dict[str, np.ndarray]:
    """The ARC runner's rows with test-time settings: per selected row, its K trajectories' preds [n, K, S]
    and q logits [n, K] (the caller lets every trajectory vote with the augmentations)."""
    from trmlab.data.dataset import collate_items

    device = next(model.parameters()).device

    def fetch(positions: np.ndarray) -> dict[str, torch.Tensor]:
        batch = collate_items(dataset, examples[positions], puzzles[positions], settings.max_demos,
                              np.ones(len(positions), dtype=bool))
        return {k: v.to(device) for k, v in batch.items() if k != "labels"}

    return _local_trajectories(model, fetch, _rank_rows(len(examples), rank, world), settings, progress, rank)


def evaluate_grid_trajectories(model: Any, dataset: Any, settings: Any, *, task: str, examples: np.ndarray,
                               inputs: np.ndarray, identifiers: np.ndarray, out_dir: Any,
                               info: dict[str, Any] | None, progress: bool, rank: int, world: int,
                               replace: bool) -> Any:
    """:func:`trmlab.evaluation.grid.evaluate_grid` with test-time settings (``settings.test_time``).

    Metrics: ``<Task>/test_time/exact_accuracy`` and ``token_accuracy`` of the selected trajectory; with K ≥ 2
    ``<Task>/test_time/oracle_exact_accuracy`` (any trajectory right: what a perfect selector would score);
    the official ``<Task>/exact_accuracy`` / ``token_accuracy`` from the clean trajectory when it follows the
    official protocol (no steps= / halt=). ``counts`` holds the compute (:func:`compute_counts`);
    trajectories.npz keeps every trajectory.
    """
    from trmlab.evaluation.runner import _gather_rows  # runner imports this module

    tt: TestTimeSettings = settings.test_time
    if settings.symmetry_votes > 1:
        raise ConfigError(f"symmetry votes ({settings.symmetry_votes}) and test-time settings are not "
                          f"combined; pass votes=0 (or evaluate them separately)")
    check_select(tt.select, task)  # before the model runs
    device = next(model.parameters()).device

    def fetch(positions: np.ndarray) -> dict[str, torch.Tensor]:
        return {"inputs": torch.from_numpy(inputs[positions].astype(np.int32)).to(device),
                "puzzle_identifiers": torch.from_numpy(identifiers[positions].astype(np.int32)).to(device)}

    local = _local_trajectories(model, fetch, _rank_rows(len(inputs), rank, world), settings, progress, rank)
    rows = _gather_rows(local, rank, world)
    if rank != 0:
        return None
    runs = _as_trajectories(rows)
    labels = np.asarray(dataset.gather("labels", examples)).astype(np.int64)
    name, ignore = TASK_NAMES[task], dataset.ignore_label_id
    index = select(runs, tt.select, inputs, task)
    preds, q_halt = chosen(runs, index)
    metrics: dict[str, float] = {}
    if tt.follows_official_trajectory():
        exact, token = accuracies(runs.preds[:, 0].astype(np.int64), labels, ignore)
        metrics |= {f"{name}/exact_accuracy": float(exact.mean()),
                    f"{name}/token_accuracy": float(token.mean())}
    exact, token = accuracies(preds.astype(np.int64), labels, ignore)
    metrics |= {f"{name}/test_time/exact_accuracy": float(exact.mean()),
                f"{name}/test_time/token_accuracy": float(token.mean())}
    if tt.samples > 1:
        each = np.stack([accuracies(runs.preds[:, k].astype(np.int64), labels, ignore)[0]
                         for k in range(tt.samples)], axis=1)
        metrics[f"{name}/test_time/oracle_exact_accuracy"] = float(each.any(axis=1).mean())
    counts = {"rows": len(inputs), "model_rows": len(inputs) * tt.samples,
              **compute_counts(runs, model.arch.halt_max_steps)}
    extra = {"dataset": str(Path(dataset.paths[0]).resolve()), "votes": 1, "test_time": tt.as_dict(),
             "test_time_chosen_trajectory_histogram": np.bincount(index, minlength=tt.samples).tolist()}
    raw = RawPredictions(inputs.astype(np.uint8), identifiers.astype(np.int32), preds.astype(np.uint8),
                         q_halt.astype(np.float32))
    result = GridEvalResult(task, metrics, counts, raw, None, runs.seconds, {**extra, **(info or {})})
    if out_dir is not None:
        files = {"metrics.json": json_bytes(result.metrics_json(), indent=1),
                 "raw_predictions.npz": raw.to_bytes(),
                 "trajectories.npz": _npz_bytes(preds=runs.preds, q_halt_logits=runs.q_halt_logits,
                                                q_continue_logits=runs.q_continue_logits, steps=runs.steps)}
        result.out_dir = write_output_dir(out_dir, files, replace=replace)
    return result


def flatten_arc_rows(inputs: np.ndarray, identifiers: np.ndarray, rows: dict[str, np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """ARC: one voting row per trajectory (each input row repeated K times, trajectories in order) and the
    compute counts; ``rows`` as :func:`run_arc_rows` returned them, gathered."""
    runs = _as_trajectories(rows)
    count, K = runs.q_halt_logits.shape
    flat = {"preds": runs.preds.reshape(count * K, -1), "q_halt_logits": runs.q_halt_logits.reshape(-1),
            "compute": {"trajectories": count * K, **compute_counts(runs, int(rows["halt_max_steps"][0]))}}
    return np.repeat(inputs, K, axis=0), np.repeat(identifiers, K, axis=0), flat
