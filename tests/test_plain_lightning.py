"""lit-unlearn inside another Lightning project: no CLI, plain Trainer, JSON files on disk."""

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_unlearn import NPO, ForgetRetainDataModule
from lit_unlearn.utils import atomic_dir


def test_npo_with_plain_trainer(tiny_subject, tiny_bench, tmp_path):
    for name, split in (("forget.jsonl", "forget10"), ("retain.jsonl", "retain90"), ("holdout.jsonl", "holdout")):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in tiny_bench.records(split)))
    data = ForgetRetainDataModule(
        forget=str(tmp_path / "forget.jsonl"), retain=str(tmp_path / "retain.jsonl"),
        eval_sets={"forget": "forget", "retain": "retain", "holdout": str(tmp_path / "holdout.jsonl")},
        batch_size=5, max_length=64)
    module = NPO(model=tiny_subject, beta=0.1, optimizer=partial(torch.optim.AdamW, lr=1e-3))
    seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="forget/fact_acc", mode="min")
    trainer = Trainer(max_epochs=3, default_root_dir=tmp_path, logger=False, callbacks=[ckpt],
                      enable_progress_bar=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 3 * len(data.forget_set) // 5
    # the module took the tokenizer from the model; metrics reached callback_metrics for the checkpoint
    assert data.tokenizer is module.tokenizer
    assert ckpt.best_model_path and "forget/fact_acc" in trainer.callback_metrics
    end = module.summary["end"]
    assert end["forget/nll"] > module.summary["start"]["forget/nll"]
    # the saved model and tokenizer load back and equal the trained weights
    saved = tmp_path / "model"
    reloaded = AutoModelForCausalLM.from_pretrained(saved)
    for (n, a), (_, b) in zip(module.model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), n
    assert AutoTokenizer.from_pretrained(saved).pad_token == module.tokenizer.pad_token
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]  # no temp dirs left
    # a checkpoint holds the cached reference log-probs and no reference weights
    state = torch.load(ckpt.best_model_path, weights_only=True)
    assert state["lit_unlearn"]["ref_logps"].shape == (len(data.forget_set),)


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
