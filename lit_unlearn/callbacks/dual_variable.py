"""``DualVariable``: keep the retain loss under a bound by projected dual ascent on ``retain_weight``."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_unlearn import checks


class DualVariable(Callback):
    """Treats ``retain <= epsilon`` as a constraint with multiplier λ = the module's ``retain_weight``.

    After every optimizer step (or epoch), with ``r`` the mean retain loss of that step's
    batches (every micro-batch and rank): ``λ <- max(0, λ + step_size * (r - epsilon))``.
    During the first ``warmup_steps`` optimizer steps λ stays at ``init``. Works with any
    method whose objectives have a retain term.

    Args:
        epsilon: the bound on the retain loss; or
        tolerance: epsilon = (1 + tolerance) x the retain loss of the starting model, measured
            before the first step on up to ``measure_examples`` retain rows.
        step_size: η_λ (1.0).
        init: λ0; default the module's ``retain_weight``.
        warmup_steps: optimizer steps with λ held at λ0.
        update: ``"step"`` or ``"epoch"``.
        measure_examples: retain rows used to measure the starting retain loss.
    """

    def __init__(self, epsilon: float | None = None, tolerance: float | None = None, step_size: float = 1.0,
                 init: float | None = None, warmup_steps: int = 0, update: str = "step",
                 measure_examples: int = 256) -> None:
        if (epsilon is None) == (tolerance is None):
            raise ValueError("DualVariable: give exactly one of `epsilon` (the bound) or `tolerance` (relative to "
                             "the starting retain loss)")
        checks = [("epsilon", epsilon, 0.0), ("tolerance", tolerance, 0.0), ("step_size", step_size, 0.0),
                  ("init", init, 0.0)]
        for name, value, low in checks:
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < low):
                raise ValueError(f"DualVariable: `{name}` must be a finite number >= {low}, got {value!r}")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"DualVariable: `warmup_steps` must be an integer >= 0, got {warmup_steps!r}")
        if update not in ("step", "epoch"):
            raise ValueError(f"DualVariable: `update` must be 'step' or 'epoch', got {update!r}")
        if not isinstance(measure_examples, int) or measure_examples <= 0:
            raise ValueError(f"DualVariable: `measure_examples` must be a positive integer, got {measure_examples!r}")
        self.epsilon, self.tolerance, self.step_size, self.init = epsilon, tolerance, step_size, init
        self.warmup_steps, self.update, self.measure_examples = warmup_steps, update, measure_examples
        self.lam: float | None = None
        self.start_retain_loss: float | None = None
        self._sum, self._count, self._seen_step = 0.0, 0, 0

    # ---------------------------------------------------------------- hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        checks.only_one(self, trainer, pl_module, "`retain_weight`")
        checks.needs_retain_term("DualVariable", pl_module, "it constrains the retain term")
        if getattr(pl_module, "adapts_retain_weight", False):
            raise checks.incompatible("DualVariable", pl_module, "the method sets `retain_weight` itself every step")
        if self.tolerance is not None and getattr(trainer.datamodule, "retain_set", None) is None:
            raise checks.incompatible("DualVariable(tolerance=...)", pl_module, "it measures the starting retain "
                                      "loss on the datamodule's retain set, and there is none; pass `retain` or give "
                                      "`epsilon`")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.lam is None:
            self.lam = float(self.init if self.init is not None else pl_module.retain_weight)
        pl_module.retain_weight = self.lam
        if self.tolerance is not None and self.start_retain_loss is None:
            self.start_retain_loss = self._measure(trainer, pl_module)
            if self.start_retain_loss <= 1e-6:  # RMU's activation distance, a KL retain term: 0 at the start
                raise checks.incompatible("DualVariable(tolerance=...)", pl_module, f"the method's retain loss "
                                          f"({pl_module.retain_kind}) is {self.start_retain_loss:.3g} on the starting "
                                          "model, so a bound relative to it is 0 and cannot be met; give `epsilon`")
            self.epsilon = (1 + self.tolerance) * self.start_retain_loss
        self._seen_step = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        obj = pl_module.last_objectives
        if obj is None or obj.retain is None:
            raise RuntimeError(f"DualVariable: {type(pl_module).__name__} returned no retain loss at step "
                               f"{trainer.global_step} (every batch needs retain rows)")
        self._sum = self._sum + obj.retain.detach().double().mean()  # a tensor: no host sync per micro-batch
        self._count += 1
        stepped = trainer.global_step != self._seen_step
        self._seen_step = trainer.global_step
        if stepped and self.update == "step":
            self._dual_step(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.update == "epoch" and self._count:
            self._dual_step(trainer, pl_module)

    # ---------------------------------------------------------------- the update
    def _dual_step(self, trainer: Trainer, pl_module: LightningModule) -> None:
        retain = torch.as_tensor(self._sum, dtype=torch.float64, device=pl_module.device) / self._count
        if trainer.world_size > 1:  # the same λ on every rank
            retain = trainer.strategy.reduce(retain, reduce_op="mean")
        retain = float(retain)
        self._sum, self._count = 0.0, 0
        if trainer.global_step > self.warmup_steps:
            self.lam = max(0.0, self.lam + self.step_size * (retain - self.epsilon))
        pl_module.retain_weight = self.lam
        if self.update == "epoch" or getattr(pl_module, "should_log", lambda: True)():
            pl_module.log_dict({"dual/lambda": self.lam, "dual/slack": self.epsilon - retain,
                                "dual/epsilon": self.epsilon},
                               on_step=self.update == "step", on_epoch=self.update == "epoch")

    @torch.no_grad()
    def _measure(self, trainer: Trainer, pl_module: LightningModule) -> float:
        dm = trainer.datamodule
        data = dm.retain_set
        subset = torch.utils.data.Subset(data, range(min(len(data), self.measure_examples)))
        total, n = 0.0, 0
        was_training = pl_module.model.training
        pl_module.model.eval()
        with pl_module.eval_context():
            for batch in dm.eval_dataloader(subset, shard=False):
                batch = {k: v.to(pl_module.device) for k, v in batch.items()}
                values = pl_module.retain_objective(batch)  # the method's own retain loss (RMU: activations)
                total, n = total + float(values.double().sum()), n + len(values)
        pl_module.model.train(was_training)
        return total / n

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "epsilon": self.epsilon, "start_retain_loss": self.start_retain_loss,
                "sum": float(self._sum), "count": self._count, "seen_step": self._seen_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.lam, self.epsilon = state_dict["lam"], state_dict["epsilon"]
        self.start_retain_loss = state_dict.get("start_retain_loss")
        self._sum, self._count = state_dict.get("sum", 0.0), state_dict.get("count", 0)
        self._seen_step = state_dict.get("seen_step", 0)
