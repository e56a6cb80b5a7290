"""Exact memorization and extraction strength of teacher-forced predictions.

Both follow open-unlearning (``src/evals/metrics/memorization.py`` with
``tokenwise_vocab_logprobs`` of ``src/evals/metrics/utils.py``) by default: the answer's
final EOS label is not scored (pass the tokenizer's ``eos_id``; see
:func:`~lit_unlearn.evaluation.eos.without_final_eos`), and the argmax at each position is
compared with the next label.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_unlearn.evaluation.eos import without_final_eos
from lit_unlearn.evaluation.probability import MeanOf
from lit_unlearn.objectives import IGNORE_INDEX

ES_NO_MATCH = ("last", "zero")


def _hits(logits: Tensor, labels: Tensor, eos_id: int | None) -> tuple[Tensor, Tensor]:
    target = without_final_eos(labels, eos_id)[:, 1:]
    mask = target != IGNORE_INDEX
    return (logits[:, :-1].argmax(-1) == target) & mask, mask


def exact_memorization(logits: Tensor, labels: Tensor, eos_id: int | None = None) -> Tensor:
    """Fraction of answer tokens whose teacher-forced argmax is the label, ``[B]``.

    ``eos_id``: a final label equal to it is not scored (open-unlearning's default; None
    scores every label). An example with no scored token gives NaN (open-unlearning reports
    None), which :class:`ExactMemorization` leaves out of the mean.
    """
    hit, mask = _hits(logits, labels, eos_id)
    n = mask.sum(-1)
    return torch.where(n > 0, hit.sum(-1) / n.clamp(min=1), torch.full_like(n, float("nan"), dtype=torch.float))


def extraction_strength(logits: Tensor, labels: Tensor, eos_id: int | None = None, no_match: str = "last") -> Tensor:
    """``1 - k/|y|`` per example, ``k`` the smallest answer position from which every
    argmax matches the label to the end (1: the whole answer is predicted), ``[B]``.

    Args:
        eos_id: a final label equal to it is not scored (open-unlearning's default).
        no_match: when not even the last token is predicted, ``"last"`` takes ``k = |y| - 1``
            (``1/|y|``, what open-unlearning's ``for k in range(|y|)`` loop leaves when it never
            breaks) and ``"zero"`` takes ``k = |y|`` (0).

    An example with no scored token gives 0, as open-unlearning.
    """
    if no_match not in ES_NO_MATCH:
        raise ValueError(f"extraction_strength: `no_match` must be one of {ES_NO_MATCH}, got {no_match!r}")
    hit, mask = _hits(logits, labels, eos_id)
    n = mask.sum(-1)
    ok = hit | ~mask  # unscored positions do not break a suffix
    # suffix_ok[t] is True iff every position >= t is ok
    suffix_ok = ok.flip(-1).long().cumprod(-1).flip(-1).bool()
    # answer positions in order: rank of each scored position among the scored ones
    rank = mask.long().cumsum(-1) - 1
    k = torch.where(suffix_ok & mask, rank, n[:, None].expand_as(rank)).min(-1).values
    if no_match == "last":
        k = torch.minimum(k, (n - 1).clamp(min=0))
    return torch.where(n > 0, 1 - k / n.clamp(min=1), torch.zeros_like(k, dtype=torch.float))


class ExactMemorization(MeanOf):
    """Mean exact memorization over examples with a scored token; ``update(logits [B, T, V], labels [B, T])``.

    ``eos_id``: see :func:`exact_memorization`.
    """

    def __init__(self, eos_id: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.eos_id = eos_id

    def update(self, logits: Tensor, labels: Tensor) -> None:
        values = exact_memorization(logits, labels, self.eos_id)
        super().update(values[~values.isnan()])


class ExtractionStrength(MeanOf):
    """Mean extraction strength; ``update(logits [B, T, V], labels [B, T])``.

    ``eos_id``, ``no_match``: see :func:`extraction_strength`.
    """

    def __init__(self, eos_id: int | None = None, no_match: str = "last", **kwargs) -> None:
        if no_match not in ES_NO_MATCH:
            raise ValueError(f"ExtractionStrength: `no_match` must be one of {ES_NO_MATCH}, got {no_match!r}")
        super().__init__(**kwargs)
        self.eos_id, self.no_match = eos_id, no_match

    def update(self, logits: Tensor, labels: Tensor) -> None:
        super().update(extraction_strength(logits, labels, self.eos_id, self.no_match))
