import torch

from lit_unlearn.evaluation import TeacherForcedMetrics, teacher_forced_stats

# vocab 4; example 0 scores positions 2,3 (labels 2 and 3), example 1 scores positions 1,2,3
LABELS = torch.tensor([[-100, -100, 2, 3], [-100, 1, 1, 0]])
FACT = torch.tensor([[False, False, False, True], [False, True, True, False]])


def logits_for(predictions):
    """Logits whose argmax at position t is predictions[b][t] (log-softmax of 2 vs 0 entries)."""
    out = torch.zeros(2, 4, 4)
    for b, row in enumerate(predictions):
        for t, k in enumerate(row):
            out[b, t, k] = 2.0
    return out


def test_stats_by_hand():
    # example 0: predicts 2 (right) then 0 (wrong, label 3); example 1: predicts 1, 1, 0 (all right)
    logits = logits_for([[0, 2, 0, 0], [1, 1, 0, 0]])
    s = teacher_forced_stats(logits, LABELS, FACT)
    assert s["tokens"].tolist() == [2, 3]
    assert s["correct"].tolist() == [1, 3]
    # fact token of example 0 (position 3) is wrong; example 1's fact tokens (1, 2) are right
    assert s["fact_correct"].tolist() == [False, True]
    assert s["answer_correct"].tolist() == [False, True]  # example 0 misses its last token
    p_hit = torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 3)
    p_miss = 1 / (torch.exp(torch.tensor(2.0)) + 3)
    nll0 = -(torch.log(p_hit) + torch.log(p_miss)) / 2
    nll1 = -torch.log(p_hit)
    assert torch.allclose(s["nll"], torch.stack([nll0, nll1]), atol=1e-6)
    assert torch.allclose(s["prob"], torch.exp(-s["nll"]))


def test_metric_accumulates_and_shards_exactly():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, 4)
    labels = torch.randint(0, 4, (6, 4))
    labels[:, 0] = -100
    fact = torch.zeros(6, 4, dtype=torch.bool)
    fact[:, 2] = True
    whole = TeacherForcedMetrics()
    whole.update(logits, labels, fact)
    parts = TeacherForcedMetrics()
    for idx in ([0, 2, 4], [1, 3, 5]):  # what two ranks would see
        parts.update(logits[idx], labels[idx], fact[idx])
    a, b = whole.compute(), parts.compute()
    assert a.keys() == b.keys() == {"nll", "prob", "token_acc", "answer_em", "fact_acc"}
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-7)
    s = teacher_forced_stats(logits, labels, fact)
    assert torch.isclose(a["token_acc"], s["correct"].sum() / s["tokens"].sum())
    assert torch.isclose(a["fact_acc"], s["fact_correct"].float().mean())
    assert torch.isclose(a["answer_em"], s["answer_correct"].float().mean())


def test_fact_acc_only_counts_examples_with_a_span():
    m = TeacherForcedMetrics()
    m.update(logits_for([[0, 2, 3, 0], [1, 1, 0, 0]]), LABELS)
    assert "fact_acc" not in m.compute()
