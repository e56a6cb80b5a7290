"""Loading a method's model (methods/loading.py): precisions, 4-bit/8-bit bases with LoRA, saved adapters,
8-bit optimizers, gradient checkpointing.

The precision matrix trains every method of ``lit_unlearn.registry`` from its first shipped config
(``registry.method_configs()``) under bf16-mixed and bf16-true, so a new method joins it with its YAML."""

import importlib
import math
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from lit_unlearn import KFADE, NPO, REGLU, RMU, UNDIAL, GradDiff, SavePretrained, load_causal_lm, registry
from tests.helpers import adamw, quiet_trainer, snapshot, tiny_data
from tests.helpers.training import fit_quick

# What shrinks a shipped (small-preset) config to the tiny preset's 2 layers and a 2-step run.
TINY_SETTINGS = {
    "RMU": {"layer": 1}, "SRMU": {"layer": 1},
    "SelectiveAmnesia": {"top_k": 1, "trace_examples": 4},
    "KFADE": {"steps": 1, "factor_examples": 8},
    "REGLU": {"rank": 2, "retain_rank": 4, "stat_examples": 8},
}
# Cases beyond each method's first config that the matrix keeps covering.
EXTRA_CASES = [("GradDiff", {"retain_loss": "kl"})]
NOT_FROM_CONFIG = ("model", "compare_with")  # the tiny subject replaces the model; no gold model in-process


TRAINING = [name for name, cls in registry.methods().items() if cls.takes_optimizer_steps]  # not ICU, ModHiFi


def matrix_cases() -> list[tuple[str, str, dict]]:
    """``(method, config path, overrides)``: every registered method with its first config, then the extras."""
    configs = registry.method_configs()
    cases = [(name, str(configs[name][0]), {}) for name in TRAINING if configs.get(name)]
    return cases + [(name, str(configs[name][0]), kw) for name, kw in EXTRA_CASES]


MATRIX = matrix_cases()


def case_id(case) -> str:
    name, config, kw = case
    return "-".join([config.rsplit("/", 1)[-1].removesuffix(".yaml"), *(f"{k}={v}" for k, v in kw.items())])


def from_config(name: str, config: str, model: str, **overrides):
    """The method ``name`` with its config's ``init_args`` (optimizer included) on ``model``, shrunk for
    the tiny preset."""
    init_args = dict(yaml.safe_load(Path(config).read_text())["model"].get("init_args") or {})
    for key in NOT_FROM_CONFIG:
        init_args.pop(key, None)
    optimizer = init_args.pop("optimizer", None)
    if optimizer is not None:
        module, _, cls = optimizer["class_path"].rpartition(".")
        optimizer_class = getattr(importlib.import_module(module), cls)
        init_args["optimizer"] = partial(optimizer_class, **optimizer.get("init_args", {}))
    kw = {**init_args, **TINY_SETTINGS.get(name, {}), **overrides, "evaluate_at_start": False}
    return registry.methods()[name](model=model, **kw)


def test_every_method_has_a_config_and_is_in_the_precision_matrix():
    configs = registry.method_configs()
    without = [name for name in registry.methods() if not configs.get(name)]
    assert not without, f"methods without a config: {without}"
    assert [c for c in MATRIX if not c[2]] == [(name, str(configs[name][0]), {}) for name in TRAINING]
    assert {c[0] for c in MATRIX} == set(TRAINING) and all(configs[n][0].parent.name == "methods" for n in TRAINING)
    assert set(TINY_SETTINGS) | {name for name, _ in EXTRA_CASES} <= set(registry.methods())  # no stale entries


@pytest.mark.parametrize("precision,dtype", [("bf16-mixed", torch.float32), ("bf16-true", torch.bfloat16)])
@pytest.mark.parametrize("case", MATRIX, ids=case_id)
def test_every_method_under_each_precision(case, precision, dtype, tiny_subject):
    module = from_config(*case[:2], tiny_subject, **case[2])
    start = snapshot(load_causal_lm(tiny_subject))
    trainer, rec = fit_quick(module, steps=2, precision=precision)
    assert trainer.global_step >= 1
    assert rec.losses and all(math.isfinite(x) for x in rec.losses), rec.losses
    float_params = [p for p in module.model.parameters() if p.is_floating_point()]
    assert {p.dtype for p in float_params} == {dtype}  # master weights fp32 under mixed, bf16 under bf16-true
    assert all(torch.isfinite(p).all() for p in float_params)
    if not isinstance(module, REGLU):  # REGLU trains adapters (its own test checks them)
        # compared in the run's dtype: under bf16-true the cast alone would otherwise count as a change
        changed = [n for n, p in module.model.named_parameters() if not torch.equal(p.detach(), start[n].to(p.dtype))]
        assert changed


def assert_same_function(model, reference, atol: float) -> None:
    """``model`` and ``reference`` give the same logits on a fixed input (both in eval mode)."""
    model.eval()
    reference.eval()
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits, atol=atol, rtol=atol)


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
@pytest.mark.parametrize("cls", [GradDiff, NPO])
def test_quantized_lora_trains_only_adapters_and_loads_back(cls, quantization, tiny_subject, tmp_path):
    module = cls(model=tiny_subject, quantization=quantization, lora={"r": 4, "alpha": 8}, optimizer=adamw(1e-2),
                 evaluate_at_start=False)
    module.configure_model()  # what the Trainer calls first; lets us see the weights before training
    with torch.no_grad():  # bitsandbytes quantizes int8 weights on CPU at the first forward
        module.model(input_ids=torch.tensor([[1, 5, 9]]))
    before = _frozen_state(module.model)
    assert any(t.dtype in (torch.uint8, torch.int8) for t in before.values())  # the base really is quantized
    _, rec = fit_quick(module, steps=4, callbacks=[SavePretrained(dirpath=str(tmp_path / "saved"))])
    assert len(rec.losses) == 4 and all(math.isfinite(x) for x in rec.losses)
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    if cls is NPO:  # reference log-probs cached from the quantized base equal the first step's: loss (2/β) log 2
        # LLM.int8 picks its fp16 outlier columns over the whole batch, so int8 log-probs shift
        # slightly with batch composition (cache vs training batch); 4-bit is batch-independent.
        tolerance = 1e-4 if quantization == "nf4" else 2e-2
        first = rec.objectives[0].forget.detach()
        torch.testing.assert_close(first, torch.full_like(first, 20 * math.log(2)), atol=tolerance, rtol=0)
    after = _frozen_state(module.model)
    assert after.keys() == before.keys()
    for name, tensor in before.items():  # base weights and quantization statistics bitwise unchanged
        assert torch.equal(tensor, after[name]), name
    lora_b = [p for n, p in module.model.named_parameters() if "lora_B" in n]
    assert max(float(p.detach().abs().max()) for p in lora_b) > 1e-3  # B starts at 0
    # The saved adapter loads back on the quantized base and gives the trained model's logits.
    saved = tmp_path / "saved"
    assert (saved / "adapter_config.json").is_file() and (saved / "adapter_model.safetensors").is_file()
    assert not (saved / "model.safetensors").exists()  # no copy of the base weights
    adapter = load_file(saved / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    loaded = load_causal_lm(str(saved))  # the base is quantized as it was trained (lit_unlearn_adapter.json)
    assert any(t.dtype in (torch.uint8, torch.int8) for t in loaded.state_dict().values())
    assert_same_function(loaded, module.model, atol=1e-4)


def _frozen_state(model):
    """Every non-adapter weight, quantized ones as stored and dequantized (bitsandbytes may
    re-encode its nested statistics when serialising, so the state dict is not the reference)."""
    import bitsandbytes as bnb

    state = {}
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if "lora_" in name + pname:
                continue
            state[f"{name}.{pname}"] = p.detach().clone()
            if isinstance(p, bnb.nn.Params4bit):
                state[f"{name}.{pname}:dequantized"] = bnb.functional.dequantize_4bit(p.data, p.quant_state).clone()
            elif isinstance(p, bnb.nn.Int8Params) and p.SCB is not None:
                state[f"{name}.{pname}:scales"] = p.SCB.clone()
    return state


def test_lora_reference_is_the_base_with_adapters_off(tiny_subject):
    """UNDIAL's reference is the adapter-free base: no copy (NPO's cached log-probs: the quantized test above)."""
    module = UNDIAL(model=tiny_subject, lora={"r": 4}, optimizer=adamw(1e-2), evaluate_at_start=False)
    fit_quick(module, steps=3)
    assert module._reference is None  # no second copy of the weights
    base = load_causal_lm(tiny_subject).eval()
    batch = {"input_ids": torch.tensor([[1, 5, 9, 13, 2, 7]]), "attention_mask": torch.ones(1, 6, dtype=torch.long)}
    with torch.no_grad():
        trained = module(batch)
        torch.testing.assert_close(module.reference_logits(batch), base(**batch).logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(trained, base(**batch).logits, atol=1e-3)  # the adapters did change the model


def test_merged_adapter_loads_as_plain_model(tiny_subject, tmp_path):
    module = GradDiff(model=tiny_subject, lora={"r": 4}, optimizer=adamw(1e-2), evaluate_at_start=False)
    fit_quick(module, steps=3, callbacks=[SavePretrained(dirpath=str(tmp_path / "saved"))])
    loaded = load_causal_lm(str(tmp_path / "saved"))
    assert not any("lora_" in n for n, _ in loaded.named_parameters())  # merged on a full-precision base
    assert_same_function(loaded, module.model, atol=1e-5)


def test_rmu_with_lora_adapts_only_its_layers(tiny_subject):
    module = RMU(model=tiny_subject, layer=1, steering_coeff=10.0, retain_weight=1.0, quantization="nf4",
                 lora={"r": 2}, optimizer=adamw(1e-2), evaluate_at_start=False)
    fit_quick(module, steps=2)
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and "mlp.down_proj" in n for n in trainable)
    assert {int(n.split("layers.")[1].split(".")[0]) for n in trainable} == {0, 1}  # layers l-2..l = 0, 1


def test_adamw8bit_from_yaml_and_gradient_checkpointing(tiny_subject, tmp_path):
    """The bitsandbytes 8-bit AdamW chosen by class path, as a YAML config would."""
    import bitsandbytes

    from lit_unlearn.cli import UnlearnCLI

    config = {
        "model": {"class_path": "lit_unlearn.GradDiff",
                  "init_args": {"model": tiny_subject, "gradient_checkpointing": True, "evaluate_at_start": False,
                                "optimizer": {"class_path": "bitsandbytes.optim.AdamW8bit",
                                              "init_args": {"lr": 1e-3}}}},
        "data": {"class_path": "lit_unlearn.FictitiousPeople",
                 "init_args": {"preset": "tiny", "batch_size": 4, "eval_sets": ["forget"]}},
        "trainer": {"max_steps": 2, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                    "default_root_dir": str(tmp_path), "limit_val_batches": 0, "num_sanity_val_steps": 0},
        "save_pretrained": {"enabled": False},
    }
    path = tmp_path / "adamw8bit.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = UnlearnCLI(args=["fit", "--config", str(path)])
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, bitsandbytes.optim.AdamW8bit)
    assert cli.model.model.is_activation_checkpointing
    states = [s for s in optimizer.state.values() if "state1" in s]
    assert states and any(s["state1"].dtype == torch.uint8 for s in states)  # 8-bit moments for large tensors
    assert cli.trainer.global_step == 2
    assert not (tmp_path / "model").exists()  # --save_pretrained.enabled=false saved nothing


@pytest.mark.parametrize("kwargs,match", [
    ({"quantization": "nf4"}, "needs `lora`"),
    ({"quantization": "int4", "lora": {}}, "`quantization` must be one of"),
    ({"lora": 8}, "`lora` must be a mapping"),
    ({"dtype": "float8"}, "`dtype` must be one of"),
])
def test_bad_quantization_arguments(kwargs, match, tiny_subject):
    with pytest.raises(ValueError, match=match):
        GradDiff(model=tiny_subject, **kwargs)


def test_methods_that_edit_base_weights_refuse_lora(tiny_subject):
    for cls in (KFADE, REGLU):
        with pytest.raises(ValueError, match="does not support `quantization`/`lora`"):
            cls(model=tiny_subject, lora={"r": 4})


def test_unknown_lora_field_is_named_at_construction(tiny_subject):
    with pytest.raises(ValueError, match="unknown field.*rank_typo"):
        GradDiff(model=tiny_subject, lora={"r": 4, "rank_typo": 3})


def test_eval_context_is_reusable_under_mixed_precision(tiny_subject):
    """Evaluation loops enter the context once per batch: autocast must hold every time."""
    seen = []

    class Probe(Callback):
        def on_train_start(self, trainer, module):
            context = module.eval_context()
            for _ in range(3):
                with context:
                    seen.append(torch.is_autocast_enabled("cpu"))
                seen.append(torch.is_autocast_enabled("cpu"))

    module = GradDiff(model=tiny_subject, evaluate_at_start=False)
    fit_quick(module, steps=1, precision="bf16-mixed", callbacks=[Probe()])
    assert seen == [True, False] * 3


def test_lora_on_a_model_object_and_quantization_needs_a_path(tiny_subject):
    module = GradDiff(model=load_causal_lm(tiny_subject), tokenizer=tiny_subject, lora={"r": 4},
                      evaluate_at_start=False)
    fit_quick(module, steps=1)
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with pytest.raises(ValueError, match="`quantization` needs `model` as a name or path"):
        GradDiff(model=load_causal_lm(tiny_subject), quantization="nf4", lora={"r": 4})


def test_continuing_from_a_saved_adapter_saves_merged_weights(tiny_subject, tmp_path):
    first = GradDiff(model=tiny_subject, lora={"r": 4}, optimizer=adamw(1e-2), evaluate_at_start=False)
    fit_quick(first, steps=2, callbacks=[SavePretrained(dirpath=str(tmp_path / "first"))])
    assert (tmp_path / "first" / "adapter_config.json").is_file()  # the first run saved an adapter
    second = GradDiff(model=str(tmp_path / "first"), lora={"r": 4}, optimizer=adamw(1e-2), evaluate_at_start=False)
    fit_quick(second, steps=2, callbacks=[SavePretrained(dirpath=str(tmp_path / "second"))])
    saved = tmp_path / "second"
    assert (saved / "model.safetensors").is_file() and not (saved / "adapter_config.json").exists()
    assert_same_function(load_causal_lm(str(saved)), second.model, atol=1e-5)  # both adapters are in the weights


def test_testing_a_quantized_adapter_adds_no_new_adapter(tiny_subject, tmp_path):
    trained = NPO(model=tiny_subject, quantization="nf4", lora={"r": 4}, optimizer=adamw(1e-2),
                  evaluate_at_start=False)
    fit_quick(trained, steps=2, callbacks=[SavePretrained(dirpath=str(tmp_path / "saved"))])
    module = NPO(model=str(tmp_path / "saved"), quantization="nf4", lora={"r": 4})
    quiet_trainer().test(module, datamodule=tiny_data(eval_sets=["forget"]))
    lora_names = [n for n, _ in module.model.named_parameters() if "lora_" in n]
    assert lora_names and not any(p.requires_grad for _, p in module.model.named_parameters())
    assert len(lora_names) == len([n for n, _ in trained.model.named_parameters() if "lora_" in n])
    assert module.summary["test"]["forget/nll"] == pytest.approx(trained.evaluate("val")["forget/nll"], rel=1e-4)


def test_test_from_a_lora_training_checkpoint(tiny_subject, tmp_path):
    """`lit-unlearn test --ckpt_path <fit checkpoint>` with a `lora` config: the adapters the
    checkpoint's weights belong to are added before they load."""
    trained = GradDiff(model=tiny_subject, lora={"r": 4}, optimizer=adamw(1e-2), evaluate_at_start=False)
    fit_quick(trained, steps=2, enable_checkpointing=True,
              callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last")])
    module = GradDiff(model=tiny_subject, lora={"r": 4})
    quiet_trainer().test(module, datamodule=tiny_data(eval_sets=["forget"]),
                         ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), weights_only=True)
    assert module.summary["test"]["forget/nll"] == pytest.approx(trained.evaluate("val")["forget/nll"], rel=1e-5)


def test_unlearning_from_a_qlora_adapter_starts_in_full_precision(tiny_subject, tmp_path):
    first = NPO(model=tiny_subject, quantization="nf4", lora={"r": 4}, optimizer=adamw(1e-2), evaluate_at_start=False)
    fit_quick(first, steps=2, callbacks=[SavePretrained(dirpath=str(tmp_path / "qlora"))])
    assert (tmp_path / "qlora" / "adapter_config.json").is_file()
    second = GradDiff(model=str(tmp_path / "qlora"), optimizer=adamw(1e-3), evaluate_at_start=False)
    fit_quick(second, steps=2)
    assert all(p.is_floating_point() and p.requires_grad for p in second.model.parameters())  # merged, trainable
