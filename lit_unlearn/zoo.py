"""Built-in models of the embedded benchmark, built on first use and cached.

Names: ``builtin:<preset>/subject`` (trained on forget + retain people: every trained
person) and ``builtin:<preset>/retain99|retain95|retain90`` (the gold retain model of
forget01 / forget05 / forget10: trained on the retain people only). Each is a small
Llama-style model trained with :class:`~lit_unlearn.methods.FineTune` on both phrasings of
every fact, saved under ``$LIT_UNLEARN_HOME/fictitious/<preset>-<key>/`` where the key
hashes the generator's and the training settings, so changing either rebuilds. Each
model directory holds ``eval.json``: its teacher-forced metrics on the benchmark's sets.

This module sits above :mod:`lit_unlearn.methods` (it trains with ``FineTune``) and
registers the ``builtin:`` prefix with :func:`lit_unlearn.models.resolve_model_path`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lit_unlearn.datamodules.fictitious import FictitiousBenchmark, benchmark_dir, ensure_tokenizer
from lit_unlearn.models import quiet_transformers, register_model_resolver
from lit_unlearn.utils import atomic_dir, file_lock, isolated_rng, quiet_lightning

ZOO_VERSION = 1
PREFIX = "builtin:"


@dataclass(frozen=True)
class TrainSpec:
    """Architecture and training settings of a built-in model."""

    layers: int
    hidden: int
    heads: int
    epochs: int
    lr: float
    batch_size: int
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "zoo_version": ZOO_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


SPECS: dict[str, TrainSpec] = {
    "tiny": TrainSpec(layers=2, hidden=64, heads=2, epochs=30, lr=5e-3, batch_size=8),
    "small": TrainSpec(layers=4, hidden=128, heads=4, epochs=30, lr=3e-3, batch_size=16),
    "default": TrainSpec(layers=4, hidden=192, heads=6, epochs=40, lr=2e-3, batch_size=32),
}


def parse_name(name: str) -> tuple[str, str]:
    """``"builtin:small/retain90"`` -> ``("small", "retain90")``, validated."""
    body = name[len(PREFIX):] if name.startswith(PREFIX) else name
    preset, _, model = body.partition("/")
    valid = ["subject", "retain99", "retain95", "retain90"]
    if preset not in SPECS or model not in valid:
        raise ValueError(f"Unknown built-in model {name!r}: expected 'builtin:<preset>/<model>' with preset in "
                         f"{sorted(SPECS)} and model in {valid}")
    return preset, model


def model_dir(preset: str, model: str) -> Path:
    return benchmark_dir(FictitiousBenchmark(preset)) / f"{model}-{SPECS[preset].key()}"


def resolve(name: str) -> str:
    """Local directory of a built-in model, building it first if it is not cached."""
    preset, model = parse_name(name)
    path = model_dir(preset, model)
    if not (path / "config.json").exists():
        with file_lock(str(path) + ".lock"):
            if not (path / "config.json").exists():
                build(preset, model, path)
    return str(path)


def build(preset: str, model: str, path: Path) -> None:
    """Train a built-in model with ``FineTune`` and save it (with tokenizer and ``eval.json``) to ``path``."""
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import TQDMProgressBar
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lit_unlearn.callbacks.log_progress import LogProgress, interactive
    from lit_unlearn.datamodules.fictitious_people import FictitiousPeople
    from lit_unlearn.datamodules.forget_retain import ForgetRetainDataModule
    from lit_unlearn.methods.finetune import FineTune

    spec, bench = SPECS[preset], FictitiousBenchmark(preset)
    train_split = "train" if model == "subject" else model
    records = bench.training_records(train_split)
    tok_path = ensure_tokenizer(bench)
    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    print(f"lit-unlearn: building builtin:{preset}/{model} ({len(records)} examples, {spec.epochs} epochs) "
          f"into {path}", flush=True)
    started = time.perf_counter()
    with isolated_rng(), quiet_lightning(), quiet_transformers():
        seed_everything(spec.seed, verbose=False)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=4 * spec.hidden,
                             num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                             num_key_value_heads=spec.heads, max_position_embeddings=128, tie_word_embeddings=True,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        steps = spec.epochs * math.ceil(len(records) / spec.batch_size)
        module = FineTune(
            model=LlamaForCausalLM(config), tokenizer=tok_path,
            optimizer=functools.partial(torch.optim.AdamW, lr=spec.lr, weight_decay=0.0),
            scheduler=functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=spec.lr, total_steps=steps,
                                        pct_start=0.1),
            evaluate_at_start=False)
        data = ForgetRetainDataModule(forget=records, tokenizer=tok_path, eval_sets={}, batch_size=spec.batch_size,
                                      max_length=64, seed=spec.seed)
        # tqdm, not rich: a build may start while another Trainer's rich display is live; in a log
        # file, a plain line every 30 s
        bar = TQDMProgressBar(leave=True) if interactive() else LogProgress(every_n_steps=0)
        trainer = Trainer(max_epochs=spec.epochs, logger=False, enable_checkpointing=False, devices=1,
                          gradient_clip_val=1.0, enable_model_summary=False, limit_val_batches=0,
                          num_sanity_val_steps=0, callbacks=[bar])
        trainer.fit(module, datamodule=data)
        trained = time.perf_counter() - started
        with atomic_dir(path) as tmp:
            module.model.save_pretrained(tmp, safe_serialization=True)
            module.tokenizer.save_pretrained(tmp)
            metrics = {}
            for split in ("forget01", "forget05", "forget10"):
                evaluator = Trainer(logger=False, devices=1, enable_progress_bar=False, enable_model_summary=False)
                evaluator.validate(module, datamodule=FictitiousPeople(preset, split, max_eval_examples=None),
                                   verbose=False)
                metrics[split] = {k: float(v) for k, v in evaluator.callback_metrics.items()}
            info = {"name": f"{PREFIX}{preset}/{model}", "benchmark": asdict(bench.config), "train": asdict(spec),
                    "zoo_version": ZOO_VERSION, "examples": len(records), "train_seconds": round(trained, 1)}
            (tmp / "eval.json").write_text(json.dumps(metrics, indent=2))
            (tmp / "build_info.json").write_text(json.dumps(info, indent=2))
    acc = {s: metrics["forget10"].get(f"{s}/fact_acc", float("nan")) for s in ("forget", "retain", "holdout")}
    print(f"lit-unlearn: built builtin:{preset}/{model} in {time.perf_counter() - started:.0f} s; fact accuracy "
          f"forget10 {acc['forget']:.3f}, retain {acc['retain']:.3f}, holdout {acc['holdout']:.3f} "
          f"(chance {bench.chance_level():.3f})", flush=True)


register_model_resolver(PREFIX, resolve, check=parse_name)
