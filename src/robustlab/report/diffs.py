"""HTML views of a clean and a perturbed input: highlighted word and code diffs, and images.

- :func:`word_diff`: the words of two texts aligned by :class:`difflib.SequenceMatcher`; removed
  words in ``<del>``, added ones in ``<ins>`` (texts: typos, synonyms, attacks).
- :func:`code_diff`: a line diff of two programs; a changed line pair is diffed token by token
  (identifiers, numbers, operators, whitespace runs), so a renamed variable is what lights up.
- :func:`image_views`: clean, perturbed and ``|x' - x|`` magnified to the full range, as inline
  PNG ``data:`` URIs (self-contained HTML), upscaled with nearest neighbours for small images.

Example::

    word_diff("the cat sat", "the dog sat")  # 'the <del>cat</del> <ins>dog</ins> sat'
"""

from __future__ import annotations

import base64
import difflib
import io
import re
from html import escape
from typing import Any

import torch

IMAGE_PX = 72  # small images are upscaled (nearest) to about this many pixels on a side
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")


def word_diff(a: str, b: str, context: int | None = None) -> str:
    """``a`` -> ``b`` word by word: unchanged words as is, removed ones in ``<del>``, added ones
    in ``<ins>`` (HTML-escaped; words joined by single spaces). With ``context``, a run of
    unchanged words longer than twice that keeps ``context`` words next to each change and shows
    ``…`` for the rest (long articles stay short)."""
    wa, wb = a.split(), b.split()
    out: list[str] = []
    ops = difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes()
    for k, (op, i1, i2, j1, j2) in enumerate(ops):
        if op == "equal":
            words = wa[i1:i2]
            if context is not None and len(ops) == 1:  # nothing changed: the beginning
                words = words if len(words) <= 2 * context else [*words[: 2 * context], "…"]
            elif context is not None and len(words) > 2 * context:
                head = words[:context] if k > 0 else []
                tail = words[len(words) - context :] if k < len(ops) - 1 else []
                words = [*head, "…", *tail]
            out.append(escape(" ".join(words)))
            continue
        if i2 > i1:
            out.append(f"<del>{escape(' '.join(wa[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{escape(' '.join(wb[j1:j2]))}</ins>")
    return " ".join(out)


def _tokens_diff(a: str, b: str) -> tuple[str, str]:
    """Two changed lines with their differing tokens marked (``<del>`` in a, ``<ins>`` in b)."""
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    left: list[str] = []
    right: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        sa, sb = escape("".join(ta[i1:i2])), escape("".join(tb[j1:j2]))
        if op == "equal":
            left.append(sa)
            right.append(sb)
            continue
        left.append(f"<del>{sa}</del>" if sa else "")
        right.append(f"<ins>{sb}</ins>" if sb else "")
    return "".join(left), "".join(right)


def code_diff(a: str, b: str) -> str:
    """A ``<pre>`` line diff of two programs: ``  `` unchanged, ``- `` removed, ``+ `` added lines;
    a replaced block of as many lines on both sides is diffed token by token."""
    la, lb = a.splitlines(), b.splitlines()
    lines: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, la, lb, autojunk=False).get_opcodes():
        if op == "equal":
            lines += [f"  {escape(s)}" for s in la[i1:i2]]
        elif op == "replace" and i2 - i1 == j2 - j1:
            pairs = [_tokens_diff(x, y) for x, y in zip(la[i1:i2], lb[j1:j2], strict=True)]
            lines += [f'<span class="rm">- {p[0]}</span>' for p in pairs]
            lines += [f'<span class="add">+ {p[1]}</span>' for p in pairs]
        else:
            lines += [f'<span class="rm">- <del>{escape(s)}</del></span>' for s in la[i1:i2]]
            lines += [f'<span class="add">+ <ins>{escape(s)}</ins></span>' for s in lb[j1:j2]]
    return '<pre class="codediff">' + "\n".join(lines) + "</pre>"


def png_uris(images: torch.Tensor) -> list[str]:
    """``[N, C, H, W]`` images in [0, 1] (C = 1 or 3) as PNG ``data:`` URIs, upscaled by an
    integer factor to about :data:`IMAGE_PX` pixels (nearest neighbour: pixels stay visible)."""
    from PIL import Image

    n, c, h, w = images.shape
    scale = max(1, IMAGE_PX // max(h, w))
    if scale > 1:
        images = images.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    arr = (images.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for img in arr:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if c == 1 else img).save(buf, format="PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


def magnified(clean: torch.Tensor, perturbed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``|x' - x|`` of a batch scaled per example so its largest entry is 1, and the gains
    (0 where nothing changed)."""
    d = (perturbed.float() - clean.float()).abs()
    top = d.flatten(1).amax(1)
    gain = torch.where(top > 0, 1 / top.clamp_min(1e-12), torch.zeros_like(top))
    return d * gain.view(-1, *([1] * (d.ndim - 1))), gain


def image_views(
    clean: torch.Tensor, perturbed: torch.Tensor | None, domain: tuple[float, float] = (0.0, 1.0)
) -> dict[str, Any]:
    """PNG URIs of one example: ``clean_png``, and with a perturbed input ``perturbed_png``,
    ``diff_png`` (``|x' - x|`` magnified to the full range) and ``gain`` (its factor, in units of
    the data's range ``domain``)."""
    lo, hi = domain
    span = (hi - lo) or 1.0
    pair = [clean] if perturbed is None else [clean, perturbed.to(clean.device)]
    x = (torch.stack(pair).float() - lo) / span
    if perturbed is None:
        return {"clean_png": png_uris(x)[0]}
    diff, gain = magnified(x[:1], x[1:])
    uris = png_uris(torch.cat([x, diff]))
    return {"clean_png": uris[0], "perturbed_png": uris[1], "diff_png": uris[2],
            "gain": float(gain[0])}  # fmt: skip
