"""Vector quantisation: map each vector to its nearest codebook entry, with the training machinery
the VQ tokenizers share (VQGAN: Euclidean codes learned by gradient; BEiT v2 VQ-KD: a 32-d,
l2-normalised code space whose codebook is an EMA of cluster means).

    vq = VectorQuantizer(dim=256, codebook_size=1024)                      # VQGAN (taming)
    vq = VectorQuantizer(dim=768, codebook_size=8192, code_dim=32, l2_normalize=True,
                         update="ema", decay=0.99, kmeans_init=True, restart_after=100)  # VQ-KD-like
    out = vq(z)               # z (N, ..., dim) -> out.quantized (N, ..., dim), out.codes (N, ...)
    loss = task_loss + out.loss

Lookup: z is (optionally) projected to `code_dim` by `in_proj`, (optionally) l2-normalised, and
each vector takes the index of the nearest code (Euclidean; for l2 the codes are normalised too,
so nearest = highest cosine). The straight-through estimator copies the gradient of the
quantised vector to the encoder output: forward value = code, d quantized / d z = identity
(before `out_proj`, which maps back to `dim` when a projection is used).

Loss (`out.loss`): beta * ||z - sg[q]||^2 (commitment) always, plus ||sg[z] - q||^2 (codebook
term) when the codebook is learned by gradient (update="gradient"). With update="ema" the
codebook is no parameter of the optimiser: after each training forward, every code that received
vectors moves towards their mean, w <- decay * w + (1 - decay) * mean (for l2: the mean is
l2-normalised first and w re-normalised after, as BEiT v2 does); codes that received nothing keep
their vector exactly.

Training-only machinery (module in train mode; eval mode is a pure lookup):
- k-means init (`kmeans_init`): the first training batch's vectors are clustered (k-means++
  seeding, `kmeans_iters` Lloyd iterations; cosine k-means for l2) and the centres become the codebook.
- dead-code restart (`restart_after` > 0): a code not selected in the last `restart_after`
  training forwards (counting from its last (re)initialisation) is re-seeded with a random vector of
  the current batch (the most recent encoder outputs).
- usage statistics (`out.stats`): `perplexity` = exp(entropy) of the batch's code histogram,
  `usage` = fraction of codes selected in the last `usage_window` training forwards (in eval
  mode: in this batch), `restarted` = codes re-seeded by this call.

Distributed (torch.distributed initialised, e.g. under DDP): the code histograms and per-code sums
are all-reduced before the EMA update and the usage bookkeeping, and the k-means init and every
restart are computed on rank 0 and broadcast, so all ranks hold the same codebook.

State (all in the state dict, so a resumed run continues exactly): `embedding.weight` (K, code_dim)
(taming's key name; requires_grad=False with update="ema"), `initialized` (k-means done),
`steps` (training forwards so far), `last_hit` (K,) (step of the last selection, -1 = never),
`last_reset` (K,) (step of the last (re)initialisation).
"""
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    """quantized: (N, ..., dim) straight-through codes; codes: (N, ...) int64;
    loss: 0-d commitment (+ codebook) loss; stats: 0-d tensors (perplexity, usage, restarted)."""

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    stats: dict = field(default_factory=dict)


# --------------------------------------------------------------------- distributed helpers
def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op outside torch.distributed)."""
    if distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    """In-place copy of rank 0's tensor to every rank (no-op outside torch.distributed)."""
    if distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def is_rank0() -> bool:
    return not distributed() or dist.get_rank() == 0


# -------------------------------------------------------------------------------- helpers
def code_perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of a code histogram (K,): K for uniform use, 1 when one code takes all."""
    p = counts.float() / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


def sample_rows(x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n rows of x (M, d) drawn at random: without replacement when M >= n, else with."""
    if x.shape[0] >= n:
        index = torch.randperm(x.shape[0], generator=generator, device="cpu")[:n]
    else:
        index = torch.randint(x.shape[0], (n,), generator=generator, device="cpu")
    return x[index.to(x.device)]


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, cosine: bool = False) -> torch.Tensor:
    """x (M, d), codebook (K, d) -> (M,) int64 index of the nearest code (highest dot product for
    cosine = both sides already normalised; else smallest squared Euclidean distance)."""
    if cosine:
        return (x @ codebook.t()).argmax(dim=1)
    # ||x||^2 is the same for every code: argmin ||e||^2 - 2 x.e
    return torch.addmm(codebook.pow(2).sum(1)[None], x, codebook.t(), alpha=-2.0).argmin(dim=1)


def kmeans(x: torch.Tensor, k: int, iters: int = 10, cosine: bool = False,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of x (M, d) -> (centres (k, d), counts (k,)).

    Seeding is k-means++ (each next centre drawn with probability proportional to the squared
    distance to the nearest centre so far), then `iters` Lloyd iterations. cosine: x is expected
    l2-normalised; assignment by highest dot product and centres re-normalised. A cluster that
    ends up empty keeps its previous centre. With fewer than k distinct points, rows are repeated.
    """
    x = x.float()
    m = x.shape[0]
    first = int(torch.randint(m, (1,), generator=generator))
    centres = [x[first]]
    nearest = (x - x[first]).pow(2).sum(1)
    for _ in range(1, k):
        weights = nearest.clamp_min(0)
        if float(weights.sum()) <= 0:  # every point is already a centre: repeat random rows
            index = int(torch.randint(m, (1,), generator=generator))
        else:
            index = int(torch.multinomial(weights.cpu(), 1, generator=generator))
        centres.append(x[index])
        nearest = torch.minimum(nearest, (x - x[index]).pow(2).sum(1))
    centres = torch.stack(centres)
    counts = torch.zeros(k, device=x.device)
    for _ in range(max(iters, 1)):
        assign = nearest_code(x, centres, cosine)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        used = counts > 0
        means = sums[used] / counts[used, None]
        centres[used] = F.normalize(means, dim=1) if cosine else means
    return centres, counts


# ---------------------------------------------------------------------------- the module
class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with straight-through gradient (see the module docstring).

    dim: size of the input vectors (last axis). codebook_size: K.
    code_dim: size of the code space; when set and != dim, `in_proj` (dim -> code_dim) and
        `out_proj` (code_dim -> dim) linear maps surround the lookup (factorised codes).
    l2_normalize: look up l2-normalised vectors in an l2-normalised codebook (cosine similarity).
    beta: commitment weight. update: "gradient" (codebook term in the loss) or "ema".
    decay: EMA decay. kmeans_init / kmeans_iters: initialise on the first training batch.
    restart_after: re-seed codes unused for this many training forwards (0 = never).
    usage_window: training forwards over which `stats["usage"]` counts a code as used.
    """

    def __init__(self, dim: int, codebook_size: int, code_dim: int | None = None, *, l2_normalize: bool = False,
                 beta: float = 0.25, update: str = "gradient", decay: float = 0.99, kmeans_init: bool = False,
                 kmeans_iters: int = 10, restart_after: int = 0, usage_window: int = 100):
        super().__init__()
        if update not in ("gradient", "ema"):
            raise ValueError(f"update must be 'gradient' or 'ema', got {update!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"dim and codebook_size must be positive, got {dim}, {codebook_size}")
        self.dim, self.codebook_size = dim, codebook_size
        self.code_dim = code_dim or dim
        self.l2_normalize, self.beta, self.update, self.decay = l2_normalize, beta, update, decay
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.restart_after, self.usage_window = restart_after, max(usage_window, 1)
        if self.code_dim != dim:
            self.in_proj = nn.Linear(dim, self.code_dim)
            self.out_proj = nn.Linear(self.code_dim, dim)
        else:
            self.in_proj = self.out_proj = None
        self.embedding = nn.Embedding(codebook_size, self.code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)  # taming's init
        if l2_normalize:
            with torch.no_grad():
                self.embedding.weight.copy_(F.normalize(torch.randn_like(self.embedding.weight), dim=1))
        self.embedding.weight.requires_grad_(update == "gradient")
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self.register_buffer("last_hit", torch.full((codebook_size,), -1, dtype=torch.long))
        self.register_buffer("last_reset", torch.zeros(codebook_size, dtype=torch.long))

    # ------------------------------------------------------------------ lookups
    def codebook(self) -> torch.Tensor:
        """The codes as looked up: (K, code_dim), l2-normalised when l2_normalize."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=1) if self.l2_normalize else weight

    def to_code_space(self, z: torch.Tensor) -> torch.Tensor:
        """(N, ..., dim) -> (N, ..., code_dim): in_proj, then l2-normalisation when enabled."""
        if self.in_proj is not None:
            z = self.in_proj(z)
        return F.normalize(z, dim=-1) if self.l2_normalize else z

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, ..., dim) -> codes (N, ...) int64, without any training bookkeeping."""
        flat = self.to_code_space(z).reshape(-1, self.code_dim).float()
        return nearest_code(flat, self.codebook().float(), self.l2_normalize).view(z.shape[:-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (N, ...) int64 -> (N, ..., dim): the codes' vectors (through out_proj)."""
        q = F.embedding(codes, self.codebook())
        return self.out_proj(q) if self.out_proj is not None else q

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z (N, ..., dim) -> QuantizerOutput; in train mode also init / EMA / restart / usage."""
        shape = z.shape[:-1]
        with torch.autocast(z.device.type, enabled=False):
            flat = self.to_code_space(z.float()).reshape(-1, self.code_dim)
            if self.training:
                with torch.no_grad():
                    self.steps += 1
                    if not bool(self.initialized):
                        self.init_codebook(flat.detach())
            with torch.no_grad():
                codes = nearest_code(flat.detach(), self.codebook().detach(), self.l2_normalize)
            q = F.embedding(codes, self.codebook())  # grad reaches the codebook only in gradient mode
            commitment = F.mse_loss(flat, q.detach())
            loss = self.beta * commitment
            if self.update == "gradient":
                loss = loss + F.mse_loss(q, flat.detach())
            quantized = flat + (q - flat).detach()  # straight-through: forward q, backward identity
            stats = self.bookkeeping(flat.detach(), codes) if self.training else self.batch_stats(codes)
        quantized = quantized.view(*shape, self.code_dim).to(z.dtype)
        if self.out_proj is not None:
            quantized = self.out_proj(quantized)
        stats["commitment"] = commitment.detach()
        return QuantizerOutput(quantized=quantized, codes=codes.view(shape), loss=loss, stats=stats)

    # ----------------------------------------------------------- training state
    @torch.no_grad()
    def init_codebook(self, flat: torch.Tensor) -> None:
        """k-means of rank 0's batch (M, code_dim) -> codebook, broadcast to every rank."""
        weight = self.embedding.weight
        if is_rank0():
            centres, _ = kmeans(flat, self.codebook_size, self.kmeans_iters, self.l2_normalize)
            weight.data.copy_(centres)
        broadcast_from_rank0(weight.data)
        self.initialized.fill_(True)
        self.last_reset.fill_(int(self.steps))

    @torch.no_grad()
    def batch_stats(self, codes: torch.Tensor) -> dict:
        counts = torch.bincount(codes, minlength=self.codebook_size)
        return {"perplexity": code_perplexity(counts), "usage": (counts > 0).float().mean(),
                "restarted": torch.tensor(0.0)}

    @torch.no_grad()
    def bookkeeping(self, flat: torch.Tensor, codes: torch.Tensor) -> dict:
        """After a training lookup: global histogram, EMA update, usage, dead-code restart."""
        counts = all_reduce_sum(torch.bincount(codes, minlength=self.codebook_size).float())
        step = int(self.steps)
        if self.update == "ema":
            sums = all_reduce_sum(torch.zeros_like(self.embedding.weight, dtype=torch.float32).index_add_(0, codes, flat))
            self.ema_update(counts, sums)
        self.last_hit[counts > 0] = step
        restarted = 0
        if self.restart_after > 0:
            restarted = self.restart_dead_codes(flat, step)
        return {"perplexity": code_perplexity(counts),
                "usage": ((self.last_hit >= 0) & (self.last_hit > step - self.usage_window)).float().mean(),
                "restarted": torch.tensor(float(restarted))}

    @torch.no_grad()
    def ema_update(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """w_k <- decay * w_k + (1 - decay) * mean_k for codes with counts_k > 0 (means and
        results l2-normalised in the cosine variant); other codes keep their vector."""
        used = counts > 0
        weight = self.embedding.weight.data
        means = sums[used] / counts[used, None]
        if self.l2_normalize:
            means = F.normalize(means, dim=1)
        new = self.decay * weight[used].float() + (1.0 - self.decay) * means
        if self.l2_normalize:
            new = F.normalize(new, dim=1)
        weight[used] = new.to(weight.dtype)

    @torch.no_grad()
    def dead_codes(self, step: int) -> torch.Tensor:
        """(K,) bool: codes neither selected nor (re)initialised in the last restart_after steps."""
        last_active = torch.maximum(self.last_hit, self.last_reset)
        return step - last_active >= self.restart_after

    @torch.no_grad()
    def restart_dead_codes(self, flat: torch.Tensor, step: int) -> int:
        """Re-seed dead codes with random vectors of rank 0's batch (broadcast); returns how many."""
        dead = self.dead_codes(step)  # identical on every rank: built from all-reduced counts
        n = int(dead.sum())
        if n == 0:
            return 0
        fresh = sample_rows(flat, n).to(self.embedding.weight.dtype)
        if self.l2_normalize:
            fresh = F.normalize(fresh, dim=1)
        broadcast_from_rank0(fresh)
        # .data: the lookup's autograd graph never reads these rows (dead = not selected)
        self.embedding.weight.data[dead] = fresh
        self.last_reset[dead] = step
        return n

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, code_dim={self.code_dim}, "
                f"l2_normalize={self.l2_normalize}, update={self.update!r}, beta={self.beta}, "
                f"kmeans_init={self.kmeans_init}, restart_after={self.restart_after}")
