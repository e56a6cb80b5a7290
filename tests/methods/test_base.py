"""UnlearningModule itself: every method trains and saves through SavePretrained, FineTune, the
cached reference log-probs, sample weights, argument checks, lazy model loading, and lit-unlearn
inside another Lightning project (a plain Trainer, no CLI)."""

import json
import math
import shutil

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_unlearn import (
    NPO,
    FineTune,
    ForgetRetainDataModule,
    GradAscent,
    GradDiff,
    RunSummary,
    SavePretrained,
    SimNPO,
    load_causal_lm,
    zoo,
)
from lit_unlearn.callbacks.summary import SUMMARY_FILE
from lit_unlearn.methods.loading import ModelSource
from lit_unlearn.objectives import nll
from lit_unlearn.utils import atomic_dir
from tests.helpers import adamw, fit, snapshot, tiny_data
from tests.helpers.training import first_batch, fit_quick, saved_logits


@pytest.mark.parametrize("cls,kw", [
    (GradAscent, {}), (GradDiff, {}), (GradDiff, {"retain_loss": "kl"}), (NPO, {}), (NPO, {"retain_loss": "kl"}),
    (SimNPO, {}), (FineTune, {}),
])
def test_each_method_trains_and_saves(cls, kw, tiny_subject, tmp_path):
    module = cls(model=tiny_subject, optimizer=adamw(1e-3), **kw)
    start = snapshot(load_causal_lm(tiny_subject))
    save = SavePretrained()  # default directory: <default_root_dir>/model without a logger
    trainer, rec = fit(module, steps=4, callbacks=[save], default_root_dir=tmp_path)
    assert len(rec.losses) == 4 and all(math.isfinite(x) for x in rec.losses)
    changed = [n for n, p in module.model.named_parameters() if not torch.equal(p.detach(), start[n])]
    assert changed
    obj = rec.objectives[0]
    assert obj.forget.shape == (4,)
    assert module.retain_kind == (None if cls is GradAscent else kw.get("retain_loss", "nll"))
    assert module.has_retain_term() == (cls is not GradAscent)
    if cls is not GradAscent:
        assert obj.retain is not None and obj.retain.shape == (4,)
    else:
        assert obj.retain is None
    assert trainer.global_step == 4
    # SavePretrained wrote the trained weights, loadable as they are
    assert save.saved_path == str(tmp_path / "model")
    saved = load_causal_lm(save.saved_path)
    for name, value in saved.state_dict().items():
        assert torch.equal(value, module.model.state_dict()[name]), name


def test_finetune_learns_and_has_a_retain_term_only_with_retain_data(tiny_subject, tmp_path):
    module = FineTune(model=tiny_subject, optimizer=adamw(1e-3))
    _, rec = fit(module, steps=4)
    assert module.has_retain_term() and all(o.retain is not None for o in rec.objectives)
    assert module.summary["end"]["forget/nll"] < module.summary["start"]["forget/nll"]  # it learns the forget set
    records = [{"question": "Where was Ada born?", "answer": "In Paris."}] * 4
    alone = FineTune(model=tiny_subject, optimizer=adamw(1e-3), evaluate_at_start=False)
    _, rec = fit(alone, ForgetRetainDataModule(forget=records, tokenizer=tiny_subject, batch_size=2), steps=2)
    assert not alone.has_retain_term() and all(o.retain is None for o in rec.objectives)
    assert rec.losses[1] < rec.losses[0]  # the NLL of the one answer goes down


def test_reference_logps_are_cached_once_from_the_starting_model(tiny_subject, monkeypatch):
    module = NPO(model=tiny_subject, beta=0.1, optimizer=adamw(1e-3), evaluate_at_start=False)
    calls = []
    original = NPO.compute_logps
    monkeypatch.setattr(NPO, "compute_logps", lambda self, d: calls.append(1) or original(self, d))
    fit(module, tiny_data(batch_size=5, eval_sets=["forget"]), steps=4)
    assert len(calls) == 1
    # the cache holds the starting model's summed answer log-probs, by forget row
    batch = first_batch("forget")
    expected = -nll(saved_logits(tiny_subject, batch), batch["labels"], normalize=False)
    assert torch.allclose(module.ref_logps[batch["index"]], expected, atol=1e-4)


def test_sample_weights_reweight_the_forget_term(tiny_subject):
    module = GradAscent(model=tiny_subject)
    module.configure_model()
    data = tiny_data()
    data.setup()
    batch = next(iter(data.train_dataloader()))
    plain = module.objectives(batch).forget.detach()
    weights = torch.zeros(len(data.forget_set))
    first = int(batch["forget"]["index"][0])
    weights[first] = 4.0
    module.sample_weights = weights
    loss = module.training_step(batch, 0)
    assert loss.item() == pytest.approx(plain[0].item() * 4.0 / 4, rel=1e-5)


def test_requires_retain(tiny_subject):
    data = ForgetRetainDataModule(forget=[{"question": "q?", "answer": "a."}] * 2, tokenizer=tiny_subject)
    with pytest.raises(ValueError, match="GradDiff needs a retain set"):
        fit(GradDiff(model=tiny_subject), data, steps=1)


def test_bad_method_arguments(tiny_subject):
    with pytest.raises(ValueError, match="`retain_weight` must be a finite number >= 0"):
        GradDiff(model=tiny_subject, retain_weight=-1)
    with pytest.raises(ValueError, match="`beta` must be a number > 0"):
        NPO(model=tiny_subject, beta=0)
    with pytest.raises(ValueError, match="`retain_loss` must be one of"):
        NPO(model=tiny_subject, retain_loss="mse")


def test_constructing_with_a_builtin_model_does_no_work(tiny_subject, tmp_path, monkeypatch):
    """The constructor only checks the name; the model is built when configure_model needs it."""
    built = []

    def build(preset, model, path):  # stands in for training the model: a copy of the tiny subject
        built.append((preset, model))
        shutil.copytree(tiny_subject, path)

    monkeypatch.setattr(zoo, "build", build)
    monkeypatch.setattr(zoo, "model_dir", lambda preset, model: tmp_path / f"{preset}-{model}")
    module = NPO(model="builtin:tiny/retain95", optimizer=adamw(1e-3), evaluate_at_start=False)
    assert built == [] and not (tmp_path / "tiny-retain95").exists()
    assert module.model is None and isinstance(module.source, ModelSource)
    assert module.source.name == "builtin:tiny/retain95"
    for bad in ("builtin:tiny/nope", "builtin:huge/subject"):  # a bad name still fails at once
        with pytest.raises(ValueError, match=f"Unknown built-in model '{bad}'"):
            NPO(model=bad)
    assert built == []
    fit_quick(module, steps=1)
    assert built == [("tiny", "retain95")]
    assert module.model_path == str(tmp_path / "tiny-retain95")
    assert module.model is not None and module.ref_logps is not None


# ------------------------------------------------------------------ a plain Lightning Trainer
def test_npo_with_plain_trainer(tiny_subject, tiny_gold, tiny_bench, tmp_path):
    for name, split in (("forget.jsonl", "forget10"), ("retain.jsonl", "retain90"), ("holdout.jsonl", "holdout")):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in tiny_bench.records(split)))
    data = ForgetRetainDataModule(
        forget=str(tmp_path / "forget.jsonl"), retain=str(tmp_path / "retain.jsonl"),
        eval_sets={"forget": "forget", "retain": "retain", "holdout": str(tmp_path / "holdout.jsonl")},
        batch_size=5, max_length=64)
    module = NPO(model=tiny_subject, beta=0.1, optimizer=adamw(1e-3), compare_with=tiny_gold)
    seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="forget/fact_acc", mode="min")
    save = SavePretrained(dirpath=str(tmp_path / "model"))
    trainer = Trainer(max_epochs=3, default_root_dir=tmp_path, logger=False, callbacks=[ckpt, RunSummary(), save],
                      enable_progress_bar=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 3 * len(data.forget_set) // 5
    # the module took the tokenizer from the model; metrics reached callback_metrics for the checkpoint
    assert data.tokenizer is module.tokenizer
    assert ckpt.best_model_path and "forget/fact_acc" in trainer.callback_metrics
    start, end, gold = module.summary["start"], module.summary["end"], module.summary["gold"]
    assert end["forget/nll"] > start["forget/nll"]
    assert gold["forget/fact_acc"] < start["forget/fact_acc"]  # RunSummary evaluated the gold retain model
    # the saved model and tokenizer load back and equal the trained weights
    saved = tmp_path / "model"
    assert save.saved_path == str(saved)
    reloaded = AutoModelForCausalLM.from_pretrained(saved)
    for (n, a), (_, b) in zip(module.model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), n
    assert AutoTokenizer.from_pretrained(saved).pad_token == module.tokenizer.pad_token
    stored = json.loads((saved / SUMMARY_FILE).read_text())  # the start, end and gold columns
    assert set(stored) == {"start", "end", "gold"}
    assert stored == {k: pytest.approx(v) for k, v in module.summary.items()}
    assert json.loads((saved / "run_info.json").read_text())["method"] == "NPO"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]  # no temp dirs left
    # a checkpoint holds the cached reference log-probs and no reference weights
    state = torch.load(ckpt.best_model_path, weights_only=True)
    assert state["lit_unlearn"]["ref_logps"].shape == (len(data.forget_set),)


def test_plain_trainer_without_save_pretrained_writes_no_model(tiny_subject, tmp_path):
    module = NPO(model=tiny_subject, optimizer=adamw(1e-3), evaluate_at_start=False)
    seed_everything(0)
    trainer = Trainer(max_steps=2, default_root_dir=tmp_path, enable_progress_bar=False, num_sanity_val_steps=0,
                      limit_val_batches=0)  # Lightning's defaults otherwise: a logger and checkpoints
    trainer.fit(module, datamodule=tiny_data(eval_sets=["forget"]))
    assert trainer.global_step == 2 and list(tmp_path.rglob("*.ckpt"))  # the run did write its own files
    assert not [p for p in tmp_path.rglob("model") if p.is_dir()]
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("config.json"))


def test_atomic_dir_never_leaves_half_written_output(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash while writing")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
