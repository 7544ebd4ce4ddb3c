"""What the masked-token reproductions (maskgit-schedules, mage-variable-ratio) share: a small VQGAN
tokenizer, the token cache of the Fashion-MNIST train split made by it, a classifier whose
features FID is measured in, and the real side of FID (test images at the tokenizer's 32 px and
their features), computed once per reproduction.

The three trained things live in work/shared/, so the second reproduction reuses them:

    prereq = prepare(ctx)                                   # trains or reuses; logs the wall time of each
    bench = FidBench.build(ctx, prereq.feature_net, token_model, test_limit=10000)
    row = bench.score(model, MaskedTokenSampler(steps=8), n=1000)   # {"fid", "precision", "recall", ...}

A token cache is reused when its folder holds a request file equal to the one this code would write
(tokenizer fingerprint, views, image count, source) and the cache itself opens (manifest, sizes,
checksums, fingerprint); otherwise it is rebuilt. Its folder is named after the tokenizer's
fingerprint, so a retrained tokenizer gives the token models another `data.name` and ctx.train
retrains them instead of reusing a model fitted to the old codes.
"""
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..registry import load_model
from ..errors import DataError
from ..eval.feature_network import FeatureNetwork
from ..eval.features import dataset_tensors, labelled_batches
from ..eval.frechet import feature_statistics, frechet_distance
from ..eval.generation_report import sample_metrics
from ..tokenizers.cache import (FORMAT_VERSION, TokenCacheDataset, build_token_cache, read_manifest,
                                tokenizer_fingerprint)
from .context import REQUEST_FILE, ReproContext, code_fingerprint, timed
from .stages import stage_info, stage_text, timed_train

# vqgan_fmnist scaled down: base 8 channels (16 in the preset) and no GAN phase (disc_start past the
# end): ~0.25 s per step of 64 images on one thread, ~24 dB test PSNR after 600 steps (27 dB for the
# preset's 2000 steps at base 16). classifier_fmnist: ~1200 images/s; 800 steps ~ 1.7 epochs.
FULL = {"vqgan_steps": 600, "vqgan_base": 8, "classifier_steps": 800, "cache_images": 0,
        "cache_views": ("identity", "hflip")}
QUICK = {"vqgan_steps": 30, "vqgan_base": 8, "classifier_steps": 30, "cache_images": 2000,
         "cache_views": ("identity", "hflip")}
CACHE_SOURCE = "fashion-mnist:train"  # how `mimkit tokenize` names it; FID's real images are found through it


@dataclass
class TokenPrerequisites:
    """Run folders of the tokenizer and the feature network, the token cache folder, and the wall
    minutes each stage took (with whether it was reused)."""

    tokenizer: Path
    feature_net: Path
    cache: Path
    sizes: dict
    stages: dict = field(default_factory=dict)  # stage -> `stage_info`

    def token_overrides(self) -> list[str]:
        """The overrides that point a masked token model (maskgit/mage preset) at these."""
        return [f"model.tokenizer={self.tokenizer}", f"data.name={self.cache}"]

    def describe(self) -> str:
        """A markdown paragraph on how the prerequisites were made and how long each took."""
        s, took = self.sizes, lambda stage: stage_text(self.stages[stage])
        images = "all 60000" if not s["cache_images"] else f"a seeded class-stratified subset of {s['cache_images']}"
        manifest = read_manifest(self.cache)
        (h, w), codes = manifest["grid_size"], manifest["codebook_size"]
        return (f"Shared prerequisites (in `work/shared`, reused by maskgit-schedules and mage-variable-ratio): "
                f"tokenizer `mimkit train vqgan_fmnist model.base_channels={s['vqgan_base']} model.norm_groups=4 "
                f"model.disc_start={s['vqgan_steps'] + 1} train.steps={s['vqgan_steps']}` (32 px grey, {h}x{w} codes "
                f"from {codes}, no GAN phase; {took('tokenizer')}); token cache of {images} train images x "
                f"{len(s['cache_views'])} views ({', '.join(s['cache_views'])}) ({took('cache')}); feature network "
                f"for FID `mimkit train classifier_fmnist train.steps={s['classifier_steps']}` "
                f"({took('feature_net')}).")


def three_way(good_gap: float, margin: float) -> bool | None:
    """A verdict from a measured gap (positive = the claimed direction): True beyond +margin, False
    beyond -margin, None (inconclusive: within the noise) in between."""
    return True if good_gap > margin else False if good_gap < -margin else None


def image_side(tokenizer) -> int:
    """The side in pixels of the (square) images a tokenizer takes."""
    size = tokenizer.config.img_size
    return size if isinstance(size, int) else size[0]


def cache_request(tokenizer, views, images: int) -> dict:
    """What a token cache is made from: the tokenizer's fingerprint, the views, the image count
    (0 = all; a seeded subset stratified by class, not the first images) and the source, plus the
    cache format version and the code that made it."""
    return {"tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "views": list(views), "images": images,
            "subset": "seeded-stratified", "source": CACHE_SOURCE, "format_version": FORMAT_VERSION,
            "code": code_fingerprint()}


def cache_is_current(cache_dir: Path, request: dict) -> bool:
    """True when cache_dir holds a complete cache made for exactly `request` (see the module doc)."""
    file = Path(cache_dir) / REQUEST_FILE
    try:
        if json.loads(file.read_text()) != request:
            return False
        TokenCacheDataset(cache_dir, expected_fingerprint=request["tokenizer_fingerprint"])
    except (OSError, ValueError, DataError):  # missing / unreadable request, incomplete or foreign cache
        return False
    return True


def ensure_token_cache(ctx: ReproContext, tokenizer_run: Path, views, images: int) -> tuple[Path, dict]:
    """The token cache of a seeded stratified subset of `images` (0 = all) train images in `views`, built by the
    tokenizer of `tokenizer_run` into work/shared/tokens_<fingerprint> unless already there ->
    (folder, its `stage_info`). The build time is kept like a run's training time (ctx.train_minutes)."""
    started = time.time()
    tokenizer, _ = load_model(tokenizer_run)
    request = cache_request(tokenizer, views, images)
    out = ctx.run_dir(f"tokens_{request['tokenizer_fingerprint'][:12]}", shared=True)
    reused = cache_is_current(out, request)
    if reused:
        ctx.log(f"reusing token cache {out}")
        ctx.reused.append(out)  # counted like a reused run: its making time is not in this invocation's
    else:
        ctx.log(f"building token cache {out}")
        train_set = ctx.split("train", images, image_side(tokenizer))
        timed(out, lambda: build_token_cache(tokenizer, train_set, out, views=views, progress=ctx.progress,
                                             source=CACHE_SOURCE, overwrite=True))
        (out / REQUEST_FILE).write_text(json.dumps(request, indent=1))
    return out, stage_info(ctx, out, started, reused)


def prepare(ctx: ReproContext) -> TokenPrerequisites:
    """Train (or reuse) the tokenizer and the feature network and build (or reuse) the token cache."""
    s = QUICK if ctx.quick else FULL
    steps = s["vqgan_steps"]
    tokenizer, vq_stage = timed_train(ctx, "vqgan_fmnist", [
        f"train.steps={steps}", f"model.base_channels={s['vqgan_base']}", "model.norm_groups=4",
        f"model.disc_start={steps + 1}", f"optim.warmup_steps={max(steps // 6, 1)}", f"train.ckpt_every={steps}",
        "train.picture_every=0"], "vqgan_tokens", shared=True)
    cache, cache_stage = ensure_token_cache(ctx, tokenizer, s["cache_views"], s["cache_images"])
    steps = s["classifier_steps"]
    net, net_stage = timed_train(ctx, "classifier_fmnist", [
        f"train.steps={steps}", f"optim.warmup_steps={max(steps // 20, 1)}", f"train.ckpt_every={steps}"],
        "classifier_fid", shared=True)
    prereq = TokenPrerequisites(tokenizer, net, cache, s, {"tokenizer": vq_stage, "cache": cache_stage,
                                                            "feature_net": net_stage})
    ctx.log("prerequisites: " + ", ".join(f"{k} {v['minutes']:.1f} min" + (" (reused)" if v["reused"] else "")
                                          for k, v in prereq.stages.items()))
    return prereq


@dataclass
class FidBench:
    """The real side of FID, once: the feature network, real test images at the token model's image
    size (N, C, H, W) with labels (N,), their features (N, D), and the network's top-1 (%) on them."""

    net: FeatureNetwork
    real: torch.Tensor
    real_labels: torch.Tensor
    real_features: torch.Tensor
    classifier_top1: float

    @classmethod
    def build(cls, ctx: ReproContext, feature_run: Path, token_model, test_limit: int = 0) -> "FidBench":
        """The Fashion-MNIST test split (a seeded class-stratified subset of test_limit images, 0 = all:
        the images the token cache was made from, CACHE_SOURCE) at the size of token_model's tokenizer."""
        net = FeatureNetwork.from_checkpoint(feature_run)
        real, labels = dataset_tensors(ctx.split("test", test_limit, image_side(token_model.tokenizer)))
        feats, logits = net.features_and_logits(real)
        top1 = float((logits.argmax(1) == labels).double().mean() * 100)
        return cls(net, real, labels, feats, top1)

    def score(self, model, sampler, n: int, seed: int = 0, batch_size: int = 500) -> dict:
        """Sample n images (balanced over the classes of a class-conditional model) with `sampler`
        -> `mimkit eval generation`'s row: fid, precision, recall, inception_score, images_per_s, ..."""
        return sample_metrics(model, sampler, self.net, self.real, self.real_labels, n=n, seed=seed,
                              batch_size=batch_size, real_features=self.real_features)

    def real_fid(self, ctx: ReproContext, n: int) -> float:
        """FID of n real train images (a seeded class-stratified subset, at the same size) against the
        real test set: the floor a perfect generator reaches with n samples (FID is biased upwards at small n)."""
        train_set = ctx.split("train", n, self.real.shape[-1])
        images = next(iter(labelled_batches(train_set, n)))["images"]
        return frechet_distance(*feature_statistics(self.net.features(images)),
                                *feature_statistics(self.real_features))

    def describe(self, n: int, floor: float | None = None) -> str:
        """The FID setup in a sentence or two (with the real-vs-real floor when given)."""
        floor_text = "" if floor is None else (f" {n} real train images score FID {floor:.2f} against the same test "
                                               f"set: the floor at this sample count.")
        return (f"FID, precision and recall (k = 3) of {n} samples against the {len(self.real)} Fashion-MNIST "
                f"test images at {self.real.shape[-1]} px, in the {self.real_features.shape[1]}-d penultimate features "
                f"of the classifier above ({self.classifier_top1:.1f}% top-1 on those images; its FIDs are on its "
                f"own scale, not Inception's).{floor_text}")
