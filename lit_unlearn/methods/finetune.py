"""``FineTune``: plain NLL training, used to build subject models and for relearning."""

from __future__ import annotations

from typing import Any

from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.objectives import nll


class FineTune(UnlearningModule):
    """Minimises the answer NLL/|y| of the datamodule's ``forget`` set (the data to learn),
    plus that of the ``retain`` set when one is given. Not an unlearning method: the
    library builds the embedded benchmark's models with it, and relearning attacks use it.
    """

    default_lr = 1e-4
    result_name = "fine-tuned model"
    forget_doc = "NLL (learning, not unlearning: builds models, relearning)"
    retain_doc = "NLL (when the datamodule has a retain set)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retain_kind = "nll"

    def has_retain_term(self) -> bool:
        return getattr(self._datamodule(), "retain_set", None) is not None

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        return Objectives(forget=nll(self(forget), forget["labels"]), retain=self.retain_term(batch.get("retain")))
