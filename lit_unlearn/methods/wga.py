"""``WGA``: weighted gradient ascent, each forget token's ascent weighted by its own probability."""

from __future__ import annotations

from typing import Any

from lit_unlearn import checks
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.objectives import REDUCTIONS, wga


class WGA(UnlearningModule):
    """Weighted gradient ascent: forget loss ``w_t · log p(y_t)`` per answer token with
    ``w_t = p(y_t)^β`` detached (:func:`~lit_unlearn.objectives.wga`), retain NLL (or KL).

    Ported from open-unlearning (``src/trainer/unlearn/wga.py``, ``compute_wga_loss`` in
    ``src/trainer/utils.py``; defaults from ``configs/trainer/WGA.yaml``): β = 1, γ = 1, α = 1,
    NLL retain, lr 1e-5, 5 epochs. The loss is theirs: the forget term is the mean over every
    answer token of the batch and the NLL retain term is Hugging Face's token mean
    (``reduction="token"``).

    Where lit-unlearn differs:

    - Log-probabilities are computed in float32 (theirs in the model's dtype, bf16 in their runs),
      so the weights ``p^β`` do not carry bf16's rounding (about 0.4 %).
    - ``reduction="example"`` is offered: each example's token mean, so that every example weighs
      the same (lit-unlearn's convention, and what ``sample_weights`` assume).
    - ``retain_loss="kl"`` is lit-unlearn's ``KL(ref ‖ θ)`` averaged over the retain answer tokens;
      open-unlearning's ``compute_kl_divergence`` averages over every position of the padded
      batch (prompt and padding included), which makes it depend on the padding.

    Args:
        beta: β (1), the exponent of the token weight; 0 is token-level gradient ascent.
        retain_loss: ``"nll"`` (default) or ``"kl"``.
        reduction: ``"token"`` (default, theirs) or ``"example"``; applies to the forget and the
            NLL retain term.
        **kwargs: see :class:`UnlearningModule` (γ = α = 1, lr 1e-5).
    """

    forget_doc = "p(y_t)^β · log p(y_t) per answer token, weight detached (weighted gradient ascent)"
    retain_doc = "NLL or KL"

    requires_retain = True

    def __init__(self, *args: Any, beta: float = 1.0, retain_loss: str = "nll", reduction: str = "token",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beta = checks.non_negative(type(self).__name__, "beta", beta)
        self._check_retain_loss(retain_loss)
        self.reduction = checks.one_of(type(self).__name__, "reduction", reduction, REDUCTIONS)

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        return Objectives(forget=wga(self(forget), forget["labels"], self.beta, self.reduction),
                          retain=self.retain_objective(batch["retain"]))
