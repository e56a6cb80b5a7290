"""Forget quality (TOFU): KS-test p-value between two models' forget truth ratios."""

from __future__ import annotations

import torch
from scipy.stats import ks_2samp
from torch import Tensor

from lit_unlearn.evaluation.truth_ratio import TruthRatio


def forget_quality(truth_ratios: Tensor, reference_truth_ratios: Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov p-value.

    Args:
        truth_ratios: ``[N]`` per-example forget truth ratios of the evaluated model.
        reference_truth_ratios: ``[M]`` the same for the gold retain model.

    Returns:
        The p-value: 1.0 for identical distributions, near 0 when the model still
        separates the forget answers from the wrong ones unlike the retain model.
    """
    a = torch.as_tensor(truth_ratios, dtype=torch.float64).cpu().numpy()
    b = torch.as_tensor(reference_truth_ratios, dtype=torch.float64).cpu().numpy()
    return float(ks_2samp(a, b).pvalue)


class ForgetQuality(TruthRatio):
    """KS p-value of the gathered forget truth ratios against a reference set.

    Args:
        reference: ``[M]`` the gold retain model's per-example forget truth ratios.

    ``update`` as :class:`TruthRatio`.
    """

    def __init__(self, reference: Tensor, **kwargs) -> None:
        super().__init__(forget=True, **kwargs)
        self.reference = torch.as_tensor(reference, dtype=torch.float64)

    def compute(self) -> Tensor:
        return torch.tensor(forget_quality(self.values(), self.reference))
