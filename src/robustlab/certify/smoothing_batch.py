"""Feeding noisy copies to the base model for randomized smoothing: full batches, with the batch size
and memory layout chosen by a short timed probe (once per model, input shape and process).

Monte-Carlo certification (Cohen et al., 2019) spends nearly all its time in the base model's
forward passes, so the overhead over bare batched forward passes comes from (1) partly filled
batches, (2) a slow batch size and (3) a slow memory layout: on a 2-core CPU a 1-channel digits CNN
ran ~1.5-2.5x faster on channels-last inputs (for one channel, NCHW and NHWC differ only in strides,
which oneDNN uses to pick its kernel), and a ResNet-style model 1.5x faster at batch 100 than 400.
:class:`BatchFeeder` draws noisy inputs straight into one preallocated batch buffer in the chosen
layout and runs the model only on full batches (the last may be shorter), doing as little else per
forward pass as it can (see its docstring). :func:`choose` times a few forward
passes per candidate ``(batch size, layout)`` and keeps the fastest per input.

Results do not depend on the choice: noise is per example (:func:`gaussian_draws`), and layouts or
batch sizes change logits only by float rounding (4e-6 on the digits CNN, no argmax changed in 20 000
noisy inputs). Example::

    size, fmt = choose(clf, x.shape[1:], x.dtype, x.device)
    feed = BatchFeeder(clf, counts, size, fmt, x.shape[1:], x.dtype, x.device)
    with torch.no_grad():     # counts[i, argmax f(x_i + sigma e_j)] += 1, e = randn(k, generator=g)
        feed.add_normal(x[i], k, sigma, i, g); feed.finish()
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Any

import torch

GROUP_BYTES = 1 << 18  # BatchFeeder queues up to 4 batches of noisy inputs in this many bytes
SIZES = (100, 200, 400, 800)
LAYOUTS = (torch.contiguous_format, torch.channels_last)
_TUNED: weakref.WeakKeyDictionary[Any, dict[tuple, tuple[int, torch.memory_format]]] = (
    weakref.WeakKeyDictionary()
)


def _layouts(shape: tuple[int, ...]) -> tuple[torch.memory_format, ...]:
    return LAYOUTS if len(shape) == 3 else (torch.contiguous_format,)


def choose(
    model: Any,
    shape: torch.Size | tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    sizes: tuple[int, ...] = SIZES,
    repeats: int = 2,
) -> tuple[int, torch.memory_format]:
    """The fastest ``(batch size, memory layout)`` per input for ``model``, by timing (cached)."""
    key = (tuple(shape), dtype, str(device), sizes, type(model).__name__)
    try:  # wrappers made per call (dual smoothing's half view) name the model they wrap
        cache = _TUNED.setdefault(getattr(model, "tune_key", model), {})
    except TypeError:  # not weak-referenceable or unhashable: no cache
        cache = {}
    if key not in cache:
        best, best_t = (sizes[0], torch.contiguous_format), float("inf")
        with torch.no_grad():
            for fmt in _layouts(tuple(shape)):
                for size in sizes:
                    x = torch.empty((size, *shape), dtype=dtype, device=device, memory_format=fmt)
                    x.normal_(generator=torch.Generator(device=device).manual_seed(0))
                    model.logits(x)  # warm-up (allocator, oneDNN primitive cache)
                    per = float("inf")
                    for _ in range(repeats):
                        t = time.perf_counter()
                        model.logits(x).argmax(dim=1)
                        per = min(per, (time.perf_counter() - t) / size)
                    if per < best_t:
                        best, best_t = (size, fmt), per
        cache[key] = best
    return cache[key]


class BatchFeeder:
    """Queue noisy inputs into a batch buffer (layout ``fmt``), run the model on full batches of
    ``size`` inputs and count its argmax predictions per owner row of ``counts``.

    Use under ``torch.no_grad()``. Per forward pass it does as little as it can, because after a
    pass every small op and line of Python runs on cold caches (the pass evicted them): noise is
    drawn straight into free rows of the buffer (:meth:`add_normal`), ``group`` batches are queued
    before they run back to back (``None``: as many as fit in ~256 KiB, at most 4), only the few
    inputs past the last full batch are moved to the front, and owners (kept as Python runs) and
    predictions (one ``argmax`` tensor per pass, no more than a bare loop makes) go to a log that
    is counted with one ``index_put_`` per ``log`` inputs.
    """

    def __init__(
        self,
        model: Any,
        counts: torch.Tensor,
        size: int,
        fmt: torch.memory_format,
        shape: torch.Size | tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        chunk: int = 256,
        group: int | None = None,
        log: int = 1 << 15,
    ) -> None:
        self.model, self.counts, self.size, self.chunk = model, counts, size, chunk
        if group is None:
            per_batch = size * math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            group = max(1, min(4, GROUP_BYTES // max(1, per_batch)))
        self.queue = group * size  # run the model once this many inputs are queued
        rows = self.queue + chunk
        self.buf = torch.empty((rows, *shape), dtype=dtype, device=device, memory_format=fmt)
        self.fill = 0  # inputs queued in the buffer: log entries done .. done + fill
        self.log = max(log, 2 * rows)  # predictions kept before they are counted
        self.preds: list[torch.Tensor] = []  # argmax per forward pass, in log order
        self.done = 0  # log entries with a prediction
        self.runs: list[tuple[int, int]] = []  # (owner, count) of log entries 0 .. done + fill
        self.one = torch.ones((), dtype=torch.long, device=counts.device)
        # rows of the buffer are dense in the standard layout: a seeded draw written into them
        # equals the same draw into a fresh tensor (torch's vectorised sampler needs contiguity)
        self.direct = (
            self.buf[:2].is_contiguous() and dtype == torch.float32 and device.type == "cpu"
        )

    def add_normal(
        self, center: torch.Tensor, k: int, sigma: float, owner: int, gen: torch.Generator
    ) -> None:
        """Queue ``center + sigma * e_j``, ``e = torch.randn(k, *shape, generator=gen)`` (CPU,
        float32; drawn straight into the buffer where its layout allows), counted in row ``owner``."""
        dst = self._slot(k, owner)
        if self.direct:  # = torch.randn(dst.shape, generator=gen, out=dst), without the resize
            dst.normal_(generator=gen)
            torch.add(center, dst, alpha=sigma, out=dst)
        else:
            noise = torch.randn(dst.shape, generator=gen)
            torch.add(center, noise.to(dst.device, dst.dtype), alpha=sigma, out=dst)
        self._queued(k)

    def add(self, center: torch.Tensor, noise: torch.Tensor, sigma: float, owner: int) -> None:
        """Queue the inputs ``center + sigma * noise[j]`` (``noise``: ``[k, *shape]``), counted in
        row ``owner`` of ``counts``; each piece is written straight into the batch buffer."""
        for piece in noise.split(self.chunk):
            torch.add(center, piece, alpha=sigma, out=self._slot(piece.shape[0], owner))
            self._queued(piece.shape[0])

    def finish(self) -> None:
        """Run the model on what is left in the buffer and count all predictions."""
        start = 0
        while start < self.fill:
            k = min(self.size, self.fill - start)
            self._run(start, k)
            start += k
        self.fill = 0
        self._count()

    def _slot(self, k: int, owner: int) -> torch.Tensor:
        if k > self.chunk:
            raise ValueError(f"at most chunk={self.chunk} inputs at a time, got {k}")
        if self.done + self.fill + k > self.log:
            self._count()
        self.runs.append((owner, k))
        return self.buf[self.fill : self.fill + k]

    def _queued(self, k: int) -> None:
        self.fill += k
        if self.fill < self.queue:
            return
        start = 0
        while self.fill - start >= self.size:
            self._run(start, self.size)
            start += self.size
        rest = self.fill - start
        if rest:  # fewer than size inputs, disjoint from the rows they move to (start >= size)
            self.buf[:rest].copy_(self.buf[start : self.fill])
        self.fill = rest

    def _run(self, start: int, k: int) -> None:
        # as little as a bare loop does per pass (the caches are cold here): argmax, one append
        self.preds.append(self.model.logits(self.buf[start : start + k]).argmax(dim=1))
        self.done += k

    def _count(self) -> None:
        """Add the logged predictions to ``counts``; keep the owners of still-queued inputs."""
        d = self.done
        if not d:
            return
        dev = self.counts.device
        who, many = zip(*self.runs, strict=True)
        owner = torch.tensor(who, device=dev).repeat_interleave(torch.tensor(many, device=dev))
        pred = torch.cat(self.preds).to(dev)
        self.preds = []
        self.counts.index_put_((owner[:d], pred), self.one, accumulate=True)
        keep, left = [], self.fill  # the runs of the queued inputs, split where the log was cut
        while left:
            o, k = self.runs.pop()
            keep.append((o, min(k, left)))
            left -= min(k, left)
        self.runs = keep[::-1]
        self.done = 0
