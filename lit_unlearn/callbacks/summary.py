"""``RunSummary``: the start / end / gold-retain summary of a run, and the records written beside its logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_unlearn.evaluation import diagnostics
from lit_unlearn.evaluation.summary import format_summary, write_results
from lit_unlearn.models import load_causal_lm
from lit_unlearn.provenance import RUN_INFO, run_record, write_json

SUMMARY_FILE = "lit_unlearn_summary.json"  # beside a saved model: its start and gold columns


class RunSummary(Callback):
    """Says whether unlearning worked, and keeps the records of the run.

    - At the start of fit: ``run_info.json`` beside the logs (method, settings, seed, versions,
      data fingerprint).
    - At the end of fit: evaluates the module's ``compare_with`` (the gold retain model) on the
      validation sets, and prints the starting model, the unlearned model and the gold model
      side by side, with the forget gap to gold and the share of retain knowledge kept.
    - At the end of test: writes the suite's ``results.json`` (metrics and the per-example
      statistics a later run can use as its gold reference) and ``results.md`` beside the logs,
      and prints the test column beside the start and gold columns saved with the model.

    ``lit-unlearn`` adds it (and :class:`~lit_unlearn.callbacks.SavePretrained`) to every run.

    Args:
        gold: evaluate ``compare_with`` at the end of fit.
        verbose: print the summary table.
    """

    def __init__(self, gold: bool = True, verbose: bool = True) -> None:
        self.gold, self.verbose = gold, verbose
        self._started: float | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.perf_counter()
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero and trainer.loggers:
            write_json(Path(log_dir) / RUN_INFO, run_record(pl_module, trainer.datamodule))

    def evaluate_gold(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Add the gold retain model's metrics to ``pl_module.summary`` (once; every rank calls it)."""
        if not self.gold or not getattr(pl_module, "compare_with", None) or pl_module.summary.get("gold"):
            return
        gold = load_causal_lm(pl_module.compare_with, dtype=next(pl_module.model.parameters()).dtype)
        pl_module.summary["gold"] = pl_module.evaluate("val", model=gold.to(pl_module.device))
        del gold

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.finish_evaluation()
        self.evaluate_gold(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seconds = time.perf_counter() - self._started if self._started is not None else None
        self._print(trainer, pl_module, "fit", seconds)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Testing a saved unlearned model: show the start and gold columns it was saved with.
        path = getattr(pl_module, "model_path", None)
        saved = Path(path or "") / SUMMARY_FILE
        if path and not pl_module.summary and saved.is_file():
            stored = json.loads(saved.read_text())
            pl_module.summary.update({k: v for k, v in stored.items() if k in ("start", "gold")})

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """``results.json`` and ``results.md``, and ``generations.json`` beside them: the suite's
        first generations of each set, ``{set: [{"prompt", "reference", "generated"}, ...]}``
        (the suite's ``keep_generations``; no file when it kept none)."""
        from lit_unlearn.utils import atomic_write_text

        result = getattr(pl_module, "suite_result", None)
        log_dir = Path(trainer.log_dir or ".")  # a collective under DDP: every rank asks
        if result is not None and _is_subject(pl_module):  # a start model: its forget quality must be low
            found = diagnostics.start_model_checks(result.metrics)
            result.stats.setdefault("warnings", []).extend(diagnostics.emit(found) if trainer.is_global_zero else found)
        if result is not None and trainer.is_global_zero:
            write_results(log_dir, pl_module.summary.get("test", result.metrics), result.stats, pl_module.model_path,
                          type(pl_module.suite).__name__, pl_module.summary)
            if result.generations:
                atomic_write_text(log_dir / "generations.json",
                                  json.dumps(result.generations, indent=1, ensure_ascii=False))
        self._print(trainer, pl_module, "test")

    def _print(self, trainer: Trainer, pl_module: LightningModule, stage: str, seconds: float | None = None) -> None:
        if self.verbose and trainer.is_global_zero:
            result = getattr(pl_module, "suite_result", None) if stage == "test" else None
            warned = result.stats.get("warnings") if result is not None else None
            text = format_summary(getattr(pl_module, "summary", {}), stage, seconds=seconds, warnings=warned)
            if text:
                print(text, flush=True)


def _is_subject(pl_module: LightningModule) -> bool:
    """Whether the tested model was fine-tuned (``FineTune``, as a subject is) and is not the gold model."""
    path, gold = getattr(pl_module, "model_path", None), getattr(pl_module, "compare_with", None)
    info = Path(path or "") / RUN_INFO
    if not path or not info.is_file() or (gold and Path(gold).resolve() == Path(path).resolve()):
        return False
    try:
        return json.loads(info.read_text()).get("method") == "FineTune"
    except (OSError, ValueError):
        return False
