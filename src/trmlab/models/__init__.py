"""trmlab.models: layers, the shared recursion core, the ACT wrapper, TRM, losses and ``build_model``.

Extension points for encoder variants (ETRM, ETRMTRM): subclass :class:`ACTModel` and implement
``compute_prefix`` (and, for recurrent state, ``initial_prefix_state`` / ``reset_prefix_state``); the
:class:`ReasoningCore` and the ACT semantics are shared.
"""

from trmlab.models.act import ACTCarry, ACTModel
from trmlab.models.build import build_model
from trmlab.models.core import ReasoningCore, prefix_length, resolve_forward_dtype
from trmlab.models.trm import TRM, SparsePuzzleEmbedding

__all__ = ["TRM", "ACTCarry", "ACTModel", "ReasoningCore", "SparsePuzzleEmbedding", "build_model",
           "prefix_length", "resolve_forward_dtype"]
