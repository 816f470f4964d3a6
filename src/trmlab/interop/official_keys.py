"""The one explicit map between official TRM state-dict keys and trmlab's canonical keys (trm-reference §5.2).

Official files prefix every key with ``_orig_mod.model.inner.`` (saved from a torch.compile'd model) or
``model.inner.`` (not compiled); keys relative to the inner model (no prefix) are accepted too. The map is
listed once, official → canonical, in the official file order; the inverse is derived. ``{i}``: layer index.
"""

from __future__ import annotations

import re

from trmlab.errors import CheckpointError

# Accepted key prefixes, most specific first. Export writes the first (what the official trainer saves).
OFFICIAL_PREFIXES = ("_orig_mod.model.inner.", "model.inner.", "")

# (official key after the prefix, trmlab canonical key), in the official file order.
TOP_KEYS = (
    ("H_init", "core.h_init"),
    ("L_init", "core.l_init"),
    ("embed_tokens.embedding_weight", "core.token_embedding.weight"),
    ("lm_head.weight", "core.lm_head.weight"),
    ("q_head.weight", "core.q_head.weight"),
    ("q_head.bias", "core.q_head.bias"),
    ("puzzle_emb.weights", "puzzle_embedding.weights"),
    ("embed_pos.embedding_weight", "core.position_embedding.weight"),
)
LAYER_KEYS = (
    ("L_level.layers.{i}.mlp_t.gate_up_proj.weight", "core.blocks.{i}.token_mixer.gate_up.weight"),
    ("L_level.layers.{i}.mlp_t.down_proj.weight", "core.blocks.{i}.token_mixer.down.weight"),
    ("L_level.layers.{i}.self_attn.qkv_proj.weight", "core.blocks.{i}.attn.qkv.weight"),
    ("L_level.layers.{i}.self_attn.o_proj.weight", "core.blocks.{i}.attn.out.weight"),
    ("L_level.layers.{i}.mlp.gate_up_proj.weight", "core.blocks.{i}.mlp.gate_up.weight"),
    ("L_level.layers.{i}.mlp.down_proj.weight", "core.blocks.{i}.mlp.down.weight"),
)
TABLE_KEY = "puzzle_embedding.weights"


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


_OFFICIAL_LAYER = [(_pattern(o), c) for o, c in LAYER_KEYS]
_CANONICAL_LAYER = [(_pattern(c), o) for o, c in LAYER_KEYS]
_OFFICIAL_TOP = dict(TOP_KEYS)
_CANONICAL_TOP = {c: o for o, c in TOP_KEYS}


def official_to_canonical(relative_key: str) -> str | None:
    """Canonical key of an official key without prefix, or None when it is not in the map."""
    if relative_key in _OFFICIAL_TOP:
        return _OFFICIAL_TOP[relative_key]
    for pattern, template in _OFFICIAL_LAYER:
        match = pattern.match(relative_key)
        if match:
            return template.replace("{i}", match.group(1))
    return None


def canonical_to_official(canonical_key: str) -> str | None:
    """Official key (without prefix) of a canonical key, or None when it is not in the map."""
    if canonical_key in _CANONICAL_TOP:
        return _CANONICAL_TOP[canonical_key]
    for pattern, template in _CANONICAL_LAYER:
        match = pattern.match(canonical_key)
        if match:
            return template.replace("{i}", match.group(1))
    return None


def detect_prefix(keys: list[str]) -> str:
    """The one prefix shared by every key of an official state dict (CheckpointError when mixed/unknown)."""
    for prefix in OFFICIAL_PREFIXES:
        if keys and all(k.startswith(prefix) and official_to_canonical(k[len(prefix):]) for k in keys):
            return prefix
    for prefix in OFFICIAL_PREFIXES[:-1]:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def strip_official(state: dict, source: str) -> dict:
    """Official state dict → {canonical key: tensor}; every key consumed exactly once.

    Raises CheckpointError listing keys that are not official TRM keys (e.g. an ETRM encoder) or that map
    to the same canonical key twice.
    """
    prefix = detect_prefix(list(state))
    out: dict = {}
    unknown = []
    for key, tensor in state.items():
        canonical = official_to_canonical(key[len(prefix):]) if key.startswith(prefix) else None
        if canonical is None:
            unknown.append(key)
        elif canonical in out:
            raise CheckpointError(f"{source}: two keys map to {canonical!r} (duplicate {key!r})")
        else:
            out[canonical] = tensor
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" … (+{len(unknown) - 10})" if len(unknown) > 10 else "")
        raise CheckpointError(f"{source}: unexpected keys for an official TRM checkpoint "
                              f"(prefix {prefix!r}): {shown}. Is this an ETRM or non-TRM checkpoint?")
    return out


def official_order(canonical_keys: list[str]) -> list[str]:
    """Canonical keys sorted as the official trainer writes them (top keys, then layer by layer)."""
    top = [c for _, c in TOP_KEYS]

    def rank(key: str) -> tuple[int, int, int]:
        if key in top:
            return (0, top.index(key), 0)
        for n, (pattern, _) in enumerate(_CANONICAL_LAYER):
            match = pattern.match(key)
            if match:
                return (1, int(match.group(1)), n)
        return (2, 0, 0)

    return sorted(canonical_keys, key=rank)
