"""Peak signal-to-noise ratio of reconstructions."""
import torch


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB: pred, target (N, ...) -> (N,) = 10 log10(data_range^2 / MSE_i), with
    MSE_i the mean squared error over all of image i's values (pred is NOT clamped here). An exact
    reconstruction gives +inf."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    mse = (pred.detach().double() - target.detach().double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).float()
