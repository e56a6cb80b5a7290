"""Each metric against an independent computation on fixed inputs."""

import math
import zlib

import pytest
import torch
from scipy.stats import ks_2samp

from lit_unlearn.evaluation import (
    MembershipInference,
    OptionProbability,
    TruthRatio,
    auc,
    exact_memorization,
    extraction_strength,
    forget_quality,
    harmonic_mean,
    mia_scores,
    option_probability,
    privacy_leak,
    rouge_l,
    truth_ratio,
    truth_ratio_score,
)
from lit_unlearn.evaluation.forget_quality import ForgetQuality
from lit_unlearn.evaluation.mia import zlib_length


def test_truth_ratio_by_hand():
    para = torch.tensor([0.5, 2.0])
    pert = torch.tensor([[1.0, 3.0], [1.0, 1.5]])
    mask = torch.tensor([[True, True], [True, False]])
    # P_para = exp(-0.5); geometric mean of P_pert = exp(-(1+3)/2) -> TR = exp(0.5 - 2)
    expected = [math.exp(0.5 - 2.0), math.exp(2.0 - 1.0)]
    assert truth_ratio(para, pert, mask).tolist() == pytest.approx(expected)
    tr = torch.tensor(expected)
    assert truth_ratio_score(tr, forget=True).item() == pytest.approx((expected[0] + 1 / expected[1]) / 2)
    assert truth_ratio_score(tr, forget=False).item() == pytest.approx((1 - expected[0] + 0) / 2)
    metric = TruthRatio(forget=True)
    metric.update(para[:1], pert[:1], mask[:1])
    metric.update(para[1:], pert[1:], mask[1:])
    assert metric.compute().item() == pytest.approx((expected[0] + 1 / expected[1]) / 2)
    assert metric.values().tolist() == pytest.approx(expected)


def test_forget_quality_is_the_ks_p_value():
    a = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.9, 0.22])
    b = torch.tensor([0.5, 0.7, 1.1, 1.3, 0.95])
    assert forget_quality(a, b) == pytest.approx(ks_2samp(a.numpy(), b.numpy()).pvalue)
    assert forget_quality(a, a.clone()) == 1.0
    fq = ForgetQuality(reference=b)
    fq.update(torch.zeros(6), -torch.log(a)[:, None])  # TR = exp(0 + log a) = a
    assert fq.compute().item() == pytest.approx(ks_2samp(a.numpy(), b.numpy()).pvalue)


def rank_auc(pos, neg):
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in pos for n in neg]
    return sum(pairs) / len(pairs)


def test_auc_matches_pair_counting():
    torch.manual_seed(0)
    pos, neg = torch.randn(13) + 0.5, torch.randn(9)
    pos[0] = neg[0]  # a tie
    assert auc(pos, neg) == pytest.approx(rank_auc(pos.tolist(), neg.tolist()), abs=1e-6)
    metric = MembershipInference(("loss",))
    metric.update({"loss": pos[:5]}, member=True)
    metric.update({"loss": neg}, member=False)
    metric.update({"loss": pos[5:]}, member=True)
    assert metric.compute()["loss"].item() == pytest.approx(rank_auc(pos.tolist(), neg.tolist()))


def test_mia_scores_by_hand():
    torch.manual_seed(1)
    logits = torch.randn(1, 6, 5)
    labels = torch.tensor([[-100, 2, 0, 4, 1, 3]])
    lsm = torch.log_softmax(logits, -1)
    token_lp = [lsm[0, t - 1, labels[0, t]].item() for t in range(1, 6)]
    k = 0.4  # ceil(0.4 * 5) = 2 lowest
    scores = mia_scores(logits, labels, torch.tensor([17]), k=k)
    assert scores["loss"].item() == pytest.approx(sum(token_lp) / 5, abs=1e-6)
    assert scores["zlib"].item() == pytest.approx(sum(token_lp) / 5 / 17, abs=1e-6)
    assert scores["min_k"].item() == pytest.approx(sum(sorted(token_lp)[:2]) / 2, abs=1e-6)
    z = []
    for t in range(1, 6):
        p = lsm[0, t - 1].exp()
        mu = (p * lsm[0, t - 1]).sum()
        sd = ((p * lsm[0, t - 1] ** 2).sum() - mu**2).sqrt()
        z.append(((token_lp[t - 1] - mu) / sd).item())
    assert scores["min_k_pp"].item() == pytest.approx(sum(sorted(z)[:2]) / 2, abs=1e-5)
    assert zlib_length("hello hello hello") == len(zlib.compress(b"hello hello hello"))


def test_privacy_leak_formula():
    assert privacy_leak(0.5, 0.5) == 0.0
    # AUC' = 1 - AUC: unlearned 0.1 vs retain 0.5 -> (0.1 - 0.5) / 0.5 * 100
    assert privacy_leak(0.9, 0.5) == pytest.approx(-80.0)
    assert privacy_leak(0.4, 0.5) == pytest.approx(20.0)


def hit_logits(pred_ids, vocab=5):
    out = torch.zeros(1, len(pred_ids), vocab)
    for t, k in enumerate(pred_ids):
        out[0, t, k] = 3.0
    return out


def test_exact_memorization_and_extraction_strength():
    labels = torch.tensor([[-100, -100, 1, 2, 3, 4]])  # answer tokens at positions 2..5
    # predictions for positions 2..5 come from logits at 1..4
    all_right = hit_logits([0, 1, 2, 3, 4, 0])
    assert exact_memorization(all_right, labels).item() == 1.0
    assert extraction_strength(all_right, labels).item() == 1.0
    first_wrong = hit_logits([0, 0, 2, 3, 4, 0])  # only the first answer token wrong
    assert exact_memorization(first_wrong, labels).item() == pytest.approx(0.75)
    assert extraction_strength(first_wrong, labels).item() == pytest.approx(1 - 1 / 4)
    last_wrong = hit_logits([0, 1, 2, 3, 0, 0])
    # no suffix predicted: open-unlearning's loop ends at the last position (1/|y|); "zero" gives 0
    assert extraction_strength(last_wrong, labels).item() == pytest.approx(1 / 4)
    assert extraction_strength(last_wrong, labels, no_match="zero").item() == 0.0
    middle_wrong = hit_logits([0, 1, 0, 3, 4, 0])  # suffix from answer position 2 matches
    assert extraction_strength(middle_wrong, labels).item() == pytest.approx(1 - 2 / 4)


def test_option_probability():
    correct, wrong = torch.tensor([0.5]), torch.tensor([[1.0, 2.0, 9.0]])
    mask = torch.tensor([[True, True, False]])
    p = math.exp(-0.5)
    expected = p / (p + math.exp(-1.0) + math.exp(-2.0))
    assert option_probability(correct, wrong, mask).item() == pytest.approx(expected)
    m = OptionProbability()
    m.update(correct, wrong, mask)
    assert m.compute().item() == pytest.approx(expected)


def test_rouge_l_on_known_strings():
    s = rouge_l(["the cat sat on the mat", "completely different"], ["the cat was on the mat today", "the cat"])
    # LCS of the first pair: "the cat on the mat" = 5 of 7 reference and 5 of 6 predicted words
    recall, precision = 5 / 7, 5 / 6
    assert s["recall"].tolist() == pytest.approx([recall, 0.0])
    assert s["f1"].tolist() == pytest.approx([2 * recall * precision / (recall + precision), 0.0])


def test_harmonic_mean():
    assert harmonic_mean([0.5, 0.25]) == pytest.approx(2 / (2 + 4))
    assert harmonic_mean([0.5, 0.0]) == 0.0
