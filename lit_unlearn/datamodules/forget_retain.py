"""``ForgetRetainDataModule``: the one datamodule every unlearning method trains on."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader

from lit_unlearn import checks
from lit_unlearn.datamodules.encoding import DEFAULT_PROMPT_TEMPLATE, EncodedSet, Fields, check_fields, collate, encode
from lit_unlearn.datamodules.sampling import (
    SAMPLING_MODES,
    ForgetRetainSampler,
    ModularSampler,
    PairDataset,
    ShardedEvalSampler,
)
from lit_unlearn.datamodules.sources import SUPPORTED_EXTENSIONS, Records, Source, load_records
from lit_unlearn.utils import global_seed


class ForgetRetainDataModule(LightningDataModule):
    """Forget and retain data for unlearning, plus named evaluation sets.

    Training batches are ``{"forget": TokenBatch, "retain": TokenBatch | None}``, with
    ``TokenBatch`` as in :mod:`lit_unlearn.datamodules.encoding` (``index`` is the row id in
    its set). Validation and test dataloaders are one per named set, in the order of
    ``eval_sets``; methods log metrics as ``<set>/<metric>``.

    Args:
        forget: the data to unlearn (see :mod:`lit_unlearn.datamodules.sources` for the forms).
        retain: data to keep; None for methods without a retain term.
        eval_sets: named evaluation sets; default ``{"forget": forget, "retain": retain}``.
        test_sets: named test sets; default ``eval_sets``.
        tokenizer: tokenizer name or path; None takes the model's (``trainer.lightning_module.tokenizer``).
        fields: record field names, e.g. ``{"question": "prompt", "answer": "response"}``.
        prompt_template: format string with ``{question}``, used without a chat template.
        chat_template: wrap the question with the tokenizer's chat template instead.
        max_length: tokens per example (prompt + answer); longer examples are truncated.
        batch_size: forget examples per step (and as many retain examples).
        eval_batch_size: examples per evaluation batch.
        sampling: ``"paired"`` (one retain per forget, with replacement), ``"cyclic"`` (the larger
            set once, the smaller cycled) or ``"modular"`` (MELU: entity by entity; every batch
            holds one entity's forget rows, paired with that entity's neighbor rows and general
            retain rows; needs the ``entity`` field).
        neighbor_sets: named sets of neighbor records for modular sampling; each record's
            ``neighbor_of`` field names the forget entity (or a list of them) it relates to.
        neighbor_fraction: share of each modular batch's retain rows drawn from the neighbors.
        suite_sets: named sets that only evaluation suites read (in both stages): not tokenised,
            no dataloader, any fields (e.g. probe records, multiple-choice questions).
        data_dir: directory that relative file paths of every set are read from (one place to
            point a config at your files: ``--data.init_args.data_dir /path/to/files``).
        train_answers: answer fields each forget/retain training row is learned with, one
            example per field, e.g. ``[answer, paraphrased_answer]`` to fine-tune on both
            phrasings; default the ``answer`` field only. Evaluation sets are not expanded.
        max_eval_examples: evaluate on a seeded subset of at most this many rows per set.
        num_workers: DataLoader workers (0 is fastest for pre-tokenised data).
        seed: seed of the evaluation subsets and, plus the ``seed_everything`` seed, of the training
            order: runs with other ``--seed_everything`` values see the data in another order and
            are evaluated on the same rows.
        relearn_sets: named sets that callbacks fine-tune on (``RelearningProbe``'s graded
            relearning sets): tokenised in ``setup`` into ``relearn_encoded``, never evaluated.
    """

    def __init__(
        self,
        forget: Source,
        retain: Source | None = None,
        eval_sets: dict[str, Source] | None = None,
        test_sets: dict[str, Source] | None = None,
        tokenizer: Any = None,
        fields: Fields | dict[str, str] | None = None,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        chat_template: bool = False,
        max_length: int = 256,
        batch_size: int = 8,
        eval_batch_size: int = 32,
        sampling: str = "paired",
        neighbor_sets: dict[str, Source] | None = None,
        neighbor_fraction: float = 0.5,
        suite_sets: dict[str, Source] | None = None,
        data_dir: str | None = None,
        train_answers: list[str] | None = None,
        max_eval_examples: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        relearn_sets: dict[str, Source] | None = None,
    ) -> None:
        super().__init__()
        sizes = (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("max_length", max_length))
        for name, value in sizes:
            checks.positive_int("ForgetRetainDataModule", name, value)
        checks.positive_int("ForgetRetainDataModule", "max_eval_examples", max_eval_examples, optional=True)
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"ForgetRetainDataModule: `num_workers` must be an integer >= 0, got {num_workers!r}")
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"ForgetRetainDataModule: `sampling` must be one of {SAMPLING_MODES}, got {sampling!r}")
        if "{question}" not in prompt_template:
            raise ValueError(f"ForgetRetainDataModule: `prompt_template` must contain '{{question}}', "
                             f"got {prompt_template!r}")
        self.fields = Fields(**fields) if isinstance(fields, dict) else (fields or Fields())
        self.prompt_template, self.chat_template = prompt_template, chat_template
        self.max_length, self.batch_size, self.eval_batch_size = max_length, batch_size, eval_batch_size
        self.sampling, self.max_eval_examples = sampling, max_eval_examples
        self.num_workers, self.seed = num_workers, seed
        self._tokenizer_arg = tokenizer
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise FileNotFoundError(f"ForgetRetainDataModule: `data_dir` '{self.data_dir}' is not a directory; "
                                    "set --data.init_args.data_dir to the folder holding your data files")
        if train_answers is not None and (not isinstance(train_answers, (list, tuple)) or not train_answers
                                          or not all(isinstance(f, str) and f for f in train_answers)):
            raise ValueError(f"ForgetRetainDataModule: `train_answers` must be a non-empty list of field names, "
                             f"got {train_answers!r}")
        self.train_answers = list(train_answers) if train_answers else None
        forget, retain = self._in_dir(forget), self._in_dir(retain)
        eval_sets, test_sets = self._in_dir(eval_sets, named=True), self._in_dir(test_sets, named=True)
        neighbor_sets, suite_sets = self._in_dir(neighbor_sets, named=True), self._in_dir(suite_sets, named=True)
        relearn_sets = self._in_dir(relearn_sets, named=True)

        # Read everything now so that bad input fails before any work starts.
        self.forget_records = self._load(forget, "forget")
        if not len(self.forget_records):
            raise ValueError(f"ForgetRetainDataModule: the forget set ({self.forget_records.origin}) is empty")
        self.retain_records = self._load(retain, "retain") if retain is not None else None
        if self.retain_records is not None and not len(self.retain_records):
            raise ValueError(f"ForgetRetainDataModule: the retain set ({self.retain_records.origin}) is empty; pass "
                             "retain=None for methods without a retain term")
        if eval_sets is None:
            eval_sets = {"forget": self.forget_records}
            if self.retain_records is not None:
                eval_sets["retain"] = self.retain_records
        self.eval_records = self._load_named(eval_sets, "eval_sets")
        self.test_records = self._load_named(test_sets, "test_sets") if test_sets is not None else self.eval_records
        if not 0 <= neighbor_fraction <= 1:
            raise ValueError(f"ForgetRetainDataModule: `neighbor_fraction` must be in [0, 1], "
                             f"got {neighbor_fraction!r}")
        self.neighbor_fraction = neighbor_fraction
        self.neighbor_records = self._load_named(neighbor_sets, "neighbor_sets") if neighbor_sets else {}
        self.suite_records = self._load_named(suite_sets, "suite_sets") if suite_sets else {}
        self.relearn_records = self._load_named(relearn_sets, "relearn_sets") if relearn_sets else {}
        self._check_fields()
        self._check_train_answers()
        self._warn_overlap()
        if sampling == "modular":
            self._check_modular()
        self.forget_set: EncodedSet | None = None
        self.retain_set: EncodedSet | None = None
        self.neighbor_encoded: dict[str, EncodedSet] = {}
        self.relearn_encoded: dict[str, EncodedSet] = {}
        self.eval_encoded: dict[str, EncodedSet] = {}
        self.test_encoded: dict[str, EncodedSet] = {}
        self.tokenizer = None
        self._fingerprint: dict[str, str] | None = None

    # ---------------------------------------------------------------- loading
    def _in_dir(self, source: Any, named: bool = False) -> Any:
        """``source`` with a relative file path read from ``data_dir`` (sets by name if ``named``)."""
        if named:
            return {k: self._in_dir(v) for k, v in source.items()} if isinstance(source, dict) else source
        if self.data_dir is None:
            return source
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            return {**source, "path": self._in_dir(source["path"])}
        if isinstance(source, str) and Path(source).suffix.lower() in SUPPORTED_EXTENSIONS:
            path = Path(source).expanduser()
            return source if path.is_absolute() else str(self.data_dir / path)
        return source

    def _load(self, source: Source, role: str) -> Records:
        try:
            return load_records(source, role)
        except FileNotFoundError as err:
            where = f" (read from `data_dir` '{self.data_dir}')" if self.data_dir is not None else ""
            raise FileNotFoundError(f"ForgetRetainDataModule: {err}{where}; change `data.init_args.data_dir` or "
                                    f"`data.init_args.{role}`" + (" (or remove that set)" if "." in role else "")
                                    ) from None

    def _check_train_answers(self) -> None:
        if self.train_answers is None:
            return
        for role, recs in (("forget", self.forget_records), ("retain", self.retain_records)):
            for i, row in enumerate(recs.rows if recs is not None else []):
                missing = [f for f in self.train_answers if row.get(f) in (None, "")]
                if missing:
                    raise ValueError(f"{role}: {recs.where(i)} has no {missing} field(s), which `train_answers` "
                                     f"{self.train_answers} asks to train on")

    def _training(self, records: Records, role: str) -> Records:
        """One training row per ``train_answers`` field (the records unchanged without it)."""
        if self.train_answers is None:
            return records
        answer = self.fields_for(records, role).answer
        rows = [{**r, answer: r[f]} for r in records.rows for f in self.train_answers]
        return Records(rows, f"{records.origin} (answers {', '.join(self.train_answers)})", records.path,
                       records.meta)

    def _load_named(self, sets: dict[str, Source], arg: str) -> dict[str, Records]:
        if not isinstance(sets, dict):
            raise TypeError(f"ForgetRetainDataModule: `{arg}` must map set names to sources, got {type(sets).__name__}")
        out = {}
        for name, src in sets.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"ForgetRetainDataModule: `{arg}` key {name!r} must be a non-empty name without '/'")
            if src is None:
                continue
            if src == "forget":
                out[name] = self.forget_records
            elif src == "retain" and self.retain_records is not None:
                out[name] = self.retain_records
            else:
                out[name] = self._load(src, f"{arg}.{name}")
            if not len(out[name]):
                raise ValueError(f"ForgetRetainDataModule: evaluation set '{name}' ({out[name].origin}) is empty")
        return out

    def records_for(self, stage: str) -> dict[str, Records]:
        """The records an evaluation suite sees at ``stage`` (``"test"`` or ``"val"``): the test
        or validation sets, plus ``suite_sets``."""
        return {**self.suite_records, **(self.test_records if stage == "test" else self.eval_records)}

    def _check_fields(self) -> None:
        named = [("forget", self.forget_records), ("retain", self.retain_records)]
        named += [(f"eval_sets.{n}", r) for n, r in self.eval_records.items()]
        named += [(f"test_sets.{n}", r) for n, r in self.test_records.items()]
        named += [(f"neighbor_sets.{n}", r) for n, r in self.neighbor_records.items()]
        named += [(f"relearn_sets.{n}", r) for n, r in self.relearn_records.items()]
        for role, recs in named:
            if recs is not None:
                check_fields(recs, role, self.fields_for(recs, role))

    def _check_modular(self) -> None:
        key = self.fields.entity
        for i, row in enumerate(self.forget_records.rows):
            if row.get(key) in (None, ""):
                raise ValueError(f"forget: {self.forget_records.where(i)} has no '{key}' field, which "
                                 "sampling='modular' groups by; set `fields.entity` to the field naming each "
                                 "record's entity")
        for name, recs in self.neighbor_records.items():
            if not any(r.get(self.fields.neighbor_of) for r in recs.rows):
                raise ValueError(f"neighbor_sets.{name}: no record has the '{self.fields.neighbor_of}' field naming "
                                 "the forget entity it neighbors")

    def fields_for(self, records: Records, role: str = "") -> Fields:
        """The datamodule's field names with the per-set overrides of ``records`` applied."""
        override = records.meta.get("fields")
        if not override:
            return self.fields
        try:
            return dataclasses.replace(self.fields, **override)
        except TypeError:
            raise ValueError(f"{role}: unknown field name(s) in {sorted(override)}; expected keys of "
                             f"{[f.name for f in dataclasses.fields(Fields)]}") from None

    def _warn_overlap(self) -> None:
        if self.retain_records is None:
            return
        f = self.fields

        def key(r):
            return (r.get(f.question), r.get(f.answer), r.get(f.text))

        forget = {key(r) for r in self.forget_records.rows}
        shared = sum(key(r) in forget for r in self.retain_records.rows)
        if shared:
            warnings.warn(f"ForgetRetainDataModule: {shared} retain record(s) ({self.retain_records.origin}) also "
                          f"appear in the forget set ({self.forget_records.origin}); the retain term will fight the "
                          "forget term on them", stacklevel=2)

    # ---------------------------------------------------------------- setup
    def resolve_tokenizer(self):
        if self.tokenizer is not None:
            return self.tokenizer
        tok = self._tokenizer_arg
        if tok is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or getattr(module, "tokenizer", None) is None:
                raise ValueError("ForgetRetainDataModule: no `tokenizer` given and no model to take it from; pass "
                                 "tokenizer=<name or path> or use the datamodule with a Trainer and an "
                                 "UnlearningModule")
            tok = module.tokenizer
        elif isinstance(tok, str):
            from lit_unlearn.models import load_tokenizer

            tok = load_tokenizer(tok)
        if tok.pad_token_id is None:
            raise ValueError("ForgetRetainDataModule: the tokenizer has no pad token; set tokenizer.pad_token")
        self.tokenizer = tok
        return tok

    def setup(self, stage: str | None = None) -> None:
        self._fingerprint = None
        cache: dict[int, EncodedSet] = {}

        def encoded(records: Records, role: str) -> EncodedSet:
            if id(records) not in cache:
                cache[id(records)] = self.encode(records, role)
            return cache[id(records)]

        if self.forget_set is None:
            train = encoded if self.train_answers is None else (
                lambda r, role: self.encode(self._training(r, role), role))  # expanded copies: not cached by id
            self.forget_set = train(self.forget_records, "forget")
            if self.retain_records is not None:
                self.retain_set = train(self.retain_records, "retain")
            self.neighbor_encoded = {n: encoded(r, f"neighbor_sets.{n}") for n, r in self.neighbor_records.items()}
            self.relearn_encoded = {n: encoded(r, f"relearn_sets.{n}") for n, r in self.relearn_records.items()}
            self.eval_encoded = {n: self._subset(encoded(r, n)) for n, r in self.eval_records.items()}
            self.test_encoded = {n: self._subset(encoded(r, n)) for n, r in self.test_records.items()}

    def encode(self, records: Records, role: str, **overrides: Any) -> EncodedSet:
        """Tokenise ``records`` with this datamodule's settings and the set's own overrides."""
        kwargs = dict(tokenizer=self.resolve_tokenizer(), role=role, fields=self.fields_for(records, role),
                      prompt_template=records.meta.get("prompt_template", self.prompt_template),
                      chat_template=self.chat_template, max_length=self.max_length)
        kwargs.update(overrides)
        return encode(records, **kwargs)

    def encode_answers(self, records: Records, answers: list[str], role: str) -> EncodedSet:
        """``records`` with each answer replaced by ``answers[i]`` (fact spans dropped), encoded
        with this datamodule's settings: e.g. a refusal for every forget question."""
        if len(answers) != len(records):
            raise ValueError(f"{role}: {len(answers)} answers for {len(records)} records")
        fields = self.fields_for(records, role)
        rows = [{**r, fields.answer: a, fields.fact_span: None} for r, a in zip(records.rows, answers)]
        return self.encode(Records(rows, f"{records.origin} ({role})", records.path, records.meta), role)

    def eval_subset(self, n: int) -> list[int]:
        """Row ids of the seeded evaluation subset of a set of ``n`` rows (all if no limit)."""
        if self.max_eval_examples is None or n <= self.max_eval_examples:
            return list(range(n))
        g = torch.Generator().manual_seed(self.seed)
        return sorted(torch.randperm(n, generator=g)[: self.max_eval_examples].tolist())

    def _subset(self, data: EncodedSet) -> EncodedSet:
        keep = self.eval_subset(len(data))
        if len(keep) == len(data):
            return data
        rows = Records([data.records.rows[i] for i in keep], data.records.origin + f" (subset of {len(keep)})")
        return EncodedSet(data.name, rows, [data.examples[i] for i in keep])

    # ---------------------------------------------------------------- loaders
    @property
    def pad_id(self) -> int:
        return self.resolve_tokenizer().pad_token_id

    def _collate_pairs(self, items):
        forget = collate([f for f, _ in items], self.pad_id)
        retain = [r for _, r in items if r is not None]
        return {"forget": forget, "retain": collate(retain, self.pad_id) if retain else None}

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        if self.sampling == "modular":
            return self._modular_dataloader()
        n_retain = len(self.retain_set) if self.retain_set is not None else 0
        sampler = ForgetRetainSampler(len(self.forget_set), n_retain, self.sampling, self.seed + global_seed())
        self._resume(sampler, -(-len(sampler) // self.batch_size), self.batch_size)
        return DataLoader(PairDataset(self.forget_set, self.retain_set), batch_size=self.batch_size, sampler=sampler,
                          collate_fn=self._collate_pairs, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def fingerprint(self) -> dict[str, str]:
        """SHA-256 of every encoded set (token ids, labels and fact masks, in order), by set
        name, plus ``"all"`` over them: what a run was trained and evaluated on."""
        import hashlib

        self._require_setup()
        if self._fingerprint is not None:
            return dict(self._fingerprint)
        sets = {"forget": self.forget_set, "retain": self.retain_set, **{f"neighbor/{k}": v for k, v in
                self.neighbor_encoded.items()}, **{f"val/{k}": v for k, v in self.eval_encoded.items()}}
        out, total = {}, hashlib.sha256()
        for name, data in sets.items():
            if data is None:
                continue
            h = hashlib.sha256()
            for i in range(len(data)):
                ids, labels, fact, _ = data[i]
                for t in (ids, labels, fact):
                    h.update(b"|" if t is None else t.numpy().tobytes())
            out[name] = h.hexdigest()
            total.update(f"{name}:{out[name]};".encode())
        out["all"] = total.hexdigest()
        self._fingerprint = out  # the encoded sets only change in setup, which resets it
        return dict(out)

    def _resume(self, sampler, batches_per_epoch: int, items_per_batch: int) -> None:
        """Start ``sampler`` where a resumed fit stopped: the restored epoch's order, less the
        batches already trained. Lightning takes the first batch before it sets the sampler's
        epoch, and checkpoints do not hold the loader's position; both follow from the
        Trainer's restored counters because the samplers are deterministic per epoch."""
        trainer = self.trainer
        if trainer is None or trainer.global_step == 0 or not trainer.lightning_module.automatic_optimization:
            return
        limit = trainer.limit_train_batches  # what Lightning counts as an epoch
        if isinstance(limit, int):
            batches_per_epoch = min(batches_per_epoch, limit)
        elif limit < 1.0:
            batches_per_epoch = max(1, int(batches_per_epoch * limit))
        accumulate = trainer.accumulate_grad_batches
        steps_per_epoch = -(-batches_per_epoch // accumulate)
        epoch = trainer.current_epoch
        done = (trainer.global_step - epoch * steps_per_epoch) * accumulate
        if done >= batches_per_epoch:  # saved after the epoch's last batch: Lightning goes on to the next
            epoch, done = epoch + 1, 0
        sampler.set_epoch(epoch)
        sampler.skip = max(0, done) * items_per_batch

    def _modular_dataloader(self) -> DataLoader:
        """One entity per batch (MELU); the retain pool is the retain set followed by the neighbor sets."""
        entity = self.fields.entity
        entity_rows: dict[str, list[int]] = {}
        for i, row in enumerate(self.forget_records.rows):
            entity_rows.setdefault(str(row[entity]), []).append(i)
        parts = ([self.retain_set] if self.retain_set is not None else []) + list(self.neighbor_encoded.values())
        general = list(range(len(self.retain_set))) if self.retain_set is not None else []
        neighbor_rows: dict[str, list[int]] = {}
        offset = len(general)
        for name, data in self.neighbor_encoded.items():
            for i, row in enumerate(self.neighbor_records[name].rows):
                related = row.get(self.fields.neighbor_of)
                for e in ([related] if isinstance(related, str) else related or []):
                    neighbor_rows.setdefault(str(e), []).append(offset + i)
            offset += len(data)
        pool = ConcatDataset(parts) if parts else None
        sampler = ModularSampler(entity_rows, neighbor_rows, general, self.batch_size, self.neighbor_fraction,
                                 self.seed + global_seed())
        self._resume(sampler, len(sampler), 1)
        return DataLoader(PairDataset(self.forget_set, pool), batch_size=None, sampler=sampler,
                          collate_fn=self._collate_pairs, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def eval_dataloader(self, data: EncodedSet, batch_size: int | None = None, shard: bool = True) -> DataLoader:
        """An in-order loader over ``data``, sharded across ranks without padding (unless ``shard=False``)."""
        sampler = ShardedEvalSampler(len(data)) if shard else None
        return DataLoader(data, batch_size=batch_size or self.eval_batch_size, sampler=sampler,
                          collate_fn=functools.partial(collate, pad_id=self.pad_id), num_workers=self.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        self._require_setup()
        return [self.eval_dataloader(d) for d in self.eval_encoded.values()]

    def test_dataloader(self) -> list[DataLoader]:
        self._require_setup()
        return [self.eval_dataloader(d) for d in self.test_encoded.values()]

    @property
    def val_set_names(self) -> list[str]:
        return list(self.eval_records)

    @property
    def test_set_names(self) -> list[str]:
        return list(self.test_records)

    def _require_setup(self) -> None:
        if self.forget_set is None:
            self.setup()

    # ---------------------------------------------------------------- failure
    def on_exception(self, exception: BaseException) -> None:
        from lit_unlearn.utils import remove_run_dir_if_untrained

        if self.trainer is not None:
            remove_run_dir_if_untrained(self.trainer)
