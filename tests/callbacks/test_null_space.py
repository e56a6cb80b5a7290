"""NullSpaceProjection: the basis by hand, trained weights that change only off the retain
inputs' principal subspace (checked against an independent covariance, also for `max_batches`),
less retain drift than the same run without it, resume, and clear errors."""

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from lit_unlearn import RMU
from lit_unlearn.callbacks.null_space import NullSpaceProjection, principal_basis
from tests.helpers import adamw
from tests.helpers.training import first_batch, fit, fit_quick, quiet_trainer, tiny_data


def test_principal_basis_by_hand():
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    cov = q @ torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)) @ q.T
    u = principal_basis(cov, 0.69)  # 4 + 3 = 70% of the trace 10
    assert u.shape == (4, 2)
    assert torch.allclose(u @ u.T, q[:, :2] @ q[:, :2].T, atol=1e-10)
    assert principal_basis(cov, 0.71).shape == (4, 3)
    assert principal_basis(cov, 0.0).shape == (4, 0)


def _start_inputs_cov(path: str, names: list[str], batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Σ x xᵀ of each named layer's inputs over the real tokens of the retain set (or its first
    ``batch_size`` rows), start model, float64."""
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    batch = first_batch("retain", batch_size=batch_size)
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
    names = sorted(ns.bases)
    assert names == ["model.model.layers.0.mlp.down_proj", "model.model.layers.1.mlp.down_proj"]
    start = AutoModelForCausalLM.from_pretrained(tiny_subject).state_dict()
    cov = _start_inputs_cov(tiny_subject, names)
    for name in names:
        w0 = start[name.removeprefix("model.") + ".weight"]
        assert torch.equal(ns.reference[name], w0)
        delta = (dict(module.named_parameters())[name + ".weight"].detach() - w0).double()
        assert delta.norm() > 1e-3  # it trained
        p = torch.eye(len(cov[name]), dtype=torch.float64) - ns.bases[name].double() @ ns.bases[name].double().T
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


def test_max_batches_reads_only_the_first_retain_batches(tiny_subject):
    ns = NullSpaceProjection(energy=0.9, max_batches=1)
    fit(_rmu(tiny_subject), tiny_data(eval_sets=["forget"], eval_batch_size=8), steps=1, callbacks=[ns],
        limit_val_batches=0)
    first, every = (_start_inputs_cov(tiny_subject, sorted(ns.bases), b) for b in (8, None))
    assert len(first_batch("retain")["input_ids"]) > 8
    for name, u in ns.bases.items():
        frozen = u.double() @ u.double().T
        for cov, close in ((first[name], True), (every[name], False)):
            values, vectors = torch.linalg.eigh(cov)
            v = vectors.flip(1)[:, : int((values.flip(0).cumsum(0) < 0.9 * values.sum()).sum()) + 1]
            same = v.shape == u.shape and (frozen - v @ v.T).norm() < 1e-4
            assert same == close, name


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

    def layers(module):
        return ns.trained_layers(module, torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=1))

    assert list(layers(nn.ModuleDict({"fc": nn.Linear(3, 2, bias=False)}))) == ["fc"]
    with pytest.raises(ValueError, match=r"NullSpaceProjection cannot be used with ModuleDict: the optimizer also "
                                         r"trains \['fc.bias'\], which are not full nn.Linear"):
        layers(nn.ModuleDict({"fc": nn.Linear(3, 2)}))
    with pytest.raises(ValueError, match=r"also trains \['lora_A.weight'\]"):
        layers(nn.ModuleDict({"lora_A": nn.Linear(3, 2, bias=False)}))
    with pytest.raises(ValueError, match=r"also trains \['norm.weight'\]"):
        layers(nn.ModuleDict({"fc": nn.Linear(3, 2, bias=False), "norm": nn.LayerNorm(2, bias=False)}))
    with pytest.raises(ValueError, match="optimizer trains no nn.Linear weight"):
        ns.trained_layers(nn.ModuleDict({"fc": nn.Linear(3, 2, bias=False)}), torch.optim.SGD([nn.Parameter(
            torch.zeros(1))], lr=1))


def test_resume_keeps_the_start_weights_and_bases(tiny_subject, tmp_path):
    """Two steps, a checkpoint, two more from it: the constraint is the first run's, not one
    recomputed from the moved weights, and the change still lies in its null space."""
    from lightning.pytorch import seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint

    seed_everything(0, verbose=False)
    first = NullSpaceProjection(energy=0.9)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    quiet_trainer(max_steps=2, callbacks=[first, ckpt], enable_checkpointing=True, limit_val_batches=0).fit(
        _rmu(tiny_subject), datamodule=tiny_data(eval_sets=["forget"]))
    again = NullSpaceProjection(energy=0.9)
    module = _rmu(tiny_subject)
    quiet_trainer(max_steps=4, callbacks=[again], limit_val_batches=0).fit(
        module, datamodule=tiny_data(eval_sets=["forget"]), ckpt_path=str(tmp_path / "epoch=0-step=2.ckpt"))
    start = AutoModelForCausalLM.from_pretrained(tiny_subject).state_dict()
    for name, u in first.bases.items():
        assert torch.equal(again.bases[name].cpu(), u.cpu())
        w0 = start[name.removeprefix("model.") + ".weight"]
        assert torch.equal(again.reference[name].cpu(), w0)
        delta = dict(module.named_parameters())[name + ".weight"].detach() - w0
        assert delta.norm() > 1e-3 and (delta @ u).norm() / delta.norm() < 1e-5
