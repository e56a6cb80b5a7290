"""DivergenceGuard: a non-finite loss or gradient, or an evaluated metric below its floor, stops the
run with the last good weights in the model (and so in the saved model)."""

import math

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from lit_unlearn import DivergenceGuard, GradAscent, GradDiff, SavePretrained
from tests.helpers import adamw, fit, snapshot, tiny_data


class FirstBad(Callback):
    """Records the step at which the loss or a gradient is first non-finite (before any guard acts)."""

    def __init__(self):
        self.step, self.losses = None, []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.losses.append(float(module.last_loss))
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        finite = math.isfinite(self.losses[-1]) and all(bool(torch.isfinite(g).all()) for g in grads)
        if self.step is None and not finite:
            self.step = trainer.global_step + 1


class Snapshots(Callback):
    """The trainable weights after every evaluation, by step."""

    def __init__(self):
        self.at = {}

    def on_validation_end(self, trainer, pl_module):
        self.at[trainer.global_step] = snapshot(pl_module)


def evaluated_every_step(module, callbacks, steps):
    """Fit ``module`` for ``steps`` steps, evaluating the retain set after every step."""
    return fit(module, tiny_data(eval_sets=["retain"]), steps=steps, callbacks=callbacks, val_check_interval=1,
               check_val_every_n_epoch=None)


@pytest.mark.parametrize("action", ["stop", "rollback"])
def test_planted_nan_is_caught_within_one_step_and_the_saved_model_is_the_last_good_checkpoint(action, tiny_subject,
                                                                                                tmp_path):
    module = GradAscent(model=tiny_subject, optimizer=adamw(1e6), evaluate_at_start=False)
    first, guard = FirstBad(), DivergenceGuard(action=action)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=1, save_top_k=-1)
    save = SavePretrained(dirpath=str(tmp_path / "model"))
    with pytest.warns(RuntimeWarning, match="DivergenceGuard stopped the run at step"):
        trainer, _ = fit(module, tiny_data(eval_sets=["forget"]), steps=20, callbacks=[first, guard, ckpt, save],
                         enable_checkpointing=True, limit_val_batches=0, default_root_dir=tmp_path)
    assert first.step is not None  # the planted divergence happened
    assert guard.tripped["step"] == first.step  # caught at the step it appeared
    assert trainer.global_step <= first.step  # and training stopped there
    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in saved.values())
    good = torch.load(tmp_path / "ckpt" / f"step={first.step - 1}.ckpt", map_location="cpu", weights_only=True)
    for key, value in saved.items():
        assert torch.equal(value, good["state_dict"]["model." + key]), key
    if action == "rollback":
        assert guard.tripped["restored"].endswith(f"step={first.step - 1}.ckpt")


def test_retain_floor_stops_and_restores_the_last_passing_weights(tiny_subject):
    """GradAscent at a high learning rate destroys retain accuracy; the floor catches it and
    the weights go back to those of the last evaluation above the floor."""
    module = GradAscent(model=tiny_subject, optimizer=adamw(3e-3))
    snaps, guard = Snapshots(), DivergenceGuard(floors={"retain/fact_acc": 0.9})
    with pytest.warns(RuntimeWarning, match="fell below its floor 0.9"):
        evaluated_every_step(module, [guard, snaps], steps=40)
    bad_step = guard.tripped["step"]
    assert 1 <= guard.good_step < bad_step < 40
    history = {h["step"]: h["retain/fact_acc"] for h in module.eval_history}
    assert history[bad_step] < 0.9 <= history[guard.good_step]
    for name, p in module.named_parameters():
        assert torch.equal(p.detach(), snaps.at[guard.good_step][name]), name


def test_a_nan_metric_fails_its_floor_and_an_unknown_floor_is_named(tiny_subject):
    guard = DivergenceGuard(floors={"retain/fact_acc": 0.5, "retian/fact_acc": 0.5})
    module = GradDiff(model=tiny_subject, optimizer=adamw(1e-4))
    compute = module._compute

    def nan_from_step_2(names):  # the evaluation itself returns NaN (a collapsed model)
        results = compute(names)
        if module.global_step >= 2:
            results["retain/fact_acc"] = float("nan")
        return results

    module._compute = nan_from_step_2
    with pytest.warns((UserWarning, RuntimeWarning)) as record:
        evaluated_every_step(module, [guard], steps=6)
    messages = [str(w.message) for w in record]
    assert any("['retian/fact_acc'] name no evaluated metric" in m for m in messages), messages
    assert any("DivergenceGuard stopped the run at step 2" in m for m in messages), messages
    assert guard.tripped["step"] == 2 and "nan" in guard.tripped["reason"] and guard.good_step == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="`action` must be one of"):
        DivergenceGuard(action="explode")
    with pytest.raises(ValueError, match="`floors` maps metric names to finite numbers"):
        DivergenceGuard(floors={"retain/fact_acc": float("nan")})
