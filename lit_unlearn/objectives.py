"""Loss functions of the unlearning methods, as pure functions on tensors.

Conventions: ``logits`` is ``[B, T, V]`` and ``labels`` is ``[B, T]`` with ``-100`` on
tokens that are not scored (prompt and padding); position ``t`` of ``logits`` predicts
``labels[:, t + 1]``. Every loss returns one value per example (shape ``[B]``) and is
written so that *minimising* it performs the method's update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def token_logprobs(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probability of each label token under ``logits``.

    Returns:
        ``(logp, mask)``, both ``[B, T-1]``: ``logp`` is 0 where ``mask`` is False.
    """
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    logits = logits[:, :-1].float()
    nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    return -nll.view_as(target), mask


def sequence_logprob(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(sum of answer-token log-probs [B], number of answer tokens [B])``."""
    logp, mask = token_logprobs(logits, labels)
    return logp.sum(-1), mask.sum(-1)


def nll(logits: Tensor, labels: Tensor, normalize: bool = True) -> Tensor:
    """Per-example negative log-likelihood ``[B]``, divided by the answer length if ``normalize``."""
    logp, n = sequence_logprob(logits, labels)
    return -logp / n.clamp(min=1) if normalize else -logp


def gradient_ascent(logits: Tensor, labels: Tensor) -> Tensor:
    """``-NLL/|y|`` per example: minimising it raises the NLL of the forget answers."""
    return -nll(logits, labels)


def npo(logp: Tensor, ref_logp: Tensor, beta: float) -> Tensor:
    """Negative preference optimisation, ``-(2/β) log σ(-β (logp_θ - logp_ref))`` per example.

    As ``β -> 0`` its gradient tends to that of ``logp_θ`` (gradient ascent on the summed NLL).
    """
    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp))


def simnpo(nll_per_token: Tensor, beta: float, delta: float = 0.0) -> Tensor:
    """SimNPO, ``-(2/β) log σ(β (NLL/|y| - δ))`` per example: reference-free, length-normalised."""
    return (2.0 / beta) * F.softplus(-beta * (nll_per_token - delta))


def kl_to_reference(logits: Tensor, ref_logits: Tensor, labels: Tensor) -> Tensor:
    """``KL(p_ref ‖ p_θ)`` averaged over the scored tokens of each example, ``[B]``."""
    mask = (labels[:, 1:] != IGNORE_INDEX).float()
    logq = F.log_softmax(logits[:, :-1].float(), dim=-1)
    logp_ref = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    kl = (logp_ref.exp() * (logp_ref - logq)).sum(-1)
    return (kl * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def weighted_mean(values: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean of ``values [B]``, each weighted by ``weights [B]`` if given (weights have mean 1 over the data)."""
    if weights is None:
        return values.mean()
    return (values * weights.to(values.dtype)).mean()


def logit_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Logit-margin flattening ``(max_v z_v - mean_v z_v)²`` averaged over the scored tokens, ``[B]``.

    Zero exactly at uniform logits, needs no softmax, and, unlike entropy (whose gradient
    carries a 1/V factor from the softmax), keeps an O(margin) gradient near uniform.
    """
    mask = (labels[:, 1:] != IGNORE_INDEX).float()
    z = logits[:, :-1].float()
    margin = z.max(-1).values - z.mean(-1)
    return (margin.square() * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def dpo(logp_win: Tensor, ref_win: Tensor, logp_lose: Tensor, ref_lose: Tensor, beta: float) -> Tensor:
    """DPO per example: ``-(2/β) log σ(β ((logp_θ - logp_ref)(win) - (logp_θ - logp_ref)(lose)))``.

    With identical win and lose answers it is ``(2/β) log 2``.
    """
    margin = (logp_win - ref_win) - (logp_lose - ref_lose)
    return (2.0 / beta) * F.softplus(-beta * margin)


def undial(logits: Tensor, ref_logits: Tensor, labels: Tensor, beta: float) -> Tensor:
    """UNDIAL per example: cross-entropy of θ against ``softmax(z_ref - β·onehot(y))`` on each
    answer token (the reference distribution with the true token's logit lowered by β),
    averaged over the answer tokens, ``[B]``."""
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    z_ref = ref_logits[:, :-1].float()
    penalty = torch.zeros_like(z_ref).scatter_(-1, target.clamp(min=0).unsqueeze(-1), beta)
    teacher = F.softmax(z_ref - penalty, dim=-1)
    ce = -(teacher * F.log_softmax(logits[:, :-1].float(), dim=-1)).sum(-1)
    return (ce * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def activation_distance(hidden: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
    """RMU's distance per example: ``‖w ⊙ (h - target)‖²`` averaged over the hidden dimension
    and the masked tokens (the reference code's ``mse_loss``), ``[B]``.

    Args:
        hidden: ``[B, T, D]`` activations.
        target: ``[D]``, ``[B, T, D]`` or broadcastable.
        mask: ``[B, T]`` tokens that count.
        weight: optional ``[D]`` per-feature weight (SRMU's importance map).
    """
    diff = hidden.float() - target.float()
    if weight is not None:
        diff = diff * weight
    per_token = diff.square().mean(-1)
    m = mask.float()
    return (per_token * m).sum(-1) / m.sum(-1).clamp(min=1)


def token_hinge(logits: Tensor, labels: Tensor, margin: float = 1.0) -> Tensor:
    """``max(0, margin + log p(y_t) - max_{v≠y_t} log p(v))`` averaged over answer tokens, ``[B]``:
    zero once every answer token is at least ``margin`` nats below the best other token."""
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    true = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    others = logp.scatter(-1, target.clamp(min=0).unsqueeze(-1), float("-inf")).max(-1).values
    loss = (margin + true - others).clamp(min=0)
    return (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)
