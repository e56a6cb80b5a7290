import copy
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file

from lit_unlearn import GradAscent, GradDiff, GradientProjection
from lit_unlearn.callbacks.gradient_projection import orthonormal_basis, project_out
from lit_unlearn.objectives import gradient_ascent, nll
from tests.helpers import adamw, fit, lit_unlearn, requires_ddp, tiny_cli_args, tiny_data


def cos(a, b):
    return float((a @ b) / (a.norm() * b.norm()))


def test_orthonormal_basis_and_projection():
    torch.manual_seed(0)
    a, b = torch.randn(50), torch.randn(50)
    basis = orthonormal_basis([a, b, 2 * a - 3 * b])  # the third is dependent: dropped
    assert len(basis) == 2
    gram = torch.stack(basis) @ torch.stack(basis).T
    assert torch.allclose(gram, torch.eye(2), atol=1e-6)
    v = torch.randn(50)
    p = project_out(v, basis)
    assert abs(cos(p, a)) < 1e-6 and abs(cos(p, b)) < 1e-6
    w = torch.rand(50) + 0.1  # a diagonal metric
    wb = orthonormal_basis([a, b], w)
    pw = project_out(v, wb, w)
    assert abs(float((pw * a * w).sum())) < 1e-5 and abs(float((pw * b * w).sum())) < 1e-5


class LastStep(Callback):
    """Keeps the last optimizer step's micro-batches, the weights before it and the gradients written."""

    def __init__(self):
        self.batches, self.step_batches, self.before, self.grads = [], [], None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches.append(copy.deepcopy(batch))

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.step_batches, self.batches = self.batches, []
        self.before = copy.deepcopy(module.model).eval()
        self.grads = torch.cat([p.grad.reshape(-1).float() for p in module.model.parameters()])


def run(tiny_subject, callbacks, steps=2, optimizer=None, method=GradDiff, retain_weight=1.0, accumulate=1,
        **trainer_kw):
    """``method`` (GradDiff, SGD 1e-3) on batches of 6 for ``steps`` optimizer steps; returns the module."""
    module = method(model=tiny_subject, optimizer=optimizer or partial(torch.optim.SGD, lr=1e-3),
                    evaluate_at_start=False, retain_weight=retain_weight)
    fit(module, tiny_data(batch_size=6, eval_sets=["forget"]), steps=steps, callbacks=callbacks,
        accumulate_grad_batches=accumulate, limit_val_batches=0, **trainer_kw)
    return module


def independent_gradients(model, batches, alpha, accumulate):
    """Total and retain gradients of GradDiff's loss at the given weights, by plain autograd."""
    params = list(model.parameters())
    total, retain = torch.zeros(sum(p.numel() for p in params)), torch.zeros(sum(p.numel() for p in params))
    for b in batches:
        f, r = b["forget"], b["retain"]
        lf = gradient_ascent(model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"])
        lr = nll(model(input_ids=r["input_ids"], attention_mask=r["attention_mask"]).logits, r["labels"])
        gt = torch.autograd.grad((lf.mean() + alpha * lr.mean()) / accumulate, params, retain_graph=True)
        gr = torch.autograd.grad(alpha * lr.mean() / accumulate, params)
        total += torch.cat([g.reshape(-1) for g in gt])
        retain += torch.cat([g.reshape(-1) for g in gr])
    return total, retain


@pytest.mark.parametrize("accumulate", [1, 2])
def test_projected_forget_update_is_orthogonal_to_retain_gradients(tiny_subject, accumulate):
    gp, rec = GradientProjection(k=3, keep_last=True), LastStep()
    module = run(tiny_subject, [gp, rec], accumulate=accumulate, retain_weight=0.7)
    last = gp.last
    assert len(last["basis"]) == 3
    for chunk in last["chunks"]:
        assert abs(cos(last["projected"], chunk)) < 1e-5
    # what the optimizer received: projected forget part plus the whole retain part
    assert torch.allclose(rec.grads, last["projected"] + last["retain"], atol=1e-7)
    # independently computed gradients at the weights before the step
    total, retain = independent_gradients(rec.before, rec.step_batches, 0.7, accumulate)
    assert len(rec.step_batches) == accumulate
    assert torch.allclose(last["retain"], retain, rtol=1e-4, atol=1e-7)
    assert torch.allclose(last["forget"], total - retain, rtol=1e-4, atol=1e-6)
    # first-order change of the retain loss along the executed forget component: zero
    assert abs(cos(last["projected"], retain)) < 1e-5
    assert 0 < float((last["forget"] - last["projected"]).norm()) < float(last["forget"].norm())
    assert module.trainer.global_step == 2


def test_adam_metric(tiny_subject):
    gp = GradientProjection(k=2, metric="adam", keep_last=True)
    adam = partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.999), weight_decay=0.0)
    run(tiny_subject, [gp], steps=3, optimizer=adam)
    w = gp.last["weight"]
    assert w is not None  # after the first step, the metric comes from Adam's second moment
    for chunk in gp.last["chunks"]:
        dot = float((gp.last["projected"] * chunk * w).sum())
        norm = float(((gp.last["projected"] ** 2 * w).sum() * (chunk**2 * w).sum()).sqrt())
        assert abs(dot) / norm < 1e-5
    with pytest.raises(ValueError, match=r"betas\[0\] = 0 and weight_decay = 0"):
        run(tiny_subject, [GradientProjection(metric="adam")], steps=1, optimizer=adamw())


def test_impossible_pairs_are_refused_before_the_first_step(tiny_subject):
    pairs = ((GradAscent, [GradientProjection()], "no retain term"),
             (GradDiff, [GradientProjection(k=2), GradientProjection(k=3)], "more than one GradientProjection"))
    for method, callbacks, reason in pairs:
        module = method(model=tiny_subject, optimizer=adamw(), evaluate_at_start=False)
        with pytest.raises(ValueError, match=f"GradientProjection cannot be used with {method.__name__}: .*{reason}"):
            fit(module, tiny_data(eval_sets=["forget"]), steps=1, callbacks=callbacks)
        assert module.global_step == 0 and module.last_loss is None  # refused in setup: not a single step


def test_bad_arguments():
    with pytest.raises(ValueError, match="`k` must be an integer >= 1"):
        GradientProjection(k=0)
    with pytest.raises(ValueError, match="`metric` must be"):
        GradientProjection(metric="fisher")


@requires_ddp
def test_ddp_two_processes_equal_one_with_the_doubled_batch(tmp_path, tiny_subject):
    """Retain gradients are averaged across ranks: 2 x batch 3 under DDP == 1 x batch 6."""
    base = ["--trainer.enable_checkpointing=false", "--summary.gold=false",
            "--model.init_args.optimizer=torch.optim.SGD", "--model.init_args.optimizer.init_args.lr=0.05"]
    runs = {"single": ["--trainer.devices=1", "--data.init_args.batch_size=6"],
            "ddp": ["--trainer.strategy=ddp", "--trainer.devices=2", "--data.init_args.batch_size=3"]}
    weights = {}
    for name, extra in runs.items():
        model = tmp_path / name / "model"
        lit_unlearn(tiny_cli_args("gu_graddiff", *base, *extra, f"--save_pretrained.dirpath={model}"), cwd=tmp_path)
        weights[name] = load_file(model / "model.safetensors")
    start = load_file(Path(tiny_subject) / "model.safetensors")
    moved = 0.0
    for key, value in weights["single"].items():
        assert torch.allclose(weights["ddp"][key], value, atol=2e-6), key
        moved = max(moved, float((value - start[key]).abs().max()))
    assert moved > 1e-3  # training really changed the weights


class ClippedNorm(Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):  # after clipping and the step
        self.norm = float(torch.cat([p.grad.reshape(-1) for p in module.model.parameters()]).norm())


def test_bf16_mixed_and_gradient_clipping(tiny_subject):
    gp, clipped = GradientProjection(k=2, keep_last=True), ClippedNorm()
    run(tiny_subject, [gp, clipped], precision="bf16-mixed", gradient_clip_val=1e-3)
    for chunk in gp.last["chunks"]:
        assert abs(cos(gp.last["projected"], chunk)) < 1e-5
    update_norm = float((gp.last["projected"] + gp.last["retain"]).norm())
    assert update_norm > 1e-3  # the clip below really acted on the projected update
    assert clipped.norm == pytest.approx(1e-3, rel=1e-3)
