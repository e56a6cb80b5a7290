"""WGA: the loss against open-unlearning's ``compute_wga_loss`` and by hand, the token
reduction, the first step against the starting model, and a fit that raises the forget NLL."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_unlearn import WGA
from lit_unlearn.objectives import answer_nll, nll, reduce_tokens, wga
from tests.helpers import adamw, tiny_data
from tests.helpers.training import fit_quick, saved_logits

# Three examples of 7 positions, vocabulary 11: answers of 3, 5 and 1 tokens (prompt and padding -100).
torch.manual_seed(0)
LOGITS = (2 * torch.randn(3, 7, 11)).requires_grad_()
LABELS = torch.tensor([[-100, -100, -100, 4, 7, 1, -100],
                       [-100, 3, 3, 9, 0, 10, -100],
                       [-100, -100, -100, -100, -100, 5, -100]])


def open_unlearning_wga(logits, labels, beta):
    """A transcription of open-unlearning's ``compute_wga_loss`` (src/trainer/utils.py) after the forward pass."""
    shift_logits = logits[..., :-1, :].contiguous()
    shift_labels = labels[..., 1:].contiguous()
    lm_loss = nn.CrossEntropyLoss(ignore_index=-100, reduction="none")(
        shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))
    weight_ce = ((-lm_loss).exp().detach()) ** beta
    return -(weight_ce * lm_loss)[shift_labels.view(-1) != -100].mean()


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.5])
def test_wga_equals_open_unlearning_loss_and_gradient(beta):
    ours = wga(LOGITS, LABELS, beta)
    assert ours.shape == (3,)
    theirs = open_unlearning_wga(LOGITS.double(), LABELS, beta)
    assert ours.mean().item() == pytest.approx(theirs.item(), abs=1e-6)
    g_ours, = torch.autograd.grad(ours.mean(), LOGITS)
    g_theirs, = torch.autograd.grad(theirs, LOGITS)
    assert (g_ours - g_theirs.float()).abs().max() < 1e-6  # the weight is detached in both
    assert g_ours.abs().max() > 1e-3


def test_wga_per_example_by_hand():
    """reduction="example": each example's mean over its tokens of p^β · log p, by explicit loops."""
    beta, rows, labels = 1.5, LOGITS.tolist(), LABELS.tolist()
    expected = []
    for b in range(3):
        terms = []
        for t in range(1, 7):
            if labels[b][t] == -100:
                continue
            z = rows[b][t - 1]
            logp = z[labels[b][t]] - math.log(sum(math.exp(v) for v in z))
            terms.append(math.exp(logp) ** beta * logp)
        expected.append(sum(terms) / len(terms))
    assert wga(LOGITS, LABELS, beta, reduction="example").tolist() == pytest.approx(expected, abs=1e-6)
    # the token reduction weighs each example by its number of tokens (3, 5, 1 of 9)
    token = wga(LOGITS, LABELS, beta, reduction="token").tolist()
    assert token == pytest.approx([e * n * 3 / 9 for e, n in zip(expected, (3, 5, 1))], abs=1e-6)


def test_reduce_tokens_and_the_retain_nll():
    values = torch.tensor([[1.0, 2.0, 9.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert reduce_tokens(values, mask, "example").tolist() == [1.5, 4.0]
    assert reduce_tokens(values, mask, "token").tolist() == pytest.approx([2.0, 8 / 3])  # mean: (1 + 2 + 4) / 3
    assert reduce_tokens(values, torch.zeros_like(mask), "token").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="reduction"):
        reduce_tokens(values, mask, "sum")
    # "token" averages to Hugging Face's outputs.loss; "example" is NLL/|y|
    hf = F.cross_entropy(LOGITS[:, :-1].flatten(0, 1), LABELS[:, 1:].flatten(), ignore_index=-100)
    assert answer_nll(LOGITS, LABELS, "token").mean().item() == pytest.approx(hf.item(), abs=1e-6)
    assert torch.allclose(answer_nll(LOGITS, LABELS, "example"), nll(LOGITS, LABELS), atol=1e-6)


def rows_batch(index):
    """The forget rows ``index`` collated as one batch, in order."""
    data = tiny_data(eval_sets=["forget"])
    data.setup()
    return next(iter(data.eval_dataloader(torch.utils.data.Subset(data.forget_set, index.tolist()), shard=False)))


def test_wga_first_step_then_fit_raises_forget_nll(tiny_subject):
    module = WGA(model=tiny_subject, optimizer=adamw(1e-3))
    assert (module.beta, module.forget_weight, module.retain_weight, module.reduction) == (1.0, 1.0, 1.0, "token")
    _, rec = fit_quick(module, steps=6)
    batch = rows_batch(rec.indices[0])
    expected = wga(saved_logits(tiny_subject, batch), batch["labels"], 1.0)
    assert torch.allclose(rec.objectives[0].forget.detach(), expected, atol=1e-5)
    start, end = module.summary["start"], module.summary["end"]
    assert end["forget/nll"] > 1.5 * start["forget/nll"]
    assert end["forget/token_acc"] < start["forget/token_acc"] - 0.02
    with pytest.raises(ValueError, match="reduction"):
        WGA(model=tiny_subject, reduction="mean")


def test_wga_kl_retain_term(tiny_subject):
    module = WGA(model=tiny_subject, retain_loss="kl", optimizer=adamw(1e-3), evaluate_at_start=False)
    _, rec = fit_quick(module, steps=2)
    assert module.retain_kind == "kl"
    assert rec.objectives[0].retain.abs().max() < 1e-5  # KL of the starting model against itself
    assert rec.objectives[1].retain.abs().max() > 1e-6


@pytest.mark.parametrize("reduction", ["token", "example"])
def test_the_nll_retain_term_follows_the_reduction(tiny_subject, reduction):
    """The base class's NLL retain term reduces as the method says: ``token`` is open-unlearning's
    batch token mean (Hugging Face's ``outputs.loss``), ``example`` each row's mean."""
    module = WGA(model=tiny_subject, reduction=reduction)
    module.configure_model()
    batch = rows_batch(torch.arange(8))
    with torch.no_grad():
        logits = module(batch)
        got = module.retain_objective(batch)
    assert torch.allclose(got, answer_nll(logits, batch["labels"], reduction), atol=1e-6)
    other = answer_nll(logits, batch["labels"], "example" if reduction == "token" else "token")
    assert (got - other).abs().max() > 1e-4  # the rows' answer lengths differ, so the reductions do
