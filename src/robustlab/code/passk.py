"""pass@k and ReCode's robust metrics (S2) as pure functions of execution outcomes.

Notation (ReCode, Wang et al. 2023, section 3.3): for problem ``x`` the model draws ``n`` samples
(generation seeds ``i = 1..n``) on the nominal prompt and on each of the ``s`` perturbed variants
``x_j``; ``f_i(x)`` is sample ``i`` on prompt ``x``. A sample counts as robustly correct only if it
passes under *every* variant: ``rc_s(x) = sum_i prod_j 1[f_i(x_j) passes]`` (the worst case is taken
per sample, then the sample counts enter the estimator; with greedy decoding ``n = 1`` and ``rc`` is
"passes on all variants").

* pass@k (Chen et al. 2021, unbiased): ``1 - C(n - c, k) / C(n, k)``, averaged over problems;
* Robust Pass_s@k: the same estimator with ``rc_s(x)`` in place of ``c`` (so Robust Pass_s@1 with
  n = 10 is the mean fraction of robust samples, not an all-or-nothing indicator);
* Robust Drop_s@k = (pass@k - Robust Pass_s@k) / pass@k;
* Robust Relative_s@k, two definitions (:func:`robust_relative_at_k`, ``definition=``):

  - ``"paper"`` (default; ReCode paper, section 3.3): RR = RC⁻ + RC⁺, with the estimator applied to
    ``rc⁻(x) = sum_i 1[f_i(x) passes and some f_i(x_j) fails]`` (correct -> incorrect) and
    ``rc⁺(x) = sum_i 1[f_i(x) fails and some f_i(x_j) passes]`` (incorrect -> correct). Greedy:
    the fraction of problems whose outcome flips on *some* variant, in either direction.
  - ``"released"`` (ReCode's released code, ``run_robust.py --metric relative``): the fraction of
    problems with ``nominal != all-variants-pass``, i.e. RC⁺ counts a problem only when *every*
    variant passes; with sampling the same XOR per sample, then the estimator.

  Both coincide when ``s = 1``.

Example::

    pass_at_k(n=10, c=3, k=1)                     # 0.3
    robust_pass_at_k([[1, 1, 0]], k=1)            # 0.0: greedy, fails on one of 3 variants
    robust_pass_at_k([[[1, 1], [1, 0]]], k=1)     # 0.5: n = 2, sample 0 passes both variants
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from robustlab.core.errors import ConfigError

RelativeDef = Literal["paper", "released"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` of ``n`` samples correct (Chen et al., 2021)."""
    if not 0 <= c <= n or k < 1:
        raise ConfigError(f"pass@k needs 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ConfigError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(n: Sequence[int], c: Sequence[int], k: int) -> float:
    """pass@k averaged over problems."""
    if len(n) != len(c) or not len(n):
        raise ConfigError("mean_pass_at_k needs equally long, non-empty n and c")
    return float(np.mean([pass_at_k(int(a), int(b), k) for a, b in zip(n, c, strict=True)]))


def _samples(passed: Sequence[Sequence[Sequence[bool]]] | np.ndarray) -> np.ndarray:
    """``[problems, variants, samples]`` booleans; ``[problems, variants]`` is greedy (n = 1)."""
    arr = np.asarray(passed, dtype=bool)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or not arr.size:
        raise ConfigError(f"passed must be [problems, variants(, samples)], got shape {arr.shape}")
    return arr


def worst_case_counts(passed: Sequence[Sequence[Sequence[bool]]] | np.ndarray) -> np.ndarray:
    """``rc_i``: samples passing on every variant, from ``passed[problem][variant][sample]``."""
    arr = np.asarray(passed, dtype=bool)
    if arr.ndim != 3:
        raise ConfigError(f"passed must be [problems, variants, samples], got shape {arr.shape}")
    return arr.all(axis=1).sum(axis=1)


def robust_pass_at_k(passed: Sequence[Sequence[Sequence[bool]]] | np.ndarray, k: int) -> float:
    """Robust Pass_s@k over problems: pass@k of the per-sample worst case over the ``s`` variants."""
    arr = _samples(passed)
    rc = worst_case_counts(arr)
    return mean_pass_at_k([arr.shape[2]] * arr.shape[0], rc.tolist(), k)


def robust_drop_at_k(nominal: float, robust: float) -> float:
    """Robust Drop_s@k = (pass@k - Robust Pass_s@k) / pass@k (NaN when pass@k is 0)."""
    return float("nan") if nominal == 0 else (nominal - robust) / nominal


def change_counts(
    nominal: np.ndarray, variants: np.ndarray, definition: RelativeDef = "paper"
) -> tuple[np.ndarray, ...]:
    """Per-problem sample counts behind Robust Relative: ``(rc⁻, rc⁺)`` for ``"paper"``,
    ``(rc_xor,)`` for ``"released"``; ``nominal`` is ``[P, n]``, ``variants`` ``[P, s, n]``."""
    all_pass, any_pass = variants.all(axis=1), variants.any(axis=1)
    if definition == "paper":
        return (nominal & ~all_pass).sum(axis=1), (~nominal & any_pass).sum(axis=1)
    if definition == "released":
        return ((nominal != all_pass).sum(axis=1),)
    raise ConfigError(
        f"Robust Relative definition must be 'paper' or 'released', got {definition!r}"
    )


def robust_relative_at_k(
    nominal: Sequence[bool] | Sequence[Sequence[bool]] | np.ndarray,
    variants: Sequence[Sequence[bool]] | Sequence[Sequence[Sequence[bool]]] | np.ndarray,
    k: int = 1,
    definition: RelativeDef = "paper",
) -> float:
    """Robust Relative_s@k (see the module docstring for both definitions).

    ``nominal[i]`` (greedy) or ``nominal[i][sample]``: problem ``i`` passes unperturbed;
    ``variants[i][j]`` or ``variants[i][j][sample]``: passes under variant ``j``.
    """
    nom = np.asarray(nominal, dtype=bool)
    nom = nom[:, None] if nom.ndim == 1 else nom
    var = _samples(variants)
    if nom.ndim != 2 or var.shape[0] != nom.shape[0] or var.shape[2] != nom.shape[1]:
        raise ConfigError(
            f"variants {var.shape} must be [problems, s(, n)] matching nominal {nom.shape}"
        )
    n = [nom.shape[1]] * nom.shape[0]
    return float(sum(mean_pass_at_k(n, c.tolist(), k) for c in change_counts(nom, var, definition)))
