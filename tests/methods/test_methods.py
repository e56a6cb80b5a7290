import math
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from transformers import AutoModelForCausalLM

from lit_unlearn import NPO, FictitiousPeople, FineTune, ForgetRetainDataModule, GradAscent, GradDiff, SimNPO
from lit_unlearn.objectives import nll


class Recorder(Callback):
    """Keeps every step's loss and the module's per-example objectives."""

    def __init__(self):
        self.losses, self.objectives = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.objectives.append(module.last_objectives)


def fit(module, data, tmp_path, steps=6, **trainer_kw):
    seed_everything(0)
    rec = Recorder()
    kw = dict(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, callbacks=[rec])
    kw.update(trainer_kw)
    trainer = Trainer(**kw)
    trainer.fit(module, datamodule=data)
    return trainer, rec


def adamw(lr):
    return partial(torch.optim.AdamW, lr=lr)


@pytest.mark.parametrize("cls,kw", [
    (GradAscent, {}), (GradDiff, {}), (GradDiff, {"retain_loss": "kl"}), (NPO, {}), (NPO, {"retain_loss": "kl"}),
    (SimNPO, {}), (FineTune, {}),
])
def test_each_method_trains(cls, kw, tiny_subject, tmp_path):
    module = cls(model=tiny_subject, optimizer=adamw(1e-3), **kw)
    start = {n: p.detach().clone() for n, p in AutoModelForCausalLM.from_pretrained(tiny_subject).named_parameters()}
    trainer, rec = fit(module, FictitiousPeople("tiny", batch_size=4), tmp_path, steps=4)
    assert len(rec.losses) == 4 and all(math.isfinite(x) for x in rec.losses)
    changed = [n for n, p in module.model.named_parameters() if not torch.equal(p.detach(), start[n])]
    assert changed
    obj = rec.objectives[0]
    assert obj.forget.shape == (4,)
    if cls is not GradAscent:
        assert obj.retain is not None and obj.retain.shape == (4,)
    assert trainer.global_step == 4
    assert (Path(tmp_path) / "model" / "model.safetensors").exists()


def test_grad_ascent_raises_forget_nll(tiny_subject, tmp_path):
    module = GradAscent(model=tiny_subject, optimizer=adamw(1e-3), save_model=False)
    fit(module, FictitiousPeople("tiny", batch_size=5), tmp_path, steps=6)
    start, end = module.summary["start"], module.summary["end"]
    assert end["forget/nll"] > 4 * start["forget/nll"]
    assert end["forget/fact_acc"] < start["forget/fact_acc"]


def test_npo_caches_reference_logps_once(tiny_subject, tmp_path, monkeypatch):
    module = NPO(model=tiny_subject, beta=0.1, optimizer=adamw(1e-3), save_model=False, evaluate_at_start=False)
    data = FictitiousPeople("tiny", batch_size=5, eval_sets=["forget"])
    calls = []
    original = NPO.compute_logps
    monkeypatch.setattr(NPO, "compute_logps", lambda self, d: calls.append(1) or original(self, d))
    _, rec = fit(module, data, tmp_path, steps=4)
    assert len(calls) == 1
    # the cache holds the starting model's log-probs
    ref_model = AutoModelForCausalLM.from_pretrained(tiny_subject).eval()
    data.setup()
    batch = next(iter(data.eval_dataloader(data.forget_set, batch_size=len(data.forget_set), shard=False)))
    with torch.no_grad():
        logits = ref_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = -nll(logits, batch["labels"], normalize=False)
    assert torch.allclose(module.ref_logps[batch["index"]], expected, atol=1e-4)
    # at the first step the policy is the reference: the NPO loss is (2/beta) log 2 per example
    assert torch.allclose(rec.objectives[0].forget, torch.full((5,), 20 * math.log(2)), atol=1e-3)


@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_npo_reference_every_step_equals_the_cache(lora, tiny_subject, tmp_path):
    """cache_reference=False runs the reference per batch (a frozen copy, or with LoRA the base
    with adapters off) and follows the same trajectory as the cached log-probs."""
    runs = {}
    for cache in (True, False):
        module = NPO(model=tiny_subject, cache_reference=cache, lora=lora, optimizer=adamw(1e-2), save_model=False,
                     evaluate_at_start=False)
        _, rec = fit(module, FictitiousPeople("tiny", batch_size=5, eval_sets=["forget"]), tmp_path, steps=5)
        runs[cache] = (module, rec.losses)
    assert runs[False][0].ref_logps is None and runs[True][0].ref_logps is not None
    assert (runs[False][0]._reference is None) == (lora is not None)  # LoRA: no copy of the weights
    assert runs[False][1] == pytest.approx(runs[True][1], rel=1e-4)
    assert runs[True][1][-1] < runs[True][1][0] - 0.1  # and the runs really moved


def test_kl_reference_stays_out_of_checkpoints(tiny_subject, tmp_path):
    module = GradDiff(model=tiny_subject, retain_loss="kl", optimizer=adamw(1e-3), save_model=False)
    _, rec = fit(module, FictitiousPeople("tiny", batch_size=4), tmp_path, steps=2)
    assert rec.objectives[0].retain.abs().max() < 1e-5  # KL of the model against itself
    assert not any("reference" in k for k in module.state_dict())
    assert sorted(module.state_dict()) == sorted(f"model.{k}" for k in module.model.state_dict())


def test_sample_weights_reweight_the_forget_term(tiny_subject, tmp_path):
    module = GradAscent(model=tiny_subject, save_model=False)
    module.configure_model()
    data = FictitiousPeople("tiny", batch_size=4)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    plain = module.objectives(batch).forget.detach()
    weights = torch.zeros(len(data.forget_set))
    first = int(batch["forget"]["index"][0])
    weights[first] = 4.0
    module.sample_weights = weights
    loss = module.training_step(batch, 0)
    assert loss.item() == pytest.approx(plain[0].item() * 4.0 / 4, rel=1e-5)


def test_requires_retain(tiny_subject, tmp_path):
    data = ForgetRetainDataModule(forget=[{"question": "q?", "answer": "a."}] * 2, tokenizer=tiny_subject)
    with pytest.raises(ValueError, match="GradDiff needs a retain set"):
        fit(GradDiff(model=tiny_subject), data, tmp_path, steps=1)


def test_bad_method_arguments(tiny_subject):
    with pytest.raises(ValueError, match="`retain_weight` must be a finite number >= 0"):
        GradDiff(model=tiny_subject, retain_weight=-1)
    with pytest.raises(ValueError, match="`beta` must be a number > 0"):
        NPO(model=tiny_subject, beta=0)
    with pytest.raises(ValueError, match="`retain_loss` must be one of"):
        NPO(model=tiny_subject, retain_loss="mse")
