"""In-process training helpers: one quiet Trainer, one fit, one recorder."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
             num_sanity_val_steps=0)


def quiet_trainer(**kw: Any) -> Trainer:
    """A Trainer with no logger, checkpoints, progress bar, model summary or sanity check (each overridable)."""
    return Trainer(**{**QUIET, **kw})


def adamw(lr: float = 1e-3, **kw: Any):
    """An optimizer factory for a method's ``optimizer`` argument."""
    return partial(torch.optim.AdamW, lr=lr, **kw)


def tiny_data(**kw: Any):
    """The tiny preset of the embedded benchmark (forget10), batch 4 unless given."""
    from lit_unlearn import FictitiousPeople

    return FictitiousPeople("tiny", **{"batch_size": 4, **kw})


class Recorder(Callback):
    """Keeps every training step's loss, the module's ``last_objectives`` and the forget row ids."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.objectives: list[Any] = []
        self.indices: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        self.objectives.append(pl_module.last_objectives)
        self.indices.append(batch["forget"]["index"].cpu())


def fit(module, data=None, steps: int | None = 3, callbacks=(), seed: int = 0, **trainer_kw: Any):
    """Seed, then fit ``module`` on ``data`` (default :func:`tiny_data`) with a quiet Trainer and a
    :class:`Recorder`; returns ``(trainer, recorder)``. ``steps=None`` leaves ``max_steps`` to ``trainer_kw``."""
    seed_everything(seed, verbose=False)
    recorder = Recorder()
    kw = {"max_steps": steps if steps is not None else -1, "callbacks": [*callbacks, recorder], **trainer_kw}
    trainer = quiet_trainer(**kw)
    trainer.fit(module, datamodule=data if data is not None else tiny_data())
    return trainer, recorder


def fit_quick(module, steps: int | None = 3, batch_size: int = 4, callbacks=(), **trainer_kw: Any):
    """:func:`fit` on the tiny preset evaluating the forget set only, and only at the end of fit
    (no validation loop): the short run most method tests need. Returns ``(trainer, recorder)``."""
    return fit(module, tiny_data(batch_size=batch_size, eval_sets=["forget"]), steps=steps, callbacks=callbacks,
               **{"limit_val_batches": 0, **trainer_kw})


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def first_batch(split: str = "forget", batch_size: int | None = None, data=None) -> dict[str, torch.Tensor]:
    """The first in-order, unsharded evaluation batch of ``data``'s ``split`` set (``"forget"``,
    ``"retain"``); ``data`` defaults to :func:`tiny_data` with the forget evaluation set only and
    is set up here. ``batch_size`` None: the whole set in one batch."""
    data = data if data is not None else tiny_data(eval_sets=["forget"])
    data.setup()
    rows = getattr(data, f"{split}_set")
    return next(iter(data.eval_dataloader(rows, batch_size=batch_size or len(rows), shard=False)))


@torch.no_grad()
def saved_logits(model_dir: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits ``[B, T, V]`` on a token batch of the model saved in ``model_dir`` (loaded afresh, eval mode):
    the starting model a method's reference must equal, or what a saved run loads back as."""
    from lit_unlearn import load_causal_lm

    model = load_causal_lm(str(model_dir)).eval()
    return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits


def save_random_llama(tokenizer, path, positions: int = 128) -> str:
    """A randomly initialised 2-layer, 32-wide Llama (seed 0) with ``tokenizer``, saved to ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=positions,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
