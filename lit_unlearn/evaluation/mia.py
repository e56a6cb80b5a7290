"""Membership inference: LOSS, zlib, Min-K% and Min-K%++ scores, AUC of members vs non-members.

Scores are oriented so that *higher means more member-like*; the AUC is the probability
that a member (forget example) scores above a non-member (holdout example), ties counted
half. A model that was trained on the forget set gives an AUC near 1; one that never saw it,
near 0.5. This is open-unlearning's orientation (``src/evals/metrics/mia/utils.py``:
``roc_auc_score`` of loss-like scores with forget labelled 0 and holdout 1, "auc is 1 when
the forget data is much more likely than the holdout data"); MUSE's
``forget_holdout_<attack>`` AUC (``metrics/privleak.py``: forget as non-members, holdout as
members) is ``1 - AUC``.

The attacks follow open-unlearning's ``src/evals/metrics/mia/`` (``loss.py``, ``zlib.py``,
``min_k.py``, ``min_k_plus_plus.py``), which MUSE's ``PPL``, ``PPL/zlib`` and ``Min-K%`` match
up to sign (the same AUC).
"""

from __future__ import annotations

import zlib

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

from lit_unlearn.evaluation.eos import without_final_eos
from lit_unlearn.objectives import IGNORE_INDEX, token_logprobs

ATTACKS = ("loss", "zlib", "min_k", "min_k_pp")
K_ROUNDINGS = ("floor", "ceil")
MIN_K_PP_MIN_VARIANCE = 1e-6  # open-unlearning's clamp of the variance in Min-K%++


def zlib_length(text: str) -> int:
    """Bytes of the zlib-compressed UTF-8 text (the zlib attack's entropy estimate)."""
    return len(zlib.compress(text.encode("utf-8")))


def lowest_k_count(n: Tensor, k: float, rounding: str = "floor") -> Tensor:
    """How many of ``n`` tokens Min-K% and Min-K%++ average, ``[B] -> [B]`` (at least 1).

    ``"floor"``: ``max(1, int(k * n))`` as open-unlearning (``min_k.py``,
    ``min_k_plus_plus.py``), in float64 like Python; MUSE's ``int(len * ratio)`` is the same
    except that where it is 0 MUSE averages nothing (NaN). ``"ceil"``: ``max(1, ceil(k * n))``.
    """
    if rounding not in K_ROUNDINGS:
        raise ValueError(f"`k_rounding` must be one of {K_ROUNDINGS}, got {rounding!r}")
    scaled = n.double() * k
    return (torch.floor(scaled) if rounding == "floor" else torch.ceil(scaled)).clamp(min=1)


def _lowest_k_mean(values: Tensor, mask: Tensor, k: float, rounding: str = "floor") -> Tensor:
    """Mean of the lowest ``lowest_k_count`` masked values per row; ``[B, T] -> [B]`` (0 for no values)."""
    count = lowest_k_count(mask.sum(-1), k, rounding)
    filled = values.masked_fill(~mask, float("inf"))
    ordered = filled.sort(-1).values
    position = torch.arange(values.shape[-1], device=values.device)[None, :]
    take = (position < count[:, None]) & (position < mask.sum(-1, keepdim=True))
    return (torch.where(take, ordered, torch.zeros_like(ordered)).sum(-1) / count).to(values.dtype)


def mia_scores(logits: Tensor, labels: Tensor, zlib_lengths: Tensor | None = None, k: float = 0.4,
               eos_id: int | None = None, k_rounding: str = "floor") -> dict[str, Tensor]:
    """Per-example attack scores ``[B]`` from one forward pass.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]``, ``-100`` on unscored tokens.
        zlib_lengths: ``[B]`` compressed byte length of each scored text (for ``zlib``).
        k: fraction of lowest-scoring tokens for Min-K% and Min-K%++ (0.4).
        eos_id: Min-K% and Min-K%++ leave out a final label equal to it, as open-unlearning's
            ``tokenwise_logprobs`` drops the last label; LOSS and zlib score every label, as
            its ``evaluate_probability``. None: every attack scores every label.
        k_rounding: ``"floor"`` (published) or ``"ceil"``; see :func:`lowest_k_count`.

    Returns:
        ``loss``: ``-NLL/|y|``; ``zlib``: ``-(NLL/|y|) / zlib_length``; ``min_k``: mean of the
        lowest k token log-probs; ``min_k_pp``: the same on log-probs standardised by the
        mean and standard deviation of ``log p`` under the model's next-token distribution
        (variance clamped at 1e-6, as open-unlearning). Negated, these are open-unlearning's
        scores (and MUSE's ``PPL``, ``PPL/zlib``, ``Min-K%``).
    """
    logp, mask = token_logprobs(logits, labels)
    n = mask.sum(-1).clamp(min=1)
    nll = -(logp * mask).sum(-1) / n
    k_mask = mask if eos_id is None else without_final_eos(labels, eos_id)[:, 1:] != IGNORE_INDEX
    out = {"loss": -nll, "min_k": _lowest_k_mean(logp, k_mask, k, k_rounding)}
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    probs = log_probs.exp()
    mu = (probs * log_probs).sum(-1)
    sigma = ((probs * log_probs.square()).sum(-1) - mu.square()).clamp(min=MIN_K_PP_MIN_VARIANCE).sqrt()
    out["min_k_pp"] = _lowest_k_mean((logp - mu) / sigma, k_mask, k, k_rounding)
    if zlib_lengths is not None:
        out["zlib"] = -nll / zlib_lengths.to(nll)
    return out


def auc(member_scores: Tensor, nonmember_scores: Tensor) -> float:
    """AUROC of members (label 1) against non-members (label 0), ties counted half."""
    scores = torch.cat([member_scores, nonmember_scores]).double()
    target = torch.cat([torch.ones_like(member_scores), torch.zeros_like(nonmember_scores)]).long()
    return float(binary_auroc(scores, target))


def privacy_leak(auc_model: float, auc_reference: float) -> float:
    """MUSE's PrivLeak in percent: ``(AUC'_model - AUC'_ref) / (AUC'_ref + 1e-10) * 100`` with
    ``AUC' = 1 - AUC`` (MUSE's own AUC orientation, see the module docstring).

    As open-unlearning's ``privleak`` (``src/evals/metrics/privacy.py``) and MUSE's
    ``eval.py`` (``(auc - AUC_RETRAIN) / AUC_RETRAIN * 100``, no 1e-10). 0 means the model is
    as private as the retain (reference) model; large negative values mean the forget set is
    still recognisable as training data.
    """
    ref = 1 - auc_reference
    return (1 - auc_model - ref) / (ref + 1e-10) * 100


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
