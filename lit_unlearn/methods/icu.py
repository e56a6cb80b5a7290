"""``ICU``: in-context unlearning, RWKU's baseline without training."""

from __future__ import annotations

from typing import Any

from lit_unlearn.evaluation.rwku_probes import ICU_INSTRUCTION
from lit_unlearn.methods.base import UnlearningModule


class ICU(UnlearningModule):
    """In-context unlearning: no weight changes; an instruction to behave as if the target were
    unknown goes before every prompt of the evaluation suite (RWKU's ``use_prompt``).

    Fit changes no weight (no optimizer; configure one batch: ``limit_train_batches: 1``, ``max_epochs: 1``).
    The suite (``RWKUSuite``) reads the instruction from ``prompt_instruction``, which is set
    once fit starts (after ``SuiteEvaluation`` has measured the start model without it) and
    in ``test``. Teacher-forced validation metrics are computed without it.

    Args:
        instruction: the instruction, with ``{subject}`` for the target's name (RWKU's wording).
        **kwargs: see :class:`UnlearningModule`.
    """

    forget_doc = "none: an instruction in every prompt (RWKU's in-context unlearning), no training"
    retain_doc = "none"
    uses_sample_weights = False
    takes_optimizer_steps = False

    def __init__(self, *args: Any, instruction: str = ICU_INSTRUCTION, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(instruction, str) or "{subject}" not in instruction:
            raise ValueError(f"ICU: `instruction` must be a string with '{{subject}}' (the target's name), "
                             f"got {instruction!r}")
        self.instruction = instruction

    def on_train_start(self) -> None:
        super().on_train_start()
        self.prompt_instruction = self.instruction  # callbacks' on_train_start (the start evaluation) ran first

    def on_test_start(self) -> None:
        self.prompt_instruction = self.instruction

    def configure_optimizers(self):
        return None  # nothing trains

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None
