from functools import partial

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from transformers import AutoModelForCausalLM

from lit_unlearn import REGLU, FictitiousPeople
from lit_unlearn.methods.reglu import orthogonality_penalty, top_eigenvectors


class StartLogits(Callback):
    def on_train_start(self, trainer, module):  # after the adapters were initialised, before any step
        data = trainer.datamodule
        self.batch = next(iter(data.eval_dataloader(data.forget_set, batch_size=8, shard=False)))
        with torch.no_grad():
            self.logits = module.model(input_ids=self.batch["input_ids"], attention_mask=self.batch["attention_mask"]).logits
        self.lora_b = [m.lora_B["default"].weight.clone() for m in module.lora_layers().values()]


def test_function_unchanged_at_step_0_and_adapters_train(tiny_subject, tmp_path):
    seed_everything(0)
    probe = StartLogits()
    module = REGLU(model=tiny_subject, rank=4, lora_alpha=8.0, optimizer=partial(torch.optim.AdamW, lr=1e-3),
                   save_dir=str(tmp_path / "model"), evaluate_at_start=False)
    Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, callbacks=[probe]).fit(
        module, datamodule=FictitiousPeople("tiny", batch_size=4))
    base = AutoModelForCausalLM.from_pretrained(tiny_subject).eval()
    with torch.no_grad():
        expected = base(input_ids=probe.batch["input_ids"], attention_mask=probe.batch["attention_mask"]).logits
    assert (probe.logits - expected).abs().max() < 1e-5
    assert any(b.abs().max() > 0 for b in probe.lora_b)  # B = Q, not zeros
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # merged
    assert not any("lora" in n for n, _ in saved.named_parameters())
    with torch.no_grad():
        now = module.model(input_ids=probe.batch["input_ids"], attention_mask=probe.batch["attention_mask"]).logits
        reloaded = saved(input_ids=probe.batch["input_ids"], attention_mask=probe.batch["attention_mask"]).logits
    assert torch.allclose(now, reloaded, atol=1e-5) and not torch.allclose(now, expected, atol=1e-3)


def test_penalty_is_zero_for_b_orthogonal_to_the_retain_subspace():
    torch.manual_seed(0)
    c = torch.randn(10, 10, dtype=torch.float64)
    q_ret = top_eigenvectors(c @ c.T, 4).float()  # [10, 4]
    complement = torch.linalg.qr(torch.eye(10) - q_ret @ q_ret.T)[0][:, :3]  # spans directions orthogonal to q_ret
    b = complement - q_ret @ (q_ret.T @ complement)
    assert orthogonality_penalty([b], [q_ret]).item() < 1e-10
    inside = q_ret[:, :2]
    assert orthogonality_penalty([inside], [q_ret]).item() > 1.0


def test_adapter_save_option(tiny_subject, tmp_path):
    seed_everything(0)
    module = REGLU(model=tiny_subject, rank=4, lora_alpha=8.0, save_merged=False, save_dir=str(tmp_path / "m"),
                   evaluate_at_start=False)
    Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0).fit(module, datamodule=FictitiousPeople("tiny", batch_size=4))
    assert (tmp_path / "m" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "m" / "base" / "model.safetensors").exists()
