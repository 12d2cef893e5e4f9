"""``llm-tta``: a registered, suite-usable test-time-augmentation wrapper of a text classifier.

See :mod:`robustlab.defenses.llm_tta` (S29). In a suite::

    models:
      - name: llm-tta
        label: tfidf+tta
        params: {base: tfidf-logreg, rewrites: [[spellcheck, 1], [paraphrase, 1]],
                 entropy_threshold: 0.9}

The records of a TTA model carry ``x.augmented`` (1 where the input was rewritten), so the report's
accuracy gained can be read next to the share of inputs augmented.
"""

from __future__ import annotations

from typing import Any

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.core.types import Seed
from robustlab.defenses.llm_tta import TTAClassifier


def _rewrite(r: Any) -> Any:
    if isinstance(r, str):
        return (r, 1.0)
    if isinstance(r, list | tuple) and len(r) == 2 and isinstance(r[0], str):
        return (r[0], float(r[1]))
    raise ConfigError(f"llm-tta rewrites are [name, severity] pairs or names, got {r!r}")


@models.register("llm-tta")
def llm_tta(
    base: str = "tfidf-logreg",
    base_params: dict[str, Any] | None = None,
    rewrites: list[Any] | None = None,
    aggregate: str = "mean",
    entropy_threshold: float | None = None,
    include_original: bool = True,
    seed: Seed = 0,
) -> TTAClassifier:
    """Test-time augmentation (S29) of the registered text classifier ``base`` over rewrites."""
    kwargs: dict[str, Any] = {}
    if rewrites is not None:
        kwargs["rewrites"] = [_rewrite(r) for r in rewrites]
    return TTAClassifier(
        models.create(base, base_params or {}),
        aggregate=aggregate,
        entropy_threshold=entropy_threshold,
        include_original=include_original,
        seed=seed,
        **kwargs,
    )
