"""Token and cost accounting for HTTP generators (OpenAI ``usage`` fields, optional prices).

A :class:`UsageMeter` keeps ``totals`` over an adapter's life -- ``requests`` (HTTP attempts,
retries included), ``completions`` fetched, ``cache_hits``, ``failures``, ``prompt_tokens``,
``completion_tokens`` and ``cost`` (``None`` without prices) -- and ``last``, one dict per prompt of
the latest call: the response's ``prompt_tokens``/``completion_tokens``, the ``cost`` billed for it
(0 when it came from the cache or repeats a prompt of the same call), ``cached`` and ``error``.
Only fresh responses count in the totals, so they equal the sum of what the server reported.

Example::

    meter = UsageMeter(price_prompt_per_1k=0.5, price_completion_per_1k=1.5)
    meter.record(["k"], {}, {"k": {"usage": {"prompt_tokens": 10, "completion_tokens": 2}}}, {}, 1)
    meter.totals["cost"]  # (10 * 0.5 + 2 * 1.5) / 1000
"""

from __future__ import annotations

from typing import Any

TOTALS = ("requests", "completions", "cache_hits", "failures", "prompt_tokens", "completion_tokens")
_ZERO = {"prompt_tokens": 0, "completion_tokens": 0}


class UsageMeter:
    """Per-call and lifetime token/cost totals."""

    def __init__(
        self, price_prompt_per_1k: float | None = None, price_completion_per_1k: float | None = None
    ) -> None:
        self.prices = (price_prompt_per_1k or 0.0, price_completion_per_1k or 0.0)
        priced = price_prompt_per_1k is not None or price_completion_per_1k is not None
        self.totals: dict[str, Any] = {**dict.fromkeys(TOTALS, 0), "cost": 0.0 if priced else None}
        self.last: list[dict[str, Any]] = []

    def record(
        self,
        keys: list[str],
        cached: dict[str, Any],
        fresh: dict[str, Any],
        errors: dict[str, str],
        requests: int,
    ) -> None:
        """Account one call: ``keys`` per prompt; values ``{"usage": {...}}`` by key."""
        pp, pc = self.prices
        billed: set[str] = set()
        self.last = []
        t = self.totals
        for k in keys:
            v = cached.get(k) or fresh.get(k)
            u = {**_ZERO, **(v or {}).get("usage", {})}
            new = k in fresh and k not in billed
            billed.add(k)
            cost = (u["prompt_tokens"] * pp + u["completion_tokens"] * pc) / 1000 if new else 0.0
            self.last.append({**u, "cost": cost, "cached": not new, "error": errors.get(k)})
            if new:
                t["prompt_tokens"] += u["prompt_tokens"]
                t["completion_tokens"] += u["completion_tokens"]
                if t["cost"] is not None:
                    t["cost"] += cost
        t["completions"] += len(fresh)
        t["cache_hits"] += len(cached)
        t["failures"] += sum(k in errors for k in keys)
        t["requests"] = requests
