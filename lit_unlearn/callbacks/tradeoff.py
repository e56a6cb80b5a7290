"""``TradeOffCurves``: the forget vs retain trade-off in TensorBoard, as a PNG and as a CSV."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_unlearn.utils import atomic_file, atomic_write_text

LAYOUT = {
    "lit-unlearn: forget vs retain": {
        "fact accuracy": ["Multiline", [r"^(forget|retain|neighbor|holdout|paraphrase)/fact_acc$"]],
        "answer NLL": ["Multiline", [r"^(forget|retain|neighbor|holdout|paraphrase)/nll$"]],
        "answer probability": ["Multiline", [r"^(forget|retain|neighbor|holdout|paraphrase)/prob$"]],
        "training losses": ["Multiline", [r"^train/(forget|retain)_loss$"]],
        "stability (continual evaluation)": ["Multiline", [r"^stability/(forget|retain|neighbor)_acc$",
                                                           r"^stability/min_acc$"]],
        "suite": ["Multiline", [r"^eval/(forget_quality|model_utility|score)$"]],
        "relearning probe": ["Multiline", [r"^relearn/"]],
    }
}


class TradeOffCurves(Callback):
    """Shows how forgetting trades against utility over a run; works with any method.

    - A TensorBoard custom-scalars layout (set once per writer) overlays the forget, retain,
      neighbor and holdout curves of each metric, the training losses, and the stability,
      suite and relearning curves where those callbacks run.
    - At the end of fit: a figure of retain vs forget metric over the evaluations (the path
      from the starting model to the unlearned one, with the gold retain model when the
      module has ``compare_with``) and of both metrics over steps, logged with
      ``add_figure`` and saved as ``<log_dir>/tradeoff.png``; every evaluation as
      ``<log_dir>/tradeoff.csv``; hyperparameters with the final metrics as ``hp/...``.

    Args:
        forget_metric: the x axis (an evaluation key such as ``forget/fact_acc``).
        retain_metric: the y axis (``retain/fact_acc``).
    """

    def __init__(self, forget_metric: str = "forget/fact_acc", retain_metric: str = "retain/fact_acc") -> None:
        self.forget_metric, self.retain_metric = forget_metric, retain_metric
        self._writers: set[int] = set()
        self.figure_path: Path | None = None
        self.csv_path: Path | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for writer in self._tensorboard_writers(trainer):
            if id(writer) not in self._writers:
                writer.add_custom_scalars(LAYOUT)
                self._writers.add(id(writer))

    @staticmethod
    def _tensorboard_writers(trainer: Trainer) -> list:
        if not trainer.is_global_zero:
            return []
        writers = []
        for logger in trainer.loggers:
            writer = getattr(logger, "experiment", None)
            if writer is not None and hasattr(writer, "add_custom_scalars"):
                writers.append(writer)
        return writers

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
            for writer in self._tensorboard_writers(trainer):
                writer.add_figure("lit-unlearn/tradeoff", figure, global_step=trainer.global_step)
            import matplotlib.pyplot as plt

            plt.close(figure)
        final = history[-1]
        metrics = {f"hp/{k.replace('/', '_')}": v for k, v in final.items() if k != "step" and _finite(v)}
        for key, value in summary.get("gold", {}).items():
            if key in final and _finite(value):
                metrics[f"hp/gap_to_gold_{key.replace('/', '_')}"] = final[key] - value
        for logger in trainer.loggers:
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
