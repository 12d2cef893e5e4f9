"""A small convolutional Gaussian denoiser, for denoised smoothing (Salman et al., NeurIPS 2020).

Denoised smoothing certifies ``g(x) = argmax_c P(f(D(x + e)) = c)``: a denoiser ``D`` trained to remove
``N(0, sigma^2 I)`` noise sits in front of an off-the-shelf (clean-trained, frozen) classifier ``f``;
the composite ``f o D`` is an ordinary base classifier, so Cohen et al.'s certificate applies
unchanged. S13 (rRCM, Lei et al.) folds denoising and classification into one consistent model;
here the denoiser is the classic residual CNN (DnCNN-style, Zhang et al., 2017).

This module holds the architecture (:class:`ResidualDenoiser`, :class:`Denoised`) and the two
objectives of Salman et al. (:func:`denoiser_loss`: MSE, and "stability", the cross-entropy of the
frozen classifier on the denoised noisy input against its prediction on the clean input). Training
runs in robustlab's one loop through the trainer ``denoiser`` (:mod:`robustlab.training.denoise`)
on the base model ``denoised``; ``digits-cnn-denoised`` is such a ``trained`` spec.

Example::

    clf = models.create("denoised", {"classifier": {"name": "digits-cnn"}, "width": 32})
    clf.module.denoiser, clf.module.classifier   # the trainable part, the frozen part
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

OBJECTIVES = ("mse", "stability")


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


class Denoised(nn.Module):
    """``classifier(normalize(denoiser(z)))``: a denoiser in front of a classifier module whose
    input normalization (``mean``/``std`` per channel, None for none) is applied in between."""

    def __init__(
        self,
        denoiser: nn.Module,
        classifier: nn.Module,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.classifier = classifier
        self.register_buffer("mean", None if mean is None else mean.detach().view(1, -1, 1, 1))
        self.register_buffer("std", None if std is None else std.detach().view(1, -1, 1, 1))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's logits on images ``x`` in the raw input scale (no denoising)."""
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return self.classifier(x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.classify(self.denoiser(z))


def denoiser_loss(
    net: Denoised, x: torch.Tensor, noisy: torch.Tensor, objective: str = "mse"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Salman et al.'s objective for ``net.denoiser`` on clean ``x`` and its ``noisy`` copy:
    ``mse`` -- ||D(noisy) - x||^2 (mean); ``stability`` -- CE(f(D(noisy)), argmax f(x)) through
    the frozen classifier ``f``. Returns ``(loss, logits of f(D(noisy)))``, the logits detached."""
    den = net.denoiser(noisy)
    if objective == "mse":
        with torch.no_grad():
            logits = net.classify(den)
        return F.mse_loss(den, x), logits
    with torch.no_grad():
        target = net.classify(x).argmax(1)
    logits = net.classify(den)
    return F.cross_entropy(logits, target), logits.detach()
