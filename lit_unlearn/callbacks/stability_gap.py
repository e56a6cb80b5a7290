"""``StabilityGap``: continual evaluation on fixed small subsets, every n steps."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_unlearn import checks
from lit_unlearn.datamodules.encoding import collate
from lit_unlearn.evaluation.stability import stability_metrics
from lit_unlearn.evaluation.teacher_forced import teacher_forced_stats
from lit_unlearn.tensorboard import log_metrics


class StabilityGap(Callback):
    """Tracks forget and retain (and neighbor) accuracy every n steps and the stability gap.

    On fixed seeded subsets of the datamodule's evaluation sets, teacher-forced accuracy
    (``fact_acc`` where records mark a fact span, else ``token_acc``; no generation, one
    forward pass over all subsets, so it stays cheap) is measured before the first step and
    after every ``every_n_steps`` optimizer steps. Every rank evaluates the same subsets. Logged at
    step = optimizer steps taken: ``stability/<set>/acc`` (on TensorBoard the tag ``stability/acc``
    in each set's run) and,
    from the retain curve, ``stability/min_acc``, ``stability/gap`` (A_0 - min-ACC),
    ``stability/wf`` (windowed forgetting over ``window`` steps) and ``stability/wc_acc``
    (½ (1 - forget acc) + ½ min-ACC), also put in ``callback_metrics`` (for ``ModelCheckpoint(monitor=...)``
    and sweep objectives). The history is kept in ``state_dict()``, so a resumed
    run continues the curves.

    Args:
        every_n_steps: evaluate after every n optimizer steps. One evaluation costs about a
            third of a training step per subset row relative to a training row, so the
            defaults (5 steps, 16 rows x 3 sets) add about 10% to a batch-8 GradDiff step on
            the small benchmark model; every step with 100+ rows suits large training batches.
        subset_size: rows per set (seeded).
        sets: evaluation sets to track; ``retain`` is required, missing others are skipped.
        window: w for windowed forgetting, in optimizer steps.
        seed: seed of the subsets.
        metric: ``"auto"`` (fact accuracy where records mark fact spans, else token accuracy) or
            ``"token_acc"`` (always token accuracy: for spans that are not answers, such as the
            target's name marked by ``RWKU(name_spans=true)``).
    """

    def __init__(self, every_n_steps: int = 5, subset_size: int = 16,
                 sets: tuple[str, ...] = ("forget", "retain", "neighbor"), window: int = 10, seed: int = 0,
                 metric: str = "auto") -> None:
        for name, value in (("every_n_steps", every_n_steps), ("subset_size", subset_size), ("window", window)):
            checks.positive_int("StabilityGap", name, value)
        if "retain" not in sets:
            raise ValueError(f"StabilityGap: `sets` must include 'retain' (the curve the gap is measured on), "
                             f"got {sets!r}")
        if metric not in ("auto", "token_acc"):
            raise ValueError(f"StabilityGap: `metric` must be 'auto' or 'token_acc', got {metric!r}")
        self.every_n_steps, self.subset_size, self.sets, self.window, self.seed = (
            every_n_steps, subset_size, tuple(sets), window, seed)
        self.metric = metric
        self.history: list[dict[str, float]] = []
        self.last: dict[str, float] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = trainer.datamodule
        encoded = getattr(dm, "eval_encoded", None)
        if encoded is None or "retain" not in encoded:
            raise ValueError("StabilityGap needs a datamodule with a 'retain' evaluation set (eval_sets)")
        # The subsets are fixed: collate them once into one left-padded batch, so that each
        # evaluation is a single forward pass whose LM head runs only where answers are.
        g = torch.Generator().manual_seed(self.seed)
        items, self._owner = [], []
        for name in self.sets:
            if name in encoded:
                data = encoded[name]
                rows = torch.randperm(len(data), generator=g)[: self.subset_size].sort().values.tolist()
                items += [data[i] for i in rows]
                self._owner += [name] * len(rows)
        batch = collate(items, dm.pad_id, padding_side="left")
        width = batch["input_ids"].shape[1]
        first_scored = min(int((lab != -100).nonzero()[0]) for _, lab, _, _ in items) + width - max(
            len(ids) for ids, _, _, _ in items)
        self._keep = width - max(0, min(first_scored, width) - 1)
        self._batch = {k: v.to(pl_module.device) for k, v in batch.items()}
        self._batch["position_ids"] = (self._batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        self._names = list(dict.fromkeys(self._owner))
        self._groups = {n: torch.tensor([i for i, o in enumerate(self._owner) if o == n], device=pl_module.device)
                        for n in self._names}
        if trainer.global_step == 0 and not self.history:
            self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and (not self.history or self.history[-1]["step"] != step):
            self._evaluate(trainer, pl_module)

    @torch.no_grad()
    def accuracies(self, model, context=None) -> dict[str, float]:
        """Teacher-forced accuracy per tracked set (fact accuracy where spans exist, else token accuracy)."""
        b = self._batch
        was_training = model.training
        model.eval()
        kwargs = {"logits_to_keep": self._keep} if self._keep_supported(model) else {}
        with context or nullcontext():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"],
                           use_cache=False, **kwargs).logits
        model.train(was_training)
        cut = b["input_ids"].shape[1] - logits.shape[1]
        stats = teacher_forced_stats(logits, b["labels"][:, cut:], b.get("fact_mask", None) if "fact_mask" not in b
                                     else b["fact_mask"][:, cut:])
        out = {}
        for name, idx in self._groups.items():
            if self.metric == "auto" and "fact_correct" in stats and bool(b["has_fact"][idx].all()):
                out[name] = float(stats["fact_correct"][idx].float().mean())
            else:
                out[name] = float(stats["correct"][idx].sum() / stats["tokens"][idx].sum())
        return out

    @staticmethod
    def _keep_supported(model) -> bool:
        import inspect

        return "logits_to_keep" in inspect.signature(model.forward).parameters

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> None:
        point: dict[str, float] = {"step": trainer.global_step}
        acc = self.accuracies(pl_module.model, pl_module.eval_context())
        point.update({f"{name}_acc": v for name, v in acc.items()})
        self.history.append(point)
        stats = stability_metrics([h["step"] for h in self.history], [h["retain_acc"] for h in self.history],
                                  point.get("forget_acc"), self.window)
        logged = {f"stability/{name}/acc": v for name, v in acc.items()}
        logged.update({f"stability/{k}": v for k, v in stats.items()})
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in logged.items()})  # monitor / sweep
        if trainer.is_global_zero:  # a set's accuracy goes to its own TensorBoard run
            log_metrics(trainer.loggers, logged, trainer.global_step, sets=self._names)
        self.last = logged

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
