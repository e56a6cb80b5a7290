"""The evaluation hooks of :class:`~lit_unlearn.methods.UnlearningModule`: teacher-forced metrics
on the datamodule's named sets (Lightning's validation and test loops, and outside them at the
start and end of fit), the evaluation suites, and where results are logged."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from lit_unlearn.evaluation import EvalSuite, SuiteResult, TeacherForcedMetrics
from lit_unlearn.evaluation.teacher_forced import evaluate_teacher_forced
from lit_unlearn.methods.context import EvalContext
from lit_unlearn.tensorboard import close_set_writers, log_metrics, tensorboard_loggers


class EvaluationHooks(LightningModule):
    """Evaluation state and hooks (a base of ``UnlearningModule``; see its callback contract).

    ``eval_history`` holds every evaluation as ``{"step", "<set>/<metric>": ...}`` at step =
    optimizer steps taken (0: the starting model); ``summary`` the columns ``start``, ``end``,
    ``test`` (and ``gold``, which ``RunSummary`` adds); ``suite_result`` the last test's suite result.
    """

    def __init__(self) -> None:
        super().__init__()
        self.eval_history: list[dict[str, float]] = []
        self.summary: dict[str, dict[str, float]] = {}
        self.suite: EvalSuite | None = None
        self.suite_result: SuiteResult | None = None
        self.compare_with: str | None = None
        self.prompt_instruction: str | None = None  # put before every suite prompt (in-context unlearning)
        self.eval_metrics = nn.ModuleDict()
        self._last_eval_step = -1

    def eval_context(self) -> EvalContext:
        """For forward passes outside Lightning's loops (caching, evaluation): the precision
        plugin's autocast and, under FSDP, the root's parameters gathered (read-only)."""
        return EvalContext(self.trainer)

    def _datamodule(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "forget_set"):
            raise RuntimeError(f"{type(self).__name__} needs a ForgetRetainDataModule (got {type(dm).__name__})")
        return dm

    def _set_names(self, stage: str) -> list[str]:
        names = getattr(getattr(self.trainer, "datamodule", None), f"{stage}_set_names", None)
        if names is None:
            loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
            names = [f"{stage}{i}" for i in range(len(loaders) if isinstance(loaders, (list, tuple)) else 1)]
        return names

    def _eval_batch(self, batch: dict[str, Tensor], name: str) -> None:
        key = name.replace(".", "_")
        if key not in self.eval_metrics:
            self.eval_metrics[key] = TeacherForcedMetrics().to(self.device)
        self.eval_metrics[key].update(self(batch), batch["labels"], batch.get("fact_mask"), batch.get("has_fact"))

    def _compute(self, names: list[str]) -> dict[str, float]:
        results = {}
        for name in names:
            key = name.replace(".", "_")
            if key not in self.eval_metrics:
                continue
            if self.eval_metrics[key].update_count:
                results.update({f"{name}/{k}": float(v) for k, v in self.eval_metrics[key].compute().items()})
            self.eval_metrics[key].reset()
        return results

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch(batch, self._set_names("val")[dataloader_idx])

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch(batch, self._set_names("test")[dataloader_idx])

    def on_validation_epoch_end(self) -> None:
        results = self._compute(self._set_names("val"))
        if self.trainer.sanity_checking:
            return
        self._log_eval(results, self.global_step)
        self._last_eval_step = self.global_step
        if self.trainer.state.fn == "fit":
            self.summary["end"] = results

    def on_test_epoch_end(self) -> None:
        results = self._compute(self._set_names("test"))
        self.suite_result = self.run_suite("test") if self.suite is not None else None
        if self.suite_result is not None:
            results.update(self.suite_result.metrics)
        self.log_dict(results, add_dataloader_idx=False)
        # These epoch-end metrics carry their set in the name. Lightning would add them to each test
        # dataloader's (empty) outputs: N identical columns in its table, N identical dicts from
        # trainer.test(). Keep one when no dataloader logged anything of its own.
        outputs = getattr(self.trainer.test_loop, "_logged_outputs", None)
        if isinstance(outputs, list) and len(outputs) > 1 and not any(outputs):
            del outputs[1:]
        self.summary["test"] = results

    def run_suite(self, stage: str = "test", suite: EvalSuite | None = None) -> SuiteResult:
        """Run ``suite`` (default ``self.suite``) on the trained model over the datamodule's sets.
        A suite without its own gold model compares with ``compare_with``."""
        suite = suite or self.suite
        if suite is None:
            raise ValueError(f"{type(self).__name__}: no evaluation suite; pass `suite` (e.g. TOFUSuite)")
        return suite.run(self.model, self.tokenizer, self._datamodule(), stage, context=self.eval_context(),
                         default_gold=self.compare_with, instruction=self.prompt_instruction)

    @torch.no_grad()
    def evaluate(self, stage: str = "val", step: int | None = None, model: nn.Module | None = None) -> dict[str, float]:
        """Teacher-forced metrics of ``model`` (default: the trained model) on the datamodule's
        validation or test sets, outside Lightning's loops; logged at ``step`` if given."""
        dm = self._datamodule()
        sets = dm.eval_encoded if stage == "val" else dm.test_encoded
        results = {}
        for name, data in sets.items():
            metrics = evaluate_teacher_forced(model if model is not None else self.model, dm.eval_dataloader(data),
                                              self.device, self.eval_context())
            results.update({f"{name}/{k}": v for k, v in metrics.items()})
        if step is not None:
            self._log_eval(results, step)
        return results

    def finish_evaluation(self) -> None:
        """Evaluate the final weights unless the last optimizer step was just evaluated (idempotent;
        callbacks that read ``summary["end"]`` at the end of training call it first)."""
        if self._last_eval_step != self.global_step and self._datamodule().eval_encoded:
            self.summary["end"] = self.evaluate("val", step=self.global_step)
            self._last_eval_step = self.global_step

    def on_fit_end(self) -> None:
        for logger in tensorboard_loggers(self.loggers):  # the per-set runs of this fit are complete
            close_set_writers(logger)

    def _log_eval(self, results: dict[str, float], step: int) -> None:
        """Log evaluation results at ``step`` = optimizer steps taken (0 = the starting model).

        Lightning would log them one step earlier; the loggers get them directly, and
        ``callback_metrics`` (for ``ModelCheckpoint(monitor=...)``) through ``self.log``.
        """
        self.eval_history.append({"step": step, **results})
        if self._current_fx_name == "on_validation_epoch_end":
            self.log_dict(results, logger=False, add_dataloader_idx=False)
        else:
            self.trainer.callback_metrics.update({k: torch.tensor(v) for k, v in results.items()})
        if self.trainer.is_global_zero:
            log_metrics(self.loggers, results, step, sets={k.split("/", 1)[0] for k in results})
