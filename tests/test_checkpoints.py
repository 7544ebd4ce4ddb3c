"""Checkpoint files and converters: official MAE files load safely and completely, encoder-only
files load what they have and say what they lack, mismatches and unsafe pickles are refused with
a message naming the problem, and the transformers v4 / v5 key schemes round-trip exactly."""
import argparse
import os
import pickle

import pytest
import torch

from mimkit.errors import CheckpointError
from mimkit.hub import (LoadReport, detect_vitmae_scheme, load_official_mae, load_state_dict_file,
                        mae_config_from_state_dict, mae_config_to_vitmae, mae_from_official, mimkit_to_vitmae,
                        read_checkpoint, save_state_dict_file, vitmae_to_mimkit)
from mimkit.methods.mae import MAE, MAEConfig

DECODER_KEYS = ("mask_token", "decoder_")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small_config(**kw) -> MAEConfig:
    fields = dict(img_size=32, patch_size=4, in_chans=3, embed_dim=64, depth=2, num_heads=4,
                  decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, norm_pix_loss=True)
    fields.update(kw)
    return MAEConfig(**fields)


def small_mae(seed: int = 0, **kw) -> MAE:
    torch.manual_seed(seed)
    model = MAE(small_config(**kw)).eval()
    with torch.no_grad():  # move every tensor off its init value so a missed copy shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def official_file(path, model: MAE, **args) -> None:
    """Save like facebookresearch/mae's main_pretrain.py: weights under 'model', argparse args, epoch."""
    namespace = argparse.Namespace(model="mae_vit_tiny_patch4", input_size=32, mask_ratio=0.75,
                                   norm_pix_loss=True, blr=1.5e-4, **args)
    torch.save({"model": model.state_dict(), "args": namespace, "epoch": 3,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}, path)


def same_outputs(a: MAE, b: MAE) -> bool:
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    noise = torch.rand(2, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x, y = a(images, noise=noise), b(images, noise=noise)
    return torch.equal(x.pred, y.pred) and torch.equal(x.loss, y.loss) and torch.equal(x.mask, y.mask)


# ------------------------------------------------------------ official MAE
def test_official_checkpoint_loads_completely_with_weights_only(tmp_path):
    source = small_mae(seed=1)
    path = tmp_path / "checkpoint-3.pth"
    official_file(path, source)
    with pytest.raises(pickle.UnpicklingError):  # why plain weights_only loading is not enough
        torch.load(path, weights_only=True)

    ckpt = read_checkpoint(path)
    assert ckpt.args.model == "mae_vit_tiny_patch4" and ckpt.extra["epoch"] == 3
    sd = load_state_dict_file(path)
    assert sd.keys() == source.state_dict().keys()

    target = small_mae(seed=2)
    assert not same_outputs(source, target)
    report = load_official_mae(target, path, strict=True)
    assert isinstance(report, LoadReport) and report.complete and not report.notes
    assert len(report.loaded) == len(sd)
    assert same_outputs(source, target)


def test_config_is_read_back_from_an_official_file(tmp_path):
    source = small_mae(seed=1, norm_pix_loss=False, mask_ratio=0.6)
    path = tmp_path / "checkpoint.pth"
    official_file(path, source)  # its args say norm_pix_loss=True, mask_ratio=0.75: args win
    model, report = mae_from_official(path, num_heads=4, decoder_num_heads=4)
    assert report.complete
    expected = small_config(norm_pix_loss=True, mask_ratio=0.75)
    assert model.config == expected
    source.config.norm_pix_loss, source.config.mask_ratio = True, 0.75
    assert same_outputs(source, model)


def test_heads_come_from_args_then_official_table_then_a_warned_guess():
    sd = small_mae().state_dict()
    with pytest.warns(UserWarning, match="num_heads=1"):  # 64 // 64; decoder 32-d -> 1
        config = mae_config_from_state_dict(sd)
    assert (config.embed_dim, config.depth, config.num_heads, config.decoder_num_heads) == (64, 2, 1, 1)
    base = {"patch_embed.proj.weight": torch.zeros(768, 3, 16, 16), "pos_embed": torch.zeros(1, 197, 768),
            "blocks.0.mlp.fc1.weight": torch.zeros(3072, 768), "decoder_embed.weight": torch.zeros(512, 768),
            **{f"blocks.{i}.norm1.weight": torch.zeros(768) for i in range(12)}}
    config = mae_config_from_state_dict(base, argparse.Namespace(model="mae_vit_base_patch16", norm_pix_loss=True))
    assert (config.img_size, config.patch_size, config.num_heads, config.decoder_num_heads) == (224, 16, 12, 16)
    assert config.norm_pix_loss and config.mlp_ratio == 4.0


def test_ddp_prefix_and_state_dict_wrapper_are_removed(tmp_path):
    source = small_mae(seed=1)
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    target = small_mae(seed=2)
    assert load_official_mae(target, path, strict=True).complete
    assert same_outputs(source, target)


def test_encoder_only_checkpoint_loads_encoder_and_names_the_rest(tmp_path):
    source = small_mae(seed=1)
    encoder = {k: v for k, v in source.state_dict().items() if not k.startswith(DECODER_KEYS + ("norm.",))}
    finetuned = {**encoder, "fc_norm.weight": torch.ones(64), "fc_norm.bias": torch.zeros(64),
                 "head.weight": torch.zeros(10, 64), "head.bias": torch.zeros(10)}
    path = tmp_path / "mae_finetuned_vit_tiny.pth"
    torch.save({"model": finetuned, "args": argparse.Namespace(model="vit_tiny", global_pool=True)}, path)

    target = small_mae(seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_official_mae(target, path)
    assert set(report.unexpected) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert set(report.missing) == {k for k in before if k.startswith(DECODER_KEYS + ("norm.",))}
    assert set(report.loaded) == set(encoder)
    text = str(report)
    assert "no decoder" in text and "fc_norm" in text and "head.*" in text
    after = target.state_dict()
    for k in before:
        expected = encoder[k] if k in encoder else before[k]
        assert torch.equal(after[k], expected), k

    with pytest.raises(CheckpointError, match="missing"):
        load_official_mae(small_mae(), path, strict=True)


@pytest.mark.parametrize("other, key, field", [
    ({"patch_size": 8}, "patch_embed.proj.weight", "patch_size=4 (model: 8)"),
    ({"embed_dim": 128, "num_heads": 4}, "cls_token", "embed_dim=64 (model: 128)"),
    ({"img_size": 48}, "pos_embed", "img_size=32 (model: 48)"),
])
def test_shape_mismatch_names_key_shapes_and_config_field(tmp_path, other, key, field):
    path = tmp_path / "ckpt.pth"
    official_file(path, small_mae())
    target = small_mae(seed=5, **other)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_official_mae(target, path)
    message = str(info.value)
    theirs = tuple(small_mae().state_dict()[key].shape)
    assert key in message and str(list(theirs)) in message
    assert str(list(before[key].shape)) in message and field in message
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())  # nothing copied


# ----------------------------------------------------------- safe loading
class RunsShellOnLoad:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, writer):
    marker = tmp_path / "SOMEFILE"
    payload = {"model": {"w": torch.zeros(2)}, "evil": RunsShellOnLoad(f"touch {marker}")}
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError, match="unpickle code") as info:
        load_state_dict_file(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError):
        load_official_mae(small_mae(), path)
    assert not marker.exists()


def test_missing_and_non_checkpoint_files_are_named(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_state_dict_file(missing)
    assert str(missing) in str(info.value)
    for name, data in (("notes.pth", b"hello, not a checkpoint"), ("weights.safetensors", b"garbage" * 4),
                       ("mystery", b"plain text")):
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_state_dict_file(bad)
        assert str(bad) in str(info.value)
    tensors_elsewhere = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], tensors_elsewhere)
    with pytest.raises(CheckpointError, match="no state dict"):
        load_state_dict_file(tensors_elsewhere)


def test_safetensors_round_trip(tmp_path):
    source = small_mae(seed=1)
    path = tmp_path / "model.safetensors"
    save_state_dict_file(source.state_dict(), path)
    sd = load_state_dict_file(path)
    assert sd.keys() == source.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in source.state_dict().items())
    unsuffixed = tmp_path / "weights"  # format sniffed from the bytes
    unsuffixed.write_bytes(path.read_bytes())
    target = small_mae(seed=2)
    assert load_official_mae(target, unsuffixed, strict=True).complete
    assert same_outputs(source, target)


# ------------------------------------------------------------ transformers
@pytest.mark.parametrize("scheme", ["v5", "v4"])
def test_vitmae_round_trip_is_exact_and_loads_strictly(tmp_path, scheme):
    transformers = pytest.importorskip("transformers")
    source = small_mae(seed=1)
    sd = source.state_dict()
    hf_sd = mimkit_to_vitmae(sd, scheme=scheme)
    assert detect_vitmae_scheme(hf_sd) == scheme
    back = vitmae_to_mimkit(hf_sd)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], v) for k, v in sd.items())

    hf_config = mae_config_to_vitmae(source.config)
    hf = transformers.ViTMAEForPreTraining(hf_config)
    v5 = hf_sd if scheme == "v5" else mimkit_to_vitmae(back, scheme="v5")
    result = hf.load_state_dict(v5, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    if scheme == "v4":  # transformers' own legacy-key loader must accept our v4 names as well
        hf_config.save_pretrained(tmp_path)
        save_state_dict_file(hf_sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
        hf, info = transformers.ViTMAEForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
        assert all(torch.equal(vitmae_to_mimkit(hf.state_dict())[k], v) for k, v in sd.items())


def test_bare_encoder_keys_unknown_keys_and_mixed_schemes():
    sd = small_mae().state_dict()
    v4 = mimkit_to_vitmae(sd, scheme="v4")
    bare = {k.removeprefix("vit."): v for k, v in v4.items() if k.startswith("vit.")}  # a ViTMAEModel
    encoder = vitmae_to_mimkit(bare)
    assert encoder.keys() == {k for k in sd if not k.startswith(DECODER_KEYS)}

    with_head = {**v4, "classifier.weight": torch.zeros(10, 64)}
    with pytest.raises(CheckpointError, match="classifier.weight"):
        vitmae_to_mimkit(with_head)
    report = load_official_mae(small_mae(), vitmae_to_mimkit(with_head, strict=False))
    assert report.unexpected == ["classifier.weight"] and not report.missing

    mixed = {**v4, **mimkit_to_vitmae(sd, scheme="v5")}
    with pytest.raises(CheckpointError, match="mixes"):
        vitmae_to_mimkit(mixed)
    with pytest.raises(CheckpointError, match="vitmae_to_mimkit"):
        load_official_mae(small_mae(), v4)
