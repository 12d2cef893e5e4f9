"""Small value types shared by every component: input domains, threat models, results.

The tensor types live here; the parameter and level domains live in modules that import no torch
(:mod:`robustlab.core.params`, :mod:`robustlab.core.levels`) and are re-exported here, so
``from robustlab.core.types import PositiveInt, Levels`` keeps working.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from robustlab.core.errors import ConfigError, DomainError
from robustlab.core.levels import (
    EDIT_RATE,
    INT64_MAX,
    SEED_MAX,
    VARIANT,
    WORD_EDITS,
    Levels,
)
from robustlab.core.params import (
    AllowNonFinite,
    Finite,
    Fraction,
    NonNegative,
    NonNegativeInt,
    Norm,
    NormName,
    Positive,
    PositiveInt,
    Rate,
    Seed,
    parse_norm,
)

__all__ = [
    "EDIT_RATE", "INT64_MAX", "SEED_MAX", "VARIANT", "WORD_EDITS", "AllowNonFinite",
    "AttackResult", "Capabilities", "Certificate", "Domain", "Finite", "Fraction", "Levels",
    "NonNegative", "NonNegativeInt", "Norm", "NormName", "Positive", "PositiveInt", "Rate",
    "Seed", "ThreatModel", "lp_norm", "lp_project", "parse_norm",
]  # fmt: skip


@dataclass(frozen=True)
class Domain:
    """The set of valid inputs of a model: a box ``[lo, hi]`` of a per-example ``shape``.

    The adapter declares it; attacks and perturbations keep their outputs inside it, and the runner
    refuses data outside it (a common source of wrong numbers is attacking in normalized space).
    ``shape`` is per example, without the batch dimension; ``None`` entries match any size.
    """

    lo: float = 0.0
    hi: float = 1.0
    shape: tuple[int | None, ...] | None = None
    dtype: torch.dtype = torch.float32

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.lo, self.hi)

    def check(self, x: torch.Tensor, what: str = "input", tol: float = 1e-6) -> None:
        """Raise :class:`DomainError` if ``x`` (a batch) does not fit this domain."""
        # fast path first: at batch 1 every op between two model passes runs on caches the pass
        # just evicted, so this check is kept to one comparison and one fused reduction
        if self.shape is not None and x.shape[1:] != self.shape:
            got = tuple(x.shape[1:])
            ok = len(got) == len(self.shape) and all(
                s is None or s == g for s, g in zip(self.shape, got, strict=True)
            )
            if not ok:
                hint = ""
                if len(got) == len(self.shape) == 3 and got[-1] == self.shape[0]:
                    hint = " (channels last? expected channels first, NCHW)"
                raise DomainError(
                    f"{what} has per-example shape {got}, model expects {self.shape}{hint}"
                )
        if x.numel() == 0:
            return
        # one fused pass: NaN propagates into min and max, inf shows in them; on an accelerator
        # both are read in one device sync, on the CPU two scalar reads are cheaper than a stack
        ext = torch.aminmax(x)
        if x.device.type == "cpu":
            lo, hi = ext[0].item(), ext[1].item()
        else:
            lo, hi = torch.stack(ext).tolist()
        if lo != lo or hi != hi or math.isinf(lo) or math.isinf(hi):
            raise DomainError(f"{what} contains NaN or inf values")
        if lo < self.lo - tol or hi > self.hi + tol:
            raise DomainError(
                f"{what} values lie in [{lo:.4g}, {hi:.4g}], outside the model's input domain "
                f"[{self.lo:g}, {self.hi:g}]; pass raw inputs and let the adapter normalize"
            )


@dataclass(frozen=True)
class ThreatModel:
    """An Lp ball of radius ``eps`` around each input, intersected with the input domain."""

    norm: str = "inf"
    eps: float = 8 / 255

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", parse_norm(self.norm))
        if not (isinstance(self.eps, int | float) and self.eps >= 0 and math.isfinite(self.eps)):
            raise ConfigError(f"threat model eps must be a finite number >= 0, got {self.eps!r}")

    def project(self, x_adv: torch.Tensor, x: torch.Tensor, domain: Domain) -> torch.Tensor:
        """Project ``x_adv`` onto the ball around ``x`` and then into ``domain`` (batched)."""
        delta = lp_project(x_adv - x, self.norm, self.eps)
        return domain.clip(x + delta)

    def sample(self, x: torch.Tensor, domain: Domain, uniform: torch.Tensor) -> torch.Tensor:
        """A random point of the ball, from ``uniform`` noise in [0, 1) of ``x``'s shape."""
        if self.norm == "inf":
            delta = (2 * uniform - 1) * self.eps
        else:
            # direction from the uniform noise mapped to [-1, 1], radius eps * u^(1/d)
            d = (2 * uniform - 1).flatten(1)
            n = x[0].numel()
            d = d / lp_norm(d, self.norm).clamp_min(1e-12)[:, None]
            r = uniform.flatten(1)[:, :1] ** (1.0 / n)
            delta = (d * r * self.eps).view_as(x)
        return domain.clip(x + delta)

    def distance(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-example Lp distance between two batches."""
        return lp_norm((x_adv - x).flatten(1), self.norm)


def lp_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Row-wise Lp norm of a 2-D tensor."""
    if norm == "inf":
        return v.abs().amax(dim=1)
    return v.norm(p=float(norm), dim=1)


def lp_project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Project each example of ``delta`` onto the Lp ball of radius ``eps`` (batched)."""
    if norm == "inf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1)
    if norm == "2":
        n = flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (flat * (eps / n).clamp(max=1.0)).view_as(delta)
    return _project_l1(flat, eps).view_as(delta)


def _project_l1(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection onto the L1 ball (Duchi et al., 2008), batched by sorting."""
    a = v.abs()
    inside = a.sum(dim=1) <= eps
    mu, _ = a.sort(dim=1, descending=True)
    cums = mu.cumsum(dim=1)
    ar = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    cond = mu - (cums - eps) / ar > 0
    rho = cond.to(v.dtype).cumsum(dim=1).argmax(dim=1, keepdim=True)  # last True index
    theta = (cums.gather(1, rho) - eps) / (rho + 1).to(v.dtype)
    out = v.sign() * (a - theta).clamp_min(0)
    return torch.where(inside[:, None], v, out)


class AttackResult:
    """What an attack returns, batched: adversarial inputs, success flags and queries used.

    ``success`` (bool ``[B]``) may be given as a zero-argument function instead of a tensor; it is
    then computed on first access and kept. Gradient attacks use this for their final check (one
    forward pass on ``x_adv``): a caller that evaluates ``x_adv`` itself anyway (the runner's
    classification task) reads :attr:`deferred` and takes success from its own evaluation instead
    of paying for that pass twice. ``queries`` (int64 ``[B]``) counts the model evaluations spent
    per example, the final check included.
    """

    def __init__(
        self,
        x_adv: torch.Tensor,
        success: torch.Tensor | Callable[[], torch.Tensor],
        queries: torch.Tensor,
        extra: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.x_adv = x_adv
        self._success = success
        self.queries = queries
        self.extra: dict[str, torch.Tensor] = {} if extra is None else extra

    @property
    def success(self) -> torch.Tensor:
        if not isinstance(self._success, torch.Tensor):
            self._success = self._success()
        return self._success

    @success.setter
    def success(self, value: torch.Tensor) -> None:
        self._success = value

    @property
    def deferred(self) -> bool:
        """True while ``success`` has not been computed yet (it costs a forward pass)."""
        return not isinstance(self._success, torch.Tensor)

    def __repr__(self) -> str:
        ok = "deferred" if self.deferred else f"{int(self.success.sum())}/{len(self.success)}"
        return f"AttackResult(x_adv={tuple(self.x_adv.shape)}, success={ok})"


@dataclass
class Certificate:
    """A batched certificate: prediction, certified radius in ``norm``, and abstention flags.

    ``radius`` is 0 where nothing is certified; ``pred`` is -1 where the certifier abstains.
    """

    pred: torch.Tensor  # int64 [B]
    radius: torch.Tensor  # float [B]
    norm: str
    abstained: torch.Tensor  # bool [B]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """What a model adapter can do, as plain data (checked by components that need it)."""

    grad: bool = False  # input gradients available (white-box)
    batch: bool = True  # accepts batches
    probs_only: bool = False  # outputs are probabilities/scores, not logits
