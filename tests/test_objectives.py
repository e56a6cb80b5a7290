import math

import pytest
import torch
import torch.nn.functional as F

from lit_unlearn import objectives as O

# Two examples, 4 positions, vocab 3. Position t predicts labels[t + 1].
LOGITS = torch.tensor([
    [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 1.0], [0.0, 0.0, 0.0]],
    [[0.0, 1.0, 3.0], [1.0, 1.0, 1.0], [2.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
])
LABELS = torch.tensor([[-100, -100, 1, 2], [-100, 2, 0, -100]])


def logsoftmax(row, k):
    return row[k] - math.log(sum(math.exp(v) for v in row))


def hand_logps():
    rows = LOGITS.tolist()
    ex0 = [logsoftmax(rows[0][1], 1), logsoftmax(rows[0][2], 2)]
    ex1 = [logsoftmax(rows[1][0], 2), logsoftmax(rows[1][1], 0)]
    return ex0, ex1


def test_sequence_logprob_matches_hand_computation():
    ex0, ex1 = hand_logps()
    logp, n = O.sequence_logprob(LOGITS, LABELS)
    assert n.tolist() == [2, 2]
    assert logp.tolist() == pytest.approx([sum(ex0), sum(ex1)], abs=1e-6)


def test_nll_and_gradient_ascent():
    ex0, ex1 = hand_logps()
    expected = [-sum(ex0) / 2, -sum(ex1) / 2]
    assert O.nll(LOGITS, LABELS).tolist() == pytest.approx(expected, abs=1e-6)
    assert O.nll(LOGITS, LABELS, normalize=False).tolist() == pytest.approx([-sum(ex0), -sum(ex1)], abs=1e-6)
    assert O.gradient_ascent(LOGITS, LABELS).tolist() == pytest.approx([-e for e in expected], abs=1e-6)


def test_npo_value():
    logp, ref = torch.tensor([-2.0, -5.0]), torch.tensor([-3.0, -1.0])
    beta = 0.1
    expected = [-(2 / beta) * math.log(1 / (1 + math.exp(beta * (lp - r))))
                for lp, r in zip(logp.tolist(), ref.tolist())]
    assert O.npo(logp, ref, beta).tolist() == pytest.approx(expected, rel=1e-6)
    # equal policy and reference: (2/beta) log 2
    assert O.npo(ref, ref, beta).tolist() == pytest.approx([2 / beta * math.log(2)] * 2, rel=1e-6)


def test_npo_gradient_tends_to_gradient_ascent():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor([[-100, 1, 2, 3, 4], [-100, -100, 0, 6, 5]])
    ref = torch.tensor([-9.0, -6.0])
    ga = torch.autograd.grad(O.sequence_logprob(logits, labels)[0].sum(), logits)[0]  # d(-NLL)/dθ summed
    errors = []
    for beta in (1.0, 0.1, 0.001):
        logp, _ = O.sequence_logprob(logits, labels)
        g = torch.autograd.grad(O.npo(logp, ref, beta).sum(), logits)[0]
        errors.append((g - ga).norm() / ga.norm())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-2


def test_simnpo_value():
    nll = torch.tensor([0.5, 3.0])
    beta, delta = 4.5, 0.2
    expected = [-(2 / beta) * math.log(1 / (1 + math.exp(-beta * (x - delta)))) for x in nll.tolist()]
    assert O.simnpo(nll, beta, delta).tolist() == pytest.approx(expected, rel=1e-6)


def test_kl_to_reference():
    assert O.kl_to_reference(LOGITS, LOGITS.clone(), LABELS).abs().max() < 1e-7
    other = LOGITS.flip(-1)
    kl = O.kl_to_reference(LOGITS, other, LABELS)
    # by hand for example 0: positions 1 and 2 are scored
    p = F.softmax(other[0, 1:3], -1)
    q = F.log_softmax(LOGITS[0, 1:3], -1)
    expected0 = (p * (p.log() - q)).sum(-1).mean()
    assert kl[0].item() == pytest.approx(expected0.item(), rel=1e-5)
    assert (kl > 0).all()


def test_weighted_mean():
    v = torch.tensor([1.0, 2.0, 3.0])
    assert O.weighted_mean(v).item() == pytest.approx(2.0)
    assert O.weighted_mean(v, torch.tensor([0.0, 0.0, 3.0])).item() == pytest.approx(3.0)
