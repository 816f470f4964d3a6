"""How far a last-bit difference in the RoPE tables moves trmlab's TRM (CPU; benchmarks/README.md, "GPU").

CPU and GPU compute cos/sin differently in the last bit, so a model whose tables were computed on another
device than its reference's gives other logits. This moves a share of the table entries by one ulp
(``nextafter``) and reports, for the ARC shape with random weights, the largest logit change and the share of
changed predictions: after the first ACT step in bf16 and after a 16-step rollout in fp32.

    .venv/bin/python benchmarks/rope_sensitivity.py --batch 2          # ~4 CPU-minutes at the ARC shape
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trmlab.config.loader import load_config
from trmlab.models import build_model

ARC = dict(hidden_size=512, num_heads=8, H_cycles=3, L_cycles=4, L_layers=2, puzzle_emb_ndim=512,
           puzzle_emb_len=16, halt_max_steps=16, forward_dtype="float32")
SEQ_LEN, VOCAB, IDS = 900, 12, 64


def final_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], tables: tuple[torch.Tensor, ...],
                 dtype: torch.dtype, steps: int) -> torch.Tensor:
    model.core._rotary = tables  # the tables the core would otherwise build on the weights' device
    model.core.forward_dtype_override = dtype
    return model.rollout(batch["inputs"], batch["puzzle_identifiers"], steps=steps)[-1]["logits"].float()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--share", type=float, default=0.3, help="share of table entries moved by one ulp")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config("tiny", [f"arch.{k}={v}" for k, v in ARC.items()])
    model = build_model(config, seq_len=SEQ_LEN, vocab_size=VOCAB, num_puzzle_identifiers=IDS)
    g = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.randint(0, VOCAB, (args.batch, SEQ_LEN), generator=g, dtype=torch.int32),
             "puzzle_identifiers": torch.randint(1, IDS, (args.batch,), generator=g, dtype=torch.int32)}
    cos, sin = model.core.rotary(torch.device("cpu"))
    moved = torch.rand(cos.shape, generator=g) < args.share
    up = torch.full_like(cos, 2.0)
    perturbed = tuple(torch.where(moved, torch.nextafter(t, up), t) for t in (cos, sin))
    print(f"ARC shape, batch {args.batch}, {100 * args.share:.0f}% of the RoPE entries moved by one ulp")
    for dtype, steps in ((torch.bfloat16, 1), (torch.float32, 16)):
        a = final_logits(model, batch, (cos, sin), dtype, steps)
        b = final_logits(model, batch, perturbed, dtype, steps)
        changed = float((a.argmax(-1) != b.argmax(-1)).float().mean())
        print(f"{dtype}, {steps} ACT step(s): max |logit change| {float((a - b).abs().max()):.3g}, "
              f"predictions changed {100 * changed:.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
