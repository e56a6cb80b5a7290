"""NullSpaceProjection: the projector by hand, trained weights that change only off the retain
inputs' principal subspace (checked against an independent covariance), less retain drift than
the same run without it, and clear errors."""

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from lit_unlearn import RMU
from lit_unlearn.callbacks.null_space import NullSpaceProjection, principal_projector
from tests.helpers import adamw
from tests.helpers.training import first_batch, fit_quick


def test_principal_projector_by_hand():
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    cov = q @ torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)) @ q.T
    p, k = principal_projector(cov, 0.7)  # 4 + 3 = 70% of the trace 10
    assert k == 2
    assert torch.allclose(p, q[:, 2:] @ q[:, 2:].T, atol=1e-10)
    assert principal_projector(cov, 0.71)[1] == 3
    p0, k0 = principal_projector(cov, 0.0)
    assert k0 == 0 and torch.equal(p0, torch.eye(4, dtype=torch.float64))


def _start_inputs_cov(path: str, names: list[str]) -> dict[str, torch.Tensor]:
    """Σ x xᵀ of each named layer's inputs over the retain set's real tokens, start model, float64."""
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    batch = first_batch("retain")
    mask = batch["attention_mask"].bool()
    cov = {}
    modules = dict(model.named_modules())
    handles = [modules[n.removeprefix("model.")].register_forward_pre_hook(
        lambda m, a, n=n: cov.__setitem__(n, (a[0][mask].double().T @ a[0][mask].double()))) for n in names]
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for h in handles:
        h.remove()
    return cov


def _rmu(tiny_subject):
    return RMU(model=tiny_subject, layer=1, steering_coeff=20.0, retain_weight=1.0, optimizer=adamw(1e-2),
               evaluate_at_start=False)


def test_weights_change_only_off_the_retain_subspace(tiny_subject):
    ns = NullSpaceProjection(energy=0.9)
    module = _rmu(tiny_subject)
    fit_quick(module, steps=4, callbacks=[ns])
    names = sorted(ns.projectors)
    assert names == ["model.model.layers.0.mlp.down_proj", "model.model.layers.1.mlp.down_proj"]
    start = AutoModelForCausalLM.from_pretrained(tiny_subject).state_dict()
    cov = _start_inputs_cov(tiny_subject, names)
    for name in names:
        w0 = start[name.removeprefix("model.") + ".weight"]
        assert torch.equal(ns.reference[name], w0)
        delta = (dict(module.named_parameters())[name + ".weight"].detach() - w0).double()
        assert delta.norm() > 1e-3  # it trained
        p = ns.projectors[name].double()
        assert (delta - delta @ p).norm() / delta.norm() < 1e-5  # the change lies in the null space, exactly
        # the frozen subspace is the top of the retain inputs' covariance, computed here independently
        values, vectors = torch.linalg.eigh(cov[name])
        k = ns.frozen_dims[name]
        assert 0 < k < len(values)
        share = values.flip(0)[:k].sum() / values.sum()
        assert 0.9 <= share < 0.9 + values.max() / values.sum()  # the fewest directions that reach 90%
        u = vectors.flip(1)[:, :k]
        assert (u.T @ p).norm() / k ** 0.5 < 1e-5  # P removes them ...
        assert abs(torch.trace(p) - (len(values) - k)) < 1e-4  # ... and nothing else
        assert (delta @ u).norm() / delta.norm() < 1e-5


def test_less_retain_drift_than_without_it(tiny_subject):
    batch = first_batch("retain")
    drift = {}
    for energy in (0.0, 0.99):
        module = _rmu(tiny_subject)
        fit_quick(module, steps=6, callbacks=[NullSpaceProjection(energy=energy)])
        with torch.no_grad():
            drift[energy] = float(module.retain_objective(batch).mean())
            forget = first_batch("forget")
            moved = float((module.hidden(forget) - module.reference_hidden(forget)).norm())
        assert moved > 1e-3, energy  # the forget activations still move
    assert drift[0.99] < 0.01 * drift[0.0], drift  # measured: 0.014 against 11.2


def test_bad_arguments_and_layers():
    for bad in (1.0, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match=r"`energy` must be a number in \[0, 1\)"):
            NullSpaceProjection(energy=bad)
    with pytest.raises(ValueError, match="max_batches"):
        NullSpaceProjection(max_batches=0)
    ns = NullSpaceProjection()
    with pytest.raises(ValueError, match=r"fc.bias trains, and a bias changes the output for every input"):
        ns._trained_layers(nn.ModuleDict({"fc": nn.Linear(3, 2)}))
    lora = nn.ModuleDict({"lora_A": nn.Linear(3, 2, bias=False)})
    with pytest.raises(ValueError, match="lora_A is a LoRA adapter"):
        ns._trained_layers(lora)
    frozen = nn.ModuleDict({"fc": nn.Linear(3, 2, bias=False).requires_grad_(False)})
    with pytest.raises(ValueError, match="trains no nn.Linear weight"):
        ns._trained_layers(frozen)


def test_state_dict_round_trip(tiny_subject):
    ns = NullSpaceProjection(energy=0.5)
    fit_quick(_rmu(tiny_subject), steps=1, callbacks=[ns])
    again = NullSpaceProjection(energy=0.5)
    again.load_state_dict(ns.state_dict())
    assert again.frozen_dims == ns.frozen_dims
    for name in ns.projectors:
        assert torch.equal(again.projectors[name], ns.projectors[name].cpu())
        assert torch.equal(again.reference[name], ns.reference[name].cpu())
