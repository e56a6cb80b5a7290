"""``NPO`` and ``SimNPO``: bounded, preference-style forget losses."""

from __future__ import annotations

from typing import Any

from lit_unlearn import checks
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.objectives import nll, npo, sequence_logprob, simnpo


class NPO(UnlearningModule):
    """Negative preference optimisation: forget loss ``-(2/β) log σ(-β (logp_θ - logp_ref))``.

    ``logp_ref`` of each forget example is computed once at the start of fit from the
    starting weights and cached (and checkpointed), so no reference forward runs per step.

    Args:
        beta: β (0.1).
        retain_loss: ``"nll"`` (default) or ``"kl"``.
        cache_reference: False runs the reference model on every forget batch instead of
            caching (what most research code does; for comparison, or with data augmented
            on the fly).
        **kwargs: see :class:`UnlearningModule` (γ = α = 1, lr 1e-5).
    """

    forget_doc = "-(2/β) log σ(-β (logp - logp_ref)), logp_ref cached once"
    retain_doc = "NLL or KL"

    uses_reference_logps = True
    requires_retain = True

    def __init__(self, *args: Any, beta: float = 0.1, retain_loss: str = "nll", cache_reference: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beta = checks.positive(type(self).__name__, "beta", beta)
        self._check_retain_loss(retain_loss)
        self.cache_reference = checks.flag(type(self).__name__, "cache_reference", cache_reference)
        if not self.cache_reference:
            self.uses_reference_logps, self.uses_reference_model = False, True

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        logp, _ = sequence_logprob(self(forget), forget["labels"])
        if self.cache_reference:
            ref = self.ref_logps[forget["index"]]
        else:
            ref = sequence_logprob(self.reference_logits(forget), forget["labels"])[0].float()
        return Objectives(forget=npo(logp, ref, self.beta), retain=self.retain_objective(batch["retain"]),
                          logs={"log_ratio": (logp - ref).mean().detach()})


class SimNPO(UnlearningModule):
    """SimNPO: reference-free, length-normalised NPO, ``-(2/β) log σ(β (NLL/|y| - δ))``.

    Args:
        beta: β (4.5).
        delta: δ, the margin (0).
        **kwargs: see :class:`UnlearningModule`; defaults γ = 0.125, α = 1, lr 1e-5.
    """

    forget_doc = "-(2/β) log σ(β (NLL/|y| - δ))"
    retain_doc = "NLL"

    requires_retain = True

    def __init__(self, *args: Any, beta: float = 4.5, delta: float = 0.0, forget_weight: float = 0.125,
                 **kwargs: Any) -> None:
        super().__init__(*args, forget_weight=forget_weight, **kwargs)
        self.beta = checks.positive(type(self).__name__, "beta", beta)
        self.delta = checks.finite(type(self).__name__, "delta", delta)

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        return Objectives(forget=simnpo(nll(self(forget), forget["labels"]), self.beta, self.delta),
                          retain=self.retain_term(batch["retain"]))
