"""Neural activation patterns as specifications (Geng et al., "Towards Reliable Neural
Specifications", ICML 2023, arXiv:2210.16114; S27).

A neural activation pattern (NAP) of class ``c`` fixes the phase of some ReLU neurons: a neuron is
*active* in ``NAP_c`` if it is active (pre-activation > 0) on at least a fraction ``delta`` of the
class's training examples, *inactive* if it is inactive on at least ``delta`` of them, and free
otherwise (the paper's statistical, delta-relaxed mining). An input *matches* ``NAP_c`` if every
fixed neuron has the pattern's phase. Specification: "no input of a region (by default the whole
input domain) that matches ``NAP_c`` is classified as another class", verified exactly with the
MILP of :mod:`robustlab.certify.milp` with the pattern's ReLU phases fixed.

Phase boundaries: one definition, :func:`robustlab.certify.milp.follows_phases`, used by
:func:`matches` and by the verifier's counterexample check. Phases are *closed* and evaluated on the
float64 chain without tolerance: active means pre-activation ``>= 0``, inactive ``<= 0`` (a neuron
at exactly 0 has both phases). That is the set the MILP encodes (it cannot express ``> 0``), so a
proof covers the paper's half-open set too. A counterexample must follow the pattern exactly under
this definition, not strictly: one exactly on a boundary counts (it lies in the verified set). The
solver's point usually lies on boundaries (an LP vertex) where rounding can put it on either side;
the verifier then returns an interior point of its linear region (largest slack of the phases and of
the misclassification margin), and UNDECIDED when neither point follows the pattern. Mining counts a
neuron active when its pre-activation is ``> 0``, so every mined example with the pattern's phase
matches.

Example::

    naps = mine_naps(clf, train.x, train.y, delta=0.99)
    recall = nap_recall(clf, naps, test.x, test.y)          # {class: fraction matching}
    status, margin, x_cex = verify_nap(clf, naps[3])         # ROBUST: NAP_3 implies class 3
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab.certify.base import require_positive
from robustlab.certify.milp import ReluChain, follows_phases, relu_chain, verify
from robustlab.core.errors import ConfigError


@dataclass
class NAP:
    """Phases of the hidden ReLU neurons (layers concatenated): +1 active, -1 inactive, 0 free."""

    label: int
    phases: np.ndarray
    delta: float

    @property
    def size(self) -> int:
        """Number of neurons the pattern fixes."""
        return int(np.count_nonzero(self.phases))


def pre_activations(chain: ReluChain, x: torch.Tensor) -> np.ndarray:
    """``[B, hidden]`` float64 pre-activations of the hidden ReLUs (layers concatenated)."""
    h = x.detach().cpu().double().flatten(1).numpy()
    out = []
    for w, b in zip(chain.weights[:-1], chain.biases[:-1], strict=True):
        out.append(h @ w.T + b)
        h = np.maximum(out[-1], 0)
    return np.concatenate(out, axis=1)


def activations(chain: ReluChain, x: torch.Tensor) -> np.ndarray:
    """``[B, hidden]`` bool: which hidden ReLUs are active (pre-activation > 0), batched."""
    return pre_activations(chain, x) > 0


def mine_naps(model: Any, x: torch.Tensor, y: torch.Tensor, delta: float = 0.99) -> dict[int, NAP]:
    """Mine one NAP per class present in ``y`` with the statistical threshold ``delta``."""
    if not 0.5 < delta <= 1:
        raise ConfigError(f"mine_naps: delta must lie in (0.5, 1], got {delta!r}")
    act = activations(relu_chain(model), x)
    labels = y.cpu().numpy()
    naps = {}
    for c in np.unique(labels):
        freq = act[labels == c].mean(axis=0)
        phases = np.where(freq >= delta, 1, np.where(1 - freq >= delta, -1, 0)).astype(np.int8)
        naps[int(c)] = NAP(int(c), phases, delta)
    return naps


def matches(
    model: Any, nap: NAP, x: torch.Tensor, tol: float = 0.0, chain: ReluChain | None = None
) -> torch.Tensor:
    """``[B]`` bool: inputs matching ``nap``: float64 pre-activation ``>= 0`` where the pattern says
    active, ``<= 0`` where it says inactive (:func:`~robustlab.certify.milp.follows_phases`, the
    closed set :func:`verify_nap` verifies). ``tol > 0`` widens both phases by ``tol`` (e.g. for
    inputs that went through float32); ``chain``: the model's chain, if already built."""
    z = pre_activations(chain or relu_chain(model), x)
    return torch.from_numpy(follows_phases(z + tol * np.sign(nap.phases), nap.phases))


def nap_recall(
    model: Any, naps: dict[int, NAP], x: torch.Tensor, y: torch.Tensor
) -> dict[int, float]:
    """Per class ``c``: the fraction of examples of class ``c`` that match ``NAP_c``."""
    out = {}
    for c, nap in naps.items():
        sel = y.cpu() == c
        if bool(sel.any()):
            out[c] = float(matches(model, nap, x[sel]).float().mean())
    return out


def verify_nap(
    model: Any,
    nap: NAP,
    x: torch.Tensor | None = None,
    eps: float | None = None,
    time_limit: float = 60.0,
) -> tuple[int, float, np.ndarray | None]:
    """Verify "every input of the region matching ``nap`` is classified ``nap.label``".

    The region is the model's whole input domain, or the Linf ball of radius ``eps`` around the
    single input ``x`` (``[1, ...]``) intersected with it. Returns ``(status, margin_lb, x_cex)`` as
    :func:`robustlab.certify.milp.verify`: ROBUST (0), COUNTEREXAMPLE (1, with an input that
    matches the pattern and gets another class) or UNDECIDED (2, ``time_limit`` reached).
    """
    require_positive("verify_nap", time_limit=time_limit)
    chain = relu_chain(model)
    d = model.domain
    n = chain.weights[0].shape[1]
    lo, hi = np.full(n, float(d.lo)), np.full(n, float(d.hi))
    if x is not None or eps is not None:
        if x is None or eps is None or x.shape[0] != 1:
            raise ConfigError(
                "verify_nap: pass both a single input x ([1, ...]) and eps, or neither"
            )
        require_positive("verify_nap", eps=eps)
        c = x.detach().cpu().double().flatten().numpy()
        lo, hi = np.maximum(lo, c - eps), np.minimum(hi, c + eps)
    return verify(chain, lo, hi, nap.label, time_limit, phases=nap.phases.astype(np.float64))
