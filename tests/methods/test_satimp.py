"""SatImp: the loss against open-unlearning's ``compute_satimp_loss`` and by hand, the published
defaults, and a fit that takes the forget facts away."""

import math

import pytest
import torch
from torch import nn

from lit_unlearn import SatImp
from lit_unlearn.objectives import answer_nll, satimp, wga
from tests.helpers import adamw, tiny_data
from tests.helpers.training import fit_quick, saved_logits

# Three examples of 7 positions, vocabulary 11: answers of 3, 5 and 1 tokens (prompt and padding -100).
# The answer tokens' logits are raised by 0..7 so that p(y_t) spans (0, 1), where SatImp's weights differ.
torch.manual_seed(1)
LABELS = torch.tensor([[-100, -100, -100, 4, 7, 1, -100],
                       [-100, 3, 3, 9, 0, 10, -100],
                       [-100, -100, -100, -100, -100, 5, -100]])
LOGITS = torch.randn(3, 7, 11)
for _b, _t in (LABELS[:, 1:] != -100).nonzero().tolist():
    LOGITS[_b, _t, LABELS[_b, _t + 1]] += (_b + 2 * _t) % 8
LOGITS.requires_grad_()


def open_unlearning_satimp(logits, labels, beta1, beta2):
    """A transcription of open-unlearning's ``compute_satimp_loss`` (src/trainer/utils.py) after the forward pass."""
    shift_logits = logits[..., :-1, :].contiguous()
    shift_labels = labels[..., 1:].contiguous()
    lm_loss = nn.CrossEntropyLoss(ignore_index=-100, reduction="none")(
        shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))
    weight_sat = ((-lm_loss).exp().detach()) ** beta1
    weight_imp = (1 - (-lm_loss).exp().detach()) ** beta2
    return -((weight_sat * weight_imp) * lm_loss)[shift_labels.view(-1) != -100].mean()


@pytest.mark.parametrize("beta1, beta2", [(5.0, 1.0), (1.0, 0.0), (0.5, 2.0)])
def test_satimp_equals_open_unlearning_loss_and_gradient(beta1, beta2):
    ours = satimp(LOGITS, LABELS, beta1, beta2)
    assert ours.shape == (3,)
    theirs = open_unlearning_satimp(LOGITS.double(), LABELS, beta1, beta2)
    assert ours.mean().item() == pytest.approx(theirs.item(), abs=1e-6)
    g_ours, = torch.autograd.grad(ours.mean(), LOGITS)
    g_theirs, = torch.autograd.grad(theirs, LOGITS)
    assert (g_ours - g_theirs.float()).abs().max() < 1e-6
    assert g_ours.abs().max() > 1e-3
    if beta2 == 0.0:  # no importance factor: WGA with beta = beta1
        assert torch.allclose(ours, wga(LOGITS, LABELS, beta1), atol=1e-7)


def test_satimp_per_example_by_hand():
    beta1, beta2, rows, labels = 5.0, 1.0, LOGITS.tolist(), LABELS.tolist()
    expected = []
    for b in range(3):
        terms = []
        for t in range(1, 7):
            if labels[b][t] != -100:
                z = rows[b][t - 1]
                p = math.exp(z[labels[b][t]]) / sum(math.exp(v) for v in z)
                terms.append(p ** beta1 * (1 - p) ** beta2 * math.log(p))
        expected.append(sum(terms) / len(terms))
    assert satimp(LOGITS, LABELS, beta1, beta2, reduction="example").tolist() == pytest.approx(expected, abs=1e-6)


def test_satimp_defaults_first_step_and_fit_takes_the_facts(tiny_subject):
    module = SatImp(model=tiny_subject, optimizer=adamw(3e-3))
    # configs/trainer/SatImp.yaml: beta1 5, beta2 1, gamma (forget) 0.1, alpha (retain) 1
    assert (module.beta1, module.beta2, module.forget_weight, module.retain_weight) == (5.0, 1.0, 0.1, 1.0)
    _, rec = fit_quick(module, steps=30)  # forget facts 1.0 -> 0.45 / 0.4 (AVX-512 / AVX2; 20 steps: 0.8 / 0.5)
    data = tiny_data(eval_sets=["forget"])
    data.setup()
    batch = next(iter(data.eval_dataloader(torch.utils.data.Subset(data.forget_set, rec.indices[0].tolist()),
                                           shard=False)))
    logits = saved_logits(tiny_subject, batch)
    assert torch.allclose(rec.objectives[0].forget.detach(), satimp(logits, batch["labels"]), atol=1e-5)
    retain = rec.objectives[0].retain.detach()
    forget = rec.objectives[0].forget.detach()
    assert rec.losses[0] == pytest.approx(float(0.1 * forget.mean() + retain.mean()), rel=1e-5)
    start, end = module.summary["start"], module.summary["end"]
    assert end["forget/fact_acc"] <= start["forget/fact_acc"] - 0.2
    assert end["forget/nll"] > start["forget/nll"]
    assert answer_nll(logits, batch["labels"], "token").shape == (4,)
