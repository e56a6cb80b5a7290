"""IdkNLL, IdkDPO, RMU, SRMU, UNDIAL, SelectiveAmnesia: losses by hand, parameter selection, training."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer, seed_everything
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from lit_unlearn import RMU, SRMU, UNDIAL, FictitiousPeople, IdkDPO, IdkNLL, SelectiveAmnesia
from lit_unlearn.methods.idk import load_refusals
from lit_unlearn.methods.selective_amnesia import adaptive_alpha
from lit_unlearn.models import decoder_layers, hidden_at
from lit_unlearn.objectives import activation_distance, dpo, nll, undial


class Recorder(Callback):
    def __init__(self):
        self.objectives, self.indices = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.objectives.append(module.last_objectives)
        self.indices.append(batch["forget"]["index"].cpu())


def fit(module, steps=3, data=None):
    seed_everything(0)
    rec = Recorder()
    trainer = Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[rec])
    trainer.fit(module, datamodule=data or FictitiousPeople("tiny", batch_size=4, eval_sets=["forget"]))
    return rec


def adamw(lr=1e-3):
    return partial(torch.optim.AdamW, lr=lr)


# ------------------------------------------------------------------ losses by hand
def test_dpo_with_identical_answers_is_2_over_beta_log_2():
    lp, ref = torch.tensor([-3.0, -7.0]), torch.tensor([-2.0, -9.0])
    assert dpo(lp, ref, lp, ref, 0.1).tolist() == pytest.approx([20 * math.log(2)] * 2)
    win, lose = torch.tensor([-1.0]), torch.tensor([-4.0])
    expected = -(2 / 0.5) * math.log(1 / (1 + math.exp(-0.5 * ((-1.0 + 2.0) - (-4.0 + 3.0)))))
    assert dpo(win, torch.tensor([-2.0]), lose, torch.tensor([-3.0]), 0.5).item() == pytest.approx(expected)


def test_rmu_distance_is_zero_at_the_target_and_matches_mse():
    u = torch.tensor([0.6, 0.8, 0.0])
    h = (4.0 * u).expand(2, 3, 3).clone()
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert activation_distance(h, 4.0 * u, mask).abs().max() == 0
    h[0, 0] = torch.tensor([1.0, 2.0, 3.0])
    expected0 = (F.mse_loss(h[0, 0], 4 * u) + 0.0) / 2  # two masked tokens, one at the target
    assert activation_distance(h, 4.0 * u, mask)[0].item() == pytest.approx(expected0.item())
    w = torch.tensor([2.0, 0.0, 1.0])
    diff = (h[0, 0] - 4 * u) * w
    assert activation_distance(h, 4.0 * u, mask, w)[0].item() == pytest.approx((diff.square().mean() / 2).item())


def test_undial_by_hand():
    logits = torch.tensor([[[0.5, 1.0, -1.0], [2.0, 0.0, 0.0]]])
    ref = torch.tensor([[[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 1]])  # one answer token (label 1), predicted at position 0
    beta = 2.0
    teacher = F.softmax(torch.tensor([1.0, 3.0 - beta, 0.0]), -1)
    expected = -(teacher * F.log_softmax(logits[0, 0], -1)).sum()
    assert undial(logits, ref, labels, beta).item() == pytest.approx(expected.item(), rel=1e-6)
    # without the penalty and with logits == ref it is the reference's entropy
    same = undial(ref, ref, labels, 0.0).item()
    p = F.softmax(ref[0, 0], -1)
    assert same == pytest.approx(-(p * p.log()).sum().item(), rel=1e-6)


def test_adaptive_alpha():
    assert adaptive_alpha(0.0) == 1.2  # 1.1 clipped up
    assert adaptive_alpha(0.5) == pytest.approx(0.3 * 6**0.5 + 0.8)
    assert adaptive_alpha(5.0) == 2.8


# ------------------------------------------------------------------ refusals
def test_refusal_list_and_file(tmp_path):
    shipped = load_refusals()
    assert len(shipped) >= 20 and len(set(shipped)) == len(shipped)
    (tmp_path / "r.txt").write_text("No idea.\n\nCan't say.\n")
    assert load_refusals(str(tmp_path / "r.txt")) == ["No idea.", "Can't say."]
    with pytest.raises(FileNotFoundError, match="refusals file"):
        load_refusals(str(tmp_path / "missing.txt"))


def test_idk_nll_scores_the_refusal(tiny_subject):
    module = IdkNLL(model=tiny_subject, optimizer=adamw(), save_model=False, evaluate_at_start=False)
    rec = fit(module, steps=1)
    first, index = rec.objectives[0].forget, rec.indices[0]
    refusals = [module.refusal_for(int(i)) for i in index]
    assert all(r in load_refusals() for r in refusals)
    # the first step's forget losses are the subject's NLL/|y| of those questions' refusals
    data = FictitiousPeople("tiny", batch_size=4, eval_sets=["forget"])
    data.setup()
    encoded = data.encode_answers(data.forget_records, [module.refusal_for(i) for i in range(len(data.forget_set))],
                                  "idk")
    batch = next(iter(data.eval_dataloader(torch.utils.data.Subset(encoded, index.tolist()), shard=False)))
    text = module.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != -100], skip_special_tokens=True)
    assert text.strip() == refusals[0]
    subject = AutoModelForCausalLM.from_pretrained(tiny_subject).eval()
    with torch.no_grad():
        expected = nll(subject(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                       batch["labels"])
    assert torch.allclose(first, expected, atol=1e-4)


def test_idk_dpo_starts_at_2_over_beta_log_2(tiny_subject):
    module = IdkDPO(model=tiny_subject, beta=0.1, optimizer=adamw(), save_model=False, evaluate_at_start=False)
    rec = fit(module, steps=2)
    assert torch.allclose(rec.objectives[0].forget, torch.full((4,), 20 * math.log(2)), atol=1e-3)
    assert module.ref_logps_idk.shape == module.ref_logps.shape == (len(module.idk_set),)


# ------------------------------------------------------------------ RMU
def test_rmu_changes_only_the_chosen_parameters(tiny_subject):
    module = RMU(model=tiny_subject, layer=1, steering_coeff=20.0, retain_weight=1.0, optimizer=adamw(1e-2),
                 save_model=False, evaluate_at_start=False)
    fit(module, steps=3)
    start = AutoModelForCausalLM.from_pretrained(tiny_subject).state_dict()
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    for name, value in module.model.state_dict().items():
        if name in trainable:
            assert not torch.equal(value, start[name]), name
        else:
            assert torch.equal(value, start[name]), name


def test_rmu_reference_is_the_starting_model(tiny_subject):
    module = RMU(model=tiny_subject, layer=1, steering_coeff=20.0, optimizer=adamw(1e-2), save_model=False,
                 evaluate_at_start=False)
    fit(module, steps=3)
    data = FictitiousPeople("tiny", batch_size=4, eval_sets=["forget"])
    data.setup()
    batch = next(iter(data.eval_dataloader(data.retain_set, batch_size=6, shard=False)))
    start = AutoModelForCausalLM.from_pretrained(tiny_subject).eval()
    with torch.no_grad():
        expected = hidden_at(start, 1, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        now = module.hidden(batch)
    assert torch.allclose(module.reference_hidden(batch), expected, atol=1e-5)
    assert not torch.allclose(now, expected, atol=1e-3)  # the trained model moved


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_rmu_finds_layers_in_other_architectures(arch, tmp_path, tokenizer):
    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=3, n_head=2, n_positions=128))
        expected = {f"transformer.h.{i}.mlp.c_proj.{w}" for i in (0, 1, 2) for w in ("weight", "bias")}
    else:
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2))
        expected = {f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1, 2)}
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    module = RMU(model=str(tmp_path), layer=2, steering_coeff=5.0, optimizer=adamw(), save_model=False,
                 evaluate_at_start=False)
    rec = fit(module, steps=2)
    assert len(decoder_layers(module.model)) == 3
    assert {n for n, p in module.model.named_parameters() if p.requires_grad} == expected
    assert torch.isfinite(rec.objectives[-1].forget).all()


def test_srmu_importance_map_and_direction(tiny_subject):
    module = SRMU(model=tiny_subject, layer=1, steering_coeff=5.0, ema=1.0, optimizer=adamw(), save_model=False,
                  evaluate_at_start=False)
    module.stats = {"mu_f": torch.tensor([1.0, 0.0, 2.0]), "mu_r": torch.tensor([0.0, 0.0, 0.0]),
                    "var_r": torch.tensor([1.0, 1.0, 4.0])}
    m, v = module.importance()
    raw = torch.tensor([1.0, 0.0, 2.0]) / torch.tensor([1.0 + 1e-4, 1.0 + 1e-4, 2.0 + 1e-4])
    assert torch.allclose(m, raw / raw.mean(), atol=1e-6) and m.mean().item() == pytest.approx(1.0)
    assert torch.allclose(v, -torch.tensor([1.0, 0.0, 2.0]) / math.sqrt(5))
    rec = fit(SRMU(model=tiny_subject, layer=1, steering_coeff=5.0, optimizer=adamw(), save_model=False,
                   evaluate_at_start=False), steps=3)
    assert all(torch.isfinite(o.forget).all() for o in rec.objectives)


def test_undial_trains_and_lowers_the_answer(tiny_subject):
    module = UNDIAL(model=tiny_subject, beta=10.0, optimizer=adamw(3e-3), save_model=False)
    fit(module, steps=6)
    assert module.summary["end"]["forget/nll"] > module.summary["start"]["forget/nll"]
    assert not any("reference" in k for k in module.state_dict())


def test_selective_amnesia_traces_and_trains_only_those_mlps(tiny_subject):
    module = SelectiveAmnesia(model=tiny_subject, top_k=1, optimizer=adamw(), save_model=False, evaluate_at_start=False)
    rec = fit(module, steps=3)
    assert len(module.trace) == 2 and all(0 <= e <= 1 for e in module.trace)
    assert module.layers == [max(range(2), key=lambda i: module.trace[i])]
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(f"model.layers.{module.layers[0]}.mlp.") for n in trainable)
    assert module.retain_weight == adaptive_alpha(float(rec.objectives[-1].retain.mean()) - module.initial_retain)
