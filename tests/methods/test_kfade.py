import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lit_unlearn import KFADE, SavePretrained
from lit_unlearn.methods.kfade import collect_factors, eigenbasis, precondition, sample_labels
from lit_unlearn.objectives import nll
from tests.helpers import fit, tiny_data
from tests.helpers.training import first_batch


def test_factors_equal_explicit_expectations(random_model_dir, tiny_bench, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(random_model_dir).eval()
    layer = model.model.layers[0].mlp.down_proj
    batch = first_batch("forget", batch_size=5)
    batch = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        labels = sample_labels(model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits,
                               batch["attention_mask"], g)
    factors = collect_factors(model, {"down": layer}, [batch], labels_fn=lambda logits, b: labels)
    # explicit: capture the layer's input and output, differentiate the summed log-likelihood by the output
    captured = {}
    h = layer.register_forward_hook(lambda m, a, out: captured.update(x=a[0], y=out))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    h.remove()
    (s,) = torch.autograd.grad(nll(logits, labels, normalize=False).sum(), captured["y"])
    mask = batch["attention_mask"].bool()
    x, s = captured["x"][mask].double(), s[mask].double()
    A = sum(torch.outer(v, v) for v in x) / len(x)
    S = sum(torch.outer(v, v) for v in s) / len(s)
    assert torch.allclose(factors["down"][0].double(), A, rtol=1e-4, atol=1e-6)
    assert torch.allclose(factors["down"][1].double(), S, rtol=1e-3, atol=1e-4 * float(S.abs().max()))


def test_preconditioned_step_equals_a_direct_kronecker_solve():
    torch.manual_seed(0)
    a, s = torch.randn(3, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    A, S = a @ a.T + 0.1 * torch.eye(3, dtype=torch.float64), s @ s.T + 0.1 * torch.eye(2, dtype=torch.float64)
    G = torch.randn(2, 3, dtype=torch.float64)  # a weight gradient [out, in]
    basis = eigenbasis(A, S)
    step, delta = precondition(G, basis, damping=0.1)
    # vec stacks columns; (A ⊗ S) vec(G) = vec(S G A)
    matrix = torch.kron(A, S) + delta * torch.eye(6, dtype=torch.float64)
    solved = torch.linalg.solve(matrix, G.T.reshape(-1)).reshape(3, 2).T
    assert torch.allclose(step, solved, atol=1e-10)
    assert delta == pytest.approx(0.1 * torch.linalg.eigvalsh(A).mean().item() * torch.linalg.eigvalsh(S).mean().item())


def test_enormous_damping_gives_the_plain_gradient_direction():
    torch.manual_seed(1)
    a, s = torch.randn(4, 4), torch.randn(3, 3)
    basis = eigenbasis(a @ a.T, s @ s.T)
    G = torch.randn(3, 4)
    cosines = []
    for damping in (0.1, 10.0, 1e6):
        step, _ = precondition(G, basis, damping)
        cosines.append(torch.nn.functional.cosine_similarity(step.reshape(-1), G.reshape(-1), dim=0).item())
    assert cosines[2] > 1 - 1e-6 and cosines[2] >= cosines[1] >= cosines[0]


def test_kfade_takes_its_steps_and_the_update_reapplies(tiny_subject, tmp_path):
    module = KFADE(model=tiny_subject, steps=2, trust_region=1e-2)
    assert not KFADE.uses_sample_weights and module.retain_kind is None  # retain data gives curvature only
    save = SavePretrained(dirpath=str(tmp_path / "model"))
    trainer, _ = fit(module, tiny_data(batch_size=5), steps=None, max_epochs=5, callbacks=[save])
    assert module.steps_taken == 2 and trainer.global_step == 2 and trainer.current_epoch == 2
    assert module.summary["end"]["forget/nll"] > module.summary["start"]["forget/nll"]
    # the summed update is saved inside the model directory, beside the weights it produced
    path = tmp_path / "model" / "kfade_update.safetensors"
    update = load_file(path)
    assert set(update) == {f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)}
    copy = AutoModelForCausalLM.from_pretrained(tiny_subject)
    KFADE.apply_update(copy, str(path))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "model").state_dict()
    for name, value in copy.state_dict().items():
        assert torch.allclose(value, module.model.state_dict()[name], atol=1e-6), name
        assert torch.allclose(value, saved[name], atol=1e-6), name
    assert all(v.device.type == "cpu" for b in module.bases.values() for v in b.values())
