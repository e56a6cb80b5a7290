"""NPO and SimNPO: the first step's losses against the starting model, and NPO without the cache."""

import math

import pytest
import torch

from lit_unlearn import NPO, SimNPO
from lit_unlearn.objectives import nll, simnpo
from tests.helpers import adamw
from tests.helpers.training import first_batch, fit_quick, saved_logits


def test_npo_starts_at_2_over_beta_log_2(tiny_subject):
    """At the first step the policy is the reference: the NPO loss is (2/β) log 2 per example."""
    module = NPO(model=tiny_subject, beta=0.1, optimizer=adamw(1e-3), evaluate_at_start=False)
    _, rec = fit_quick(module, steps=2, batch_size=5)
    assert torch.allclose(rec.objectives[0].forget, torch.full((5,), 20 * math.log(2)), atol=1e-3)
    assert abs(float(rec.objectives[0].logs["log_ratio"])) < 1e-4
    assert float(rec.objectives[1].logs["log_ratio"]) < -1e-3  # one step lowered the forget log-probs


def test_simnpo_first_step_is_simnpo_of_the_starting_nll(tiny_subject):
    module = SimNPO(model=tiny_subject, beta=4.5, delta=0.5, optimizer=adamw(1e-3), evaluate_at_start=False)
    assert module.forget_weight == 0.125  # the published γ is the default
    _, rec = fit_quick(module, steps=1)
    batch = first_batch("forget")
    start_nll = nll(saved_logits(tiny_subject, batch), batch["labels"])
    expected = simnpo(start_nll[rec.indices[0]], 4.5, 0.5)
    assert torch.allclose(rec.objectives[0].forget.detach(), expected, atol=1e-4)
    retain = rec.objectives[0].retain.detach().mean()
    assert rec.losses[0] == pytest.approx(float(0.125 * expected.mean() + retain), rel=1e-4)


@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_npo_reference_every_step_equals_the_cache(lora, tiny_subject):
    """cache_reference=False runs the reference per batch (a frozen copy, or with LoRA the base
    with adapters off) and follows the same trajectory as the cached log-probs."""
    runs = {}
    for cache in (True, False):
        module = NPO(model=tiny_subject, cache_reference=cache, lora=lora, optimizer=adamw(1e-2),
                     evaluate_at_start=False)
        _, rec = fit_quick(module, steps=5, batch_size=5)
        runs[cache] = (module, rec.losses)
    assert runs[False][0].ref_logps is None and runs[True][0].ref_logps is not None
    assert (runs[False][0]._reference is None) == (lora is not None)  # LoRA: no copy of the weights
    assert runs[False][1] == pytest.approx(runs[True][1], rel=1e-4)
    assert runs[True][1][-1] < runs[True][1][0] - 0.1  # and the runs really moved
