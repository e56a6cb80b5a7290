"""``EvaluateOnly``: a model to evaluate, with no method attached (``lit-unlearn test --model DIR``)."""

from __future__ import annotations

from typing import Any

from lit_unlearn.methods.base import UnlearningModule


class EvaluateOnly(UnlearningModule):
    """Loads a model for ``lit-unlearn test`` / ``validate`` and trains nothing.

    ``lit-unlearn test --model DIR --config <data config> --suite TOFUSuite --gold GOLD_DIR`` builds
    it: ``--model`` given a model directory or hub id instead of a method class evaluates that
    model, ``--suite`` is ``--model.init_args.suite`` and ``--gold`` ``--model.init_args.compare_with``.
    Fitting it is refused before any work.
    """

    forget_doc = "none: evaluates a model (`lit-unlearn test --model DIR`), trains nothing"
    retain_doc = "none"
    uses_sample_weights = False
    takes_optimizer_steps = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("evaluate_at_start", False)
        super().__init__(*args, **kwargs)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            raise ValueError("EvaluateOnly evaluates a model and trains nothing: run `lit-unlearn test` (or "
                             "`validate`), or name a method to fit (`lit-unlearn methods` lists them)")
        super().setup(stage)
