"""``CEU``: cross-entropy unlearning towards the model's own distribution without the answer token."""

from __future__ import annotations

from typing import Any

from lit_unlearn import checks
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.objectives import REDUCTIONS, ceu


class CEU(UnlearningModule):
    """CE-U: on each forget answer token, cross-entropy of θ against its own next-token
    distribution (detached) with the answer token's logit set to -inf
    (:func:`~lit_unlearn.objectives.ceu`); each answer's first token is not scored; no retain
    term. Its gradient lowers the answer token and vanishes once the token is improbable, so it
    needs no reference model and does not run away as gradient ascent does.

    Ported from open-unlearning (``src/trainer/unlearn/ceu.py``: ``cross_entropy_unlearning_loss``
    and ``compute_batch_ceu``; defaults from ``configs/trainer/CEU.yaml``, which extends
    ``finetune.yaml``): ``ignore_first_n_answer_tokens = 1`` (the footnote trick of the CE-U
    paper, arXiv:2503.01224), lr 1e-5, 10 epochs, forget loss only. The loss is theirs: the mean
    over every scored answer token of the batch (``reduction="token"``).

    Where lit-unlearn differs: the target and the log-probabilities are computed in float32
    (theirs in the model's dtype); a batch whose answers are all shorter than
    ``ignore_first_n_answer_tokens + 1`` tokens gives 0 (theirs NaN, the mean of nothing);
    ``reduction="example"`` is offered (each example's token mean).

    Args:
        ignore_first_n_answer_tokens: answer tokens not scored at the start of each answer (1).
        reduction: ``"token"`` (default, theirs) or ``"example"``.
        **kwargs: see :class:`UnlearningModule` (lr 1e-5).
    """

    forget_doc = "CE towards the model's own distribution with the answer token removed (first answer token skipped)"
    retain_doc = "none"

    def __init__(self, *args: Any, ignore_first_n_answer_tokens: int = 1, reduction: str = "token",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        name = type(self).__name__
        n = ignore_first_n_answer_tokens
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"{name}: `ignore_first_n_answer_tokens` must be an integer >= 0, got {n!r}")
        self.ignore_first_n_answer_tokens = n
        self.reduction = checks.one_of(name, "reduction", reduction, REDUCTIONS)

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        return Objectives(forget=ceu(self(forget), forget["labels"], self.ignore_first_n_answer_tokens,
                                     self.reduction))
