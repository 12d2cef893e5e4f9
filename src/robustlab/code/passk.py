"""pass@k and ReCode's robust metrics (S2) as pure functions of execution counts.

Notation (ReCode, Wang et al. 2023, section 3.3): for problem ``i`` the model draws ``n`` samples
on the nominal prompt, ``c_i`` of them pass; under each of ``s`` perturbed variants ``j`` it draws
``n`` samples, and ``rc_i`` counts the sample slots that pass on *every* variant (worst case over
the ``s`` variants; with greedy decoding ``n = 1``, so ``rc_i`` = "passes on all variants").

* pass@k (Chen et al. 2021, unbiased): ``1 - C(n - c, k) / C(n, k)``, averaged over problems;
* Robust Pass_s@k: the same estimator with ``rc_i`` in place of ``c_i``;
* Robust Drop_s@k = (pass@k - Robust Pass_s@k) / pass@k;
* Robust Relative_s@k = (RC⁻ + RC⁺) / N: the fraction of problems whose outcome changes under
  perturbation in either direction, RC⁻ counting problems that pass nominally but fail on some
  variant and RC⁺ problems that fail nominally but pass on some variant (greedy form, the one the
  paper reports; with sampling the per-problem pass@k values are compared the same way).

Example::

    pass_at_k(n=10, c=3, k=1)                     # 0.3
    robust_pass_at_k([[1, 1, 0]], k=1)            # 0.0: fails on one of 3 variants
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robustlab.core.errors import ConfigError


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


def worst_case_counts(passed: Sequence[Sequence[Sequence[bool]]] | np.ndarray) -> np.ndarray:
    """``rc_i``: samples passing on every variant, from ``passed[problem][variant][sample]``."""
    arr = np.asarray(passed, dtype=bool)
    if arr.ndim != 3:
        raise ConfigError(f"passed must be [problems, variants, samples], got shape {arr.shape}")
    return arr.all(axis=1).sum(axis=1)


def robust_pass_at_k(passed: Sequence[Sequence[Sequence[bool]]] | np.ndarray, k: int) -> float:
    """Robust Pass_s@k over problems: pass@k of the worst case over the ``s`` variants."""
    arr = np.asarray(passed, dtype=bool)
    if arr.ndim == 2:  # greedy: [problems, variants]
        arr = arr[:, :, None]
    rc = worst_case_counts(arr)
    return mean_pass_at_k([arr.shape[2]] * arr.shape[0], rc.tolist(), k)


def robust_drop_at_k(nominal: float, robust: float) -> float:
    """Robust Drop_s@k = (pass@k - Robust Pass_s@k) / pass@k (NaN when pass@k is 0)."""
    return float("nan") if nominal == 0 else (nominal - robust) / nominal


def robust_relative_at_k(
    nominal: Sequence[bool] | np.ndarray, variants: Sequence[Sequence[bool]] | np.ndarray
) -> float:
    """Robust Relative_s@k (greedy): fraction of problems whose pass/fail flips on some variant.

    ``nominal[i]``: problem ``i`` passes unperturbed; ``variants[i][j]``: passes under variant ``j``.
    """
    nom = np.asarray(nominal, dtype=bool)
    var = np.asarray(variants, dtype=bool)
    if var.ndim != 2 or var.shape[0] != nom.shape[0] or not nom.size:
        raise ConfigError(f"variants must be [problems, s] matching nominal, got {var.shape}")
    minus = nom & ~var.all(axis=1)
    plus = ~nom & var.any(axis=1)
    return float((minus.sum() + plus.sum()) / nom.size)
