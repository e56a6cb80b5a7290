"""CE-U: the loss against open-unlearning's ``cross_entropy_unlearning_loss`` / ``compute_batch_ceu``
and by hand, the first answer token left out, and a fit that lowers the forget answers."""

import math

import pytest
import torch
import torch.nn.functional as F

from lit_unlearn import CEU
from lit_unlearn.objectives import ceu, skip_first_answer_tokens
from tests.helpers import adamw, tiny_data
from tests.helpers.training import fit_quick, saved_logits

# Three examples of 7 positions, vocabulary 11: answers of 3, 5 and 2 tokens (prompt and padding -100).
torch.manual_seed(2)
LOGITS = (2 * torch.randn(3, 7, 11)).requires_grad_()
LABELS = torch.tensor([[-100, -100, -100, 4, 7, 1, -100],
                       [-100, 3, 3, 9, 0, 10, -100],
                       [-100, -100, -100, -100, 2, 5, -100]])


def open_unlearning_ceu(logits, labels, ignore_first_n_answer_tokens=1):
    """A transcription of open-unlearning's ``compute_batch_ceu`` and ``cross_entropy_unlearning_loss``
    (src/trainer/unlearn/ceu.py) after the forward pass."""
    valid_mask = labels != -100
    update_mask = (valid_mask.cumsum(dim=-1) <= ignore_first_n_answer_tokens) & valid_mask
    labels = labels.masked_fill(update_mask, -100)
    shifted_labels = labels[..., 1:].contiguous()
    shifted_logits = logits[..., :-1, :].contiguous()
    valid = shifted_labels != -100
    valid_logits, valid_labels = shifted_logits[valid], shifted_labels[valid]
    target_logits = valid_logits.detach().clone()
    target_logits.scatter_(dim=-1, index=valid_labels.unsqueeze(-1), value=float("-inf"))
    return F.cross_entropy(input=valid_logits, target=F.softmax(target_logits, dim=-1))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_ceu_equals_open_unlearning_loss_and_gradient(n):
    ours = ceu(LOGITS, LABELS, n)
    assert ours.shape == (3,)
    theirs = open_unlearning_ceu(LOGITS.double(), LABELS, n)
    assert ours.mean().item() == pytest.approx(theirs.item(), abs=1e-6)
    g_ours, = torch.autograd.grad(ours.mean(), LOGITS)
    g_theirs, = torch.autograd.grad(theirs, LOGITS)
    assert (g_ours - g_theirs.float()).abs().max() < 1e-6
    assert g_ours.abs().max() > 1e-2


def test_ceu_by_hand_and_the_skipped_tokens():
    """reduction="example" by explicit loops: q is the softmax without the answer token, CE = -Σ q log p."""
    rows, labels = LOGITS.tolist(), LABELS.tolist()
    expected = []
    for b in range(3):
        answer = [t for t in range(7) if labels[b][t] != -100][1:]  # the first answer token is not scored
        terms = []
        for t in answer:
            z, y = rows[b][t - 1], labels[b][t]
            log_norm = math.log(sum(math.exp(v) for v in z))
            rest = sum(math.exp(v) for k, v in enumerate(z) if k != y)
            terms.append(-sum(math.exp(v) / rest * (v - log_norm) for k, v in enumerate(z) if k != y))
        expected.append(sum(terms) / len(terms))
    assert ceu(LOGITS, LABELS, 1, reduction="example").tolist() == pytest.approx(expected, abs=1e-6)
    assert skip_first_answer_tokens(LABELS, 1)[2].tolist() == [-100] * 5 + [5, -100]
    # no answer token left: 0 (open-unlearning's mean over nothing is NaN)
    assert ceu(LOGITS[2:], LABELS[2:], 2).tolist() == [0.0]


def test_ceu_first_step_then_fit_lowers_the_answers(tiny_subject):
    module = CEU(model=tiny_subject, optimizer=adamw(1e-3))
    assert module.ignore_first_n_answer_tokens == 1 and not module.has_retain_term()
    _, rec = fit_quick(module, steps=6)
    data = tiny_data(eval_sets=["forget"])
    data.setup()
    batch = next(iter(data.eval_dataloader(torch.utils.data.Subset(data.forget_set, rec.indices[0].tolist()),
                                           shard=False)))
    expected = ceu(saved_logits(tiny_subject, batch), batch["labels"])
    assert torch.allclose(rec.objectives[0].forget.detach(), expected, atol=1e-4)
    assert all(o.retain is None for o in rec.objectives)
    start, end = module.summary["start"], module.summary["end"]
    assert end["forget/nll"] > 3 * start["forget/nll"]
    assert end["forget/token_acc"] < start["forget/token_acc"] - 0.05
    with pytest.raises(ValueError, match="ignore_first_n_answer_tokens"):
        CEU(model=tiny_subject, ignore_first_n_answer_tokens=-1)
