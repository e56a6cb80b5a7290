"""SelectiveAmnesia: the adaptive retain weight, causal tracing and the MLPs that train."""

import pytest

from lit_unlearn import SelectiveAmnesia
from lit_unlearn.methods.selective_amnesia import adaptive_alpha
from tests.helpers import adamw
from tests.helpers.training import fit_quick


def test_adaptive_alpha():
    assert adaptive_alpha(0.0) == 1.2  # 1.1 clipped up
    assert adaptive_alpha(0.5) == pytest.approx(0.3 * 6**0.5 + 0.8)
    assert adaptive_alpha(5.0) == 2.8


def test_selective_amnesia_traces_and_trains_only_those_mlps(tiny_subject):
    module = SelectiveAmnesia(model=tiny_subject, top_k=1, optimizer=adamw(), evaluate_at_start=False)
    assert SelectiveAmnesia.adapts_retain_weight and module.retain_kind == "nll"
    _, rec = fit_quick(module, steps=3)
    assert len(module.trace) == 2 and all(0 <= e <= 1 for e in module.trace)
    assert module.layers == [max(range(2), key=lambda i: module.trace[i])]
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(f"model.layers.{module.layers[0]}.mlp.") for n in trainable)
    last_retain = float(rec.objectives[-1].retain.detach().mean())
    assert module.retain_weight == adaptive_alpha(last_retain - module.initial_retain)
