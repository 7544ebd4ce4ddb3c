"""AdamW with MAE-style parameter groups and the per-step warmup + half-cosine schedule."""
import inspect
import math

import torch
from torch import nn

# Parameters that never get weight decay, besides every 1-D tensor (biases, norms, layer scales).
NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "dist_token", "relative_position_bias_table")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weight matrices, and undecayed 1-D params / tokens / positions /
    the names a model lists in its optional `no_weight_decay()` (timm's convention; e.g. a codebook)."""
    hook = getattr(model, "no_weight_decay", None)
    exempt = set(hook()) if callable(hook) else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if (param.ndim <= 1 or name.endswith(".bias") or name in exempt
                or any(n in name.split(".")[-1] for n in NO_DECAY_NAMES)):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_adamw(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-8):
    """torch.optim.AdamW over `param_groups`, fused when this PyTorch and device support it."""
    kwargs = {"lr": lr, "betas": tuple(betas), "eps": eps}
    device = next(model.parameters()).device
    if "fused" in inspect.signature(torch.optim.AdamW).parameters and device.type in ("cuda", "cpu", "xpu", "mps"):
        kwargs["fused"] = True
    return torch.optim.AdamW(param_groups(model, weight_decay), **kwargs)


def scaled_lr(blr: float, effective_batch: int) -> float:
    """MAE's linear scaling rule: lr = blr * effective_batch / 256."""
    return blr * effective_batch / 256


def warmup_cosine(step: int, total: int, warmup: int, peak: float, floor: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (0-based): linear from peak/warmup up to peak over
    `warmup` steps, then half-cosine from peak down to `floor` at step `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
