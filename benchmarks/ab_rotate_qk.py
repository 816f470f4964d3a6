"""trmlab alone, q|k rotated as one tensor (its CPU path) against q and k apart (its GPU path, the official
layout), alternating in one process: training steps and evaluation steps at bench_vs_official's shapes.

    python benchmarks/ab_rotate_qk.py --shape tiny --rounds 10        # CPU, one thread, CPU time

Prints per-round time ratios apart / together and their medians (> 1: together is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_vs_official import SHAPES, VOCAB
from trmlab.config.loader import load_config
from trmlab.models import build_model, layers
from trmlab.models.losses import act_loss


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2, help="ACT steps per timed unit")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    hidden, heads, h_cycles, l_cycles, layers_, seq_len, rows = SHAPES[args.shape]
    config = load_config("tiny", [f"arch.hidden_size={hidden}", f"arch.num_heads={heads}",
                                  f"arch.H_cycles={h_cycles}", f"arch.L_cycles={l_cycles}",
                                  f"arch.L_layers={layers_}", "arch.forward_dtype=float32"])
    torch.manual_seed(0)
    model = build_model(config, seq_len=seq_len, vocab_size=VOCAB, num_puzzle_identifiers=8)
    g = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.randint(0, VOCAB, (rows, seq_len), generator=g),
             "labels": torch.randint(0, VOCAB, (rows, seq_len), generator=g),
             "puzzle_identifiers": torch.randint(1, 8, (rows,), generator=g)}
    carry = model.initial_carry(batch)

    def train() -> None:
        nonlocal carry
        model.train()
        for _ in range(args.steps):
            carry, out = model(carry, batch)
            act_loss(out, model.arch.loss_type)[0].backward()
            model.zero_grad(set_to_none=True)

    def evaluate() -> None:
        model.rollout(batch["inputs"], batch["puzzle_identifiers"], steps=args.steps)

    for part, unit in (("train", train), ("eval", evaluate)):
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for together in (True, False):  # warm-up
            layers.ROTATE_QK_TOGETHER_ON_CPU = together
            unit()
        for r in range(args.rounds):
            for together in ((True, False) if r % 2 == 0 else (False, True)):
                layers.ROTATE_QK_TOGETHER_ON_CPU = together
                start = time.process_time()
                unit()
                seconds[together].append(time.process_time() - start)
        layers.ROTATE_QK_TOGETHER_ON_CPU = True
        ratios = [a / t for a, t in zip(seconds[False], seconds[True])]
        rounds = " ".join(f"{x:.2f}" for x in ratios)
        print(f"{part}, shape {args.shape}, {args.steps} ACT steps per unit, CPU time: apart / together "
              f"median {statistics.median(ratios):.3f} (rounds {rounds})", flush=True)


if __name__ == "__main__":
    main()
