"""``trmlab eval`` (run a checkpoint on an ARC test split) and ``trmlab score`` (re-vote raw predictions).

Settings are ``key=value`` words after the positional paths, as everywhere in trmlab. Torch is imported only
inside ``eval``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from trmlab.errors import ConfigError
from trmlab.grammar import Setting, add_settings, boolean, parse_words
from trmlab.progress import add_no_progress_flag, uses_bar


def positive_ints(text: str) -> tuple[int, ...]:
    """``1,2,10`` (or ``[1,2,10]``) → ``(1, 2, 10)``; a ValueError unless all are positive integers."""
    ks = tuple(int(k) for k in text.strip("[]").split(",") if k.strip())
    if not ks or min(ks) < 1:
        raise ValueError(text)
    return ks


OUT_DIR_HELP = "output directory (created; refused when it exists and is not empty)"
MAX_TASKS = Setting("max_tasks", "K", "the first K tasks of test_puzzles.json; the denominator is K (default "
                    "all, whatever the checkpoint's training config said)", int, minimum=1)
NUM_AUGMENTATIONS = Setting("num_augmentations", "K", "the first K puzzles of each task group, 1 = the "
                            "original only (default all)", int, minimum=1)
PASS_KS = Setting("pass_ks", "1,2,5,...", "the K of the pass@K figures (default 1,2,5,10,100,1000)",
                  positive_ints, kind_name="positive integers, e.g. pass_ks=1,2,10")
EVAL_SETTINGS = (
    Setting("out", "DIR", OUT_DIR_HELP + "; default runs/eval-<checkpoint name>-<dataset name>"),
    Setting("weights", "ema|raw", "trmlab checkpoints keep both (default ema; the raw weights when the run "
            "had no EMA); an official step_N file holds what its trainer saved: the EMA copy when its config "
            "has ema: true. metrics.json records the weights, step and checkpoint evaluated",
            choices=("ema", "raw")),
    MAX_TASKS, NUM_AUGMENTATIONS,
    Setting("global_batch_size", "N", "rows per evaluation step over all ranks: under torchrun each of the R "
            "ranks runs N/R of them (N must be a multiple of R); the last batch shrinks to the rows left. "
            "Default: the checkpoint config's eval.global_batch_size, else its global_batch_size", int,
            minimum=1),
    Setting("device", "cpu|cuda|cuda:N", "default: cuda when available"),
    Setting("max_demos", "N", "demonstrations per task for encoder models (default: the checkpoint config's)",
            int, minimum=1),
    PASS_KS,
    Setting("votes", "K", "Sudoku / Maze: also vote over K symmetric copies of each input, reported "
            "separately (default: the checkpoint config's eval.symmetry_votes)", int, minimum=1),
    Setting("compile", "true|false", "torch.compile the ACT step; worth it on a GPU (default false)",
            boolean),
)
# Test-time compute beyond the official protocol (trmlab.evaluation.test_time; docs/evaluation.md "Test-time
# compute"): reported under <Task>/test_time/... metrics, never as the official numbers.
TEST_TIME_SETTINGS = (
    Setting("samples", "K", "trajectories per input; the first is the clean one, the others noisy "
            "(default 1)", int, minimum=1),
    Setting("noise", "SIGMA", "Gaussian noise of scale SIGMA added to z_L after every L-level update of the "
            "noisy trajectories (needs samples >= 2)", float, minimum=0),
    Setting("select", "q|vote|valid", "Sudoku / Maze: which trajectory answers: the most confident (q), the "
            "most frequent grid (vote), the most confident that passes the puzzle's own check (valid); ARC "
            "votes every trajectory with the augmentations (default q)", choices=("q", "vote", "valid")),
    Setting("halt", "q", "stop a trajectory when its halting head says so, refilling its batch slot at once "
            "(continuous batching)", choices=("q",)),
    Setting("halt_threshold", "T", "with halt=q: stop when q_halt > T (default 0, the training rule; choose "
            "T on a validation split)", float),
    Setting("steps", "N", "ACT steps per trajectory, also above the checkpoint's halt_max_steps (the carry "
            "continues)", int, minimum=1),
    Setting("seed", "S", "seed of the noise (default 0)", int, minimum=0),
)
EVAL_SETTINGS = EVAL_SETTINGS + TEST_TIME_SETTINGS
SCORE_SETTINGS = (Setting("out", "DIR", OUT_DIR_HELP + "; default <npz dir>/score"), MAX_TASKS,
                  NUM_AUGMENTATIONS, PASS_KS)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` and ``score``."""
    ev = subparsers.add_parser(
        "eval", help="evaluate a trmlab or official checkpoint: ARC (pass@K, submission.json), Sudoku / Maze "
        "(exact and token accuracy)",
        description="Run every selected test puzzle (all augmentations) for halt_max_steps ACT steps, vote "
        "over augmentations and write metrics.json, submission.json, predictions.json and "
        "raw_predictions.npz. Works under torchrun (each rank runs its slice).",
        epilog="Sudoku / Maze datasets (no test_puzzles.json) get exact and token accuracy instead\n"
        "(max_tasks=K: the first K test puzzles).")
    ev.add_argument("checkpoint", metavar="CKPT", help="official step_N file or trmlab checkpoint directory "
                    "(or hf://ORG/REPO[@REVISION]/PATH)")
    ev.add_argument("data_dir", metavar="DATA", help="dataset directory (official layout): ARC (with "
                    "test_puzzles.json), Sudoku or Maze (or hf://datasets/ORG/REPO[@REVISION]/PATH)")
    add_settings(ev, EVAL_SETTINGS)
    add_no_progress_flag(ev)
    ev.set_defaults(func=_run_eval)

    sc = subparsers.add_parser(
        "score", help="re-vote and re-score raw_predictions.npz without the model",
        description="Vote and score the raw per-augmentation outputs of an evaluation (raw_predictions.npz) "
        "against the dataset they were made on; writes metrics.json, submission.json, predictions.json.",
    )
    sc.add_argument("data_dir", metavar="DATA", help="ARC dataset directory the predictions were made on")
    sc.add_argument("raw_predictions", metavar="PREDICTIONS", help="raw_predictions.npz (inputs, "
                    "puzzle_identifiers, preds, q_halt_logits)")
    add_settings(sc, SCORE_SETTINGS)
    sc.set_defaults(func=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from trmlab.evaluation.arc import DEFAULT_PASS_KS
    from trmlab.evaluation.outputs import default_out_dir, load_raw_predictions, write_output_dir
    from trmlab.evaluation.scoring import describe, info_for, result_files, score_raw
    from trmlab.evaluation.testset import load_test_set

    settings, _ = parse_words(args.settings, SCORE_SETTINGS, "trmlab score")
    test_set = load_test_set(args.data_dir)
    raw = load_raw_predictions(args.raw_predictions)
    result = score_raw(test_set, raw, max_tasks=settings.get("max_tasks"),
                       num_augmentations=settings.get("num_augmentations"),
                       pass_ks=settings.get("pass_ks", DEFAULT_PASS_KS))
    _warn_uncovered(result, settings)
    out = Path(settings["out"]) if "out" in settings else default_out_dir(Path(args.raw_predictions).parent,
                                                                           "score")
    info = info_for(test_set, max_tasks=settings.get("max_tasks"),
                    num_augmentations=settings.get("num_augmentations"),
                    raw_predictions=str(Path(args.raw_predictions).resolve()))
    write_output_dir(out, result_files(result, None, info))
    print(describe(result))
    print(f"wrote {out}/metrics.json, submission.json, predictions.json")
    return 0


def _warn_uncovered(result: Any, settings: dict[str, Any]) -> None:
    """Tasks without any vote count as wrong (official semantics); say so loudly, with the max_tasks=K that
    matches when the votes cover exactly the first K tasks (an eval run on a subset)."""
    voted = [r["votes"] > 0 for r in result.per_task.values()]
    if all(voted):
        return
    covered = sum(voted)
    hint = ""
    if "max_tasks" not in settings and covered and all(voted[:covered]):
        hint = f"; the predictions cover exactly the first {covered} tasks: pass max_tasks={covered}"
    print(f"warning: {len(voted) - covered} of {len(voted)} tasks have no votes and count as wrong{hint}")


def _run_eval(args: argparse.Namespace) -> int:
    from trmlab.evaluation.grid import is_arc_dataset
    from trmlab.evaluation.testset import load_test_set
    from trmlab.interop.hub import resolve_path
    from trmlab.interop.releases import check_release_dataset
    from trmlab.training.distributed import setup_distributed, teardown

    settings, _ = parse_words(args.settings, EVAL_SETTINGS, "trmlab eval")
    # hf:// paths: the dataset is fetched, and checked against a known release, before its checkpoint is.
    args.data_dir = str(resolve_path(args.data_dir, progress=uses_bar()))
    check_release_dataset(args.checkpoint, args.data_dir)
    # Fail on a bad dataset before loading the model.
    arc = is_arc_dataset(args.data_dir)
    test_set = load_test_set(args.data_dir) if arc else _grid_test_set(args.data_dir)
    # Under torchrun: join the group (NCCL on GPU, gloo on CPU), one GPU per local rank.
    ctx = setup_distributed(settings.get("device", "auto"))
    try:
        return _evaluate_checkpoint(args, settings, test_set, ctx)
    finally:
        teardown(ctx)


def _grid_test_set(data_dir: str) -> Any:
    """A Sudoku / Maze test split seen as the little the eval command needs (path, seq_len)."""
    from types import SimpleNamespace

    from trmlab.data.dataset import ArcDataset

    dataset = ArcDataset([data_dir], "test")
    return SimpleNamespace(path=Path(data_dir), seq_len=dataset.seq_len, grid=True)


def _evaluate_checkpoint(args: argparse.Namespace, settings: dict[str, Any], test_set: Any, ctx: Any) -> int:
    from trmlab.evaluation.outputs import default_out_dir
    from trmlab.evaluation.runner import evaluate
    from trmlab.evaluation.scoring import describe, describe_research_figures
    from trmlab.interop.hub import hub_origin, resolve_path
    from trmlab.interop.loading import load_checkpoint
    from trmlab.training.distributed import barrier

    device = ctx.device
    requested = settings.get("weights", "ema")
    if requested not in ("ema", "raw"):
        raise ConfigError(f"trmlab eval: weights={requested!r}: choose ema or raw")
    checkpoint = Path(resolve_path(args.checkpoint, progress=uses_bar()))  # hf://: the cached copy
    model = load_checkpoint(checkpoint, seq_len=test_set.seq_len, device=device, use_ema=requested == "ema")
    evaluated = evaluated_weights(checkpoint, model, requested, explicit="weights" in settings)
    if (origin := hub_origin(checkpoint)) is not None:  # metrics.json says which repository and commit
        evaluated["hub"] = origin
    if settings.get("compile"):
        import torch

        model.use_compiled_step(torch.compile(model))
    _check_dataset_identity(checkpoint, test_set.path, model, ctx.is_main)
    config = getattr(model, "config", None)
    config = getattr(config, "config", config)  # load_checkpoint attaches a ResolvedConfig
    eval_settings = _eval_settings(settings, config)
    # Default under ./runs/, never inside the checkpoint's folder (it may be read-only or pruned by training).
    out = Path(settings["out"]) if "out" in settings else default_out_dir(
        Path("runs"), f"eval-{checkpoint.name}-{Path(args.data_dir).resolve().name}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # fail before the model runs
        raise ConfigError(f"{out}: already exists and is not empty; pass another out=DIR or remove it")
    if ctx.is_main:
        print(f"evaluating {checkpoint} on {test_set.path} ({device}, {ctx.world_size} rank(s), global batch "
              f"{eval_settings.global_batch_size}, max_tasks={eval_settings.max_tasks}, "
              f"num_augmentations={eval_settings.num_augmentations}); {evaluated['weights']} weights, step "
              f"{evaluated['step']}", file=sys.stderr, flush=True)  # a log line: results alone go to stdout
    started = time.perf_counter()
    info = {**evaluated, "device": str(device), "global_batch_size": eval_settings.global_batch_size}
    research = config is not None and config.arch.name != "trm" and config.arch.encoder_numerics == "research"
    result = evaluate(model, test_set.path, settings=eval_settings, out_dir=out, info=info,
                      progress=True, research_figures=research)
    if result is not None:  # rank 0
        grid = getattr(test_set, "grid", False)
        print(result.describe() if grid else describe(result.result))
        if research and not grid:  # a research checkpoint: its authors' evaluator divides by every task
            print(describe_research_figures(result.result.extra["research_evaluator"]))
        rows = result.counts["model_rows"] if grid else len(result.raw)  # votes run each puzzle K times
        print(f"{rows} samples in {result.model_seconds:.1f}s of model time "
              f"({result.samples_per_second:.1f} samples/s); total {time.perf_counter() - started:.1f}s")
        counts = result.counts if grid else result.result.counts
        if "act_steps" in counts:  # test-time settings: what they cost
            from trmlab.evaluation.test_time import describe_compute

            print(describe_compute(counts, result.model_seconds))
        written = "raw_predictions.npz" if grid else "submission.json, predictions.json, raw_predictions.npz"
        print(f"wrote {out}/metrics.json, {written}")
    barrier(ctx)  # ranks leave together, after rank 0 has written
    return 0


def evaluated_weights(checkpoint: Path, model: Any, requested: str, explicit: bool) -> dict[str, Any]:
    """What metrics.json records about the weights evaluated: ``weights`` (ema | raw), ``step`` and the
    resolved ``checkpoint`` path.

    A trmlab checkpoint keeps both sets; an official ``step_N`` file holds one (the official trainer saves its
    EMA copy when the run's config has ``ema: true``). Asking explicitly for a set the checkpoint does not
    hold is an error; the default (ema) falls back to the raw weights of a run without EMA, and says so.
    """
    import re

    from trmlab.checkpoints.bundle import EMA_FILE, MODEL_FILE, read_checkpoint

    stored = str(getattr(model, "provenance", {}).get("weights", ""))
    step = None
    if stored.endswith((EMA_FILE, MODEL_FILE)):  # a trmlab checkpoint directory
        loaded = "ema" if stored.endswith(EMA_FILE) else "raw"
        step = read_checkpoint(checkpoint, verify=False).manifest.get("step")
    else:
        config = getattr(model, "config", None)
        loaded = "ema" if getattr(getattr(config, "config", config), "ema", False) else "raw"
        match = re.fullmatch(r"step_(\d+)", checkpoint.name)
        step = int(match.group(1)) if match else None
    if loaded != requested:
        if explicit:
            raise ConfigError(f"trmlab eval: weights={requested}: {checkpoint} holds only the {loaded} "
                              f"weights (trained without EMA, or an official file); pass weights={loaded}")
        print(f"note: {checkpoint} has no EMA weights (trained with ema=false): evaluating the raw weights")
    return {"weights": loaded, "step": step, "checkpoint": str(checkpoint.resolve())}


def _check_dataset_identity(checkpoint: Path, data_dir: Path, model: Any, main_rank: bool) -> None:
    """A puzzle table only means something with the identifiers it was trained on: refuse a trmlab checkpoint
    whose recorded dataset fingerprint differs from DATA_DIR's (same row count is not enough)."""
    if getattr(model, "puzzle_embedding", None) is None:
        return
    if not checkpoint.is_dir():
        if main_rank:
            print("note: official checkpoints record no dataset fingerprint; the puzzle table only lines up "
                  "with a dataset built by the official command (see docs/evaluation.md)")
        return
    from trmlab.checkpoints.bundle import read_checkpoint
    from trmlab.data.dataset import ArcDataset

    recorded = read_checkpoint(checkpoint, verify=False).manifest.get("dataset_fingerprint")
    if recorded is None:
        return
    actual = ArcDataset([data_dir], "train").fingerprint()
    if recorded != actual:
        raise ConfigError(
            f"{checkpoint} was trained on another dataset build (fingerprint {recorded[:12]}, {data_dir} has "
            f"{actual[:12]}): its puzzle-embedding rows would be looked up for the wrong puzzles. Evaluate "
            f"on the dataset it was trained on")


def _eval_settings(settings: dict[str, Any], config: Any) -> Any:
    from trmlab.evaluation.arc import DEFAULT_PASS_KS
    from trmlab.evaluation.runner import EvalSettings

    batch = settings.get("global_batch_size")
    if batch is None and config is not None:
        batch = config.eval.global_batch_size or config.global_batch_size
    if batch is None:
        raise ConfigError("trmlab eval: the checkpoint carries no config to take the batch size from; "
                          "pass global_batch_size=N")
    max_demos = settings.get("max_demos", getattr(config, "max_demos", 10) if config is not None else 10)
    pass_ks = settings.get("pass_ks", tuple(config.eval.pass_ks) if config is not None else DEFAULT_PASS_KS)
    votes = settings.get("votes", config.eval.symmetry_votes if config is not None else 0)
    return EvalSettings(global_batch_size=batch, max_tasks=settings.get("max_tasks"),
                        num_augmentations=settings.get("num_augmentations"), pass_ks=pass_ks,
                        max_demos=max_demos, symmetry_votes=votes,
                        test_time=make_test_time_settings(settings))


def make_test_time_settings(settings: dict[str, Any]) -> Any:
    """The TestTimeSettings of ``samples= noise= select= halt= halt_threshold= steps= seed=`` (None: none
    given, the official protocol)."""
    from trmlab.evaluation.test_time import TestTimeSettings

    given = {s.name: settings[s.name] for s in TEST_TIME_SETTINGS if s.name in settings}
    return TestTimeSettings(**given) if given else None
