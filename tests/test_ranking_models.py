"""Rankers: LambdaMART LTR (seeds, cache), re-ranking, and an HTTP ranker against a real loopback
server (the MiniLM bi-encoder is tested in test_ranking_dense.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch

from robustlab.core.registry import datasets, models, tasks


@pytest.fixture(scope="module")
def small():
    return datasets.create(
        "bbc-known-item", {"split": "test", "n_queries": 6, "max_docs": 40, "candidates": 20}
    )


def test_ltr_trains_per_seed_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    params = {"n_queries": 150, "n_estimators": 40, "depth": 30}
    a, b = models.create("ltr", {**params, "seed": 0}), models.create("ltr", {**params, "seed": 1})
    assert a.fingerprint() != b.fingerprint()  # training seeds give different models
    assert models.create("ltr", {**params, "seed": 0}).fingerprint() == a.fingerprint()  # cache
    assert len(list((tmp_path / "ltr").glob("*.txt"))) == 2
    test = datasets.create("bbc-known-item", {"split": "test", "n_queries": 80})
    mrr = float(tasks.create("ranking").evaluate(a, test.x, test.y).correct.mean())
    assert mrr > 0.4  # far above random ordering of 100 candidates (~0.03)


def test_rerank_orders_head_by_second_stage(small):
    bm25, lex = models.create("bm25"), models.create("ltr", {"seed": 0})
    rr = models.create("rerank", {"first": "bm25", "second": "ltr", "depth": 5})
    e = small.x[0]
    order = torch.argsort(rr.scores(e["query"], e["docs"]), descending=True, stable=True)
    head = torch.argsort(bm25.scores(e["query"], e["docs"]), descending=True, stable=True)[:5]
    # the head is re-scored with the statistics of the whole list, not of the 5 head documents
    s2 = lex.fit_collection(e["docs"]).scores(e["query"], [e["docs"][i] for i in head])
    assert order[:5].tolist() == head[torch.argsort(s2, descending=True, stable=True)].tolist()
    assert set(order[5:].tolist()) == set(range(len(e["docs"]))) - set(head.tolist())


class _Handler(BaseHTTPRequestHandler):
    ranker = None

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body["query"] == "boom":
            self.send_response(500)
            self.end_headers()
            return
        s = self.ranker.scores(body["query"], body["docs"]).tolist()
        out = json.dumps({"scores": s[:-1] if body["query"] == "short" else s}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_http_ranker_against_loopback_server(small):
    _Handler.ranker = models.create("bm25")
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = models.create("http-ranker", {"url": f"http://127.0.0.1:{server.server_port}/rank"})
        x = [small.x[0], {**small.x[1], "query": "boom"}, {**small.x[2], "query": "short"}]
        ev = tasks.create("ranking").evaluate(r, x, small.y[:3])
        # the service sees only the candidate list, so it ranks with that list's statistics
        own = [{**small.x[0], "corpus": None}]
        direct = tasks.create("ranking").evaluate(models.create("bm25"), own, small.y[:1])
        assert ev.error[0] is None and ev.correct[0] == direct.correct[0]
        assert "HTTP 500" in ev.error[1] and "19 scores for 20 documents" in ev.error[2]
        assert np.isnan(ev.correct[1].item()) and np.isnan(ev.correct[2].item())
    finally:
        server.shutdown()
