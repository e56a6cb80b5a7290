"""Membership inference: LOSS, zlib, Min-K% and Min-K%++ scores, AUC of members vs non-members.

Scores are oriented so that *higher means more member-like*; the AUC is the probability
that a member (forget example) scores above a non-member (holdout example). A model that
was trained on the forget set gives an AUC near 1; one that never saw it, near 0.5.
"""

from __future__ import annotations

import zlib

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

from lit_unlearn.objectives import token_logprobs

ATTACKS = ("loss", "zlib", "min_k", "min_k_pp")


def zlib_length(text: str) -> int:
    """Bytes of the zlib-compressed UTF-8 text (the zlib attack's entropy estimate)."""
    return len(zlib.compress(text.encode("utf-8")))


def _lowest_k_mean(values: Tensor, mask: Tensor, k: float) -> Tensor:
    """Mean of the lowest ``ceil(k * n)`` masked values per row; ``[B, T] -> [B]``."""
    n = mask.sum(-1)
    count = torch.ceil(k * n).clamp(min=1)
    filled = values.masked_fill(~mask, float("inf"))
    ordered = filled.sort(-1).values
    take = torch.arange(values.shape[-1], device=values.device)[None, :] < count[:, None]
    return torch.where(take, ordered, torch.zeros_like(ordered)).sum(-1) / count


def mia_scores(logits: Tensor, labels: Tensor, zlib_lengths: Tensor | None = None, k: float = 0.4) -> dict[str, Tensor]:
    """Per-example attack scores ``[B]`` from one forward pass.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]``, ``-100`` on unscored tokens.
        zlib_lengths: ``[B]`` compressed byte length of each scored text (for ``zlib``).
        k: fraction of lowest-scoring tokens for Min-K% and Min-K%++ (0.4).

    Returns:
        ``loss``: ``-NLL/|y|``; ``zlib``: ``-(NLL/|y|) / zlib_length``; ``min_k``: mean of the
        lowest k token log-probs; ``min_k_pp``: the same on log-probs standardised by the
        mean and standard deviation of ``log p`` under the model's next-token distribution.
    """
    logp, mask = token_logprobs(logits, labels)
    n = mask.sum(-1).clamp(min=1)
    nll = -(logp * mask).sum(-1) / n
    out = {"loss": -nll, "min_k": _lowest_k_mean(logp, mask, k)}
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    probs = log_probs.exp()
    mu = (probs * log_probs).sum(-1)
    sigma = ((probs * log_probs.square()).sum(-1) - mu.square()).clamp(min=1e-12).sqrt()
    out["min_k_pp"] = _lowest_k_mean((logp - mu) / sigma, mask, k)
    if zlib_lengths is not None:
        out["zlib"] = -nll / zlib_lengths.to(nll)
    return out


def auc(member_scores: Tensor, nonmember_scores: Tensor) -> float:
    """AUROC of members (label 1) against non-members (label 0), ties counted half."""
    scores = torch.cat([member_scores, nonmember_scores]).double()
    target = torch.cat([torch.ones_like(member_scores), torch.zeros_like(nonmember_scores)]).long()
    return float(binary_auroc(scores, target))


def privacy_leak(auc_model: float, auc_reference: float) -> float:
    """MUSE's PrivLeak in percent: ``(AUC'_model - AUC'_ref) / AUC'_ref * 100`` with ``AUC' = 1 - AUC``.

    0 means the model is as private as the retain (reference) model; large negative values
    mean the forget set is still recognisable as training data.
    """
    ref = 1 - auc_reference
    return (1 - auc_model - ref) / max(ref, 1e-12) * 100


class MembershipInference(Metric):
    """Gathers attack scores of members and non-members across ranks; ``compute()`` gives AUCs.

    ``update(scores: dict[str, Tensor [B]], member: bool)`` with scores from :func:`mia_scores`.
    """

    full_state_update = False

    def __init__(self, attacks: tuple[str, ...] = ATTACKS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.attacks = tuple(attacks)
        for a in self.attacks:
            self.add_state(f"{a}_member", default=[], dist_reduce_fx="cat")
            self.add_state(f"{a}_nonmember", default=[], dist_reduce_fx="cat")

    def update(self, scores: dict[str, Tensor], member: bool) -> None:
        side = "member" if member else "nonmember"
        for a in self.attacks:
            if a in scores:
                getattr(self, f"{a}_{side}").append(scores[a].double())

    def compute(self) -> dict[str, Tensor]:
        out = {}
        for a in self.attacks:
            m, nm = getattr(self, f"{a}_member"), getattr(self, f"{a}_nonmember")
            if (isinstance(m, list) and not m) or (isinstance(nm, list) and not nm):
                continue
            out[a] = torch.tensor(auc(dim_zero_cat(m), dim_zero_cat(nm)))
        return out
