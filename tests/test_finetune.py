"""Fine-tuning: layer ids and per-group learning rates by hand, a trivially learnable label reaching
100% and independent labels staying at chance, partial fine-tuning leaving the frozen weights
bit-identical, mixup / cutmix targets by hand, the CLI and its one-line errors."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mimkit.cli import main
from mimkit.config import RunConfig, to_dict
from mimkit.data.config import DataConfig
from mimkit.data.memory import InMemoryDataset
from mimkit.engine.checkpoint import save_checkpoint
from mimkit.errors import ConfigError, MimkitError
from mimkit.eval.finetune import (FineTuneClassifier, finetune, layer_decay_groups, layer_id, layer_stacks,
                                  prepare_model, select_trainable, set_lr, train_mode, used_parameters)
from mimkit.eval.mixup import Mixup, cutmix_box, mixed_targets, paste_box, smoothed_one_hot, soft_cross_entropy
from mimkit.methods.mae import MAE, MAEConfig
from mimkit.methods.revcolv2 import RevColV2, RevColV2Config

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENIZER = {"method": "vqgan", "model": {
    "img_size": 8, "in_chans": 1, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
    "attn_resolutions": [], "z_channels": 8, "norm_groups": 4, "codebook_size": 16, "code_dim": 4,
    "disc_channels": 8, "disc_layers": 1}}


def tiny_mae(depth=3, seed=0, **kw) -> MAE:
    torch.manual_seed(seed)
    return MAE(MAEConfig(**({"img_size": 8, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": depth,
                             "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2,
                             "pixel_mean": (0.5,), "pixel_std": (0.3,)} | kw)))


def brightness_set(n: int, seed: int, random_labels: bool = False) -> InMemoryDataset:
    """8x8 grey images of 4 brightness levels (class k: 0.1 + 0.8 k / 3, plus 5% noise); the label
    is the level, or (random_labels) drawn independently of the image."""
    g = torch.Generator().manual_seed(seed)
    level = torch.arange(4).repeat(n // 4)
    images = (level.float() / 3 * 0.8 + 0.1).view(-1, 1, 1, 1) + 0.05 * torch.rand(n, 1, 8, 8, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g) if random_labels else level
    return InMemoryDataset((images.clamp(0, 1) * 255).round().to(torch.uint8), labels)


# ------------------------------------------------------------------ layer-wise lr decay
def test_layer_ids_and_group_learning_rates_by_hand():
    model = tiny_mae(depth=3)
    stacks = layer_stacks(model)
    assert stacks == [("blocks", 3)]
    by_hand = {"pos_embed": 0, "cls_token": 0, "mask_token": 0, "patch_embed.proj.weight": 0,
               "blocks.0.attn.qkv.weight": 1, "blocks.2.mlp.fc2.bias": 3, "norm.weight": 4, "decoder_pred.weight": 4,
               "rel_pos_bias.relative_position_bias_table": 4, "embed.tokens.weight": 0}
    assert {name: layer_id(name, stacks) for name in by_hand} == by_hand

    classifier = FineTuneClassifier(model, num_classes=4)
    optimizer = torch.optim.AdamW(layer_decay_groups(classifier, 0.05, 0.5), lr=1.0)
    set_lr(optimizer, 1e-3)
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    wd = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(classifier.named_parameters())
    expected = {"model.cls_token": 1e-3 / 16, "model.patch_embed.proj.weight": 1e-3 / 16,
                "model.blocks.0.attn.qkv.weight": 1e-3 / 8, "model.blocks.0.norm1.bias": 1e-3 / 8,
                "model.blocks.2.mlp.fc1.weight": 1e-3 / 2, "model.norm.weight": 1e-3, "fc_norm.bias": 1e-3,
                "head.weight": 1e-3}
    for name, value in expected.items():
        assert lr[id(params[name])] == pytest.approx(value, rel=1e-12), name
    assert id(params["model.pos_embed"]) not in lr  # MAE's fixed sin-cos positions never train
    assert wd[id(params["model.blocks.0.attn.qkv.weight"])] == 0.05 and wd[id(params["head.weight"])] == 0.05
    assert wd[id(params["model.cls_token"])] == wd[id(params["head.bias"])] == wd[id(params["fc_norm.weight"])] == 0


def test_only_parameters_that_feed_the_features_train():
    classifier = FineTuneClassifier(tiny_mae(), num_classes=4)
    used = used_parameters(classifier, torch.rand(2, 1, 8, 8))
    assert "model.cls_token" in used and "model.blocks.2.mlp.fc2.weight" in used and "head.weight" in used
    assert not any(name.startswith(("model.decoder", "model.mask_token")) for name in used)
    assert set(select_trainable(classifier, used, None)) == used


def test_revcolv2_columns_are_its_layers():
    model = RevColV2(RevColV2Config(img_size=8, patch_size=4, in_chans=1, embed_dim=16, num_heads=2, n_levels=2,
                                    encoder_columns=2, decoder_columns=3))
    stacks = layer_stacks(model)
    assert stacks == [("encoder.columns", 2), ("decoder.columns", 3)]
    assert layer_id("encoder.columns.1.levels.0.alpha", stacks) == 2
    assert layer_id("decoder.columns.0.levels.1.blocks.0.attn.qkv.weight", stacks) == 3
    assert layer_id("decoder_pred.weight", stacks) == 6 and layer_id("mask_tokens", stacks) == 0
    model.config.features_from = "encoder"
    assert layer_stacks(model) == [("encoder.columns", 2)]


# ------------------------------------------------------------------ known answers
def test_trivial_label_reaches_100_and_independent_labels_stay_at_chance():
    model = tiny_mae()
    kwargs = dict(epochs=4, batch_size=32, lr=3e-3, progress=False)
    result = finetune(model, brightness_set(128, 0), brightness_set(64, 1), **kwargs)
    assert result.test_top1 == 100.0 and result.train_top1 == 100.0
    assert len(result.test_top1_per_epoch) == 4 and result.test_top1_per_epoch[-1] == result.test_top1
    # Test labels drawn independently of everything: accuracy ~ Binomial(400, 1/4) / 400, std 2.2
    # points; the bound of 12 points is > 5 sigma.
    noise = finetune(model, brightness_set(128, 0, random_labels=True), brightness_set(400, 2, random_labels=True),
                     **kwargs)
    assert abs(noise.test_top1 - 25.0) < 12.0


def test_reproducible_leaves_global_rng_and_model_untouched():
    model = tiny_mae()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    train, test = brightness_set(32, 0), brightness_set(16, 1)
    runs = [finetune(model, train, test, epochs=1, batch_size=16, lr=1e-3, drop_path=0.1, mixup=0.8, cutmix=1.0,
                     progress=False) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    a, b = (r.classifier.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].classifier.model.blocks[2].drop_path1.p == pytest.approx(0.1)


def test_partial_finetuning_keeps_frozen_weights_bit_identical():
    model = tiny_mae()
    original = model.state_dict()
    train, test = brightness_set(32, 0), brightness_set(16, 1)
    result = finetune(model, train, test, epochs=1, batch_size=16, lr=1e-2, trainable_blocks=1, progress=False)
    tuned = result.classifier.model.state_dict()
    frozen = [k for k in tuned if k.startswith(("blocks.0.", "blocks.1.", "patch_embed.", "cls_token", "decoder"))]
    assert frozen and all(torch.equal(tuned[k], original[k]) for k in frozen)
    for k in ("blocks.2.attn.qkv.weight", "blocks.2.mlp.fc2.bias", "norm.weight"):
        assert not torch.equal(tuned[k], original[k]), k
    head_only = finetune(model, train, test, epochs=1, batch_size=16, lr=1e-2, trainable_blocks=0, progress=False)
    assert all(torch.equal(v, original[k]) for k, v in head_only.classifier.model.state_dict().items())
    assert head_only.trainable_parameters == 2 * 32 + 32 * 4 + 4  # fc_norm + head
    # ... while the head does train: one more epoch (same seed, same first epoch) moves it, not the encoder
    longer = finetune(model, train, test, epochs=2, batch_size=16, lr=1e-2, trainable_blocks=0, progress=False)
    assert all(torch.equal(v, original[k]) for k, v in longer.classifier.model.state_dict().items())
    for name in ("head.weight", "head.bias", "fc_norm.weight"):
        assert not torch.equal(longer.classifier.state_dict()[name], head_only.classifier.state_dict()[name]), name


def test_frozen_blocks_run_in_eval_mode_and_bad_counts_are_refused():
    classifier = FineTuneClassifier(tiny_mae(), num_classes=4)
    used = used_parameters(classifier, torch.rand(2, 1, 8, 8))
    select_trainable(classifier, used, 1)
    train_mode(classifier)
    assert [b.training for b in classifier.model.blocks] == [False, False, True] and classifier.head.training
    with pytest.raises(ConfigError, match="trainable_blocks must be between 0 and the model's 3 layers"):
        select_trainable(classifier, used, 4)


def test_drop_path_rebuilds_with_the_same_weights_or_is_refused():
    model = tiny_mae()
    rebuilt = prepare_model(model, 0.2, "cpu")
    assert rebuilt.config.drop_path == 0.2 and model.config.drop_path == 0.0
    assert [b.drop_path1.p for b in rebuilt.blocks] == pytest.approx([0.0, 0.1, 0.2])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in rebuilt.state_dict().items())
    from mimkit.methods.maskgit import MaskGIT, MaskGITConfig

    maskgit = MaskGIT(MaskGITConfig(tokenizer_config=TOKENIZER, embed_dim=16, depth=1, num_heads=2))
    with pytest.raises(ConfigError, match="MaskGIT has no drop_path in its config"):
        prepare_model(maskgit, 0.1, "cpu")


class NoGradFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = type("C", (), {"embed_dim": 4})()
        self.blocks = nn.ModuleList([nn.Linear(64, 4)])

    @torch.no_grad()
    def features(self, images, pool="mean"):
        return self.blocks[0](images.flatten(1))


def test_features_under_no_grad_are_named():
    with pytest.raises(MimkitError, match=r"NoGradFeatures.features\(images, pool\) returns no gradient"):
        finetune(NoGradFeatures(), brightness_set(8, 0), brightness_set(8, 1), epochs=1, progress=False)


def test_bad_recipe_values_are_config_errors():
    train = brightness_set(8, 0)
    for kwargs, message in [({"layer_decay": 0.0}, "layer_decay must be in"), ({"lr": -1.0}, "positive number"),
                            ({"label_smoothing": 1.0}, "label_smoothing"), ({"cutmix": -1.0}, "cutmix")]:
        with pytest.raises(ConfigError, match=message):
            finetune(tiny_mae(), train, train, epochs=1, progress=False, **kwargs)


# ------------------------------------------------------------------ mixup / cutmix
def test_smoothed_and_mixed_targets_by_hand():
    labels = torch.tensor([0, 2])
    assert torch.allclose(smoothed_one_hot(labels, 4, 0.1),
                          torch.tensor([[0.925, 0.025, 0.025, 0.025], [0.025, 0.025, 0.925, 0.025]]))
    mixed = mixed_targets(labels, 4, 0.7, 0.1)
    assert torch.allclose(mixed, torch.tensor([[0.655, 0.025, 0.295, 0.025], [0.295, 0.025, 0.655, 0.025]]))
    logits = torch.randn(2, 4)
    assert torch.allclose(soft_cross_entropy(logits, smoothed_one_hot(labels, 4, 0.1)),
                          F.cross_entropy(logits, labels, label_smoothing=0.1))


class FixedCentre:
    def __init__(self, *values):
        self.values = list(values)

    def integers(self, low, high):
        return self.values.pop(0)


def test_cutmix_box_and_kept_area_by_hand():
    # lam 0.75 -> sides sqrt(0.25) * 8 = 4; centre (2, 7) -> rows 0..4, columns 5..8 after clipping
    box = cutmix_box(8, 8, 0.75, FixedCentre(2, 7))
    assert box == (0, 4, 5, 8)
    images = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    pasted, lam = paste_box(images, box)
    assert lam == 1 - 12 / 64
    expected = torch.zeros(8, 8)
    expected[0:4, 5:8] = 1
    assert torch.equal(pasted[0, 0], expected) and torch.equal(pasted[1, 0], 1 - expected)


def test_mixup_images_and_targets_agree():
    images = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.5), torch.ones(1, 4, 4)])
    labels = torch.tensor([0, 1, 3])
    mixed, targets = Mixup(4, mixup_alpha=0.8, label_smoothing=0.1, seed=3)(images, labels)
    lam = 1 - mixed[0].mean().item()  # image 0 (zeros) mixed with image 2 (ones)
    assert 0 < lam < 1 and torch.allclose(mixed[1], images[1])
    assert torch.allclose(targets, mixed_targets(labels, 4, lam, 0.1), atol=1e-6)
    same, plain = Mixup(4, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.0, label_smoothing=0.1)(images, labels)
    assert torch.equal(same, images) and torch.allclose(plain, smoothed_one_hot(labels, 4, 0.1))
    cut, cut_targets = Mixup(4, cutmix_alpha=1.0, label_smoothing=0.0, seed=1)(images, labels)
    kept = 1 - cut[0].mean().item()  # fraction of image 0 not covered by image 2's box
    assert torch.allclose(cut_targets[0], torch.tensor([kept, 0, 0, 1 - kept]), atol=1e-6)
    with pytest.raises(ConfigError, match="mixup_alpha must be >= 0"):
        Mixup(4, mixup_alpha=-1)


# ------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finetune_run")
    model = tiny_mae(depth=2, patch_size=2)
    config = RunConfig(method="mae", model=model.config, data=DataConfig(name="digits", image_size=8))
    save_checkpoint(run, 1, model, to_dict(config))
    return run


def test_cli_finetune_prints_one_row_per_trainable_blocks(tiny_run, capsys):
    assert main(["eval", "finetune", str(tiny_run), "--epochs", "1", "--limit", "64", "--batch-size", "32",
                 "--trainable-blocks", "0,all", "--mixup", "0.8", "--drop-path", "0.1"]) == 0
    said, *lines = capsys.readouterr().out.splitlines()[1:]  # after the train and test data lines
    assert said.startswith("test data    digits test: 64 images (random subset of 64 of 359")
    assert "fine-tuning test top-1" in lines[0] and "1 epochs" in lines[0]
    rows = [line.split("|") for line in lines[3:]]
    assert [r[2].strip() for r in rows] == ["0", "all"] and all(r[1].strip() == "mean" for r in rows)
    for r in rows:
        pretrained, random_init, gain = (float(c) for c in r[3:])
        for top1 in (pretrained, random_init):  # a share of the 64 test images, printed to 2 decimals
            assert 0 <= top1 <= 100 and abs(top1 * 0.64 - round(top1 * 0.64)) < 0.01
        assert math.isclose(gain, pretrained - random_init, abs_tol=0.011)


def band_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 1, 8, 8) noise in [0, 0.4] with rows 2c, 2c + 1 brightened by 0.6 for class c = 0..3:
    the class is plainly visible, and unchanged by the horizontal flips of fine-tuning."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = 0.4 * torch.rand(n, 1, 8, 8, generator=g)
    for i, c in enumerate(labels.tolist()):
        images[i, :, 2 * c:2 * c + 2] += 0.6
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


def test_cli_finetune_learns_a_visible_class_and_shows_a_pretrained_gain(tmp_path, capsys):
    train_images, train_labels = band_images(64, 0)
    test_images, test_labels = band_images(40, 1)
    data = tmp_path / "bands.npz"
    np.savez(data, train_images=train_images.numpy(), train_labels=train_labels.numpy(),
             test_images=test_images.numpy(), test_labels=test_labels.numpy())
    # the "pretrained" encoder: one already fine-tuned on this task, so its frozen features separate the
    # classes, which a random init's do less
    tuned = finetune(tiny_mae(depth=2, patch_size=2), InMemoryDataset(train_images, train_labels),
                     InMemoryDataset(test_images, test_labels), epochs=6, batch_size=16, lr=3e-3, progress=False)
    assert tuned.test_top1 >= 90
    encoder = tuned.classifier.model
    save_checkpoint(tmp_path / "run", 1, encoder, to_dict(RunConfig(method="mae", model=encoder.config,
                                                                    data=DataConfig(name="digits", image_size=8))))
    assert main(["eval", "finetune", str(tmp_path / "run"), "--data", str(data), "--epochs", "4", "--batch-size",
                 "16", "--lr", "3e-3", "--trainable-blocks", "0,all"]) == 0
    train_line, test_line, title, header, _, *rows = capsys.readouterr().out.splitlines()
    assert train_line == f"train data   {data} train: 64 images, 4 classes (0 16, 1 16, 2 16, 3 16)"
    assert test_line == f"test data    {data} test: 40 images, 4 classes (0 10, 1 10, 2 10, 3 10)"
    assert "4 epochs, peak lr 0.003" in title
    assert [c.strip() for c in header.split("|")] == ["method", "pool", "trainable blocks", "pretrained",
                                                      "random init", "gain"]
    table = {}
    for row in rows:
        method, pool, blocks, *numbers = (c.strip() for c in row.split("|"))
        assert (method, pool) == ("mae", "mean")
        pretrained, random_init, gain = table[blocks] = tuple(float(c) for c in numbers)
        for top1 in (pretrained, random_init):  # a share of the 40 test images: a multiple of 2.5
            assert 0 <= top1 <= 100 and abs(top1 / 2.5 - round(top1 / 2.5)) < 0.005
        assert math.isclose(gain, pretrained - random_init, abs_tol=0.011)
    assert list(table) == ["0", "all"]
    # chance is 25% (sd 6.8 points on 40 images): full fine-tuning learns the bands from either init
    assert min(table["all"][:2]) >= 75
    # only the head trains on frozen features: the tuned encoder's separate the classes, a random init's less
    assert table["0"][0] >= 90 and table["0"][2] >= 15


@pytest.mark.parametrize("flags, message", [
    (["--layer-decay", "0"], "argument --layer-decay: expected a number in (0, 1], got '0'"),
    (["--trainable-blocks", "1,x"], "expected comma-separated block counts"),
    (["--lr", "1e-3", "--blr", "1e-3"], "not allowed with argument"),
    (["--trainable-blocks", "3"], "trainable blocks 3 is outside 0..2: the mae has 2 layers"),
])
def test_cli_bad_flags_are_one_line_exit_2(tiny_run, capsys, flags, message):
    try:
        status = main(["eval", "finetune", str(tiny_run), "--limit", "16", *flags])
    except SystemExit as exit_info:
        status = exit_info.code
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_numpy_generator_draws_do_not_touch_global_numpy():
    state = np.random.get_state()[1].copy()
    Mixup(4, mixup_alpha=1.0, cutmix_alpha=1.0, seed=0)(torch.rand(4, 1, 4, 4), torch.arange(4))
    assert np.array_equal(np.random.get_state()[1], state)


def test_token_models_and_beitv2_fine_tune_their_transformer_but_not_the_tokenizer():
    from mimkit.methods.beitv2 import BEiTv2, BEiTv2Config
    from mimkit.methods.mage import MAGE, MAGEConfig

    torch.manual_seed(0)
    beit = BEiTv2(BEiTv2Config(tokenizer_config=TOKENIZER, img_size=8, patch_size=2, in_chans=1, embed_dim=16,
                               depth=2, num_heads=2, early_layers=1, head_layers=1, num_mask_patches=6,
                               min_mask_patches=4))
    mage = MAGE(MAGEConfig(tokenizer_config=TOKENIZER, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8,
                           decoder_depth=1, decoder_num_heads=2))
    images = torch.rand(4, 1, 8, 8)
    for model in (beit, mage):
        used = used_parameters(FineTuneClassifier(model, num_classes=3), images)
        assert any(name.startswith("model.blocks.0.") for name in used)
        assert not any(".tokenizer." in name for name in used)  # the frozen tokenizer is never trained
    assert not any("lm_head" in n or "cls_pt_layers" in n for n in used_parameters(
        FineTuneClassifier(beit, num_classes=3), images))  # pretraining-only heads leave the optimizer
