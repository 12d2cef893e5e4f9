"""Per-example, counter-based random numbers.

Robustness numbers must not depend on batch size, batch order or which examples an attack has already
finished with. :class:`ExampleRNG` therefore gives every example its own stream, keyed by a 32-bit key
derived from the suite seed and the example's id, and generates numbers by hashing ``(key, draw,
element)`` with vectorised integer arithmetic -- no per-example Python and no global RNG state.

Example::

    rng = ExampleRNG.from_seed(0, ids=torch.arange(8))
    noise = rng.normal(1, 8, 8)          # [8, 1, 8, 8], same values for an example in any batch
    sub = rng.take(torch.tensor([3, 5]))  # the streams of examples 3 and 5, sharing the counter
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

_M32 = 0xFFFFFFFF


_GLOBAL_SEEDING = threading.RLock()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global CPU generator seeded to ``seed`` (e.g. to initialise a
    network's weights), restoring it afterwards. Holds a lock: two threads seeding the global
    generator at once would interleave their draws (different weights for the same seed)."""
    with _GLOBAL_SEEDING, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def seed_from(*parts: object) -> int:
    """A stable 32-bit seed from any printable parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def hash32(x: torch.Tensor) -> torch.Tensor:
    """The ``lowbias32`` integer hash (C. Wellons), elementwise on int64 tensors in [0, 2**32)."""
    return _hash32_(x & _M32)


def _hash32_(x: torch.Tensor) -> torch.Tensor:
    """:func:`hash32` in place on an int64 tensor of values in [0, 2**32) that the caller owns
    (no temporaries beyond the shifted copies: the hash runs on every random number drawn)."""
    x.bitwise_xor_(x >> 16)
    # x * c mod 2**32: the int64 product may wrap past 2**63; two's-complement wrapping keeps the
    # low 32 bits exact (checked against a pure-Python reference in the tests)
    x.mul_(0x7FEB352D).bitwise_and_(_M32)
    x.bitwise_xor_(x >> 15)
    x.mul_(0x846CA68B).bitwise_and_(_M32)
    return x.bitwise_xor_(x >> 16)


def _hash32_int(x: int) -> int:
    """:func:`hash32` of one Python int (no tensor ops)."""
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def _element_bits(base: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """32-bit integers of elements ``j`` of a draw with per-example keys ``base`` (broadcast)."""
    h = _hash32_(torch.bitwise_xor(base, (j * 0x9E3779B9).bitwise_and_(_M32)))
    return _hash32_(h.add_(base).bitwise_and_(_M32))


@dataclass
class _Counter:
    value: int = 0


@dataclass
class ExampleRNG:
    """Independent random streams, one per example (the batch dimension of every draw)."""

    keys: torch.Tensor  # int64 [B] in [0, 2**32)
    _counter: _Counter = field(default_factory=_Counter, repr=False)

    @classmethod
    def from_seed(cls, seed: int | str, ids: torch.Tensor) -> ExampleRNG:
        """Streams for examples ``ids`` (int tensor) under ``seed`` (int or string)."""
        base = _hash32_int(seed_from("robustlab", seed))
        ids = ids.to(torch.int64)
        return cls(hash32(hash32(ids & _M32) ^ base ^ (ids >> 32)))

    def fork(self, name: str) -> ExampleRNG:
        """New independent streams for a sub-component, with their own counter."""
        return ExampleRNG(hash32(self.keys ^ seed_from(name)))

    def take(self, index: torch.Tensor) -> ExampleRNG:
        """The streams of a subset of examples; draws stay aligned with the full set's."""
        return ExampleRNG(self.keys[index.to(self.keys.device)], self._counter)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def draw_base(self) -> torch.Tensor:
        """Per-example keys ``[B]`` of the next draw (advances the counter by one draw).

        With :meth:`uniform_at` this gives any elements of a draw on demand -- e.g. only the real
        words of texts of very different lengths -- equal to what :meth:`uniform` returns there.
        """
        k = self._counter.value
        self._counter.value += 1
        return hash32(self.keys ^ _hash32_int(k * 0x9E3779B9 + 0x7F4A7C15))

    def draw_bases(self, k: int) -> torch.Tensor:
        """Keys ``[k, B]`` of the next ``k`` draws, equal to ``k`` calls of :meth:`draw_base`,
        in one vectorised hash (for loops that draw a little at every iteration)."""
        start = self._counter.value
        self._counter.value += k
        salt = [_hash32_int(i * 0x9E3779B9 + 0x7F4A7C15) for i in range(start, start + k)]
        return hash32(self.keys[None, :] ^ torch.tensor(salt, device=self.keys.device)[:, None])

    @property
    def position(self) -> int:
        """Number of draws made so far (shared with the streams :meth:`take` returns)."""
        return self._counter.value

    def seek(self, position: int) -> None:
        """Set the draw counter, e.g. back to where per-iteration draws would have left it after
        :meth:`draw_bases` drew ahead for iterations that never ran."""
        if position < 0:
            raise ValueError(f"ExampleRNG.seek: position must be >= 0, got {position}")
        self._counter.value = position

    @staticmethod
    def uniform_at(
        base: torch.Tensor, index: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Uniforms of elements ``index`` (flat element index within an example's draw) of the
        examples whose :meth:`draw_base` keys are ``base`` (same shape as ``index``)."""
        return (_element_bits(base, index) >> 8).to(dtype) * (1.0 / (1 << 24))

    def _bits(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``[B, n]`` independent 32-bit integers (as int64) for the next draw, on ``device``."""
        base = self.draw_base().to(device or self.keys.device)
        j = torch.arange(n, device=base.device, dtype=torch.int64)
        return _element_bits(base[:, None], j[None, :])

    def uniform(
        self,
        *shape: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Uniform numbers in [0, 1) of shape ``[B, *shape]`` (24-bit resolution).

        ``device`` (default: the keys' device) is where the numbers are computed: the integer hash
        is exact on every device, so the draw is the same bits wherever it runs; computing it on
        the GPU that will use it avoids hashing millions of elements on the CPU."""
        n = 1
        for s in shape:
            n *= s
        u = self._bits(n, device).bitwise_right_shift_(8).to(dtype).mul_(1.0 / (1 << 24))
        return u.view(len(self), *shape)

    def normal(
        self,
        *shape: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Standard normal numbers of shape ``[B, *shape]`` (Box-Muller), computed on ``device``."""
        # float32 is exact for 24-bit uniforms; tails reach 5.8 sigma (u1 >= 2**-24)
        u1 = 1.0 - self.uniform(*shape, dtype=torch.float32, device=device)  # (0, 1]
        u2 = self.uniform(*shape, dtype=torch.float32, device=device)
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)
        return z.to(dtype)

    def integers(self, high: int, *shape: int) -> torch.Tensor:
        """Integers uniform in [0, high) of shape ``[B, *shape]``."""
        return (self.uniform(*shape, dtype=torch.float64) * high).long().clamp_max(high - 1)

    def permutation(self, n: int) -> torch.Tensor:
        """A random permutation of ``range(n)`` per example, shape ``[B, n]``."""
        return self.uniform(n, dtype=torch.float64).argsort(dim=1)
