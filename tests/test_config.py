"""Config loading: presets, YAML, overrides, and errors that name the bad key."""
import pytest

from mimkit.config import load_config, parse_override, run_config_from_dict, to_dict
from mimkit.errors import ConfigError
from mimkit.registry import method_registry
from mimkit.presets import all_presets


def test_every_preset_builds_a_valid_config():
    for name in all_presets():
        config = load_config(name)
        assert config.method in method_registry()
        assert run_config_from_dict(to_dict(config)) == config  # config.json round trip


def test_overrides_are_typed():
    config = load_config("mae_micro_fmnist", ["optim.blr=1e-3", "train.steps=7", "data.crop_scale=[0.5, 1]",
                                              "model.norm_pix_loss=false", "model.img_size=[28, 32]"])
    assert config.optim.blr == 0.001 and config.train.steps == 7
    assert config.data.crop_scale == (0.5, 1.0) and config.model.norm_pix_loss is False
    assert config.model.img_size == (28, 32)
    assert parse_override("a.b=c") == ("a.b", "c")


@pytest.mark.parametrize("override, message", [
    ("optim.bl=1e-3", "unknown key 'optim.bl'; valid keys: blr, lr"),
    ("trian.steps=3", "unknown key 'trian'"),
    ("train.steps=ten", "train.steps must be an integer, got 'ten'"),
    ("train.steps=-1", "train.steps must be >= 1"),
    ("model.mask_ratio=1.0", "model.mask_ratio must be in [0, 1)"),
    ("model.img_size=30", "divisible by model.patch_size 4"),
    ("model.norm_pix_loss=3", "model.norm_pix_loss must be true or false"),
    ("train.precision=fp8", "train.precision must be fp32 or bf16"),
    ("method=nope", "known methods: beitv2, classifier, mae, mage, maskgit, maskgit_vqgan, revcolv2, vqgan, vqkd"),
    ("trainsteps", "not of the form key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("mae_micro_fmnist", [override])
    assert message in str(err.value)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'mae_nope'.*mae_tiny_fmnist"):
        load_config("mae_nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    good = tmp_path / "good.yaml"
    good.write_text("method: mae\nmodel: {img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 16, depth: 1,\n"
                    "  num_heads: 2, decoder_embed_dim: 16, decoder_depth: 1, decoder_num_heads: 2}\n"
                    "data: {name: digits, image_size: 8}\ntrain: {steps: 3}\n")
    config = load_config(str(good), ["train.batch_size=4"])
    assert config.model.embed_dim == 16 and config.train.batch_size == 4 and config.data.name == "digits"
