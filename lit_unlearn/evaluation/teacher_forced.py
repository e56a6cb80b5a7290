"""Teacher-forced answer metrics: NLL, answer probability, token accuracy, answer exact match and fact accuracy.

Three accuracies of the same teacher-forced pass, from the most to the least forgiving:
``token_acc`` (share of answer tokens whose argmax is the label: template words such as
"was born in" keep it high even on facts the model never saw), ``answer_em`` (share of
answers whose every token is the argmax: a template alone cannot get the value right) and
``fact_acc`` (share of answers whose marked fact span is all argmax; records with a
``fact_span`` only).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_unlearn.objectives import token_logprobs


def teacher_forced_stats(logits: Tensor, labels: Tensor, fact_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Per-example statistics of one forward pass.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]``, ``-100`` on unscored tokens.
        fact_mask: ``[B, T]`` bool, True on the fact-span tokens (optional).

    Returns:
        ``nll`` ``[B]`` (mean over answer tokens), ``prob`` ``[B]`` (``exp(-nll)``),
        ``correct`` ``[B]`` and ``tokens`` ``[B]`` (argmax hits / answer tokens),
        ``answer_correct`` ``[B]`` bool (True iff the answer has a token and every answer
        token is the argmax), and with a ``fact_mask`` also ``fact_correct`` ``[B]`` (True iff
        every fact token is the argmax).
    """
    logp, mask = token_logprobs(logits, labels)
    tokens = mask.sum(-1)
    nll = -logp.sum(-1) / tokens.clamp(min=1)
    hit = (logits[:, :-1].argmax(-1) == labels[:, 1:]) & mask
    out = {"nll": nll, "prob": torch.exp(-nll), "correct": hit.sum(-1), "tokens": tokens,
           "answer_correct": (hit | ~mask).all(-1) & (tokens > 0)}
    if fact_mask is not None:
        fact = fact_mask[:, 1:]
        out["fact_correct"] = (hit | ~fact).all(-1)
    return out


class TeacherForcedMetrics(Metric):
    """Mean NLL and answer probability per example, token accuracy, answer exact match, fact accuracy.

    ``update(logits [B, T, V], labels [B, T] (-100 unscored), fact_mask [B, T] bool | None,
    has_fact [B] bool | None)``. ``compute()`` returns ``{"nll", "prob", "token_acc",
    "answer_em"}`` plus ``"fact_acc"`` when some examples marked a fact span (only those
    count towards it). ``token_acc`` is over answer tokens; ``answer_em`` over answers (with
    at least one scored token): the share whose every answer token is the argmax. States are
    sums, so results are exact under any sharding of the examples across ranks.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("nll", "prob", "count", "correct", "tokens", "answer_correct", "answer_count", "fact_correct",
                     "fact_count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor, fact_mask: Tensor | None = None,
               has_fact: Tensor | None = None) -> None:
        stats = teacher_forced_stats(logits, labels, fact_mask)
        self.nll += stats["nll"].double().sum()
        self.prob += stats["prob"].double().sum()
        self.count += labels.shape[0]
        self.correct += stats["correct"].sum()
        self.tokens += stats["tokens"].sum()
        self.answer_correct += stats["answer_correct"].sum()
        self.answer_count += (stats["tokens"] > 0).sum()
        if fact_mask is not None:
            has = has_fact if has_fact is not None else fact_mask.any(-1)
            self.fact_correct += (stats["fact_correct"] & has).sum()
            self.fact_count += has.sum()

    def compute(self) -> dict[str, Tensor]:
        out = {"nll": self.nll / self.count, "prob": self.prob / self.count, "token_acc": self.correct / self.tokens,
               "answer_em": self.answer_correct / self.answer_count}
        if self.fact_count > 0:
            out["fact_acc"] = self.fact_correct / self.fact_count
        return {k: v.float() for k, v in out.items()}


@torch.no_grad()
def evaluate_teacher_forced(model, loader, device, context=None) -> dict[str, float]:
    """Teacher-forced metrics of ``model`` over the ``TokenBatch``es of ``loader`` (sharded
    loaders give the all-rank result). The model is put in eval mode and restored."""
    from contextlib import nullcontext

    metric = TeacherForcedMetrics().to(device)
    was_training = model.training
    model.eval()
    with context or nullcontext():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
            metric.update(logits, batch["labels"], batch.get("fact_mask"), batch.get("has_fact"))
    model.train(was_training)
    return {k: float(v) for k, v in metric.compute().items()}
