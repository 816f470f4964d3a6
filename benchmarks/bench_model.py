"""Model throughput: one training ACT step (forward + backward, no optimizer) and a full eval rollout.

    python benchmarks/bench_model.py                                     # CPU smoke numbers (< 1 min)
    python benchmarks/bench_model.py --preset trm-arc1 --device cuda --dtype bfloat16 float32 --batch 96

Prints samples/s for each dtype and the peak memory (CUDA: max allocated; CPU: the process's peak RSS, which
only grows). ``--official-casts`` re-casts every weight at every call as the official code does, to measure
what casting once per ACT step saves (bf16 only; fp32 never casts).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trmlab.config.loader import load_config
from trmlab.models import build_model
from trmlab.models import layers as model_layers
from trmlab.models.losses import act_loss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="config preset (default tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="+", default=None, choices=("float32", "bfloat16"),
                        help="forward dtypes to measure (default: bfloat16 float32 on CUDA, float32 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="rows per batch (default 4 CPU, 96 CUDA)")
    parser.add_argument("--seq-len", type=int, default=900, help="grid tokens (900 = ARC)")
    parser.add_argument("--vocab", type=int, default=12)
    parser.add_argument("--train-steps", type=int, default=2, help="timed training ACT steps")
    parser.add_argument("--eval-steps", type=int, default=None, help="ACT steps per rollout "
                        "(default halt_max_steps)")
    parser.add_argument("--rollouts", type=int, default=1, help="timed eval rollouts")
    parser.add_argument("--official-casts", action="store_true",
                        help="cast every weight at every call (the official behaviour), for comparison")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", choices=("none", "level", "model"), default="none",
                        help="torch.compile the shared reasoning level (one block stack call) or the whole "
                        "ACT model (compile time is excluded: warm-up steps absorb it)")
    return parser.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_batch(batch: int, seq_len: int, vocab: int, ids: int, device: torch.device
               ) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, vocab, (batch, seq_len), generator=g, dtype=torch.int32)
    return {"inputs": inputs.to(device), "labels": inputs.long().to(device),
            "puzzle_identifiers": torch.randint(0, ids, (batch,), generator=g, dtype=torch.int32).to(device)}


def bench_train(runner, model, batch, steps: int, device: torch.device) -> float:
    """Samples/s of training ACT steps (forward, loss, backward; the carry persists as in training)."""
    model.train()
    carry = model.initial_carry(batch)
    rows = batch["inputs"].shape[0]

    def one_step(carry):
        carry, out = runner(carry, batch)
        loss, _ = act_loss(out, model.arch.loss_type)
        (loss / rows).backward()
        model.zero_grad(set_to_none=True)
        return carry

    carry = one_step(carry)  # warm-up (allocator, kernels, compilation)
    carry = one_step(carry)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        carry = one_step(carry)
    sync(device)
    return rows * steps / (time.perf_counter() - start)


def bench_eval(runner, model, batch, rollouts: int, act_steps: int, device: torch.device) -> float:
    """Samples/s of full evaluation rollouts (act_steps ACT steps each, fresh carry, no grad)."""
    rows = batch["inputs"].shape[0]
    model.eval()

    @torch.no_grad()
    def rollout(steps: int) -> None:
        carry = model.initial_carry(batch)
        for _ in range(steps):
            carry, out = runner(carry, batch)
            out["logits"].argmax(-1)

    rollout(2)  # warm-up (and compilation)
    sync(device)
    start = time.perf_counter()
    for _ in range(rollouts):
        rollout(act_steps)
    sync(device)
    return rows * rollouts / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtypes = args.dtype or (["bfloat16", "float32"] if device.type == "cuda" else ["float32"])
    batch_size = args.batch or (96 if device.type == "cuda" else 4)
    model_layers.CAST_ONCE_PER_STEP = not args.official_casts
    resolved = load_config(args.preset, args.overrides)
    arch = resolved.config.arch
    act_steps = args.eval_steps or arch.halt_max_steps
    num_ids = 1000
    torch.manual_seed(0)
    model = build_model(resolved, seq_len=args.seq_len, vocab_size=args.vocab, num_puzzle_identifiers=num_ids)
    model.to(device)
    runner = model
    if args.compile == "level":
        model.core.reasoning_level = torch.compile(model.core.reasoning_level)
    elif args.compile == "model":
        runner = torch.compile(model)
    batch = make_batch(batch_size, args.seq_len, args.vocab, num_ids, device)
    params = sum(p.numel() for p in model.parameters())
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    casts = "official (every call)" if args.official_casts else "once per ACT step"
    print(f"preset {args.preset} ({params:,} parameters, hidden {arch.hidden_size}, H{arch.H_cycles}/"
          f"L{arch.L_cycles} cycles, {arch.L_layers} layers), seq_len {args.seq_len}, batch {batch_size}, "
          f"device {name}, torch {torch.__version__}, weight casts {casts}, compile {args.compile}")
    print(f"| dtype | train ACT step (samples/s) | eval rollout of {act_steps} steps (samples/s) "
          "| peak memory (MiB) |")
    print("|---|---|---|---|")
    for dtype in dtypes:
        model.core.forward_dtype_override = getattr(torch, dtype)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        train = bench_train(runner, model, batch, args.train_steps, device)
        evaluation = bench_eval(runner, model, batch, args.rollouts, act_steps, device)
        print(f"| {dtype} | {train:.2f} | {evaluation:.2f} | {peak_memory_mib(device):.0f} |", flush=True)


if __name__ == "__main__":
    main()
