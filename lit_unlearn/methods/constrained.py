"""``ConstrainedEntropic``: flatten the forget logits, keep the retain NLL under a bound."""

from __future__ import annotations

from typing import Any

from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.objectives import logit_margin


class ConstrainedEntropic(UnlearningModule):
    """Constrained entropic unlearning: forget loss ``(max_v z_v - mean_v z_v)²`` per answer
    token (averaged), retain loss NLL/|y| (or KL).

    The paper solves ``min forget s.t. retain <= ε`` by primal-dual updates; here the
    multiplier λ is ``retain_weight``, updated by the :class:`~lit_unlearn.callbacks.DualVariable`
    callback (``configs/methods/constrained_entropic.yaml`` pairs them). Without the
    callback it is a fixed-weight penalty method.

    Args:
        retain_loss: ``"nll"`` (default) or ``"kl"``.
        retain_weight: λ0; the margin loss is large, so the paper starts λ at 50..100.
        **kwargs: see :class:`UnlearningModule`.
    """

    forget_doc = "(max_v z_v - mean_v z_v)² per answer token (logit-margin flattening)"
    retain_doc = "NLL or KL, weight λ from `DualVariable`"

    requires_retain = True

    def __init__(self, *args: Any, retain_loss: str = "nll", retain_weight: float = 50.0, **kwargs: Any) -> None:
        super().__init__(*args, retain_weight=retain_weight, **kwargs)
        self._check_retain_loss(retain_loss)

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        margin = logit_margin(self(forget), forget["labels"])
        return Objectives(forget=margin, retain=self.retain_objective(batch["retain"]),
                          logs={"logit_margin": margin.mean().detach()})
