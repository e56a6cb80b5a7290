"""Built-in models of the embedded benchmarks, built on first use and cached.

Names: ``builtin:<preset>/subject`` (trained on forget + retain people: every trained
person) and ``builtin:<preset>/retain99|retain95|retain90`` (the gold retain model of
forget01 / forget05 / forget10: trained on the retain people only). Each is a small
Llama-style model trained with :class:`~lit_unlearn.methods.FineTune` on both phrasings of
every fact, saved under ``$LIT_UNLEARN_HOME/fictitious/<preset>-<key>/`` where the key
hashes the generator's and the training settings, so changing either rebuilds. Each
model directory holds ``eval.json``: its teacher-forced metrics on the benchmark's sets.

Sibling benchmarks register a :class:`Family` under a name and get models named
``builtin:<family>-<preset>/<model>`` (``builtin:dusk-small/subject-interview``), trained and cached
the same way by :func:`train_and_save`.

This module sits above :mod:`lit_unlearn.methods` (it trains with ``FineTune``) and
registers the ``builtin:`` prefix with :func:`lit_unlearn.models.resolve_model_path`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Family:
    """How to build the built-in models of one embedded benchmark.

    Args:
        specs: training settings per preset.
        models: the model names a preset offers (``subject``, gold retain models).
        directory: the preset's cache directory (its tokenizer lives there too).
        records: ``(preset, model) -> training records`` (QA or ``text`` records).
        tokenizer: ``preset -> tokenizer path`` (trained and cached on first use).
        evaluate: ``(module, preset) -> {split: metrics}`` written to ``eval.json`` (None: none).
        summary: ``(preset, metrics) -> str``: the line printed after a build.
        info: ``preset -> dict`` added to ``build_info.json`` (the generator's settings).
        max_length: tokens per training example.
        context: the model's ``max_position_embeddings``.
    """

    specs: dict[str, TrainSpec]
    models: Callable[[str], list[str]]
    directory: Callable[[str], Path]
    records: Callable[[str, str], list[dict[str, Any]]]
    tokenizer: Callable[[str], str]
    evaluate: Callable[[Any, str], dict[str, dict[str, float]]] | None = None
    summary: Callable[[str, dict[str, dict[str, float]]], str] | None = None
    info: Callable[[str], dict[str, Any]] | None = None
    max_length: int = 64
    context: int = 128


FAMILIES: dict[str, Family] = {}
# Sibling benchmarks, imported on first use: each module's ``zoo_family()`` returns the
# :class:`Family` fields, with ``specs`` as plain dicts of :class:`TrainSpec` fields.
SIBLINGS = {"dusk": "lit_unlearn.datamodules.dusk", "code": "lit_unlearn.datamodules.code_leak"}


def register_family(name: str, family: Family) -> None:
    """Offer ``builtin:<name>-<preset>/<model>`` for a sibling benchmark."""
    if not name or "-" in name or "/" in name:
        raise ValueError(f"register_family: a family name must be non-empty without '-' or '/', got {name!r}")
    FAMILIES[name] = family


def parse_name(name: str) -> tuple[str, str]:
    """``"builtin:small/retain90"`` -> ``("small", "retain90")``, ``"builtin:dusk-tiny/subject-news"``
    -> ``("dusk-tiny", "subject-news")``, validated."""
    body = name[len(PREFIX):] if name.startswith(PREFIX) else name
    preset, _, model = body.partition("/")
    family, sub = _family(preset)
    valid = family.models(sub) if sub in family.specs else []
    if sub not in family.specs or model not in valid:
        for sibling in SIBLINGS:
            if sibling not in FAMILIES:
                _load_sibling(sibling)
        presets = sorted(SPECS) + [f"{f}-{p}" for f, fam in FAMILIES.items() if f for p in fam.specs]
        raise ValueError(f"Unknown built-in model {name!r}: expected 'builtin:<preset>/<model>' with preset in "
                         f"{presets} and model in {valid or 'the models of that preset'}")
    return preset, model


def _load_sibling(name: str) -> None:
    import importlib

    fields = importlib.import_module(SIBLINGS[name]).zoo_family()
    fields["specs"] = {p: TrainSpec(**d) for p, d in fields["specs"].items()}
    register_family(name, Family(**fields))


def _family(preset: str) -> tuple[Family, str]:
    head, _, rest = preset.partition("-")
    if rest and head not in FAMILIES and head in SIBLINGS:
        _load_sibling(head)
    if rest and head in FAMILIES:
        return FAMILIES[head], rest
    return FAMILIES[""], preset


def model_dir(preset: str, model: str) -> Path:
    """Cache directory of a built-in model: keyed by its ``TrainSpec`` and, where they differ from the
    defaults, the family's ``max_length`` and ``context`` (so the first models' keys never changed)."""
    family, sub = _family(preset)
    key = family.specs[sub].key()
    if (family.max_length, family.context) != (64, 128):
        key = hashlib.sha256(f"{key}-{family.max_length}-{family.context}".encode()).hexdigest()[:10]
    return family.directory(sub) / f"{model}-{key}"


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
    family, sub = _family(preset)
    started = time.perf_counter()
    metrics = train_and_save(f"{PREFIX}{preset}/{model}", family.records(sub, model), family.tokenizer(sub),
                             family.specs[sub], path,
                             evaluate=(lambda m: family.evaluate(m, sub)) if family.evaluate else None,
                             max_length=family.max_length, context=family.context,
                             info=family.info(sub) if family.info else None)
    line = family.summary(sub, metrics) if family.summary else ""
    print(f"lit-unlearn: built {PREFIX}{preset}/{model} in {time.perf_counter() - started:.0f} s"
          + (f"; {line}" if line else ""), flush=True)


def train_and_save(name: str, records: list[dict[str, Any]], tok_path: str, spec: TrainSpec, path: Path,
                   evaluate: Callable[[Any], dict[str, dict[str, float]]] | None = None, max_length: int = 64,
                   context: int = 128, info: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Train a fresh Llama-style model of ``spec`` on ``records`` with ``FineTune`` (OneCycle AdamW,
    clip 1.0) and save it atomically to ``path`` with its tokenizer, ``build_info.json`` and
    ``eval.json`` (what ``evaluate(module)`` returns). Returns those metrics."""
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import TQDMProgressBar
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lit_unlearn.callbacks.log_progress import LogProgress, interactive
    from lit_unlearn.datamodules.forget_retain import ForgetRetainDataModule
    from lit_unlearn.methods.finetune import FineTune

    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    print(f"lit-unlearn: building {name} ({len(records)} examples, {spec.epochs} epochs) into {path}", flush=True)
    started = time.perf_counter()
    with isolated_rng(), quiet_lightning(), quiet_transformers():
        seed_everything(spec.seed, verbose=False)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=4 * spec.hidden,
                             num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                             num_key_value_heads=spec.heads, max_position_embeddings=context, tie_word_embeddings=True,
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
                                      max_length=max_length, seed=spec.seed)
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
            metrics = evaluate(module) if evaluate is not None else {}
            meta = {"name": name, **(info or {}), "train": asdict(spec), "zoo_version": ZOO_VERSION,
                    "examples": len(records), "train_seconds": round(trained, 1)}
            (tmp / "eval.json").write_text(json.dumps(metrics, indent=2))
            (tmp / "build_info.json").write_text(json.dumps(meta, indent=2))
    return metrics


def validate(module, datamodule) -> dict[str, float]:
    """``Trainer.validate`` of ``module`` on ``datamodule``: its callback metrics as floats."""
    from lightning.pytorch import Trainer

    evaluator = Trainer(logger=False, devices=1, enable_progress_bar=False, enable_model_summary=False)
    evaluator.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in evaluator.callback_metrics.items()}


# ------------------------------------------------------------------ the fictitious-people family
def _fictitious_records(preset: str, model: str) -> list[dict[str, Any]]:
    return FictitiousBenchmark(preset).training_records("train" if model == "subject" else model)


def _fictitious_eval(module, preset: str, eval_sets: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    from lit_unlearn.datamodules.fictitious_people import EVAL_SETS, FictitiousPeople

    return {split: validate(module, FictitiousPeople(preset, split, eval_sets=eval_sets or EVAL_SETS,
                                                     max_eval_examples=None))
            for split in ("forget01", "forget05", "forget10")}


def _fictitious_summary(preset: str, metrics: dict[str, dict[str, float]]) -> str:
    sets = ("forget", "retain", "holdout", "combined_forget", "combined_retain")
    acc = {s: metrics["forget10"][f"{s}/fact_acc"] for s in sets if f"{s}/fact_acc" in metrics["forget10"]}
    return ("fact accuracy forget10 " + ", ".join(f"{s} {v:.3f}" for s, v in acc.items())
            + f" (chance {FictitiousBenchmark(preset).chance_level():.3f})")


def fictitious_family(prefix: str = "", specs: dict[str, TrainSpec] = SPECS,
                      eval_sets: tuple[str, ...] | None = None) -> Family:
    """The built-in models of the fictitious-people benchmark presets ``<prefix><preset>`` for the
    presets in ``specs`` (``prefix="blur-"``: ``blur-tiny``, ``blur-small``), evaluated on
    ``eval_sets`` of each forget split (None: ``FictitiousPeople``'s defaults)."""
    def full(preset: str) -> FictitiousBenchmark:
        return FictitiousBenchmark(prefix + preset)

    return Family(
        specs=specs, models=lambda preset: ["subject", "retain99", "retain95", "retain90"],
        directory=lambda preset: benchmark_dir(full(preset)),
        records=lambda preset, model: _fictitious_records(prefix + preset, model),
        tokenizer=lambda preset: ensure_tokenizer(full(preset)),
        evaluate=lambda module, preset: _fictitious_eval(module, prefix + preset, eval_sets),
        summary=lambda preset, metrics: _fictitious_summary(prefix + preset, metrics),
        info=lambda preset: {"benchmark": asdict(full(preset).config)})


FAMILIES[""] = fictitious_family()
# builtin:blur-tiny/subject, builtin:blur-small/retain90, ...: tiny and small also trained on
# combined queries of retain people (BenchmarkConfig.combined_training), with the same TrainSpecs
FAMILIES["blur"] = fictitious_family(
    "blur-", {p: SPECS[p] for p in ("tiny", "small")},
    eval_sets=("forget", "retain", "holdout", "neighbor", "combined_forget", "combined_retain"))


register_model_resolver(PREFIX, resolve, check=parse_name)
