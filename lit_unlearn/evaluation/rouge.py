"""ROUGE-L (as Google's ``rouge_score``) of greedy generations: batched, left-padded, with the KV cache."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.text import rouge_score


def rouge_l(preds: list[str], targets: list[str], stemming: bool = True) -> dict[str, Tensor]:
    """Per-example ROUGE-L ``recall`` and ``f1`` ``[B]`` of ``preds`` against ``targets``.

    The same numbers as Google's ``rouge_score`` (``RougeScorer(["rougeL"],
    use_stemmer=stemming).score(target, pred)``): text lowercased, every run of characters
    other than ``a-z0-9`` a separator, tokens longer than 3 characters Porter-stemmed (nltk's
    ``PorterStemmer``) when ``stemming``, then the LCS of the token lists; an empty side
    scores 0. Computed with torchmetrics' ``rouge_score``, which tokenises and stems the same
    way (checked against ``rouge_score`` in the tests); stemming needs ``nltk``.

    ``stemming=True`` is TOFU's ``eval_rouge_recall`` and open-unlearning's
    ``eval_text_similarity``; MUSE's own code does not stem (``metrics/logger.py``).
    """
    recall, f1 = [], []
    for p, t in zip(preds, targets):
        s = rouge_score(p, t, rouge_keys=("rougeL",), use_stemmer=stemming)
        recall.append(float(s["rougeL_recall"]))
        f1.append(float(s["rougeL_fmeasure"]))
    return {"recall": torch.tensor(recall, dtype=torch.float64), "f1": torch.tensor(f1, dtype=torch.float64)}


@torch.no_grad()
def greedy_generate(model: nn.Module, prompts: list[Tensor], pad_id: int, eos_id: int | None,
                    max_new_tokens: int = 64) -> list[list[int]]:
    """Greedy continuations of token-id prompts, in one left-padded batch.

    Returns the new token ids of each prompt, cut at the first EOS.
    """
    from transformers import GenerationConfig

    from lit_unlearn.datamodules.encoding import collate

    batch = collate([(p, p, None, i) for i, p in enumerate(prompts)], pad_id, padding_side="left")
    device = next(model.parameters()).device
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    width = ids.shape[1]
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                              eos_token_id=eos_id, use_cache=True)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    result = []
    for row in out[:, width:].tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id)]
        result.append(row)
    return result


class RougeL(Metric):
    """Mean ROUGE-L recall and F1 of generated against reference texts.

    ``update(preds: list[str], targets: list[str])``; ``compute()`` -> ``{"recall", "f1"}``.
    ``stemming``: see :func:`rouge_l` (True: TOFU's scorer).
    """

    full_state_update = False

    def __init__(self, stemming: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stemming = stemming
        for name in ("recall", "f1", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: list[str], targets: list[str]) -> None:
        s = rouge_l(preds, targets, self.stemming)
        self.recall += s["recall"].sum()
        self.f1 += s["f1"].sum()
        self.count += len(preds)

    def compute(self) -> dict[str, Tensor]:
        return {"recall": (self.recall / self.count).float(), "f1": (self.f1 / self.count).float()}
