"""``RelearningProbe``: does forgotten knowledge come back after a little fine-tuning?"""

from __future__ import annotations

import contextlib
import copy
import functools
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Subset

from lit_unlearn import checks
from lit_unlearn.datamodules.encoding import collate
from lit_unlearn.evaluation.teacher_forced import evaluate_teacher_forced
from lit_unlearn.objectives import nll
from lit_unlearn.utils import isolated_rng


class RelearningProbe(Callback):
    """Fine-tunes a copy of the trained weights on a relearn set and measures what returns.

    At each probe the trainable weights, their gradients, the optimizer state and every RNG
    are saved; the model is fine-tuned with plain NLL and a fresh AdamW for ``steps`` steps
    on the relearn set, the forget metric is measured on the evaluation rows, and everything
    is restored exactly, so training after a probe is bit-identical to training without it.
    Recovery (BLUR): ``(metric_relearned - metric_unlearned) / (metric_start - metric_unlearned)``
    with ``metric_start`` measured on the starting model before the first step. Logged as
    ``relearn/recovery`` (and the two accuracies), also in ``callback_metrics`` (sweep objectives).

    Graded relearning (BLUR's relearn sets of varying difficulty): with ``relearn_sets``, each
    probe fine-tunes once per named set, every time from the same unlearned weights (restored
    exactly in between), and measures every set on the same rows: the forget rows left out of
    ``forget``'s relearning half. Rows of a set whose ``id`` is one of those evaluated rows are
    left out of its relearning (a paraphrase of the forget set relearns the ``forget`` half in
    its other phrasing), so no evaluated fact is relearned in any phrasing. Logged as
    ``relearn/<metric>_unlearned`` and, per set, ``relearn/<set>/<metric>_relearned`` and
    ``relearn/<set>/recovery``.

    Args:
        every_n_steps: probe every n optimizer steps (None: only at the end).
        at_end: probe after the last step.
        relearn_set: ``"forget"`` (default: a seeded ``relearn_fraction`` of the forget set,
            evaluated on the rest), ``"retain"``, or any named evaluation set (``"neighbor"``)
            for harder attacks (then evaluated on the whole forget set).
        relearn_fraction: share of the forget rows relearned on when ``relearn_set="forget"``.
        steps: fine-tuning steps per probe (BLUR: tens).
        lr: fine-tuning learning rate (BLUR: 1e-5..1e-4 for 1B+ models).
        batch_size: fine-tuning batch size.
        metric: forget metric to report (``fact_acc``, falling back to ``token_acc``).
        seed: seed of the split and of the fine-tuning order.
        relearn_sets: graded relearning, in place of ``relearn_set``: names of sets to relearn on
            one after the other, each ``forget`` (``relearn_fraction`` of it), ``retain``, one of
            the datamodule's ``relearn_sets`` (e.g. :class:`FictitiousPeople`'s ``paraphrase``,
            ``neighbor``, ``unrelated``) or an evaluation set.
    """

    def __init__(self, every_n_steps: int | None = None, at_end: bool = True, relearn_set: str = "forget",
                 relearn_fraction: float = 0.5, steps: int = 10, lr: float = 1e-4, batch_size: int = 8,
                 metric: str = "fact_acc", seed: int = 0, relearn_sets: list[str] | None = None) -> None:
        checks.positive_int("RelearningProbe", "every_n_steps", every_n_steps, optional=True)
        if not 0 < relearn_fraction < 1:
            raise ValueError(f"RelearningProbe: `relearn_fraction` must be in (0, 1), got {relearn_fraction!r}")
        checks.positive_int("RelearningProbe", "steps", steps)
        checks.positive_int("RelearningProbe", "batch_size", batch_size)
        checks.positive("RelearningProbe", "lr", lr)
        if metric not in ("fact_acc", "token_acc", "prob"):
            raise ValueError(f"RelearningProbe: `metric` must be fact_acc, token_acc or prob, got {metric!r}")
        if relearn_sets is not None and (isinstance(relearn_sets, str) or not relearn_sets or not all(
                isinstance(r, str) and r and "/" not in r for r in relearn_sets) or len(set(relearn_sets)) < len(
                relearn_sets)):
            raise ValueError(f"RelearningProbe: `relearn_sets` must be a non-empty list of distinct set names without "
                             f"'/', got {relearn_sets!r}")
        if relearn_sets is not None and relearn_set != "forget":
            raise ValueError(f"RelearningProbe: give `relearn_set` ({relearn_set!r}) or `relearn_sets`, not both")
        self.relearn_sets = list(relearn_sets) if relearn_sets is not None else None
        self.every_n_steps, self.at_end, self.relearn_set = every_n_steps, at_end, relearn_set
        self.relearn_fraction, self.steps, self.lr, self.batch_size = relearn_fraction, steps, lr, batch_size
        self.metric, self.seed = metric, seed
        self.start_value: float | None = None
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------- data
    @staticmethod
    def _forget_set(trainer: Trainer):
        forget = getattr(trainer.datamodule, "forget_set", None)
        if forget is None:
            raise ValueError("RelearningProbe needs a ForgetRetainDataModule (with a forget set)")
        return forget

    def _split(self, trainer: Trainer):
        dm, forget = trainer.datamodule, self._forget_set(trainer)
        if self.relearn_set == "forget":
            return self._forget_halves(forget)
        if self.relearn_set == "retain" and getattr(dm, "retain_set", None) is not None:
            return dm.retain_set, forget
        if self.relearn_set in getattr(dm, "eval_encoded", {}):
            return dm.eval_encoded[self.relearn_set], forget
        raise ValueError(f"RelearningProbe: unknown relearn_set {self.relearn_set!r}; use 'forget', 'retain' or one "
                         f"of the evaluation sets {sorted(getattr(dm, 'eval_encoded', {}))}")

    def _forget_halves(self, forget):
        """The seeded relearning share of the forget set and the rest (evaluated)."""
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(forget), generator=g).tolist()
        cut = max(1, min(len(forget) - 1, round(self.relearn_fraction * len(forget))))
        return Subset(forget, sorted(order[:cut])), Subset(forget, sorted(order[cut:]))

    def _graded_split(self, trainer: Trainer):
        """``({set name: relearning rows}, evaluated forget rows)`` for ``relearn_sets``."""
        dm, forget = trainer.datamodule, self._forget_set(trainer)
        half, held_out = self._forget_halves(forget)
        held_ids = {forget.records.rows[i].get("id") for i in held_out.indices} - {None}
        named = {**getattr(dm, "eval_encoded", {}), **getattr(dm, "relearn_encoded", {})}
        if getattr(dm, "retain_set", None) is not None:
            named.setdefault("retain", dm.retain_set)
        sets = {}
        for name in self.relearn_sets:
            if name == "forget":
                sets[name] = half
                continue
            if name not in named:
                raise ValueError(f"RelearningProbe: unknown set {name!r} in `relearn_sets`; use 'forget' or one of "
                                 f"{sorted(named)} (the datamodule's relearn_sets, evaluation sets and retain set)")
            data = named[name]
            keep = [i for i in range(len(data)) if data.records.rows[i].get("id") not in held_ids]
            if not keep:
                raise ValueError(f"RelearningProbe: every row of relearn set {name!r} is an evaluated forget row")
            sets[name] = data if len(keep) == len(data) else Subset(data, keep)
        return sets, held_out

    def _measure(self, trainer: Trainer, module: LightningModule, data) -> float:
        loader = trainer.datamodule.eval_dataloader(data, shard=False)  # every rank measures the same rows
        m = evaluate_teacher_forced(module.model, loader, module.device, module.eval_context())
        return m.get(self.metric, m["token_acc"])

    # ---------------------------------------------------------------- hooks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.relearn_sets is None:
            self._relearn, self._eval = self._split(trainer)
        else:
            self._graded, self._eval = self._graded_split(trainer)
        if self.start_value is None and trainer.global_step == 0:
            self.start_value = self._measure(trainer, pl_module, self._eval)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and self._last_step() != step:
            self.probe(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_end and self._last_step() != trainer.global_step:
            self.probe(trainer, pl_module)
        if self.history and trainer.is_global_zero and self.relearn_sets is not None:
            h = self.history[-1]
            rank_zero_info(f"Relearning probe after step {h['step']}: forget {self.metric} {h['unlearned']:.3f} "
                           f"(start model {self.start_value:.3f}); after {self.steps} steps on each set: " + ", ".join(
                               f"{n} {h[f'{n}/relearned']:.3f} (recovery {h[f'{n}/recovery']:.3f})"
                               for n in self.relearn_sets))
        elif self.history and trainer.is_global_zero:
            h = self.history[-1]
            rank_zero_info(f"Relearning probe after step {h['step']}: forget {self.metric} {h['unlearned']:.3f} -> "
                           f"{h['relearned']:.3f} after {self.steps} steps on {self.relearn_set} "
                           f"(start model {self.start_value:.3f}); recovery {h['recovery']:.3f}")

    def _last_step(self) -> int:
        return int(self.history[-1]["step"]) if self.history else -1

    # ---------------------------------------------------------------- the probe
    def probe(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Run one probe now and restore the training state exactly; returns the result."""
        params = [p for p in pl_module.model.parameters() if p.requires_grad]
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        weights = [p.detach().clone() for p in params]
        grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
        opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
        was_training = pl_module.model.training
        # DDP: every rank relearns the same rows identically; keep its gradient hooks out of it
        no_sync = getattr(trainer.strategy.model, "no_sync", contextlib.nullcontext)
        with isolated_rng(), torch.enable_grad(), no_sync():
            unlearned = self._measure(trainer, pl_module, self._eval)
            relearned = {}
            for name, data in (self._graded.items() if self.relearn_sets is not None else [(None, self._relearn)]):
                with isolated_rng():  # every set starts from the same RNG state
                    self._relearn_steps(trainer, pl_module, params, data)
                    relearned[name] = self._measure(trainer, pl_module, self._eval)
                with torch.no_grad():  # the next set relearns from the unlearned weights
                    for p, w in zip(params, weights):
                        p.copy_(w)
        with torch.no_grad():
            for p, w, g in zip(params, weights, grads):
                p.copy_(w)
                p.grad = g
        if optimizer is not None:
            optimizer.load_state_dict(opt_state)
        pl_module.model.train(was_training)
        start = self.start_value if self.start_value is not None else float("nan")
        result: dict[str, float] = {"step": trainer.global_step, "unlearned": unlearned}
        if self.relearn_sets is None:
            result.update(relearned=relearned[None], recovery=self._recovery(relearned[None], unlearned, start))
            logged = {f"relearn/{self.metric}_unlearned": unlearned, f"relearn/{self.metric}_relearned":
                      relearned[None], "relearn/recovery": result["recovery"]}
        else:
            logged = {f"relearn/{self.metric}_unlearned": unlearned}
            for name, value in relearned.items():
                result[f"{name}/relearned"] = value
                result[f"{name}/recovery"] = self._recovery(value, unlearned, start)
                logged[f"relearn/{name}/{self.metric}_relearned"] = value
                logged[f"relearn/{name}/recovery"] = result[f"{name}/recovery"]
        self.history.append(result)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in logged.items()})  # monitor / sweep
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(logged, step=trainer.global_step)
        return result

    @staticmethod
    def _recovery(relearned: float, unlearned: float, start: float) -> float:
        denom = start - unlearned
        return (relearned - unlearned) / denom if denom else float("nan")

    def _relearn_steps(self, trainer: Trainer, pl_module: LightningModule, params, data=None) -> None:
        dm = trainer.datamodule
        g = torch.Generator().manual_seed(self.seed)
        loader = DataLoader(self._relearn if data is None else data, batch_size=self.batch_size, shuffle=True,
                            generator=g, collate_fn=functools.partial(collate, pad_id=dm.pad_id))
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
        pl_module.model.train()
        done = 0
        while done < self.steps:
            for batch in loader:
                batch = {k: v.to(pl_module.device) for k, v in batch.items()}
                with trainer.precision_plugin.forward_context():
                    logits = pl_module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                             use_cache=False).logits
                loss = nll(logits, batch["labels"]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done == self.steps:
                    break

    def state_dict(self) -> dict[str, Any]:
        return {"start_value": self.start_value, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.start_value = state_dict.get("start_value")
        self.history = list(state_dict.get("history", []))
