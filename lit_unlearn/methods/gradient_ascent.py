"""``GradAscent`` and ``GradDiff``: raise the forget NLL (and keep the retain NLL low)."""

from __future__ import annotations

from typing import Any

from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.objectives import gradient_ascent


class GradAscent(UnlearningModule):
    """Gradient ascent on the forget answers: forget loss ``-NLL/|y|``, no retain term.

    Default lr 1e-5 (TOFU). Diverges if run long: watch the retain metrics.
    """

    forget_doc = "-NLL/|y|"
    retain_doc = "none"

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        return Objectives(forget=gradient_ascent(self(forget), forget["labels"]))


class GradDiff(UnlearningModule):
    """Gradient difference: forget loss ``-NLL/|y|``, retain loss ``NLL/|y|`` or ``KL(ref ‖ θ)``.

    Args:
        retain_loss: ``"nll"`` (default) or ``"kl"`` (needs a frozen reference copy).
        **kwargs: see :class:`UnlearningModule` (γ = α = 1 by default, lr 1e-5).
    """

    forget_doc = "-NLL/|y|"
    retain_doc = "NLL or KL to the start model"

    requires_retain = True

    def __init__(self, *args: Any, retain_loss: str = "nll", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._check_retain_loss(retain_loss)

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        return Objectives(forget=gradient_ascent(self(forget), forget["labels"]),
                          retain=self.retain_objective(batch["retain"]))
