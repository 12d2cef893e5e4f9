"""A ``transformers`` sequence classifier from a local folder, as a text :class:`Classifier`.

``HFSequenceClassifier(path).logits(texts) -> [B, num_labels]`` runs
``AutoModelForSequenceClassification`` on the tokenized texts (length-sorted batches, no gradient),
truncating texts longer than the model's maximum length (``max_length``, at most its position
embeddings) instead of failing; which texts were cut, and their token counts, are kept per call
in ``last_extra`` and recorded by the classification task as ``x.truncated`` / ``x.n_tokens``.
Logits are cached per text (black-box attacks query the same texts many times): ``cache.hits``.

White-box access (HotFlip, Ebrahimi et al., 2018): :meth:`token_gradients` returns, for every
position and every vocabulary entry ``v``, the first-order estimate of the change in the
cross-entropy loss when the token at that position is replaced by ``v``:
``(e_v - e_{x_i}) . d loss / d e_{x_i}`` (the gradient with respect to the one-hot input times the
embedding matrix). :meth:`loss` evaluates exact losses of token-id batches (candidate swaps).

Example::

    clf = models.create("hf-classifier", {"path": "/models/my-bert-sst"})
    clf.logits(["A fine film."]).argmax(1)
    g = clf.token_gradients(["A fine film."], torch.tensor([1]))
    g.gain[0].max(-1)   # best swap per position (estimated loss increase)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.core.types import NonNegativeInt, PositiveInt
from robustlab.models.hf_base import HFTextModel
from robustlab.models.text_embedding import check_texts


@dataclass
class TokenGradients:
    """HotFlip scores of a batch: ``gain[b, i, v]`` estimates loss(x with x_i := v) - loss(x);
    ``-inf`` at special tokens and padding (not to be swapped)."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    loss: torch.Tensor  # [B] cross-entropy of the label
    gain: torch.Tensor  # [B, L, V]


class HFSequenceClassifier(HFTextModel):
    """``AutoModelForSequenceClassification`` behind ``logits(list[str])`` (white-box, cached)."""

    auto = "AutoModelForSequenceClassification"
    record_extra = ("truncated", "n_tokens")  # per-text columns of ``last_extra``

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.num_classes = int(self.net.config.num_labels)
        id2label = getattr(self.net.config, "id2label", None) or {}
        self.classes = [str(id2label.get(i, i)) for i in range(self.num_classes)]
        self._table: torch.Tensor | None = None

    def _rows(self, texts: list[str]) -> list[tuple[torch.Tensor, bool, int]]:
        enc = self.tokens(texts)
        with torch.no_grad():
            out = self.net(**enc.inputs).logits.float().cpu()
        return list(zip(out, enc.truncated, enc.n_tokens, strict=True))

    def logits(self, x: Sequence[str]) -> torch.Tensor:
        """``[B, num_classes]`` logits; per-text ``truncated``/``n_tokens`` in ``last_extra``."""
        rows = self.cached(x, self._rows)
        self.last_extra = {"truncated": [r[1] for r in rows], "n_tokens": [r[2] for r in rows]}
        if not rows:
            return torch.zeros(0, self.num_classes)
        return torch.stack([r[0] for r in rows])

    # white-box ------------------------------------------------------------------------------
    def embedding_table(self) -> torch.Tensor:
        """``[V, D]`` the input embedding of every vocabulary entry (the layer's own output, so
        scaled embeddings are handled)."""
        if self._table is None:
            layer = self.net.get_input_embeddings()
            with torch.no_grad():
                ids = torch.arange(layer.num_embeddings, device=self.device)
                self._table = layer(ids).detach()
        return self._table

    def _forward(self, inputs: dict[str, torch.Tensor], embeds: torch.Tensor) -> torch.Tensor:
        rest = {k: v for k, v in inputs.items() if k != "input_ids"}
        return self.net(inputs_embeds=embeds, **rest).logits.float()

    def id_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, num_classes]`` logits (float32, CPU) of token-id inputs (no cache, no gradient)."""
        with torch.no_grad():
            out = self.net(input_ids=input_ids.to(self.device),
                           attention_mask=attention_mask.to(self.device)).logits.float()  # fmt: skip
        return out.cpu()

    def loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """``[B]`` cross-entropy of ``labels`` on token-id inputs (e.g. candidate swaps)."""
        out = self.id_logits(input_ids, attention_mask)
        return F.cross_entropy(out, torch.as_tensor(labels, dtype=torch.long), reduction="none")

    def token_gradients(self, x: Sequence[str], labels: torch.Tensor) -> TokenGradients:
        """HotFlip swap scores for a batch of texts and their labels (see the module docstring).

        Memory is ``B * L * V`` floats: pass batches sized for the vocabulary."""
        texts = check_texts(x, self.name)
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (len(texts),):
            raise ConfigError(f"{self.name}: need one label per text, got {tuple(labels.shape)}")
        if len(texts) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ConfigError(f"{self.name}: labels must lie in [0, {self.num_classes})")
        return self._gradients(self.tokens(texts).inputs, labels)

    def id_gradients(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor) -> TokenGradients:  # fmt: skip
        """:meth:`token_gradients` of token-id inputs (e.g. a text after some swaps, without
        re-tokenizing it); ``labels`` as there."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ConfigError(f"{self.name}: input_ids and attention_mask must be [B, L] alike")
        if labels.shape != (len(input_ids),):
            raise ConfigError(f"{self.name}: need one label per row, got {tuple(labels.shape)}")
        inputs = {"input_ids": input_ids.to(self.device),
                  "attention_mask": attention_mask.to(self.device)}  # fmt: skip
        return self._gradients(inputs, labels)

    def _gradients(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> TokenGradients:
        ids = inputs["input_ids"]
        table = self.embedding_table()
        embeds = table[ids].clone().requires_grad_(True)
        with torch.enable_grad():
            out = self._forward(inputs, embeds)
            loss = F.cross_entropy(out, labels.to(out.device), reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), embeds)
        gain = grad @ table.T - (grad * embeds.detach()).sum(-1, keepdim=True)
        unk = self.tokenizer.unk_token_id  # an unknown word is still a word to swap
        special = torch.tensor([i for i in self.tokenizer.all_special_ids if i != unk] or [-1])
        frozen = torch.isin(ids, special.to(ids.device)) | (inputs["attention_mask"] == 0)
        gain = gain.masked_fill(frozen.unsqueeze(-1), -float("inf"))
        return TokenGradients(ids.cpu(), inputs["attention_mask"].cpu(),
                              loss.detach().cpu(), gain.cpu())  # fmt: skip


@models.register("hf-classifier")
def hf_classifier(
    path: str,
    max_length: PositiveInt | None = None,
    batch_size: PositiveInt = 16,
    cache_size: NonNegativeInt = 50_000,
    allow_pickle: bool = False,
    device: str | None = None,
) -> HFSequenceClassifier:
    """A local ``transformers`` sequence classifier (``save_pretrained`` folder, safetensors)."""
    return HFSequenceClassifier(
        path, max_length=max_length, batch_size=batch_size, cache_size=cache_size,
        allow_pickle=allow_pickle, device=device, name="hf-classifier",
    )  # fmt: skip
