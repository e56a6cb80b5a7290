import pytest
import torch

from lit_unlearn.models import load_causal_lm, load_tokenizer, resolve_model_path


def test_load_local_dir_in_train_mode(random_model_dir):
    model = load_causal_lm(random_model_dir)
    assert model.training
    assert next(model.parameters()).dtype == torch.float32
    bf16 = load_causal_lm(random_model_dir, dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16


def test_gradient_checkpointing_flag(random_model_dir):
    model = load_causal_lm(random_model_dir, gradient_checkpointing=True)
    assert model.is_activation_checkpointing if hasattr(model, "is_activation_checkpointing") else model.is_gradient_checkpointing
    ids = torch.tensor([[1, 2, 3, 4]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_missing_local_path_names_it(tmp_path):
    missing = tmp_path / "nothing" / "here"
    with pytest.raises(FileNotFoundError, match=f"Model path '{missing}' does not exist"):
        load_causal_lm(str(missing))
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        resolve_model_path(str(tmp_path / "weights.bin"))


def test_unreachable_hub_id_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"Could not load the model 'no-org/no-such-model'.*--local-dir DIR.*pass its path"):
        load_causal_lm("no-org/no-such-model")
    with pytest.raises(OSError, match="Could not load the tokenizer 'no-org/no-such-model'"):
        load_tokenizer("no-org/no-such-model")


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_causal_lm("anything", dtype="float8")


def test_pad_token_falls_back_to_eos(tmp_path, tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.pad_token == loaded.eos_token


def test_builtin_names_are_validated():
    with pytest.raises(ValueError, match="Unknown built-in model 'builtin:huge/subject'"):
        resolve_model_path("builtin:huge/subject")
