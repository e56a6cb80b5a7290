import pytest
import torch

from lit_unlearn import GradAscent, GradDiff, RelearningProbe
from tests.helpers import adamw, fit, tiny_data


def train(tiny_subject, callbacks, steps, method=GradDiff, lr=1e-3):
    """``method`` with AdamW at ``lr`` for ``steps`` steps; returns the trainer and the module."""
    module = method(model=tiny_subject, optimizer=adamw(lr), evaluate_at_start=False)
    trainer, _ = fit(module, tiny_data(eval_sets=["forget", "retain"]), steps=steps, callbacks=callbacks,
                     limit_val_batches=0)
    return trainer, module


def test_probe_restores_weights_optimizer_and_rng_exactly(tiny_subject):
    # Calibrated on CPU: the subject knows all 10 held-out facts, 5 GradAscent steps at 3e-3 leave 0 of
    # them, 10 relearning steps at 3e-3 on the other half bring 9 back.
    probe = RelearningProbe(at_end=False, steps=10, lr=3e-3)
    trainer, module = train(tiny_subject, [probe], steps=5, method=GradAscent, lr=3e-3)
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
    assert probe.start_value >= 0.9 and result["unlearned"] <= probe.start_value - 0.5  # clearly unlearned ...
    assert result["relearned"] >= result["unlearned"] + 0.3  # ... and relearning clearly brought some back
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in opt.state[next(iter(opt.state))].items():
        if torch.is_tensor(v):
            assert torch.equal(v, opt_before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_probe_mid_run_leaves_training_bit_identical(tiny_subject):
    _, plain = train(tiny_subject, [], steps=8)
    probe = RelearningProbe(every_n_steps=3, at_end=False, steps=4, lr=1e-2)
    _, probed = train(tiny_subject, [probe], steps=8)
    assert [h["step"] for h in probe.history] == [3, 6]
    for (k, a), (_, b) in zip(plain.model.state_dict().items(), probed.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_forgotten_facts_come_back_after_gradient_ascent(tiny_subject):
    probe = RelearningProbe(steps=20, lr=3e-3, relearn_fraction=0.5)
    trainer, _ = train(tiny_subject, [probe], steps=10, method=GradAscent, lr=2e-3)
    result = probe.history[-1]
    assert float(trainer.callback_metrics["relearn/recovery"]) == pytest.approx(result["recovery"])
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
