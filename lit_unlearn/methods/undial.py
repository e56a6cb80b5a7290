"""``UNDIAL``: self-distillation towards the reference distribution with the answer token lowered."""

from __future__ import annotations

from typing import Any

from lit_unlearn import checks
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.objectives import undial


class UNDIAL(UnlearningModule):
    """UNDIAL: on each forget answer token, cross-entropy of θ against
    ``softmax(z_ref - β·onehot(y))``, the frozen model's logits with the true token's logit
    lowered by β; no retain term. The target stays a smooth distribution, so training is
    stable where gradient ascent diverges.

    Args:
        beta: β (10).
        **kwargs: see :class:`UnlearningModule` (published lr 1e-4; a frozen reference copy is kept).
    """

    forget_doc = "CE towards the reference distribution with the answer logit lowered by β"
    retain_doc = "none"

    default_lr = 1e-4
    uses_reference_model = True

    def __init__(self, *args: Any, beta: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beta = checks.positive(type(self).__name__, "beta", beta)

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        return Objectives(forget=undial(self(forget), self.reference_logits(forget), forget["labels"], self.beta))
