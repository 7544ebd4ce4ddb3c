"""MaskGIT's iterative parallel decoding as a scheduler object, separate from any model.

The sampler only needs a callable `logits_fn(tokens (N, L) int64, labels (N,) int64 | None)
-> (N, L, V)` and a canvas (N, L) holding `mask_token_id` at the unknown positions:

    sampler = MaskedTokenSampler(steps=12, schedule="cosine")
    tokens = sampler.sample(model.token_logits, canvas, labels, generator=g,
                            mask_token_id=model.mask_token_id)

Step t = 0..T-1 (ratio = (t + 1) / T):
  1. logits of every position (with guidance: u + w_t (c - u), cond and uncond rows in ONE call);
  2. a token is sampled at every unknown position from softmax(logits / token_temperature)
     (optionally restricted to the top-k ids); its confidence is its log-probability under that
     same distribution; known positions have confidence +inf;
  3. n_mask = max(1, min(#unknown - 1, floor(L0 * gamma(ratio)))) per sample (L0 = its number
     of unknown tokens at the start), and the n_mask lowest of
     confidence + choice_temperature * (1 - ratio) * Gumbel are masked again; the last step keeps
     everything. Known tokens never change.
"""
import math
from typing import Callable

import torch

from ..nn.mask_schedules import SCHEDULES, mask_fraction

LogitsFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
GUIDANCE_RAMPS = ("linear", "constant")


class MaskedTokenSampler:
    """Settings of iterative masked-token decoding; `sample` runs it on a canvas.

    steps: T decoding steps. schedule: gamma, one of SCHEDULES (mimkit.nn.mask_schedules).
    choice_temperature: scale of the Gumbel noise added to the confidences when choosing which
        tokens to keep, annealed linearly to 0 (times 1 - ratio); 0 keeps the most confident.
    token_temperature: temperature of the token distribution (1 = the model's own).
    top_k: sample only among the k most likely ids of each position (None or 0 = all).
    guidance_scale: classifier-free guidance w; 0 turns guidance off (one forward pass with the
        given labels). Otherwise logits = u + w_t (c - u), c with the labels and u with label -1,
        both in one batched call (so a step costs a forward of 2N rows); w = 1 is plain conditional.
    guidance_ramp: "linear" (w_t = w (t + 1) / T, weak guidance early, full at the end) or
        "constant" (w_t = w).
    progress: show a tqdm bar over the steps.
    """

    def __init__(self, steps: int = 12, schedule: str = "cosine", choice_temperature: float = 4.5,
                 token_temperature: float = 1.0, top_k: int | None = None, guidance_scale: float = 0.0,
                 guidance_ramp: str = "linear", progress: bool = False):
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown mask schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if choice_temperature < 0:
            raise ValueError(f"choice_temperature must be >= 0, got {choice_temperature}")
        if not token_temperature > 0:
            raise ValueError(f"token_temperature must be > 0, got {token_temperature}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 1 (or 0/None for all ids), got {top_k}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (0 = off), got {guidance_scale}")
        if guidance_ramp not in GUIDANCE_RAMPS:
            raise ValueError(f"unknown guidance_ramp {guidance_ramp!r}; choose one of {', '.join(GUIDANCE_RAMPS)}")
        self.steps, self.schedule = steps, schedule
        self.choice_temperature, self.token_temperature = float(choice_temperature), float(token_temperature)
        self.top_k = top_k or None
        self.guidance_scale, self.guidance_ramp = float(guidance_scale), guidance_ramp
        self.progress = progress

    def __repr__(self) -> str:
        return (f"MaskedTokenSampler(steps={self.steps}, schedule={self.schedule!r}, "
                f"choice_temperature={self.choice_temperature}, token_temperature={self.token_temperature}, "
                f"top_k={self.top_k}, guidance_scale={self.guidance_scale}, guidance_ramp={self.guidance_ramp!r})")

    # ---------------------------------------------------------------- schedule of the counts
    def mask_counts(self, num_unknown: int | torch.Tensor) -> torch.Tensor:
        """Tokens still masked after each step: num_unknown (int or (N,)) -> (T,) or (T, N) int64.

        Entry t is n_mask of step t for a sample starting with num_unknown unknown tokens; the last
        entry is 0, and a sample with 0 unknown tokens stays at 0.
        """
        start = torch.as_tensor(num_unknown, dtype=torch.long).cpu()
        flat = start.reshape(-1)
        ratios = torch.arange(1, self.steps + 1, dtype=torch.float64) / self.steps  # (T,)
        gamma = torch.empty(self.steps, flat.numel(), dtype=torch.float64)  # (T, N)
        for total in flat.unique().tolist():  # "log" and "exp" depend on L0; one pass per distinct L0
            gamma[:, flat == total] = mask_fraction(self.schedule, ratios, total).unsqueeze(1)
        target = torch.floor(flat.double() * gamma).long()  # floor(L0 * gamma(ratio)), (T, N)
        remaining, counts = flat, []
        for t in range(self.steps - 1):
            n = torch.minimum(torch.clamp(torch.minimum(remaining - 1, target[t]), min=1), remaining)
            counts.append(n)
            remaining = n
        counts.append(torch.zeros_like(flat))  # the last step keeps everything
        return torch.stack(counts).reshape(self.steps, *start.shape)

    def guidance_weight(self, step: int) -> float:
        """w_t of step t (0-based): w (t + 1) / T for the linear ramp, w for the constant one."""
        if self.guidance_ramp == "constant":
            return self.guidance_scale
        return self.guidance_scale * (step + 1) / self.steps

    # ---------------------------------------------------------------- one step's pieces
    def guided_logits(self, logits_fn: LogitsFn, tokens: torch.Tensor, labels: torch.Tensor | None,
                      step: int) -> torch.Tensor:
        """(N, L) tokens -> (N, L, V) float32 logits of step t, guided when guidance_scale > 0."""
        if self.guidance_scale == 0:
            return logits_fn(tokens, labels).float()
        both = logits_fn(torch.cat([tokens, tokens]), torch.cat([labels, torch.full_like(labels, -1)])).float()
        cond, uncond = both.chunk(2)
        return uncond + self.guidance_weight(step) * (cond - uncond)

    def sample_tokens(self, logits: torch.Tensor,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (K, V) -> (ids (K,) int64, log-probabilities (K,) of those ids), after the token
        temperature and the top-k filter.

        Inverse-CDF sampling: one uniform number per row against the cumulative weights, a few
        passes over (K, V) in all (torch.multinomial draws K x V exponentials).
        """
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        weights = logits - logits.amax(dim=-1, keepdim=True)  # a new tensor: the in-place ops below are ours
        if self.token_temperature != 1:
            weights.mul_(1 / self.token_temperature)
        weights.exp_()  # unnormalised probabilities, the largest 1
        cdf = weights.cumsum(dim=-1)  # (K, V)
        total = cdf[:, -1:]
        # u in [0, total): the first index whose cdf exceeds u has a positive weight
        u = torch.minimum(torch.rand(total.shape, generator=generator, device=total.device) * total,
                          torch.nextafter(total, torch.zeros_like(total)))
        ids = torch.searchsorted(cdf, u, right=True)  # (K, 1)
        log_prob = weights.gather(1, ids).log_() - total.log()
        return ids.squeeze(1), log_prob.squeeze(1)

    # ---------------------------------------------------------------- the loop
    @torch.no_grad()
    def sample(self, logits_fn: LogitsFn, canvas: torch.Tensor, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, *, mask_token_id: int) -> torch.Tensor:
        """Fill the unknown positions of `canvas`: (N, L) int64 with mask_token_id there -> (N, L) int64
        with no mask_token_id left (the input is not modified).

        labels: (N,) int64 class ids (-1 = no label for that row) or None (unconditional); guidance
        needs labels. generator: the source of all randomness (torch.Generator on the canvas'
        device); None draws from torch's global RNG like any torch function.
        """
        if canvas.ndim != 2 or canvas.dtype != torch.long:
            raise ValueError(f"canvas must be an (N, L) int64 tensor, got {tuple(canvas.shape)} {canvas.dtype}")
        if labels is not None and tuple(labels.shape) != (canvas.shape[0],):
            raise ValueError(f"labels must have shape ({canvas.shape[0]},) like the canvas rows, "
                             f"got {tuple(labels.shape)}")
        if self.guidance_scale > 0 and labels is None:
            raise ValueError(f"guidance_scale {self.guidance_scale} needs labels; pass labels or set it to 0")
        tokens = canvas.clone()
        unknown = tokens == mask_token_id  # (N, L)
        if not unknown.any():
            return tokens
        counts = self.mask_counts(unknown.sum(dim=1)).to(tokens.device)  # (T, N)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.steps, desc="sampling", unit="step", leave=False)
        for t in range(self.steps):
            logits = self.guided_logits(logits_fn, tokens, labels, t)  # (N, L, V)
            rows, cols = unknown.nonzero(as_tuple=True)  # only the unknown positions are sampled
            flat = logits.reshape(-1, logits.shape[-1]).index_select(0, rows * tokens.shape[1] + cols)
            ids, log_prob = self.sample_tokens(flat, generator)  # (K,), (K,)
            tokens.index_put_((rows, cols), ids)
            if bar is not None:
                bar.update()
            if t == self.steps - 1:
                break
            noise_scale = self.choice_temperature * (1 - (t + 1) / self.steps)
            if noise_scale > 0:
                log_prob = log_prob + noise_scale * gumbel_noise(log_prob.shape, generator, log_prob.device)
            confidence = torch.full(tokens.shape, math.inf, device=tokens.device)  # known: never re-masked
            confidence[rows, cols] = log_prob
            # re-mask the counts[t] least confident of each row: rank < count (per-row counts, ties by position)
            order = confidence.argsort(dim=1, stable=True)
            unknown = torch.zeros_like(unknown).scatter_(1, order, positions < counts[t].unsqueeze(1))
            tokens.masked_fill_(unknown, mask_token_id)
        if bar is not None:
            bar.close()
        return tokens


def gumbel_noise(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel samples -log(-log U), U clamped away from 0 and 1 so they stay finite."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-20, 1 - 1e-7)
    return -torch.log(-torch.log(u))
