"""Benchmark training and evaluation throughput of the real training loop, per preset shape.

For each shape (``tiny``, ``demo``, ``trm-arc1`` by default) a synthetic dataset of random grids with the
shape's sequence length is written to a temporary directory, then the actual :class:`Trainer` runs a few
optimizer steps (forward = one ACT step, loss, backward, AdamATan2 + sign-SGD, EMA). Reported: train samples/s
and ACT steps/s (one optimizer step = one ACT step; the first ``--warmup`` steps are excluded), eval samples/s
(``halt_max_steps`` forward calls in eval mode per batch, as the evaluator runs them) and peak memory (CUDA:
max allocated; CPU: peak RSS of the process). On CUDA the forward dtype is bf16 (``auto``), on CPU fp32.

CPU batch sizes are capped (``--cpu-batch``) because one full-size ARC step over the published 768-sample
batch is hours of CPU time; per-sample rates are what to compare.

    .venv/bin/python benchmarks/bench_train.py                       # tiny, demo, trm-arc1 on this device
    .venv/bin/python benchmarks/bench_train.py --shapes trm-arc1 --steps 6 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SEQ_LEN = {"tiny": 100, "demo": 100, "trm-arc1": 900}      # demo/tiny: 10×10 canvas; ARC: 30×30
CPU_BATCH = {"tiny": 8, "demo": 32, "trm-arc1": 4}


def write_random_dataset(root: Path, seq_len: int, examples: int, num_ids: int = 64) -> Path:
    """An official-layout train split of random grids (one puzzle per group, ``examples`` examples each)."""
    from trmlab.data.format import array_path, dataset_json, write_json

    rng = np.random.default_rng(0)
    split = root / "train"
    split.mkdir(parents=True)
    groups = num_ids - 1
    total = groups * examples
    arrays = {"inputs": rng.integers(2, 12, (total, seq_len)).astype(np.uint8),
              "labels": rng.integers(2, 12, (total, seq_len)).astype(np.uint8),
              "puzzle_identifiers": np.arange(1, num_ids, dtype=np.int32),
              "puzzle_indices": np.arange(0, total + 1, examples, dtype=np.int32),
              "group_indices": np.arange(0, groups + 1, dtype=np.int32)}
    for name, array in arrays.items():
        np.save(array_path(split, name), array)
    write_json(split / "dataset.json", dataset_json(seq_len=seq_len, num_puzzle_identifiers=num_ids,
                                                    total_groups=groups, total_puzzles=groups,
                                                    total_examples=total))
    (root / "identifiers.json").write_text(json.dumps(["<blank>"] + [f"p{i}" for i in range(1, num_ids)]))
    return root


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_shape(shape: str, steps: int, warmup: int, batch: int | None, device: str) -> dict:
    """Train ``steps`` steps of preset ``shape`` on random data; measure train and eval throughput."""
    from trmlab.config import load_config
    from trmlab.training.loop import Trainer

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if batch is None:
        batch = CPU_BATCH[shape] if dev.type == "cpu" else None
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"run_dir={tmp}/run", f"device={dev}", f"max_steps={steps}", "eval_interval=null",
                     "log_every=1", "checkpoint_every=1000000", "lr_warmup_steps=0",
                     "arch.forward_dtype=auto"]  # bf16 on CUDA, fp32 on CPU
        resolved = load_config(shape, overrides)
        global_batch = batch or resolved.config.global_batch_size
        data = write_random_dataset(Path(tmp) / "data", SEQ_LEN[shape],
                                    examples=max(4, -(-2 * global_batch // 63)))
        overrides += [f"data_paths=[{data}]", f"global_batch_size={global_batch}"]
        resolved = load_config(shape, overrides)
        trainer = Trainer(resolved, progress=False, evaluate=lambda _trainer, _step: {})
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        trainer.run()
        lines = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        timed = [line for line in lines if line["split"] == "train"][warmup:]
        step_seconds = sum(1.0 / line["steps_per_s"] for line in timed) / max(len(timed), 1)
        train_peak = _peak_memory_mb(dev)
        eval_rate = _eval_samples_per_s(trainer, global_batch)
        params = sum(p.numel() for p in trainer.model.parameters())
    dtype = str(trainer.model.forward_dtype).removeprefix("torch.")
    return {"shape": shape, "device": str(dev), "dtype": dtype,
            "params": params, "global_batch": global_batch, "seq_len": SEQ_LEN[shape],
            "act_steps_per_s": 1.0 / step_seconds, "train_samples_per_s": global_batch / step_seconds,
            "eval_samples_per_s": eval_rate, "peak_memory_mb": max(train_peak, _peak_memory_mb(dev)),
            "timed_steps": len(timed)}


@torch.no_grad()
def _eval_samples_per_s(trainer, batch_size: int, repeats: int = 2) -> float:
    """Evaluation as the evaluator runs it: a fresh carry, halt_max_steps calls in eval mode."""
    model, device = trainer.model, trainer.ctx.device
    examples = np.arange(batch_size) % trainer.dataset.num_examples
    from trmlab.data.dataset import collate_items

    batch = {k: v.to(device) for k, v in collate_items(trainer.dataset, examples, np.zeros_like(examples),
                                                       trainer.config.max_demos).items()}
    model.eval()
    best = float("inf")
    # CUDA: one warm-up pass, then the best of ``repeats``; CPU needs no warm-up and an ARC-size rollout there
    # is minutes, so one pass.
    passes = repeats + 1 if device.type == "cuda" else 1
    for _ in range(passes):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        carry = model.initial_carry(batch)
        for _step in range(trainer.config.arch.halt_max_steps):
            carry, _outputs = model(carry, batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return batch_size / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["tiny", "demo", "trm-arc1"], choices=list(SEQ_LEN))
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per shape (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="steps excluded from the timing (default 2)")
    parser.add_argument("--batch", type=int, default=None,
                        help="global batch (default: the preset's on CUDA, capped on CPU: tiny 8, demo 32, "
                             "trm-arc1 4)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object per shape")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads", file=sys.stderr)
    print("| shape | device | dtype | params | batch | seq | train samples/s | ACT steps/s | eval samples/s "
          "| peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        row = bench_shape(shape, args.steps, args.warmup, args.batch, args.device)
        if args.json:
            print(json.dumps(row))
            continue
        print(f"| {row['shape']} | {row['device']} | {row['dtype']} | {row['params']:,} "
              f"| {row['global_batch']} | {row['seq_len']} | {row['train_samples_per_s']:.3g} "
              f"| {row['act_steps_per_s']:.3g} "
              f"| {row['eval_samples_per_s']:.3g} | {row['peak_memory_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
