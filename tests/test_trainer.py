"""The Trainer: schedule, parameter groups, accumulation, checkpoints and exact resume."""
import csv
import math

import pytest
import torch
from torch import nn

from mimkit.config import load_config
from mimkit.data import InMemoryDataset
from mimkit.files.checkpoint_folder import latest_checkpoint
from mimkit.registry import load_model
from mimkit.engine.optim import param_groups, scaled_lr, warmup_cosine
from mimkit.engine.trainer import Trainer
from mimkit.errors import CheckpointError
from mimkit.methods import Output
from mimkit.train import train

DIGITS = ["data.name=digits", "data.image_size=8", "model.img_size=8", "model.patch_size=2",
          "train.batch_size=16", "train.log_every=1", "train.progress=false", "optim.blr=1e-3"]


def test_warmup_cosine_hand_values():
    assert warmup_cosine(0, 10, 4, 1.0) == pytest.approx(0.25)
    assert warmup_cosine(3, 10, 4, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(4, 10, 4, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(7, 10, 4, 1.0) == pytest.approx(0.5)  # half way through the cosine
    assert warmup_cosine(10, 10, 4, 1.0, floor=0.1) == pytest.approx(0.1)
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)


def test_no_weight_decay_on_1d_params_and_tokens():
    model = train_model = load_config("mae_micro_fmnist")
    from mimkit.registry import build_model

    model = build_model(train_model.method, train_model.model)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "mask_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"} <= undecayed
    assert {"blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "decoder_pred.weight"} <= decayed
    assert "pos_embed" not in decayed | undecayed  # fixed sin-cos, not trained
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


class Regression(nn.Module):
    """A model whose loss is deterministic given the batch: for engine tests."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, images, labels=None):
        loss = (self.linear(images.flatten(1)).squeeze(1) - labels.float()).pow(2).mean()
        return Output(loss=loss, logs={"loss": loss.detach()})


def regression_run(tmp_path, batch, accum):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 2, 2), dtype=torch.uint8)
    data = InMemoryDataset(images, torch.arange(32) % 3)
    config = load_config("mae_micro_fmnist", [f"train.batch_size={batch}", f"train.accum_steps={accum}",
                                              "train.steps=3", f"train.out_dir={tmp_path}", "train.progress=false",
                                              "optim.lr=0.1", "optim.weight_decay=0"])
    torch.manual_seed(1)
    model = Regression()
    Trainer(model, config, data).fit()
    return model.linear.weight.detach().clone()


def test_gradient_accumulation_equals_large_batch(tmp_path):
    once = regression_run(tmp_path / "a", batch=8, accum=1)
    accumulated = regression_run(tmp_path / "b", batch=4, accum=2)
    assert torch.allclose(once, accumulated, atol=1e-6)
    assert not torch.allclose(once, regression_run(tmp_path / "c", batch=4, accum=1), atol=1e-4)


def read_losses(run_dir):
    with open(run_dir / "log.csv") as handle:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(handle)}


def test_resume_reproduces_the_uninterrupted_losses(tmp_path):
    overrides = DIGITS + ["train.steps=8", "train.ckpt_every=4", "train.picture_every=3"]
    full = load_config("mae_micro_fmnist", overrides + [f"train.out_dir={tmp_path / 'full'}"])
    train(full)
    part = load_config("mae_micro_fmnist", overrides + [f"train.out_dir={tmp_path / 'part'}"])
    torch.manual_seed(part.train.seed)
    from mimkit.data import build_augment, build_dataset
    from mimkit.registry import build_model
    from mimkit.train import build_callbacks, measure_pixel_statistics

    part = measure_pixel_statistics(part, build_dataset(part.data, channels=1))  # as train() does

    def make_trainer():
        torch.manual_seed(part.train.seed)
        model = build_model(part.method, part.model)
        data = build_dataset(part.data, channels=1)
        return Trainer(model, part, data, augment=build_augment(part.data),
                       callbacks=build_callbacks(model, part, data))

    make_trainer().fit(stop_at=5)  # stops after step 5 with a checkpoint there
    assert latest_checkpoint(tmp_path / "part").name == "step_00000005"
    make_trainer().fit(resume=True)
    a, b = read_losses(tmp_path / "full"), read_losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in range(1, 9):
        assert a[step] == b[step], f"loss differs at step {step}: {a[step]} vs {b[step]}"
    assert (tmp_path / "full" / "pictures" / "reconstruction_step_00000003.png").is_file()


def test_checkpoint_round_trip_and_pruning(tmp_path):
    config = load_config("mae_micro_fmnist", DIGITS + ["train.steps=6", "train.ckpt_every=2",
                                                       "train.keep_checkpoints=2", f"train.out_dir={tmp_path}"])
    train(config)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert kept == ["step_00000004", "step_00000006"]
    model, loaded_config = load_model(tmp_path)
    # the saved config is the run's, with the pixel statistics train() measured on the digits
    from mimkit.data import build_dataset
    from mimkit.train import measure_pixel_statistics

    assert loaded_config == measure_pixel_statistics(config, build_dataset(config.data, channels=1))
    assert len(loaded_config.model.pixel_mean) == 1 and 0.2 < loaded_config.model.pixel_mean[0] < 0.4
    x = torch.rand(2, 1, 8, 8)
    noise = torch.rand(2, 16)
    model2, _ = load_model(tmp_path / "checkpoints" / "step_00000006" / "model.safetensors")
    assert torch.equal(model(x, noise=noise).loss, model2(x, noise=noise).loss)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    assert math.isfinite(read_losses(tmp_path)[6])
