import torch
from lightning.pytorch import Callback
from transformers import AutoModelForCausalLM

from lit_unlearn import REGLU, SavePretrained
from lit_unlearn.methods.reglu import orthogonality_penalty, top_eigenvectors
from tests.helpers import adamw
from tests.helpers.training import fit_quick, saved_logits


class StartLogits(Callback):
    def on_train_start(self, trainer, module):  # after the adapters were initialised, before any step
        data = trainer.datamodule
        self.batch = next(iter(data.eval_dataloader(data.forget_set, batch_size=8, shard=False)))
        with torch.no_grad():
            self.logits = module.model(input_ids=self.batch["input_ids"],
                                       attention_mask=self.batch["attention_mask"]).logits
        self.lora_b = [m.lora_B["default"].weight.clone() for m in module.lora_layers().values()]


def test_function_unchanged_at_step_0_and_adapters_train(tiny_subject, tmp_path):
    probe = StartLogits()
    module = REGLU(model=tiny_subject, rank=4, lora_alpha=8.0, optimizer=adamw(1e-3), evaluate_at_start=False)
    fit_quick(module, steps=3, callbacks=[probe, SavePretrained(dirpath=str(tmp_path / "model"))])
    expected = saved_logits(tiny_subject, probe.batch)
    # fp32 noise only (logits up to ~8; the thread count changes the summation order): 5e-5, where an
    # adapter whose B A were not subtracted from W0 moves the logits by more than 1e-2
    assert (probe.logits - expected).abs().max() < 5e-5
    assert any(b.abs().max() > 0 for b in probe.lora_b)  # B = Q, not zeros
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # merged
    assert not any("lora" in n for n, _ in saved.named_parameters())
    reloaded = saved_logits(tmp_path / "model", probe.batch)
    with torch.no_grad():
        now = module.model(input_ids=probe.batch["input_ids"], attention_mask=probe.batch["attention_mask"]).logits
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
    module = REGLU(model=tiny_subject, rank=4, lora_alpha=8.0, save_merged=False, evaluate_at_start=False)
    fit_quick(module, steps=1, callbacks=[SavePretrained(dirpath=str(tmp_path / "m"))])
    assert (tmp_path / "m" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "m" / "base" / "model.safetensors").exists()
    assert not (tmp_path / "m" / "model.safetensors").exists()  # not merged
