"""``UnlearningModule``: the base class of every method.

A method writes one thing, :meth:`UnlearningModule.objectives`, returning per-example
forget and retain losses; the base class combines them as
``loss = forget_weight * mean(sample_weights * forget) + retain_weight * mean(retain) (+ penalty)``
and owns the training step and the evaluation hooks. Loading lives in
:mod:`~lit_unlearn.methods.loading`, the starting model θ0 in :mod:`~lit_unlearn.methods.reference`,
and side effects in callbacks (``SavePretrained`` writes the model, ``RunSummary`` the summary).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_unlearn import checks
from lit_unlearn.evaluation import EvalSuite
from lit_unlearn.methods import reference as ref
from lit_unlearn.methods.evaluation import EvaluationHooks
from lit_unlearn.methods.loading import ModelSource
from lit_unlearn.methods.replay import GeneralReplay
from lit_unlearn.models import apply_lora, check_model_name, save_causal_lm
from lit_unlearn.objectives import answer_nll, kl_to_reference, weighted_mean


@dataclass
class Objectives:
    """What a method's :meth:`~UnlearningModule.objectives` returns.

    Attributes:
        forget: per-example forget loss ``[B_f]`` (minimised; gradient ascent is ``-NLL``).
        retain: per-example retain loss ``[B_r]``, or None.
        penalty: a scalar added to the loss as is (a regulariser), or None.
        logs: scalars to log under ``train/``.
    """

    forget: Tensor
    retain: Tensor | None = None
    logs: dict[str, Tensor] = field(default_factory=dict)
    penalty: Tensor | None = None


class UnlearningModule(EvaluationHooks):
    """Base class of the unlearning methods.

    Args:
        model: local directory, hub id, or built-in name (``builtin:small/subject``); checked
            here, loaded (or built, with a progress bar) in ``configure_model``.
        tokenizer: tokenizer name or path; default the model's.
        optimizer: optimizer factory; default ``AdamW`` with the method's published lr.
        scheduler: learning-rate scheduler factory (stepped every optimizer step).
        forget_weight: γ, weight of the forget term.
        retain_weight: α, weight of the retain term (``DualVariable`` updates it).
        dtype: weights dtype (``"float32"``, ``"bfloat16"``, ``"float16"``); default from the
            Trainer's ``precision``: ``bf16-true`` -> bfloat16, ``16-true`` -> float16, otherwise
            float32 (mixed precision keeps float32 master weights).
        quantization: ``"nf4"``, ``"fp4"`` or ``"int8"``: load the base weights quantized with
            bitsandbytes (needs ``lora``: quantized weights do not train).
        lora: LoRA adapters through peft, e.g. ``{r: 16, alpha: 32, target_modules: all-linear}``
            (any ``peft.LoraConfig`` field). Only the adapters train; the reference model is the
            same base with the adapters disabled. The saved model is the adapter.
        gradient_checkpointing: recompute activations in backward to save memory.
        trust_remote_code: run code shipped with the checkpoint.
        gguf_file: a GGUF file inside the directory or hub repo ``model`` (``model`` may also be
            a ``.gguf`` path); needs ``pip install "lit-unlearn[gguf]"``.
        evaluate_at_start: evaluate the starting model on the validation sets before the
            first step (logged at step 0, the "start" column of the summary).
        compare_with: the gold retain model: ``RunSummary`` evaluates it at the end of fit, and
            suites without their own gold model compare with it.
        suite: an evaluation suite (``TOFUSuite``, ``MUSESuite``) run by ``test`` on the test sets;
            the ``SuiteEvaluation`` callback runs it during fit.
        replay: a :class:`~lit_unlearn.methods.replay.GeneralReplay` (GeRe general-sample replay):
            ``replay.weight * replay_loss`` is added to the loss, logged as ``train/replay_loss``.

    The callback contract: what callbacks may read (R) or write (W) on a module, one name per meaning.

    - ``forget_weight``, ``retain_weight`` (R/W): γ and α (``DualVariable`` writes α).
    - ``sample_weights`` (W): per-forget-row weights ``[N_forget]`` with mean 1, indexed by
      ``batch["forget"]["index"]`` (``DataAttributionWeights``); used when ``uses_sample_weights``.
    - ``retain_grad_external`` (W): True while a callback adds the retain gradient itself
      (``GradientProjection``): the loss then carries the retain term detached.
    - ``last_objectives``, ``last_loss`` (R): the latest training step's :class:`Objectives`
      (with its graph until backward) and its total loss (``DivergenceGuard``).
    - ``retain_kind`` (R): what the retain term measures: ``"nll"``, ``"kl"``, a method's own
      (``"activation"``), or None without a retain term; :meth:`retain_objective` computes it.
    - ``eval_history`` (R): every evaluation, ``{"step", "<set>/<metric>": ...}``; ``summary``
      (R/W): the summary columns ``start``, ``end``, ``test``, ``gold`` (``RunSummary`` adds gold).
    - ``suite_result`` (R): the suite result of the last ``test`` run (``RunSummary`` writes it).
    - ``compare_with``, ``suite``, ``tokenizer``, ``model_path`` (R).
    """

    default_lr: ClassVar[float] = 1e-5
    uses_reference_model: ClassVar[bool] = False
    uses_reference_logps: ClassVar[bool] = False
    requires_retain: ClassVar[bool] = False
    uses_sample_weights: ClassVar[bool] = True
    adapts_retain_weight: ClassVar[bool] = False  # the method sets retain_weight itself
    retain_losses: ClassVar[tuple[str, ...]] = ("nll", "kl")
    supports_lora: ClassVar[bool] = True
    takes_optimizer_steps: ClassVar[bool] = True  # False: ICU, ModHiFi; training matrices skip it
    result_name: ClassVar[str] = "unlearned model"  # what fit makes, in messages ("fine-tuned model": FineTune)
    # Attributes kept in checkpoints, merged along the class hierarchy: a method lists its own.
    checkpoint_state: ClassVar[tuple[str, ...]] = ("ref_logps", "sample_weights", "summary", "eval_history",
                                                   "forget_weight", "retain_weight")
    # The README's methods table reads these two (see lit_unlearn.registry).
    forget_doc: ClassVar[str] = ""
    retain_doc: ClassVar[str] = "none"

    def __init__(self, model: str, tokenizer: str | None = None, optimizer: OptimizerCallable | None = None,
                 scheduler: LRSchedulerCallable | None = None, forget_weight: float = 1.0, retain_weight: float = 1.0,
                 dtype: str | None = None, quantization: str | None = None, lora: dict[str, Any] | None = None,
                 gradient_checkpointing: bool = False, trust_remote_code: bool = False, evaluate_at_start: bool = True,
                 compare_with: str | None = None, suite: EvalSuite | None = None,
                 gguf_file: str | None = None, replay: GeneralReplay | None = None) -> None:
        super().__init__()  # EvaluationHooks: eval_history, summary, suite_result, ...
        self.reduction = "example"  # of the NLL retain term; open-unlearning ports set "token"
        name = type(self).__name__
        checks.non_negative(name, "forget_weight", forget_weight)
        checks.non_negative(name, "retain_weight", retain_weight)
        for arg, value in (("evaluate_at_start", evaluate_at_start), ("gradient_checkpointing", gradient_checkpointing),
                           ("trust_remote_code", trust_remote_code)):
            checks.flag(name, arg, value)
        self.source = ModelSource(name, model, tokenizer, dtype, quantization, lora, gradient_checkpointing,
                                  trust_remote_code, self.supports_lora, gguf_file)
        if replay is not None and not isinstance(replay, GeneralReplay):
            raise TypeError(f"{name}: `replay` must be a GeneralReplay, got {type(replay).__name__}")
        if replay is not None and type(self).training_step is not UnlearningModule.training_step:
            raise ValueError(f"{name} takes its own training steps, which do not add a replay loss; remove `replay`")
        ignore = ["optimizer", "scheduler", "suite", "replay"] + (["model"] if isinstance(model, nn.Module) else [])
        self.save_hyperparameters(ignore=ignore)
        self.model: nn.Module | None = self.source.module
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.evaluate_at_start = evaluate_at_start
        self.compare_with = check_model_name(compare_with) if compare_with else None
        self.suite = suite
        self.forget_weight, self.retain_weight = float(forget_weight), float(retain_weight)
        self.sample_weights: Tensor | None = None
        self.retain_grad_external = False
        self.last_objectives: Objectives | None = None
        self.last_loss: Tensor | None = None
        self.retain_kind: str | None = "nll" if self.requires_retain else None
        self.ref_logps: Tensor | None = None  # [N_forget], cached reference log-probs
        self._lora_applied = False
        self._reference: ref.FrozenCopy | None = None
        self.replay = replay
        if replay is not None and replay.needs_reference_model:
            self.uses_reference_model = True  # θ0's logits on the replay batches

    # ------------------------------------------------------------------ model
    @property
    def lora(self) -> dict[str, Any] | None:
        """The ``lora`` options (None: full fine-tuning)."""
        return self.source.lora

    @property
    def quantization(self) -> str | None:
        return self.source.quantization

    @property
    def model_path(self) -> str | None:
        """Local directory or hub id of the starting model (a built-in one is built on first use)."""
        return self.source.path

    @property
    def tokenizer(self):
        return self.source.tokenizer

    def configure_model(self) -> None:
        """Load the model (once), add LoRA adapters if asked, and, for methods that need it, a
        frozen reference copy (not with LoRA: the reference is the base with adapters disabled)."""
        fitting = self._trainer is None or self.trainer.state.fn == "fit"  # test/validate evaluate as loaded
        if self.model is None:
            self.model = self.source.load(self._trainer, fitting)
        if self.lora is not None and not self._lora_applied and fitting:
            self.model = self.source.add_lora(self.model, self.lora_options(), self._trainer)
            self._lora_applied = True
        if self.uses_reference_model and self._reference is None and self.lora is None:
            self._reference = ref.FrozenCopy(self.model)

    def lora_options(self) -> dict[str, Any]:
        """The ``lora`` mapping passed to peft; methods may fill in defaults (RMU: its layers)."""
        return dict(self.lora or {})

    @property
    def reference_model(self) -> nn.Module:
        """The frozen starting model θ0 (eval mode, no grad), on the module's device and dtype."""
        if self._reference is None:
            raise RuntimeError(f"{type(self).__name__} has no reference model (uses_reference_model is False)")
        return self._reference.like(self.model)

    def adapters_disabled(self):
        """Within: the model computes the starting function (LoRA adapters off); a no-op without LoRA."""
        return ref.adapters_disabled(self.model, self._lora_applied)

    def trainable_parameters(self):
        return (p for p in self.model.parameters() if p.requires_grad)

    def configure_optimizers(self):
        params = list(self.trainable_parameters())
        factory = self.optimizer_factory or functools.partial(torch.optim.AdamW, lr=self.default_lr)
        optimizer = factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits ``[B, T, V]`` of the trained model on a ``TokenBatch``."""
        return ref.logits(self.model, batch)

    @torch.no_grad()
    def reference_logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits ``[B, T, V]`` of the starting model: the frozen copy, or with LoRA the same
        module with its adapters disabled."""
        if self._lora_applied:
            return ref.adapters_off_logits(self.model, batch)
        return ref.logits(self.reference_model, batch)

    def compute_logps(self, data) -> Tensor:
        """Summed answer log-probs ``[N]`` of every example of an encoded set, in order, with the current weights."""
        loader = self._datamodule().eval_dataloader(data, shard=False)
        return ref.answer_logprobs(self.model, loader, len(data), self.device, self.eval_context())

    # ------------------------------------------------------------------ training
    def objectives(self, batch: dict[str, Any]) -> Objectives:
        """Per-example forget (and retain) losses of a training batch. Methods implement this."""
        raise NotImplementedError

    def retain_term(self, retain: dict[str, Tensor] | None, kind: str = "nll") -> Tensor | None:
        """Per-example retain loss: answer NLL/|y| (``"nll"``; with ``self.reduction == "token"`` the
        token mean over the batch, :func:`~lit_unlearn.objectives.answer_nll`) or ``KL(ref ‖ θ)`` on
        answer tokens (``"kl"``)."""
        if retain is None:
            return None
        logits = self(retain)
        if kind == "nll":
            return answer_nll(logits, retain["labels"], self.reduction)
        return kl_to_reference(logits, self.reference_logits(retain), retain["labels"])

    def retain_objective(self, retain: dict[str, Tensor] | None) -> Tensor | None:
        """The per-example retain loss ``[B]`` this method's objectives use (``retain_kind``) on a
        retain ``TokenBatch`` (None for None): what ``DualVariable(tolerance=...)`` measures at the start."""
        return self.retain_term(retain, self.retain_kind or "nll")

    def has_retain_term(self) -> bool:
        """Whether :meth:`objectives` returns a retain loss (callbacks that need one check this)."""
        return self.retain_kind is not None

    def _check_retain_loss(self, kind: str) -> str:
        if kind not in self.retain_losses:
            raise ValueError(f"{type(self).__name__}: `retain_loss` must be one of {self.retain_losses}, got {kind!r}")
        if kind == "kl":
            self.uses_reference_model = True
        self.retain_kind = kind
        return kind

    def setup(self, stage: str) -> None:
        """Checks that need the datamodule, before the model is loaded or anything is evaluated."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        self._check_gold_data(dm)
        if self.suite is not None and stage == "test" and hasattr(dm, "records_for"):
            check_suite_sets(self.suite, dm.records_for("test"), "test_sets")

    def _check_gold_data(self, dm) -> None:
        """A built-in gold model (a method config's default) must be the one of the data: the embedded
        benchmarks name theirs as ``dm.gold_model``; with ``FictitiousPeople``, any split or size of the
        same family is accepted (a tiny preset with the small config's default)."""
        from lit_unlearn.datamodules.fictitious_people import FictitiousPeople

        gold = self.compare_with or ""
        if not (gold.startswith("builtin:") and "/retain" in gold):
            return
        expected = getattr(dm, "gold_model", None)
        if gold == expected:
            return
        family = lambda name: name.removeprefix("builtin:").partition("/")[0].rpartition("-")[0]  # noqa: E731
        if isinstance(dm, FictitiousPeople) and family(gold) == family(expected):
            return
        what = f"the gold retain model of this data is {expected!r}" if expected else \
            f"the data is {type(dm).__name__}, which has no built-in gold model"
        raise ValueError(f"{type(self).__name__}: `compare_with` is {gold!r}, a gold model of the embedded benchmark, "
                         f"but {what}; set "
                         "--model.init_args.compare_with to the model trained on your retain set, or null")

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if self.requires_retain and dm is not None and getattr(dm, "retain_set", True) is None:
            raise ValueError(f"{type(self).__name__} needs a retain set: pass `retain` to the datamodule")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        obj = self.objectives(batch)
        self.last_objectives = obj
        weights = None
        if self.sample_weights is not None:
            weights = self.sample_weights.to(obj.forget.device)[batch["forget"]["index"]]
        forget = weighted_mean(obj.forget, weights)
        loss = self.forget_weight * forget
        retain = obj.retain.mean() if obj.retain is not None else None
        if retain is not None:
            # GradientProjection takes the retain gradient itself; backward then skips that branch
            loss = loss + self.retain_weight * (retain.detach() if self.retain_grad_external else retain)
        if obj.penalty is not None:
            loss = loss + obj.penalty
        replay = self.replay(self) if self.replay is not None else None
        if replay is not None:
            loss = loss + self.replay.weight * replay
        self.last_loss = loss.detach()
        if self.should_log():
            # Every rank has these two on every step: averaged over ranks. The rest (a batch may
            # lack retain rows on one rank only) are rank 0's, so no collective can mismatch.
            synced = {"train/loss": loss, "train/forget_loss": forget}
            logs = {f"train/{k}": v for k, v in obj.logs.items()}
            if retain is not None:
                logs["train/retain_loss"] = retain
            if obj.penalty is not None:
                logs["train/penalty"] = obj.penalty
            if replay is not None:
                logs["train/replay_loss"] = replay
                logs.update({f"train/{k}": v for k, v in self.replay.logs.items()})
            self.log_dict({k: v.detach() for k, v in synced.items()}, sync_dist=self.trainer.world_size > 1)
            self.log_dict({k: torch.as_tensor(v).detach() for k, v in logs.items()})
            self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def should_log(self) -> bool:
        """Whether this step's ``self.log`` values reach the loggers (``log_every_n_steps``); skipping
        ``self.log`` (half a millisecond a call) on the other steps keeps the overhead near zero."""
        if self._trainer is None:
            return False
        try:
            return bool(self.trainer._logger_connector.should_update_logs)
        except (AttributeError, RuntimeError):
            return True

    def on_train_start(self) -> None:
        if self.ref_logps is not None:  # restored from a checkpoint, which Lightning loads on the CPU
            self.ref_logps = self.ref_logps.to(self.device)
        if self.uses_reference_logps and self.ref_logps is None:
            self.ref_logps = self.compute_logps(self._datamodule().forget_set)
        if self.replay is not None:
            self.replay.prepare(self)  # θ0's statistics on the replay texts, before the first step
        if self.evaluate_at_start and self.global_step == 0 and not self.summary.get("start"):
            self.summary["start"] = self.evaluate("val", step=0)

    def on_train_end(self) -> None:
        self.finish_evaluation()

    def _checkpoint_names(self) -> list[str]:
        classes = reversed(type(self).__mro__)
        return list(dict.fromkeys(n for cls in classes for n in vars(cls).get("checkpoint_state", ())))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lit_unlearn"] = {name: getattr(self, name) for name in self._checkpoint_names()}
        if self.replay is not None:
            checkpoint["lit_unlearn"]["replay"] = self.replay.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # test/validate from a LoRA run's checkpoint: add the adapters its weights belong to
        lora_weights = any("lora_" in k for k in checkpoint.get("state_dict", {}))
        if self.lora is not None and not self._lora_applied and lora_weights:
            self.model = apply_lora(self.model, self.lora_options())
            self._lora_applied = True
        state = checkpoint.get("lit_unlearn", {})
        for name in self._checkpoint_names():
            if name in state:
                setattr(self, name, state[name])
        if self.replay is not None and state.get("replay") is not None:
            self.replay.load_state_dict(state["replay"])

    # ------------------------------------------------------------------ saving (SavePretrained calls these)
    def write_pretrained(self, directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """Write the unlearned model into ``directory`` (rank 0, inside ``SavePretrained``'s temporary
        directory): ``save_pretrained`` weights, or the adapter with LoRA. Unlearning with LoRA from
        a saved adapter writes the merged weights (an adapter would point at the original base)."""
        model = self.model
        if self._lora_applied and self.source.is_adapter and self.quantization is None:
            model = self.model.merge_and_unload()
        save_causal_lm(model, directory, state_dict, self.quantization)


def check_suite_sets(suite: EvalSuite, records: dict[str, Any], data_option: str) -> None:
    """Raise, naming both options that fix it, when ``suite`` reads sets the datamodule lacks."""
    missing = [s for s in suite.required_sets() if s not in records]
    if not missing:
        return
    options = sorted({k for k, v in vars(suite).items() if not k.startswith("_") for s in missing
                      if v == s or (isinstance(v, (list, tuple)) and s in v)})
    cls = type(suite).__name__
    named = f" (named by its option(s) {', '.join(f'`{o}`' for o in options)})" if options else ""
    raise ValueError(f"{cls} reads the set(s) {missing}{named}, which the datamodule does not have (it has "
                     f"{sorted(records)}); add them to `data.init_args.{data_option}` or change "
                     f"`model.init_args.suite.init_args.{options[0] if options else '<option>'}`"
                     + (" (e.g. option_sets: [])" if "option_sets" in options else ""))
