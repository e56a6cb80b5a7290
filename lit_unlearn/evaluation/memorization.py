"""Exact memorization and extraction strength of teacher-forced predictions."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_unlearn.evaluation.probability import MeanOf
from lit_unlearn.objectives import IGNORE_INDEX


def _hits(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    return (logits[:, :-1].argmax(-1) == target) & mask, mask


def exact_memorization(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of answer tokens whose teacher-forced argmax is the label, ``[B]``."""
    hit, mask = _hits(logits, labels)
    return hit.sum(-1) / mask.sum(-1).clamp(min=1)


def extraction_strength(logits: Tensor, labels: Tensor) -> Tensor:
    """``1 - k/|y|`` per example, ``k`` the smallest answer position from which every
    argmax matches the label to the end (1: the whole answer is predicted; 0: not even the
    last token), ``[B]``."""
    hit, mask = _hits(logits, labels)
    n = mask.sum(-1)
    ok = hit | ~mask  # unscored positions do not break a suffix
    # suffix_ok[t] is True iff every position >= t is ok
    suffix_ok = ok.flip(-1).long().cumprod(-1).flip(-1).bool()
    # answer positions in order: rank of each scored position among the scored ones
    rank = mask.long().cumsum(-1) - 1
    k = torch.where(suffix_ok & mask, rank, n[:, None].expand_as(rank)).min(-1).values
    return 1 - k / n.clamp(min=1)


class ExactMemorization(MeanOf):
    """Mean exact memorization; ``update(logits [B, T, V], labels [B, T])``."""

    def update(self, logits: Tensor, labels: Tensor) -> None:
        super().update(exact_memorization(logits, labels))


class ExtractionStrength(MeanOf):
    """Mean extraction strength; ``update(logits [B, T, V], labels [B, T])``."""

    def update(self, logits: Tensor, labels: Tensor) -> None:
        super().update(extraction_strength(logits, labels))

