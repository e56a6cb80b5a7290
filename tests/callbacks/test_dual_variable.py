from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_unlearn import ConstrainedEntropic, DualVariable, GradAscent, GradDiff, GradientProjection
from lit_unlearn.models import load_causal_lm
from lit_unlearn.objectives import nll
from tests.helpers import adamw, fit, quiet_trainer, tiny_data


class Lambdas(Callback):
    """λ (the module's retain weight) after each optimizer step's dual update."""

    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values.append(module.retain_weight)


def train(tiny_subject, dual, steps=6, method=GradDiff, epochs=None, **kw):
    """GradDiff (or ``method``) under ``dual``; returns the module and a trace of every step's mean
    retain loss (``trace.retain``) and λ after the update (``trace.lam``)."""
    module = method(model=tiny_subject, optimizer=adamw(2e-3), evaluate_at_start=False, **kw)
    lambdas = Lambdas()
    _, recorder = fit(module, tiny_data(eval_sets=["forget"]), steps=steps if epochs is None else -1,
                      max_epochs=epochs, callbacks=[dual, lambdas], limit_val_batches=0)
    retain = [float(o.retain.detach().mean()) for o in recorder.objectives]
    return module, SimpleNamespace(retain=retain, lam=lambdas.values)


def test_update_follows_the_formula_with_warmup(tiny_subject):
    dual = DualVariable(epsilon=0.3, step_size=2.0, init=1.5, warmup_steps=2)
    module, trace = train(tiny_subject, dual, steps=7)
    lam, expected = 1.5, []
    for step, r in enumerate(trace.retain, start=1):
        if step > 2:
            lam = max(0.0, lam + 2.0 * (r - 0.3))
        expected.append(lam)
    assert trace.lam[:2] == [1.5, 1.5]  # held at init during warm-up
    assert trace.lam == pytest.approx(expected, rel=1e-6)
    assert min(trace.lam) >= 0 and module.retain_weight == dual.lam


def test_lambda_decays_to_zero_when_the_constraint_is_slack(tiny_subject):
    dual = DualVariable(epsilon=100.0, step_size=0.5, init=3.0)
    _, trace = train(tiny_subject, dual, steps=3)
    assert trace.lam == [0.0, 0.0, 0.0]


def test_tolerance_measures_the_starting_retain_loss(tiny_subject):
    dual = DualVariable(tolerance=0.5, step_size=1.0, measure_examples=24)
    module, _ = train(tiny_subject, dual, steps=1)
    data = tiny_data(eval_sets=["forget"])
    data.setup()
    model = load_causal_lm(tiny_subject).eval()
    batch = next(iter(data.eval_dataloader(torch.utils.data.Subset(data.retain_set, range(24)), shard=False)))
    with torch.no_grad():
        start = nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
    assert dual.start_retain_loss == pytest.approx(float(start.mean()), rel=1e-5)
    assert dual.epsilon == pytest.approx(1.5 * float(start.mean()), rel=1e-5)


def test_tolerance_on_a_retain_term_that_starts_at_zero_is_refused_before_the_first_step(tiny_subject):
    # KL to the starting model is 0 there, so (1 + tolerance) x 0 is no bound; epsilon works
    with pytest.raises(ValueError, match=r"DualVariable\(tolerance=...\) cannot be used with GradDiff: .*\(kl\) is "):
        train(tiny_subject, DualVariable(tolerance=0.5), steps=1, retain_loss="kl")
    module, _ = train(tiny_subject, DualVariable(epsilon=0.01), steps=2, retain_loss="kl")
    assert module.global_step == 2


def test_epoch_updates(tiny_subject):
    dual = DualVariable(epsilon=0.0, step_size=1.0, init=1.0, update="epoch")
    _, trace = train(tiny_subject, dual, epochs=2)
    per_epoch = len(trace.lam) // 2
    assert len(set(trace.lam[:per_epoch])) == 1 and trace.lam[0] == 1.0
    expected = 1.0 + sum(trace.retain[:per_epoch]) / per_epoch
    assert dual.lam == pytest.approx(expected + sum(trace.retain[per_epoch:]) / per_epoch, rel=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="exactly one of `epsilon`"):
        DualVariable()
    with pytest.raises(ValueError, match="`step_size` must be a finite number >= 0"):
        DualVariable(epsilon=1.0, step_size=-1)
    with pytest.raises(ValueError, match="`update` must be 'step' or 'epoch'"):
        DualVariable(epsilon=1.0, update="batch")


def test_a_method_without_a_retain_term_is_refused_before_the_first_step(tiny_subject):
    module = GradAscent(model=tiny_subject, optimizer=adamw(), evaluate_at_start=False)
    with pytest.raises(ValueError, match="DualVariable cannot be used with GradAscent: it constrains the retain term"):
        fit(module, tiny_data(eval_sets=["forget"]), steps=1, callbacks=[DualVariable(epsilon=1.0)])
    assert module.global_step == 0 and module.retain_weight == 1.0  # nothing trained, λ never set


def run_resumable(tiny_subject, tmp_path, epochs, ckpt_path=None, name="run"):
    dual = DualVariable(tolerance=0.1, step_size=1.0, warmup_steps=1)
    module = ConstrainedEntropic(model=tiny_subject, optimizer=adamw(), evaluate_at_start=False, retain_weight=50.0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / name, save_last=True)
    seed_everything(0)
    trainer = quiet_trainer(max_epochs=epochs, callbacks=[dual, GradientProjection(k=2), ckpt],
                            enable_checkpointing=True, limit_val_batches=0)
    trainer.fit(module, datamodule=tiny_data(eval_sets=["forget"]), ckpt_path=ckpt_path)
    return module, dual, ckpt


def test_resume_continues_with_the_same_lambda_and_weights(tiny_subject, tmp_path):
    whole, whole_dual, _ = run_resumable(tiny_subject, tmp_path, epochs=3, name="whole")
    _, _, ckpt = run_resumable(tiny_subject, tmp_path, epochs=1, name="part")
    resumed, resumed_dual, _ = run_resumable(tiny_subject, tmp_path, epochs=3, ckpt_path=ckpt.last_model_path,
                                             name="part")
    assert resumed.trainer.global_step == whole.trainer.global_step
    assert resumed_dual.lam == whole_dual.lam and resumed_dual.epsilon == whole_dual.epsilon
    assert resumed.retain_weight == whole.retain_weight
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
