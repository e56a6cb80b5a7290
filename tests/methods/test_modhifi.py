"""ModHiFi: the subset fidelity against a hand computation, the selection and the exact edit, and a
``lit-unlearn fit`` on the tiny preset that takes no optimizer step, zeroes exactly the chosen
neurons and forgets more than it loses."""

import json
import math

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from lit_unlearn import ForgetRetainDataModule, ModHiFi, load_causal_lm
from lit_unlearn.methods.modhifi import (
    REMOVED_FILE,
    budget_count,
    fidelity_statistics,
    select_components,
    singleton_fidelity,
    specificity,
    zero_components,
)
from lit_unlearn.models import mlp_down_projections
from tests.helpers import TINY, method_config, quiet_trainer, snapshot
from tests.helpers.cli import cli_fit, version_dir


def subset_fidelity(outputs: torch.Tensor, contributions: torch.Tensor) -> torch.Tensor:
    """``SF(S) = 1 - min_β Σ_t ‖y_t - Σ_k β_k z_{t,k}‖² / Σ_t ‖y_t‖²`` for one subset S, by least
    squares: the definition that ModHiFi's closed form (``singleton_fidelity``, |S| = 1) is checked against.

    Args:
        outputs: ``y [N, D]``.
        contributions: ``z [N, |S|, D]``, the contributions of the subset's components.
    """
    y = outputs.double().reshape(-1)
    z = contributions.double().permute(1, 0, 2).reshape(contributions.shape[1], -1).T  # [N·D, |S|]
    beta = torch.linalg.lstsq(z, y.unsqueeze(1)).solution
    residual = y - (z @ beta).squeeze(1)
    return 1.0 - residual.square().sum() / y.square().sum()


# Two tokens, a layer with I = 2 inputs and D = 2 outputs. By hand:
#   token 1: a = (1, 2), y = W a = (1, 3), z_1 = 1·(1, 1) = (1, 1), z_2 = 2·(0, 1) = (0, 2)
#   token 2: a = (0, 1), y = (0, 1),       z_1 = (0, 0),             z_2 = (0, 1)
#   e = ‖(1, 3)‖² + ‖(0, 1)‖² = 11
#   unit 1: c = ⟨(1,3),(1,1)⟩ = 4, m = 2       -> SF = 4² / (2 · 11) = 8/11
#           (β = c/m = 2: residuals (-1, 1), (0, 1), energy 3, 1 - 3/11 = 8/11)
#   unit 2: c = ⟨(1,3),(0,2)⟩ + ⟨(0,1),(0,1)⟩ = 7, m = 4 + 1 = 5 -> SF = 7² / (5 · 11) = 49/55
A = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
W = torch.tensor([[1.0, 0.0], [1.0, 1.0]])


def test_singleton_fidelity_equals_the_hand_computation():
    stats = fidelity_statistics(A, W)
    assert stats.dot.tolist() == pytest.approx([4.0, 7.0], abs=1e-9)
    assert stats.energy.tolist() == pytest.approx([2.0, 5.0], abs=1e-9)
    assert float(stats.total) == pytest.approx(11.0) and stats.tokens == 2
    sf = singleton_fidelity(stats)
    assert sf.tolist() == pytest.approx([8 / 11, 49 / 55], abs=1e-6)
    # the definition, by least squares over β, gives the same for each singleton
    y = A @ W.T
    z = A[:, :, None] * W.T[None]  # [N, I, D]: z_{t,i} = a_{t,i} w_i
    for i in range(2):
        assert float(subset_fidelity(y, z[:, [i]])) == pytest.approx(float(sf[i]), abs=1e-6)
    # streaming: two batches of one token add up to the batch of both
    both = fidelity_statistics(A[:1], W) + fidelity_statistics(A[1:], W)
    assert torch.allclose(singleton_fidelity(both), sf, atol=1e-12) and both.tokens == 2
    # a unit that never fires, and an empty layer output, score 0 (no division by zero)
    silent = fidelity_statistics(torch.tensor([[1.0, 0.0]]), W)
    assert singleton_fidelity(silent).tolist() == pytest.approx([1.0, 0.0])  # unit 1 alone makes y
    assert singleton_fidelity(fidelity_statistics(torch.zeros(3, 2), W)).tolist() == [0.0, 0.0]


def test_specificity_scores_by_hand():
    forget, retain = torch.tensor([8 / 11, 49 / 55, 0.0]), torch.tensor([0.5, 0.95, 0.0])
    assert specificity(forget, retain, "difference").tolist() == pytest.approx([8 / 11 - 0.5, 49 / 55 - 0.95, 0.0])
    eps = 1e-6
    expected = [math.log((f + eps) / (r + eps)) for f, r in zip(forget.tolist(), retain.tolist())]
    assert specificity(forget, retain, "log_ratio").tolist() == pytest.approx(expected, abs=1e-6)
    assert specificity(forget, None, "forget").tolist() == pytest.approx(forget.tolist())
    with pytest.raises(ValueError, match="retain"):
        specificity(forget, None, "difference")


def test_head_components_by_explicit_loops_and_additivity():
    """Groups of g = 2 columns (attention heads): each SF from explicit per-token loops; with
    orthogonal contributions the subset fidelity is the sum of the singletons'."""
    torch.manual_seed(0)
    a, w = torch.randn(5, 6).double(), torch.randn(4, 6).double()  # N = 5 tokens, K = 3 heads of 2, D = 4
    sf = singleton_fidelity(fidelity_statistics(a, w, group_size=2))
    e = sum(float((w @ a[t]).square().sum()) for t in range(5))
    for k in range(3):
        cols = slice(2 * k, 2 * k + 2)
        c = sum(float((w @ a[t]) @ (w[:, cols] @ a[t, cols])) for t in range(5))
        m = sum(float((w[:, cols] @ a[t, cols]).square().sum()) for t in range(5))
        assert float(sf[k]) == pytest.approx(c * c / (m * e), abs=1e-6)
    # W = I: contributions a_{t,i} e_i are orthogonal, so SF({0, 2}) = SF(0) + SF(2)
    eye = torch.eye(6, dtype=torch.float64)
    single = singleton_fidelity(fidelity_statistics(a, eye))
    z = a[:, :, None] * eye[None]
    assert float(subset_fidelity(a, z[:, [0, 2]])) == pytest.approx(float(single[0] + single[2]), abs=1e-6)
    assert float(subset_fidelity(a, z)) == pytest.approx(1.0, abs=1e-9) and float(single.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="components of 4"):
        fidelity_statistics(a, w, group_size=4)


def test_select_components_budgets():
    scores = {"l0": torch.tensor([0.3, -0.1, 0.3, 0.0, 0.9]), "l1": torch.tensor([0.5, 0.2, 0.1, 0.4, -1.0])}
    assert select_components(scores, 2) == {"l0": [0, 4], "l1": [0, 3]}  # ties: the lower index
    assert select_components(scores, 4) == {"l0": [0, 2, 4], "l1": [0, 1, 2, 3]}  # l0: never a score <= 0
    assert select_components(scores, 0.4) == {"l0": [0, 4], "l1": [0, 3]}  # round(0.4 · 5) = 2 per layer
    assert select_components(scores, 0.01) == {"l0": [4], "l1": [0]}  # at least one
    assert select_components(scores, 3, "global") == {"l0": [4], "l1": [0, 3]}  # 0.9, 0.5, 0.4
    assert select_components(scores, 0.5, "global") == {"l0": [0, 2, 4], "l1": [0, 3]}  # 5 of 10
    assert (budget_count(7, 5), budget_count(0.25, 10), budget_count(0.999, 10)) == (5, 2, 10)
    with pytest.raises(ValueError, match="budget"):
        select_components(scores, 1, "model")


def test_zero_components_changes_exactly_those_columns():
    torch.manual_seed(0)
    linear, conv = nn.Linear(8, 3), Conv1D(3, 8)  # both map 8 inputs to 3 outputs; Conv1D stores [8, 3]
    for module in (linear, conv):
        before = {n: p.detach().clone() for n, p in module.named_parameters()}
        zero_components(module, [1, 3], group_size=2)  # components of 2 units: columns 2, 3, 6, 7
        weight = module.weight if module is linear else module.weight.T  # as [D_out, I_in]
        start = before["weight"] if module is linear else before["weight"].T
        gone = [2, 3, 6, 7]
        assert torch.equal(weight[:, gone], torch.zeros(3, 4))
        kept = [0, 1, 4, 5]
        assert torch.equal(weight[:, kept], start[:, kept]) and start[:, gone].abs().min() > 0
        assert torch.equal(module.bias, before["bias"])  # a bias belongs to no component


def expected_per_layer(model, amount):
    return {name: round(amount * m.in_features) for name, m in mlp_down_projections(model).items()}


def test_lit_unlearn_fit_zeroes_the_forget_specific_neurons_without_a_step(tiny_subject, tmp_path):
    """``lit-unlearn fit`` with the shipped config on the tiny preset: no optimizer step; exactly the
    chosen down-projection columns are zeroed (everything else bit for bit); the forget facts go,
    the retain facts stay; the saved model is the edited one."""
    # amount 0.25 instead of the config's 0.15: on the 1M-parameter tiny subject 15% forgets 0.05-0.35 of
    # the facts depending on the CPU that built it (AVX2 or AVX-512 kernels); 25% forgets 0.35-0.45
    cli = cli_fit("--config", method_config("modhifi"), "--config", TINY, "--model.init_args.compare_with=null",
                  "--model.init_args.amount=0.25", "--summary.verbose=false", save_dir=tmp_path, steps=4)
    module, trainer = cli.model, cli.trainer
    assert trainer.global_step == 0
    optimized = {id(p) for o in trainer.optimizers for g in o.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in module.parameters()}  # Lightning's placeholder holds none of them
    start = snapshot(load_causal_lm(tiny_subject))
    removed = module.removed
    assert {n: len(v) for n, v in removed.items()} == expected_per_layer(module.model, 0.25)  # 64 of 256 per layer
    for name, p in module.model.named_parameters():
        base = start[name]
        layer = name.removesuffix(".weight")
        if layer not in removed:
            assert torch.equal(p.detach(), base), name  # untouched, bit for bit
            continue
        gone = removed[layer]
        kept = [i for i in range(p.shape[1]) if i not in gone]
        assert torch.equal(p[:, gone], torch.zeros(p.shape[0], len(gone)))
        assert base[:, gone].abs().amax(0).min() > 0  # they were not zero before
        assert torch.equal(p[:, kept], base[:, kept])
    for name, scores in module.scores.items():  # the removed neurons are the top scores
        top = sorted(range(len(scores["score"])), key=lambda i: (-float(scores["score"][i]), i))[:64]
        assert sorted(top) == removed[name] and float(scores["score"][removed[name]].min()) > 0
    s, e = module.summary["start"], module.summary["end"]
    drop = {k: s[k] - e[k] for k in ("forget/fact_acc", "retain/fact_acc", "forget/token_acc", "retain/token_acc")}
    # measured (tiny subject built on 2 threads with AVX-512 / AVX2 kernels): forget facts 1.00 -> 0.55 / 0.65,
    # retain 1.00 -> 0.98 / 0.91; tokens 0.985 -> 0.67 / 0.98 -> 0.73 vs 0.969 -> 0.86 / 0.972 -> 0.84
    assert s["forget/fact_acc"] > 0.9 and s["retain/fact_acc"] > 0.9
    assert drop["forget/fact_acc"] >= 0.25 and drop["retain/fact_acc"] <= 0.15
    assert drop["forget/fact_acc"] > 2.5 * drop["retain/fact_acc"]
    assert drop["forget/token_acc"] >= 0.1 and drop["forget/token_acc"] > 1.5 * drop["retain/token_acc"]
    saved = version_dir(tmp_path, "modhifi") / "model"
    reloaded = dict(load_causal_lm(str(saved)).named_parameters())
    assert all(torch.equal(reloaded[n], p.detach()) for n, p in module.model.named_parameters())
    record = json.loads((saved / REMOVED_FILE).read_text())
    assert record["removed"] == removed and record["score"] == "difference"


def test_random_removal_of_as_many_neurons_forgets_far_less(tiny_subject, tiny_bench):
    """The control that shows the score, not the count, does the forgetting: zeroing the same
    number of random neurons per layer barely moves the forget facts."""
    data = ForgetRetainDataModule(forget=tiny_bench.records("forget10"), retain=tiny_bench.records("retain90"),
                                  tokenizer=tiny_subject, max_length=64)
    chosen = ModHiFi(model=tiny_subject, amount=0.25, tokens="answer", evaluate_at_start=False)
    quiet_trainer(max_epochs=1).fit(chosen, datamodule=data)
    g = torch.Generator().manual_seed(0)
    control = load_causal_lm(tiny_subject)
    for module in mlp_down_projections(control).values():
        zero_components(module, torch.randperm(module.in_features, generator=g)[:64].tolist())
    forget = {"ModHiFi": chosen.summary["end"]["forget/fact_acc"],
              "random": chosen.evaluate("val", model=control)["forget/fact_acc"]}
    # measured: ModHiFi 0.55 (AVX-512 build) or 0.65 (AVX2), random 0.95-1.0 for three seeds on either
    assert forget["random"] >= 0.9 and forget["ModHiFi"] <= forget["random"] - 0.25, forget


def test_score_forget_needs_no_retain_set_and_the_others_refuse(tiny_subject, tiny_bench):
    forget = tiny_bench.records("forget10")
    data = ForgetRetainDataModule(forget=forget, tokenizer=tiny_subject, max_length=64, eval_sets={"forget": forget})
    module = ModHiFi(model=tiny_subject, score="forget", amount=4, layers=[1], evaluate_at_start=False)
    quiet_trainer(max_epochs=1).fit(module, datamodule=data)
    assert list(module.removed) == ["model.layers.1.mlp.down_proj"] and len(module.removed[
        "model.layers.1.mlp.down_proj"]) == 4
    assert set(module.scores["model.layers.1.mlp.down_proj"]) == {"forget", "score"}
    with pytest.raises(ValueError, match="`score` 'difference' compares forget with retain data"):
        quiet_trainer(max_epochs=1).fit(ModHiFi(model=tiny_subject), datamodule=data)


def test_heads_are_removed_whole(tiny_subject, tiny_bench):
    data = ForgetRetainDataModule(forget=tiny_bench.records("forget10"), retain=tiny_bench.records("retain90"),
                                  tokenizer=tiny_subject, max_length=64, eval_sets={})
    module = ModHiFi(model=tiny_subject, components="heads", amount=1, budget="global", evaluate_at_start=False,
                     max_retain_batches=1)
    start = snapshot(load_causal_lm(tiny_subject))
    quiet_trainer(max_epochs=1).fit(module, datamodule=data)
    (name, heads), = [(n, v) for n, v in module.removed.items() if v]  # one head in all (2 layers x 2 heads)
    assert name.endswith("self_attn.o_proj") and len(heads) == 1
    weight, h = dict(module.model.named_parameters())[name + ".weight"], heads[0]
    width = weight.shape[1] // 2  # head_dim
    assert torch.equal(weight[:, h * width:(h + 1) * width], torch.zeros(weight.shape[0], width))
    changed = [n for n, p in module.model.named_parameters() if not torch.equal(p.detach(), start[n])]
    assert changed == [name + ".weight"]


@pytest.mark.parametrize("kwargs,match", [
    ({"components": "layers"}, "`components` must be one of"),
    ({"budget": "model"}, "`budget` must be one of"),
    ({"score": "ratio"}, "`score` must be one of"),
    ({"tokens": "prompt"}, "`tokens` must be one of"),
    ({"layers": []}, "`layers` must be a non-empty list"),
    ({"layers": [0, -1]}, "`layers` must be a non-empty list"),
    ({"layers": "0"}, "`layers` must be a non-empty list"),
    ({"amount": 0}, "`amount` must be a count"),
    ({"amount": 1.0}, "`amount` must be a count"),
    ({"amount": 1.5}, "`amount` must be a count"),
    ({"amount": -0.1}, "`amount` must be a count"),
    ({"amount": True}, "`amount` must be a count"),
    ({"amount": "0.1"}, "`amount` must be a count"),
    ({"amount": float("nan")}, "`amount` must be a count"),
    ({"max_forget_batches": 0}, "`max_forget_batches` must be a positive integer"),
    ({"max_retain_batches": 1.5}, "`max_retain_batches` must be a positive integer"),
])
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModHiFi(model="builtin:tiny/subject", **kwargs)


def test_layer_out_of_range_is_refused_before_the_start_evaluation(tiny_subject):
    from tests.helpers import tiny_data

    module = ModHiFi(model=tiny_subject, layers=[0, 2])
    with pytest.raises(ValueError, match=r"`layers` names layer 2 but the model has 2 \(0\.\.1\)"):
        quiet_trainer(max_epochs=1).fit(module, datamodule=tiny_data())
    assert not module.summary and not module.removed
