"""MAGE against the official code (LTH14/mage models_mage.py, issue 15): the tied output layer reads
a detached copy of the token table, so the prediction loss does not train the table through the
head; a reference MlmLayer written here from the official code gives mimkit's logits; and the init
is the official one (xavier-uniform linears, untruncated N(0, 0.02) embeddings and positions),
while MaskGIT keeps its truncated normal."""
import copy

import pytest
import torch
from torch import nn

from mimkit.methods.mage import MAGE
from mimkit.methods.maskgit import MaskGIT, MaskGITConfig
from test_token_models import TOKENIZER, tiny_mage  # the tiny MAGE of the token-model tests

V = 16  # codes of the tiny tokenizer


class OfficialMlmLayer(nn.Module):
    """The official MlmLayer, written from models_mage.py: fc -> GELU -> LayerNorm, then logits
    against the (transposed) word-embedding table it is given, plus a (1, 1, vocab) bias. The
    official forward_decoder gives it token_emb.word_embeddings.weight.data.detach(). eps: the
    official LayerNorm uses the default 1e-5; mimkit's head uses model.norm_eps (see hub/mage_official)."""

    def __init__(self, feat_emb_dim: int, word_emb_dim: int, vocab_size: int, eps: float):
        super().__init__()
        self.fc = nn.Linear(feat_emb_dim, word_emb_dim)
        self.gelu = nn.GELU()
        self.ln = nn.LayerNorm(word_emb_dim, eps=eps)
        self.bias = nn.Parameter(torch.zeros(1, 1, vocab_size))

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        hidden = self.ln(self.gelu(self.fc(x)))
        return torch.matmul(hidden, word_embeddings.transpose(0, 1)) + self.bias


def official_head(model: MAGE) -> OfficialMlmLayer:
    head = model.head
    ref = OfficialMlmLayer(head.dense.in_features, head.dense.out_features, V, head.norm.eps)
    with torch.no_grad():
        ref.fc.weight.copy_(head.dense.weight)
        ref.fc.bias.copy_(head.dense.bias)
        ref.ln.weight.copy_(head.norm.weight)
        ref.ln.bias.copy_(head.norm.bias)
        ref.bias.copy_(head.bias.view(1, 1, -1))
    return ref


def randomise_(model: nn.Module) -> None:
    """Random values on every trainable tensor (so zero biases / unit norms hide nothing)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.5)


# ------------------------------------------------------------------ the tied head
def test_the_head_reads_a_detached_view_of_the_token_table():
    model = tiny_mage()
    table = model.head_table()
    assert not table.requires_grad and table.grad_fn is None
    assert table.data_ptr() == model.embed.tokens.weight.data_ptr()  # the same numbers, not a stale copy
    logits = model.head(torch.randn(3, 8), model.head_table())
    assert torch.autograd.grad(logits.sum(), model.embed.tokens.weight, allow_unused=True)[0] is None


def test_the_loss_gives_the_token_table_no_gradient_through_the_head():
    """Tokens only from codes 0..7: rows 8..15 never enter the encoder, so with the detached head
    their gradient is exactly zero; a head on the live table (the old code) gives them one."""
    model = tiny_mage().train()
    live = copy.deepcopy(model)
    live.head_table = lambda: live.embed.tokens.weight  # the previous behaviour
    tokens = torch.randint(0, 8, (6, 4, 4), generator=torch.Generator().manual_seed(3))
    outs = []
    for m in (model, live):
        out = m(tokens=tokens, generator=torch.Generator().manual_seed(4))
        out.loss.backward()
        outs.append(out)
    assert torch.equal(outs[0].loss, outs[1].loss)  # the same forward: only the gradient differs
    grad, live_grad = model.embed.tokens.weight.grad, live.embed.tokens.weight.grad
    assert torch.equal(grad[8:V], torch.zeros_like(grad[8:V]))
    assert live_grad[8:V].abs().sum() > 0
    # the input path is unchanged: the difference is exactly what the head sent to rows 0..V-1
    head_part = live_grad - grad
    assert head_part[:V].abs().sum() > 0 and torch.equal(head_part[V:], torch.zeros_like(head_part[V:]))
    # the head itself still learns
    for p in (model.head.dense.weight, model.head.norm.weight, model.head.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_sampling_logits_give_the_code_rows_no_gradient():
    """All-[MASK] input reads only the [MASK] row, so no code row may get a gradient from
    token_logits (the sampler's path)."""
    model = tiny_mage().eval()
    tokens = torch.full((2, 16), model.mask_token_id)
    model.token_logits(tokens).logsumexp(-1).sum().backward()
    grad = model.embed.tokens.weight.grad
    assert torch.equal(grad[:V], torch.zeros_like(grad[:V])) and grad[V].abs().sum() > 0


def test_the_head_matches_the_official_mlm_layer_on_random_weights():
    model = tiny_mage(decoder_embed_dim=12, num_classes=0).eval()
    randomise_(model)
    ref = official_head(model)
    word_embeddings = model.embed.tokens.weight.data.detach()[:V]  # official: the table's code rows
    hidden = torch.randn(2, 16, 12, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(model.head(hidden, model.head_table()), ref(hidden, word_embeddings), atol=1e-5, rtol=0)
    # and inside the model: token_logits = the reference layer on the decoder's output
    tokens = torch.randint(0, V + 1, (2, 16), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        decoded = model.decode(model.encode(tokens, None), tokens == model.mask_token_id)
        expected = ref(decoded, word_embeddings)
        assert torch.allclose(model.token_logits(tokens), expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ init
def kurtosis(x: torch.Tensor) -> float:
    x = x.double().flatten()
    z = (x - x.mean()) / x.std()
    return (z ** 4).mean().item()


def init_model(**kw) -> MAGE:
    return tiny_mage(embed_dim=128, num_heads=2, decoder_embed_dim=64, projection_hidden_dim=128,
                     projection_dim=64, **kw)


@pytest.mark.parametrize("kw", [{}, {"contrastive_weight": 1.0, "num_classes": 3}], ids=["mage", "mage_c_cond"])
def test_linears_are_xavier_uniform_with_zero_bias_and_norms_are_unit(kw):
    model = init_model(**kw)
    linears = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and not name.startswith("tokenizer")]
    assert {"decoder_embed", "head.dense", "blocks.0.attn.qkv", "blocks.0.mlp.fc2"} <= {n for n, _ in linears}
    if kw:
        assert {"projector.0", "projector.3"} <= {n for n, _ in linears}
    scaled = []
    for name, m in linears:
        fan_out, fan_in = m.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        top = m.weight.abs().max().item()
        assert 0.97 * bound <= top <= bound * (1 + 1e-6), (name, top, bound)
        assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
        scaled.append(m.weight.detach().flatten() / bound)
    scaled = torch.cat(scaled)
    # uniform on [-1, 1]: std 1/sqrt(3), kurtosis 1.8 (a normal: 3, truncated at 2 std: ~2.4)
    assert abs(scaled.std().item() - 3 ** -0.5) < 0.01 and abs(kurtosis(scaled) - 1.8) < 0.05
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm) and not name.startswith("tokenizer"):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
    assert torch.equal(model.head.bias, torch.zeros_like(model.head.bias))


def test_embeddings_and_positions_are_untruncated_normal_002():
    model = init_model(num_classes=10)
    tensors = {"embed.tokens": model.embed.tokens.weight, "embed.classes": model.embed.classes.weight,
               "embed.pos_embed": model.embed.pos_embed, "decoder_pos_embed": model.decoder_pos_embed}
    for name, t in tensors.items():
        assert abs(t.std().item() - 0.02) < 0.003, name
        if t.numel() >= 1000:
            assert t.abs().max().item() > 0.04 * 1.1, name  # beyond the old 2-std cut
    pooled = torch.cat([t.detach().flatten() for t in tensors.values()])  # ~6400 samples
    assert abs(pooled.mean().item()) < 0.001 and abs(pooled.std().item() - 0.02) < 0.001
    assert (pooled.abs() > 0.04).float().mean().item() > 0.03  # a normal: 4.6%; truncated at 2 std: 0
    assert abs(kurtosis(pooled) - 3.0) < 0.3  # truncated at 2 std: ~2.4
    assert pooled.abs().max().item() > 3 * 0.02


def test_init_skips_the_frozen_tokenizer_and_maskgit_keeps_its_truncated_normal():
    torch.manual_seed(0)
    model = init_model()
    state = {k: v.clone() for k, v in model.tokenizer.state_dict().items()}
    model.reset_parameters()
    assert all(torch.equal(v, model.tokenizer.state_dict()[k]) for k, v in state.items())
    torch.manual_seed(0)
    maskgit = MaskGIT(MaskGITConfig(tokenizer_config=TOKENIZER, embed_dim=128, depth=1, num_heads=2))
    for name, p in maskgit.named_parameters():
        if not name.startswith("tokenizer") and p.dim() > 1:
            assert p.abs().max().item() <= 0.04, name  # BERT/MaskGIT: N(0, 0.02) cut at 2 std
