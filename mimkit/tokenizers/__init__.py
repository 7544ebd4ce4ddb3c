"""Floor 2: discrete image tokenizers (VQGAN, VQ-KD) and the token cache that stores their codes.

A tokenizer has `encode(images (N, C, H, W) in [0, 1]) -> codes (N, h, w) int64`, `codebook_size`,
`grid_size` and `fingerprint()` (VQGAN and VQ-KD inherit them from `VQTokenizer`, their shared
quantizer fields from `VQConfig`); `build_token_cache` / `TokenCacheDataset` pre-extract and serve codes.
"""
from .cache import TokenCacheDataset, Tokenizer, build_token_cache, cache_summary, tokenizer_fingerprint
from .views import apply_view, draw_crop_boxes
from .vq_tokenizer import VQConfig, VQTokenizer
from .vqgan import VQGAN, VQGANConfig
from .vqkd import VQKD, VQKDConfig
from .teacher import Teacher

__all__ = ["TokenCacheDataset", "Tokenizer", "build_token_cache", "cache_summary", "tokenizer_fingerprint",
           "apply_view", "draw_crop_boxes", "VQConfig", "VQTokenizer", "VQGAN", "VQGANConfig",
           "VQKD", "VQKDConfig", "Teacher"]
