import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_unlearn import GradAscent, StabilityGap
from lit_unlearn.evaluation.stability import stability_metrics
from tests.helpers import adamw, quiet_trainer, tiny_data


def test_metrics_on_a_synthetic_curve():
    steps = [0, 1, 2, 3, 4, 5, 6]
    acc = [0.9, 0.7, 0.5, 0.6, 0.8, 0.85, 0.4]
    out = stability_metrics(steps, acc, forget_acc=0.2, window=2)
    assert out["min_acc"] == 0.4
    assert out["gap"] == pytest.approx(0.5)
    # WF^2 = max over n, m in [n-2, n) of A_m - A_n: the largest is A_5 - A_6 = 0.45
    assert out["wf"] == pytest.approx(0.45)
    assert out["wc_acc"] == pytest.approx(0.5 * 0.8 + 0.5 * 0.4)
    wide = stability_metrics(steps, acc, window=10)
    assert wide["wf"] == pytest.approx(0.5)  # A_0 - A_6
    assert "wc_acc" not in wide
    rising = stability_metrics([0, 5, 10], [0.5, 0.6, 0.7], window=5)
    assert rising == {"min_acc": 0.5, "gap": 0.0, "wf": 0.0}


def train(tiny_subject, callbacks, max_epochs, root, ckpt_path=None):
    """GradAscent (AdamW 2e-3) for ``max_epochs`` epochs, resumed from ``ckpt_path`` if given."""
    seed_everything(0)
    module = GradAscent(model=tiny_subject, optimizer=adamw(2e-3), evaluate_at_start=False)
    trainer = quiet_trainer(max_epochs=max_epochs, callbacks=callbacks, enable_checkpointing=True, limit_val_batches=0,
                            default_root_dir=root)
    trainer.fit(module, datamodule=tiny_data(eval_sets=["forget", "retain", "neighbor"]), ckpt_path=ckpt_path)
    return trainer


def test_callback_tracks_the_curves_and_resumes(tiny_subject, tmp_path):
    sg = StabilityGap(every_n_steps=2, subset_size=8, window=4)
    trainer = train(tiny_subject, [sg], max_epochs=2, root=tmp_path)  # 5 steps per epoch
    assert [h["step"] for h in sg.history] == [0, 2, 4, 6, 8, 10]
    assert sg.history[0]["forget_acc"] >= 0.9 and sg.history[-1]["forget_acc"] < sg.history[0]["forget_acc"]
    expected = stability_metrics([h["step"] for h in sg.history], [h["retain_acc"] for h in sg.history],
                                 sg.history[-1]["forget_acc"], 4)
    assert sg.last["stability/gap"] == pytest.approx(expected["gap"])
    assert sg.last["stability/wc_acc"] == pytest.approx(expected["wc_acc"])
    for name in ("forget", "retain", "neighbor"):  # each set's accuracy is logged under its own name
        assert sg.last[f"stability/{name}/acc"] == pytest.approx(sg.history[-1][f"{name}_acc"])
    for key in ("stability/gap", "stability/min_acc", "stability/retain/acc"):  # for monitors and sweeps
        assert float(trainer.callback_metrics[key]) == pytest.approx(sg.last[key])
    # resume: the history continues where it stopped
    part = StabilityGap(every_n_steps=2, subset_size=8, window=4)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    train(tiny_subject, [part, ckpt], max_epochs=1, root=tmp_path)
    resumed = StabilityGap(every_n_steps=2, subset_size=8, window=4)
    train(tiny_subject, [resumed, ModelCheckpoint(dirpath=tmp_path / "b")], max_epochs=2, root=tmp_path,
          ckpt_path=ckpt.last_model_path)
    assert [h["step"] for h in resumed.history] == [0, 2, 4, 6, 8, 10]
    for a, b in zip(resumed.history, sg.history):
        assert a == pytest.approx(b)


def test_token_acc_metric_ignores_fact_spans(tiny_subject, tmp_path):
    tok = StabilityGap(every_n_steps=5, subset_size=8, metric="token_acc")  # 5 steps: measured at 0 and 5
    trainer = train(tiny_subject, [tok], max_epochs=1, root=tmp_path)
    b, model = tok._batch, trainer.lightning_module.model
    assert bool(b["has_fact"][tok._groups["forget"]].all())  # the tiny forget set marks fact spans
    with torch.no_grad():
        logits = model.eval()(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                              position_ids=b["position_ids"]).logits
    labels = b["labels"][:, 1:]
    right = (logits[:, :-1].argmax(-1) == labels) & (labels != -100)
    measured = tok.accuracies(model)
    for name, idx in tok._groups.items():  # token accuracy by hand, on every set
        expected = right[idx].sum().item() / (labels[idx] != -100).sum().item()
        assert measured[name] == pytest.approx(expected, abs=1e-6)
    assert measured["forget"] == pytest.approx(tok.history[-1]["forget_acc"], abs=1e-6)
    tok.metric = "auto"  # the default scores the forget set's facts instead
    assert tok.accuracies(model)["forget"] != pytest.approx(measured["forget"], abs=1e-3)
    with pytest.raises(ValueError, match="`metric` must be 'auto' or 'token_acc', got 'fact'"):
        StabilityGap(metric="fact")


def test_needs_retain_in_sets():
    with pytest.raises(ValueError, match="must include 'retain'"):
        StabilityGap(sets=("forget",))
