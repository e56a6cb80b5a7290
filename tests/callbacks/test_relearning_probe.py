import io
import json

import pytest
import torch

from lit_unlearn import GradAscent, GradDiff, RelearningProbe
from tests.helpers import adamw, fit, tiny_data


def assert_restored(module, before, opt, opt_before, rng) -> None:
    """Weights, optimizer state and the RNG are exactly as before the probe."""
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in opt.state[next(iter(opt.state))].items():
        if torch.is_tensor(v):
            assert torch.equal(v, opt_before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)

def train(tiny_subject, callbacks, steps, method=GradDiff, lr=1e-3):
    """``method`` with AdamW at ``lr`` for ``steps`` steps; returns the trainer and the module."""
    module = method(model=tiny_subject, optimizer=adamw(lr), evaluate_at_start=False)
    trainer, _ = fit(module, tiny_data(eval_sets=["forget", "retain"]), steps=steps, callbacks=callbacks,
                     limit_val_batches=0)
    return trainer, module


def test_probe_restores_weights_optimizer_and_rng_exactly(tiny_subject):
    # The subject knows all 10 held-out facts; 5 GradAscent steps at 3e-3 leave 0, 3 or 6 of them and
    # 10 relearning steps at 3e-3 on the other half bring back 9, 3 or 2, depending on the CPU kernels
    # (AVX2, AVX-512) the tiny subject was built and trained with.
    probe = RelearningProbe(at_end=False, steps=10, lr=3e-3)
    trainer, module = train(tiny_subject, [probe], steps=5, method=GradAscent, lr=3e-3)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    opt = trainer.optimizers[0]
    opt_before = {k: v.clone() for k, v in opt.state[next(iter(opt.state))].items() if torch.is_tensor(v)}
    unlearned = probe._measure(trainer, module, probe._eval)
    rng = torch.get_rng_state()
    relearn, moved, measured = probe._relearn_steps, [], []

    def relearn_and_look(*args):  # the probe really trains before it restores
        relearn(*args)
        moved.append(any(not torch.equal(v, before[k]) for k, v in module.model.state_dict().items()))
        measured.append(probe._measure(trainer, module, probe._eval))

    probe._relearn_steps = relearn_and_look
    result = probe.probe(trainer, module)
    assert moved == [True]
    # measured on the weights before and after relearning, the same held-out rows
    assert (result["unlearned"], result["relearned"]) == (unlearned, measured[0])
    assert probe.start_value >= 0.9 and result["unlearned"] <= probe.start_value - 0.3  # clearly unlearned ...
    assert result["relearned"] > result["unlearned"] + 0.05  # ... and relearning brought some back
    assert_restored(module, before, opt, opt_before, rng)


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


# ------------------------------------------------------------------ graded relearning (BLUR)

GRADED = ["forget", "paraphrase", "neighbor", "unrelated"]


def graded_fit(tiny_subject, probe):
    """5 GradAscent steps at 3e-3 on the tiny preset with BLUR's relearn sets; returns trainer and module."""
    data = tiny_data(eval_sets=["forget", "retain"], relearn_sets=["paraphrase", "neighbor", "unrelated"])
    module = GradAscent(model=tiny_subject, optimizer=adamw(3e-3), evaluate_at_start=False)
    trainer, _ = fit(module, data, steps=5, callbacks=[probe], limit_val_batches=0)
    return trainer, module


def test_graded_probe_relearns_each_set_from_the_same_weights_and_restores_exactly(tiny_subject):
    # Which set brings back most of the 10 held-out forget facts is not asserted: on the 1M-parameter tiny
    # subject the order flips with the CPU kernels it was built with (measured, 10 steps at 3e-3 after 5
    # GradAscent steps: forget half 9 of 10 and neighbors 2 on one CPU; forget 2 of 4 and neighbors -1 on an
    # AVX-512 build; forget 3 of 7, neighbors 2 and unrelated 3 on an AVX2 build).
    probe = RelearningProbe(relearn_sets=GRADED, at_end=False, steps=10, lr=3e-3)
    trainer, module = graded_fit(tiny_subject, probe)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    opt = trainer.optimizers[0]
    opt_before = {k: v.clone() for k, v in opt.state[next(iter(opt.state))].items() if torch.is_tensor(v)}
    rng = torch.get_rng_state()
    relearn, starts, moved, measured = probe._relearn_steps, [], [], []

    def relearn_and_look(*args):  # each set starts from the unlearned weights and really trains
        starts.append(all(torch.equal(v, before[k]) for k, v in module.model.state_dict().items()))
        relearn(*args)
        moved.append(any(not torch.equal(v, before[k]) for k, v in module.model.state_dict().items()))
        measured.append(probe._measure(trainer, module, probe._eval))

    probe._relearn_steps = relearn_and_look
    result = probe.probe(trainer, module)
    assert starts == [True] * 4 and moved == [True] * 4
    assert [result[f"{name}/relearned"] for name in GRADED] == measured  # each after its own relearning
    assert_restored(module, before, opt, opt_before, rng)
    # one recovery per set, all measured on the same held-out forget rows
    logged = trainer.callback_metrics
    assert float(logged["relearn/fact_acc_unlearned"]) == pytest.approx(result["unlearned"])
    for name in GRADED:
        assert float(logged[f"relearn/{name}/recovery"]) == pytest.approx(result[f"{name}/recovery"])
        assert float(logged[f"relearn/{name}/fact_acc_relearned"]) == pytest.approx(result[f"{name}/relearned"])
        assert result[f"{name}/recovery"] == pytest.approx(
            (result[f"{name}/relearned"] - result["unlearned"]) / (probe.start_value - result["unlearned"]))
    assert "relearn/recovery" not in logged  # the single-set name is not logged in graded mode
    assert probe.start_value >= 0.9 and result["unlearned"] <= probe.start_value - 0.3
    # four sets relearned from the same weights for the same steps end in different places
    assert len({round(result[f"{name}/relearned"], 6) for name in GRADED} | {round(result["unlearned"], 6)}) >= 2


def test_graded_sets_never_relearn_an_evaluated_fact(tiny_subject):
    probe = RelearningProbe(relearn_sets=GRADED, at_end=False, steps=1)
    trainer, _ = graded_fit(tiny_subject, probe)
    forget = trainer.datamodule.forget_set
    evaluated = {forget.records.rows[i]["id"] for i in probe._eval.indices}
    half = {forget.records.rows[i]["id"] for i in probe._graded["forget"].indices}
    assert len(evaluated) == len(half) == 10 and not evaluated & half
    para = probe._graded["paraphrase"]  # the forget half in its second phrasing
    assert {para.dataset.records.rows[i]["id"] for i in para.indices} == half
    tok = trainer.datamodule.tokenizer
    for i in para.indices:
        _, labels, _, _ = para.dataset[i]
        learned = tok.decode(labels[labels != -100], skip_special_tokens=True).strip()
        assert learned == para.dataset.records.rows[i]["paraphrased_answer"]
    assert len(probe._graded["neighbor"]) == 20 and len(probe._graded["unrelated"]) == 20


def test_graded_state_dict_round_trips(tiny_subject):
    probe = RelearningProbe(relearn_sets=["forget", "unrelated"], every_n_steps=2, at_end=False, steps=2, lr=3e-3)
    graded_fit(tiny_subject, probe)
    assert [h["step"] for h in probe.history] == [2, 4]
    assert set(probe.history[0]) == {"step", "unlearned", "forget/relearned", "forget/recovery",
                                     "unrelated/relearned", "unrelated/recovery"}
    buffer = io.BytesIO()
    torch.save(probe.state_dict(), buffer)
    buffer.seek(0)
    restored = RelearningProbe(relearn_sets=["forget", "unrelated"])
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert json.dumps(restored.state_dict()) == json.dumps(probe.state_dict())  # NaN recovery at step 2 compares
    assert restored._last_step() == 4


def test_graded_bad_arguments(tiny_subject):
    for bad in ("forget", [], ["forget", "forget"], ["a/b"]):
        with pytest.raises(ValueError, match="`relearn_sets` must be a non-empty list of distinct set names"):
            RelearningProbe(relearn_sets=bad)
    probe = RelearningProbe(relearn_sets=["forget", "nope"], steps=1)
    module = GradAscent(model=tiny_subject, optimizer=adamw(1e-3), evaluate_at_start=False)
    with pytest.raises(ValueError, match="unknown set 'nope' in `relearn_sets`"):
        fit(module, tiny_data(eval_sets=["forget"]), steps=1, callbacks=[probe], limit_val_batches=0)
