"""trmlab beside the ETRM research code, in one process, on the generated research cases.

    PYTHONPATH=src python benchmarks/etrm_research_side_by_side.py --official /path/to/etrm [CASE ...]

For each case of ``tests/fixtures/etrm-research`` (default: every 6×6 one) the research model
(bdsaglam/etrm ``TRMWithEncoder`` / ``TRMWithRecurrentEncoder``; it needs pydantic and einops importable)
and trmlab's model load the same seeded weights; both run an evaluation rollout on the case's batch, and the
script prints, per ACT step, max |Δ| of the logits and max |Δ| / max |research| of the logits, both halting
logits and the context. Run it with ``MKL_CBWR=COMPATIBLE`` as well: with that MKL path a matmul's rounding
depends on its row count, which is how issue 21's difference showed (etrm.md, "Fidelity, measured").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
import yaml

TESTS = Path(__file__).resolve().parent.parent / "tests"
BATCH_KEYS = ("inputs", "labels", "puzzle_identifiers", "demo_inputs", "demo_labels", "demo_mask")


def research_rollout(case: str, vectors: dict, data: dict[str, torch.Tensor]) -> tuple[list[dict], list]:
    """The research model's rollout outputs and contexts (one per step)."""
    from models.recursive_reasoning.etrm import TRMWithEncoder
    from models.recursive_reasoning.etrmtrm import TRMWithRecurrentEncoder

    from research_cases import GENERATED, seeded_weights

    arch = yaml.safe_load((GENERATED / case / "all_config.yaml").read_text())["arch"]
    settings = {k: v for k, v in arch.items() if k not in ("name", "loss")}
    model_class = TRMWithRecurrentEncoder if "etrmtrm" in arch["name"] else TRMWithEncoder
    model = model_class(dict(settings, batch_size=data["inputs"].shape[0], seq_len=data["inputs"].shape[1],
                             vocab_size=12, num_puzzle_identifiers=1))
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    model.load_state_dict(seeded_weights(shapes, int(vectors["weight_seed"]), float(vectors["weight_gain"])))
    model.eval()
    outputs, contexts = [], []
    with torch.no_grad():
        carry = model.initial_carry(data)
        for _ in range(int(arch["halt_max_steps"])):
            carry, out = model(carry, data)
            outputs.append(out)
            if hasattr(carry, "encoder_carry"):
                contexts.append(carry.encoder_carry.get_context())
            else:
                contexts.append(model.encoder(data["demo_inputs"], data["demo_labels"], data["demo_mask"]))
    return outputs, contexts


def compare(case: str) -> None:
    import trmlab
    from research_cases import GENERATED, build_checkpoint, case_vectors

    vectors = case_vectors(GENERATED / case)
    data = {k: torch.from_numpy(vectors[k]) for k in BATCH_KEYS if k in vectors}
    reference, contexts = research_rollout(case, vectors, data)
    with tempfile.TemporaryDirectory() as scratch:
        path = build_checkpoint(case, Path(scratch) / case)
        model = trmlab.load_checkpoint(path, seq_len=data["inputs"].shape[1], dtype=torch.float32)
    ours = model.rollout(data["inputs"], data["puzzle_identifiers"], steps=len(reference),
                         demo_inputs=data["demo_inputs"], demo_labels=data["demo_labels"],
                         demo_mask=data["demo_mask"])

    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max())

    print(f"{case} (MKL_CBWR={os.environ.get('MKL_CBWR', 'unset')})")
    for step, (theirs, mine, context) in enumerate(zip(reference, ours, contexts, strict=True), start=1):
        logits = float((mine["logits"] - theirs["logits"]).abs().max())
        print(f"  step {step}: logits max|Δ| {logits:.3g}, relative: logits "
              f"{relative(mine['logits'], theirs['logits']):.3g}, q_halt "
              f"{relative(mine['q_halt_logits'], theirs['q_halt_logits']):.3g}, q_continue "
              f"{relative(mine['q_continue_logits'], theirs['q_continue_logits']):.3g}, context "
              f"{relative(mine['context'], context):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="checkout of bdsaglam/etrm")
    parser.add_argument("cases", nargs="*", help="case folder names (default: every 6×6 case)")
    args = parser.parse_args()
    sys.path.insert(0, args.official)
    sys.path.insert(0, str(TESTS))
    torch.set_num_threads(1)
    from research_cases import CASES

    for case in args.cases or [c for c in CASES if "paper" not in c]:
        compare(case)


if __name__ == "__main__":
    main()
