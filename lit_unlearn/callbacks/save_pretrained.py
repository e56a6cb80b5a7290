"""``SavePretrained``: write the unlearned model at the end of fit, in ``save_pretrained`` format."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lit_unlearn import checks
from lit_unlearn.callbacks.summary import SUMMARY_FILE, RunSummary
from lit_unlearn.models import quiet_transformers
from lit_unlearn.provenance import RUN_INFO, run_record, write_json
from lit_unlearn.utils import atomic_dir


def full_state_dict(trainer: Trainer) -> dict[str, Tensor] | None:
    """The model's full state dict gathered on rank 0 under FSDP (whatever its configured
    ``state_dict_type``), else None (the model holds its whole weights). A collective under
    FSDP: every rank must call it. DeepSpeed ZeRO-3 partitions weights: refused."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    strategy = trainer.strategy
    if isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3:
        raise NotImplementedError("Saving the unlearned model under DeepSpeed ZeRO-3 is not supported; use FSDP "
                                  "(configs/strategies/fsdp.yaml) or ZeRO stage 1/2, or disable SavePretrained")
    if not isinstance(strategy, FSDPStrategy):
        return None
    from lightning.fabric.strategies.fsdp import _get_full_state_dict_context

    with _get_full_state_dict_context(strategy.model, world_size=strategy.world_size):
        state = strategy.model.state_dict()
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


class SavePretrained(Callback):
    """Saves the unlearned model and its tokenizer at the end of fit (rank 0), loadable with
    ``AutoModelForCausalLM.from_pretrained`` or :func:`lit_unlearn.load_causal_lm`.

    The directory is written to a temporary sibling and renamed into place, so a failed save
    leaves nothing. It holds the weights as safetensors (with LoRA: the adapter, whose config
    names the base model by absolute path; under FSDP the full weights are gathered first),
    the tokenizer, ``run_info.json`` and ``lit_unlearn_summary.json`` (the start, end and gold
    columns, which ``lit-unlearn test`` shows again). What the weights are is the module's
    :meth:`~lit_unlearn.methods.UnlearningModule.write_pretrained`. ``lit-unlearn`` adds this
    callback to every run (``--save_pretrained.dirpath``, ``--save_pretrained.enabled false``).

    Args:
        dirpath: where to save; default ``<log_dir>/model``.
        enabled: False saves nothing (the callback stays listed, e.g. in a shipped config).
    """

    def __init__(self, dirpath: str | None = None, enabled: bool = True) -> None:
        checks.flag("SavePretrained", "enabled", enabled)
        self.dirpath, self.enabled = dirpath, enabled
        self.saved_path: str | None = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled:
            return
        pl_module.finish_evaluation()
        for callback in trainer.callbacks:  # the gold column belongs in the saved summary, whatever the order
            if isinstance(callback, RunSummary):
                callback.evaluate_gold(trainer, pl_module)
        path = self.dirpath or str(Path(trainer.log_dir or trainer.default_root_dir) / "model")  # a collective
        self.save(trainer, pl_module, path)

    def save(self, trainer: Trainer, pl_module: LightningModule, path: str) -> None:
        """Write the model to ``path`` now (every rank calls it)."""
        state = full_state_dict(trainer)
        if trainer.is_global_zero:
            with atomic_dir(path) as tmp:
                pl_module.write_pretrained(tmp, state)
                with quiet_transformers():
                    pl_module.tokenizer.save_pretrained(tmp)
                if pl_module.summary:
                    (tmp / SUMMARY_FILE).write_text(json.dumps(pl_module.summary, indent=2))
                write_json(tmp / RUN_INFO, run_record(pl_module, trainer.datamodule))
            rank_zero_info(f"Saved the {getattr(pl_module, 'result_name', 'model')} to {path}")
        trainer.strategy.barrier("lit_unlearn_save")
        self.saved_path = path
