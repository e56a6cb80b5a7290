"""SavePretrained: the unlearned model, its tokenizer, run_info.json and the summary, written atomically
at the end of fit where asked (default ``<log_dir>/model``), loadable as a plain transformers model."""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from safetensors.torch import load_file

from lit_unlearn import GradDiff, RunSummary, SavePretrained
from lit_unlearn.models import load_causal_lm, load_tokenizer
from tests.helpers import adamw, fit, tiny_data

IDS = torch.tensor([[1, 5, 9, 13, 2, 7]])


def unlearn(tiny_subject, callbacks, steps=2, lora=None, compare_with=None, evaluate_at_start=False, **trainer_kw):
    """GradDiff (AdamW 1e-3) for ``steps`` steps with ``callbacks``; returns the trainer and the module."""
    module = GradDiff(model=tiny_subject, optimizer=adamw(), lora=lora, compare_with=compare_with,
                      evaluate_at_start=evaluate_at_start)
    trainer, _ = fit(module, tiny_data(eval_sets=["forget", "retain"]), steps=steps, callbacks=callbacks, **trainer_kw)
    return trainer, module


def logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_writes_model_tokenizer_run_info_and_summary_into_dirpath(tiny_subject, tiny_gold, tmp_path):
    save = SavePretrained(dirpath=str(tmp_path / "saved"))
    _, module = unlearn(tiny_subject, [RunSummary(verbose=False), save], default_root_dir=tmp_path,
                        evaluate_at_start=True, compare_with=tiny_gold)
    saved = tmp_path / "saved"
    assert save.saved_path == str(saved)
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # nothing else: no temporary sibling, no default dir
    names = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "run_info.json", "lit_unlearn_summary.json"} <= names
    summary = json.loads((saved / "lit_unlearn_summary.json").read_text())
    assert summary == module.summary and set(summary) == {"start", "end", "gold"}  # gold: RunSummary, before the save
    assert summary["end"]["forget/nll"] != summary["start"]["forget/nll"]  # the end column is the unlearned model's
    info = json.loads((saved / "run_info.json").read_text())
    assert info["method"] == "GradDiff" and len(info["data"]["sha256"]["forget"]) == 64
    weights = load_file(saved / "model.safetensors")
    trained = module.model.state_dict()
    assert weights.keys() <= trained.keys() and weights
    for key, value in weights.items():  # the unlearned weights, not the starting ones
        assert torch.equal(value, trained[key]), key
    assert any(not torch.equal(v, load_file(Path(tiny_subject) / "model.safetensors")[k]) for k, v in weights.items())
    torch.testing.assert_close(logits(load_causal_lm(str(saved))), logits(module.model), atol=1e-6, rtol=1e-6)
    text = "Question: Who is Ann?\nAnswer: A baker."
    assert load_tokenizer(str(saved))(text)["input_ids"] == module.tokenizer(text)["input_ids"]


def test_default_directory_is_beside_the_logs(tiny_subject, tmp_path):
    logged = SavePretrained()
    trainer, _ = unlearn(tiny_subject, [logged], steps=1, logger=TensorBoardLogger(tmp_path / "runs"))
    assert logged.saved_path == str(Path(trainer.log_dir) / "model")
    assert (Path(trainer.log_dir) / "model" / "model.safetensors").is_file()
    unlogged = SavePretrained()
    unlearn(tiny_subject, [unlogged], steps=1, default_root_dir=tmp_path / "root")  # logger=False
    assert unlogged.saved_path == str(tmp_path / "root" / "model")
    assert (tmp_path / "root" / "model" / "model.safetensors").is_file()


def test_enabled_false_writes_nothing(tiny_subject, tmp_path):
    save = SavePretrained(dirpath=str(tmp_path / "saved"), enabled=False)
    trainer, _ = unlearn(tiny_subject, [RunSummary(verbose=False), save], steps=1, default_root_dir=tmp_path)
    assert trainer.global_step == 1  # it did train
    assert save.saved_path is None and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="`enabled` must be true or false"):
        SavePretrained(enabled="no")


def test_a_save_that_fails_leaves_no_directory_and_no_temporary_sibling(tiny_subject, tmp_path, monkeypatch):
    module = GradDiff(model=tiny_subject, optimizer=adamw(), evaluate_at_start=False)

    def disk_full(*args, **kwargs):  # the model weights are written, then the tokenizer fails
        raise OSError("No space left on device")

    monkeypatch.setattr(type(module.tokenizer), "save_pretrained", disk_full)
    save = SavePretrained(dirpath=str(tmp_path / "model"))
    with pytest.raises(OSError, match="No space left"):
        fit(module, tiny_data(eval_sets=["forget"]), steps=1, callbacks=[save], default_root_dir=tmp_path)
    assert module.global_step == 1  # it failed while saving, after training
    assert list(tmp_path.iterdir()) == [] and save.saved_path is None  # neither the directory nor its temporary sibling


def test_a_lora_run_saves_the_adapter_and_loads_back_with_equal_logits(tiny_subject, tmp_path):
    save = SavePretrained(dirpath=str(tmp_path / "saved"))
    _, module = unlearn(tiny_subject, [save], steps=3, lora={"r": 4})
    saved = tmp_path / "saved"
    assert (saved / "adapter_config.json").is_file() and not (saved / "model.safetensors").exists()  # no base copy
    adapter = load_file(saved / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert max(float(v.abs().max()) for k, v in adapter.items() if "lora_B" in k) > 1e-4  # trained (B starts at 0)
    base = json.loads((saved / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).is_absolute() and Path(base).resolve() == Path(tiny_subject).resolve()
    loaded = load_causal_lm(str(saved))
    torch.testing.assert_close(logits(loaded), logits(module.model), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(loaded), logits(load_causal_lm(tiny_subject)), atol=1e-4)  # not the base
