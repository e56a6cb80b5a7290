"""``TradeOffCurves``: the forget vs retain trade-off in TensorBoard, as a PNG and as a CSV."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_unlearn.tensorboard import custom_layout, tensorboard_loggers, write_hparams
from lit_unlearn.utils import atomic_file, atomic_write_text


class TradeOffCurves(Callback):
    """Shows how forgetting trades against utility over a run; works with any method.

    - A TensorBoard custom-scalars layout (CUSTOM SCALARS tab), written before the first step
      with only the charts that will have data: one chart per evaluation metric with a line
      per evaluation set (each set is its own run, see :mod:`lit_unlearn.tensorboard`), and the
      stability, suite, relearning, dual-variable and projection charts where those callbacks run.
    - At the end of fit: a figure of retain vs forget metric over the evaluations (the path
      from the starting model to the unlearned one, with the gold retain model when the
      module has ``compare_with``) and of both metrics over steps, logged with
      ``add_figure`` and saved as ``<log_dir>/tradeoff.png``; every evaluation as
      ``<log_dir>/tradeoff.csv``; the hyper-parameters with the final metrics in the HPARAMS
      tab (each final metric is the last point of its curve: no extra scalar cards).

    Args:
        forget_metric: the x axis (an evaluation key such as ``forget/fact_acc``).
        retain_metric: the y axis (``retain/fact_acc``).
    """

    def __init__(self, forget_metric: str = "forget/fact_acc", retain_metric: str = "retain/fact_acc") -> None:
        self.forget_metric, self.retain_metric = forget_metric, retain_metric
        self._writers: set[int] = set()
        self.figure_path: Path | None = None
        self.csv_path: Path | None = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        for logger in tensorboard_loggers(trainer.loggers) if trainer.is_global_zero else []:
            if id(logger.experiment) not in self._writers:
                keys, sets = self.curves(trainer, pl_module, final=False)
                if trainer.log_every_n_steps <= trainer.estimated_stepping_batches:  # the loss will be logged
                    keys.append("train/loss")
                logger.experiment.add_custom_scalars(custom_layout(keys, sets))
                self._writers.add(id(logger.experiment))

    @staticmethod
    def curves(trainer: Trainer, pl_module: LightningModule, final: bool) -> tuple[list[str], set[str]]:
        """The metric names this run logs (and the set names among their segments): the module's
        evaluations (from its first or, with ``final``, its last evaluation; before any, from the
        datamodule: fact accuracy only where records mark a fact span) and the curves of the other
        callbacks on the Trainer (StabilityGap's and SuiteEvaluation's from their start evaluation)."""
        history = getattr(pl_module, "eval_history", [])
        if history:
            keys = [k for k in history[-1 if final else 0] if k != "step" and _finite(history[-1 if final else 0][k])]
        else:
            encoded = getattr(trainer.datamodule, "eval_encoded", {}) or {}
            facts = any(d[i][2] is not None for d in encoded.values() for i in range(min(len(d), 64)))
            keys = [f"{s}/{m}" for s in encoded for m in ("nll", "prob", "token_acc") + (("fact_acc",) * facts)]
        sets = {k.split("/")[0] for k in keys}
        for callback in trainer.callbacks:
            name = type(callback).__name__
            if name == "StabilityGap":
                sets |= set(getattr(callback, "_names", []))
                keys += [f"stability/{s}/acc" for s in getattr(callback, "_names", [])]
                keys += ["stability/gap", "stability/wc_acc"]
            elif name == "SuiteEvaluation" and callback.history:
                sets |= set((callback.suite or pl_module.suite).required_sets())
                keys += [f"suite/{k}" for k in callback.history[-1 if final else 0] if k != "step"]
            else:
                keys += {"RelearningProbe": ["relearn/recovery"], "DualVariable": ["dual/lambda"],
                         "GradientProjection": ["gp/removed_fraction"]}.get(name, [])
        return list(dict.fromkeys(keys)), sets

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)  # every rank asks: a collective under DDP
        if not trainer.is_global_zero:
            return
        history = list(getattr(pl_module, "eval_history", []))
        if not history:
            return
        self.csv_path = log_dir / "tradeoff.csv"
        atomic_write_text(self.csv_path, _to_csv(history))
        summary = getattr(pl_module, "summary", {})
        figure = self._figure(history, summary.get("gold", {}))
        if figure is not None:
            self.figure_path = log_dir / "tradeoff.png"
            buf = io.BytesIO()
            figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            with atomic_file(self.figure_path) as tmp:
                tmp.write_bytes(buf.getvalue())
            for logger in tensorboard_loggers(trainer.loggers):
                logger.experiment.add_figure("lit-unlearn/tradeoff", figure, global_step=trainer.global_step)
            import matplotlib.pyplot as plt

            plt.close(figure)
        final, sets = self.curves(trainer, pl_module, final=True)
        tensorboard = tensorboard_loggers(trainer.loggers)
        for logger in trainer.loggers:
            if logger in tensorboard:
                write_hparams(logger, pl_module.hparams, final, sets)
                continue
            metrics = {f"hp/{k}": history[-1][k] for k in final if k in history[-1]}
            try:
                logger.log_hyperparams(dict(pl_module.hparams), metrics=metrics)
            except TypeError:  # loggers without a metrics argument
                logger.log_hyperparams(dict(pl_module.hparams))
                logger.log_metrics(metrics, step=trainer.global_step)

    def _figure(self, history: list[dict[str, float]], gold: dict[str, float]):
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        points = [h for h in history if self.forget_metric in h and self.retain_metric in h]
        if not points:
            return None
        xs = [h[self.forget_metric] for h in points]
        ys = [h[self.retain_metric] for h in points]
        steps = [int(h["step"]) for h in points]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        left.plot(xs, ys, "-o", color="tab:blue", markersize=4, label="run (start to end)")
        left.annotate("start", (xs[0], ys[0]), textcoords="offset points", xytext=(5, 5))
        left.annotate(f"step {steps[-1]}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(5, -12))
        if self.forget_metric in gold and self.retain_metric in gold:
            left.plot([gold[self.forget_metric]], [gold[self.retain_metric]], "*", color="tab:green", markersize=14,
                      label="gold retain model")
        left.set_xlabel(f"{self.forget_metric} (lower: more forgotten)")
        left.set_ylabel(f"{self.retain_metric} (higher: more kept)")
        left.set_title("forget vs retain")
        left.legend(loc="lower right")
        left.grid(alpha=0.3)
        right.plot(steps, xs, "-o", markersize=3, color="tab:red", label=self.forget_metric)
        right.plot(steps, ys, "-o", markersize=3, color="tab:blue", label=self.retain_metric)
        right.set_xlabel("optimizer step")
        right.set_title("over training")
        right.legend()
        right.grid(alpha=0.3)
        fig.tight_layout()
        return fig


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _to_csv(history: list[dict[str, float]]) -> str:
    keys = ["step"] + sorted({k for h in history for k in h} - {"step"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for h in history:
        writer.writerow({k: h.get(k, "") for k in keys})
    return buf.getvalue()
