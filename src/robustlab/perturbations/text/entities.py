"""Entity perturbations: swap person names, change numbers (CheckList's INV tests, Ribeiro et al.,
ACL 2020: a prediction should not depend on which person is named or on the exact amount).

Threat model: label-preserving substitution of named entities. Severity is the edit rate over the
eligible words: each distinct person name of a text (from the bundled lists below: common English
first names by gender, and surnames; capitalised words only) is replaced with that probability,
consistently in the whole text, by another name of the same list; each number is changed with that
probability by a factor drawn uniformly in ``[1 - spread, 1 + spread]`` (formatting kept: decimals,
thousands separators; four-digit years 1800-2099 are kept unless ``years=True``; ordinals (3rd) and
names such as 3D or 4G, a number followed by a capital, are not numbers here).

Example::

    names = perturbations.create("names")
    names(["Tony Blair met Gordon Brown"], 1.0, rng)   # -> e.g. ["Peter Murphy met Patrick Brown"]
"""

from __future__ import annotations

import re

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import EDIT_RATE, NonNegative
from robustlab.perturbations.text import SEVERITIES, check_texts


def _names(words: str) -> tuple[str, ...]:
    return tuple(words.split())


# unambiguous names (no common English words such as Will, Mark, May, Rose, Brown, White)
MALE = _names(
    """Adam Alan Albert Alex Andrew Anthony Arthur Ben Brian Carl Charles Chris Daniel
David Dennis Derek Edward Eric Frank Gary George Gordon Graham Harry Henry Ian James Jason Jeff
John Jonathan Joseph Keith Kenneth Kevin Larry Leonard Martin Matthew Michael Neil Nick Nigel Oliver
Patrick Paul Peter Philip Richard Robert Roger Ronald Samuel Simon Stephen Steven Stuart Thomas
Timothy Tony Trevor Walter William"""
)
FEMALE = _names(
    """Alice Amanda Amy Angela Anna Barbara Betty Carol Caroline Catherine Charlotte
Christine Claire Deborah Diana Donna Dorothy Elizabeth Emily Emma Fiona Hannah Helen Jane Janet
Jennifer Jessica Julia Julie Karen Kate Laura Linda Lisa Louise Lucy Margaret Maria Mary Melissa
Michelle Nancy Nicola Patricia Rachel Rebecca Ruth Sandra Sarah Sharon Sophie Susan Tessa Victoria
Wendy"""
)
SURNAMES = _names(
    """Adams Allen Anderson Bailey Baker Barnes Bennett Blair Campbell Carter Clarke
Collins Cooper Davies Davis Edwards Evans Fisher Foster Garcia Gonzalez Harris Harrison Hughes
Jackson Jenkins Johnson Jones Kelly Kennedy Lewis Martinez Mitchell Morgan Morris Murphy Murray
Nelson Parker Phillips Powell Roberts Robinson Rodriguez Russell Scott Shaw Simpson Smith Stewart
Taylor Thompson Thomson Turner Walker Watson Williams Wilson Wright"""
)
_GROUP = {n: g for g in (MALE, FEMALE, SURNAMES) for n in g}


@perturbations.register("names")
class Names:
    """Replace person names (bundled lists, same gender / surnames) consistently within a text."""

    modality = "text"
    level_domain = EDIT_RATE
    severities = SEVERITIES

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        texts = check_texts(x, severity, "names")
        if severity == 0:
            return list(x)
        u = rng.uniform(max((len(t) for t in texts), default=0) or 1, 2).tolist()
        out = []
        for i, words in enumerate(texts):
            new_of: dict[str, str] = {}
            changed = False
            for j, w in enumerate(words):
                core = w.strip(".,;:!?\"()'\u2019").removesuffix("'s").removesuffix("\u2019s")
                group = _GROUP.get(core)
                if group is None or core in new_of:
                    continue
                if u[i][j][0] < severity:
                    k = min(int(u[i][j][1] * (len(group) - 1)), len(group) - 2)
                    new_of[core] = group[k + (k >= group.index(core))]  # any other of the group
                    changed = True
                else:
                    new_of[core] = core
            if not changed:
                out.append(x[i])
                continue
            pat = re.compile(r"\b(" + "|".join(map(re.escape, new_of)) + r")\b")
            out.append(pat.sub(lambda m, d=new_of: d[m.group(1)], x[i]))
        return out


_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?!\d|[A-Z]|st\b|nd\b|rd\b|th\b)")


def _change(m: re.Match[str], u: float, spread: float, years: bool) -> str:
    whole, frac = m.group(1), m.group(2) or ""
    comma = "," in whole
    value = float(whole.replace(",", "") + frac)
    if not years and not comma and not frac and len(whole) == 4 and 1800 <= value <= 2099:
        return m.group()
    decimals = len(frac) - 1 if frac else 0
    new = round(value * (1 + spread * (2 * u - 1)), decimals)
    if new == value:
        new = value + 10**-decimals
    text = f"{new:,.{decimals}f}" if comma else f"{new:.{decimals}f}"
    return text


@perturbations.register("numbers")
class Numbers:
    """Change a share ``severity`` of the numbers by a random factor in ``[1-spread, 1+spread]``."""

    modality = "text"
    level_domain = EDIT_RATE
    severities = SEVERITIES

    def __init__(self, spread: NonNegative = 0.5, years: bool = False) -> None:
        if not 0 < spread < 1:
            raise ConfigError(f"numbers spread must lie in (0, 1), got {spread}")
        self.spread = spread
        self.years = years

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        check_texts(x, severity, "numbers")
        if severity == 0:
            return list(x)
        spans = [list(_NUMBER.finditer(t)) for t in x]
        u = rng.uniform(max((len(s) for s in spans), default=0) or 1, 2).tolist()
        out = []
        for t, ms, uu in zip(x, spans, u, strict=True):
            parts, end = [], 0
            for m, (pick, v) in zip(ms, uu, strict=False):
                if pick < severity:
                    parts += [t[end : m.start()], _change(m, v, self.spread, self.years)]
                    end = m.end()
            out.append("".join(parts) + t[end:])
        return out
