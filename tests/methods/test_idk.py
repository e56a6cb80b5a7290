"""IdkNLL and IdkDPO: the refusals, the DPO loss by hand, the first step's losses."""

import math

import pytest
import torch

from lit_unlearn import IdkDPO, IdkNLL
from lit_unlearn.methods.idk import load_refusals
from lit_unlearn.objectives import dpo, nll
from tests.helpers import adamw, tiny_data
from tests.helpers.training import fit_quick, saved_logits


def test_dpo_with_identical_answers_is_2_over_beta_log_2():
    lp, ref = torch.tensor([-3.0, -7.0]), torch.tensor([-2.0, -9.0])
    assert dpo(lp, ref, lp, ref, 0.1).tolist() == pytest.approx([20 * math.log(2)] * 2)
    win, lose = torch.tensor([-1.0]), torch.tensor([-4.0])
    expected = -(2 / 0.5) * math.log(1 / (1 + math.exp(-0.5 * ((-1.0 + 2.0) - (-4.0 + 3.0)))))
    assert dpo(win, torch.tensor([-2.0]), lose, torch.tensor([-3.0]), 0.5).item() == pytest.approx(expected)


def test_refusal_list_and_file(tmp_path):
    shipped = load_refusals()
    assert len(shipped) >= 20 and len(set(shipped)) == len(shipped)
    (tmp_path / "r.txt").write_text("No idea.\n\nCan't say.\n")
    assert load_refusals(str(tmp_path / "r.txt")) == ["No idea.", "Can't say."]
    with pytest.raises(FileNotFoundError, match="refusals file"):
        load_refusals(str(tmp_path / "missing.txt"))


def test_idk_nll_scores_the_refusal(tiny_subject):
    module = IdkNLL(model=tiny_subject, optimizer=adamw(), evaluate_at_start=False)
    _, rec = fit_quick(module, steps=1)
    first, index = rec.objectives[0].forget, rec.indices[0]
    refusals = [module.refusal_for(int(i)) for i in index]
    assert all(r in load_refusals() for r in refusals)
    # the first step's forget losses are the subject's NLL/|y| of those questions' refusals
    data = tiny_data(eval_sets=["forget"])
    data.setup()
    encoded = data.encode_answers(data.forget_records, [module.refusal_for(i) for i in range(len(data.forget_set))],
                                  "idk")
    batch = next(iter(data.eval_dataloader(torch.utils.data.Subset(encoded, index.tolist()), shard=False)))
    text = module.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != -100], skip_special_tokens=True)
    assert text.strip() == refusals[0]
    expected = nll(saved_logits(tiny_subject, batch), batch["labels"])
    assert torch.allclose(first, expected, atol=1e-4)


def test_idk_dpo_starts_at_2_over_beta_log_2(tiny_subject):
    module = IdkDPO(model=tiny_subject, beta=0.1, optimizer=adamw(), evaluate_at_start=False)
    _, rec = fit_quick(module, steps=2)
    assert torch.allclose(rec.objectives[0].forget, torch.full((4,), 20 * math.log(2)), atol=1e-3)
    assert module.ref_logps_idk.shape == module.ref_logps.shape == (len(module.idk_set),)
    assert not torch.allclose(rec.objectives[1].forget, torch.full((4,), 20 * math.log(2)), atol=1e-3)  # it moved
