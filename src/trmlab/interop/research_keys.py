"""The one explicit map between the ETRM research code's state-dict keys and trmlab's canonical keys.

Research ``step_N`` files hold the state dict of the loss head around the model, saved from the compiled
model: ``_orig_mod.model.encoder.*`` (the demonstration encoder) and ``_orig_mod.model.inner.*`` (the TRM
decoder, whose keys are the official TRM keys: :mod:`trmlab.interop.official_keys`). ``model.`` (not compiled)
is accepted too. One table per model family (ETRM, and ETRMTRM with each recurrent encoder), each a bijection
research ⇄ trmlab, listed once in the research file order; ``{i}``: layer index. A key outside the table is
refused by name, never dropped.
"""

from __future__ import annotations

import re

from trmlab.errors import CheckpointError
from trmlab.interop.official_keys import LAYER_KEYS, TOP_KEYS

# Accepted key prefixes, most specific first. Export writes the first (what the research trainer saves).
RESEARCH_PREFIXES = ("_orig_mod.model.", "model.")
ENCODER_MARK = "encoder."  # a research state dict has keys under <prefix>encoder.

_DECODER = tuple((f"inner.{official}", canonical) for official, canonical in TOP_KEYS + LAYER_KEYS
                 if not official.startswith("puzzle_emb"))


def _block(research: str, trmlab: str, attention: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """A block's keys: its attention projections, SwiGLU and CaiT layer-scale gammas."""
    return (*((f"{research}.{a}", f"{trmlab}.{b}") for a, b in attention),
            (f"{research}.mlp.gate_up_proj.weight", f"{trmlab}.mlp.gate_up.weight"),
            (f"{research}.mlp.down_proj.weight", f"{trmlab}.mlp.down.weight"),
            (f"{research}.gamma_1", f"{trmlab}.attn_scale"),
            (f"{research}.gamma_2", f"{trmlab}.mlp_scale"))


_SELF_ATTENTION = (("self_attn.qkv_proj.weight", "attn.qkv_proj.weight"),
                   ("self_attn.o_proj.weight", "attn.o_proj.weight"))
_CROSS_ATTENTION = tuple((f"{p}_proj.weight", f"attn.{p}_proj.weight") for p in "qkvo")

# DemoGridEncoder (every research encoder family starts with it).
_GRID = (
    ("encoder.grid_encoder.input_embed.embedding_weight", "encoder.grid.input_embedding.weight"),
    ("encoder.grid_encoder.output_embed.embedding_weight", "encoder.grid.output_embedding.weight"),
    *_block("encoder.grid_encoder.layers.{i}", "encoder.grid.layers.{i}", _SELF_ATTENTION),
    ("encoder.grid_encoder.pool_query", "encoder.grid.pool_query"),
    *((f"encoder.grid_encoder.pool_{p}_proj.weight", f"encoder.grid.pool_attn.{p}_proj.weight")
      for p in "qkvo"),
    ("encoder.grid_encoder.pool_weight_proj.weight", "encoder.grid.pool_score.weight"),
    ("encoder.grid_encoder.pool_proj.weight", "encoder.grid.pool_proj.weight"),
)

# LPNGridEncoder (lpn_* and hybrid_* encoders): CLS pooling, pre-norm blocks without a self_attn module.
_LPN_GRID = (
    ("encoder.grid_encoder.input_embed.embedding_weight", "encoder.grid.input_embedding.weight"),
    ("encoder.grid_encoder.output_embed.embedding_weight", "encoder.grid.output_embedding.weight"),
    ("encoder.grid_encoder.cls_token", "encoder.grid.cls_token"),
    *_block("encoder.grid_encoder.layers.{i}", "encoder.grid.layers.{i}",
            (("qkv_proj.weight", "attn.qkv_proj.weight"), ("o_proj.weight", "attn.o_proj.weight"))),
)
_SET = (
    ("encoder.set_encoder.query_tokens", "encoder.set_encoder.queries"),
    *_block("encoder.set_encoder.layers.{i}", "encoder.set_encoder.layers.{i}", _CROSS_ATTENTION),
)
_LATENT = (("encoder.mu_proj.weight", "encoder.latent.mu.weight"),
           ("encoder.mu_proj.bias", "encoder.latent.mu.bias"),
           ("encoder.logvar_proj.weight", "encoder.latent.logvar.weight"),
           ("encoder.logvar_proj.bias", "encoder.latent.logvar.bias"))

# The paper-faithful LPN encoder (lpn, lpn_var): trmlab.models.lpn_paper.
_PAPER_LPN_GRID = (
    ("encoder.grid_encoder.cls_token", "encoder.grid.cls_token"),
    ("encoder.grid_encoder.color_embed.weight", "encoder.grid.color_embedding.weight"),
    ("encoder.grid_encoder.pos_row_embed.weight", "encoder.grid.row_embedding.weight"),
    ("encoder.grid_encoder.pos_col_embed.weight", "encoder.grid.col_embedding.weight"),
    ("encoder.grid_encoder.channel_embed.weight", "encoder.grid.channel_embedding.weight"),
    *((f"encoder.grid_encoder.layers.{{i}}.{research}.weight", f"encoder.grid.layers.{{i}}.{ours}.weight")
      for research, ours in (("qkv_proj", "qkv"), ("o_proj", "out"), ("mlp.fc1", "up"), ("mlp.fc2", "down"))),
)

# Model family (as ``family_of`` names it) → (research key, trmlab key) pairs, research file order.
KEY_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "etrm/standard": (*_GRID, *_SET, *_DECODER),
    "etrm/lpn_standard": (*_LPN_GRID, ("encoder.output_proj.weight", "encoder.expand.weight"), *_DECODER),
    "etrm/lpn_variational": (*_LPN_GRID, *_LATENT, ("encoder.output_proj.weight", "encoder.expand.weight"),
                             *_DECODER),
    "etrm/hybrid_standard": (*_LPN_GRID, *_SET, *_DECODER),
    "etrm/hybrid_variational": (*_LPN_GRID, *_SET, *_LATENT,
                                ("encoder.decode_proj.weight", "encoder.expand.weight"), *_DECODER),
    "etrm/lpn": (*_PAPER_LPN_GRID, ("encoder.output_proj.weight", "encoder.expand.weight"), *_DECODER),
    "etrm/lpn_var": (*_PAPER_LPN_GRID, ("encoder.mu_proj.weight", "encoder.latent_mu.weight"),
                     ("encoder.logvar_proj.weight", "encoder.latent_logvar.weight"),
                     ("encoder.output_proj.weight", "encoder.expand.weight"), *_DECODER),
    "etrmtrm/recurrent_standard": (
        *_GRID,
        ("encoder.z_e_init", "encoder.z_init"),
        *((f"encoder.cross_attn.{p}_proj.weight", f"encoder.layers.0.attn.{p}_proj.weight") for p in "qkvo"),
        ("encoder.mlp.gate_up_proj.weight", "encoder.layers.0.mlp.gate_up.weight"),
        ("encoder.mlp.down_proj.weight", "encoder.layers.0.mlp.down.weight"),
        *_DECODER,
    ),
    "etrmtrm/trm_style": (
        *_GRID,
        ("encoder.z_e_H_init", "encoder.h_init"),
        ("encoder.z_e_L_init", "encoder.l_init"),
        *_block("encoder.L_level.layers.{i}", "encoder.layers.{i}", _SELF_ATTENTION),
        *_DECODER,
    ),
}


def family_of(arch) -> str:
    """The key table of an ``ArchConfig`` (CheckpointError when the research layout has none for it)."""
    if arch.name == "etrm":
        family = f"etrm/{arch.encoder_type}"
    elif arch.name == "etrmtrm":
        family = f"etrmtrm/{arch.recurrent_encoder_type}"
    else:
        family = arch.name
    if family not in KEY_TABLES:
        raise CheckpointError(f"no research-code key map for {family} (known: {', '.join(KEY_TABLES)})")
    return family


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


def _compiled(family: str, reverse: bool) -> list[tuple[re.Pattern[str], str]]:
    return [(_pattern(b if reverse else a), a if reverse else b) for a, b in KEY_TABLES[family]]


def _translate(key: str, table: list[tuple[re.Pattern[str], str]]) -> tuple[str, int] | None:
    for rank, (pattern, template) in enumerate(table):
        match = pattern.match(key)
        if match:
            return (template.replace("{i}", match.group(1)) if match.groups() else template), rank
    return None


def research_to_canonical(relative_key: str, family: str) -> str | None:
    """trmlab key of a research key without prefix (``encoder.…`` / ``inner.…``), or None."""
    found = _translate(relative_key, _compiled(family, reverse=False))
    return found[0] if found else None


def canonical_to_research(canonical_key: str, family: str) -> str | None:
    """Research key (without prefix) of a trmlab key, or None."""
    found = _translate(canonical_key, _compiled(family, reverse=True))
    return found[0] if found else None


def is_research_state(keys: list[str]) -> bool:
    """True when the keys are a research ETRM/ETRMTRM state dict (some key under ``<prefix>encoder.``)."""
    return any(key.startswith(prefix + ENCODER_MARK) for key in keys for prefix in RESEARCH_PREFIXES)


def research_prefix(keys: list[str], source: str) -> str:
    """The one prefix every key carries (CheckpointError naming a key without it)."""
    for prefix in RESEARCH_PREFIXES:
        if keys and all(key.startswith(prefix) for key in keys):
            return prefix
    stray = [key for key in keys if not key.startswith(RESEARCH_PREFIXES)]
    raise CheckpointError(f"{source}: the research layout prefixes every key with "
                          f"{' or '.join(map(repr, RESEARCH_PREFIXES))}, but these keys lack it: "
                          f"{', '.join(stray[:10])}")


def strip_research(state: dict, family: str, source: str) -> dict:
    """Research state dict → {trmlab key: tensor}; every key consumed exactly once, the rest refused by
    name (CheckpointError)."""
    prefix = research_prefix(list(state), source)
    table = _compiled(family, reverse=False)
    out: dict = {}
    unknown = []
    for key, tensor in state.items():
        found = _translate(key[len(prefix):], table)
        if found is None:
            unknown.append(key)
        elif found[0] in out:
            raise CheckpointError(f"{source}: two keys map to {found[0]!r} (duplicate {key!r})")
        else:
            out[found[0]] = tensor
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" … (+{len(unknown) - 10})" if len(unknown) > 10 else "")
        raise CheckpointError(f"{source}: keys trmlab cannot map for a research {family} checkpoint: "
                              f"{shown}. They belong to a module trmlab does not reproduce (or to another "
                              "encoder type than all_config.yaml names); nothing was loaded")
    return out


def research_order(canonical_keys: list[str], family: str) -> list[str]:
    """trmlab keys sorted as the research table lists them (layer by layer within a template group)."""
    table = _compiled(family, reverse=True)

    def rank(key: str) -> tuple[int, int]:
        for position, (pattern, _) in enumerate(table):
            match = pattern.match(key)
            if match:
                return position, int(match.group(1)) if match.groups() else 0
        return len(table), 0

    return sorted(canonical_keys, key=rank)
