"""VQ-KD (BEiT v2, Peng et al. 2022): the semantic visual tokenizer learned by distilling a teacher.

A ViT encoder maps the image (shifted from [0, 1] to [-1, 1], as unilm's "default" pre-processing)
to one vector per patch; `encode_task_layer` (Linear -> Tanh -> Linear) projects it to a small code
space (32-d); `quantize` (mimkit.nn.VectorQuantizer, cosine lookup, EMA codebook, k-means init,
dead-code restart) replaces it by the nearest l2-normalised code; a small transformer `decoder` on
the code grid and `decode_task_layer` (Linear -> Tanh -> Linear) predict the frozen teacher's
feature of every patch. Loss = 1 - cosine(prediction, teacher feature) averaged over the patches
+ beta * commitment MSE(z, sg[z_q]) on the l2-normalised vectors (beta = 1). The codebook learns
by EMA only, never by gradient.

    model = VQKD(VQKDConfig(img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=4,
                            num_heads=4, teacher_dim=128))
    model.attach_teacher(load_teacher("runs/mae_teacher"))   # training only
    out = model(images)          # Output-like: loss, logs (cosine, commitment, usage, perplexity, ...)
    codes = model.encode(images) # (N, C, H, W) in [0, 1] -> (N, h, w) int64; no teacher needed

The teacher lives outside the module tree (like VQGAN's perceptual network): it is not in the
state dict or the checkpoint, never moves with .to() / .train(), and a trained VQ-KD encodes
without it. Teacher features are NOT l2-normalised beforehand: the cosine loss is scale-invariant,
so this is the paper's loss either way (unilm normalises both sides inside the loss).

Attribute names are unilm's (encoder, encode_task_layer, quantize.embedding.weight, decoder,
decode_task_layer; encoder/decoder = patch_embed.proj, cls_token, pos_embed, blocks.N.*, with the
final LayerNorm named `norm` (unilm: fc_norm)), so `mimkit.hub.vqkd_unilm` converts official
checkpoints with a handful of renames.
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn import Block, Linear, PatchEmbed, sincos_2d, to_pair
from ..nn.init import beit_normal_, init_vit_weights_, rescale_residual_outputs_
from .vq_tokenizer import VQConfig, VQTokenizer, vq_logs


@dataclass
class VQKDConfig(VQConfig):
    """Architecture, quantizer and teacher of a VQ-KD tokenizer (defaults: the paper's ViT-B/16).

    Encoder: a ViT of embed_dim x depth (num_heads) on patch_size patches of img_size images with
    in_chans channels. Decoder: decoder_depth blocks of decoder_embed_dim on the (h, w) code grid.
    pos_embed: fixed 2-D sin-cos tables, trained further when learned_pos_embed (unilm learns them).
    Quantizer (VQConfig's fields): codebook_size codes of code_dim, always a cosine lookup (l2_codes)
    and an EMA codebook (codebook_update) of decay ema_decay, k-means init (kmeans_iters) on the first
    batch, restart of codes unused for restart_after training steps (0 = never), usage counted over
    usage_window steps; beta = commitment weight.
    Teacher: `teacher` = a mimkit checkpoint / run folder (e.g. an MAE), or a directory of a
    Hugging Face vision model; teacher_dim = its feature size D (0 = read from the teacher when
    training starts; a saved config has it, so the tokenizer loads without its teacher).
    """

    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    decoder_embed_dim: int = 768
    decoder_depth: int = 3
    decoder_num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    learned_pos_embed: bool = True
    codebook_size: int = 8192
    code_dim: int = 32
    beta: float = 1.0
    kmeans_init: bool = True
    teacher: str = ""
    teacher_dim: int = 0
    attn_impl: str = "auto"

    # BEiT v2's quantizer: not fields (unilm has no other)
    l2_codes = True
    codebook_update = "ema"

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.img_size // self.patch_size, self.img_size // self.patch_size

    def validate(self, prefix: str = "model") -> None:
        if self.img_size <= 0 or self.patch_size <= 0 or self.img_size % self.patch_size:
            raise ConfigError(f"{prefix}.img_size {self.img_size} must be positive and divisible by "
                              f"{prefix}.patch_size {self.patch_size}")
        for dim, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
            d, h = getattr(self, dim), getattr(self, heads)
            if d <= 0 or h <= 0 or d % h or d % 4:
                raise ConfigError(f"{prefix}.{dim}={d} must be positive, divisible by 4 and by {prefix}.{heads}={h}")
        self.check_minimum(prefix, 1, ("depth", "decoder_depth"))
        self.check_minimum(prefix, 0, ("teacher_dim",))
        super().validate(prefix)


@dataclass
class VQKDOutput:
    """What forward returns (the fields of mimkit.methods.Output, plus): pred (N, L, D) the
    decoder's predicted teacher features; target (N, L, D) the teacher's; codes (N, h, w) int64."""

    loss: torch.Tensor
    logs: dict = field(default_factory=dict)
    pred: torch.Tensor | None = None
    target: torch.Tensor | None = None
    codes: torch.Tensor | None = None


def task_layer(dim: int, out_dim: int) -> nn.Sequential:
    """unilm's task head Linear(dim, dim) -> Tanh -> Linear(dim, out_dim); keys .0.* and .2.*."""
    return nn.Sequential(Linear(dim, dim), nn.Tanh(), Linear(dim, out_dim))


class PatchTransformer(nn.Module):
    """A ViT returning its normed patch tokens: (N, C, H, W) -> (N, L, D), L = (H/p) * (W/p).

    Used twice, as in unilm: the encoder on image patches, the decoder on the code grid
    (patch_size 1, in_chans = code_dim). Keys: patch_embed.proj, cls_token, pos_embed (1, 1+L, D),
    blocks.N.*, norm.
    """

    def __init__(self, img_size, patch_size: int, in_chans: int, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, norm_eps: float, learned_pos_embed: bool, attn_impl: str):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(sincos_2d(dim, self.patch_embed.grid_size, cls_token=True)[None],
                                      requires_grad=learned_pos_embed)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, norm_eps=norm_eps, attn_impl=attn_impl)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def reset_parameters(self) -> None:
        """BEiT's init: N(0, 0.02) (truncated) linears and cls token, zero biases, unit LayerNorms, and
        the output projections of block i scaled by 1 / sqrt(2 i) (unilm's fix_init_weight)."""
        beit_normal_(self.cls_token)
        init_vit_weights_(self, beit_normal_)
        rescale_residual_outputs_(self.blocks, range(1, len(self.blocks) + 1))

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x)
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1) + self.pos_embed
        for block in self.blocks:
            h = block(h)
        return self.norm(h[:, 1:])


class VQKD(VQTokenizer):
    """Vector-quantised knowledge distillation tokenizer; `forward(images)` is the training loss."""

    method_name, config_class = "vqkd", VQKDConfig
    distils_teacher = True
    # the weights that decide the codes (not the decoder or the teacher)
    code_path = ("encoder.", "encode_task_layer.", "quantize.embedding.weight")

    def __init__(self, config: VQKDConfig):
        super().__init__(config)
        c = config
        self.encoder = PatchTransformer(c.img_size, c.patch_size, c.in_chans, c.embed_dim, c.depth, c.num_heads,
                                        c.mlp_ratio, c.norm_eps, c.learned_pos_embed, c.attn_impl)
        self.encode_task_layer = task_layer(c.embed_dim, c.code_dim)
        self.quantize = self.build_quantizer()
        self.decoder = PatchTransformer(c.grid_size, 1, c.code_dim, c.decoder_embed_dim, c.decoder_depth,
                                        c.decoder_num_heads, c.mlp_ratio, c.norm_eps, c.learned_pos_embed,
                                        c.attn_impl)
        # without a known teacher size the head is built for D = decoder width; attach_teacher checks it
        self.decode_task_layer = task_layer(c.decoder_embed_dim, c.teacher_dim or c.decoder_embed_dim)
        self.encoder.reset_parameters()
        self.decoder.reset_parameters()
        for layer in (self.encode_task_layer, self.decode_task_layer):
            init_vit_weights_(layer, beit_normal_)

    # ------------------------------------------------------------------ properties
    @property
    def feature_dim(self) -> int:
        """D of the predicted teacher features."""
        return self.decode_task_layer[2].out_features

    def no_weight_decay(self) -> set[str]:
        """Names the optimizer must not decay (unilm's list; the codebook has no gradient anyway)."""
        return super().no_weight_decay() | {"encoder.cls_token", "encoder.pos_embed", "decoder.cls_token",
                                            "decoder.pos_embed"}

    # ------------------------------------------------------------------ teacher
    def attach_teacher(self, teacher) -> None:
        """Use `teacher` (images (N, C, H, W) in [0, 1] -> features (N, L, D), see
        mimkit.tokenizers.teacher) as the distillation target. It is frozen and put in eval mode.
        ConfigError when its patch grid or feature size does not fit this tokenizer."""
        from .teacher import as_teacher

        teacher = as_teacher(teacher)
        (h, w), c = self.grid_size, self.config
        length, dim = teacher.output_shape(c.in_chans, to_pair(c.img_size))
        if teacher.grid_size is not None and tuple(teacher.grid_size) != (h, w) or length != h * w:
            grid = "x".join(map(str, teacher.grid_size)) if teacher.grid_size else f"{length} patches"
            raise ConfigError(f"the teacher {teacher.name} gives a {grid} feature grid but the tokenizer's grid is "
                              f"{h}x{w} (model.img_size {c.img_size} / model.patch_size {c.patch_size}); "
                              f"set model.patch_size so both grids match")
        if dim != self.feature_dim:
            raise ConfigError(f"the teacher {teacher.name} gives {dim}-d features but this tokenizer predicts "
                              f"{self.feature_dim}-d ones; set model.teacher_dim={dim} (or 0 to read it from the teacher)")
        self.external["teacher"] = teacher

    @property
    def teacher(self):
        """The attached teacher, or None."""
        return self.external.get("teacher")

    def teacher_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1] -> the teacher's features (N, L, D), float32, no gradient."""
        teacher = self.teacher
        if teacher is None:
            raise ConfigError("VQ-KD needs its teacher here: set model.teacher to a mimkit run folder (e.g. "
                              "runs/mae_teacher) or a Hugging Face model directory, or call model.attach_teacher(...)")
        teacher.to(images.device)
        return teacher(images)

    # ------------------------------------------------------------------ stages
    def check_images(self, images: torch.Tensor) -> None:
        c = self.config
        if images.ndim != 4 or tuple(images.shape[1:]) != (c.in_chans, c.img_size, c.img_size):
            raise ValueError(f"expected images (N, {c.in_chans}, {c.img_size}, {c.img_size}), got {tuple(images.shape)}")

    def vectors(self, x: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [-1, 1] -> pre-quantisation vectors (N, h, w, code_dim)."""
        z = self.encode_task_layer(self.encoder(x))  # (N, L, code_dim)
        return z.view(z.shape[0], *self.grid_size, -1)

    def decode_vectors(self, quantized: torch.Tensor) -> torch.Tensor:
        """quantised vectors (N, h, w, code_dim) -> predicted teacher features (N, L, D)."""
        return self.decode_task_layer(self.decoder(quantized.permute(0, 3, 1, 2)))

    def features_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (N, h, w) int64 -> predicted teacher features (N, L, D) (the codes' l2-normalised vectors
        through the decoder)."""
        return self.decode_codes(codes)

    # ------------------------------------------------------------------ training
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> VQKDOutput:
        """images (N, C, H, W) in [0, 1] (labels ignored) -> VQKDOutput with loss and logs: loss,
        rec_loss (1 - cosine), cosine, commitment, usage, perplexity, restarted."""
        with torch.no_grad():
            target = self.teacher_features(images)
        q = self.quantize(self.encode_features(images))
        pred = self.decode_vectors(q.quantized)
        cosine = F.cosine_similarity(pred.float(), target.float(), dim=-1).mean()  # over N and L
        rec_loss = 1 - cosine
        loss = rec_loss + q.loss  # q.loss = beta * commitment (EMA codebook: no codebook term)
        logs = vq_logs(q, loss=loss, rec_loss=rec_loss, cosine=cosine)
        return VQKDOutput(loss=loss, logs=logs, pred=pred, target=target, codes=q.codes)

    # ------------------------------------------------------------------ downstream
    def fingerprint_tag(self) -> str:
        return f"p{self.config.patch_size}:img{self.config.img_size}"


# ------------------------------------------------------------------------------ presets
def paper_recipe() -> dict:
    """BEiT v2's VQ-KD: 224 px, ViT-B/16 encoder, 8192 x 32-d codes, 3-layer decoder, 100 epochs at
    batch 512 (ImageNet-1k), AdamW betas (0.9, 0.99), wd 1e-4, lr 5e-5, 10 warmup epochs. The teacher
    (CLIP ViT-B/16 or DINO as a local Hugging Face directory) must be given: model.teacher=DIR."""
    steps_per_epoch = 1_281_167 // 512
    return {
        "method": "vqkd",
        "model": {"img_size": 224, "patch_size": 16, "in_chans": 3, "embed_dim": 768, "depth": 12, "num_heads": 12,
                  "decoder_embed_dim": 768, "decoder_depth": 3, "decoder_num_heads": 12, "codebook_size": 8192,
                  "code_dim": 32, "beta": 1.0, "ema_decay": 0.99, "kmeans_init": True, "learned_pos_embed": True},
        "data": {"name": "imagenet/train", "image_size": 224, "crop_scale": [0.08, 1.0], "num_workers": 8},
        "optim": {"lr": 5e-5, "weight_decay": 1e-4, "betas": [0.9, 0.99], "warmup_steps": 10 * steps_per_epoch},
        "train": {"steps": 100 * steps_per_epoch, "batch_size": 64, "accum_steps": 8, "ckpt_every": 5000},
    }


def fmnist_recipe(steps: int = 800, **model) -> dict:
    """Fashion-MNIST 28 px grey, patch 4 -> 7x7 codes, a 128-d x 4 encoder, 1 decoder block and 512
    codes of 32-d, distilling the MAE of `mimkit train mae_demo_fmnist --out runs/mae_teacher`
    (its normed patch tokens, 128-d on the same 7x7 grid); ~15 min on a shared 2-core CPU.
    Dead codes restart after 50 steps: that is what undoes the early collapse (measured: the
    per-position mean of the MAE's features alone scores cosine 0.79, so the decoder first learns
    the positions and the batch perplexity falls to 4-16 codes until the restarts re-seed the codebook;
    without restarts 47.7% of the codes are used on the test split, with them 100%)."""
    base = {"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 128, "depth": 4, "num_heads": 4,
            "decoder_embed_dim": 128, "decoder_depth": 1, "decoder_num_heads": 4, "codebook_size": 512,
            "code_dim": 32, "beta": 1.0, "ema_decay": 0.99, "kmeans_init": True, "restart_after": 50,
            "usage_window": 50, "learned_pos_embed": False, "teacher": "runs/mae_teacher"}
    base.update(model)
    return {
        "method": "vqkd",
        "model": base,
        "data": {"name": "fashion-mnist", "image_size": 28, "augment": False},
        "optim": {"lr": 1e-3, "min_lr": 1e-5, "weight_decay": 1e-4, "betas": [0.9, 0.99], "warmup_steps": 50},
        "train": {"steps": steps, "batch_size": 32, "ckpt_every": max(steps // 4, 1), "picture_every": 0,
                  "log_every": 25},
    }


PRESETS = {
    "vqkd_vit_base_clip": paper_recipe(),
    "vqkd_fmnist": fmnist_recipe(),
}

# one line per preset, shown by `mimkit presets` and the table of docs/presets.md (tests/test_presets.py
# fails for a preset without one)
DESCRIPTIONS = {
    "vqkd_vit_base_clip": (
        "BEiT v2's VQ-KD tokenizer: 32-d codes, 3-block decoder, 100 epochs at batch 512 on ImageNet-1k; give the "
        "teacher (a CLIP ViT-B/16 or DINO folder) as model.teacher"),
    "vqkd_fmnist": (
        "CPU VQ-KD on Fashion-MNIST distilling mae_demo_fmnist (runs/mae_teacher), 800 steps of 32; measured "
        "teacher cosine 0.960, 100% code usage; beitv2_fmnist's tokenizer (runs/vqkd_fmnist)"),
}
