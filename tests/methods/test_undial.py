"""UNDIAL: the self-distillation loss by hand, and training lowers the answer."""

import pytest
import torch
import torch.nn.functional as F

from lit_unlearn import UNDIAL
from lit_unlearn.objectives import undial
from tests.helpers import adamw
from tests.helpers.training import fit_quick


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


def test_undial_trains_and_lowers_the_answer(tiny_subject):
    module = UNDIAL(model=tiny_subject, beta=10.0, optimizer=adamw(3e-3))
    fit_quick(module, steps=6)
    assert module.summary["end"]["forget/nll"] > module.summary["start"]["forget/nll"]
    assert module.retain_kind is None and not module.has_retain_term()  # UNDIAL has no retain term
    assert not any("reference" in k for k in module.state_dict())
