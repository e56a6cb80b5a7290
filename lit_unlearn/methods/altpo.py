"""``AltPO``: DPO preferring alternate (plausible but false) answers over the forget answers."""

from __future__ import annotations

from typing import Any

import torch

from lit_unlearn import checks
from lit_unlearn.datamodules.sources import Records
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.methods.idk import _RefusalMixin
from lit_unlearn.objectives import REDUCTIONS, dpo, sequence_logprob


class AltPO(_RefusalMixin, UnlearningModule):
    """Alternate preference optimisation: DPO with an alternate answer to each forget question
    as the preferred and the forget answer as the rejected answer,
    ``-(2/β) log σ(β ((logp_θ - logp_ref)(y_alt) - (logp_θ - logp_ref)(y)))`` with summed
    answer log-probs (:func:`~lit_unlearn.objectives.dpo`); retain NLL (or KL). Negative feedback
    on the forget answer plus positive, in-domain feedback on a plausible replacement, so the
    model answers with something coherent instead of degenerating.

    **The alternate answers** are a field of each forget record, ``alternate_field``
    (default ``perturbed_answer``: one string or a list). On the embedded benchmark these are
    its wrong answers: the same question answered with another plausible value of the same
    kind (another city, year, book), in the paraphrase's wording; 3 per question. On TOFU they
    are the ``perturbed_answer`` lists of the ``forget*_perturbed`` files. open-unlearning
    instead generates them with the subject model (``community/methods/AltPO/generate.py``: the
    model is prompted to rewrite the answer with changed, plausible facts; 5 samples per
    question at temperature 1); the 1M-parameter built-in models cannot write such text and the
    benchmark already has plausible false answers, so we use those. Alternates generated
    elsewhere go in a record field named by ``alternate_field``. The answers are encoded once
    with the datamodule's settings, as :class:`~lit_unlearn.methods.idk.IdkDPO` encodes its
    refusals, and their reference log-probs are computed once at the start of fit and cached
    (and checkpointed), as are those of the forget answers.

    Ported from open-unlearning, where AltPO is the ``DPO`` trainer (``src/trainer/unlearn/dpo.py``,
    ``compute_dpo_loss`` in ``src/trainer/utils.py``) on a forget set of (question, alternate,
    original) rows (``community/methods/AltPO/run.sh``); defaults from ``configs/trainer/DPO.yaml``:
    β = 0.1, γ = 1, α = 1, NLL retain; lr 1e-5 (the AltPO README searches β in {0.05, 0.1, 0.5},
    lr in {1e-5, 2e-5, 5e-5}, α in {1, 2, 5}); 2 epochs. The NLL retain term is Hugging Face's
    token mean over the batch, as theirs (``reduction="token"``).

    Where lit-unlearn differs:

    - Their forget data has one row per (question, alternate), so an epoch visits every question
      once per alternate. Here an epoch visits every forget question once, paired with one of its
      alternates, which rotate with the epoch (epoch ``e`` uses alternate ``e mod k``): over ``k``
      epochs the same pairs, each with the same loss.
    - Reference log-probs are cached instead of a reference forward pass every step (the same
      numbers: the reference is frozen).
    - ``retain_loss="kl"`` averages over the retain answer tokens (theirs over every position of
      the padded batch); ``reduction="example"`` is offered for the NLL retain term.

    Args:
        beta: β (0.1).
        alternate_field: the forget-record field holding the alternate answer(s) (``perturbed_answer``).
        max_alternates: use at most this many alternates per question (None: all).
        retain_loss: ``"nll"`` (default) or ``"kl"``.
        reduction: ``"token"`` (default, theirs) or ``"example"``, for the NLL retain term.
        **kwargs: see :class:`UnlearningModule` (γ = α = 1, lr 1e-5).
    """

    forget_doc = ("DPO: a plausible false alternate answer (a record field; default the perturbed answers) preferred "
                  "over the forget answer")
    retain_doc = "NLL or KL"

    uses_reference_logps = True
    requires_retain = True
    checkpoint_state = ("ref_logps_alt",)

    def __init__(self, *args: Any, beta: float = 0.1, alternate_field: str = "perturbed_answer",
                 max_alternates: int | None = None, retain_loss: str = "nll", reduction: str = "token",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        name = type(self).__name__
        self.beta = checks.positive(name, "beta", beta)
        if not isinstance(alternate_field, str) or not alternate_field:
            raise ValueError(f"{name}: `alternate_field` must be a record field name, got {alternate_field!r}")
        self.alternate_field = alternate_field
        self.max_alternates = checks.positive_int(name, "max_alternates", max_alternates, optional=True)
        self._check_retain_loss(retain_loss)
        self.reduction = checks.one_of(name, "reduction", reduction, REDUCTIONS)
        self.idk_set = None  # the encoded alternates: every alternate of every forget question, question by question
        self.alt_start: torch.Tensor | None = None  # [N_forget] first row of each question's alternates in idk_set
        self.alt_count: torch.Tensor | None = None  # [N_forget] number of alternates of each question
        self.ref_logps_alt: torch.Tensor | None = None  # [len(idk_set)] cached reference log-probs

    def alternates_of(self, row: dict[str, Any]) -> list[str]:
        """The alternate answers of one forget record (``alternate_field``: a string or a list)."""
        value = row.get(self.alternate_field)
        values = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []
        return [v for v in values if isinstance(v, str) and v.strip()][: self.max_alternates]

    def _encode_refusals(self) -> None:
        """Encode every alternate of every forget question (IdkDPO's hook, here with several answers per question)."""
        dm = self._datamodule()
        records = dm.forget_records
        alternates = [self.alternates_of(row) for row in records.rows]
        missing = [i for i, alts in enumerate(alternates) if not alts]
        if missing:
            raise ValueError(f"{type(self).__name__}: `alternate_field` '{self.alternate_field}' is missing or empty "
                             f"in {records.where(missing[0])} ({len(missing)} rows); AltPO needs an alternate answer "
                             "(a string or a list of strings) for every forget question")
        rows = [row for row, alts in zip(records.rows, alternates) for _ in alts]
        answers = [a for alts in alternates for a in alts]
        repeated = Records(rows, records.origin, records.path, records.meta)
        self.idk_set = dm.encode_answers(repeated, answers, "forget_alternate")
        self.alt_count = torch.tensor([len(alts) for alts in alternates])
        self.alt_start = self.alt_count.cumsum(0) - self.alt_count

    def alternate_index(self, index: torch.Tensor) -> torch.Tensor:
        """Rows of the encoded alternates paired with forget rows ``index`` in this epoch."""
        start, count = self.alt_start.to(index.device)[index], self.alt_count.to(index.device)[index]
        return start + self.current_epoch % count

    def on_train_start(self) -> None:
        if self.idk_set is None:
            self._encode_refusals()
        if self.ref_logps_alt is None:
            self.ref_logps_alt = self.compute_logps(self.idk_set)
        self.ref_logps_alt = self.ref_logps_alt.to(self.device)
        super().on_train_start()

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        index = forget["index"]
        alt_index = self.alternate_index(index)
        alt = self.refusal_batch(alt_index)
        logp_lose, _ = sequence_logprob(self(forget), forget["labels"])
        logp_win, _ = sequence_logprob(self(alt), alt["labels"])
        win_ratio, lose_ratio = logp_win - self.ref_logps_alt[alt_index], logp_lose - self.ref_logps[index]
        return Objectives(forget=dpo(logp_win, self.ref_logps_alt[alt_index], logp_lose, self.ref_logps[index],
                                     self.beta),
                          retain=self.retain_objective(batch["retain"]),
                          logs={"margin": (win_ratio - lose_ratio).mean().detach(),
                                "alternate_log_ratio": win_ratio.mean().detach()})
