from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from lit_unlearn import FictitiousPeople, GradAscent, GradDiff, RelearningProbe


def make(tiny_subject, method=GradDiff, lr=1e-3, **kw):
    seed_everything(0)
    return method(model=tiny_subject, optimizer=partial(torch.optim.AdamW, lr=lr), save_model=False,
                  evaluate_at_start=False, **kw)


def fit(module, callbacks, steps):
    trainer = Trainer(max_steps=steps, callbacks=callbacks, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=FictitiousPeople("tiny", batch_size=4, eval_sets=["forget", "retain"]))
    return trainer


def test_probe_restores_weights_optimizer_and_rng_exactly(tiny_subject):
    probe = RelearningProbe(at_end=False, steps=5, lr=1e-2)
    module = make(tiny_subject, method=GradAscent, lr=5e-3)
    trainer = fit(module, [probe], steps=8)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    opt = trainer.optimizers[0]
    opt_before = {k: v.clone() for k, v in opt.state[next(iter(opt.state))].items() if torch.is_tensor(v)}
    rng = torch.get_rng_state()
    relearn, moved = probe._relearn_steps, []

    def relearn_and_look(*args):  # the probe really trains before it restores
        relearn(*args)
        moved.append(any(not torch.equal(v, before[k]) for k, v in module.model.state_dict().items()))

    probe._relearn_steps = relearn_and_look
    result = probe.probe(trainer, module)
    assert moved == [True]
    assert result["unlearned"] < 1.0 and result["relearned"] > result["unlearned"]  # relearning brought some back
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in opt.state[next(iter(opt.state))].items():
        if torch.is_tensor(v):
            assert torch.equal(v, opt_before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_probe_mid_run_leaves_training_bit_identical(tiny_subject):
    plain = make(tiny_subject)
    fit(plain, [], steps=8)
    probed = make(tiny_subject)
    probe = RelearningProbe(every_n_steps=3, at_end=False, steps=4, lr=1e-2)
    fit(probed, [probe], steps=8)
    assert [h["step"] for h in probe.history] == [3, 6]
    for (k, a), (_, b) in zip(plain.model.state_dict().items(), probed.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_forgotten_facts_come_back_after_gradient_ascent(tiny_subject):
    probe = RelearningProbe(steps=20, lr=3e-3, relearn_fraction=0.5)
    module = make(tiny_subject, method=GradAscent, lr=2e-3)
    fit(module, [probe], steps=10)
    result = probe.history[-1]
    assert probe.start_value >= 0.9  # the subject knew the held-out forget facts
    assert result["unlearned"] < 0.5 * probe.start_value  # gradient ascent removed them ...
    assert result["recovery"] > 0  # ... and relearning half of the forget set brings some back
    assert result["recovery"] == pytest.approx(
        (result["relearned"] - result["unlearned"]) / (probe.start_value - result["unlearned"]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="`relearn_fraction` must be in"):
        RelearningProbe(relearn_fraction=1.0)
    with pytest.raises(ValueError, match="`steps` must be a positive integer"):
        RelearningProbe(steps=0)
