"""Small value types shared by every component: input domains, threat models, results."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from pydantic import BeforeValidator, Field

from robustlab.core.errors import ConfigError, DomainError

NormName = Literal["inf", "2", "1"]


def parse_norm(norm: str | float | int) -> str:
    """Normalise a norm name: ``inf``/``linf``/``float('inf')`` -> ``"inf"``, ``2``/``l2`` -> ``"2"``."""
    s = str(norm).lower().removeprefix("l")
    if s in ("inf", "infinity", "oo"):
        return "inf"
    if s in ("2", "2.0"):
        return "2"
    if s in ("1", "1.0"):
        return "1"
    raise ConfigError(f"unknown norm {norm!r}; use 'inf', '2' or '1'")


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


# parameter and level domains -------------------------------------------------------------------
# A component declares its parameters' domains once, in its signature (``Annotated`` pydantic
# constraints, checked by :func:`robustlab.core.registry.check_params`), and the domain of its probe
# levels once, with its registration (``@perturbations.register("x", levels=Levels(0, 5))``).

SEED_MAX = 2**32 - 1  # numpy / scikit-learn seeds are 32-bit; torch takes them unchanged
INT64_MAX = 2**63 - 1  # the store's integers are 64-bit signed

Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
"""A random seed that every consumer accepts (numpy's and scikit-learn's are 32-bit)."""
Rate = Annotated[float, Field(ge=0, le=1)]
"""A fraction or probability in [0, 1]."""
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Norm = Annotated[str, BeforeValidator(lambda v: parse_norm(v) if isinstance(v, str | int | float) and not isinstance(v, bool) else v)]  # fmt: skip
"""A norm name as :func:`parse_norm` reads it: ``2``, ``"l2"``, ``.inf``, ``"linf"`` ..."""
Finite = Annotated[float, Field(allow_inf_nan=False)]
AllowNonFinite = Annotated[float, Field(allow_inf_nan=True)]
"""Opt-in for a float parameter where ``inf`` means something (non-finite floats are refused by
default everywhere else)."""


@dataclass(frozen=True)
class Levels:
    """The domain of a probe's levels (severities, eps, radii): finite numbers in ``[lo, hi]``
    (``lo_open``/``hi_open`` exclude an end), integers only if ``integer``.

    ``what`` names the level in messages ("severity", "edit rate", "eps", "radius").

    Example::

        Levels(0, 5, what="severity").check([1, 2.5, 7], "perturbation 'fog'")  # raises for 7
    """

    lo: float = -math.inf
    hi: float = math.inf
    integer: bool = False
    lo_open: bool = False
    hi_open: bool = False
    what: str = "level"

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        lo, hi = _num(self.lo), _num(self.hi)
        if self.lo == -math.inf and self.hi == math.inf:
            return kind
        if self.hi == math.inf:
            return f"{kind} {'>' if self.lo_open else '>='} {lo}"
        if self.lo == -math.inf:
            return f"{kind} {'<' if self.hi_open else '<='} {hi}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"{kind} in {left}{lo}, {hi}{right}"

    def contains(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        if self.integer and v != int(v):
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def check(self, levels: Sequence[Any], what: str) -> None:
        """Raise :class:`ConfigError` naming the first level outside this domain."""
        for i, v in enumerate(levels):
            if not self.contains(v):
                shown = (
                    _num(v) if isinstance(v, float | int) and not isinstance(v, bool) else repr(v)
                )
                raise ConfigError(
                    f"{what}: level {i} ({shown}) is outside its domain: the {self.what} must be "
                    f"{self.describe()}"
                )


def _num(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) else f"{v:g}"


EDIT_RATE = Levels(0, 1, what="edit rate")
"""Levels of text perturbations and text/RAG attacks: the share of words edited."""
VARIANT = Levels(0, SEED_MAX, integer=True, what="variant number")
"""Levels that number variants (0 = unchanged; each number seeds one variant)."""
WORD_EDITS = Levels(0, 10_000, integer=True, what="word-edit budget")
"""Levels of ranking attacks: how many words may be edited."""
Fraction = Annotated[float, Field(gt=0, lt=1)]
"""A proper fraction in (0, 1): a split share, a significance level."""
