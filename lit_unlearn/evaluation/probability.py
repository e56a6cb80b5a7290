"""Answer probability: ``exp(-NLL/|y|)`` per example, and its option-normalised form."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def answer_probability(nll_per_token: Tensor) -> Tensor:
    """Length-normalised probability ``exp(-NLL/|y|)``, ``[B] -> [B]``."""
    return torch.exp(-nll_per_token)


def option_probability(correct_nll: Tensor, wrong_nll: Tensor, wrong_mask: Tensor | None = None) -> Tensor:
    """Probability of the correct option normalised over all options (TOFU's multiple choice).

    Args:
        correct_nll: ``[B]`` NLL/|y| of the correct answer.
        wrong_nll: ``[B, K]`` NLL/|y| of the wrong options.
        wrong_mask: ``[B, K]`` bool, False on padding options (records with fewer than K).

    Returns:
        ``[B]``: ``p_correct / (p_correct + Σ p_wrong)`` with ``p = exp(-NLL/|y|)``.
    """
    p_correct = torch.exp(-correct_nll)
    p_wrong = torch.exp(-wrong_nll)
    if wrong_mask is not None:
        p_wrong = p_wrong * wrong_mask
    return p_correct / (p_correct + p_wrong.sum(-1))


class MeanOf(Metric):
    """Mean of per-example values (sum and count states, exact under any sharding)."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        """``values``: ``[B]``."""
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


class AnswerProbability(MeanOf):
    """Mean ``exp(-NLL/|y|)``; ``update(nll_per_token [B])``."""

    def update(self, nll_per_token: Tensor) -> None:
        super().update(answer_probability(nll_per_token))


class OptionProbability(MeanOf):
    """Mean option-normalised probability; ``update(correct_nll [B], wrong_nll [B, K], wrong_mask [B, K])``."""

    def update(self, correct_nll: Tensor, wrong_nll: Tensor, wrong_mask: Tensor | None = None) -> None:
        super().update(option_probability(correct_nll, wrong_nll, wrong_mask))
