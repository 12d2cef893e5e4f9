"""Representation similarity: linear CKA and RSA, batched over many layers or models.

**Linear CKA** (Kornblith, Norouzi, Lee & Hinton, ICML 2019, "Similarity of Neural Network
Representations Revisited", Eq. 1-5). For two representations of the same ``n`` examples,
``X [n, p]`` and ``Y [n, q]``, with ``K = X X^T``, ``L = Y Y^T`` and the centring matrix
``H = I - 1 1^T / n``::

    HSIC(K, L) = tr(K H L H) / (n - 1)^2
    CKA(X, Y)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

which for column-centred ``X`` and ``Y`` equals the feature-space form
``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` (:func:`linear_cka`; :func:`linear_cka_gram` is the
Gram-matrix form, both kept so the tests check one against the other). CKA lies in [0, 1], is 1
for ``X`` against itself and is invariant to orthogonal transforms and isotropic scaling of either
side (not to arbitrary invertible linear maps). :func:`cka_matrix` gives the CKA of every pair of
a list of representations at once: each centred Gram matrix ``H K H`` divided by its Frobenius
norm is one row of a matrix ``G``, and ``CKA = G G^T`` (one matrix product).

**RSA** (Kriegeskorte, Mur & Bandettini, Front. Syst. Neurosci. 2008, "Representational
similarity analysis"): each representation gives a representational dissimilarity matrix, the
correlation distance ``1 - pearson(x_i, x_j)`` between the examples' feature vectors (an example
whose features are constant has distance 1 to every other), and two representations are compared
by the Spearman rank correlation of their RDMs' upper triangles (:func:`rdm`, :func:`rsa`,
:func:`rsa_matrix`; ties get average ranks, as :func:`scipy.stats.spearmanr`).

Example::

    x = torch.randn(200, 30)
    linear_cka(x, x @ torch.linalg.qr(torch.randn(30, 30))[0])   # 1.0 (orthogonal map)
    cka_matrix([x, 2 * x, torch.randn(200, 5)])                  # [3, 3], ones on the diagonal
    rsa(x, x ** 3)                                                # RDM rank agreement
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from robustlab.core.errors import ConfigError

_EPS = 1e-12


def _as2d(x: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ConfigError(f"{who}: representations must be [n, features] tensors")
    return x.detach().flatten(1).to(torch.float64)


def _same_n(xs: Sequence[torch.Tensor], who: str) -> int:
    ns = {int(x.shape[0]) for x in xs}
    if len(ns) != 1:
        raise ConfigError(f"{who}: representations of different numbers of examples {sorted(ns)}")
    n = ns.pop()
    if n < 2:
        raise ConfigError(f"{who}: needs at least 2 examples, got {n}")
    return n


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA in the feature-space form ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` of
    the column-centred ``x [n, p]`` and ``y [n, q]`` (Kornblith et al. 2019, Eq. 5); 0 when
    either side is constant."""
    x, y = _as2d(x, "linear_cka"), _as2d(y, "linear_cka")
    _same_n([x, y], "linear_cka")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    num = torch.linalg.matrix_norm(y.T @ x) ** 2
    den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(num / den) if float(den) > _EPS else 0.0


def hsic(k: torch.Tensor, lmat: torch.Tensor) -> float:
    """The (biased) empirical HSIC ``tr(K H L H) / (n - 1)^2`` of two ``[n, n]`` Gram matrices
    (Gretton et al. 2005; Kornblith et al. 2019, Eq. 3), with ``H = I - 1 1^T / n`` built
    explicitly (a transcription of the formula, for reference)."""
    n = k.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    return float(torch.trace(k.double() @ h @ lmat.double() @ h) / (n - 1) ** 2)


def linear_cka_gram(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA from the Gram matrices ``K = X X^T``, ``L = Y Y^T`` through :func:`hsic`:
    ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (Kornblith et al. 2019, Eq. 4)."""
    x, y = _as2d(x, "linear_cka_gram"), _as2d(y, "linear_cka_gram")
    _same_n([x, y], "linear_cka_gram")
    k, lmat = x @ x.T, y @ y.T
    den = (hsic(k, k) * hsic(lmat, lmat)) ** 0.5
    return hsic(k, lmat) / den if den > _EPS else 0.0


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    """``H X X^T H`` (float64) as the Gram matrix of the column-centred features."""
    x = x - x.mean(0, keepdim=True)
    if x.shape[1] > 4 * x.shape[0]:  # wide layers: the n x n product is the cost, in float32
        return (x.float() @ x.float().T).double()
    return x @ x.T


def cka_matrix(
    xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor] | None = None
) -> torch.Tensor:
    """Linear CKA between every representation of ``xs`` and every one of ``ys`` (default
    ``xs``): ``[len(xs), len(ys)]``, all of the same ``n`` examples, from one matrix product of
    the normalised centred Gram matrices. A constant representation has CKA 0 with everything."""
    xs = [_as2d(x, "cka_matrix") for x in xs]
    ys_ = xs if ys is None else [_as2d(y, "cka_matrix") for y in ys]
    _same_n([*xs, *ys_], "cka_matrix")

    def rows(reps: list[torch.Tensor]) -> torch.Tensor:
        g = torch.stack([_centred_gram(r).flatten() for r in reps])
        norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
        return torch.where(norm > _EPS, g / norm.clamp_min(_EPS), torch.zeros_like(g))

    a = rows(xs)
    b = a if ys is None else rows(ys_)
    out = (a @ b.T).clamp(-1.0, 1.0)
    if ys is None:  # exactly 1 on the diagonal of a non-constant representation
        d = torch.linalg.vector_norm(a, dim=1) > 0
        out[d, d] = 1.0
    return out


def rdm(x: torch.Tensor) -> torch.Tensor:
    """The representational dissimilarity matrix ``1 - pearson(x_i, x_j)`` ``[n, n]`` of the
    examples' feature vectors (rows of ``x``); constant rows have correlation 0 with all others
    (and distance 0 to themselves)."""
    x = _as2d(x, "rdm")
    z = x - x.mean(1, keepdim=True)
    norm = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    z = torch.where(norm > _EPS, z / norm.clamp_min(_EPS), torch.zeros_like(z))
    d = 1.0 - z @ z.T
    d.fill_diagonal_(0.0)
    return d


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks of each row of ``v`` (ties share their mean rank, as scipy's rankdata);
    values are rounded to 12 decimals first, so dissimilarities equal up to float rounding tie."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(np.round(v.numpy(), 12), axis=1)).to(torch.float64)


def _upper(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    return rdm(x)[iu[0], iu[1]]


def rsa_matrix(
    xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor] | None = None
) -> torch.Tensor:
    """RSA between every representation of ``xs`` and of ``ys`` (default ``xs``): the Spearman
    correlation of their RDMs' upper triangles, ``[len(xs), len(ys)]``; 0 where an RDM is
    constant."""
    xs = list(xs)
    _same_n([*xs, *(ys or [])], "rsa_matrix")

    def rows(reps: Sequence[torch.Tensor]) -> torch.Tensor:
        r = _ranks(torch.stack([_upper(x) for x in reps]))
        r = r - r.mean(1, keepdim=True)
        norm = torch.linalg.vector_norm(r, dim=1, keepdim=True)
        return torch.where(norm > _EPS, r / norm.clamp_min(_EPS), torch.zeros_like(r))

    a = rows(xs)
    b = a if ys is None else rows(ys)
    return (a @ b.T).clamp(-1.0, 1.0)


def rsa(x: torch.Tensor, y: torch.Tensor) -> float:
    """RSA of two representations of the same examples (see :func:`rsa_matrix`)."""
    return float(rsa_matrix([x], [y])[0, 0])
