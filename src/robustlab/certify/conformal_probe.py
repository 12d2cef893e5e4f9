"""Conformal prediction as a runner probe (``kind: conformal``): calibrate, then test clean and attacked.

Methods (the probe's ``name``): ``split`` (split conformal, Vovk et al. 2005), ``rscp`` (RSCP+, Yan,
Shang & Weng, ICLR 2024, S14) and ``rscp-ptt`` (RSCP+ with Post-Training Transformation); see
:mod:`robustlab.certify.conformal` for the guarantees and proofs. Threat model: the probe's levels
are attack budgets ``eps`` in the probe's ``norm`` (``0`` = clean); every test input is replaced by
the attack's output (default ``pgd`` against the base classifier, which maximises its loss at the
true label, so it pushes that label's score up). ``split`` guarantees coverage ``>= 1 - alpha``
only clean (level 0); ``rscp`` guarantees it for every L2 perturbation up to ``eps`` (a parameter,
default: the largest level), so RSCP probes need ``norm: "2"``.

Data: each example of the data source goes to calibration (probability ``calibration_fraction``),
to the PTT holdout (``holdout_fraction``, ``rscp-ptt`` only) or to test, by a hash of its id and the
suite seed -- stable across shards, levels, models and engines. A unit calibrates on the whole
calibration part (cached per process) and emits one record per *test* example of its shard:
``pred`` = the set (list of classes), ``correct`` = label covered, ``extra`` = ``set_size``,
``alpha``, ``guaranteed`` (1 where the method claims coverage at this level), ``n_calibration``.

Texts (``list[str]`` inputs, e.g. ``bbc-news`` with ``tfidf-logreg``): only ``split`` applies --
RSCP+ smooths the input with Gaussian noise, which has no meaning for words, so ``rscp`` and
``rscp-ptt`` on texts raise a :class:`ConfigError`. Levels are then edit rates in ``[0, 1]``; the test
texts are attacked by a text attack (``attack``, default ``textfooler``) or, with ``perturbation``
set, rewritten by that perturbation at severity = level (any modality). Coverage is guaranteed only
at level 0; the other levels measure how far a perturbation or attack pulls it below ``1 - alpha``.

Suite example::

    probes:
      - {kind: conformal, name: split, levels: [0, 0.25], norm: "2"}
      - {kind: conformal, name: rscp, levels: [0, 0.125], norm: "2",
         params: {sigma: 0.25, n: 128, beta: 0.005}}
      - {kind: conformal, name: split, levels: [0, 0.1, 0.2],     # texts: edit rates
         params: {attack: textfooler, attack_params: {max_queries: 300}}}
      - {kind: conformal, name: split, levels: [0, 0.3], params: {perturbation: typo}}
"""

from __future__ import annotations

import difflib
from typing import Any

import torch

from robustlab.certify.base import require_positive, require_probability
from robustlab.certify.conformal import RSCP, SplitConformal
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, check_params, perturbations
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.core.types import ThreatModel
from robustlab.data.base import Dataset

METHODS = ("split", "rscp", "rscp-ptt")


class ConformalProbe:
    """Hyperparameters of a conformal probe (``params`` of the suite's probe)."""

    def __init__(
        self,
        alpha: float = 0.1,
        score: str = "lac",
        calibration_fraction: float = 0.5,
        holdout_fraction: float = 0.2,
        sigma: float = 0.25,
        eps: float | None = None,
        n: int = 256,
        beta: float = 0.001,
        temperature: float = 0.05,
        batch_size: int = 1000,
        attack: str | None = None,
        attack_params: dict[str, Any] | None = None,
        perturbation: str | None = None,
        perturbation_params: dict[str, Any] | None = None,
    ) -> None:
        self.alpha, self.score = alpha, score
        self.calibration_fraction, self.holdout_fraction = calibration_fraction, holdout_fraction
        self.sigma, self.eps, self.n, self.beta = sigma, eps, n, beta
        self.temperature, self.batch_size = temperature, batch_size
        self.attack, self.attack_params = attack, attack_params
        self.perturbation, self.perturbation_params = perturbation, perturbation_params

    def attack_name(self, text: bool) -> str:
        """The attack: ``attack``, else ``pgd`` for tensors and ``textfooler`` for texts."""
        return self.attack or ("textfooler" if text else "pgd")


def validate(
    method: str,
    params: dict[str, Any],
    norm: str,
    levels: list[float],
    text: bool | None = None,
) -> ConformalProbe:
    """The probe's settings, or :class:`ConfigError` naming the culprit (before anything runs).

    ``text``: whether the data are texts (``None``: unknown yet; :func:`calibrate` checks again).
    """
    what = f"conformal probe {method!r}"
    if method not in METHODS:
        close = difflib.get_close_matches(method, METHODS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown conformal method {method!r}{hint} (methods: {METHODS})")
    check_params(ConformalProbe, params, what)
    p = ConformalProbe(**params)
    fractions = {"calibration_fraction": p.calibration_fraction}
    if method == "rscp-ptt":
        fractions["holdout_fraction"] = p.holdout_fraction
    require_probability(what, alpha=p.alpha, **fractions)
    if sum(fractions.values()) >= 1:
        raise ConfigError(f"{what}: {' + '.join(fractions)} must leave test data (sum < 1)")
    if p.perturbation is not None:
        if p.attack is not None or p.attack_params:
            raise ConfigError(f"{what}: set either attack or perturbation, not both")
        perturbations.get(p.perturbation)
        check_params(
            perturbations.get(p.perturbation), dict(p.perturbation_params or {}),
            f"{what} perturbation {p.perturbation!r}",
        )  # fmt: skip
    elif text is not None or p.attack is not None:
        name = p.attack_name(bool(text))
        attacks.get(name)
        check_params(attacks.get(name), dict(p.attack_params or {}), f"{what} attack {name!r}")
    if text:
        _check_text(method, what, levels)
    if method != "split":
        if p.perturbation is not None:
            raise ConfigError(
                f"{what}: RSCP+ certifies L2 attacks of size eps, not perturbations; "
                "use name: split with a perturbation"
            )
        if norm != "2":
            raise ConfigError(
                f"{what}: RSCP+ certifies L2 perturbations; set norm: '2' (got {norm})"
            )
        require_positive(what, sigma=p.sigma)
        if p.eps is not None and not p.eps >= 0:
            raise ConfigError(f"{what}: eps must be >= 0, got {p.eps!r}")
        _predictor(method, p, levels).validate()
    elif p.score not in ("lac", "aps"):
        raise ConfigError(f"{what}: score must be 'lac' or 'aps', got {p.score!r}")
    return p


def _check_text(method: str, what: str, levels: list[float]) -> None:
    if method != "split":
        raise ConfigError(
            f"{what}: RSCP+ smooths inputs with Gaussian noise, which does not apply to text "
            "inputs; use name: split (with a text attack or perturbation for the levels)"
        )
    bad = [lv for lv in levels if not 0 <= lv <= 1]
    if bad:
        raise ConfigError(f"{what}: levels on texts are edit rates in [0, 1], got {bad}")


def _predictor(method: str, p: ConformalProbe, levels: list[float]) -> SplitConformal:
    if method == "split":
        return SplitConformal(p.alpha, p.score)
    eps = max(levels, default=0.0) if p.eps is None else p.eps
    return RSCP(p.alpha, p.sigma, eps, p.n, p.beta, p.score, method == "rscp-ptt",
                p.temperature, p.batch_size)  # fmt: skip


def parts(ids: torch.Tensor, seed: int, method: str, p: ConformalProbe) -> torch.Tensor:
    """Part of each example: 0 calibration, 1 PTT holdout, 2 test (a hash of id and ``seed``)."""
    u = ExampleRNG.from_seed(seed_from("conformal-split", seed), ids).uniform(1)[:, 0]
    hold = p.holdout_fraction if method == "rscp-ptt" else 0.0
    out = torch.full_like(ids, 2, dtype=torch.long)
    out[u < p.calibration_fraction + hold] = 1
    out[u < p.calibration_fraction] = 0
    return out


def calibrate(
    method: str, p: ConformalProbe, levels: list[float], model: Any, full: Dataset, seed: int,
    key: int,
) -> SplitConformal:  # fmt: skip
    """A calibrated set predictor on the calibration part of ``full`` (randomness keyed by ``key``)."""
    if _inputs(full, method):
        _check_text(method, f"conformal probe {method!r}", levels)
        name = p.attack_name(True)
        if p.perturbation is None and getattr(attacks.get(name), "modality", None) != "text":
            raise ConfigError(
                f"conformal probe {method!r}: attack {name!r} does not attack texts; use a text "
                "attack (e.g. textfooler) or a perturbation"
            )
    assert full.ids is not None
    part = parts(full.ids, seed, method, p)
    cal = full.take(torch.nonzero(part == 0).flatten())
    assert cal.ids is not None
    if len(cal) == 0:
        raise ConfigError(
            f"conformal probe {method!r}: no calibration examples; raise the fraction"
        )
    cp = _predictor(method, p, levels)
    rng = ExampleRNG.from_seed(seed_from(key, "calibration"), cal.ids)
    if isinstance(cp, RSCP):
        hold = full.take(torch.nonzero(part == 1).flatten())
        xh, yh = (hold.x, hold.y) if cp.ptt and len(hold) else (None, None)
        cp.calibrate(model, cal.x, cal.y, rng=rng, x_holdout=xh, y_holdout=yh)
    else:
        cp.calibrate(model, cal.x, cal.y, rng)
    cp.n_calibration_ = len(cal)  # type: ignore[attr-defined]
    return cp


def evaluate(
    method: str, p: ConformalProbe, cp: SplitConformal, model: Any, shard: Dataset, seed: int,
    level: float, norm: str, rng: ExampleRNG,
) -> tuple[Dataset, torch.Tensor, dict[str, list[Any]]]:  # fmt: skip
    """The shard's test examples, their prediction sets ``[B, C]`` under attack ``level`` and extras."""
    text = _inputs(shard, method)
    assert shard.ids is not None
    idx = torch.nonzero(parts(shard.ids, seed, method, p) == 2).flatten()
    test = shard.take(idx)
    x, y = test.x, test.y
    sub = rng.take(idx)
    if level > 0 and len(test):
        x = _shift(p, model, x, y, level, norm, sub, text)
    sets = cp.predict_sets(model, x, sub.fork("sets")) if len(test) else torch.zeros(0, 0)
    bound = getattr(cp, "eps", 0.0)
    guaranteed = int(level <= bound + 1e-12)
    n = len(test)
    extra = {
        "set_size": sets.sum(1).tolist() if n else [],
        "alpha": [p.alpha] * n,
        "guaranteed": [guaranteed] * n,
        "n_calibration": [cp.n_calibration_] * n,  # type: ignore[attr-defined]
    }
    return test, sets.bool(), extra


def _shift(
    p: ConformalProbe, model: Any, x: Any, y: torch.Tensor, level: float, norm: str,
    rng: ExampleRNG, text: bool,
) -> Any:  # fmt: skip
    """The test inputs after the probe's perturbation (severity ``level``) or attack (budget
    ``level``: an ``norm`` ball for tensors, an edit rate for texts)."""
    if p.perturbation is not None:
        pert = perturbations.create(p.perturbation, dict(p.perturbation_params or {}))
        return pert(x, level, rng.fork("perturbation"))
    name = p.attack_name(text)
    attack = attacks.create(name, dict(p.attack_params or {}))
    if text:
        if getattr(attack, "modality", None) != "text":
            raise ConfigError(
                f"conformal probe: attack {name!r} does not attack texts; use a text attack "
                "(e.g. textfooler) or a perturbation"
            )
        return attack(model, list(x), y, level, rng=rng.fork("attack")).x_adv
    return attack(model, x, y, ThreatModel(norm, level), rng=rng.fork("attack")).x_adv


def _inputs(data: Dataset, method: str) -> bool:
    """Whether ``data`` are texts (else tensors); :class:`ConfigError` for anything else."""
    text = isinstance(data.x, list) and all(isinstance(t, str) for t in data.x)
    if not (text or isinstance(data.x, torch.Tensor)) or not isinstance(data.y, torch.Tensor):
        raise ConfigError(
            f"conformal probe {method!r} needs tensor or text (list of str) inputs and a tensor "
            "of integer labels"
        )
    return text
