"""``DivergenceGuard``: stop a run that diverges and keep the last good model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer

ACTIONS = ("stop", "rollback")


class DivergenceGuard(Callback):
    """Stops a run when the loss or a gradient is NaN/inf, or an evaluated metric falls below
    its floor, and leaves the last good weights in the model (so they are what is saved).

    Every optimizer step is checked before it is applied: a non-finite loss or gradient
    norm drops that update (gradients set to None), so the weights are those of the last
    good step. Every evaluation (validation, e.g. ``retain/fact_acc``) is checked against
    ``floors``; a metric below its floor means the current weights are already bad.

    Args:
        floors: ``{metric: lowest acceptable value}`` over the logged evaluation metrics,
            e.g. ``{"retain/fact_acc": 0.8}``. With floors the guard keeps a CPU copy of the
            trainable parameters from the last evaluation that passed (and the start).
        action: ``"stop"``: stop, restoring that copy after a floor violation.
            ``"rollback"``: restore the newest checkpoint written (by ``ModelCheckpoint``) at
            or before the last good step, read with ``weights_only=True``, then stop; without
            one, as ``"stop"``.
        check_gradients: also check the gradient norm (off under ``16-mixed``, whose loss
            scaler skips steps with inf gradients itself).
    """

    def __init__(self, floors: dict[str, float] | None = None, action: str = "stop",
                 check_gradients: bool = True) -> None:
        if action not in ACTIONS:
            raise ValueError(f"DivergenceGuard: `action` must be one of {ACTIONS}, got {action!r}")
        floors = dict(floors or {})
        for name, value in floors.items():
            if not isinstance(name, str) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"DivergenceGuard: `floors` maps metric names to finite numbers, got "
                                 f"{name!r}: {value!r}")
        self.floors = {k: float(v) for k, v in floors.items()}
        self.action, self.check_gradients = action, check_gradients
        self.good_step = 0  # the last optimizer step whose weights passed every check
        self.tripped: dict[str, Any] | None = None  # {"step", "reason", "restored"} once stopped
        self._snapshot: dict[str, Tensor] | None = None
        self._warned_missing = False

    # ---------------------------------------------------------------- hooks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.tripped = None  # a resumed run is guarded again (the previous stop stays in the log)
        self.good_step = trainer.global_step
        if self.floors:
            self._take_snapshot(pl_module)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        reason = None if self.tripped is not None else self._check_step(trainer, pl_module, optimizer)
        if trainer.world_size > 1:  # a collective every rank reaches: all drop the step and stop together
            if trainer.strategy.reduce_boolean_decision(reason is not None, all=False) and reason is None:
                reason = "another process saw a non-finite loss or gradient"
        if reason is None or self.tripped is not None:
            return
        for group in optimizer.param_groups:  # the update is never applied
            for p in group["params"]:
                p.grad = None
        self._trip(trainer, pl_module, reason, step=trainer.global_step + 1, weights_bad=False)

    def _check_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> str | None:
        """Why this step must not be applied, or None. One host sync for loss and gradients."""
        checked = []
        loss = getattr(pl_module, "last_loss", None)
        if loss is not None:
            checked.append(loss.detach().float().reshape(-1))
        if self.check_gradients and trainer.precision != "16-mixed":
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:  # fp32 norms: fp16 ones overflow on healthy gradients
                checked.append(torch.stack(torch._foreach_norm(grads, dtype=torch.float32)).to(pl_module.device))
        if not checked or bool(torch.isfinite(torch.cat(checked)).all()):
            return None
        if loss is not None and not bool(torch.isfinite(loss).all()):
            return f"the training loss is {float(loss)}"
        return f"the gradient norm is {float(checked[-1].norm())}"

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.tripped is None and not self.floors:
            self.good_step = trainer.global_step

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self.tripped is not None or not self.floors:
            return
        metrics = trainer.callback_metrics
        missing = sorted(name for name in self.floors if name not in metrics)
        if missing and not self._warned_missing:
            self._warned_missing = True
            rank_zero_warn(f"DivergenceGuard: floors {missing} name no evaluated metric (have e.g. "
                           f"{sorted(k for k in metrics if '/' in k)[:6]}); they are not checked")
        for name, floor in self.floors.items():
            if name in metrics and not float(metrics[name]) >= floor:  # NaN fails too
                self._trip(trainer, pl_module, f"`{name}` = {float(metrics[name]):.4f} fell below its floor {floor}",
                           step=trainer.global_step, weights_bad=True)
                return
        if len(missing) < len(self.floors):
            self.good_step = trainer.global_step
            self._take_snapshot(pl_module)

    # ---------------------------------------------------------------- restoring
    def _take_snapshot(self, pl_module: LightningModule) -> None:
        self._snapshot = {n: p.detach().to("cpu", copy=True) for n, p in pl_module.named_parameters()
                          if p.requires_grad}

    def _restore_snapshot(self, pl_module: LightningModule) -> bool:
        if self._snapshot is None:
            return False
        with torch.no_grad():
            for name, p in pl_module.named_parameters():
                if name in self._snapshot:
                    p.copy_(self._snapshot[name].to(p.device))
        return True

    def _good_checkpoint(self, trainer: Trainer) -> Path | None:
        """The newest checkpoint file of any ModelCheckpoint with global_step <= good_step."""
        best, best_step = None, -1
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint) or not callback.dirpath or not Path(callback.dirpath).is_dir():
                continue
            for path in Path(callback.dirpath).glob(f"*{callback.FILE_EXTENSION}"):
                try:
                    step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", -1)
                except Exception:  # unreadable or half-written by another process: not a candidate
                    continue
                newer = best is not None and step == best_step and path.stat().st_mtime > best.stat().st_mtime
                if best_step < step <= self.good_step or newer:
                    best, best_step = path, step
        return best

    def _restore_checkpoint(self, trainer: Trainer, pl_module: LightningModule) -> str | None:
        path = self._good_checkpoint(trainer)
        if path is None:
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        with torch.no_grad():
            for name, p in pl_module.named_parameters():
                if name in state:
                    p.copy_(state[name].to(p.device, p.dtype))
        return str(path)

    def _trip(self, trainer: Trainer, pl_module: LightningModule, reason: str, step: int, weights_bad: bool) -> None:
        restored = None
        if self.action == "rollback":
            restored = self._restore_checkpoint(trainer, pl_module)
        if restored is None and weights_bad and self._restore_snapshot(pl_module):
            restored = f"the weights of step {self.good_step} (kept in memory)"
        self.tripped = {"step": step, "reason": reason, "restored": restored or f"the weights of step {self.good_step}"}
        trainer.should_stop = True
        rank_zero_warn(f"DivergenceGuard stopped the run at step {step}: {reason}. The model keeps "
                       f"{self.tripped['restored']}.", category=RuntimeWarning)

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {"good_step": self.good_step, "tripped": self.tripped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.good_step = state_dict.get("good_step", 0)
        self.tripped = state_dict.get("tripped")
