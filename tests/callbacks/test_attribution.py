import pytest
import torch

from lit_unlearn import KFADE, DataAttributionWeights, ForgetRetainDataModule, GradAscent, GradDiff
from lit_unlearn.callbacks.attribution import guard_weights, sketch
from tests.helpers import adamw, fit, tiny_data


def test_weights_follow_the_formula():
    a = torch.tensor([0.5, -0.2, 0.1, 0.9])
    w = guard_weights(a, temperature=0.5)
    expected = 4 * torch.exp(-a / 0.5) / torch.exp(-a / 0.5).sum()
    assert torch.allclose(w, expected) and w.mean().item() == pytest.approx(1.0)
    assert int(w.argmin()) == 3  # the most aligned example gets the least weight


def test_sketch_is_a_fixed_linear_projection():
    torch.manual_seed(0)
    a, b = torch.randn(1000), torch.randn(1000)
    assert torch.allclose(sketch(a + b, 64, seed=3), sketch(a, 64, 3) + sketch(b, 64, 3), atol=1e-5)
    assert torch.equal(sketch(a, 64, 3), sketch(a, 64, 3)) and not torch.equal(sketch(a, 64, 3), sketch(a, 64, 4))


def train(tiny_subject, forget, retain, callbacks):
    """Two GradDiff steps on the given records; returns the module."""
    module = GradDiff(model=tiny_subject, optimizer=adamw(), evaluate_at_start=False)
    data = ForgetRetainDataModule(forget=forget, retain=retain, tokenizer=tiny_subject, batch_size=4, max_length=64)
    fit(module, data, steps=2, callbacks=callbacks, limit_val_batches=0)
    return module


def test_planted_example_aligned_with_retain_gets_the_lowest_weight(tiny_subject, tiny_bench):
    retain = tiny_bench.records("retain90")
    planted = dict(retain[3])
    forget = tiny_bench.records("forget10")[:9] + [planted]
    cb = DataAttributionWeights(temperature=0.2, retain_examples=len(retain))
    with pytest.warns(UserWarning, match="1 retain record"):
        module = train(tiny_subject, forget, retain, [cb])
    assert int(cb.alignment.argmax()) == 9 and int(cb.weights.argmin()) == 9
    assert cb.weights.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(cb.weights, guard_weights(cb.alignment, 0.2))
    assert torch.equal(module.sample_weights, cb.weights)
    with pytest.warns(UserWarning, match="1 retain record"):
        plain = train(tiny_subject, forget, retain, [])
    weighted_differs = any(not torch.equal(a, b) for a, b in zip(plain.model.parameters(), module.model.parameters()))
    assert weighted_differs  # the weights changed what was trained


def test_projection_and_bad_arguments(tiny_subject, tiny_bench):
    cb = DataAttributionWeights(temperature=1.0, projection_dim=256, params=[r"layers\.1\."])
    train(tiny_subject, tiny_bench.records("forget10"), tiny_bench.records("retain90"), [cb])
    assert cb.weights.shape == (20,) and torch.isfinite(cb.alignment).all()
    with pytest.raises(ValueError, match="`temperature` must be a number > 0"):
        DataAttributionWeights(temperature=0)


def test_alignment_equals_a_direct_cosine_of_per_example_gradients(tiny_subject, tiny_bench):
    """a_i = cos(∇ NLL(x_i), mean retain ∇ NLL) on the chosen parameters, computed here by hand
    from the starting model on the whole encoded sets (one autograd call per forget row)."""
    from lit_unlearn.datamodules.encoding import collate
    from lit_unlearn.models import load_causal_lm
    from lit_unlearn.objectives import nll

    forget, retain = tiny_bench.records("forget10")[:6], tiny_bench.records("retain90")[:12]
    cb = DataAttributionWeights(temperature=1.0, params=[r"layers\.1\.mlp\.down_proj"], retain_examples=12)
    train(tiny_subject, forget, retain, [cb])
    data = ForgetRetainDataModule(forget=forget, retain=retain, tokenizer=tiny_subject, max_length=64)
    data.setup("fit")
    model = load_causal_lm(tiny_subject).eval()
    weight = model.model.layers[1].mlp.down_proj.weight

    def grads(encoded):
        batch = collate([encoded[i] for i in range(len(encoded))], data.pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        losses = nll(logits, batch["labels"])
        return [torch.autograd.grad(loss, weight, retain_graph=True)[0].reshape(-1) for loss in losses]

    g_r = torch.stack(grads(data.retain_set)).mean(0)
    expected = torch.stack([torch.nn.functional.cosine_similarity(g, g_r, dim=0) for g in grads(data.forget_set)])
    torch.testing.assert_close(cb.alignment, expected, atol=1e-4, rtol=1e-4)


def test_refused_before_the_first_step_on_kfade_and_without_a_retain_set(tiny_subject, tiny_bench):
    kfade = KFADE(model=tiny_subject, evaluate_at_start=False)
    with pytest.raises(ValueError, match="DataAttributionWeights cannot be used with KFADE: .*`sample_weights`"):
        fit(kfade, tiny_data(eval_sets=["forget"]), steps=1, callbacks=[DataAttributionWeights()])
    ascent = GradAscent(model=tiny_subject, optimizer=adamw(), evaluate_at_start=False)
    forget_only = ForgetRetainDataModule(forget=tiny_bench.records("forget10"), tokenizer=tiny_subject, batch_size=4)
    with pytest.raises(ValueError, match="DataAttributionWeights cannot be used with GradAscent: .*no retain set"):
        fit(ascent, forget_only, steps=1, callbacks=[DataAttributionWeights()])
    assert kfade.global_step == ascent.global_step == 0 and ascent.sample_weights is None
