"""The research code's paper-faithful LPN grid encoder (``encoder_type`` ``lpn`` / ``lpn_var``;
etrm-reference §3.2), for loading its checkpoints (``arch.encoder_numerics = research`` only).

Width 128 whatever the decoder's, 8 heads, 2 layers: one colour embedding shared by both grids, learned row
and column embeddings summed per cell, an input/output channel embedding, a learned CLS token first;
pre-LayerNorm blocks without affine parameters, bias-free projections, a SiLU MLP 128→512→128, no position
rotation, a final LayerNorm on the CLS state. Every token attends to the whole canvas, PAD included, as in
the research code. The research code only runs on a 30×30 canvas; on a smaller one the first rows/columns of
the position tables are used (the same numbers where the research code runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from trmlab.data.format import canvas_side
from trmlab.errors import ConfigError

WIDTH, HEADS, LAYERS, MLP_WIDTH, MAX_SIDE = 128, 8, 2, 512, 30
LATENT_DIM = 32  # lpn_var: the research ETRM never forwarded lpn_latent_dim, so its default always held


class PaperLPNBlock(nn.Module):
    """Pre-LayerNorm attention (fused qkv, laid out [3, heads, head_dim]) and SiLU MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.out = nn.Linear(WIDTH, WIDTH, bias=False)
        self.up = nn.Linear(WIDTH, MLP_WIDTH, bias=False)
        self.down = nn.Linear(MLP_WIDTH, WIDTH, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        n, length, _ = x.shape
        qkv = self.qkv(F.layer_norm(x, (WIDTH,))).view(n, length, 3, HEADS, WIDTH // HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, WIDTH)
        x = x + self.out(attended)
        return x + self.down(F.silu(self.up(F.layer_norm(x, (WIDTH,)))))


class PaperLPNGridEncoder(nn.Module):
    """[input; output] canvas of one demo → its normalised CLS state [128] (see the module docstring).

    Used like :class:`~trmlab.models.encoders.GridEncoder` with research demos (``research`` is always True).
    """

    research = True
    hidden = WIDTH

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.color_embedding = nn.Embedding(vocab_size, WIDTH)
        self.row_embedding = nn.Embedding(MAX_SIDE, WIDTH)
        self.col_embedding = nn.Embedding(MAX_SIDE, WIDTH)
        self.channel_embedding = nn.Embedding(2, WIDTH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.layers = nn.ModuleList(PaperLPNBlock() for _ in range(LAYERS))
        for table in (self.color_embedding, self.row_embedding, self.col_embedding, self.channel_embedding):
            nn.init.normal_(table.weight, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, demos, dtype: torch.dtype) -> Tensor:  # demos: encoders.PackedDemos
        """Demo vectors [N, 128] in fp32 (the research modules are never cast)."""
        seq_len = demos.inputs.shape[1]
        side = canvas_side(seq_len, user="lpn encoder")
        if side > MAX_SIDE:
            raise ConfigError(f"encoder_type lpn/lpn_var has position tables for {MAX_SIDE}×{MAX_SIDE} "
                              f"canvases; this dataset's canvas is {side}×{side}")
        cells = torch.arange(side, device=demos.inputs.device)
        positions = (self.row_embedding(cells)[:, None] + self.col_embedding(cells)[None, :]).view(-1, WIDTH)
        channels = self.channel_embedding.weight
        inputs = self.color_embedding(demos.inputs.long()) + positions + channels[0]
        outputs = self.color_embedding(demos.outputs.long()) + positions + channels[1]
        x = torch.cat((self.cls_token.expand(len(inputs), -1, -1), inputs, outputs), dim=1)
        for layer in self.layers:
            x = layer(x)
        return F.layer_norm(x[:, 0], (WIDTH,))
