"""What MaskedTokenSampler costs on top of the model: overhead = (time of one full sample() - T x
time of one model forward at the same batch) / (T x forward), at batch 64, for T = 8 and 12.

The model is mimkit's MaskGIT built from preset `maskgit_fmnist` (8x8 = 64 tokens + class token,
512 codes) at random init, its tokenizer the `vqgan_fmnist` preset (random weights cost the same as
trained ones); when mimkit.methods.maskgit is missing, or with --stand-in, a plain
torch.nn.TransformerEncoder of 256-d, 4 layers over [class; 64 tokens] with a 512-id vocabulary.
The output says which. Forward and sample are timed in alternating rounds (so load from other
processes hits both alike) and the medians are reported. As a check that does not depend on the
noise of the forward times, the sampler also runs with the model replaced by cached logits: that
time per step is the sampler's own cost. images/s counts token sampling only (the tokenizer's
decode is timed on its own when the model has one).

On a machine shared with other jobs, extra threads wait for each other at every op (the time slice
of a descheduled thread), which inflates the many small ops of the sampler far more than the few
large ones of the forward: compare --threads 1 with --threads 2.

    python benchmarks/sampler_overhead.py                # ~30-60 s on 2 cores
    python benchmarks/sampler_overhead.py --threads 1 --rounds 3 --stand-in
"""
import argparse
import statistics
import time

import torch
from torch import nn

from mimkit.generation import MaskedTokenSampler


class StandInModel(nn.Module):
    """A bidirectional transformer over [class; L tokens] exposing `token_logits` like MaskGIT."""

    def __init__(self, vocab: int = 512, tokens: int = 64, dim: int = 256, depth: int = 4, heads: int = 8,
                 num_classes: int = 10):
        super().__init__()
        self.codebook_size, self.mask_token_id, self.num_classes = vocab, vocab, num_classes
        self.grid_size = (int(tokens ** 0.5), int(tokens ** 0.5))
        self.tokens = nn.Embedding(vocab + 1, dim)
        self.classes = nn.Embedding(num_classes + 1, dim)  # last row: no label
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, vocab)

    def token_logits(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (N, L), labels (N,) | None -> (N, L, V)."""
        rows = torch.full((len(tokens),), self.num_classes) if labels is None else \
            torch.where(labels < 0, self.num_classes, labels)
        h = torch.cat([self.classes(rows)[:, None], self.tokens(tokens)], dim=1) + self.pos
        return self.head(self.encoder(h)[:, 1:])


def build_model(stand_in: bool):
    """(model in eval mode, description)."""
    if not stand_in:
        try:
            from mimkit.config import run_config_from_dict
            from mimkit.registry import build_model as build_method
            from mimkit.methods.maskgit import PRESETS
            from mimkit.tokenizers.vqgan import PRESETS as TOKENIZERS
        except ImportError:
            pass
        else:
            preset = {**PRESETS["maskgit_fmnist"]}
            preset["model"] = {**preset["model"], "tokenizer_config": {"method": "vqgan",
                                                                        "model": TOKENIZERS["vqgan_fmnist"]["model"]}}
            config = run_config_from_dict(preset)
            m = config.model
            return build_method(config.method, m).eval(), (f"MaskGIT preset maskgit_fmnist ({m.depth} x {m.embed_dim}, "
                                                           f"{m.num_heads} heads), random init")
    return StandInModel().eval(), "stand-in nn.TransformerEncoder (4 x 256, 8 heads), random init"


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", default="8,12", help="comma-separated step counts")
    p.add_argument("--rounds", type=int, default=1, help="alternating timing rounds per step count")
    p.add_argument("--stand-in", action="store_true", help="use the nn.TransformerEncoder stand-in")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, description = build_model(args.stand_in)
    h, w = model.grid_size
    n, L = args.batch, h * w
    labels = torch.arange(n) % max(model.num_classes, 1) if model.num_classes else None
    print(f"model: {description}; batch {n}, {L} tokens, vocabulary {model.codebook_size}, "
          f"{args.threads} threads, torch {torch.__version__}")

    canvas = torch.full((n, L), model.mask_token_id)
    half = canvas.clone()
    half[:, ::2] = torch.randint(0, model.codebook_size, (n, L // 2 + L % 2))  # a mid-decoding canvas
    with torch.inference_mode():
        cached = model.token_logits(half, labels)  # warm-up, and the logits of the sampler-only runs
        rows = []
        for steps in [int(s) for s in args.steps.split(",")]:
            sampler = MaskedTokenSampler(steps=steps)
            forwards, samples, alone = [], [], []
            for r in range(args.rounds):
                forwards += [timed(model.token_logits, half, labels) for _ in range(2)]
                g = torch.Generator().manual_seed(r)
                samples.append(timed(sampler.sample, model.token_logits, canvas, labels, g,
                                     mask_token_id=model.mask_token_id))
                # the sampler with a free model: its own cost, not touched by noise in the forward times
                alone += [timed(sampler.sample, lambda tokens, lab: cached, canvas, labels, g,
                                mask_token_id=model.mask_token_id) for _ in range(3)]
            forward, sample, own = statistics.median(forwards), statistics.median(samples), statistics.median(alone)
            rows.append((steps, forward, sample, (sample - steps * forward) / (steps * forward),
                         own / steps, own / (steps * forward), n / sample))
        decode = None
        if hasattr(model, "tokenizer"):
            codes = torch.randint(0, model.codebook_size, (n, h, w))
            decode = statistics.median(timed(model.tokenizer.decode, codes) for _ in range(3))

    print(f"{'steps':>5} {'forward ms':>11} {'sample s':>9} {'overhead':>9} {'sampler ms/step':>16} "
          f"{'its share':>10} {'images/s':>9}")
    for steps, forward, sample, overhead, per_step, share, rate in rows:
        print(f"{steps:>5} {forward * 1e3:>11.1f} {sample:>9.3f} {overhead * 100:>8.1f}% {per_step * 1e3:>16.1f} "
              f"{share * 100:>9.1f}% {rate:>9.1f}")
    if decode is not None:
        print(f"tokenizer decode of {n} images: {decode * 1e3:.0f} ms (not in images/s)")
    print("overhead = (sample - steps x forward) / (steps x forward); its share = the sampler alone (model "
          "replaced by cached logits) / (steps x forward). Target: <= 5%.")


if __name__ == "__main__":
    main()
