"""The pixel helpers MAE, RevColV2 and BEiT v2 share (mimkit/methods/pixel_reconstruction.py): one
implementation, no method importing another; masks fixed by a generator without touching the global
RNG (and drawn exactly as before without one); the order restored after masking; the configs'
field names and defaults unchanged by the shared ViTConfig."""
import ast
from pathlib import Path

import pytest
import torch

from mimkit.config_schema import from_dict, to_dict
from mimkit.methods.beitv2 import BEiTv2, BEiTv2Config
from mimkit.methods.mae import MAE, MAEConfig
from mimkit.methods.pixel_reconstruction import PixelPatches, PixelReconstruction
from mimkit.methods.revcolv2 import RevColV2, RevColV2Config
from mimkit.nn import random_masking, restore_order, uniform_noise

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

METHODS = Path(__file__).resolve().parents[1] / "mimkit" / "methods"


def tiny_mae(**kw) -> MAE:
    torch.manual_seed(0)
    return MAE(MAEConfig(**{"img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "depth": 1,
                            "num_heads": 2, "decoder_embed_dim": 8, "decoder_depth": 1, "decoder_num_heads": 2} | kw))


def tiny_revcol(**kw) -> RevColV2:
    torch.manual_seed(0)
    return RevColV2(RevColV2Config(**{"img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "num_heads": 2,
                                      "n_levels": 2, "encoder_columns": 1, "decoder_columns": 1} | kw))


MODELS = {"mae": tiny_mae, "mae_block": lambda: tiny_mae(mask_type="block"),
          "mae_grid": lambda: tiny_mae(mask_type="grid"), "revcolv2": tiny_revcol}


# ------------------------------------------------------------------ one implementation
def test_the_pixel_helpers_are_one_implementation_and_no_method_imports_another():
    for name in ("normalize", "denormalize", "patchify", "unpatchify", "target", "grid_size"):
        assert getattr(MAE, name) is getattr(RevColV2, name) is getattr(BEiTv2, name) is getattr(PixelPatches, name)
    for name in ("forward_loss", "reconstruct", "embed_visible"):
        assert getattr(MAE, name) is getattr(RevColV2, name) is getattr(PixelReconstruction, name)
    assert not issubclass(BEiTv2, PixelReconstruction) and not BEiTv2.reconstructs_pixels
    for module in ("beitv2", "revcolv2", "mage", "maskgit"):
        tree = ast.parse((METHODS / f"{module}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert not imported & {"mae", "beitv2", "revcolv2", "mage", "maskgit"}, module


def test_patches_round_trip_on_a_non_square_grid():
    model = tiny_mae(img_size=(8, 12), pixel_mean=(0.3,), pixel_std=(0.2,))
    x = torch.rand(2, 1, 8, 12)
    assert model.grid_size == (4, 6) and model.patchify(x).shape == (2, 24, 4)
    assert torch.equal(model.unpatchify(model.patchify(x)), x)
    assert torch.allclose(model.denormalize(model.normalize(x)), x, atol=1e-6)
    assert torch.equal(model.patchify(x)[0, 1], x[0, 0, :2, 2:4].reshape(-1))  # row-major patches


# ------------------------------------------------------------------ generators
@pytest.mark.parametrize("name", MODELS)
def test_a_generator_fixes_the_mask_and_loss_without_touching_the_global_rng(name):
    model = MODELS[name]().train()
    x = torch.rand(3, 1, 8, 8)
    state = torch.get_rng_state()
    runs = [model(x, generator=torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)]
    pictures = model.reconstruct(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(runs[0].mask, runs[1].mask) and torch.equal(runs[0].loss, runs[1].loss)
    assert not torch.equal(runs[0].mask, runs[2].mask)
    assert torch.equal(pictures["mask"], runs[0].mask)
    assert runs[0].mask.sum().item() == 3 * 12  # int(16 * 0.25) = 4 patches kept per image


def test_random_masking_draws_from_the_generator_or_the_global_rng_as_torch_rand():
    model = tiny_mae().eval()
    x = torch.rand(2, 1, 8, 8)
    expected = model(x, noise=torch.rand(2, 16, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(model(x, generator=torch.Generator().manual_seed(3)).mask, expected.mask)
    torch.manual_seed(4)
    noise = torch.rand(2, 16)
    torch.manual_seed(4)
    out = model(x)  # no generator: the global RNG, one torch.rand(N, L) as before
    assert torch.equal(out.loss, model(x, noise=noise).loss)


def test_uniform_noise_is_torch_rand_from_the_generator_or_the_global_rng():
    torch.manual_seed(1)
    expected = torch.rand(2, 5)
    torch.manual_seed(1)
    assert torch.equal(uniform_noise((2, 5), "cpu"), expected)
    state = torch.get_rng_state()
    drawn = uniform_noise((2, 5), None, torch.Generator().manual_seed(7))
    assert torch.equal(drawn, torch.rand(2, 5, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(torch.get_rng_state(), state)


def test_restore_order_undoes_random_masking():
    x, cls, fill = torch.randn(3, 16, 4), torch.randn(3, 1, 4), torch.randn(1, 1, 4)
    masked = random_masking(x, 0.75, generator=torch.Generator().manual_seed(0))
    out = restore_order(torch.cat([cls, masked.kept], dim=1), fill, masked.ids_restore)
    assert out.shape == (3, 17, 4) and torch.equal(out[:, :1], cls)
    hidden = masked.mask.bool()
    assert torch.equal(out[:, 1:][~hidden], x[~hidden])
    assert torch.equal(out[:, 1:][hidden], fill.reshape(1, 4).expand(int(hidden.sum()), -1))


# ------------------------------------------------------------------ configs
VIT = {"img_size": 224, "patch_size": 16, "in_chans": 3, "embed_dim": 768, "num_heads": 12, "mlp_ratio": 4.0,
       "norm_eps": 1e-6, "drop_path": 0.0, "attn_impl": "auto", "pixel_mean": [], "pixel_std": []}


def test_configs_keep_their_field_names_and_defaults():
    """The shared ViTConfig moved where the fields are declared, not their names or defaults, so
    presets and every config.json written before still load."""
    assert to_dict(MAEConfig()) == VIT | {
        "embed_dim": 1024, "depth": 24, "num_heads": 16, "decoder_embed_dim": 512, "decoder_depth": 8,
        "decoder_num_heads": 16, "mask_ratio": 0.75, "mask_type": "random", "norm_pix_loss": False}
    assert to_dict(RevColV2Config()) == VIT | {
        "n_levels": 4, "level_depth": 1, "encoder_columns": 4, "decoder_columns": 4, "alpha_init": 0.5,
        "reversible": True, "anchor_every": 0, "mask_ratio": 0.75, "norm_pix_loss": True, "dropout": 0.0,
        "features_from": "decoder"}
    assert to_dict(BEiTv2Config()) == VIT | {
        "tokenizer": "", "tokenizer_config": {}, "depth": 12, "layer_scale": 0.1, "drop_path": 0.1,
        "abs_pos_embed": False, "early_layers": 9, "head_layers": 2, "num_mask_patches": 0,
        "mask_ratio": 75 / 196,  # unilm beit2's 75 of 196 patches (issue 15); it was 0.4
        "min_mask_patches": 16, "max_mask_patches": 0, "mask_min_aspect": 0.3, "target": "codes",
        "norm_pix_loss": True}
    for cls in (MAEConfig, RevColV2Config, BEiTv2Config):
        assert from_dict(cls, to_dict(cls())) == cls()
    assert BEiTv2Config(img_size=(8, 12), patch_size=4).grid_size == (2, 3)
