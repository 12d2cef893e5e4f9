"""A small reader of WordNet 3.0 data files (Debian ``wordnet-base``): word -> synonyms.

Reads ``data.{noun,verb,adj,adv}`` from ``$WORDNET_DIR`` or ``/usr/share/wordnet`` once (about 1 s).
Only single-word lemmas are kept; a word's synonyms are the other lemmas of its synsets, most
frequent sense first (the order of the synsets in the file).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from robustlab.core.errors import ConfigError


@functools.lru_cache(maxsize=1)
def synonyms_table() -> dict[str, tuple[str, ...]]:
    """``{word: (synonym, ...)}`` over all parts of speech (lower case, single words)."""
    root = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
    files = [root / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        raise ConfigError(
            f"WordNet data files not found in {root} (apt-get install wordnet-base, or set "
            "WORDNET_DIR)"
        )
    table: dict[str, list[str]] = {}
    for f in files:
        with open(f, encoding="latin-1") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue  # licence header
                parts = line.split(" ", 4)
                n = int(parts[3], 16)
                lemmas = line.split()[4 : 4 + 2 * n : 2]
                words = [w.split("(")[0].lower() for w in lemmas if "_" not in w and "-" not in w]
                for w in words:
                    syn = table.setdefault(w, [])
                    syn.extend(o for o in words if o != w and o not in syn)
    return {w: tuple(s) for w, s in table.items() if s}
