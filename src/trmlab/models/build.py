"""``build_model``: the one constructor of every model variant from a config."""

from __future__ import annotations

from typing import Any

from torch import nn

from trmlab.errors import ConfigError

# Variant name → "module:Class", imported lazily so a variant under construction never breaks the others.
VARIANTS = {
    "trm": "trmlab.models.trm:TRM",
    "etrm": "trmlab.models.etrm:ETRM",
    "etrmtrm": "trmlab.models.etrmtrm:ETRMTRM",
}


def build_model(config_or_arch: Any, *, seq_len: int, vocab_size: int,
                num_puzzle_identifiers: int) -> nn.Module:
    """Build the variant named by ``arch.name`` (fresh weights, official init).

    Args:
        config_or_arch: a ``Config`` (its ``.arch`` is used), a ``ResolvedConfig`` or an ``ArchConfig``.
        seq_len: grid tokens per sample (the dataset's seq_len; 900 for ARC).
        vocab_size: token vocabulary (12 for ARC).
        num_puzzle_identifiers: rows of the puzzle table (the dataset's identifier count, blank id 0
            included).
    """
    import importlib

    arch = config_or_arch
    if hasattr(arch, "config"):  # ResolvedConfig
        arch = arch.config
    if hasattr(arch, "arch"):  # Config
        arch = arch.arch
    for name, value in (("seq_len", seq_len), ("vocab_size", vocab_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r}: expected a positive integer")
    if arch.name not in VARIANTS:
        raise ConfigError(f"arch.name={arch.name!r}: expected one of {sorted(VARIANTS)}")
    module_name, class_name = VARIANTS[arch.name].split(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"arch.name={arch.name!r} is not available in this build of trmlab "
                          f"({error})") from None
    model = cls(arch, seq_len=seq_len, vocab_size=vocab_size, num_puzzle_identifiers=num_puzzle_identifiers)
    model.config = config_or_arch
    model.provenance = {}  # deliberate deviations from model.config (filled by loaders)
    return model
