"""``IdkNLL`` and ``IdkDPO``: teach the model to answer forget questions with a refusal."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from lit_unlearn import checks
from lit_unlearn.datamodules.encoding import collate
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.objectives import dpo, nll, sequence_logprob


def load_refusals(path: str | None = None) -> list[str]:
    """Refusal answers, one per line: the shipped list (22, written for lit-unlearn) or ``path``."""
    if path is None:
        text = resources.files("lit_unlearn").joinpath("resources/idk_answers.txt").read_text(encoding="utf-8")
        origin = "the shipped refusal list"
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(f"refusals file '{path}' does not exist; expected one refusal per line")
        text, origin = Path(path).read_text(encoding="utf-8"), f"'{path}'"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{origin} holds no refusal answers (one per non-empty line expected)")
    return lines


class _RefusalMixin:
    """Pairs every forget example with a fixed refusal (chosen by row id and seed), or with its
    ``preferred_field``, encoded once."""

    preferred_field: str | None = None

    def _setup_refusals(self, refusals: str | None, seed: int) -> None:
        self.refusals, self.refusal_seed = load_refusals(refusals), seed
        self.idk_set = None

    def refusal_for(self, row: int) -> str:
        return self.refusals[(row * 7919 + self.refusal_seed) % len(self.refusals)]

    def _encode_refusals(self) -> None:
        dm = self._datamodule()
        records = dm.forget_records
        field = self.preferred_field
        if field is None:
            answers = [self.refusal_for(i) for i in range(len(records))]
        else:
            missing = [i for i, r in enumerate(records.rows) if not isinstance(r.get(field), str) or not r[field]]
            if missing:
                raise ValueError(f"{type(self).__name__}: `preferred_field` '{field}' is missing or empty in "
                                 f"{records.where(missing[0])} ({len(missing)} rows)")
            answers = [r[field] for r in records.rows]
        self.idk_set = dm.encode_answers(records, answers, "forget_idk")

    def refusal_batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """``TokenBatch`` of the forget questions ``index`` answered with their refusals."""
        batch = collate([self.idk_set[int(i)] for i in index], self._datamodule().pad_id)
        return {k: v.to(self.device) for k, v in batch.items()}


class IdkNLL(_RefusalMixin, UnlearningModule):
    """Forget loss: NLL/|y_idk| of a refusal answer to each forget question; retain NLL.

    Args:
        refusals: file with one refusal per line (default: the shipped list of 22).
        refusal_seed: shifts which refusal each question gets.
        **kwargs: see :class:`UnlearningModule` (γ = α = 1, lr 1e-5).
    """

    forget_doc = "NLL of a refusal answer (I-don't-know style; 22 shipped or a file)"
    retain_doc = "NLL"

    requires_retain = True

    def __init__(self, *args: Any, refusals: str | None = None, refusal_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setup_refusals(refusals, refusal_seed)

    def on_train_start(self) -> None:
        if self.idk_set is None:
            self._encode_refusals()
        super().on_train_start()

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        idk = self.refusal_batch(batch["forget"]["index"])
        return Objectives(forget=nll(self(idk), idk["labels"]), retain=self.retain_term(batch["retain"]))


class IdkDPO(_RefusalMixin, UnlearningModule):
    """DPO with the refusal as the preferred and the forget answer as the rejected answer:
    ``-(2/β) log σ(β ((logp_θ - logp_ref)(y_idk) - (logp_θ - logp_ref)(y)))``; retain NLL.
    With ``preferred_field`` the preferred answer is that field of each forget record instead
    (RWKU's DPO: a counterfactual answer, ``preferred_field: counterfactual``).

    Reference log-probs of both answers are computed once per example at the start of fit
    and cached (and checkpointed), as for NPO.

    Args:
        beta: β (0.1).
        refusals: file with one refusal per line (default: the shipped list).
        refusal_seed: shifts which refusal each question gets.
        preferred_field: a forget-record field holding the preferred answer (None: a refusal).
        **kwargs: see :class:`UnlearningModule`.
    """

    forget_doc = "DPO: a refusal (or a record field: RWKU's counterfactual) preferred over the forget answer"
    retain_doc = "NLL"

    uses_reference_logps = True
    requires_retain = True
    checkpoint_state = ("ref_logps_idk",)

    def __init__(self, *args: Any, beta: float = 0.1, refusals: str | None = None, refusal_seed: int = 0,
                 preferred_field: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beta = checks.positive(type(self).__name__, "beta", beta)
        if preferred_field is not None and (not isinstance(preferred_field, str) or not preferred_field):
            raise ValueError(f"IdkDPO: `preferred_field` must be a record field name or null, got {preferred_field!r}")
        self.preferred_field = preferred_field
        self._setup_refusals(refusals, refusal_seed)
        self.ref_logps_idk: torch.Tensor | None = None

    def on_train_start(self) -> None:
        if self.idk_set is None:
            self._encode_refusals()
        if self.ref_logps_idk is None:
            self.ref_logps_idk = self.compute_logps(self.idk_set)
        self.ref_logps_idk = self.ref_logps_idk.to(self.device)
        super().on_train_start()

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        index = forget["index"]
        idk = self.refusal_batch(index)
        logp_lose, _ = sequence_logprob(self(forget), forget["labels"])
        logp_win, _ = sequence_logprob(self(idk), idk["labels"])
        loss = dpo(logp_win, self.ref_logps_idk[index], logp_lose, self.ref_logps[index], self.beta)
        return Objectives(forget=loss, retain=self.retain_term(batch["retain"]),
                          logs={"margin": ((logp_win - self.ref_logps_idk[index]) -
                                           (logp_lose - self.ref_logps[index])).mean().detach()})

