"""Linear layer whose float32 CPU matmuls run on oneDNN instead of the BLAS behind F.linear.

On CPUs where PyTorch's BLAS (MKL) does not use its best kernels, e.g. AMD EPYC, oneDNN's JIT
matmuls are faster for transformer shapes: on a 2-core EPYC the ViT-B/16 MAE train step of
benchmarks/mae_step.py ran 1.19x faster (interleaved A/B); the ViT-Tiny one gains only from the
BLAS weight-gradient choice in backward (1.05x).
Values equal F.linear's up to float32 rounding (the summation order differs). Anything else
(CUDA, other dtypes, autocast, a PyTorch without the op) takes F.linear, as does everything when
ONEDNN_LINEAR is False.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# Route CPU float32 linears through oneDNN (when this PyTorch has the op and it works).
ONEDNN_LINEAR = True

_probed: bool | None = None


def _matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(M, K), (N, K) [, (N,)] 2-D, any strides -> (M, N) = x @ weight^T + bias on oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_available() -> bool:
    """Whether the oneDNN op exists and agrees with F.linear (checked once, on a tiny case)."""
    global _probed
    if _probed is None:
        try:
            g = torch.Generator().manual_seed(0)  # never the global RNG: probing must not shift a seeded run
            x, w, b = torch.randn(5, 8, generator=g), torch.randn(3, 8, generator=g), torch.randn(3, generator=g)
            _probed = torch.backends.mkldnn.is_available() and torch.allclose(
                _matmul(x, w, b), F.linear(x, w, b), atol=1e-5)
        except (AttributeError, RuntimeError):
            _probed = False
    return _probed


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with the three matmuls (forward, input grad, weight grad) on oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = _matmul(x.reshape(-1, x.shape[-1]), weight, bias)
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad2d = grad.reshape(-1, grad.shape[-1])  # (M, N)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _matmul(grad2d, weight.t(), None).view(x.shape)  # (M, N) @ (N, K)
        if ctx.needs_input_grad[1]:  # (N, M) @ (M, K)
            x2d = x.reshape(-1, x.shape[-1])
            # oneDNN first copies the transposed (N, M) gradient; when N > K that copy costs more
            # than BLAS loses, and the BLAS gemm, which reads transposed operands in place, wins.
            if grad2d.shape[1] > x2d.shape[1]:
                grad_w = grad2d.t().mm(x2d)
            else:
                grad_w = _matmul(grad2d.t(), x2d.t(), None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad2d.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(..., K), (N, K), (N,) -> (..., N): F.linear, on oneDNN for CPU float32 (see module doc)."""
    if (ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32) and x.numel() > 0
            and not torch.is_autocast_enabled("cpu") and onednn_available()):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, keys and init) whose forward is `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
