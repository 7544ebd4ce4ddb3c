"""Floor 1: building blocks with no opinion about training."""
from .attention import Attention, plain_attention
from .bert_embedding import BertEmbedding
from .bert_layer import BertLayer
from .bert_mlm_head import BertMlmHead
from .block import Block
from .block_masking import BlockMasking, allowed_block_shapes, block_masking, num_masked_patches
from .drop_path import DropPath
from .layer_scale import LayerScale
from .linear import Linear, linear
from .mask_schedules import SCHEDULES, mask_fraction, num_masked_for_training, truncated_normal_ratio
from .mask_noise import MASK_TYPES, mask_noise
from .masking import MaskedSequence, gather_tokens, random_masking, restore_order, uniform_noise
from .mlp import Mlp
from .patch_embed import PatchEmbed, patchify, to_pair, unpatchify
from .pool import pool_tokens
from .pos_embed import sincos_1d, sincos_2d
from .relative_position import RelativePositionBias, relative_position_index, relative_position_table_size
from .reversible import ColumnStack, clamp_scale
from .token_embedding import TokenEmbedding
from .token_head import TiedTokenHead
from .vector_quantizer import QuantizerOutput, VectorQuantizer, kmeans

__all__ = ["Attention", "plain_attention", "BertEmbedding", "BertLayer", "BertMlmHead", "Block", "DropPath", "LayerScale", "Linear", "linear", "SCHEDULES", "mask_fraction", "num_masked_for_training",
           "truncated_normal_ratio", "MaskedSequence",
           "gather_tokens", "random_masking", "restore_order", "uniform_noise", "Mlp", "PatchEmbed", "patchify", "to_pair",
           "unpatchify", "pool_tokens", "sincos_1d", "sincos_2d", "TokenEmbedding", "TiedTokenHead", "QuantizerOutput", "VectorQuantizer", "kmeans",
           "BlockMasking", "allowed_block_shapes", "block_masking", "num_masked_patches", "RelativePositionBias",
           "relative_position_index", "relative_position_table_size", "ColumnStack", "clamp_scale"]
