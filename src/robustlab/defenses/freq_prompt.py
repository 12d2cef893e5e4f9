"""Test-time frequency-domain prompts (S6; Huang et al., 2023, "Improving Adversarial Robustness of
Masked Autoencoders via Test-time Frequency-domain Prompting").

The defence keeps a trained classifier frozen and puts, in front of it, one additive *prompt* per
cluster of the training data. A prompt lives in the medium/high-frequency band of the 2-D Fourier
spectrum: it is ``irfft2(mask * (a + i b))`` with learnable coefficients ``a, b`` and a fixed band
``mask`` (frequencies whose normalised radius is at least ``band``). The seed's idea: fill the
medium/high frequencies, where the base model is sensitive, with dataset-derived content, so that
an adversary has less room there. At test time an input's cluster is the nearest prototype (k-means
centroid) of its features -- the frozen model's logits (``features="logits"``, the seed clusters a
frozen model's features) or its pixels -- and that cluster's prompt is added before the base model.

Adaptive attacks: the prototype selection is a piecewise-constant choice (an ``argmin``); the
forward pass computes it without gradient and the gradient flows through the prompt addition and
the base model with the selection fixed at the current point -- the BPDA-style gradient, which here
is also the exact gradient almost everywhere. Every attack on the wrapped module therefore goes
end to end through the whole defence (selection included: each step re-selects the prompt for the
current adversarial point).

Example::

    from robustlab.defenses.freq_prompt import FreqPromptNet
    net = FreqPromptNet(base_module, shape=(1, 8, 8), clusters=8, band=0.25)
    net.set_prototypes(kmeans(net.features(x_train), 8, seed=0)[0])
    logits = net(x)        # raw inputs in [0, 1]; normalisation (if any) is inside
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from robustlab.core.errors import ConfigError

Features = Literal["logits", "pixels"]


def band_mask(height: int, width: int, band: float) -> torch.Tensor:
    """``[height, width // 2 + 1]`` float mask of the ``rfft2`` grid: 1 where the normalised
    frequency radius ``sqrt(fy^2 + fx^2) / sqrt(0.5)`` (0 at DC, 1 at the highest diagonal
    frequency) is at least ``band`` (the medium/high band), 0 below it."""
    fy = torch.fft.fftfreq(height).abs().view(-1, 1)
    fx = torch.fft.rfftfreq(width).view(1, -1)
    radius = (fy**2 + fx**2).sqrt() / 0.5**0.5
    return (radius >= band).float()


def kmeans(
    feats: torch.Tensor,
    k: int,
    seed: int = 0,
    iters: int = 30,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding (deterministic under ``seed``) on ``feats`` ``[N, D]``
    (or from the given ``init`` centres ``[k, D]``).

    Returns ``(centroids [k, D], assignment [N])``. A cluster that empties keeps its centroid.
    """
    n = len(feats)
    if k > n:
        raise ConfigError(f"k-means: {k} clusters need at least {k} examples, got {n}")
    x = feats.detach().float().cpu()
    centres = _kmeans_pp(x, k, seed) if init is None else init.detach().float().cpu().clone()
    assign = torch.cdist(x, centres).argmin(1)
    for _ in range(iters):
        onehot = torch.nn.functional.one_hot(assign, k).float()  # [N, k]
        counts = onehot.sum(0)
        sums = onehot.T @ x
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        new_assign = torch.cdist(x, new).argmin(1)
        centres = new
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return centres, assign


def _kmeans_pp(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): each next centre drawn with probability
    proportional to the squared distance to the nearest centre so far."""
    n = len(x)
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(n, (1,), generator=g)]
    d2 = torch.cdist(x, centres).squeeze(1) ** 2
    for _ in range(1, k):
        p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        nxt = x[torch.multinomial(p, 1, generator=g)]
        centres = torch.cat([centres, nxt])
        d2 = torch.minimum(d2, (torch.cdist(x, nxt).squeeze(1)) ** 2)
    return centres


class FreqPromptNet(nn.Module):
    """A frozen ``base`` module behind cluster-selected, band-limited additive prompts.

    ``forward(x)``: cluster = nearest prototype of ``features(x)`` (no gradient), then
    ``base(normalise(x + prompt[cluster]))``. Parameters: ``coef_re``, ``coef_im`` ``[clusters,
    C, H, W // 2 + 1]`` (zero at construction: the prompts start at 0 and the model equals its
    base). Buffers: ``prototypes`` ``[clusters, D]`` (set by :meth:`set_prototypes`; saved with
    the weights), ``mask`` (the band), ``mean``/``std`` (the base adapter's normalisation).
    The base stays in eval mode even when the wrapper is put in train mode (its BatchNorm
    statistics never change).
    """

    def __init__(
        self,
        base: nn.Module,
        shape: Sequence[int],
        clusters: int,
        band: float = 0.25,
        features: Features = "logits",
        num_classes: int = 10,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ConfigError(f"frequency prompts need images [C, H, W], got input shape {shape}")
        c, h, w = (int(v) for v in shape)
        self.base = base.eval()
        self.shape = (c, h, w)
        self.features_kind = features
        mask = band_mask(h, w, band)
        if not mask.any():
            raise ConfigError(f"band {band} leaves no frequency of a {h}x{w} image to prompt")
        self.register_buffer("mask", mask)
        self.coef_re = nn.Parameter(torch.zeros(clusters, c, h, w // 2 + 1))
        self.coef_im = nn.Parameter(torch.zeros(clusters, c, h, w // 2 + 1))
        dim = num_classes if features == "logits" else c * h * w
        self.register_buffer("prototypes", torch.zeros(clusters, dim))
        self.register_buffer("mean", _channels(mean, 0.0, c))
        self.register_buffer("std", _channels(std, 1.0, c))
        self.soft: float | None = None  # see soft_selection

    def soft_selection(self, temperature: float | None) -> FreqPromptNet:
        """Make the selection differentiable for an *attack surrogate* (None: the real, hard one).

        With a ``temperature`` the forward pass adds the softmax(-distance^2 / temperature)
        weighted mix of the prompts, with the gradient through the features too, so an attack
        can also steer *which* prompt is chosen; its adversarial examples are then judged on the
        hard model (a BPDA-style differentiable approximation, Athalye et al., 2018).
        """
        self.soft = temperature
        return self

    def train(self, mode: bool = True) -> FreqPromptNet:
        super().train(mode)
        self.base.eval()  # frozen: BatchNorm keeps its running statistics
        return self

    def prompts(self) -> torch.Tensor:
        """All prompts in pixel space, ``[clusters, C, H, W]`` (differentiable in the coefficients)."""
        spec = torch.complex(self.coef_re, self.coef_im) * self.mask
        return torch.fft.irfft2(spec, s=self.shape[1:], norm="ortho")

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        return self.base((x - self.mean) / self.std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The clustering features of raw inputs ``x``: the frozen base's logits or the pixels."""
        with torch.no_grad():
            if self.features_kind == "pixels":
                return x.flatten(1).float()
            return self._base(x).float()

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest prototype for each input (int64 ``[B]``); piecewise constant."""
        return torch.cdist(self.features(x), self.prototypes).argmin(1)

    def set_prototypes(self, centroids: torch.Tensor) -> None:
        """Store k-means ``centroids`` ``[clusters, D]`` as the prototypes."""
        if centroids.shape != self.prototypes.shape:
            raise ConfigError(f"prototypes of shape {tuple(centroids.shape)}, expected "
                              f"{tuple(self.prototypes.shape)}")  # fmt: skip
        self.prototypes.copy_(centroids.to(self.prototypes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.soft is not None:
            feats = x.flatten(1) if self.features_kind == "pixels" else self._base(x)
            w = torch.softmax(
                -(torch.cdist(feats.float(), self.prototypes) ** 2) / self.soft, dim=1
            )
            return self._base(x + torch.einsum("bk,kchw->bchw", w, self.prompts()))
        sel = self.select(x)  # no gradient: BPDA-style, the selection is held fixed
        return self._base(x + self.prompts()[sel])


def _channels(v: torch.Tensor | None, default: float, c: int) -> torch.Tensor:
    t = torch.full((c,), default) if v is None else torch.as_tensor(v).detach().cpu().float()
    return t.reshape(-1).expand(c).clone().view(1, c, 1, 1)
