"""Black-box tuning of frozen features: linear probe, MLP tuning and NMTune (S38).

Chen, Wang, Shah, Tao, Wei, Xie, Sugiyama & Raj, "Understanding and Mitigating the Label Noise in
Pre-training on Downstream Tasks", ICLR 2024 (Sec. 4, NMTune). A feature extractor pre-trained on
noisy labels is used as a black box: its features ``F`` of the downstream data are read once (no
gradients into it), and only a small module on top is trained:

- ``linear-probe``: a linear classifier on ``F`` (cross-entropy);
- ``mlp``: ``Z = F + s * MLP(F)`` (a residual MLP, Linear-BatchNorm-ReLU-Linear, learnable
  per-dimension scale ``s``) and a linear classifier on ``Z``, cross-entropy only (the paper's
  "MLP tuning" ablation);
- ``nmtune``: the same module trained with NMTune's objective

      L = L_CE + w_mse L_MSE + w_cov L_COV + w_svd L_SVD
      L_MSE = || F / ||F|| - Z / ||Z|| ||^2              (consistency with the pre-trained features)
      L_COV = 1/D sum_{i != j} C(Z)_ij^2                 (decorrelate: covariance off-diagonals)
      L_SVD = - mean_{j <= k} sigma_j / sum_i sigma_i    (keep the dominant singular values large)

  with ``C(Z)`` the batch covariance of ``Z`` and ``sigma`` the singular values of the batch of
  ``Z``. As in the authors' code (``src/models/nml_tune.py``): the MSE term is the mean squared
  error between the L2-normalised rows (``torch.nn.MSELoss`` on ``F.normalize``), ``L_COV``
  divides the summed squared off-diagonals by ``D``, and ``L_SVD`` averages the top ``k = 5``
  normalised singular values.

:func:`features` reads the input of the last ``nn.Linear`` of a torch classifier (its penultimate
representation). The registered model ``feature-tuned`` (:mod:`robustlab.models.feature_tuned`)
trains a head once per spec and caches it in robustlab.training's cache folder
(:class:`~robustlab.training.checkpoint.TrainingFolder`); the resulting classifier is end-to-end
differentiable (attacks and corruptions go through the frozen extractor and the head).

Example::

    from robustlab.training.nmtune import features, fit_head
    f = features(pretrained, x)                      # [N, D], read once, no gradients
    head, history = fit_head(f, y, 10, method="nmtune", epochs=50, seed=0)
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.rng import seed_from

Method = Literal["linear-probe", "mlp", "nmtune"]


def _last_linear(net: nn.Module) -> nn.Linear:
    last = None
    for m in net.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise CapabilityError(
            f"black-box feature tuning reads the input of the model's last nn.Linear layer; "
            f"{type(net).__name__} has none"
        )
    return last


class FeatureExtractor(nn.Module):
    """The frozen penultimate representation of a torch classifier (a copy of its module):
    ``forward(x)`` returns the input of its last ``nn.Linear`` (the classifier's normalisation applied first). Always in
    eval mode, parameters never trained; input gradients flow (for attacks through it)."""

    def __init__(self, clf: Any) -> None:
        super().__init__()
        if not isinstance(getattr(clf, "module", None), nn.Module):
            raise CapabilityError(
                f"feature tuning needs a torch classifier to read features from, got "
                f"{type(clf).__name__}"
            )
        self.net = copy.deepcopy(clf.module)  # never freeze a module its factory may share
        self.dim = _last_linear(self.net).in_features
        for p in self.net.parameters():
            p.requires_grad_(False)
        mean = None if clf.mean is None else clf.mean.detach().flatten()
        std = None if clf.std is None else clf.std.detach().flatten()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Stays in eval mode (BatchNorm keeps its pre-training statistics)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, *([1] * (x.dim() - 2)))
        if self.mean is not None:
            x = x - self.mean.view(shape)
        if self.std is not None:
            x = x / self.std.view(shape)
        captured: list[torch.Tensor] = []
        hook = _last_linear(self.net).register_forward_pre_hook(
            lambda _m, args: captured.append(args[0])
        )
        try:
            self.net(x)
        finally:
            hook.remove()
        return captured[-1].flatten(1)


@torch.no_grad()
def features(clf: Any, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """The frozen features ``[N, D]`` of ``x`` (the input of the last ``nn.Linear`` of
    ``clf.module``), computed once without gradients in chunks of ``chunk``."""
    ext = FeatureExtractor(clf)
    dev = clf.device
    return torch.cat([ext(x[i : i + chunk].to(dev)) for i in range(0, len(x), chunk)])


class Head(nn.Module):
    """What is trained on the features: a linear classifier (``linear-probe``), or the residual MLP
    transform ``z = f + s * MLP(f)`` followed by a linear classifier (``mlp``, ``nmtune``)."""

    def __init__(
        self, dim: int, num_classes: int, method: Method, hidden: int, scale_init: float = 1.0
    ) -> None:
        super().__init__()
        self.method = method
        if method == "linear-probe":
            self.mlp = None
        else:
            self.mlp = nn.Sequential(
                nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim)
            )
            self.scale = nn.Parameter(torch.full((1, dim), float(scale_init)))
        self.fc = nn.Linear(dim, num_classes)

    def transform(self, f: torch.Tensor) -> torch.Tensor:
        """The tuned features ``z`` (``f`` itself for the linear probe)."""
        return f if self.mlp is None else f + self.scale * self.mlp(f)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.transform(f))


class Tuned(nn.Module):
    """Frozen extractor + trained head: the downstream classifier, differentiable end to end."""

    def __init__(self, extractor: FeatureExtractor, head: Head) -> None:
        super().__init__()
        self.extractor = extractor
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.extractor(x))


def _off_diagonal(c: torch.Tensor) -> torch.Tensor:
    n = c.shape[0]
    return c.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def nmtune_terms(f: torch.Tensor, z: torch.Tensor, top_k: int = 5) -> dict[str, torch.Tensor]:
    """NMTune's three regularisers on a batch (see the module docstring): ``mse`` (consistency of
    the normalised tuned features ``z`` with the pre-trained ``f``), ``cov`` (squared covariance
    off-diagonals of ``z`` over its dimension), ``svd`` (minus the mean of the top ``top_k``
    singular values of ``z`` over their sum)."""
    if len(z) < 2:
        raise ConfigError("NMTune's covariance term needs batches of at least 2 examples")
    mse = F.mse_loss(F.normalize(z, dim=1), F.normalize(f, dim=1))
    zc = z - z.mean(dim=0)
    cov = (zc.T @ zc) / (len(z) - 1)
    cov_term = _off_diagonal(cov).pow(2).sum() / z.shape[1]
    s = torch.linalg.svdvals(z)
    svd = -(s / s.sum())[:top_k].mean()
    return {"mse": mse, "cov": cov_term, "svd": svd}


def fit_head(
    f: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    method: Method = "nmtune",
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 256,
    hidden: int | None = None,
    mse: float = 1.0,
    cov: float = 1.0,
    svd: float = 1.0,
    top_k: int = 5,
    scale_init: float = 1.0,
    seed: int = 0,
) -> tuple[Head, list[dict[str, float]]]:
    """Train a :class:`Head` on frozen features ``f`` ``[N, D]`` with labels ``y`` (Adam, ``lr``,
    ``epochs`` passes in batches of ``batch_size``, order and init from ``seed``); ``mse``,
    ``cov``, ``svd``: NMTune's regulariser weights (used by ``nmtune`` only). Returns the head (in
    eval mode) and per-epoch mean losses."""
    if method not in ("linear-probe", "mlp", "nmtune"):
        raise ConfigError(f"feature tuning method must be linear-probe, mlp or nmtune, got {method!r}")  # fmt: skip
    if f.dim() != 2 or len(f) != len(y):
        raise ConfigError(f"features must be [N, D] with N = {len(y)} labels, got {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise ConfigError("the frozen features contain non-finite values")
    f, y = f.detach(), y.to(f.device).long()
    dim = f.shape[1]
    with torch.random.fork_rng(devices=[f.device] if f.device.type == "cuda" else []):
        torch.manual_seed(seed_from("feature-head", method, seed))
        head = Head(dim, num_classes, method, hidden or dim, scale_init).to(f.device)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed_from("feature-head-order", seed))
    history = []
    n = len(f)
    bs = min(batch_size, n)
    for epoch in range(1, epochs + 1):
        head.train()
        perm = torch.randperm(n, generator=gen).to(f.device)
        sums = dict.fromkeys(("loss", "ce", "mse", "cov", "svd"), 0.0)
        batches = 0
        for i in range(0, n - (n % bs if n % bs == 1 else 0), bs):  # no 1-example batch (BN)
            idx = perm[i : i + bs]
            fb, yb = f[idx], y[idx]
            z = head.transform(fb)
            ce = F.cross_entropy(head.fc(z), yb)
            loss = ce
            if method == "nmtune":
                terms = nmtune_terms(fb, z, top_k)
                loss = ce + mse * terms["mse"] + cov * terms["cov"] + svd * terms["svd"]
                for k, v in terms.items():
                    sums[k] += float(v.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["loss"] += float(loss.detach())
            sums["ce"] += float(ce.detach())
            batches += 1
        row = {"epoch": epoch, **{k: v / batches for k, v in sums.items()}}
        if not math.isfinite(row["loss"]):
            raise ConfigError(f"feature tuning diverged at epoch {epoch} (loss {row['loss']}); lower lr")  # fmt: skip
        history.append(row)
    head.eval()
    return head, history


def spectrum(z: torch.Tensor) -> dict[str, float]:
    """The paper's feature-space diagnostics of ``z`` ``[N, D]``: singular value entropy
    ``SVE = -sum_i q_i log q_i`` and largest singular value ratio ``LSVR = -log q_1``, with
    ``q = sigma / sum(sigma)``."""
    s = torch.linalg.svdvals(z.double())
    q = s / s.sum()
    q = q[q > 0]
    return {"sve": float(-(q * q.log()).sum()), "lsvr": float(-q[0].log())}
