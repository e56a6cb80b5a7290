"""``UnlearningModule``: the base class of every method.

A method writes one thing, :meth:`UnlearningModule.objectives`, returning per-example
forget and retain losses; the base class combines them as
``loss = forget_weight * mean(sample_weights * forget) + retain_weight * mean(retain) (+ penalty)``
and owns model loading, the frozen reference, optimisation, evaluation and saving.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lit_unlearn import checks
from lit_unlearn.evaluation import TeacherForcedMetrics
from lit_unlearn.evaluation.teacher_forced import evaluate_teacher_forced
from lit_unlearn.evaluation.suite import EvalSuite, SuiteResult
from lit_unlearn.evaluation.summary import format_summary, write_results
from lit_unlearn.models import (
    ADAPTER_INFO, DTYPES, QUANTIZATION, apply_lora, load_causal_lm, load_tokenizer, lora_config, quiet_transformers,
    resolve_model_path,
)
from lit_unlearn.objectives import kl_to_reference, nll, sequence_logprob, weighted_mean
from lit_unlearn.provenance import RUN_INFO, run_record, write_json
from lit_unlearn.utils import atomic_dir

SUMMARY_FILE = "lit_unlearn_summary.json"
# Weights dtype for a Trainer precision when `dtype` is not given; others (32-true, *-mixed) -> float32.
PRECISION_DTYPES = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}

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


class _EvalContext:
    """A re-enterable context: the Trainer's precision autocast, plus the FSDP root's gathered
    parameters when the strategy is FSDP (evaluation loops enter it once per batch)."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self._stacks: list[contextlib.ExitStack] = []

    def __enter__(self) -> None:
        from lightning.pytorch.strategies import FSDPStrategy

        with contextlib.ExitStack() as stack:  # if entering fails, what was entered is exited
            stack.enter_context(self.trainer.precision_plugin.forward_context())
            strategy = self.trainer.strategy
            if isinstance(strategy, FSDPStrategy) and strategy.model is not None:
                from torch.distributed.fsdp import FullyShardedDataParallel

                stack.enter_context(FullyShardedDataParallel.summon_full_params(strategy.model, recurse=False,
                                                                                writeback=False))
            self._stacks.append(stack.pop_all())

    def __exit__(self, *exc) -> bool | None:
        return self._stacks.pop().__exit__(*exc)


class _Frozen:
    """Holds a module without registering it, so it stays out of ``state_dict`` and checkpoints."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module


class UnlearningModule(LightningModule):
    """Base class of the unlearning methods.

    Args:
        model: local directory, hub id, or built-in name (``builtin:small/subject``).
        tokenizer: tokenizer name or path; default the model's.
        optimizer: optimizer factory; default ``AdamW`` with the method's published lr.
        scheduler: learning-rate scheduler factory (stepped every optimizer step).
        forget_weight: γ, weight of the forget term (callbacks may change it).
        retain_weight: α, weight of the retain term (callbacks may change it).
        dtype: weights dtype (``"float32"``, ``"bfloat16"``, ``"float16"``); default from the
            Trainer's ``precision``: ``bf16-true`` -> bfloat16, ``16-true`` -> float16, otherwise
            float32 (mixed precision keeps float32 master weights).
        quantization: ``"nf4"``, ``"fp4"`` or ``"int8"``: load the base weights quantized with
            bitsandbytes (needs ``lora``: quantized weights do not train).
        lora: LoRA adapters through peft, e.g. ``{r: 16, alpha: 32, target_modules: all-linear}``
            (any ``peft.LoraConfig`` field). Only the adapters train; the reference model is the
            same base with the adapters disabled, so no second copy of the weights is kept. The
            saved model is the adapter (``load_causal_lm`` on it loads base + adapter).
        gradient_checkpointing: recompute activations in backward to save memory.
        trust_remote_code: run code shipped with the checkpoint.
        evaluate_at_start: evaluate the starting model on the validation sets before the
            first step (logged at step 0, the "start" column of the summary).
        compare_with: a model (e.g. the gold retain model) evaluated on the same sets at the
            end of fit, shown beside start and end in the summary.
        suite: an evaluation suite (``TOFUSuite``, ``MUSESuite``) run by ``test`` on the test
            sets, which writes ``results.json`` and ``results.md`` beside the logs; the
            ``SuiteEvaluation`` callback runs it during fit.
        save_dir: where to save the unlearned model at the end of fit; default
            ``<log_dir>/model``. ``save_model=False`` skips saving.
    """

    default_lr: ClassVar[float] = 1e-5
    uses_reference_model: ClassVar[bool] = False
    uses_reference_logps: ClassVar[bool] = False
    requires_retain: ClassVar[bool] = False
    retain_losses: ClassVar[tuple[str, ...]] = ("nll", "kl")
    supports_lora: ClassVar[bool] = True

    def __init__(
        self,
        model: str,
        tokenizer: str | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        forget_weight: float = 1.0,
        retain_weight: float = 1.0,
        dtype: str | None = None,
        quantization: str | None = None,
        lora: dict[str, Any] | None = None,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        evaluate_at_start: bool = True,
        compare_with: str | None = None,
        suite: EvalSuite | None = None,
        save_model: bool = True,
        save_dir: str | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        checks.non_negative(name, "forget_weight", forget_weight)
        checks.non_negative(name, "retain_weight", retain_weight)
        for arg, value in (("evaluate_at_start", evaluate_at_start), ("gradient_checkpointing", gradient_checkpointing),
                           ("trust_remote_code", trust_remote_code), ("save_model", save_model)):
            checks.flag(name, arg, value)
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"{name}: `dtype` must be one of {sorted(DTYPES)} or null, got {dtype!r}")
        if quantization is not None and quantization not in QUANTIZATION:
            raise ValueError(f"{name}: `quantization` must be one of {list(QUANTIZATION)} or null, got {quantization!r}")
        if lora is not None and not isinstance(lora, dict):
            raise ValueError(f"{name}: `lora` must be a mapping of peft LoraConfig fields (r, alpha, target_modules, "
                             f"...), got {lora!r}")
        if lora is not None:
            lora_config(lora)  # unknown fields fail here, before any work
        if quantization and isinstance(model, nn.Module):
            raise ValueError(f"{name}: `quantization` needs `model` as a name or path (it is applied while loading); "
                             "quantize the module yourself or pass its directory")
        if (quantization or lora is not None) and not self.supports_lora:
            raise ValueError(f"{name} does not support `quantization`/`lora` (it edits full-precision base weights)")
        if quantization and lora is None:
            raise ValueError(f"{name}: `quantization`={quantization!r} needs `lora` (quantized weights cannot be "
                             "trained directly), e.g. lora: {r: 16}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "suite"] + (["model"] if isinstance(model, nn.Module) else []))
        if isinstance(model, nn.Module):  # a model object, for use from Python
            self.model_path, self.model = None, model
        else:
            self.model_path, self.model = resolve_model_path(model), None
        self.tokenizer_name = tokenizer
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.forget_weight, self.retain_weight = float(forget_weight), float(retain_weight)
        self.dtype_name, self.gradient_checkpointing, self.trust_remote_code = dtype, gradient_checkpointing, trust_remote_code
        self.quantization, self.lora = quantization, dict(lora) if lora is not None else None
        self._lora_applied = False
        # A saved adapter as the starting model is merged on load; what is saved must then hold the
        # merged weights (an adapter would point at the original base and drop the first adapter).
        self._start_is_adapter = bool(self.model_path) and (Path(self.model_path) / "adapter_config.json").is_file()
        self.evaluate_at_start = evaluate_at_start
        self.compare_with = resolve_model_path(compare_with) if compare_with else None
        self.suite = suite
        self.save_model, self.save_dir = save_model, save_dir
        self.sample_weights: Tensor | None = None  # [N_forget], mean 1; set by callbacks
        self.retain_grad_external = False  # True: a callback adds the retain gradient (GradientProjection)
        self.ref_logps: Tensor | None = None  # [N_forget], cached reference log-probs
        self.eval_metrics = nn.ModuleDict()
        self.summary: dict[str, dict[str, float]] = {}
        self.eval_history: list[dict[str, float]] = []  # {"step", "<set>/<metric>": ...} per evaluation
        self._tokenizer = None
        self._reference: _Frozen | None = None
        self._last_eval_step = -1
        self._fit_started = 0.0
        self.last_objectives: Objectives | None = None
        self.last_loss: Tensor | None = None  # of the latest training step (DivergenceGuard reads it)
        self.run_info: dict[str, Any] = {}  # versions, seed, data fingerprint (written beside logs and model)
        self.saved_path: str | None = None

    # ------------------------------------------------------------------ model
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            source = self.tokenizer_name or self.model_path
            if source is None:
                raise ValueError(f"{type(self).__name__}: pass `tokenizer` when `model` is a module object")
            self._tokenizer = load_tokenizer(source, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def model_dtype(self) -> torch.dtype | None:
        """``dtype``, or the one the Trainer's precision implies (None: keep the checkpoint's)."""
        if self.dtype_name is not None:
            return DTYPES[self.dtype_name]
        precision = str(getattr(self._trainer, "precision", "")) if self._trainer is not None else ""
        return PRECISION_DTYPES.get(precision, torch.float32 if precision else None)

    def configure_model(self) -> None:
        """Load the model (once), add LoRA adapters if asked, and, for methods that need it, a
        frozen reference copy (not with LoRA: the reference is the base with adapters disabled)."""
        fitting = self._trainer is None or self.trainer.state.fn == "fit"  # test/validate evaluate as loaded
        if self.model is None:
            # A saved adapter is evaluated on the base quantized as it was trained; unlearning from
            # it starts from the base in the requested precision (full when `quantization` is null).
            self.model = load_causal_lm(self.model_path, dtype=self.model_dtype(), trust_remote_code=self.trust_remote_code,
                                        gradient_checkpointing=self.gradient_checkpointing,
                                        quantization=self.quantization, adapter_quantization=not fitting)
        if self.lora is not None and not self._lora_applied and fitting:
            from lightning.pytorch.strategies import FSDPStrategy
            from peft import PeftModel

            if self._start_is_adapter and self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy):
                raise ValueError(f"{type(self).__name__}: unlearning with `lora` from a saved adapter under FSDP is not "
                                 "supported (the result must be merged on gathered weights); merge the adapter first")
            if isinstance(self.model, PeftModel):
                raise ValueError(f"{type(self).__name__}: the model already carries a LoRA adapter on a quantized base "
                                 f"({self.model_path}); start from its full-precision base merged with the adapter, "
                                 "or unlearn without `lora`/`quantization`")
            self.model = apply_lora(self.model, self.lora_options())
            self._lora_applied = True
        if self.uses_reference_model and self._reference is None and self.lora is None:
            ref = copy.deepcopy(self.model).eval().requires_grad_(False)
            self._reference = _Frozen(ref)

    def lora_options(self) -> dict[str, Any]:
        """The ``lora`` mapping passed to peft; methods may fill in defaults (RMU: its layers)."""
        return dict(self.lora or {})

    @property
    def reference_model(self) -> nn.Module:
        """The frozen starting model θ0 (eval mode, no grad), on the module's device and dtype."""
        if self._reference is None:
            raise RuntimeError(f"{type(self).__name__} has no reference model (uses_reference_model is False)")
        ref = self._reference.module
        param, ref_param = next(self.model.parameters()), next(ref.parameters())
        if ref_param.device != param.device or (ref_param.dtype != param.dtype and param.is_floating_point()):
            ref.to(device=param.device, dtype=param.dtype if param.is_floating_point() else None)
        return ref

    @contextlib.contextmanager
    def adapters_disabled(self):
        """Within: the model computes the starting function (LoRA adapters off); a no-op without LoRA."""
        if not self._lora_applied:
            yield
            return
        with self.model.disable_adapter():
            yield

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def configure_optimizers(self):
        params = list(self.trainable_parameters())
        if self.optimizer_factory is None:
            optimizer = torch.optim.AdamW(params, lr=self.default_lr)
        else:
            optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits ``[B, T, V]`` of the trained model on a ``TokenBatch``."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits

    @torch.no_grad()
    def reference_logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits ``[B, T, V]`` of the starting model: the frozen copy, or with LoRA the same
        module with its adapters disabled."""
        inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        if self._lora_applied:
            was_training = self.model.training
            self.model.eval()
            try:
                with self.adapters_disabled():
                    return self.model(**inputs).logits
            finally:
                self.model.train(was_training)
        return self.reference_model(**inputs).logits

    # ------------------------------------------------------------------ training
    def objectives(self, batch: dict[str, Any]) -> Objectives:
        """Per-example forget (and retain) losses of a training batch. Methods implement this."""
        raise NotImplementedError

    def retain_term(self, retain: dict[str, Tensor] | None, kind: str = "nll") -> Tensor | None:
        """Per-example retain loss: answer NLL/|y| (``"nll"``) or ``KL(ref ‖ θ)`` on answer tokens (``"kl"``)."""
        if retain is None:
            return None
        logits = self(retain)
        if kind == "nll":
            return nll(logits, retain["labels"])
        return kl_to_reference(logits, self.reference_logits(retain), retain["labels"])

    def _check_retain_loss(self, kind: str) -> str:
        if kind not in self.retain_losses:
            raise ValueError(f"{type(self).__name__}: `retain_loss` must be one of {self.retain_losses}, got {kind!r}")
        if kind == "kl":
            self.uses_reference_model = True
        return kind

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()
        dm = getattr(self.trainer, "datamodule", None)
        if self.requires_retain and dm is not None and getattr(dm, "retain_set", True) is None:
            raise ValueError(f"{type(self).__name__} needs a retain set: pass `retain` to the datamodule")
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if self.trainer.is_global_zero:  # only rank 0 writes it (here and beside the saved model)
            self.run_info = run_record(self, dm)
        if self.trainer.is_global_zero and log_dir and self.loggers:
            write_json(Path(log_dir) / RUN_INFO, self.run_info)

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
            self.log_dict({k: v.detach() for k, v in synced.items()}, sync_dist=self.trainer.world_size > 1)
            self.log_dict({k: torch.as_tensor(v).detach() for k, v in logs.items()})
            self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def should_log(self) -> bool:
        """Whether this step's ``self.log`` values reach the loggers (``log_every_n_steps``).

        ``self.log`` costs about half a millisecond a call; skipping it on the steps Lightning
        would not log anyway keeps the library's per-step overhead near zero.
        """
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
        if self.evaluate_at_start and self.global_step == 0 and not self.summary.get("start"):
            self.summary["start"] = self.evaluate("val", step=0)

    @torch.no_grad()
    def compute_logps(self, data) -> Tensor:
        """Summed answer log-probs ``[N]`` of every example of an encoded set, in order, with the current weights."""
        dm = self._datamodule()
        out = torch.empty(len(data), device=self.device)
        was_training = self.model.training
        self.model.eval()
        loader = dm.eval_dataloader(data, shard=False)
        with self.eval_context():
            for batch in loader:
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out[batch["index"]] = sequence_logprob(self(batch), batch["labels"])[0].float()
        self.model.train(was_training)
        return out

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lit_unlearn"] = {
            "ref_logps": self.ref_logps, "sample_weights": self.sample_weights, "summary": self.summary,
            "eval_history": self.eval_history,
            "forget_weight": self.forget_weight, "retain_weight": self.retain_weight,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # test/validate from a LoRA run's checkpoint: add the adapters its weights belong to
        if self.lora is not None and not self._lora_applied and any("lora_" in k for k in checkpoint.get("state_dict", {})):
            self.model = apply_lora(self.model, self.lora_options())
            self._lora_applied = True
        state = checkpoint.get("lit_unlearn", {})
        self.ref_logps, self.sample_weights = state.get("ref_logps"), state.get("sample_weights")
        self.summary = state.get("summary", {}) or {}
        self.eval_history = list(state.get("eval_history", []))
        self.forget_weight = state.get("forget_weight", self.forget_weight)
        self.retain_weight = state.get("retain_weight", self.retain_weight)

    # ------------------------------------------------------------------ evaluation
    def eval_context(self) -> _EvalContext:
        """For forward passes outside Lightning's loops (caching, evaluation): the precision
        plugin's autocast and, under FSDP, the root's parameters gathered (read-only).
        Reusable: each ``with`` enters both afresh."""
        return _EvalContext(self.trainer)

    def _datamodule(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "forget_set"):
            raise RuntimeError(f"{type(self).__name__} needs a ForgetRetainDataModule (got {type(dm).__name__})")
        return dm

    def _set_names(self, stage: str) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None)
        names = getattr(dm, f"{stage}_set_names", None)
        if names is None:
            loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
            n = len(loaders) if isinstance(loaders, (list, tuple)) else 1
            names = [f"{stage}{i}" for i in range(n)]
        return names

    def _metric(self, name: str) -> TeacherForcedMetrics:
        key = name.replace(".", "_")
        if key not in self.eval_metrics:
            self.eval_metrics[key] = TeacherForcedMetrics().to(self.device)
        return self.eval_metrics[key]

    def _eval_batch(self, batch: dict[str, Tensor], name: str) -> None:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        self._metric(name).update(logits, batch["labels"], batch.get("fact_mask"), batch.get("has_fact"))

    def _compute(self, names: list[str]) -> dict[str, float]:
        results = {}
        for name in names:
            metric = self._metric(name)
            if metric.update_count:
                results.update({f"{name}/{k}": float(v) for k, v in metric.compute().items()})
            metric.reset()
        return results

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch(batch, self._set_names("val")[dataloader_idx])

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch(batch, self._set_names("test")[dataloader_idx])

    def on_validation_epoch_end(self) -> None:
        results = self._compute(self._set_names("val"))
        if self.trainer.sanity_checking:
            return
        self._log_eval(results, self.global_step)
        self._last_eval_step = self.global_step
        if self.trainer.state.fn == "fit":
            self.summary["end"] = results

    def on_test_start(self) -> None:
        # Testing a saved unlearned model: show the start and gold columns it was saved with.
        saved = Path(self.model_path or "") / SUMMARY_FILE
        if not self.summary and self.model_path and saved.is_file():
            stored = json.loads(saved.read_text())
            self.summary.update({k: v for k, v in stored.items() if k in ("start", "gold")})

    def on_test_epoch_end(self) -> None:
        results = self._compute(self._set_names("test"))
        suite_result = None
        if self.suite is not None:
            suite_result = self.run_suite("test")
            results.update(suite_result.metrics)
        self.log_dict(results, add_dataloader_idx=False)
        self.summary["test"] = results
        log_dir = Path(self.trainer.log_dir or ".")  # a collective under DDP: every rank asks
        if suite_result is not None and self.trainer.is_global_zero:
            write_results(log_dir, results, suite_result.stats, self.model_path, type(self.suite).__name__,
                          self.summary)
        self.print_summary("test")

    def run_suite(self, stage: str = "test", suite: EvalSuite | None = None) -> SuiteResult:
        """Run ``suite`` (default ``self.suite``) on the trained model over the datamodule's sets.

        A suite without its own gold model compares with ``compare_with``."""
        suite = suite or self.suite
        if suite is None:
            raise ValueError(f"{type(self).__name__}: no evaluation suite; pass `suite` (e.g. TOFUSuite)")
        return suite.run(self.model, self.tokenizer, self._datamodule(), stage,
                         context=self.eval_context(), default_gold=self.compare_with)

    @torch.no_grad()
    def evaluate(self, stage: str = "val", step: int | None = None, model: nn.Module | None = None) -> dict[str, float]:
        """Teacher-forced metrics of ``model`` (default: the trained model) on the datamodule's
        validation or test sets, outside Lightning's loops; logged at ``step`` if given."""
        dm = self._datamodule()
        sets = dm.eval_encoded if stage == "val" else dm.test_encoded
        model = model if model is not None else self.model
        results = {}
        for name, data in sets.items():
            metrics = evaluate_teacher_forced(model, dm.eval_dataloader(data), self.device,
                                              self.eval_context())
            results.update({f"{name}/{k}": v for k, v in metrics.items()})
        if step is not None:
            self._log_eval(results, step)
        return results

    def _log_eval(self, results: dict[str, float], step: int) -> None:
        """Log evaluation results at ``step`` = optimizer steps taken (0 = the starting model).

        Lightning would log them one step earlier; the loggers get them directly, and
        ``callback_metrics`` (for ``ModelCheckpoint(monitor=...)``) through ``self.log``.
        """
        self.eval_history.append({"step": step, **results})
        if self._current_fx_name == "on_validation_epoch_end":
            self.log_dict(results, logger=False, add_dataloader_idx=False)
        else:
            self.trainer.callback_metrics.update({k: torch.tensor(v) for k, v in results.items()})
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(results, step=step)

    def on_train_end(self) -> None:
        if self._last_eval_step != self.global_step and self._datamodule().eval_encoded:
            self.summary["end"] = self.evaluate("val", step=self.global_step)
        if self.compare_with:
            gold = load_causal_lm(self.compare_with, dtype=next(self.model.parameters()).dtype).to(self.device)
            self.summary["gold"] = self.evaluate("val", model=gold)
            del gold
        if self.save_model:
            self.save(self.save_dir or str(Path(self.trainer.log_dir or ".") / "model"))
        self.print_summary("fit")

    # ------------------------------------------------------------------ output
    def full_state_dict(self) -> dict[str, Tensor] | None:
        """The model's full state dict gathered on rank 0 under FSDP (whatever its configured
        ``state_dict_type``), else None (the model holds its whole weights). A collective under
        FSDP: every rank must call it. DeepSpeed ZeRO-3 partitions weights: refused."""
        from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

        strategy = self.trainer.strategy
        if isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3:
            raise NotImplementedError("Saving the unlearned model under DeepSpeed ZeRO-3 is not supported; use FSDP "
                                      "(configs/strategies/fsdp.yaml) or ZeRO stage 1/2, or set save_model: false")
        if not isinstance(strategy, FSDPStrategy):
            return None
        from lightning.fabric.strategies.fsdp import _get_full_state_dict_context

        with _get_full_state_dict_context(strategy.model, world_size=strategy.world_size):
            state = strategy.model.state_dict()
        return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}

    def save(self, path: str) -> None:
        """Save model and tokenizer with ``save_pretrained`` (safetensors), atomically, from rank 0.

        With LoRA the adapter is saved (``adapter_config.json`` names the base model by absolute
        path; ``load_causal_lm`` loads both). Under FSDP the full weights are gathered first."""
        state = self.full_state_dict()
        if self.trainer.is_global_zero:
            with atomic_dir(path) as tmp, quiet_transformers():
                extra = {"state_dict": state} if state is not None else {}
                model = self.model
                if self._lora_applied and self._start_is_adapter and self.quantization is None:
                    model = self.model.merge_and_unload()  # see __init__: save the merged weights
                model.save_pretrained(tmp, safe_serialization=True, **extra)
                if (Path(tmp) / "adapter_config.json").is_file():
                    _absolute_base_path(Path(tmp) / "adapter_config.json")
                    (Path(tmp) / ADAPTER_INFO).write_text(json.dumps({"quantization": self.quantization}))
                self.tokenizer.save_pretrained(tmp)
                if self.summary:
                    (Path(tmp) / SUMMARY_FILE).write_text(json.dumps(self.summary, indent=2))
                if self.run_info:
                    write_json(Path(tmp) / RUN_INFO, self.run_info)
            rank_zero_info(f"Saved the unlearned model to {path}")
        self.trainer.strategy.barrier("lit_unlearn_save")
        self.saved_path = path

    def print_summary(self, stage: str) -> None:
        if not self.trainer.is_global_zero:
            return
        text = format_summary(self.summary, stage, seconds=time.perf_counter() - self._fit_started if stage == "fit" else None)
        if text:
            print(text, flush=True)


def _absolute_base_path(config_file: Path) -> None:
    """Point a saved adapter at its base model by absolute path when the base is a local directory."""
    config = json.loads(config_file.read_text())
    base = config.get("base_model_name_or_path")
    if base and Path(base).is_dir():
        config["base_model_name_or_path"] = str(Path(base).resolve())
        config_file.write_text(json.dumps(config, indent=2))
