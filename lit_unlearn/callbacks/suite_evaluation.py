"""``SuiteEvaluation``: run an evaluation suite every n steps during fit."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_unlearn import checks
from lit_unlearn.evaluation import EvalSuite, SuiteResult, diagnostics
from lit_unlearn.tensorboard import log_metrics


class SuiteEvaluation(Callback):
    """Runs a suite (its own, or the module's ``suite``) on the validation sets during fit.

    Results are logged as ``suite/<metric>`` (``suite/forget_quality``, ``suite/forget/rougeL_recall``;
    on TensorBoard a set's metrics go to that set's run) at step = optimizer steps taken (0 = the
    starting model) and put in ``callback_metrics``, so that
    ``ModelCheckpoint(monitor="suite/forget_quality", mode="max", every_n_train_steps=n)``
    keeps the best model by forget quality (or by ``suite/score``, the harmonic mean of
    forget quality and model utility).

    Args:
        every_n_steps: evaluate after every n optimizer steps (0: only at start and end).
        suite: the suite; default the module's ``suite``.
        at_start: evaluate the starting model before the first step.
        at_end: evaluate after the last step (unless that step was just evaluated).
        stage: ``"val"`` (the datamodule's ``eval_sets``) or ``"test"``.
    """

    def __init__(self, every_n_steps: int = 50, suite: EvalSuite | None = None, at_start: bool = True,
                 at_end: bool = True, stage: str = "val") -> None:
        if not isinstance(every_n_steps, int) or every_n_steps < 0:
            raise ValueError(f"SuiteEvaluation: `every_n_steps` must be an integer >= 0, got {every_n_steps!r}")
        if stage not in ("val", "test"):
            raise ValueError(f"SuiteEvaluation: `stage` must be 'val' or 'test', got {stage!r}")
        self.every_n_steps, self.suite, self.stage = every_n_steps, suite, stage
        self.at_start, self.at_end = at_start, at_end
        self.last_step = -1
        self.history: list[dict[str, float]] = []
        self.last_result: SuiteResult | None = None  # the latest run (metrics, stats, generations)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and self.suite is None and getattr(pl_module, "suite", None) is None:
            raise checks.incompatible("SuiteEvaluation", pl_module, "no evaluation suite; pass `suite` to the callback "
                                      "or to the method (e.g. --config configs/eval/tofu_suite.yaml)")
        if stage == "fit" and not hasattr(pl_module, "run_suite"):
            raise checks.incompatible("SuiteEvaluation", pl_module, "it runs the suite through an UnlearningModule")
        dm = getattr(trainer, "datamodule", None)
        if stage == "fit" and hasattr(dm, "records_for"):  # before training, not after it
            from lit_unlearn.methods.base import check_suite_sets

            check_suite_sets(self.suite or pl_module.suite, dm.records_for(self.stage),
                             "eval_sets" if self.stage == "val" else "test_sets")

    def _run(self, trainer: Trainer, module: LightningModule, in_hook_that_logs: bool) -> None:
        suite = self.suite or getattr(module, "suite", None)
        if suite is None:
            raise ValueError("SuiteEvaluation: no suite; pass `suite` to the callback or to the module")
        step = trainer.global_step
        self.last_result = module.run_suite(self.stage, suite)
        metrics = self.last_result.metrics
        if step == 0:  # the start model: forget quality that is already high makes the metric blind
            diagnostics.emit(diagnostics.start_model_checks(metrics), getattr(suite, "_warned", None))
        logged = {f"suite/{k}": v for k, v in metrics.items()}
        if in_hook_that_logs:
            module.log_dict({k: torch.tensor(v) for k, v in logged.items()}, logger=False)
        else:
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in logged.items()})
        if trainer.is_global_zero:  # a set's metrics go to its own TensorBoard run
            log_metrics(trainer.loggers, logged, step, sets=suite.required_sets())
        self.last_step = step
        self.history.append({"step": step, **metrics})

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_start and trainer.global_step == 0 and self.last_step < 0:
            self._run(trainer, pl_module, in_hook_that_logs=False)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self.last_step:
            self._run(trainer, pl_module, in_hook_that_logs=True)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_end and trainer.global_step != self.last_step:
            self._run(trainer, pl_module, in_hook_that_logs=False)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_step = state_dict.get("last_step", -1)
        self.history = list(state_dict.get("history", []))
