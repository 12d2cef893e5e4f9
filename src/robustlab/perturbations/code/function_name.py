"""Function-name transformations (ReCode S2 family "function"; ContraBERT S10 function renaming).

The entry point is renamed everywhere in the prompt (definition, recursive calls, ``name(`` in
docstring examples) and the new name is returned as ``entry_point``; the task renames it in the
tests too. Threat model: a different but natural (or noisy) name for the function to write.

Example::

    t = perturbations.create("func_camel_case")
    t([problem], 1, rng)[0]["entry_point"]    # 'has_close_elements' -> 'hasCloseElements'
"""

from __future__ import annotations

import builtins
import keyword
import random
import re
from typing import Any

from robustlab.code.identifiers import rename
from robustlab.core.registry import perturbations
from robustlab.perturbations.code._base import CodeTransform, Skip, identifiers
from robustlab.perturbations.code._words import butter_finger, swap_chars, synonyms


def _parts(name: str) -> list[str]:
    return [w for w in re.split(r"_+|(?<=[a-z0-9])(?=[A-Z])", name) if w]


class _Rename(CodeTransform):
    family = "function"

    def new_name(self, name: str, r: random.Random) -> str:
        raise NotImplementedError

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        old = p.get("entry_point")
        if not old:
            raise Skip("no entry point")
        new = self.new_name(old, r)
        if not new.isidentifier() or keyword.iskeyword(new) or hasattr(builtins, new):
            raise Skip(f"{new!r} is not a usable name")
        if new != old and new in identifiers(p["prompt"]):
            raise Skip(f"{new!r} already names something in the prompt")
        if new == old:
            return dict(p)
        renames = {**p.get("renames", {}), old: new}
        return {
            **p,
            "prompt": rename(p["prompt"], {old: new}),
            "entry_point": new,
            "renames": renames,
        }


def _reg(name: str, fn: Any, doc: str) -> None:
    perturbations.register(name)(
        type(name, (_Rename,), {"new_name": staticmethod(fn), "__doc__": doc})
    )


def _camel(n: str, r: random.Random) -> str:
    w = _parts(n)
    return w[0].lower() + "".join(x.capitalize() for x in w[1:]) if len(w) > 1 else n


def _synonym(n: str, r: random.Random) -> str:
    w = _parts(n)
    cand = [i for i, x in enumerate(w) if synonyms(x)]
    if not cand:
        raise Skip("no word of the name has a synonym")
    i = r.choice(cand)
    w[i] = r.choice(synonyms(w[i])).replace(" ", "_").replace("-", "_")
    return "_".join(w)


def _inflect(n: str, r: random.Random) -> str:
    w = _parts(n)
    i = r.randrange(len(w))
    w[i] = w[i][:-1] if w[i].endswith("s") and len(w[i]) > 3 else w[i] + "s"
    return "_".join(w)


def _char_case(n: str, r: random.Random) -> str:
    out = "".join(c.upper() if c.isalpha() and r.random() < 0.35 else c for c in n)
    return out if out != n else n[:1].upper() + n[1:]


def _random(n: str, r: random.Random) -> str:
    return "func_" + "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6))


_reg("func_camel_case", _camel, "Rename the function to camelCase (ReCode CamelCase).")
_reg(
    "func_pascal_case",
    lambda n, r: "".join(x.capitalize() for x in _parts(n)),
    "Rename the function to PascalCase.",
)
_reg(
    "func_snake_case",
    lambda n, r: "_".join(x.lower() for x in _parts(n)),
    "Rename the function to snake_case (ReCode SnakeCase).",
)
_reg(
    "func_butter_fingers",
    lambda n, r: butter_finger(n, r, 0.05),
    "Keyboard-neighbour typos in the function name (ReCode ButterFingers).",
)
_reg(
    "func_swap_characters",
    swap_chars,
    "Swap two adjacent characters of the function name (ReCode SwapCharacters).",
)
_reg(
    "func_change_char_case",
    _char_case,
    "Upper-case random characters of the function name (ReCode ChangeCharCase).",
)
_reg(
    "func_synonym",
    _synonym,
    "Replace one word of the function name by a WordNet synonym (ReCode SynonymSubstitution).",
)
_reg(
    "func_inflectional_variation",
    _inflect,
    "Change the inflection of one word of the function name (ReCode).",
)
_reg(
    "func_random_name",
    _random,
    "Rename the function to a random identifier (ContraBERT function renaming).",
)
