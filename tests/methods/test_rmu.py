"""RMU and SRMU: the activation distance by hand, the parameters that train, the frozen activations."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from lit_unlearn import RMU, SRMU
from lit_unlearn.models import decoder_layers, hidden_at
from lit_unlearn.objectives import activation_distance
from tests.helpers import adamw
from tests.helpers.training import first_batch, fit_quick


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


def test_rmu_changes_only_the_chosen_parameters(tiny_subject):
    module = RMU(model=tiny_subject, layer=1, steering_coeff=20.0, retain_weight=1.0, optimizer=adamw(1e-2),
                 evaluate_at_start=False)
    fit_quick(module, steps=3)
    start = AutoModelForCausalLM.from_pretrained(tiny_subject).state_dict()
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    for name, value in module.model.state_dict().items():
        if name in trainable:
            assert not torch.equal(value, start[name]), name
        else:
            assert torch.equal(value, start[name]), name


def test_rmu_reference_is_the_starting_model(tiny_subject):
    module = RMU(model=tiny_subject, layer=1, steering_coeff=20.0, optimizer=adamw(1e-2), evaluate_at_start=False)
    fit_quick(module, steps=3)
    batch = first_batch("retain", batch_size=6)
    start = AutoModelForCausalLM.from_pretrained(tiny_subject).eval()
    with torch.no_grad():
        expected = hidden_at(start, 1, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        now = module.hidden(batch)
        retain = module.retain_objective(batch)
    assert torch.allclose(module.reference_hidden(batch), expected, atol=1e-5)
    assert not torch.allclose(now, expected, atol=1e-3)  # the trained model moved
    # the retain term is the activation distance from the frozen model's, what `retain_kind` names
    assert module.retain_kind == "activation" and module.has_retain_term()
    assert torch.allclose(retain, activation_distance(now, expected, batch["attention_mask"].bool()), rtol=1e-4)
    assert (retain > 0).all()


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
    module = RMU(model=str(tmp_path), layer=2, steering_coeff=5.0, optimizer=adamw(), evaluate_at_start=False)
    _, rec = fit_quick(module, steps=2)
    assert len(decoder_layers(module.model)) == 3
    assert {n for n, p in module.model.named_parameters() if p.requires_grad} == expected
    assert torch.isfinite(rec.objectives[-1].forget).all()


def test_srmu_importance_map_and_direction(tiny_subject):
    module = SRMU(model=tiny_subject, layer=1, steering_coeff=5.0, ema=1.0, optimizer=adamw(), evaluate_at_start=False)
    module.stats = {"mu_f": torch.tensor([1.0, 0.0, 2.0]), "mu_r": torch.tensor([0.0, 0.0, 0.0]),
                    "var_r": torch.tensor([1.0, 1.0, 4.0])}
    m, v = module.importance()
    raw = torch.tensor([1.0, 0.0, 2.0]) / torch.tensor([1.0 + 1e-4, 1.0 + 1e-4, 2.0 + 1e-4])
    assert torch.allclose(m, raw / raw.mean(), atol=1e-6) and m.mean().item() == pytest.approx(1.0)
    assert torch.allclose(v, -torch.tensor([1.0, 0.0, 2.0]) / math.sqrt(5))
    _, rec = fit_quick(SRMU(model=tiny_subject, layer=1, steering_coeff=5.0, optimizer=adamw(),
                                  evaluate_at_start=False), steps=3)
    assert len(rec.objectives) == 3 and all(torch.isfinite(o.forget).all() for o in rec.objectives)


def test_rmu_control_vector_follows_seed_everything_unless_seeded(tiny_subject, monkeypatch):
    """u is drawn from ``seed`` when given, else from the ``seed_everything`` seed (0 without one)."""
    def control(seed=None, global_seed=None):
        if global_seed is None:
            monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
        else:
            monkeypatch.setenv("PL_GLOBAL_SEED", str(global_seed))
        module = RMU(model=tiny_subject, layer=1, seed=seed)
        module.configure_model()
        return module.control

    g = torch.Generator().manual_seed(1)
    u = torch.rand(control().numel(), generator=g)
    assert torch.equal(control(global_seed=1), u / u.norm())
    assert torch.equal(control(), control(global_seed=0))
    assert not torch.equal(control(global_seed=1), control(global_seed=2))
    assert torch.equal(control(seed=5, global_seed=1), control(seed=5, global_seed=2))


def test_rmu_fact_scope_steers_only_the_fact_tokens_and_keeps_all_retain_tokens(tiny_subject):
    module = RMU(model=tiny_subject, layer=1, steering_coeff=20.0, token_scope="fact")
    module.configure_model()
    forget, retain = first_batch("forget", batch_size=3), first_batch("retain", batch_size=3)
    fact = torch.zeros_like(forget["attention_mask"], dtype=torch.bool)
    fact[0, 2:4], fact[1, 1] = True, True  # row 2 marks nothing: it is not steered
    out = module.objectives({"forget": {**forget, "fact_mask": fact}, "retain": retain})
    with torch.no_grad():
        h = module.hidden(forget)
        target = 20.0 * module.control
        expected = [(h[0, 2:4] - target).square().mean(), (h[1, 1] - target).square().mean(), torch.tensor(0.0)]
        all_tokens = activation_distance(module.reference_hidden(retain), module.hidden(retain),
                                         retain["attention_mask"].bool())
    assert torch.allclose(out.forget.detach(), torch.stack(expected), rtol=1e-5)
    assert torch.allclose(out.retain.detach(), all_tokens, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="`token_scope: fact` steers the forget records' fact-span tokens"):
        module.objectives({"forget": {k: v for k, v in forget.items() if k != "fact_mask"}, "retain": retain})
    with pytest.raises(ValueError, match="must be 'all', 'answer' or 'fact', got 'name'"):
        RMU(model=tiny_subject, token_scope="name")
