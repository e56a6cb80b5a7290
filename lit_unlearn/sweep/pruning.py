"""``SweepPruning``: stop a trial whose intermediate metric is worse than the median of finished
trials at the same step. Optuna's pruners need single-objective studies; this works in any."""

from __future__ import annotations

import statistics
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class SweepPruning(Callback):
    """After each validation: record ``metric`` at this step on the trial (user attribute
    ``intermediate``), and raise ``optuna.TrialPruned`` when at least ``startup_trials`` finished
    trials reached this step and the value is worse than their median (after ``warmup_steps``)."""

    def __init__(self, trial, metric: str, direction: str = "minimize", warmup_steps: int = 0,
                 startup_trials: int = 3) -> None:
        self.trial, self.metric, self.direction = trial, metric, direction
        self.warmup_steps, self.startup_trials = warmup_steps, startup_trials
        self.values: dict[int, float] = {}

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        step, value = trainer.global_step, float(trainer.callback_metrics[self.metric])
        self.values[step] = value
        self.trial.set_user_attr("intermediate", {str(k): v for k, v in self.values.items()})
        if step < self.warmup_steps:
            return
        others = self._peers_at(step)
        if len(others) < self.startup_trials:
            return
        median = statistics.median(others)
        worse = value > median if self.direction == "minimize" else value < median
        if worse:
            import optuna

            raise optuna.TrialPruned(f"{self.metric} {value:.4g} at step {step} is worse than the median "
                                     f"{median:.4g} of {len(others)} finished trials")

    def _peers_at(self, step: int) -> list[float]:
        from optuna.trial import TrialState

        out = []
        for t in self.trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            seen: dict[str, Any] = t.user_attrs.get("intermediate", {})
            steps = [int(s) for s in seen if int(s) <= step]
            if steps:
                out.append(float(seen[str(max(steps))]))
        return out
