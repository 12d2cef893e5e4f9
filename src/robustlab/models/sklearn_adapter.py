"""Adapter for a scikit-learn estimator with ``predict_proba`` (black-box, probabilities only)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from robustlab.core.types import Capabilities, Domain


class SklearnClassifier:
    """Wrap a fitted scikit-learn classifier; tensor inputs are flattened to ``[B, features]``, lists
    (texts) are passed through unchanged, so a text pipeline (``TfidfVectorizer`` + a classifier) is
    a text classifier.

    ``logits`` returns log-probabilities (``capabilities.probs_only`` is true), so argmax and softmax
    behave as for a neural network; no input gradients are available.

    Example::

        clf = SklearnClassifier(LogisticRegression().fit(X, y), domain=Domain(0, 16, (64,)))
        txt = SklearnClassifier(make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(docs, y))
    """

    def __init__(self, estimator: Any, domain: Domain | None = None) -> None:
        if not hasattr(estimator, "predict_proba"):
            raise TypeError(f"{type(estimator).__name__} has no predict_proba")
        self.estimator = estimator
        self.domain = domain or Domain(-float("inf"), float("inf"))
        self.num_classes = len(estimator.classes_)
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)

    def logits(self, x: torch.Tensor | list[Any]) -> torch.Tensor:
        if isinstance(x, list | tuple):
            arr: Any = list(x)
            device = torch.device("cpu")
        else:
            arr, device = x.detach().cpu().reshape(x.shape[0], -1).numpy(), x.device
        p = np.asarray(self.estimator.predict_proba(arr), dtype=np.float64)
        return torch.from_numpy(np.log(np.clip(p, 1e-12, None))).float().to(device)

    def fingerprint(self) -> str:
        return estimator_hash(self.estimator)


def estimator_hash(estimator: Any) -> str:
    """Hash of an estimator's (or each pipeline step's) parameters and fitted attributes.

    Stable across processes, unlike a pickle (``TfidfVectorizer`` keeps ``_stop_words_id``, a
    memory address): only public parameters and fitted ``name_`` attributes enter the hash.
    """
    h = hashlib.sha256()
    steps = getattr(estimator, "steps", [("model", estimator)])
    for name, step in steps:
        params = sorted(step.get_params(deep=False).items()) if hasattr(step, "get_params") else []
        h.update(f"{name}|{type(step).__name__}|{params}".encode())
        fitted = vars(step) | ({"idf_": step.idf_} if hasattr(step, "idf_") else {})
        for k, v in sorted(fitted.items()):
            if k.endswith("_") and not k.startswith("_"):
                v = sorted(v.items()) if isinstance(v, dict) else v
                h.update(
                    k.encode() + (v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
                )
    return h.hexdigest()[:16]
