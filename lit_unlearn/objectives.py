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


REDUCTIONS = ("token", "example")


def reduce_tokens(per_token: Tensor, mask: Tensor, reduction: str = "example") -> Tensor:
    """Per-example values ``[B]`` from per-token values ``per_token [B, T]`` on the tokens of ``mask [B, T]``.

    ``"example"``: each example's mean over its tokens (lit-unlearn's convention: every example
    weighs the same). ``"token"``: each example's sum times ``B / (tokens in the batch)``, so that
    the mean over the batch is the mean over all of the batch's tokens, the reduction of Hugging
    Face's ``outputs.loss`` and of open-unlearning's token losses (longer answers weigh more).
    An example (or batch) without tokens gives 0.
    """
    values = torch.where(mask, per_token, torch.zeros_like(per_token)).sum(-1)
    if reduction == "example":
        return values / mask.sum(-1).clamp(min=1)
    if reduction == "token":
        return values * mask.shape[0] / mask.sum().clamp(min=1)
    raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")


def answer_nll(logits: Tensor, labels: Tensor, reduction: str = "example") -> Tensor:
    """NLL of the answer tokens reduced per example by :func:`reduce_tokens`, ``[B]``: ``"example"``
    is :func:`nll` (NLL/|y|); ``"token"`` averages to Hugging Face's ``outputs.loss`` over the batch."""
    logp, mask = token_logprobs(logits, labels)
    return reduce_tokens(-logp, mask, reduction)


def wga(logits: Tensor, labels: Tensor, beta: float = 1.0, reduction: str = "token") -> Tensor:
    """Weighted gradient ascent, ``[B]``: on each answer token ``w_t · log p(y_t)`` with the weight
    ``w_t = p(y_t)^β`` held constant (no gradient flows through it), reduced by :func:`reduce_tokens`.

    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` -> ``[B]``. Minimising it lowers ``log p(y_t)``
    in proportion to ``p(y_t)^β``: tokens that are still likely are pushed down, tokens already
    forgotten (``p -> 0``) stop contributing, so the ascent does not run away as plain GA does.
    ``β = 0`` is token-level gradient ascent. open-unlearning's ``compute_wga_loss`` is the batch
    mean of this with ``reduction="token"``.
    """
    logp, mask = token_logprobs(logits, labels)
    weight = logp.detach().exp().pow(beta)
    return reduce_tokens(weight * logp, mask, reduction)


def satimp(logits: Tensor, labels: Tensor, beta1: float = 5.0, beta2: float = 1.0, reduction: str = "token") -> Tensor:
    """SatImp (saturation x importance weighted ascent), ``[B]``: on each answer token
    ``w_t · log p(y_t)`` with ``w_t = p(y_t)^β1 · (1 - p(y_t))^β2`` held constant, reduced by
    :func:`reduce_tokens`.

    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` -> ``[B]``. The ``p^β1`` factor (saturation)
    stops the ascent on tokens already forgotten, as in WGA; the ``(1 - p)^β2`` factor
    (importance) also damps tokens the model is certain of (``p -> 1``: often template words any
    model predicts), so the update concentrates on tokens of middling probability, the
    informative ones. open-unlearning's ``compute_satimp_loss`` is the batch mean of this with
    ``reduction="token"``.
    """
    logp, mask = token_logprobs(logits, labels)
    p = logp.detach().exp()
    weight = p.pow(beta1) * (1 - p).pow(beta2)
    return reduce_tokens(weight * logp, mask, reduction)


def skip_first_answer_tokens(labels: Tensor, n: int) -> Tensor:
    """``labels [B, T]`` with each example's first ``n`` scored tokens set to ``-100``."""
    scored = labels != IGNORE_INDEX
    return labels.masked_fill(scored & (scored.cumsum(-1) <= n), IGNORE_INDEX)


def ceu(logits: Tensor, labels: Tensor, ignore_first_n_answer_tokens: int = 1, reduction: str = "token") -> Tensor:
    """CE-U (cross-entropy unlearning), ``[B]``: on each answer token the cross-entropy
    ``-Σ_v q_v log p_θ(v)`` of the model against ``q = softmax(z with z_y = -inf)``, the model's
    own next-token distribution (detached) with the answer token removed and the rest
    renormalised; each example's first ``ignore_first_n_answer_tokens`` answer tokens are not
    scored; reduced by :func:`reduce_tokens`.

    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` -> ``[B]``. The gradient on the logits is
    ``p - q``: ``p(y)`` on the answer token and ``-p(v) p(y) / (1 - p(y))`` on every other one, so
    it lowers the answer token and moves its mass onto the alternatives in proportion to their
    current probabilities, and vanishes as ``p(y) -> 0``. open-unlearning's ``compute_batch_ceu``
    is the batch mean of this with ``reduction="token"``.
    """
    labels = skip_first_answer_tokens(labels, ignore_first_n_answer_tokens)
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    z = logits[:, :-1].float()
    removed = z.detach().scatter(-1, target.clamp(min=0).unsqueeze(-1), float("-inf"))
    q = F.softmax(removed, dim=-1)
    ce = -(q * F.log_softmax(z, dim=-1)).sum(-1)
    return reduce_tokens(ce, mask, reduction)
