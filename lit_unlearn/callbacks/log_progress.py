"""Progress for a log file: plain lines instead of an interactive bar."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from torch import Tensor

from lit_unlearn.utils import format_duration, format_rate, interactive

__all__ = ["LogProgress", "interactive"]


class LogProgress(ProgressBar):
    """Progress as plain lines on stdout, one every ``every_n_steps`` optimizer steps or ``every_seconds``
    seconds, whichever comes first: what a log file (nohup, a batch scheduler) can show.

    A fit prints ``step 120/400 (30%) epoch 2 loss 1.234 2.5 it/s ETA 1m52s`` (the loss is the
    module's ``last_loss`` when it has one, else the logged ``loss``; other progress-bar metrics
    follow it), then ``fit: 400 steps in 2m40s (2.5 it/s), loss 0.123`` at the end; each
    test loop prints ``test: 12 batches`` when it starts (and its position every ``every_seconds``
    if it is long) and ``test: done in 3.2s`` when it ends; a validation loop prints one line when
    it ends, ``validation: 12 batches (3 dataloaders) in 0.4s`` (and its position if long). Epochs count from 0,
    as in Lightning's bar and checkpoint names. Rank zero only. A ``ProgressBar``, so the
    Trainer adds no bar of its own; ``every_n_steps=0``: time-based lines only.
    """

    def __init__(self, every_n_steps: int = 50, every_seconds: float = 30.0) -> None:
        super().__init__()
        if every_n_steps < 0 or every_seconds <= 0:
            raise ValueError(f"LogProgress: every_n_steps must be >= 0 and every_seconds > 0 (got {every_n_steps}, "
                             f"{every_seconds})")
        self.every_n_steps = every_n_steps
        self.every_seconds = every_seconds
        self._enabled = True
        self._fit_started = 0.0
        self._fit_start_step = 0
        self._total_steps: float = math.inf
        self._last_time = 0.0
        self._last_step = 0
        self._eval_started = 0.0
        self._eval_last = 0.0
        self._eval_done = 0

    # ProgressBar's interface
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and (self._trainer is None or self.trainer.is_global_zero)

    def print(self, *args: Any, **kwargs: Any) -> None:  # LightningModule.print: rank zero already checked
        print(*args, **{"flush": True, **kwargs})

    def _line(self, text: str) -> None:
        if self.is_enabled:
            print(text, file=sys.stdout, flush=True)

    # fit
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_started = self._last_time = time.monotonic()
        self._fit_start_step = self._last_step = trainer.global_step
        total = trainer.estimated_stepping_batches
        self._total_steps = float(total) if total is not None else math.inf
        if math.isfinite(self._total_steps):
            self._line(f"fit: {int(self._total_steps) - trainer.global_step} steps to go"
                       + (f" (from step {trainer.global_step})" if trainer.global_step else ""))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step, now = trainer.global_step, time.monotonic()
        if step == self._last_step:  # accumulating gradients: no optimizer step yet
            return
        due = self.every_n_steps and step - self._last_step >= self.every_n_steps
        if due or now - self._last_time >= self.every_seconds:
            self._last_step, self._last_time = step, now
            self._line(self.step_line(trainer, pl_module, now))

    def step_line(self, trainer: Trainer, pl_module: LightningModule, now: float | None = None) -> str:
        """``step 120/400 (30%) epoch 2 loss 1.234 2.5 it/s ETA 1m52s``."""
        now = time.monotonic() if now is None else now
        step = trainer.global_step
        rate = (step - self._fit_start_step) / max(now - self._fit_started, 1e-9)
        if math.isfinite(self._total_steps) and self._total_steps > 0:
            total = int(self._total_steps)
            eta = format_duration((total - step) / rate) if rate > 0 else "?"
            where = f"step {step}/{total} ({100 * step / total:.0f}%)"
        else:
            where, eta = f"step {step}", "?"
        metrics = " ".join(f"{k} {v}" for k, v in self.scalars(trainer, pl_module).items())
        return f"{where} epoch {trainer.current_epoch} {metrics + ' ' if metrics else ''}{format_rate(rate)} ETA {eta}"

    def scalars(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, str]:
        """``{"loss": "1.234", ...}``: the latest loss, then the other scalar progress-bar metrics."""
        out = {}
        loss = getattr(pl_module, "last_loss", None)
        if loss is None:
            loss = trainer.callback_metrics.get("loss", trainer.callback_metrics.get("train/loss"))
        if loss is not None:
            out["loss"] = _number(loss)
        for name, value in self.get_metrics(trainer, pl_module).items():
            if name not in ("loss", "v_num") and not (name == "train/loss" and "loss" in out):
                text = _number(value)
                if text is not None:
                    out[name] = text
        return {k: v for k, v in out.items() if v is not None}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        elapsed = time.monotonic() - self._fit_started
        steps = trainer.global_step - self._fit_start_step
        loss = self.scalars(trainer, pl_module).get("loss")
        self._line(f"fit: {steps} steps in {format_duration(elapsed)} ({format_rate(steps / max(elapsed, 1e-9))})"
                   + (f", loss {loss}" if loss is not None else ""))

    # validation and test
    def _eval_start(self, stage: str, batches: Any, announce: bool = True) -> None:
        self._eval_started = self._eval_last = time.monotonic()
        self._eval_done = 0
        counts = batches if isinstance(batches, list) else [batches]
        total = sum(counts)
        sets = f" ({len(counts)} dataloaders)" if len(counts) > 1 else ""
        self._eval_what = f"{int(total) if math.isfinite(total) else '?'} batches{sets}"
        if announce:
            self._line(f"{stage}: {self._eval_what}")

    def _eval_batch(self, stage: str, batches: Any) -> None:
        self._eval_done += 1
        now = time.monotonic()
        if now - self._eval_last >= self.every_seconds:
            self._eval_last = now
            total = sum(batches) if isinstance(batches, list) else batches
            of = f"/{int(total)}" if math.isfinite(total) else ""
            self._line(f"{stage}: {self._eval_done}{of} batches, {format_duration(now - self._eval_started)}")

    def _eval_end(self, stage: str, announced: bool = True) -> None:
        what = "done" if announced else self._eval_what
        self._line(f"{stage}: {what} in {time.monotonic() - self._eval_started:.1f}s")

    def _val_stage(self, trainer: Trainer) -> str:
        return "sanity check" if trainer.sanity_checking else "validation"

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batches = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        self._eval_start(self._val_stage(trainer), batches, announce=False)  # one line, at the end

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        batches = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        self._eval_batch(self._val_stage(trainer), batches)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_end(self._val_stage(trainer), announced=False)
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._last_time = time.monotonic()  # the next step line counts from here, not from before validation

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_start("test", trainer.num_test_batches)

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch("test", trainer.num_test_batches)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_end("test")


def _number(value: Any) -> str | None:
    """A scalar as text (4 significant digits), None for anything else."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return f"{value:.4g}"
