"""MAGE's tokenizer (LTH14/mage `vqgan.*`, the PyTorch port of MaskGIT's VQGAN) -> mimkit MaskGITVQGAN.

mimkit.tokenizers.maskgit_vqgan keeps the port's module names, so conversion is a strict copy:
every autoencoder key of the model must be in the file with the model's shape and every key of the
file must have a place (CheckpointError naming the keys otherwise). MAGE's files have no
discriminator: `loss.discriminator.*` keeps its init (encode/decode do not use it), and mimkit's
bookkeeping buffers are filled (the codebook counts as initialised: no k-means init on top).
The architecture is read back from the weights; the image size is not in them (256 for MAGE).

    model, report = maskgit_vqgan_from_mage(sd_without_the_vqgan_prefix)
"""
import torch

from ..errors import CheckpointError
from ..files.state_dicts import as_state_dict, count_numbered
from ..tokenizers.maskgit_vqgan import BOOKKEEPING, MaskGITVQGAN, MaskGITVQGANConfig
from .report import LoadReport, load_converted, report_converted

REQUIRED = ("encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_out.weight", "quantize.embedding.weight")


def maskgit_vqgan_config_from_mage(state_dict_or_path, img_size: int = 256, **overrides) -> MaskGITVQGANConfig:
    """The MaskGITVQGANConfig whose shapes match a MAGE `vqgan.*` state dict (prefix removed);
    `overrides` set any other field (losses, quantizer)."""
    sd, source = as_state_dict(state_dict_or_path)
    absent = [k for k in REQUIRED if k not in sd]
    if absent:
        raise CheckpointError(f"{source} is not a MAGE / MaskGIT VQGAN state dict: no {absent[0]} "
                              f"(first keys: {list(sd)[:5]})")
    if "quant_conv.weight" in sd or any(".attn" in k for k in sd):
        raise CheckpointError(f"{source} has quant_conv / attention: it is a taming VQGAN; convert it with "
                              f"taming-vqgan (mimkit.hub.taming)")
    base = sd["encoder.conv_in.weight"].shape[0]
    levels = count_numbered(sd, r"^encoder\.down\.(\d+)\.")
    blocks = count_numbered(sd, r"^encoder\.down\.0\.block\.(\d+)\.")
    mult = tuple(sd[f"encoder.down.{i}.block.{blocks - 1}.conv2.weight"].shape[0] // base for i in range(levels))
    fields = dict(img_size=img_size, in_chans=sd["encoder.conv_in.weight"].shape[1], base_channels=base,
                  channel_mult=mult, num_res_blocks=blocks, codebook_size=sd["quantize.embedding.weight"].shape[0],
                  code_dim=sd["quantize.embedding.weight"].shape[1])
    fields.update(overrides)
    return MaskGITVQGANConfig(**fields)


def load_mage_vqgan(model: MaskGITVQGAN, state_dict_or_path, *, strict: bool = True,
                    source: str | None = None) -> LoadReport:
    """Copy a MAGE `vqgan.*` state dict (prefix removed) or file into `model`: every encoder /
    decoder / codebook key with the model's shape (CheckpointError naming the key and both shapes),
    and with strict (default) no key without a place. `source` names the origin in errors."""
    sd, found = as_state_dict(state_dict_or_path)
    source = source or found
    own = model.state_dict()
    report = report_converted(sd, own, source, "build it with maskgit_vqgan_config_from_mage",
                              not_expected=BOOKKEEPING)
    disc = [k for k in report.missing if k.startswith("loss.")]
    report.missing = [k for k in report.missing if k not in disc]
    if disc:
        report.notes.append("no discriminator in the checkpoint: loss.discriminator kept at its init "
                            "(encode/decode are unaffected)")
    load_converted(model, sd, report, source, strict)
    with torch.no_grad():
        model.quantize.initialized.fill_(True)  # pretrained codes: no k-means init on top
    return report


def maskgit_vqgan_from_mage(state_dict_or_path, img_size: int = 256, *, strict: bool = True,
                            **config_overrides) -> tuple[MaskGITVQGAN, LoadReport]:
    """Build the MaskGITVQGAN a MAGE `vqgan.*` state dict describes and load it: (model in eval mode, report)."""
    sd, source = as_state_dict(state_dict_or_path)
    model = MaskGITVQGAN(maskgit_vqgan_config_from_mage(sd, img_size, **config_overrides))
    report = load_mage_vqgan(model, sd, strict=strict, source=source)
    return model.eval(), report
