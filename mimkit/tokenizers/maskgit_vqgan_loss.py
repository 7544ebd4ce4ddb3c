"""The MaskGIT tokenizer's training objective (maskgit/configs/vqgan_config.py weights; the loss
functions of maskgit/libml/losses.py) as ONE scalar whose single backward trains both players:

    total = mean (x - x_hat)^2                               (L2 reconstruction, [0, 1] images)
          + perceptual_weight * LPIPS(x, x_hat)             (0.1; see below)
          + codebook_weight * quantizer loss                (commitment 0.25 + codebook term)
          + entropy_weight * entropy_loss(-distances / T)   (0.1, T = 0.01)
          + disc_on * g_weight * softplus(-D_sg(x_hat))     (non-saturating generator, 0.1, fixed)
          + disc_on * (softplus(-D(x)) + softplus(D(sg[x_hat])))   (non-saturating discriminator)
          + disc_on * r1_cost * mean_n ||d sum D(x) / d x_n||^2    (R1 on real images, cost 10)

D_sg: the discriminator with detached parameters (VQGANLoss.frozen_discriminator), so the generator
terms train the generator only and the discriminator terms the discriminator only, as with two
optimisers. MaskGIT's own trainer is not released; its sibling MAGVIT's (same config keys) sums
exactly these terms, L2 reconstruction included.

Differences kept on purpose (no weights or code for the originals in mimkit): the discriminator is
taming's PatchGAN (with BatchNorm, so R1's per-image gradients are not independent) instead of
MaskGIT's StyleGAN discriminator with blur resampling, and the perceptual term is LPIPS-VGG16 from
a local file instead of MaskGIT's ImageNet ResNet-50 features (`pretrained_image_model`).
"""
import torch
import torch.nn.functional as F

from .vqgan_loss import VQGANLoss


def entropy_loss(affinity: torch.Tensor, temperature: float) -> torch.Tensor:
    """MaskGIT's "softmax" entropy loss: affinity (..., K) (negative squared distances to the K codes)
    -> mean per-vector entropy of softmax(affinity / T) minus the entropy of its batch mean.
    Low when each vector picks one code confidently and the batch spreads over many codes."""
    flat = affinity.reshape(-1, affinity.shape[-1]).float() / temperature
    probs = flat.softmax(-1)
    sample_entropy = -(probs * flat.log_softmax(-1)).sum(-1).mean()  # (+1e-5 inside is shift-invariant)
    avg = probs.mean(0)
    avg_entropy = -(avg * torch.log(avg + 1e-5)).sum()
    return sample_entropy - avg_entropy


def r1_penalty(discriminator, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """real (N, C, H, W) -> (logits D(real), mean over images of ||grad_x sum D(real)||^2), the
    gradient kept in the graph so the penalty trains the discriminator."""
    real = real.detach().requires_grad_(True)
    logits = discriminator(real)
    if not torch.is_grad_enabled():
        return logits, torch.zeros((), device=real.device)
    grad = torch.autograd.grad(logits.sum(), real, create_graph=True)[0]
    return logits, grad.float().pow(2).flatten(1).sum(1).mean()


class MaskGITVQGANLoss(VQGANLoss):
    """Holds the PatchGAN discriminator (keys loss.discriminator.*, as VQGANLoss) and computes the
    objective of the module docstring; the perceptual network is passed in by the caller."""

    def __init__(self, in_channels: int, disc_channels: int = 64, disc_layers: int = 3, g_weight: float = 0.1,
                 r1_cost: float = 10.0, disc_factor: float = 1.0, disc_start: int = 0,
                 perceptual_weight: float = 0.0, codebook_weight: float = 1.0, entropy_weight: float = 0.1,
                 entropy_temperature: float = 0.01):
        super().__init__(in_channels, disc_channels, disc_layers, g_weight, disc_factor, disc_start,
                         perceptual_weight, codebook_weight)
        self.r1_cost, self.entropy_weight, self.entropy_temperature = r1_cost, entropy_weight, entropy_temperature

    def forward(self, inputs: torch.Tensor, recon: torch.Tensor, codebook_loss: torch.Tensor, step: int,
                affinity: torch.Tensor, perceptual=None) -> tuple[torch.Tensor, dict]:
        """inputs, recon (N, C, H, W) in [0, 1]; affinity (M, K) negative squared distances of the
        M encoded vectors to the codes; step: training forwards done before this one.
        Returns (total loss, logs of detached 0-d tensors)."""
        l2 = (inputs - recon).float().pow(2).mean()
        total = l2 + self.codebook_weight * codebook_loss
        logs = {"l2": l2.detach()}
        if self.perceptual_weight > 0 and perceptual is not None:  # LPIPS takes [-1, 1]
            p_loss = perceptual((inputs * 2 - 1).contiguous(), (recon * 2 - 1).contiguous()).mean()
            total = total + self.perceptual_weight * p_loss
            logs["perceptual"] = p_loss.detach()
        logs["rec_loss"] = total.detach() - self.codebook_weight * codebook_loss.detach()
        if self.entropy_weight > 0:
            entropy = entropy_loss(affinity, self.entropy_temperature)
            total = total + self.entropy_weight * entropy
            logs["entropy"] = entropy.detach()
        disc_on = self.disc_factor if step >= self.disc_start else 0.0
        zero = torch.zeros((), device=recon.device)
        logs.update(g_loss=zero, d_loss=zero, r1=zero, logits_real=zero, logits_fake=zero)
        if disc_on > 0:  # the discriminator sees [-1, 1] images, as taming's
            g_loss = F.softplus(-self.frozen_discriminator(recon * 2 - 1)).mean()
            logits_real, r1 = r1_penalty(self.discriminator, inputs * 2 - 1)
            logits_fake = self.discriminator(recon.detach() * 2 - 1)
            d_loss = (F.softplus(-logits_real) + F.softplus(logits_fake)).mean()
            total = total + disc_on * (self.disc_weight * g_loss + d_loss + self.r1_cost * r1)
            logs.update(g_loss=g_loss.detach(), d_loss=d_loss.detach(), r1=r1.detach(),
                        logits_real=logits_real.detach().mean(), logits_fake=logits_fake.detach().mean())
        return total, logs
