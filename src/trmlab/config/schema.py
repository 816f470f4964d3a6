"""The one typed schema for every trmlab setting.

Field names follow the official TRM code (``H_cycles``, ``L_cycles``, ``global_batch_size``, ``ema`` ...) so
overrides users already type keep working; the architecture lives under ``arch.``. Every field carries a
one-line help text, and the metadata that validation, ``config show`` and ``config diff`` rely on:

- ``help``: one line, shown by ``trmlab config show`` and in error messages.
- ``arch``: True when the value changes what a checkpoint computes (``config diff`` flags these, and loading a
  checkpoint under a conflicting value is refused).
- ``choices`` / ``ge`` / ``gt`` / ``le``: constraints checked by :func:`trmlab.config.validate`.

Schema defaults are the released ARC-AGI-1 checkpoint's recipe where one exists (see ``presets/trm-arc1.yaml``
for the sources of each value).
"""

# `setting` returns a dataclasses.field (default_factory for lists), which RUF009 cannot see.
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def setting(default: Any, help: str, *, arch: bool = False, choices: tuple | None = None,
            ge: float | None = None, gt: float | None = None, le: float | None = None) -> Any:
    """Declare a config field with its help line and constraints."""
    meta = {"help": help, "arch": arch, "choices": choices, "ge": ge, "gt": gt, "le": le}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


MODEL_NAMES = ("trm", "etrm", "etrmtrm")
# lpn / lpn_var: the research code's paper-faithful LPN encoders, for its checkpoints (encoder_numerics
# research only).
ENCODER_TYPES = ("standard", "lpn_standard", "lpn_variational", "hybrid_standard", "hybrid_variational",
                 "lpn", "lpn_var")
RECURRENT_ENCODER_TYPES = ("recurrent_standard", "trm_style")


@dataclass
class ArchConfig:
    """Model architecture (``arch.*``). Everything here except the encoder knobs applies to every variant."""

    name: str = setting("trm", "model variant: trm (puzzle-id embedding), etrm (demo encoder), "
                        "etrmtrm (recurrent demo encoder)", arch=True, choices=MODEL_NAMES)
    H_cycles: int = setting(3, "outer recursion cycles per ACT step (paper's T)", arch=True, ge=1)
    L_cycles: int = setting(4, "z_L updates per outer cycle (paper's n); the released ARC-1 checkpoint used "
                            "4", arch=True, ge=1)
    H_layers: int = setting(0, "unused by TRM; kept so official configs map one to one", ge=0)
    L_layers: int = setting(2, "transformer blocks in the one shared reasoning network", arch=True, ge=1)
    hidden_size: int = setting(512, "model width", arch=True, ge=1)
    num_heads: int = setting(8, "attention heads (hidden_size must be divisible by it)", arch=True, ge=1)
    expansion: float = setting(4.0, "SwiGLU expansion factor (inner width = ceil256(round(2/3·e·hidden)))",
                               arch=True, gt=0)
    pos_encodings: str = setting("rope", "position encoding: rope, learned or none", arch=True,
                                 choices=("rope", "learned", "none"))
    rms_norm_eps: float = setting(1e-5, "epsilon of the weightless RMSNorm", arch=True, gt=0)
    rope_theta: float = setting(10000.0, "RoPE base frequency", arch=True, gt=0)
    puzzle_emb_ndim: int = setting(512, "puzzle-id embedding width (0 disables the table)", arch=True, ge=0)
    puzzle_emb_len: int = setting(16, "prefix positions before the grid (0: ceil(puzzle_emb_ndim/hidden))",
                                  arch=True, ge=0)
    halt_max_steps: int = setting(16, "ACT steps per sample (evaluation always runs all of them)", arch=True,
                                  ge=1)
    halt_exploration_prob: float = setting(0.1, "probability of a random minimum halting step in training",
                                           ge=0, le=1)
    forward_dtype: str = setting("auto", "activation dtype: auto (bf16 on CUDA, fp32 on CPU), bfloat16, "
                                 "float32", arch=True, choices=("auto", "bfloat16", "float32"))
    mlp_t: bool = setting(False, "sequence-mixing MLP instead of attention (Sudoku variant)", arch=True)
    no_ACT_continue: bool = setting(True, "halt on q_halt > 0 and train only the halt logit "
                                    "(false: q_halt > q_continue with a bootstrapped continue target)",
                                    arch=True)
    loss_type: str = setting("stablemax_cross_entropy", "token loss", arch=True,
                             choices=("stablemax_cross_entropy", "softmax_cross_entropy"))
    eval_q_halting: bool = setting(False, "at evaluation, score each row at the first ACT step where q says "
                                   "halt (official: off, every row runs halt_max_steps)", arch=True)
    # Demonstration encoder (etrm, etrmtrm).
    encoder_type: str = setting("standard", "demo encoder for etrm (lpn, lpn_var: research checkpoints only, "
                                "with encoder_numerics=research)", arch=True, choices=ENCODER_TYPES)
    encoder_num_layers: int = setting(2, "grid-encoder transformer blocks", arch=True, ge=1)
    encoder_pooling_method: str = setting("mean", "per-demo pooling over grid tokens", arch=True,
                                          choices=("mean", "attention", "weighted"))
    encoder_set_layers: int = setting(1, "cross-attention layers aggregating the demo set", arch=True, ge=1)
    encoder_token_layout: str = setting(
        "separate", "grid-encoder tokens: 'separate' (an input and an output token per cell, the reference "
        "design) or 'paired' (one token per cell: input + output embedding; half the tokens)", arch=True,
        choices=("separate", "paired"))
    encoder_set_memory: str = setting(
        "demos", "what the context queries attend to: one pooled vector per demo ('demos', the reference "
        "design) or every real token of every demo ('tokens'; standard encoder only)", arch=True,
        choices=("demos", "tokens"))
    encoder_numerics: str = setting(
        "trmlab", "encoder numerics: 'trmlab' (packed demos cropped to their content, keys and pooling over "
        "real tokens, canvas RoPE positions, context gain 1/sqrt(D)) or 'research' (exactly what the ETRM "
        "research code computes: full 2*seq_len canvas attending to PAD, sequential RoPE positions, separate "
        "k/v projections, no context gain, 0.9/0.1 state smoothing in etrmtrm); set by loading a research "
        "checkpoint", arch=True, choices=("trmlab", "research"))
    encoder_layer_scale_init: float = setting(0.0, "CaiT layer-scale init (0 disables)", arch=True, ge=0)
    encoder_norm_style: str = setting("post", "encoder block norm placement", arch=True,
                                      choices=("post", "pre"))
    encoder_qk_norm: bool = setting(False, "RMS-normalise queries and keys in encoder attention", arch=True)
    encoder_latent_dim: int = setting(32, "latent size of the variational encoders", arch=True, ge=1)
    kl_weight: float = setting(1e-4, "weight of the per-sample KL term (variational encoders)", ge=0)
    contrastive_weight: float = setting(0.0, "weight of the contrastive context loss (rows of one puzzle are "
                                        "positives; 0 disables)", ge=0)
    contrastive_temperature: float = setting(0.1, "temperature of the contrastive context loss", gt=0)
    context_refine_steps: int = setting(
        0, "evaluation only (etrm): gradient steps on each row's context, decoder and encoder frozen, so "
        "the decoder reproduces the row's own demos before it decodes the query (test-time refinement as in "
        "latent program networks; 0 disables)", ge=0)
    context_refine_lr: float = setting(0.1, "step of the context refinement, as a fraction of the context's "
                                       "RMS per row (the gradient is normalised per row)", gt=0)
    recurrent_encoder_type: str = setting("recurrent_standard", "etrmtrm encoder", arch=True,
                                          choices=RECURRENT_ENCODER_TYPES)
    encoder_h_cycles: int = setting(3, "etrmtrm trm_style encoder outer cycles", arch=True, ge=1)
    encoder_l_cycles: int = setting(1, "etrmtrm trm_style encoder inner cycles", arch=True, ge=1)
    encoder_l_layers: int = setting(2, "etrmtrm trm_style encoder blocks", arch=True, ge=1)


@dataclass
class EvalConfig:
    """Evaluation settings (``eval.*``), used by ``trmlab eval`` and by evaluations during training."""

    max_tasks: int | None = setting(None, "score only the first K test tasks (denominator = K); null = all",
                                    ge=1)
    num_augmentations: int | None = setting(None, "vote over the first K augmentations of each task "
                                            "(null = all)", ge=1)
    global_batch_size: int | None = setting(None, "eval batch size (null = the training global_batch_size)",
                                            ge=1)
    pass_ks: list[int] = setting([1, 2, 5, 10, 100, 1000], "K values of the reported pass@K")
    symmetry_votes: int = setting(0, "Sudoku / Maze: also vote over this many symmetric copies of each test "
                                  "input (digit relabelling and band/stack shuffles; maze: ≤ 8 dihedral "
                                  "transforms), reported as <Task>/vote@K beside the official metric "
                                  "(0 = off)",
                                  ge=0)


@dataclass
class Config:
    """A whole run: architecture, data, optimisation, schedule, checkpoints and evaluation."""

    arch: ArchConfig = field(default_factory=ArchConfig, metadata={"help": "model architecture"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "evaluation settings"})
    description: str = setting("", "one line saying what this config is for")
    # Data
    data_paths: list[str] = setting([], "training dataset directories (official layout); identifiers of "
                                    "later paths are offset by the earlier ones")
    data_paths_test: list[str] = setting([], "evaluation dataset directories (empty: the test split of "
                                         "data_paths)")
    max_demos: int = setting(10, "demonstration slots per sample (etrm, etrmtrm)", ge=1)
    demo_sampling: str = setting(
        "fixed", "encoder-layout training items: 'fixed' (queries only, each with its puzzle's demos) or "
        "'leave_one_out' (every example is a query, its context the puzzle's other examples)",
        choices=("fixed", "leave_one_out"))
    max_train_groups: int | None = setting(None, "train on the first K task groups only (null = all)", ge=1)
    # Optimisation
    global_batch_size: int = setting(768, "samples per optimizer step, summed over ranks", ge=1)
    epochs: int = setting(100000, "passes over the task groups (one augmented puzzle per group per epoch)",
                          ge=1)
    max_steps: int | None = setting(None, "cap on optimizer steps (null = epochs decide)", ge=1)
    max_minutes: float | None = setting(None, "wall-clock budget of this process's training: past it the run "
                                        "writes a checkpoint and stops (resume continues; null = none)", gt=0)
    lr: float = setting(1e-4, "AdamATan2 learning rate", gt=0)
    lr_min_ratio: float = setting(1.0, "cosine floor as a fraction of lr (1.0 = constant after warmup)", ge=0,
                                  le=1)
    lr_warmup_steps: int = setting(2000, "linear warmup steps", ge=0)
    beta1: float = setting(0.9, "AdamATan2 beta1", ge=0, le=1)
    beta2: float = setting(0.95, "AdamATan2 beta2", ge=0, le=1)
    weight_decay: float = setting(0.1, "decoupled weight decay of the dense weights", ge=0)
    puzzle_emb_lr: float = setting(1e-2, "sign-SGD learning rate of the puzzle-embedding table", ge=0)
    puzzle_emb_weight_decay: float = setting(0.1, "weight decay of the touched puzzle-embedding rows", ge=0)
    grad_clip_norm: float = setting(0.0, "global gradient-norm clip after the cross-rank reduction (0 = off)",
                                    ge=0)
    ema: bool = setting(True, "keep an exponential moving average of the weights (evaluated and exported)")
    ema_rate: float = setting(0.999, "EMA decay per optimizer step", ge=0, le=1)
    seed: int = setting(0, "seed of every random stream (model init, sampler, exploration)")
    # Transfer and ETRM training
    init_from: str | None = setting(None, "start from this trmlab or official checkpoint (transfer)")
    allow_arch_mismatch: bool = setting(False, "load a checkpoint although the architecture differs from its "
                                        "own config (recorded in provenance)")
    puzzle_emb_reinit: str = setting(
        "error", "when a checkpoint's puzzle table does not match the dataset: error, mean or zeros (whole "
        "table replaced), or extend (the dataset has more identifiers: the checkpoint's rows kept, the new "
        "ones set to their mean; trmlab adapt)", choices=("error", "mean", "zeros", "extend"))
    freeze_weights: bool = setting(False, "train only the puzzle-embedding table, every other weight held "
                                   "still (official name; trmlab adapt mode=embeddings)")
    freeze_decoder_steps: int = setting(0, "keep the decoder frozen for the first N steps (encoder trains)",
                                        ge=0)
    encoder_lr_scale: float = setting(1.0, "encoder learning rate = lr × this, in its own parameter group",
                                      gt=0)
    encoder_weight_decay_scale: float = setting(
        1.0, "encoder weight decay = weight_decay × this (etrm-reference §6.2: 0.1 when the research code's "
        "encoder_lr_scale > 0 gives the encoder its own optimizer; 1.0 = its one-optimizer default)", ge=0)
    # Schedule of evaluation, checkpoints and logs
    eval_interval: int | None = setting(10000, "evaluate every N epochs, as in the official code "
                                        "(null = only at the end)", ge=1)
    min_eval_interval: int = setting(0, "skip evaluations before this many eval intervals", ge=0)
    checkpoint_every: int | None = setting(None, "write a checkpoint every N optimizer steps "
                                           "(null = at each evaluation and at the end)", ge=1)
    keep_last: int = setting(3, "checkpoints kept on disk (older ones are deleted)", ge=1)
    log_every: int = setting(10, "write metrics.jsonl every N steps", ge=1)
    loggers: list[str] = setting([], "extra metric sinks: tensorboard, wandb (need the [log] extra)")
    project_name: str | None = setting(None, "project name for W&B (null = derived from the data path)")
    run_name: str | None = setting(None, "run name (null = a generated readable name)")
    run_dir: str | None = setting(None, "run directory (null = runs/<run_name>)")
    resume: str | None = setting(None, "continue the run in this directory from its newest valid checkpoint")
    # Devices
    device: str = setting("auto", "auto (cuda when available), cpu, cuda or cuda:N")
    compile: bool = setting(False, "torch.compile the model (worth it on GPU; slow to start on CPU)")
