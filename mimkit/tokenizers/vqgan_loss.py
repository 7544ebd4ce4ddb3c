"""The VQGAN training objective as ONE scalar whose single backward trains both players.

    total = L1(x, x_hat) + perceptual_weight * LPIPS(x, x_hat) + codebook_loss        (generator)
          + disc_on * lambda * (-mean D_sg(x_hat))                                     (generator, adversarial)
          + disc_on * 0.5 * (mean relu(1 - D(sg[x])) + mean relu(1 + D(sg[x_hat]))) (discriminator, hinge)

- D_sg is the discriminator evaluated with DETACHED parameters (torch.func.functional_call with
  `p.detach()` for every parameter, the live BatchNorm buffers): the adversarial term sends
  gradient to x_hat, hence to the generator, and none to the discriminator.
- The hinge term sees sg[x_hat]: it sends gradient to the discriminator and none to the generator.
So the generator's parameters receive exactly the gradient of the generator loss and the
discriminator's exactly that of its hinge loss, as with two optimisers and two backward passes;
one optimizer (the Trainer's) steps both.

lambda is taming-transformers' adaptive weight: ||grad_W L_rec|| / (||grad_W L_adv|| + 1e-4),
clamped to [0, 1e4], detached, times disc_weight, where W is the decoder's last layer and L_rec
the reconstruction (+ perceptual) loss. disc_on = disc_factor once `step >= disc_start`, else 0
(and the discriminator is then not run at all).
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .discriminator import PatchDiscriminator


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean relu(1 - D(real)) + mean relu(1 + D(fake)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """||d rec_loss / d last_layer|| / (||d g_loss / d last_layer|| + 1e-4), clamped, detached."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


class VQGANLoss(nn.Module):
    """Holds the discriminator (taming key names: `loss.discriminator.main.N...`) and computes the
    single-backward objective above. The perceptual network is passed in by the caller (it is a
    frozen, external loss network and not part of this module's state)."""

    def __init__(self, in_channels: int, disc_channels: int = 64, disc_layers: int = 3, disc_weight: float = 0.8,
                 disc_factor: float = 1.0, disc_start: int = 0, perceptual_weight: float = 0.0,
                 codebook_weight: float = 1.0):
        super().__init__()
        self.discriminator = PatchDiscriminator(in_channels, disc_channels, disc_layers)
        self.disc_weight, self.disc_factor, self.disc_start = disc_weight, disc_factor, disc_start
        self.perceptual_weight, self.codebook_weight = perceptual_weight, codebook_weight

    def frozen_discriminator(self, x: torch.Tensor) -> torch.Tensor:
        """D(x) with every parameter detached: gradient flows to x only (buffers stay live)."""
        params = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        buffers = dict(self.discriminator.named_buffers())
        return functional_call(self.discriminator, (params, buffers), (x,))

    def forward(self, inputs: torch.Tensor, recon: torch.Tensor, codebook_loss: torch.Tensor, step: int,
                last_layer: torch.Tensor, perceptual=None) -> tuple[torch.Tensor, dict]:
        """inputs, recon (N, C, H, W) in [-1, 1]; step: training forwards done before this one.
        Returns (total loss, logs of detached 0-d tensors)."""
        l1 = (inputs - recon).abs().mean()
        rec_loss = l1
        logs = {"l1": l1.detach()}
        if self.perceptual_weight > 0 and perceptual is not None:
            p_loss = perceptual(inputs.contiguous(), recon.contiguous()).mean()
            rec_loss = rec_loss + self.perceptual_weight * p_loss
            logs["perceptual"] = p_loss.detach()
        total = rec_loss + self.codebook_weight * codebook_loss
        disc_on = self.disc_factor if step >= self.disc_start else 0.0
        zero = torch.zeros((), device=recon.device)
        logs.update(g_loss=zero, d_loss=zero, disc_weight=zero, logits_real=zero, logits_fake=zero)
        if disc_on > 0:
            g_loss = -self.frozen_discriminator(recon).mean()
            if torch.is_grad_enabled() and recon.requires_grad:
                weight = adaptive_weight(rec_loss, g_loss, last_layer) * self.disc_weight
            else:
                weight = torch.tensor(self.disc_weight, device=recon.device)
            logits_real = self.discriminator(inputs.detach())
            logits_fake = self.discriminator(recon.detach())
            d_loss = hinge_d_loss(logits_real, logits_fake)
            total = total + disc_on * weight * g_loss + disc_on * d_loss
            logs.update(g_loss=g_loss.detach(), d_loss=d_loss.detach(), disc_weight=weight,
                        logits_real=logits_real.detach().mean(), logits_fake=logits_fake.detach().mean())
        logs["rec_loss"] = rec_loss.detach()
        return total, logs
