"""Structure comparison in torch, batched: Kabsch superposition, RMSD and TM-score.

Kabsch (Acta Cryst. A 1976): the rotation minimising the RMSD of two centred point sets, from the
SVD of their covariance (with the reflection fix). TM-score (Zhang & Skolnick, Proteins 2004):
``(1 / L) sum_i 1 / (1 + (d_i / d0)^2)``, ``d0 = 1.24 (L - 15)^(1/3) - 1.8`` (at least 0.5), here
under the Kabsch (RMSD-optimal) superposition: a lower bound of TM-align's score, which searches
the superposition maximising TM itself. Coordinates are C-alpha positions in Angstrom, ``[B, L, 3]``
(or ``[L, 3]``); both sets of a pair must have the same length (residues in correspondence).

Example::

    rmsd, tm = kabsch_rmsd(pred, ref), tm_score(pred, ref)
"""

from __future__ import annotations

import torch

from robustlab.core.errors import ConfigError


def _pair(p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    single = p.dim() == 2
    p, q = (t.double()[None] if single else t.double() for t in (p, q))
    if p.shape != q.shape or p.dim() != 3 or p.shape[-1] != 3 or p.shape[1] < 3:
        raise ConfigError(f"structures must be [B, L, 3] (L >= 3) and match: {tuple(p.shape)} "
                          f"vs {tuple(q.shape)}")  # fmt: skip
    if not (torch.isfinite(p).all() and torch.isfinite(q).all()):
        raise ConfigError("structures hold non-finite coordinates")
    return p, q, single


def superpose(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``p`` rotated and translated onto ``q`` (Kabsch), same shape as ``p``, float64."""
    p, q, single = _pair(p, q)
    pc, qc = p - p.mean(1, keepdim=True), q - q.mean(1, keepdim=True)
    u, _, vt = torch.linalg.svd(pc.transpose(1, 2) @ qc)
    d = torch.sign(torch.linalg.det(u @ vt))
    fix = torch.ones_like(u[:, 0])
    fix[:, -1] = d
    rot = (u * fix[:, None, :]) @ vt  # p_centred @ rot ~ q_centred
    out = pc @ rot + q.mean(1, keepdim=True)
    return out[0] if single else out


def kabsch_rmsd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """RMSD after optimal superposition, ``[B]`` (a scalar for single structures)."""
    pp, qq, single = _pair(p, q)
    r = ((superpose(pp, qq) - qq) ** 2).sum(-1).mean(-1).sqrt()
    return r[0] if single else r


def tm_score(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """TM-score of ``p`` against the reference ``q`` under the Kabsch superposition, ``[B]``."""
    pp, qq, single = _pair(p, q)
    n = qq.shape[1]
    d0 = max(1.24 * max(n - 15, 0) ** (1 / 3) - 1.8, 0.5)
    d = (superpose(pp, qq) - qq).norm(dim=-1)
    t = (1 / (1 + (d / d0) ** 2)).mean(-1)
    return t[0] if single else t
