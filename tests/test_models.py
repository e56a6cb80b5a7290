"""Loading and saving models: local directories, hub errors, dtype, and safety (checkpoints load with
weights_only, remote code is refused, a failed save leaves nothing half-written)."""

import json
import os
import shutil

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from lit_unlearn import UNDIAL, models
from lit_unlearn.cli import cli_main
from lit_unlearn.models import load_causal_lm, load_tokenizer, resolve_model_path, save_causal_lm
from lit_unlearn.utils import atomic_dir
from tests.helpers import adamw, fit, tiny_data


def test_load_local_dir_in_train_mode(random_model_dir):
    model = load_causal_lm(random_model_dir)
    assert model.training
    assert next(model.parameters()).dtype == torch.float32
    bf16 = load_causal_lm(random_model_dir, dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16


def test_gradient_checkpointing_flag(random_model_dir):
    model = load_causal_lm(random_model_dir, gradient_checkpointing=True)
    flags = ("is_activation_checkpointing", "is_gradient_checkpointing")  # transformers 5 renamed it
    assert getattr(model, next(f for f in flags if hasattr(model, f)))
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
    expected = r"Could not load the model 'no-org/no-such-model'.*--local-dir DIR.*pass its path"
    with pytest.raises(OSError, match=expected):
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


# ---------------------------------------------------------------- safe loading and saving
def test_builtin_builds_see_cpu_and_float32_inside_configure_models_defaults(monkeypatch):
    # Lightning calls configure_model under torch.device("cuda") (bf16 default dtype under
    # bf16-true); a built-in built there on first use drew CPU-generator numbers on CUDA and failed
    seen = {}

    def resolver(name):
        seen["order"] = torch.randperm(4, generator=torch.Generator().manual_seed(0)).tolist()
        seen["device"], seen["dtype"] = torch.empty(1).device.type, torch.empty(1).dtype
        return name

    monkeypatch.setitem(models._RESOLVERS, "probe:", resolver)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            assert resolve_model_path("probe:x") == "probe:x"
            assert torch.empty(1).device.type == "meta" and torch.get_default_dtype() == torch.bfloat16
    finally:
        torch.set_default_dtype(dtype)
    assert seen == {"order": torch.randperm(4, generator=torch.Generator().manual_seed(0)).tolist(),
                    "device": "cpu", "dtype": torch.float32}


def test_checkpoints_hold_no_reference_weights_and_load_weights_only(tiny_subject, tmp_path):
    """UNDIAL keeps a frozen reference copy: it stays out of the checkpoint, which loads with
    weights_only=True (nothing but tensors and plain containers)."""
    module = UNDIAL(model=tiny_subject, optimizer=adamw())
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=2)
    fit(module, tiny_data(eval_sets=["forget"]), steps=2, callbacks=[ckpt], enable_checkpointing=True,
        limit_val_batches=0)
    state = torch.load(tmp_path / "step=2.ckpt", map_location="cpu", weights_only=True)
    n_model = len(module.model.state_dict())
    assert len(state["state_dict"]) == n_model  # the reference copy is not there
    assert all(k.startswith("model.") for k in state["state_dict"])


def test_a_pickled_object_in_a_checkpoint_is_refused(tiny_subject, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, bad)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "GradAscent", "init_args": {"model": tiny_subject}},
                                      "data": {"class_path": "FictitiousPeople", "init_args": {"preset": "tiny"}},
                                      "trainer": {"max_steps": 1, "logger": False}}))
    with pytest.raises(Exception, match="[Ww]eights.only|WeightsUnpickler|Unsupported global"):
        cli_main(["fit", "--config", str(config), "--ckpt_path", str(bad)])
    assert not (tmp_path / "pwned").exists()


def test_remote_code_in_a_checkpoint_does_not_run_by_default(tmp_path, random_model_dir):
    """A model directory that ships Python code (auto_map) is refused unless trust_remote_code."""
    model = tmp_path / "remote"
    shutil.copytree(random_model_dir, model)
    marker = tmp_path / "code_ran"
    (model / "configuration_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig\nclass EvilConfig(LlamaConfig):\n    model_type = 'evil'\n")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_causal_lm(str(model))
    assert not marker.exists()


def test_an_atomic_save_that_fails_leaves_the_previous_model_and_nothing_else(tmp_path, random_model_dir):
    """``save_causal_lm`` into ``atomic_dir``: a crash mid-write leaves the old directory as it was
    and no temporary sibling; a save that completes replaces it whole."""
    model = load_causal_lm(random_model_dir)
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        save_causal_lm(model, tmp)
    before = load_file(target / "model.safetensors")
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(OSError, match="No space left"), atomic_dir(target) as tmp:
        save_causal_lm(model, tmp)  # the weights are written, then the disk fills up
        raise OSError("No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary sibling
    after = load_file(target / "model.safetensors")
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the old model, untouched
    with atomic_dir(target) as tmp:
        save_causal_lm(model, tmp)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    changed = load_file(target / "model.safetensors")
    assert any(not torch.equal(changed[k], v) for k, v in before.items())  # replaced by the new weights
