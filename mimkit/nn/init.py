"""Weight initialisation shared by the ViT-style models: MAE's recipe (xavier-uniform linears) and
BEiT's (truncated N(0, 0.02) linears, residual output projections scaled by depth).

Each function draws from the global RNG in module order, so a seeded model is the same whichever
model file calls it.
"""
import math
from functools import partial

import torch
from torch import nn

# BEiT / unilm's weight init: N(0, 0.02) truncated at +-2 (absolute, as timm's trunc_normal_)
beit_normal_ = partial(nn.init.trunc_normal_, std=0.02)


def init_vit_weights_(module: nn.Module, weight_init=nn.init.xavier_uniform_, types=(nn.Linear,),
                      skip: str | None = None) -> None:
    """In `module.modules()` order: `weight_init` on the weight of every module of `types` and zero
    bias; ones / zeros for every LayerNorm with an affine. The default is MAE's init (xavier-uniform
    linears); modules whose name starts with `skip` (e.g. a frozen "tokenizer") are left alone."""
    for name, m in module.named_modules():
        if skip is not None and name.startswith(skip):
            continue
        if isinstance(m, types):
            weight_init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def xavier_patch_embed_(patch_embed: nn.Module) -> None:
    """MAE's patch-embedding init: xavier-uniform on proj.weight seen as a (D, C*ph*pw) linear, zero bias."""
    w = patch_embed.proj.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(patch_embed.proj.bias)


@torch.no_grad()
def rescale_residual_outputs_(blocks, layer_ids) -> None:
    """BEiT's fix_init_weight: divide each block's attn.proj and mlp.fc2 weights by sqrt(2 * layer_id)."""
    for block, layer_id in zip(blocks, layer_ids):
        block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
        block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))
