"""Truth ratio (TOFU): how much more likely the wrong answers are than the paraphrased right one."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def truth_ratio(para_nll: Tensor, pert_nll: Tensor, pert_mask: Tensor | None = None) -> Tensor:
    """``TR = P̄_pert / P_para`` per example with length-normalised probabilities.

    Args:
        para_nll: ``[B]`` NLL/|y| of the paraphrased (correct) answer.
        pert_nll: ``[B, K]`` NLL/|y| of the perturbed (wrong) answers.
        pert_mask: ``[B, K]`` bool, False on padding.

    Returns:
        ``[B]``; ``P̄_pert`` is the geometric mean over the perturbed answers, so
        ``TR = exp(para_nll - mean_k pert_nll)``.
    """
    if pert_mask is None:
        mean_pert = pert_nll.mean(-1)
    else:
        mean_pert = (pert_nll * pert_mask).sum(-1) / pert_mask.sum(-1).clamp(min=1)
    return torch.exp(para_nll - mean_pert)


def truth_ratio_score(tr: Tensor, forget: bool) -> Tensor:
    """Set score: ``mean(min(TR, 1/TR))`` on a forget set, ``mean(max(0, 1 - TR))`` elsewhere."""
    if forget:
        return torch.minimum(tr, 1 / tr).mean()
    return (1 - tr).clamp(min=0).mean()


class TruthRatio(Metric):
    """Keeps the per-example truth ratios (gathered across ranks) for the score and forget quality.

    ``update(para_nll [B], pert_nll [B, K], pert_mask [B, K])``; ``compute()`` is the set score
    (``forget=True``: closer to 1 is better; otherwise higher is better).
    """

    full_state_update = False

    def __init__(self, forget: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.forget = forget
        self.add_state("ratios", default=[], dist_reduce_fx="cat")

    def update(self, para_nll: Tensor, pert_nll: Tensor, pert_mask: Tensor | None = None) -> None:
        self.ratios.append(truth_ratio(para_nll.double(), pert_nll.double(), pert_mask))

    def values(self) -> Tensor:
        """All per-example truth ratios ``[N]`` (call after ``compute`` under DDP, or on one rank)."""
        return dim_zero_cat(self.ratios)

    def compute(self) -> Tensor:
        return truth_ratio_score(dim_zero_cat(self.ratios), self.forget).float()
