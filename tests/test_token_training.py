"""Token models through `mimkit train`: from a token cache or images, resume, self-contained checkpoints,
two views per image (MAGE-C), and clear errors for a missing tokenizer or a foreign cache."""
import shutil

import pytest
import torch

from mimkit.cli import main
from mimkit.config import load_config
from mimkit.data import build_dataset
from mimkit.data.config import DataConfig
from mimkit.registry import load_model
from mimkit.errors import ConfigError, DataError
from mimkit.tokenizers import TokenCacheDataset, build_token_cache
from mimkit.tokenizers.vqgan import VQGANConfig
from mimkit.train import train
from test_token_cache import save_tiny_checkpoint

VQ = VQGANConfig(img_size=8, in_chans=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                 z_channels=8, norm_groups=4, codebook_size=16, code_dim=4, disc_channels=8, disc_layers=1)
TINY = ["model.embed_dim=16", "model.depth=1", "model.num_heads=2", "train.batch_size=8", "train.steps=4",
        "train.ckpt_every=2", "train.progress=false", "train.threads=1"]


@pytest.fixture(scope="module")
def tokenizer_and_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    save_tiny_checkpoint(root / "vq", "vqgan", VQ)
    model, _ = load_model(root / "vq")
    digits = build_dataset(DataConfig(name="digits", image_size=8, limit=40), channels=1)
    build_token_cache(model, digits, root / "cache", crops=1, progress=False)
    return root


def losses(run_dir):
    lines = (run_dir / "log.csv").read_text().splitlines()
    col = lines[0].split(",").index("loss")
    return [float(line.split(",")[col]) for line in lines[1:]]


def test_maskgit_trains_from_a_cache_resumes_and_needs_no_tokenizer_folder_afterwards(tokenizer_and_cache, tmp_path):
    root = tokenizer_and_cache
    args = [f"model.tokenizer={root / 'vq'}", f"data.name={root / 'cache'}", "model.num_classes=10",
            "train.log_every=1"] + TINY
    full = train(load_config("maskgit_fmnist", args + [f"train.out_dir={tmp_path / 'full'}"]))
    part = load_config("maskgit_fmnist", args + [f"train.out_dir={tmp_path / 'part'}"])
    from mimkit.train import resolve_tokenizer
    from mimkit.engine.trainer import Trainer
    from mimkit.registry import build_model

    # stop at 2, then resume through the CLI: the losses after step 2 equal the uninterrupted run
    config, ckpt = resolve_tokenizer(part)
    torch.manual_seed(config.train.seed)
    model = build_model(config.method, config.model)
    from mimkit.files.checkpoint_folder import load_weights
    load_weights(model.tokenizer, ckpt)
    Trainer(model, config, TokenCacheDataset(root / "cache")).fit(stop_at=2)
    assert main(["train", "maskgit_fmnist", *args, f"train.out_dir={tmp_path / 'part'}", "--resume"]) == 0
    assert losses(tmp_path / "part") == pytest.approx(losses(full), rel=1e-6)
    # a class-conditional sample grid at the last step: one row of 8 per class, 8 px cells x 2 + padding
    from PIL import Image
    picture = Image.open(full / "pictures" / "samples_step_00000004.png")
    assert picture.size == (8 * 18 + 2, 10 * 18 + 2)

    copy = tmp_path / "vq_copy"
    shutil.copytree(root / "vq", copy)
    tokenizer, _ = load_model(copy)
    saved, config = load_model(full)
    assert config.model.tokenizer_config["model"]["codebook_size"] == 16
    assert saved.tokenizer.fingerprint() == tokenizer.fingerprint()  # the tokenizer's weights travel along
    shutil.rmtree(copy)


def test_mage_c_trains_on_two_cached_views_and_on_two_augmented_images(tokenizer_and_cache, tmp_path):
    root = tokenizer_and_cache
    pairs = TokenCacheDataset(root / "cache", pairs=True)
    codes = torch.from_numpy(pairs.open_codes()[:].astype("int64"))  # (40 images, 3 views, h, w)
    assert pairs.view_names == ["identity", "hflip", "crop0"]
    # on an image whose 3 cached views hold 3 different code grids, a served grid names its view
    distinct = [i for i in range(40) if len({codes[i, k].numpy().tobytes() for k in range(3)}) == 3]
    assert len(distinct) >= 20
    torch.manual_seed(0)
    drawn = []
    for _ in range(10):
        batch = pairs.get_batch(torch.tensor(distinct))
        assert torch.equal(batch["labels"], pairs.labels[distinct])
        for row, i in enumerate(distinct):
            first, second = ([k for k in range(3) if torch.equal(codes[i, k], batch[key][row])]
                             for key in ("tokens", "tokens_2"))
            assert len(first) == len(second) == 1, "each served grid is one of the image's cached views"
            drawn.append((first[0], second[0]))
    assert all(a != b for a, b in drawn), "the two views of an image are two different cached views"
    # every ordered pair of different views occurs (330 draws, ~55 of each): both views are random
    assert set(drawn) == {(a, b) for a in range(3) for b in range(3) if a != b}
    common = [f"model.tokenizer={root / 'vq'}", "model.decoder_embed_dim=8", "model.decoder_depth=1",
              "model.decoder_num_heads=2", "model.projection_hidden_dim=16", "model.projection_dim=8"] + TINY
    assert main(["train", "magec_fmnist", *common, f"data.name={root / 'cache'}", f"train.out_dir={tmp_path / 'c'}"]) == 0
    assert main(["train", "magec_fmnist", *common, "data.name=digits", "data.image_size=8",
                 f"train.out_dir={tmp_path / 'i'}"]) == 0
    header = (tmp_path / "i" / "log.csv").read_text().splitlines()[0]
    assert "contrastive_loss" in header


def test_token_model_errors_name_the_fix(tokenizer_and_cache, tmp_path):
    root = tokenizer_and_cache
    with pytest.raises(ConfigError, match="model.tokenizer is not set"):
        train(load_config("maskgit_fmnist", ["model.tokenizer=", *TINY]))
    with pytest.raises(ConfigError, match="model.tokenizer: checkpoint .*nowhere does not exist"):
        train(load_config("maskgit_fmnist", [f"model.tokenizer={tmp_path / 'nowhere'}", *TINY]))
    other = VQGANConfig(**{**VQ.__dict__, "codebook_size": 8})
    save_tiny_checkpoint(tmp_path / "vq8", "vqgan", other)
    with pytest.raises(DataError, match="was made by tokenizer .* re-run `mimkit tokenize`"):
        train(load_config("maskgit_fmnist", [f"model.tokenizer={tmp_path / 'vq8'}", f"data.name={root / 'cache'}",
                                             *TINY, f"train.out_dir={tmp_path / 'x'}"]))
    with pytest.raises(DataError, match="two views per image need"):
        TokenCacheDataset(root / "cache", views="identity", pairs=True)


def test_eval_generation_reports_the_fid_of_the_same_samples(tokenizer_and_cache, tmp_path, capsys):
    from mimkit.eval.feature_network import FeatureNetwork
    from mimkit.eval.generation_report import generation_metrics
    from mimkit.generation import MaskedTokenSampler, generate
    from mimkit.methods.classifier import ClassifierConfig

    root = tokenizer_and_cache
    run = tmp_path / "maskgit"
    train(load_config("maskgit_fmnist", [f"model.tokenizer={root / 'vq'}", f"data.name={root / 'cache'}", *TINY,
                                         f"train.out_dir={run}"]))
    save_tiny_checkpoint(tmp_path / "cls", "classifier", ClassifierConfig(img_size=8, widths=(4, 8), num_classes=10))
    capsys.readouterr()
    assert main(["eval", "generation", str(run), "--feature-net", str(tmp_path / "cls"), "--data", "digits",
                 "--limit", "60", "--n", "20", "--steps", "1,3", "--batch-size", "10"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| 3 |")]
    model, _ = load_model(run)
    samples = generate(model, 20, torch.arange(20) % 10, sampler=MaskedTokenSampler(steps=3),
                       generator=torch.Generator().manual_seed(0), batch_size=10)
    real = build_dataset(DataConfig(name="digits", image_size=8, limit=60, split="test"), channels=1)
    real = real.get_batch(torch.arange(len(real)))["images"]
    net = FeatureNetwork.from_checkpoint(tmp_path / "cls")
    expected = generation_metrics(samples, real, net)["fid"]
    assert float(rows[0][3]) == pytest.approx(expected, abs=0.01)
