"""trmlab's TRM against the official model, side by side in one process, with the same weights.

    python benchmarks/bench_vs_official.py --official /tmp/official                    # CPU, tiny shape
    python benchmarks/bench_vs_official.py --official /tmp/official --shape mid
    python benchmarks/bench_vs_official.py --official /tmp/official --shape arc --device cuda \
        --dtype bfloat16 --compile                                          # the ARC shape on a GPU

``--official`` is a checkout of SamsungSAILMontreal/TinyRecursiveModels kept outside this repository (its
model needs ``pydantic`` and ``einops`` in the environment; nothing of it is copied here). Both models are
built with the same architecture, the official weights are loaded into trmlab's model through the checkpoint
key map, and the first ACT step's logits are compared before anything is timed. Then, for ``--rounds``
rounds, alternating which model goes first, it times:

- training ACT step: forward, the loss head (official ``ACTLossHead`` / trmlab ``act_loss``), backward,
  gradients cleared; the carry persists across steps as in training;
- evaluation rollout: a fresh carry, ``halt_max_steps`` ACT steps without gradients, as each evaluator runs it
  (official: its loss head under ``inference_mode`` until ``all_finish``; trmlab: ``model.rollout``).

It prints every round's samples/s and the median ratio trmlab / official (> 1: trmlab is faster).

``--numerics`` instead measures how far apart the two are in ``--dtype`` (bf16) against the official fp32
result of the same weights, over a full evaluation rollout, next to the official code's own spread (the same
rollout run again, and with the batch rows permuted, which changes kernel tiling on GPUs): trmlab's bf16
results are "numerically unchanged" when their distance to the official bf16 run is within that spread and
their error against fp32 is the official one's.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trmlab.config.loader import load_config
from trmlab.interop.official_keys import strip_official
from trmlab.models import build_model, layers
from trmlab.models.losses import act_loss

# (hidden, heads, H_cycles, L_cycles, L_layers, seq_len, batch): the shapes of the measurements.
SHAPES = {
    "tiny": (64, 2, 3, 4, 2, 100, 32),
    "mid": (256, 4, 3, 4, 2, 400, 8),
    "arc": (512, 8, 3, 4, 2, 900, 96),
}
VOCAB, NUM_IDS, PREFIX = 12, 64, 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, type=Path,
                        help="checkout of the official TinyRecursiveModels repository")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch", type=int, default=None, help="rows per batch (default: the shape's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both models (compilation excluded from timing)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=3, help="training ACT steps per round")
    parser.add_argument("--rollouts", type=int, default=1, help="evaluation rollouts per round")
    parser.add_argument("--halt-max-steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--parts", nargs="+", choices=("train", "eval"), default=["train", "eval"])
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time instead of wall time (with --threads 1, robust to "
                        "other load on a shared machine; CPU devices only)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the chip's measured dense matmul rate in --dtype: adds TFLOP/s and MFU")
    parser.add_argument("--numerics", action="store_true",
                        help="compare final-step logits and predictions instead of timing (see above)")
    parser.add_argument("--trace-ops", action="store_true",
                        help="list the aten calls (shapes, strides, dtypes) only one model makes")
    return parser.parse_args(argv)


def architecture(args: argparse.Namespace) -> dict[str, Any]:
    hidden, heads, h_cycles, l_cycles, layers, seq_len, batch = SHAPES[args.shape]
    return dict(hidden_size=hidden, num_heads=heads, H_cycles=h_cycles, L_cycles=l_cycles, L_layers=layers,
                seq_len=seq_len, batch_size=args.batch or batch, expansion=4.0, puzzle_emb_ndim=hidden,
                puzzle_emb_len=PREFIX, pos_encodings="rope", halt_max_steps=args.halt_max_steps,
                halt_exploration_prob=0.1, forward_dtype=args.dtype, no_ACT_continue=True, mlp_t=False)


def flops_per_sample(arch: dict[str, Any]) -> dict[str, float]:
    """Matmul FLOPs per sample: ``train`` (one ACT step: all H cycles forward, the last one backward at 2x its
    forward) and ``eval`` (``halt_max_steps`` forward steps). Per token and layer: QKV and output projections
    (8·D²), attention scores and values (4·S·D), SwiGLU (6·D·I); the LM and Q heads are negligible."""
    from trmlab.models.layers import swiglu_width

    hidden, seq = arch["hidden_size"], arch["seq_len"] + PREFIX
    inner = swiglu_width(hidden, arch["expansion"])
    per_pass = arch["L_layers"] * seq * (8 * hidden**2 + 4 * seq * hidden + 6 * hidden * inner)
    passes_per_cycle = arch["L_cycles"] + 1  # L updates of z_L, then one update of z_H
    forward = arch["H_cycles"] * passes_per_cycle * per_pass
    return {"train": forward + 2 * passes_per_cycle * per_pass, "eval": arch["halt_max_steps"] * forward}


def build_official(path: Path, arch: dict[str, Any], device: torch.device
                   ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The official ACT model wrapped in its loss head (imported from ``path``), built on ``device`` as the
    official trainer builds it (``with torch.device("cuda")``): its RoPE tables are computed there. Built on
    the CPU and moved, a GPU model would hold CPU-computed tables, which differ from the GPU's cos/sin in the
    last bit, and its logits would differ from the official trainer's (and trmlab's, which computes the
    tables on the weights' device)."""
    sys.path.insert(0, str(path.resolve()))
    trm = importlib.import_module("models.recursive_reasoning.trm")
    losses = importlib.import_module("models.losses")
    config = dict(arch, vocab_size=VOCAB, num_puzzle_identifiers=NUM_IDS, H_layers=0)
    with torch.device(device):
        model = trm.TinyRecursiveReasoningModel_ACTV1(config)
        return model, losses.ACTLossHead(model, "stablemax_cross_entropy")


def build_trmlab(arch: dict[str, Any], official: torch.nn.Module) -> torch.nn.Module:
    """trmlab's TRM with the same architecture, holding the official model's weights."""
    keys = ("hidden_size", "num_heads", "H_cycles", "L_cycles", "L_layers", "expansion", "puzzle_emb_ndim",
            "puzzle_emb_len", "pos_encodings", "halt_max_steps", "halt_exploration_prob", "forward_dtype",
            "no_ACT_continue", "mlp_t")
    overrides = [f"arch.{k}={str(arch[k]).lower() if isinstance(arch[k], bool) else arch[k]}" for k in keys]
    resolved = load_config("tiny", overrides)
    model = build_model(resolved, seq_len=arch["seq_len"], vocab_size=VOCAB, num_puzzle_identifiers=NUM_IDS)
    state = strip_official(official.inner.state_dict(), "official model")
    model.load_state_dict(state, strict=True)
    return model


def make_batch(arch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    rows, seq_len = arch["batch_size"], arch["seq_len"]
    inputs = torch.randint(0, VOCAB, (rows, seq_len), generator=g, dtype=torch.int32)
    labels = torch.randint(0, VOCAB, (rows, seq_len), generator=g, dtype=torch.int32)
    ids = torch.randint(1, NUM_IDS, (rows,), generator=g, dtype=torch.int32)
    return {"inputs": inputs.to(device), "labels": labels.to(device), "puzzle_identifiers": ids.to(device)}


def _official_carry_to(carry: Any, device: torch.device) -> Any:
    """The official carry is created on the CPU; its trainer moves every tensor (``.cuda()``)."""
    inner = carry.inner_carry
    inner.z_H, inner.z_L = inner.z_H.to(device), inner.z_L.to(device)
    carry.steps, carry.halted = carry.steps.to(device), carry.halted.to(device)
    carry.current_data = {k: v.to(device) for k, v in carry.current_data.items()}
    return carry


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Contender:
    """One model's training step and evaluation rollout, as its own code runs them."""

    def __init__(self, name: str, train_step: Callable[[Any], Any], rollout: Callable[[], None],
                 initial_carry: Callable[[], Any]) -> None:
        self.name, self.train_step, self.rollout = name, train_step, rollout
        self.initial_carry = initial_carry
        self.carry = None


def official_contender(head: torch.nn.Module, batch: dict[str, torch.Tensor], compile_: bool) -> Contender:
    runner = torch.compile(head) if compile_ else head
    rows = batch["inputs"].shape[0]

    def initial_carry() -> Any:
        return _official_carry_to(head.initial_carry(batch), batch["inputs"].device)

    def train_step(carry: Any) -> Any:
        head.train()
        carry, loss, _, _, _ = runner(return_keys=[], carry=carry, batch=batch)
        (loss / rows).backward()
        head.zero_grad(set_to_none=True)
        return carry

    def rollout() -> None:
        head.eval()
        with torch.inference_mode():
            carry = initial_carry()
            while True:
                carry, _, _, _, all_finish = runner(return_keys=["preds"], carry=carry, batch=batch)
                if all_finish:
                    break

    return Contender("official", train_step, rollout, initial_carry)


def trmlab_contender(model: torch.nn.Module, batch: dict[str, torch.Tensor], compile_: bool) -> Contender:
    runner = torch.compile(model) if compile_ else model
    if compile_:
        model.use_compiled_step(runner)  # as trmlab's trainer and `trmlab eval compile=true` do
    rows = batch["inputs"].shape[0]
    loss_type = model.arch.loss_type

    def train_step(carry: Any) -> Any:
        model.train()
        carry, out = runner(carry, batch)
        loss, _ = act_loss(out, loss_type)
        (loss / rows).backward()
        model.zero_grad(set_to_none=True)
        return carry

    def rollout() -> None:
        model.rollout(batch["inputs"], batch["puzzle_identifiers"])

    return Contender("trmlab", train_step, rollout, lambda: model.initial_carry(batch))


def first_step_difference(official: torch.nn.Module, trmlab: torch.nn.Module,
                          batch: dict[str, torch.Tensor]) -> float:
    """Max |Δ logits| of the first evaluation step: the two models must compute the same thing."""
    official.eval()
    with torch.no_grad():
        carry = _official_carry_to(official.initial_carry(batch), batch["inputs"].device)
        _, ref = official(carry, batch)
        ours = trmlab.rollout(batch["inputs"], batch["puzzle_identifiers"], steps=1)[0]
    return float((ref["logits"].float() - ours["logits"].float()).abs().max())


def first_gradient_difference(head: torch.nn.Module, official: torch.nn.Module, trmlab: torch.nn.Module,
                              batch: dict[str, torch.Tensor]) -> float:
    """Max |Δ gradient| over the shared weights after one training ACT step from a fresh carry (loss summed
    over the batch), each model through its own loss. Gradients are cleared afterwards."""
    official.train()
    trmlab.train()
    carry = _official_carry_to(head.initial_carry(batch), batch["inputs"].device)
    head(return_keys=[], carry=carry, batch=batch)[1].backward()
    _, out = trmlab(trmlab.initial_carry(batch), batch)
    act_loss(out, trmlab.arch.loss_type)[0].backward()
    named = official.inner.state_dict(keep_vars=True)  # official key names, the Parameters themselves
    theirs = strip_official({k: v.grad for k, v in named.items() if getattr(v, "grad", None) is not None},
                            "official gradients")
    ours = {k: p.grad for k, p in trmlab.named_parameters() if p.grad is not None}
    shared = theirs.keys() & ours.keys()
    if not shared:
        raise SystemExit("no gradient names in common: the key map does not cover the official parameters")
    diff = max(float((theirs[k].float() - ours[k].float()).abs().max()) for k in shared)
    head.zero_grad(set_to_none=True)
    trmlab.zero_grad(set_to_none=True)
    return diff


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_train(contender: Contender, steps: int, rows: int, device: torch.device, clock: str) -> float:
    sync(device)
    start = CLOCKS[clock]()
    for _ in range(steps):
        contender.carry = contender.train_step(contender.carry)
    sync(device)
    return rows * steps / (CLOCKS[clock]() - start)


def time_eval(contender: Contender, rollouts: int, rows: int, device: torch.device, clock: str) -> float:
    sync(device)
    start = CLOCKS[clock]()
    for _ in range(rollouts):
        contender.rollout()
    sync(device)
    return rows * rollouts / (CLOCKS[clock]() - start)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Print the per-round table and the median ratios; returns {part: median ratio trmlab / official}."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("--clock cpu measures CPU time: only for --device cpu")
    arch = architecture(args)
    torch.manual_seed(0)
    official_model, head = build_official(args.official, arch, device)
    trmlab_model = build_trmlab(arch, official_model)
    official_model.to(device)
    trmlab_model.to(device)
    batch = make_batch(arch, device)
    rows = arch["batch_size"]
    diff = first_step_difference(official_model, trmlab_model, batch)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"shape {args.shape}: hidden {arch['hidden_size']}, heads {arch['num_heads']}, "
          f"H{arch['H_cycles']} L{arch['L_cycles']}, {arch['L_layers']} layers, "
          f"seq {arch['seq_len']} + {PREFIX}, "
          f"batch {rows}, {args.dtype}, compile {args.compile}, {hardware}, torch {torch.__version__}")
    grad_diff = first_gradient_difference(head, official_model, trmlab_model, batch)
    print(f"first ACT step: max |logits official - trmlab| = {diff:.3g}; max |gradient official - trmlab| "
          f"after one training step = {grad_diff:.3g}")
    contenders = [official_contender(head, batch, args.compile), trmlab_contender(trmlab_model, batch,
                                                                                  args.compile)]
    for c in contenders:  # warm-up: allocator, kernels, compilation
        c.carry = c.initial_carry()
        if "train" in args.parts:
            c.carry = c.train_step(c.train_step(c.carry))
        if "eval" in args.parts:
            c.rollout()
    ratios: dict[str, float] = {}
    for part in args.parts:
        figures: dict[str, list[float]] = {c.name: [] for c in contenders}
        faults: dict[str, int] = {}
        print(f"\n{part}: samples/s per round ({args.clock} clock, alternating order; page faults: the "
              f"process's minor faults while each side ran: memory the allocator gave back and took again)")
        print("| round | official | trmlab | ratio | page faults official | page faults trmlab |")
        print("|---|---|---|---|---|---|")
        for r in range(args.rounds):
            order = contenders if r % 2 == 0 else contenders[::-1]
            for c in order:
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                if part == "train":
                    figures[c.name].append(time_train(c, args.train_steps, rows, device, args.clock))
                else:
                    figures[c.name].append(time_eval(c, args.rollouts, rows, device, args.clock))
                faults[c.name] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            o, t = figures["official"][-1], figures["trmlab"][-1]
            print(f"| {r + 1} | {o:.1f} | {t:.1f} | {t / o:.2f} | {faults['official']} | "
                  f"{faults['trmlab']} |", flush=True)
        per_round = [t / o for o, t in zip(figures["official"], figures["trmlab"])]
        ratios[part] = statistics.median(per_round)
        print(f"median: official {statistics.median(figures['official']):.1f}, trmlab "
              f"{statistics.median(figures['trmlab']):.1f} samples/s, ratio {ratios[part]:.2f}")
        flops = flops_per_sample(arch)[part]
        achieved = {name: statistics.median(v) * flops / 1e12 for name, v in figures.items()}
        mfu = "" if not args.peak_tflops else ", MFU " + ", ".join(
            f"{name} {100 * value / args.peak_tflops:.1f}%" for name, value in achieved.items())
        print(f"matmul work: {flops / 1e12:.3f} TFLOP per sample; achieved " + ", ".join(
            f"{name} {value:.1f}" for name, value in achieved.items()) + f" TFLOP/s{mfu}")
    return ratios


def _official_rollout(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Final-step logits of an official evaluation rollout (halt_max_steps steps, fresh carry)."""
    model.eval()
    with torch.inference_mode():
        carry = _official_carry_to(model.initial_carry(batch), batch["inputs"].device)
        for _ in range(model.config.halt_max_steps):
            carry, out = model(carry, batch)
    return out["logits"].float()


def compare_numerics(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """{comparison: (max |Δ logits|, share of predicted tokens that differ)} for the final rollout step."""
    device = torch.device(args.device)
    reference_arch = dict(architecture(args), forward_dtype="float32")
    torch.manual_seed(0)
    reference, _ = build_official(args.official, reference_arch, device)
    low_arch = architecture(args)
    low, _ = build_official(args.official, low_arch, device)
    low.inner.load_state_dict(reference.inner.state_dict())  # same weights, H/L_init rounded to the dtype
    ours = build_trmlab(reference_arch, reference)
    ours.core.forward_dtype_override = getattr(torch, args.dtype)
    for model in (reference, low, ours):
        model.to(device)
    batch = make_batch(low_arch, device)
    perm = torch.randperm(low_arch["batch_size"], generator=torch.Generator().manual_seed(1)).to(device)
    permuted = {k: v[perm] for k, v in batch.items()}
    fp32 = _official_rollout(reference, batch)
    runs = {
        "official": _official_rollout(low, batch),
        "official, again": _official_rollout(low, batch),
        "official, rows permuted": _official_rollout(low, permuted)[torch.argsort(perm)],
        "trmlab": ours.rollout(batch["inputs"], batch["puzzle_identifiers"])[-1]["logits"].float(),
    }

    def distance(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        return float((a - b).abs().max()), float((a.argmax(-1) != b.argmax(-1)).float().mean())

    results = {f"{name} {args.dtype} vs official float32": distance(v, fp32) for name, v in runs.items()}
    for name in ("official, again", "official, rows permuted", "trmlab"):
        results[f"{name} vs official ({args.dtype})"] = distance(runs[name], runs["official"])
    print(f"numerics, shape {args.shape}, {args.dtype}, {args.device}, torch {torch.__version__}: final step "
          f"of a {low_arch['halt_max_steps']}-step rollout, batch {low_arch['batch_size']}")
    rope = getattr(reference.inner, "rotary_emb", None)  # the official RoPE module, built on `device`
    if rope is not None:
        cos, sin = ours.core.rotary(device)
        pairs = ((rope.cos_cached, cos), (rope.sin_cached, sin))
        cos_diff, sin_diff = (float((a - b).abs().max()) for a, b in pairs)
        print(f"RoPE tables (both computed on {device.type}): max |official - trmlab| cos {cos_diff:.3g}, "
              f"sin {sin_diff:.3g}")
    print("| comparison | max abs logit difference | predicted tokens that differ |")
    print("|---|---|---|")
    for name, (diff, share) in results.items():
        print(f"| {name} | {diff:.3g} | {share:.2%} |")
    return results


class _OpRecorder(TorchDispatchMode):
    """Records every aten call as 'op shape·strides·dtype ...' for each tensor argument."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.calls.append(f"{func.__name__} " + " ".join(_signature(a) for a in args))
        return func(*args, **(kwargs or {}))


def _signature(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)}{tuple(value.stride())}{str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_signature(v) for v in value) + "]"
    return repr(value) if isinstance(value, (int, float, bool)) or value is None else type(value).__name__


def trace_ops(args: argparse.Namespace) -> tuple[collections.Counter, collections.Counter]:
    """The aten calls of one evaluation ACT step (the second, after the reset) that only the official model
    makes and that only trmlab makes, with argument shapes, strides and dtypes. A kernel called with the same
    signature on both sides computes the same bits on any device; what remains is what could differ. On the
    CPU trmlab rotates q and k as one tensor (``layers.rotate_qk``); the trace takes the GPU path instead."""
    device = torch.device(args.device)
    arch = architecture(args)
    torch.manual_seed(0)
    official, _ = build_official(args.official, arch, device)
    ours = build_trmlab(arch, official).to(device)
    batch = make_batch(arch, device)
    recorders = {"official": _OpRecorder(), "trmlab": _OpRecorder()}
    official.eval()
    ours.eval()
    saved, layers.ROTATE_QK_TOGETHER_ON_CPU = layers.ROTATE_QK_TOGETHER_ON_CPU, False  # the GPU path
    try:
        with torch.no_grad():
            for name, model in (("official", official), ("trmlab", ours)):
                carry = model.initial_carry(batch)
                if name == "official":
                    carry = _official_carry_to(carry, device)
                carry, _ = model(carry, batch)
                with recorders[name]:
                    model(carry, batch)
    finally:
        layers.ROTATE_QK_TOGETHER_ON_CPU = saved
    counts = {name: collections.Counter(r.calls) for name, r in recorders.items()}
    only_official, only_ours = counts["official"] - counts["trmlab"], counts["trmlab"] - counts["official"]
    total = {name: c.total() for name, c in counts.items()}
    print(f"aten calls of one evaluation ACT step, shape {args.shape}, batch {arch['batch_size']}, "
          f"{args.dtype}, {device.type}: official {total['official']}, trmlab {total['trmlab']}; "
          f"{'identical' if not (only_official or only_ours) else 'differing calls (count, op, arguments):'}")
    for label, diff in (("official only", only_official), ("trmlab only", only_ours)):
        for call, n in sorted(diff.items()):
            print(f"  {label}: {n:4d} {call}")
    return only_official, only_ours


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.trace_ops:
        trace_ops(args)
    elif args.numerics:
        compare_numerics(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
