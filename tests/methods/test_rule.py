"""RULE: the reward, GRPO's advantages and loss against hand computations, a policy-gradient step's
direction, and a fit through both stages on the tiny benchmark."""

import math

import pytest
import torch

from lit_unlearn import RULE
from lit_unlearn.methods.rule import batch_advantages, completion_mask, group_advantages, grpo_loss, rule_rewards
from lit_unlearn.objectives import nll
from tests.helpers import adamw, snapshot
from tests.helpers.training import fit_quick, saved_logits


def refuses(text: str) -> bool:
    return text.startswith("I can't")


def test_rewards_follow_the_rules():
    answers = ["I can't say.", "He was born in Ulm.", "I can't say.", "born in Paris in 1900", "anything", ""]
    forget = [True, True, False, False, False, False]
    refs = [None, None, "born in Paris", "born in Paris", "born in Paris", None]
    refused = [refuses(a) for a in answers]
    got = rule_rewards(answers, forget, refs, refused, scorer="rouge_score").tolist()
    # forget: refusal 1, answer 0; boundary: refusal -1, else recall of the reference (3/3, 0/3), no reference 1
    assert got == pytest.approx([1.0, 0.0, -1.0, 1.0, 0.0, 1.0])
    assert rule_rewards(answers, forget, refs, refused, scorer="none").tolist() == pytest.approx(
        [1.0, 0.0, -1.0, 1.0, 1.0, 1.0])
    assert rule_rewards(answers[:3], forget[:3], refs[:3], refused[:3], boundary_refusal=-0.5).tolist()[2] == -0.5
    with pytest.raises(ValueError, match="one of each"):
        rule_rewards(answers, forget, refs, refused[:2])
    with pytest.raises(ValueError, match="scorer"):
        rule_rewards(answers, forget, refs, refused, scorer="bleu")


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    got = group_advantages(rewards, 4)
    mean, std = 0.25, math.sqrt(((0.75 ** 2) + 3 * 0.25 ** 2) / 3)  # unbiased, as TRL
    expected = [(r - mean) / (std + 1e-4) for r in (1.0, 0.0, 0.0, 0.0)] + [0.0] * 4
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(rewards, 3)


def test_batch_advantages_by_hand():
    """REINFORCE++-style: one mean and std over the batch, so an all-refusal group still gets a sign."""
    rewards = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0, 1.0])
    mean = 0.0
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards.tolist()) / 5)
    assert batch_advantages(rewards).tolist() == pytest.approx([r / (std + 1e-4) for r in rewards.tolist()], abs=1e-6)
    assert group_advantages(rewards, 2).tolist()[:4] == [0.0] * 4  # what the group baseline gives those pairs
    assert batch_advantages(torch.ones(4)).tolist() == [0.0] * 4


def test_grpo_loss_by_hand():
    torch.manual_seed(0)
    logps = (-torch.rand(3, 4) * 3).requires_grad_()
    ref = -torch.rand(3, 4) * 3
    adv = torch.tensor([1.5, -0.5, 0.0])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]).float()
    beta = 0.04
    loss, kl = grpo_loss(logps, ref, adv, mask, beta)
    expected, expected_kl = [], []
    for i in range(3):
        terms, kls = [], []
        for t in range(4):
            if not mask[i, t]:
                continue
            d = float(ref[i, t] - logps[i, t].detach())
            k = math.exp(d) - d - 1
            terms.append(-(1.0 * float(adv[i]) - beta * k))  # the ratio is exp(0) = 1 in value
            kls.append(k)
        expected.append(sum(terms) / len(terms))
        expected_kl.append(sum(kls) / len(kls))
    assert loss.tolist() == pytest.approx(expected, abs=1e-6)
    assert kl.tolist() == pytest.approx(expected_kl, abs=1e-6)
    # gradient: -A/|o| per token plus beta * d(kl)/d(logp) / |o| = beta * (1 - exp(ref - logp)) / |o|
    loss.sum().backward()
    n = mask.sum(1, keepdim=True)
    want = (-adv[:, None] + beta * (1 - torch.exp(ref - logps.detach()))) * mask / n
    assert torch.allclose(logps.grad, want, atol=1e-6)


def test_completion_mask_stops_after_the_first_eos():
    tokens = torch.tensor([[5, 6, 2, 0, 0], [5, 5, 5, 5, 5], [2, 2, 0, 0, 0]])
    assert completion_mask(tokens, 2).int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_a_positive_advantage_raises_the_sampled_answer(tiny_subject):
    """One small SGD step on GRPO's loss raises ``J = Σ_i A_i · mean_t log p(answer_i)``: the answer with
    A > 0 gains on the one with A < 0, by the first-order amount ``lr · ‖∇J‖² / 2`` (the loss's mean over
    the two answers is ``-J / 2``). Each answer on its own may rise or fall: they share the weights."""
    module = RULE(model=tiny_subject, group_size=2, max_new_tokens=6, beta=0.0)
    module.configure_model()
    torch.manual_seed(0)
    prompt = torch.tensor(module.tokenizer("Question: Where was Ada born?\nAnswer:")["input_ids"])
    ids, mask, width = module.sample([prompt])
    assert ids.shape[0] == 2 and (ids[0, width:] != ids[1, width:]).any()
    answer_mask = mask[:, width:].float()
    advantages = torch.tensor([1.0, -1.0])

    def objective() -> torch.Tensor:
        means = (module.answer_logps(module.model, ids, mask, width) * answer_mask).sum(1) / answer_mask.sum(1)
        return (advantages * means).sum()

    before = objective().detach()
    lr = 1e-3
    opt = torch.optim.SGD(module.model.parameters(), lr=lr)
    loss, _ = grpo_loss(module.answer_logps(module.model, ids, mask, width), torch.zeros_like(answer_mask),
                        advantages, answer_mask, beta=0.0)
    loss.mean().backward()
    grad_sq = sum(float(p.grad.square().sum()) for p in module.model.parameters() if p.grad is not None)
    opt.step()
    gain = float(objective().detach() - before)
    predicted = lr * 4 * grad_sq / 2  # ∇J = -2 ∇loss.mean(), so ‖∇J‖² = 4 grad_sq
    assert predicted > 1e-3
    assert gain == pytest.approx(predicted, rel=0.1)


def test_fit_runs_rejection_steering_then_reinforcement(tiny_subject):
    module = RULE(model=tiny_subject, optimizer=adamw(1e-3), rs_steps=2, rs_fraction=0.25, group_size=2,
                  max_new_tokens=8, evaluate_at_start=False)
    module.configure_model()
    start = snapshot(module.model)
    _, rec = fit_quick(module, steps=4, batch_size=2)
    n_forget = len(module._datamodule().forget_set)
    assert len(module.rs_rows) == math.ceil(0.25 * n_forget)
    # stage one: the refusal NLL of the steering rows, against the saved start model's logits
    first = rec.objectives[0]
    assert float(first.logs["stage"]) == 1.0
    idk = module.refusal_batch(torch.tensor(module.rs_rows[:2]))
    assert torch.allclose(first.forget.detach(), nll(saved_logits(tiny_subject, idk), idk["labels"]), atol=1e-5)
    assert first.retain.shape == (2,) and (first.retain > 0).all()  # rs_retain: the boundary NLL beside it
    # stage two: one loss per sampled answer (2 forget + 2 boundary questions, 2 answers each)
    last = rec.objectives[-1]
    assert float(last.logs["stage"]) == 2.0
    assert last.forget.shape == (4,) and last.retain.shape == (4,)
    for key in ("reward_forget", "reward_boundary", "refusal_forget", "refusal_boundary", "kl"):
        assert torch.isfinite(last.logs[key])
    assert float(last.logs["kl"]) > 0  # two rejection-steering steps moved the policy
    assert any(not torch.equal(p, start[n]) for n, p in module.model.named_parameters())
    # the sampled questions are the encoded ones: a forget prompt decodes to its question
    prompt, _ = module.questions["forget"][0]
    assert module._datamodule().forget_records.rows[0]["question"] in module.tokenizer.decode(prompt)


def test_bad_arguments(tiny_subject):
    for kwargs, match in (({"group_size": 1}, "group_size"), ({"advantage": "ppo"}, "advantage"),
                          ({"rs_retain": "yes"}, "rs_retain"), ({"rs_fraction": 0.0}, "rs_fraction"),
                          ({"top_p": 1.5}, "top_p"), ({"scorer": "bleu"}, "scorer"), ({"rs_steps": -1}, "rs_steps")):
        with pytest.raises(ValueError, match=match):
            RULE(model=tiny_subject, **kwargs)
    with pytest.raises(ValueError, match="policy-gradient loss"):
        RULE(model=tiny_subject).retain_objective(None)
