"""A small convolutional Gaussian denoiser, for denoised smoothing (Salman et al., NeurIPS 2020).

Denoised smoothing certifies ``g(x) = argmax_c P(f(D(x + e)) = c)``: a denoiser ``D`` trained to remove
``N(0, sigma^2 I)`` noise sits in front of an off-the-shelf (clean-trained) classifier ``f``; the
composite ``f o D`` is an ordinary base classifier, so Cohen et al.'s certificate applies unchanged.
S13 (rRCM, Lei et al.) folds denoising and classification into one consistent model; here the
denoiser is the classic MSE-trained residual CNN (DnCNN-style, Zhang et al., 2017).

Example::

    den = train_denoiser(digits_train, sigma=0.5, seed=0)
    clf = TorchClassifier(nn.Sequential(den, clean_net), 10, Domain(0, 1, (1, 8, 8)))
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from robustlab.core.errors import ConfigError
from robustlab.data.base import Dataset


class ResidualDenoiser(nn.Module):
    """``D(z) = z - r(z)``: a 3-layer conv net ``r`` predicts the noise (DnCNN-style)."""

    def __init__(self, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z - self.residual(z)


def train_denoiser(
    data: Dataset,
    *,
    sigma: float,
    seed: int = 0,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 64,
    width: int = 32,
) -> ResidualDenoiser:
    """Train a :class:`ResidualDenoiser` with MSE on ``x + N(0, sigma^2)`` (unclipped) -> ``x``."""
    if not sigma > 0:
        raise ConfigError(f"train_denoiser: sigma must be > 0, got {sigma!r}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ResidualDenoiser(data.x.shape[1], width)
    x = data.x
    assert isinstance(x, torch.Tensor)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            xb = x[perm[i : i + batch_size]]
            loss = F.mse_loss(net(xb + sigma * torch.randn(xb.shape, generator=g)), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()
