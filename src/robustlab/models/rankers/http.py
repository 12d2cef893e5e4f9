"""Any ranking service over HTTP: ``POST {"query": str, "docs": [str]}`` -> ``{"scores": [float]}``.

No vendor API: a plain JSON POST (stdlib ``urllib``), so a reranker served by any framework can be
evaluated. Errors (HTTP status, malformed JSON, wrong number of scores) raise
:class:`~robustlab.core.errors.ModelOutputError` naming the cause; the ranking task turns them into
per-example error records. Example::

    r = models.create("http-ranker", {"url": "http://127.0.0.1:8080/rank"})
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Sequence

import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import models
from robustlab.core.types import Capabilities


class HTTPRanker:
    """Black-box ranker behind a JSON endpoint (one POST per query)."""

    def __init__(self, url: str, timeout: float = 30.0, version: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"http-ranker url must start with http:// or https://, got {url!r}")
        self.url, self.timeout, self.version = url, timeout, version
        self.capabilities = Capabilities(grad=False, batch=False, probs_only=True)

    def scores(self, query: str, docs: Sequence[str]) -> torch.Tensor:
        body = json.dumps({"query": query, "docs": list(docs)}).encode()
        req = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            raise ModelOutputError(f"ranking service {self.url} answered HTTP {e.code}") from None
        except (urllib.error.URLError, TimeoutError) as e:
            raise ModelOutputError(f"ranking service {self.url} unreachable: {e}") from None
        except json.JSONDecodeError:
            raise ModelOutputError(f"ranking service {self.url} did not return JSON") from None
        scores = payload.get("scores") if isinstance(payload, dict) else None
        if not isinstance(scores, list) or len(scores) != len(docs):
            got = len(scores) if isinstance(scores, list) else type(scores).__name__
            raise ModelOutputError(
                f"ranking service {self.url} returned {got} scores for {len(docs)} documents"
            )
        return torch.tensor([float(s) for s in scores], dtype=torch.float64)

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.url}|{self.version}".encode()).hexdigest()[:16]


@models.register("http-ranker")
def http_ranker(url: str, timeout: float = 30.0, version: str | None = None) -> HTTPRanker:
    """A ranking service: JSON POST {query, docs} -> {scores} (any framework, any host)."""
    return HTTPRanker(url, timeout, version)
