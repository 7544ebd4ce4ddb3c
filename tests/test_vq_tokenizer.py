"""The VQ tokenizer base shared by VQGAN and VQ-KD: the Tokenizer protocol (encode, codebook_size,
grid_size, fingerprint), fingerprints that are still the documented sha256 of the same tensors (so token
caches of existing checkpoints stay valid), the shared quantizer config fields and their checks."""
import dataclasses
import hashlib

import pytest
import torch

from mimkit.errors import ConfigError
from mimkit.tokenizers import Tokenizer
from mimkit.tokenizers.vq_tokenizer import VQConfig, VQTokenizer, vq_logs
from mimkit.tokenizers.vqgan import BOOKKEEPING, VQGAN, VQGANConfig
from mimkit.tokenizers.vqkd import VQKD, VQKDConfig

torch.set_num_threads(1)

VQGAN_TINY = dict(img_size=16, in_chans=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                  attn_resolutions=(8,), z_channels=8, code_dim=4, codebook_size=16, norm_groups=4, disc_channels=8,
                  disc_layers=1)
VQKD_TINY = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16,
                 decoder_depth=1, decoder_num_heads=2, codebook_size=8, code_dim=4, teacher_dim=12)


def vqgan(**overrides) -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(VQGANConfig(**{**VQGAN_TINY, **overrides}))


def vqkd(**overrides) -> VQKD:
    torch.manual_seed(0)
    return VQKD(VQKDConfig(**{**VQKD_TINY, **overrides}))


def sha256_of(header: str, tensors: dict[str, torch.Tensor]) -> str:
    """The fingerprint as documented before the base class existed, written out with hashlib: the
    header, then per key in sorted order 'key|dtype|shape' and the tensor's raw bytes."""
    digest = hashlib.sha256(header.encode())
    for key in sorted(tensors):
        value = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------ fingerprints of existing checkpoints
@pytest.mark.parametrize("overrides", [{}, {"l2_codes": True, "codebook_update": "ema", "kmeans_init": True}])
def test_vqgan_fingerprint_is_the_documented_hash_of_every_weight_but_the_discriminator_and_counters(overrides):
    model = vqgan(**overrides)
    model.train()(torch.rand(4, 1, 16, 16))  # k-means init, EMA, counters: a trained-looking state
    state = model.state_dict()
    # the pre-base definition: everything but loss.* (the discriminator) and the bookkeeping buffers
    kept = {k: v for k, v in state.items() if not k.startswith("loss.") and k not in BOOKKEEPING}
    header = f"VQGAN:f2:l2={model.config.l2_codes}"
    assert model.fingerprint() == sha256_of(header, kept)
    assert {k for k in state if k.startswith(VQGAN.code_path)} == set(kept)


def test_vqkd_fingerprint_is_the_documented_hash_of_the_code_path():
    model = vqkd()
    state = model.state_dict()
    kept = {k: v for k, v in state.items()
            if k.startswith(("encoder.", "encode_task_layer.", "quantize.embedding.weight"))}
    assert model.fingerprint() == sha256_of("VQKD:p2:img8", kept)
    assert not any(k.startswith(("decoder.", "decode_task_layer.")) for k in kept)


def test_fingerprint_header_names_the_subclass():
    class Renamed(VQGAN):
        pass

    torch.manual_seed(0)
    renamed = Renamed(VQGANConfig(**VQGAN_TINY))
    assert renamed.fingerprint() != vqgan().fingerprint()
    assert renamed.fingerprint() == sha256_of(
        "test_fingerprint_header_names_the_subclass.<locals>.Renamed:f2:l2=False",
        {k: v for k, v in renamed.state_dict().items() if k.startswith(VQGAN.code_path)})


# ------------------------------------------------------------------ the shared encode path
@pytest.mark.parametrize("make, shape, grid", [(vqgan, (3, 1, 16, 16), (8, 8)), (vqkd, (3, 1, 8, 8), (4, 4))])
def test_encode_is_the_quantizer_over_the_subclass_vectors(make, shape, grid):
    model = make().eval()
    assert isinstance(model, VQTokenizer) and isinstance(model, Tokenizer)
    images = torch.rand(*shape)
    codes = model.encode(images)
    assert codes.shape == (3, *grid) and codes.dtype == torch.int64
    assert model.grid_size == grid and model.codebook_size == model.config.codebook_size
    assert model.grid_size == model.config.grid_size
    with torch.no_grad():
        vectors = model.vectors(images * 2 - 1)
        assert torch.equal(model.encode_features(images), vectors)
        assert torch.equal(codes, model.quantize.encode(vectors))
        # decode_codes: the codes' vectors through the subclass's decoder
        assert torch.equal(model.decode_codes(codes), model.decode_vectors(model.quantize.decode(codes)))
    assert "quantize.embedding.weight" in model.no_weight_decay()
    with pytest.raises(ValueError, match="expected images"):
        model.encode(torch.rand(3, 2, *shape[2:]))


def test_the_quantizer_follows_the_config():
    gan = vqgan(l2_codes=True, codebook_update="ema", ema_decay=0.9, restart_after=7, usage_window=5)
    q = gan.quantize
    assert (q.l2_normalize, q.update, q.decay, q.restart_after, q.usage_window) == (True, "ema", 0.9, 7, 5)
    assert (q.dim, q.code_dim, q.codebook_size, q.in_proj) == (4, 4, 16, None)
    kd = vqkd(beta=0.5, kmeans_init=False)
    assert (kd.quantize.l2_normalize, kd.quantize.update, kd.quantize.beta) == (True, "ema", 0.5)
    assert bool(kd.quantize.initialized)  # no k-means pending


def test_vq_logs_keep_the_loss_logs_first_then_the_quantizer_stats():
    model = vqgan().train()
    q = model.quantize(model.encode_features(torch.rand(2, 1, 16, 16)))
    loss = q.loss * 2
    logs = vq_logs(q, {"l1": torch.tensor(1.0)}, loss=loss)
    assert list(logs) == ["l1", "perplexity", "usage", "restarted", "commitment", "loss"]
    assert not logs["loss"].requires_grad and torch.equal(logs["loss"], loss.detach())


def test_external_networks_are_outside_the_state_dict():
    for model in (vqgan(), vqkd()):
        model.external["frozen"] = torch.nn.Linear(2, 2)
        assert not any(k.startswith("external") or k.startswith("frozen") for k in model.state_dict())


# ------------------------------------------------------------------ the shared config fields
SHARED = ("img_size", "in_chans", "codebook_size", "code_dim", "beta", "ema_decay", "kmeans_init", "kmeans_iters",
          "restart_after", "usage_window")


def defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def test_both_configs_hold_the_shared_fields_with_their_own_defaults():
    gan, kd = defaults(VQGANConfig), defaults(VQKDConfig)
    assert set(SHARED) <= set(gan) and set(SHARED) <= set(kd) and set(SHARED) == set(defaults(VQConfig))
    # the values config.json files and presets have always had
    assert {k: gan[k] for k in SHARED} == dict(img_size=256, in_chans=3, codebook_size=1024, code_dim=256, beta=0.25,
                                               ema_decay=0.99, kmeans_init=False, kmeans_iters=10, restart_after=0,
                                               usage_window=100)
    assert {k: kd[k] for k in SHARED} == dict(img_size=224, in_chans=3, codebook_size=8192, code_dim=32, beta=1.0,
                                              ema_decay=0.99, kmeans_init=True, kmeans_iters=10, restart_after=0,
                                              usage_window=100)
    assert (gan["codebook_update"], gan["l2_codes"]) == ("gradient", False)
    # VQ-KD's lookup is fixed: readable, but no config key
    assert "l2_codes" not in kd and "codebook_update" not in kd
    assert (VQKDConfig().l2_codes, VQKDConfig().codebook_update) == (True, "ema")


@pytest.mark.parametrize("cls, tiny", [(VQGANConfig, VQGAN_TINY), (VQKDConfig, VQKD_TINY)])
@pytest.mark.parametrize("field, value, message", [
    ("codebook_size", 0, "model.codebook_size must be >= 1, got 0"),
    ("kmeans_iters", 0, "model.kmeans_iters must be >= 1, got 0"),
    ("usage_window", 0, "model.usage_window must be >= 1, got 0"),
    ("in_chans", 0, "model.in_chans must be >= 1, got 0"),
    ("beta", -0.5, "model.beta must be >= 0, got -0.5"),
    ("restart_after", -1, "model.restart_after must be >= 0, got -1"),
    ("ema_decay", 1.0, r"model.ema_decay must be in \[0, 1\), got 1.0"),
])
def test_both_configs_check_the_shared_fields_alike(cls, tiny, field, value, message):
    cls(**tiny).validate()
    with pytest.raises(ConfigError, match=message):
        cls(**{**tiny, field: value}).validate()


def test_each_config_still_checks_its_own_fields():
    with pytest.raises(ConfigError, match="model.codebook_update must be gradient or ema"):
        VQGANConfig(**{**VQGAN_TINY, "codebook_update": "adam"}).validate()
    with pytest.raises(ConfigError, match="model.disc_start must be >= 0"):
        VQGANConfig(**{**VQGAN_TINY, "disc_start": -1}).validate()
    with pytest.raises(ConfigError, match="model.teacher_dim must be >= 0"):
        VQKDConfig(**{**VQKD_TINY, "teacher_dim": -1}).validate()
    with pytest.raises(ConfigError, match="model.decoder_depth must be >= 1"):
        VQKDConfig(**{**VQKD_TINY, "decoder_depth": 0}).validate()
