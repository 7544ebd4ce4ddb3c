"""Evaluation of an image tokenizer on a dataset: reconstruction PSNR and codebook usage.

Works with any model that has `encode(images) -> codes (N, h, w)` and `codebook_size`; PSNR when
it also has `decode(codes) -> images` in [0, 1] (VQGAN); the teacher cosine when it has a `teacher`
attached and `features_from_codes(codes) -> (N, L, D)` (VQ-KD).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..nn.device import model_device
from .features import labelled_batches
from .psnr import psnr


@dataclass
class TokenizerReport:
    """psnr: mean over images of the per-image PSNR (dB) of decode(encode(x)) vs x (None without
    decode); usage: fraction of the codebook used at least once over the dataset; perplexity:
    exp(entropy) of the dataset's code histogram (codebook_size = perfectly even use);
    teacher_cosine: mean over images and patches of cosine(features_from_codes(encode(x)),
    teacher(x)) (None without a teacher)."""

    images: int
    psnr: float | None
    usage: float
    perplexity: float
    codebook_size: int
    grid_size: tuple[int, int]
    teacher_cosine: float | None = None

    def format(self) -> str:
        h, w = self.grid_size
        return (f"images       {self.images}\n"
                f"tokens       {h}x{w} per image, codebook {self.codebook_size}\n"
                + (f"PSNR         {self.psnr:.2f} dB\n" if self.psnr is not None else "")
                + (f"teacher cos  {self.teacher_cosine:.4f}\n" if self.teacher_cosine is not None else "")
                + f"usage        {100 * self.usage:.1f}% of codes ({round(self.usage * self.codebook_size)} "
                f"of {self.codebook_size})\n"
                f"perplexity   {self.perplexity:.1f}")


@torch.no_grad()
def evaluate_tokenizer(model, dataset, batch_size: int = 256, progress: bool = False) -> TokenizerReport:
    """PSNR / teacher cosine / codebook usage / perplexity of `model` over every image of `dataset`
    (in eval mode; the model's train flag is restored afterwards)."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    counts = torch.zeros(model.codebook_size, dtype=torch.float64)
    has_decode = hasattr(model, "decode")
    has_teacher = getattr(model, "teacher", None) is not None and hasattr(model, "features_from_codes")
    total_psnr, total_cos, n = 0.0, 0.0, 0
    try:
        batches = labelled_batches(dataset, batch_size)
        for batch in tqdm(batches, total=math.ceil(len(dataset) / batch_size), disable=not progress,
                          desc="eval tokenizer", unit="batch"):
            images = batch["images"].to(device)
            codes = model.encode(images)
            counts += torch.bincount(codes.flatten().cpu(), minlength=model.codebook_size).double()
            if has_decode:
                total_psnr += float(psnr(model.decode(codes), images).clamp_max(100.0).sum())
            if has_teacher:
                cos = F.cosine_similarity(model.features_from_codes(codes), model.teacher_features(images), dim=-1)
                total_cos += float(cos.mean(dim=1).sum())
            n += images.shape[0]
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("the dataset is empty")
    p = counts / counts.sum()
    perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    return TokenizerReport(images=n, psnr=total_psnr / n if has_decode else None,
                           usage=float((counts > 0).double().mean()), perplexity=perplexity,
                           codebook_size=model.codebook_size, grid_size=tuple(model.grid_size),
                           teacher_cosine=total_cos / n if has_teacher else None)
