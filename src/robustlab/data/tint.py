"""TInt: traced-integer tasks whose few-shot chains of thought carry static or dynamic noise.

After Havrilla & Iyer, "Understanding the Effect of Noise in LLM Training Data with Algorithmic
Chains of Thought" (2024; seed S16): an arithmetic function on a list of integers is computed as a
left fold, one **trace step** per list element, ``s_t = step(s_{t-1}, x_t)`` from ``s_0 = 0``;
the answer is the last state. Each example is a few-shot prompt: ``shots`` demonstrations of the
same function (list, trace, answer), then the query list, whose trace and answer the model writes::

    sum [3, 1, 4]: 0+3=3, 3+1=4, 4+4=8; answer 8
    sum [2, 5, 6]: 0+2=2, 2+5=7, 7+6=13; answer 13
    sum [7, 0, 2]:

The label is the query's clean answer (``"9"``). Noise goes into the demonstrations only:

* **static** noise: the clean trace is computed first, then the *shown result* of each chosen
  step is changed by ``delta``; later steps and the answer still use the clean states (a local
  error, ``0+3=5, 3+1=4, 4+4=8; answer 8``);
* **dynamic** noise: the error is made *while* computing: the chosen step's state becomes
  ``step(s, x) + delta`` and every later step and the answer are computed from it (a global,
  propagated error, ``0+3=5, 5+1=6, 6+4=10; answer 10``).

``contamination`` in [0, 1] is the fraction of demonstration steps noised (``unit="step"``:
``round(contamination * shots * length)`` of a prompt's steps) or of demonstrations noised
(``unit="shot"``: ``round(contamination * shots)`` demonstrations, one step each); ``intensity``
is the size of each error, ``delta = +-intensity`` (sign at random). The noised positions and
signs of an example do not depend on the noise type, the intensity or the contamination: static
and dynamic prompts of one level differ only in propagation (a paired comparison), and the steps
noised at a lower contamination are noised at every higher one. Everything is deterministic under
``seed``, and example ``i`` does not depend on ``n`` (a larger ``n`` extends the set).

Functions (:data:`FUNCTIONS`; values in ``[low, high]``, ``low >= 0``): ``sum``, ``max`` (running
maximum), ``count_even``, ``alt_sum`` (``x_1 - x_2 + x_3 ...``), ``sum_mod`` and ``sum_sq_mod``
(sums of values / squares modulo ``modulus``). Metadata columns: ``function``, ``noise``,
``contamination``, ``intensity``, ``unit``, ``noised_steps`` (noised demonstration steps),
``wrong_answers`` (demonstrations whose shown answer is not their clean answer: dynamic noise
only) and ``input`` (the query list).

Example::

    data = datasets.create("tint", {"n": 4, "functions": ["sum"], "noise": "dynamic",
                                    "contamination": 0.5, "intensity": 2})
    data.x[0]          # the prompt: 4 demonstrations, half of their steps noised, then the query
    data.y[0]          # the query's clean answer, e.g. "14"
    t = generate(4, ["sum"], noise="static", contamination=0.5)   # the traces as arrays
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.rng import seed_from
from robustlab.core.types import NonNegativeInt, PositiveInt, Rate, Seed
from robustlab.data.base import Dataset

Noise = Literal["none", "static", "dynamic"]
Unit = Literal["step", "shot"]


@dataclass(frozen=True)
class TraceFunction:
    """One traced function: ``step(state, x, t, modulus)`` on arrays (``t``: the step's index in
    the list) and ``show(state, x, t, result, modulus)``, the text of one trace step."""

    step: Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]
    show: Callable[[int, int, int, int, int], str]
    doc: str


FUNCTIONS: dict[str, TraceFunction] = {
    "sum": TraceFunction(
        lambda s, x, t, m: s + x, lambda s, x, t, r, m: f"{s}+{x}={r}", "sum of the values"
    ),
    "max": TraceFunction(
        lambda s, x, t, m: np.maximum(s, x),
        lambda s, x, t, r, m: f"max({s},{x})={r}",
        "running maximum",
    ),
    "count_even": TraceFunction(
        lambda s, x, t, m: s + (x % 2 == 0),
        lambda s, x, t, r, m: f"{s}+{int(x % 2 == 0)}={r}",
        "number of even values",
    ),
    "alt_sum": TraceFunction(
        lambda s, x, t, m: s + x if t % 2 == 0 else s - x,
        lambda s, x, t, r, m: f"{s}{'+' if t % 2 == 0 else '-'}{x}={r}",
        "alternating sum x1 - x2 + x3 - ...",
    ),
    "sum_mod": TraceFunction(
        lambda s, x, t, m: (s + x) % m,
        lambda s, x, t, r, m: f"({s}+{x})%{m}={r}",
        "sum modulo the modulus",
    ),
    "sum_sq_mod": TraceFunction(
        lambda s, x, t, m: (s + x * x) % m,
        lambda s, x, t, r, m: f"({s}+{x}*{x})%{m}={r}",
        "sum of squares modulo the modulus",
    ),
}


@dataclass
class TInt:
    """Traces of ``n`` prompts as arrays; row ``r < shots`` of an example is a demonstration, row
    ``shots`` the query. ``[n, shots + 1, length]`` arrays: ``xs`` the values, ``before`` /
    ``after`` the states shown before / after each step (noised), ``clean`` the clean states after
    each step, ``mask`` the noised steps, ``delta`` the error each step gets where noised.
    ``answer`` ``[n, shots + 1]``: the answer each row shows (the query's is its clean answer)."""

    functions: list[str]
    xs: np.ndarray
    before: np.ndarray
    after: np.ndarray
    clean: np.ndarray
    answer: np.ndarray
    mask: np.ndarray
    delta: np.ndarray
    noise: str
    contamination: float
    intensity: int
    unit: str
    modulus: int

    @property
    def shots(self) -> int:
        return self.xs.shape[1] - 1


def check_functions(functions: Sequence[str]) -> list[str]:
    """The function names, or a :class:`ConfigError` naming the unknown one and the known ones."""
    if isinstance(functions, str):
        functions = [functions]
    if not functions:
        raise ConfigError("tint: 'functions' is empty")
    for f in functions:
        if f not in FUNCTIONS:
            raise ConfigError(
                f"tint: unknown function {f!r}; known functions: {', '.join(FUNCTIONS)}"
            )
    return list(functions)


def generate(
    n: int,
    functions: Sequence[str] = ("sum",),
    *,
    shots: int = 4,
    length: int = 3,
    low: int = 0,
    high: int = 9,
    noise: str = "none",
    contamination: float = 0.0,
    intensity: int = 1,
    unit: str = "step",
    modulus: int = 10,
    seed: int = 0,
) -> TInt:
    """The traces of ``n`` TInt prompts (see the module docstring), as arrays."""
    fns = check_functions(functions)
    _check(n, shots, length, low, high, noise, contamination, intensity, unit, modulus)
    rows, steps = shots + 1, length
    # per example, its own generators: example i does not depend on n, the noise or the level
    xs = np.stack(
        [
            np.random.default_rng([seed_from("tint-x", seed), i]).integers(
                low, high + 1, (rows, steps)
            )
            for i in range(n)
        ]
    ).reshape(n, rows, steps)
    keys, pick, sign = _noise_draws(n, shots, steps, seed)
    mask = np.zeros((n, rows, steps), dtype=bool)
    if noise != "none" and shots:
        if unit == "step":
            k = _count(contamination, shots * steps)
            rank = np.argsort(np.argsort(keys, axis=1), axis=1)  # rank of each step's key
            mask[:, :shots] = (rank < k).reshape(n, shots, steps)
        else:
            k = _count(contamination, shots)
            rank = np.argsort(np.argsort(keys[:, :shots], axis=1), axis=1)
            chosen = rank < k  # [n, shots]
            onehot = np.arange(steps)[None, None, :] == pick[:, :, None]
            mask[:, :shots] = chosen[:, :, None] & onehot
    delta = np.zeros((n, rows, steps), dtype=np.int64)
    delta[:, :shots] = sign * intensity
    fn_of = np.array([fns[i % len(fns)] for i in range(n)])
    before = np.zeros_like(xs)
    after = np.zeros_like(xs)
    clean = np.zeros_like(xs)
    for name in dict.fromkeys(fns):
        sel = fn_of == name
        f = FUNCTIONS[name].step
        x = xs[sel]
        s_clean = np.zeros(x.shape[:2], dtype=np.int64)
        s_dyn = s_clean.copy()
        for t in range(steps):
            noised = np.where(mask[sel][:, :, t], delta[sel][:, :, t], 0)
            new_clean = f(s_clean, x[:, :, t], t, modulus)
            clean[sel, :, t] = new_clean
            if noise == "dynamic":  # the error enters the state and every later step
                before[sel, :, t] = s_dyn
                s_dyn = f(s_dyn, x[:, :, t], t, modulus) + noised
                after[sel, :, t] = s_dyn
            else:  # static (or none): shown after the fact; the computation stays clean
                before[sel, :, t] = s_clean
                after[sel, :, t] = new_clean + noised
            s_clean = new_clean
    answer = (after if noise == "dynamic" else clean)[:, :, -1].copy()
    answer[:, shots] = clean[:, shots, -1]  # the query is never noised
    mask[:, shots] = False
    return TInt(
        fn_of.tolist(), xs, before, after, clean, answer, mask, delta, noise,
        float(contamination), int(intensity), unit, modulus,
    )  # fmt: skip


def _noise_draws(n: int, shots: int, steps: int, seed: int) -> tuple[np.ndarray, ...]:
    """Per example: a random key per demonstration step (the noised steps are those of the
    smallest keys), a step per demonstration (``unit="shot"``) and a sign per step."""
    keys = np.zeros((n, max(shots * steps, 1)))
    pick = np.zeros((n, shots), dtype=np.int64)
    sign = np.ones((n, shots, steps), dtype=np.int64)
    for i in range(n):
        g = np.random.default_rng([seed_from("tint-noise", seed), i])
        keys[i, : shots * steps] = g.random(shots * steps)
        pick[i] = g.integers(0, steps, shots)
        sign[i] = 2 * g.integers(0, 2, (shots, steps)) - 1
    return keys[:, : shots * steps], pick, sign


def _count(contamination: float, total: int) -> int:
    """``round(contamination * total)``, halves rounded up (not to even)."""
    return int(np.floor(contamination * total + 0.5))


def _check(
    n: int,
    shots: int,
    length: int,
    low: int,
    high: int,
    noise: str,
    contamination: float,
    intensity: int,
    unit: str,
    modulus: int,
) -> None:
    if noise not in ("none", "static", "dynamic"):
        raise ConfigError(f"tint: noise must be 'none', 'static' or 'dynamic', got {noise!r}")
    if unit not in ("step", "shot"):
        raise ConfigError(f"tint: unit must be 'step' or 'shot', got {unit!r}")
    if not isinstance(contamination, int | float) or not 0 <= contamination <= 1:
        raise ConfigError(f"tint: contamination must be in [0, 1], got {contamination!r}")
    if noise == "none" and contamination > 0:
        raise ConfigError(
            f"tint: contamination {contamination} needs noise 'static' or 'dynamic' (noise is "
            "'none')"
        )
    if n < 1 or shots < 0 or length < 1 or intensity < 1 or modulus < 2:
        raise ConfigError(
            "tint: need n >= 1, shots >= 0, length >= 1, intensity >= 1 and modulus >= 2 "
            f"(got n={n}, shots={shots}, length={length}, intensity={intensity}, "
            f"modulus={modulus})"
        )
    if not 0 <= low <= high:
        raise ConfigError(f"tint: need 0 <= low <= high, got low={low}, high={high}")


def render(t: TInt) -> list[str]:
    """The prompt text of each example: one line per demonstration, then the query's prefix."""
    out = []
    for i, name in enumerate(t.functions):
        show = FUNCTIONS[name].show
        lines = []
        for r in range(t.shots + 1):
            head = f"{name} [{', '.join(map(str, t.xs[i, r].tolist()))}]:"
            if r == t.shots:
                lines.append(head)
                break
            steps = ", ".join(
                show(b, x, k, a, t.modulus)
                for k, (b, x, a) in enumerate(
                    zip(
                        t.before[i, r].tolist(),
                        t.xs[i, r].tolist(),
                        t.after[i, r].tolist(),
                        strict=True,
                    )  # fmt: skip
                )
            )
            lines.append(f"{head} {steps}; answer {int(t.answer[i, r])}")
        out.append("\n".join(lines))
    return out


@datasets.register("tint")
def tint(
    n: PositiveInt = 40,
    functions: list[str] | str = "sum",
    shots: NonNegativeInt = 4,
    length: PositiveInt = 3,
    low: NonNegativeInt = 0,
    high: NonNegativeInt = 9,
    noise: Noise = "none",
    contamination: Rate = 0.0,
    intensity: PositiveInt = 1,
    unit: Unit = "step",
    modulus: PositiveInt = 10,
    seed: Seed = 0,
) -> Dataset:
    """TInt few-shot prompts (traced integer functions) with static/dynamic chain-of-thought noise."""
    fns = check_functions([functions] if isinstance(functions, str) else functions)
    t = generate(
        n, fns, shots=shots, length=length, low=low, high=high, noise=noise,
        contamination=contamination, intensity=intensity, unit=unit, modulus=modulus, seed=seed,
    )  # fmt: skip
    demos = slice(0, t.shots)
    wrong = (t.answer[:, demos] != t.clean[:, demos, -1]).sum(axis=1)
    meta = {
        "function": t.functions,
        "noise": [noise] * n,
        "contamination": [float(contamination)] * n,
        "intensity": [int(intensity)] * n,
        "unit": [unit] * n,
        "noised_steps": t.mask.sum(axis=(1, 2)).tolist(),
        "wrong_answers": wrong.tolist(),
        "input": [str(v) for v in t.xs[:, -1].tolist()],
    }
    labels = [str(int(a)) for a in t.answer[:, -1]]
    return Dataset(render(t), labels, "tint", meta=meta)
