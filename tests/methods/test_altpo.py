"""AltPO: the DPO loss against open-unlearning's ``compute_dpo_loss``, the alternates (the forget
records' perturbed answers, rotating with the epoch), the first step, and a fit that moves the
model from the forget answers to the alternates."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from torch import nn

from lit_unlearn import AltPO
from lit_unlearn.objectives import dpo, sequence_logprob
from tests.helpers import adamw, tiny_data
from tests.helpers.training import fit_quick

# Win (alternate) and lose (forget) answers of two examples: policy and reference logits.
torch.manual_seed(3)
WIN, WIN_REF, LOSE, LOSE_REF = (torch.randn(2, 6, 9) for _ in range(4))
WIN.requires_grad_()
LOSE.requires_grad_()
WIN_LABELS = torch.tensor([[-100, -100, 4, 2, 8, -100], [-100, 1, 1, 7, 0, 3]])
LOSE_LABELS = torch.tensor([[-100, -100, -100, 6, 5, -100], [-100, 2, 8, -100, -100, -100]])


def open_unlearning_dpo(win, win_ref, lose, lose_ref, beta):
    """A transcription of open-unlearning's ``compute_batch_nll`` and ``compute_dpo_loss``
    (src/trainer/utils.py) after the forward passes."""
    def batch_nll(logits, labels):
        shifted_labels, logits = labels[..., 1:].contiguous(), logits[..., :-1, :].contiguous()
        return nn.CrossEntropyLoss(ignore_index=-100, reduction="none")(logits.transpose(-1, -2),
                                                                        shifted_labels).sum(dim=-1)

    win_log_ratio = -(batch_nll(win, WIN_LABELS) - batch_nll(win_ref, WIN_LABELS))
    lose_log_ratio = -(batch_nll(lose, LOSE_LABELS) - batch_nll(lose_ref, LOSE_LABELS))
    return -2 / beta * F.logsigmoid(beta * (win_log_ratio - lose_log_ratio)).mean()


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
def test_altpo_loss_equals_open_unlearning_dpo(beta):
    def logp(logits, labels):
        return sequence_logprob(logits, labels)[0]

    ours = dpo(logp(WIN, WIN_LABELS), logp(WIN_REF, WIN_LABELS), logp(LOSE, LOSE_LABELS), logp(LOSE_REF, LOSE_LABELS),
               beta)
    assert ours.shape == (2,)
    theirs = open_unlearning_dpo(WIN.double(), WIN_REF.double(), LOSE.double(), LOSE_REF.double(), beta)
    assert ours.mean().item() == pytest.approx(theirs.item(), rel=1e-6)  # float32 against float64 (~27)
    grads_ours = torch.autograd.grad(ours.mean(), (WIN, LOSE))
    grads_theirs = torch.autograd.grad(theirs, (WIN, LOSE))
    for g_ours, g_theirs in zip(grads_ours, grads_theirs):
        assert (g_ours - g_theirs.float()).abs().max() < 1e-6
        assert g_ours.abs().max() > 1e-2


class AlternateRecorder(Callback):
    """The forget rows, the epoch and the alternate rows of every training step."""

    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        index = batch["forget"]["index"]
        self.steps.append((index.tolist(), trainer.current_epoch, module.alternate_index(index).tolist()))


def test_altpo_alternates_first_step_and_fit(tiny_subject):
    module = AltPO(model=tiny_subject, optimizer=adamw(1e-3))
    assert (module.beta, module.forget_weight, module.retain_weight, module.alternate_field) == \
        (0.1, 1.0, 1.0, "perturbed_answer")
    recorder = AlternateRecorder()
    _, rec = fit_quick(module, steps=12, callbacks=[recorder])
    data = tiny_data()
    data.setup()
    rows = data.forget_records.rows
    # every alternate of every question encoded, question by question, with its reference log-prob
    assert module.alt_count.tolist() == [len(r["perturbed_answer"]) for r in rows] == [3] * len(rows)
    assert len(module.idk_set) == module.ref_logps_alt.shape[0] == 3 * len(rows)
    tok = module.tokenizer
    for row in (0, 7):
        for j in range(3):
            ids, labels, _, _ = module.idk_set[3 * row + j]
            text = tok.decode(ids[labels != -100], skip_special_tokens=True).strip()
            assert text == rows[row]["perturbed_answer"][j]
            assert module.idk_set.records.rows[3 * row + j]["question"] == rows[row]["question"]
    # epoch e pairs each question with its alternate e mod 3 (20 forget rows, batches of 4: 5 steps an epoch)
    assert [epoch for _, epoch, _ in recorder.steps] == [0] * 5 + [1] * 5 + [2] * 2
    for index, epoch, alternates in recorder.steps:
        assert alternates == [3 * i + epoch for i in index]
    # step 0: policy = reference for both answers, so the loss is (2/β) log 2
    assert torch.allclose(rec.objectives[0].forget.detach(), torch.full((4,), 20 * math.log(2)), atol=1e-3)
    assert abs(float(rec.objectives[0].logs["margin"])) < 1e-3
    assert float(rec.objectives[-1].logs["margin"]) > 1.0  # the alternates gained on the forget answers
    # and became more likely: DPO does not promise it every step (after 8 steps the alternates' log-ratio is
    # -0.64 or +0.94 depending on the CPU kernels that built the tiny subject); after 12 it is 2.4 or 3.2
    assert float(rec.objectives[-1].logs["alternate_log_ratio"]) > 1.0
    start, end = module.summary["start"], module.summary["end"]
    assert end["forget/nll"] > 2 * start["forget/nll"]


def test_altpo_needs_an_alternate_for_every_question(tiny_subject):
    module = AltPO(model=tiny_subject, alternate_field="counterfactual", optimizer=adamw(), evaluate_at_start=False)
    with pytest.raises(ValueError, match="'counterfactual' is missing or empty in row 0"):
        fit_quick(module, steps=1)
    assert AltPO(model=tiny_subject, max_alternates=2).alternates_of({"perturbed_answer": ["a", "", "b", "c"]}) == \
        ["a", "b"]
    assert AltPO(model=tiny_subject, alternate_field="alt").alternates_of({"alt": "one"}) == ["one"]
