"""Contract checks for robustlab components: attacks, perturbations, certifiers and model adapters.

Each ``check_*`` function runs a component on a small real batch and raises :class:`AssertionError`
with a precise message if it breaks one of the invariants every component of its kind must keep
(see the "Contract tests" section of the design notes). Parametrize them over a registry so every
registered component -- built-in or plugin -- is checked::

    import pytest
    from robustlab.core.registry import attacks
    from robustlab.core.types import ThreatModel
    from robustlab.testing import check_attack

    @pytest.mark.parametrize("name", attacks.names())
    def test_attack_contract(name, model, x, y):
        check_attack(attacks.create(name), model, x, y, ThreatModel("inf", 0.1))

All checks key randomness by example ids ``0..B-1`` (or ``ids``) under ``seed`` and test batch-order
invariance by running the component on a shuffled subset of the batch with the matching ids, which
must give the same subset of the outputs (so results depend neither on an example's position nor on
the other examples in its batch: shards and resumed runs give the same numbers).

:func:`assert_robust` (:mod:`robustlab.testing.gate`) is a robustness regression gate for a
project's own tests; :mod:`robustlab.testing.pytest_plugin` provides it as the ``robust_gate``
fixture.
"""

from robustlab.testing.adapter import check_adapter
from robustlab.testing.attack import check_attack
from robustlab.testing.certifier import check_certifier
from robustlab.testing.gate import assert_robust
from robustlab.testing.perturbation import check_perturbation

__all__ = [
    "assert_robust",
    "check_adapter",
    "check_attack",
    "check_certifier",
    "check_perturbation",
]
