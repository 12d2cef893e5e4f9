"""Linear-relaxation (CROWN / DeepPoly) bounds of a ReLU chain over input boxes, batched.

Zhang et al., "Efficient Neural Network Robustness Certification with General Activation
Functions" (CROWN, NeurIPS 2018, arXiv:1811.00866); Singh et al., "An Abstract Domain for
Certifying Neural Networks" (DeepPoly, POPL 2019). Each pre-activation ``z_k`` of a
:class:`~robustlab.certify.milp_chain.ReluChain` is bounded by back-substituting a linear function
of it through the earlier layers down to the input, every ReLU with bounds ``l < 0 < u`` replaced
by two linear functions that enclose it on ``[l, u]``::

    alpha * z  <=  relu(z)  <=  u / (u - l) * (z - l)       (alpha = 1 if u > -l else 0)

(stable ReLUs are exact: ``h = z`` or ``h = 0``), and the resulting linear function of the input is
bounded over the box exactly (``A c +- |A| r``). Layer by layer, each layer's bounds feed the next
layer's relaxation. The bounds are intersected with interval arithmetic, so they are never looser
than IBP, and padded outward by ``PAD`` (relative) against float64 rounding. Everything is dense
float64 numpy over a batch of boxes ``[B, n]``: no per-example Python loop.

Example::

    chain = relu_chain(clf)
    pre = linear_bounds(chain, lo, hi)            # [(l_k, u_k)] per layer, each [B, n_k]
    m = margin_bounds(chain, lo, hi, pred, pre)   # [B, K] lower bounds of z_c - z_j
"""

from __future__ import annotations

import numpy as np

from robustlab.certify.milp_chain import ReluChain

# Outward padding of every bound, relative to its magnitude (+ absolute), against float64 rounding
# in the back-substitution (errors ~1e-13 for these sizes; the MILP tolerance is 1e-6).
PAD = 1e-10

__all__ = ["PAD", "linear_bounds", "margin_bounds", "unstable_counts"]


def _relax(lb: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per neuron ``(lower slope, upper slope, upper intercept)`` of ReLU on ``[lb, ub]``."""
    active, unstable = lb >= 0, (lb < 0) & (ub > 0)
    s = np.where(unstable, ub / np.where(unstable, ub - lb, 1.0), active.astype(float))
    alpha = np.where(unstable, (ub > -lb).astype(float), active.astype(float))
    return alpha, s, np.where(unstable, -s * lb, 0.0)


def _back(
    chain: ReluChain,
    a: np.ndarray,
    const: np.ndarray,
    k: int,
    pre: list[tuple[np.ndarray, np.ndarray]],
    lo: np.ndarray,
    hi: np.ndarray,
) -> np.ndarray:
    """Lower bound over the boxes of ``a @ h_{k-1} + const`` (``a``: [B, m, n_{k-1}]).

    ``h_{k-1}`` is the post-ReLU output of layer ``k-1`` (the input when ``k == 0``)."""
    for m in range(k - 1, -1, -1):
        alpha, s, t = _relax(*pre[m])  # h_m = relu(z_m)
        pos, neg = np.maximum(a, 0), np.minimum(a, 0)
        const = const + np.einsum("bij,bj->bi", neg, t)
        a = pos * alpha[:, None, :] + neg * s[:, None, :]
        const = const + a @ chain.biases[m]  # z_m = W_m h_{m-1} + b_m
        a = a @ chain.weights[m]
    c, r = (hi + lo) / 2, (hi - lo) / 2
    return np.einsum("bij,bj->bi", a, c) - np.einsum("bij,bj->bi", np.abs(a), r) + const


def _pad(v: np.ndarray, sign: float) -> np.ndarray:
    return v + sign * PAD * (1.0 + np.abs(v))


def linear_bounds(
    chain: ReluChain, lo: np.ndarray, hi: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """CROWN bounds ``[(l_k, u_k)]`` of every hidden pre-activation for input boxes ``[B, n]``.

    Sound for every input of each box, and within the interval bounds of
    :meth:`ReluChain.bounds` (intersected with them). The first layer's bounds are the
    interval ones (exact for an affine map of a box)."""
    ibp = chain.bounds(lo, hi)[:-1]
    pre = [ibp[0]] if ibp else []
    bsz = lo.shape[0]
    for k in range(1, len(ibp)):
        w, b = chain.weights[k], chain.biases[k]
        a = np.broadcast_to(w, (bsz, *w.shape))
        const = np.broadcast_to(b, (bsz, len(b)))
        low = _back(chain, np.concatenate([a, -a], 1), np.concatenate([const, -const], 1), k,
                    pre, lo, hi)  # fmt: skip
        n = len(b)
        l_k = np.maximum(_pad(low[:, :n], -1.0), ibp[k][0])
        u_k = np.minimum(_pad(-low[:, n:], 1.0), ibp[k][1])
        pre.append((l_k, np.maximum(u_k, l_k)))
    return pre


def margin_bounds(
    chain: ReluChain,
    lo: np.ndarray,
    hi: np.ndarray,
    c: np.ndarray,
    pre: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Lower bounds ``[B, K]`` of ``z_c - z_j`` over each box (``c``: [B] classes; ``+inf`` at ``c``).

    The difference is folded into the last layer (elision) and back-substituted with the hidden
    bounds ``pre`` (default :func:`linear_bounds`); the result is at least the interval bound."""
    pre = linear_bounds(chain, lo, hi) if pre is None else pre
    w, b = chain.weights[-1], chain.biases[-1]
    c = np.asarray(c, dtype=int)
    spec_w = w[c][:, None, :] - w[None]  # [B, K, n]
    spec_b = b[c][:, None] - b[None]
    low = _pad(_back(chain, spec_w, spec_b, len(chain.weights) - 1, pre, lo, hi), -1.0)
    if pre:  # interval bound of the folded last layer on the hidden bounds
        h_lo, h_hi = np.maximum(pre[-1][0], 0), np.maximum(pre[-1][1], 0)
        cen, rad = (h_hi + h_lo) / 2, (h_hi - h_lo) / 2
        ibp = (np.einsum("bkn,bn->bk", spec_w, cen) - np.einsum("bkn,bn->bk", np.abs(spec_w), rad)
               + spec_b)  # fmt: skip
        low = np.maximum(low, ibp)
    low[np.arange(len(c)), c] = np.inf
    return low


def unstable_counts(pre: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Unstable ReLUs (``l < 0 < u``) per example and layer, ``[B, L-1]``."""
    return np.stack([((lb < 0) & (ub > 0)).sum(1) for lb, ub in pre], 1)
