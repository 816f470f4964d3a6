"""ETRM training throughput: packed + cropped demo encoding against the naive full-canvas layout.

Shape: ARC-size canvas (30×30, seq_len 900), max_demos 10 slots with 2-5 real demos per task, the TRM decoder
recursion of the released recipe (H_cycles 3, L_cycles 4, 2 layers, 16 prefix positions) at a CPU-sized width.
Demos are real ARC-AGI-1 training pairs (``../shared/data/arc-kaggle-combined``) when available, else random
grids with ARC-like sizes. Both layouts run the same weights on the same batches; one training step = one ACT
step forward + loss + backward + AdamATan2 update, as in ``trmlab train``.

    .venv/bin/python benchmarks/bench_etrm.py            # CPU defaults: batch 4, hidden 64, 5 timed steps
    .venv/bin/python benchmarks/bench_etrm.py --device cuda --batch 32 --hidden 512 --heads 8
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from trmlab.config.schema import ArchConfig
from trmlab.models.etrm import ETRM
from trmlab.training.optim import AdamATan2

ROOT = Path(__file__).resolve().parents[1]
ARC_JSON = ROOT.parent / "shared" / "data" / "arc-kaggle-combined" / "arc-agi_training_challenges.json"
SIDE, MAX_DEMOS = 30, 10


def canvas(grid: list[list[int]]) -> torch.Tensor:
    """Tokens of a grid at the top-left of the 30×30 canvas with its EOS row/column (trm-reference §7.2)."""
    board = torch.zeros(SIDE, SIDE, dtype=torch.int32)
    g = torch.tensor(grid, dtype=torch.int32)
    h, w = g.shape
    board[:h, :w] = g + 2
    if h < SIDE:
        board[h, :w] = 1
    if w < SIDE:
        board[:h, w] = 1
    return board.flatten()


def random_pair(rng: random.Random) -> tuple[list[list[int]], list[list[int]]]:
    h, w = rng.randint(3, 20), rng.randint(3, 20)
    grid = [[rng.randint(0, 9) for _ in range(w)] for _ in range(h)]
    return grid, [row[::-1] for row in grid]


def task_pool(rng: random.Random, arc_json: Path = ARC_JSON) -> tuple[list[list[tuple]], str]:
    """Lists of (input, output) pairs per task: ARC-AGI-1 training tasks (train pairs + test pairs)."""
    if arc_json.exists():
        data = json.loads(arc_json.read_text())
        return [task["train"] for task in data.values()], f"ARC-AGI-1 training demos ({arc_json.name})"
    tasks = [[random_pair(rng) for _ in range(6)] for _ in range(64)]
    return [[{"input": i, "output": o} for i, o in t] for t in tasks], "random 3-20 side grids (no ARC JSON)"


def make_batch(pool: list, batch: int, rng: random.Random) -> dict[str, torch.Tensor]:
    """B tasks with 2-5 real demos each (from the task's pairs) and one further pair as the query."""
    demo_inputs = torch.zeros(batch, MAX_DEMOS, SIDE * SIDE, dtype=torch.int32)
    demo_labels = torch.zeros_like(demo_inputs)
    demo_mask = torch.zeros(batch, MAX_DEMOS, dtype=torch.bool)
    inputs = torch.zeros(batch, SIDE * SIDE, dtype=torch.int32)
    labels = torch.zeros(batch, SIDE * SIDE, dtype=torch.long)
    for b in range(batch):
        count = rng.randint(2, 5)
        pairs = rng.choice([p for p in pool if len(p) > count])  # the count real demos + one query
        for k, pair in enumerate(pairs[:count]):
            demo_inputs[b, k], demo_labels[b, k] = canvas(pair["input"]), canvas(pair["output"])
            demo_mask[b, k] = True
        query = pairs[count]
        inputs[b] = canvas(query["input"])
        labels[b] = canvas(query["output"]).long()
    labels[labels == 0] = -100
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.zeros(batch, dtype=torch.int32),
            "demo_inputs": demo_inputs, "demo_labels": demo_labels, "demo_mask": demo_mask}


def arch(args: argparse.Namespace) -> ArchConfig:
    return ArchConfig(name="etrm", H_cycles=3, L_cycles=4, L_layers=2, hidden_size=args.hidden,
                      num_heads=args.heads, puzzle_emb_ndim=0, puzzle_emb_len=16, halt_max_steps=16,
                      forward_dtype="auto", encoder_num_layers=2, encoder_set_layers=1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Runner:
    """One layout's model, optimizer and carry; :meth:`train_step` / :meth:`encoder_step` return seconds."""

    def __init__(self, model: ETRM, device: torch.device):
        self.model, self.device = model.train(), device
        self.opt = AdamATan2(model.parameters(), lr=1e-4)
        self.carry = None

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One ACT step forward + loss + backward + optimizer update, as the training loop does."""
        if self.carry is None:
            self.carry = self.model.initial_carry(batch)
        sync(self.device)
        start = time.perf_counter()
        self.carry, outputs = self.model(self.carry, batch)
        loss, _ = self.model.compute_loss(outputs)
        (loss / batch["inputs"].shape[0]).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync(self.device)
        return time.perf_counter() - start

    def encoder_step(self, batch: dict[str, torch.Tensor]) -> float:
        """Encoder forward + backward alone (what the two layouts differ in)."""
        sync(self.device)
        start = time.perf_counter()
        out = self.model.encoder(batch["demo_inputs"], batch["demo_labels"], batch["demo_mask"],
                                 dtype=self.model.forward_dtype)
        out.context.float().square().sum().backward()
        sync(self.device)
        self.model.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per layout")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arc-json", type=Path, default=ARC_JSON,
                        help="ARC-AGI-1 training challenges (default: ../shared's; random grids if absent)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = random.Random(args.seed)
    pool, source = task_pool(rng, args.arc_json)
    batches = [{k: v.to(device) for k, v in make_batch(pool, args.batch, rng).items()}
               for _ in range(args.warmup + args.steps)]
    real = torch.stack([b["demo_mask"].sum(1) for b in batches]).float().mean().item()

    torch.manual_seed(args.seed)
    runners = {}
    for name, packing in (("packed", True), ("naive", False)):
        model = ETRM(arch(args), seq_len=SIDE * SIDE, vocab_size=12, packing=packing).to(device)
        if runners:  # identical weights in both layouts
            model.load_state_dict(runners["packed"].model.state_dict())
        runners[name] = Runner(model, device)
    # Rounds alternate the layouts so a change in machine load hits both alike; medians are reported.
    times: dict[str, dict[str, list[float]]] = {n: {"train": [], "encoder": []} for n in runners}
    for i, batch in enumerate(batches):
        for name, runner in runners.items():
            encoder_s, train_s = runner.encoder_step(batch), runner.train_step(batch)
            if i >= args.warmup:
                times[name]["encoder"].append(encoder_s)
                times[name]["train"].append(train_s)
    results = {}
    for name in runners:
        step_s, encoder_s = median(times[name]["train"]), median(times[name]["encoder"])
        results[name] = {"train_step_s": step_s, "train_samples_per_s": args.batch / step_s,
                         "encoder_fwd_bwd_s": encoder_s, "train_step_s_all": times[name]["train"]}
        print(f"{name:>6}: {args.batch / step_s:8.2f} train samples/s ({step_s:.3f} s/step), "
              f"encoder fwd+bwd {encoder_s:.3f} s/batch", flush=True)
    packed = runners["packed"].model
    speedup = results["packed"]["train_samples_per_s"] / results["naive"]["train_samples_per_s"]
    enc_speedup = results["naive"]["encoder_fwd_bwd_s"] / results["packed"]["encoder_fwd_bwd_s"]
    summary = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "batch": args.batch, "hidden": args.hidden, "heads": args.heads, "demos": source,
               "mean_real_demos": real, "max_demos": MAX_DEMOS, "canvas": f"{SIDE}x{SIDE}",
               "forward_dtype": str(packed.forward_dtype), "results": results,
               "train_speedup": speedup, "encoder_speedup": enc_speedup}
    print(f"demos: {source}, {real:.2f} real of {MAX_DEMOS} slots per task; device {device}, "
          f"{torch.get_num_threads()} threads, dtype {packed.forward_dtype}")
    print(f"speedup: training {speedup:.2f}x, encoder alone {enc_speedup:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
