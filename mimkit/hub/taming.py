"""taming-transformers VQGAN checkpoints -> mimkit VQGAN.

mimkit's VQGAN keeps taming's module names (encoder.down.N.block.M.norm1, encoder.mid.attn_1.q,
quant_conv, quantize.embedding.weight, post_quant_conv, decoder.up.N.upsample.conv,
loss.discriminator.main.N, ...), so conversion is: unwrap the Lightning file ('state_dict'),
set aside the tensors that only taming's training used (the LPIPS network
`loss.perceptual_loss.*`, `loss.logvar`, EMA statistics `quantize.embedding.{cluster_size,embed_avg}`),
check every shape, and fill mimkit's bookkeeping buffers (step counters; the codebook counts as
initialised, so no k-means init overwrites it). The architecture is read back from the weights;
only the image size (which fixes where attention sits) is not in them: pass img_size (256 for
the released ImageNet/MAGE tokenizers).

    model, report = vqgan_from_taming("vqgan_imagenet_f16_1024/ckpts/last.ckpt")
    print(report)            # loaded / missing / unexpected / notes
"""
import re

import torch

from ..errors import CheckpointError
from ..tokenizers.vqgan import BOOKKEEPING, VQGAN, VQGANConfig
from ..files.state_dicts import as_state_dict, count_numbered
from .report import LoadReport, load_converted, report_converted

# Tensors of a taming checkpoint that belong to its training only: recognised and set aside.
TRAINING_ONLY = (r"^loss\.perceptual_loss\.", r"^loss\.logvar$", r"^quantize\.embedding\.(cluster_size|embed_avg)$",
                 r"^quantize\.used$")


def split_taming_state_dict(sd: dict) -> tuple[dict, list[str]]:
    """taming keys -> (mimkit keys, the training-only keys set aside)."""
    kept, dropped = {}, []
    for key, value in sd.items():
        if any(re.search(p, key) for p in TRAINING_ONLY):
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


def vqgan_config_from_taming(state_dict_or_path, img_size: int = 256, **overrides) -> VQGANConfig:
    """The VQGANConfig whose shapes match a taming state dict (architecture from the weights,
    attention resolutions from img_size); `overrides` set any other field (losses, quantizer)."""
    sd, source = as_state_dict(state_dict_or_path)
    required = ("encoder.conv_in.weight", "encoder.conv_out.weight", "quant_conv.weight", "quantize.embedding.weight")
    absent = [k for k in required if k not in sd]
    if absent:
        raise CheckpointError(f"{source} is not a taming-transformers VQGAN checkpoint: no {absent[0]} "
                              f"(first keys: {list(sd)[:5]})")
    base = sd["encoder.conv_in.weight"].shape[0]
    levels = count_numbered(sd, r"^encoder\.down\.(\d+)\.")
    mult = []
    for i in range(levels):
        blocks = count_numbered(sd, rf"^encoder\.down\.{i}\.block\.(\d+)\.")
        mult.append(sd[f"encoder.down.{i}.block.{blocks - 1}.conv2.weight"].shape[0] // base)
    attn = [img_size // 2**i for i in range(levels) if any(k.startswith(f"encoder.down.{i}.attn.") for k in sd)]
    disc_layers = max(sum(1 for k in sd if re.match(r"^loss\.discriminator\.main\.\d+\.running_mean$", k)), 1)
    fields = dict(img_size=img_size, in_chans=sd["encoder.conv_in.weight"].shape[1], base_channels=base,
                  channel_mult=tuple(mult), num_res_blocks=count_numbered(sd, r"^encoder\.down\.0\.block\.(\d+)\."),
                  attn_resolutions=tuple(attn), z_channels=sd["encoder.conv_out.weight"].shape[0],
                  codebook_size=sd["quantize.embedding.weight"].shape[0],
                  code_dim=sd["quantize.embedding.weight"].shape[1])
    if "loss.discriminator.main.0.weight" in sd:
        fields.update(disc_channels=sd["loss.discriminator.main.0.weight"].shape[0], disc_layers=disc_layers)
    fields.update(overrides)
    return VQGANConfig(**fields)


def load_taming_vqgan(model: VQGAN, state_dict_or_path, *, strict: bool = True) -> LoadReport:
    """Copy a taming VQGAN state dict (or a file: .ckpt/.pth/.safetensors) into `model`.

    Every autoencoder key must be present with the model's shape (else CheckpointError naming the
    key and both shapes). A checkpoint without discriminator (tokenizer-only releases) keeps the
    model's discriminator and says so in the notes. strict=True (default) also refuses keys that
    are neither mimkit keys nor known taming training-only tensors.
    """
    sd, source = as_state_dict(state_dict_or_path)
    kept, dropped = split_taming_state_dict(sd)
    own = model.state_dict()
    report = report_converted(kept, own, source, "build it with vqgan_config_from_taming (check img_size for the "
                              "attention resolutions)", not_expected=BOOKKEEPING)
    disc_missing = [k for k in report.missing if k.startswith("loss.discriminator.")]
    report.missing = [k for k in report.missing if k not in disc_missing]
    if dropped:
        report.notes.append(f"{len(dropped)} taming training-only tensors set aside (LPIPS network, logvar, "
                            f"EMA statistics)")
    if disc_missing:
        report.notes.append("no discriminator in the checkpoint: loss.discriminator kept at its init "
                            "(encode/decode are unaffected)")
    load_converted(model, kept, report, source, strict)
    with torch.no_grad():
        model.quantize.initialized.fill_(True)  # pretrained codes: no k-means init on top
    return report


def vqgan_from_taming(state_dict_or_path, img_size: int = 256, *, strict: bool = True,
                      **config_overrides) -> tuple[VQGAN, LoadReport]:
    """Build the VQGAN a taming checkpoint describes and load it: (model in eval mode, report)."""
    sd, source = as_state_dict(state_dict_or_path)
    model = VQGAN(vqgan_config_from_taming(sd, img_size, **config_overrides))
    report = load_taming_vqgan(model, sd, strict=strict)
    return model.eval(), report
