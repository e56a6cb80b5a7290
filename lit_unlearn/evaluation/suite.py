"""Evaluation suites: TOFU-style and MUSE-style, run on a datamodule's named sets.

A suite evaluates one model on the datamodule's validation or test records, sharded by
record across ranks (every metric keeps sum or gathered per-example states, so results
are the same on any number of processes), and returns a flat ``{name: value}`` dict plus
the per-example statistics that a later run needs as its reference (``stats``).

Comparisons with the gold retain model (forget quality, privacy leak) use its ``stats``:
from ``gold_stats`` (a ``results.json`` written by ``lit-unlearn test`` on the retain
model), or computed once from ``gold_model`` (cached beside built-in models).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lit_unlearn import checks
from lit_unlearn.datamodules.encoding import collate
from lit_unlearn.datamodules.sampling import _world
from lit_unlearn.datamodules.sources import Records
from lit_unlearn.evaluation.forget_quality import forget_quality
from lit_unlearn.evaluation.memorization import ExactMemorization, ExtractionStrength
from lit_unlearn.evaluation.mia import ATTACKS, MembershipInference, mia_scores, privacy_leak, zlib_length
from lit_unlearn.evaluation.probability import AnswerProbability, OptionProbability
from lit_unlearn.evaluation.rouge import RougeL, greedy_generate
from lit_unlearn.evaluation.teacher_forced import TeacherForcedMetrics
from lit_unlearn.evaluation.truth_ratio import TruthRatio
from lit_unlearn.evaluation.utility import harmonic_mean
from lit_unlearn.models import load_causal_lm, resolve_model_path
from lit_unlearn.objectives import nll
from lit_unlearn.utils import atomic_write_text, cache_home


@dataclass
class SuiteResult:
    """``metrics``: flat name -> value; ``stats``: per-example data a later run compares against."""

    metrics: dict[str, float]
    stats: dict[str, Any] = field(default_factory=dict)


class EvalSuite:
    """Base class: sharding, batched forward passes, generation and the gold-model reference.

    Args:
        batch_size: examples per forward pass and per generation batch.
        max_new_tokens: generation budget for ROUGE.
        gold_model: the retain model to compare with (name or path); its statistics are
            computed once (cached beside built-in and cached models).
        gold_stats: a ``results.json`` from ``lit-unlearn test`` on the retain model, instead
            of ``gold_model``.
        share_prompts: run each question once with the KV cache and score all of its answers
            (answer, paraphrase, perturbed) as continuations; off runs one full pass each.
        progress: show a progress bar.
    """

    def __init__(self, batch_size: int = 32, max_new_tokens: int = 64, gold_model: str | None = None,
                 gold_stats: str | None = None, share_prompts: bool = True, progress: bool = True) -> None:
        checks.positive_int(type(self).__name__, "batch_size", batch_size)
        checks.positive_int(type(self).__name__, "max_new_tokens", max_new_tokens)
        if gold_stats is not None and not Path(gold_stats).is_file():
            raise FileNotFoundError(f"{type(self).__name__}: `gold_stats` file '{gold_stats}' does not exist; write it "
                                    "with `lit-unlearn test` on the retain model (results.json)")
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.gold_model, self.gold_stats, self.progress = gold_model, gold_stats, progress
        self.share_prompts = share_prompts
        self._reference: dict[str, Any] | None = None

    # -------------------------------------------------------------- interface
    def required_sets(self) -> list[str]:
        raise NotImplementedError

    def evaluate(self, ev: _Evaluator) -> SuiteResult:
        """Compute the suite's metrics with ``ev`` (no reference comparisons)."""
        raise NotImplementedError

    def compare(self, result: SuiteResult, reference: dict[str, Any]) -> dict[str, float]:
        """Metrics that need the gold model's ``stats``: here the privacy leak of every MIA
        attack both ran (``privleak`` is Min-K%++'s); suites add their own (forget quality)."""
        out = {}
        for attack, value in result.stats.get("mia_auc", {}).items():
            if attack in reference.get("mia_auc", {}):
                out[f"privleak/{attack}"] = privacy_leak(value, reference["mia_auc"][attack])
        if "privleak/min_k_pp" in out:
            out["privleak"] = out["privleak/min_k_pp"]
        return out

    # -------------------------------------------------------------- running
    @torch.no_grad()
    def run(self, model: nn.Module, tokenizer, datamodule, stage: str = "test", context=None,
            with_reference: bool = True, default_gold: str | None = None) -> SuiteResult:
        """Evaluate ``model`` on the datamodule's ``stage`` (``"test"`` or ``"val"``) records.

        ``default_gold`` is the gold model used when the suite names neither ``gold_model``
        nor ``gold_stats`` (the module passes its ``compare_with``)."""
        records = datamodule.test_records if stage == "test" else datamodule.eval_records
        missing = [s for s in self.required_sets() if s not in records]
        if missing:
            raise ValueError(f"{type(self).__name__} needs the {stage} set(s) {missing}; the datamodule has "
                             f"{sorted(records)}. Name them in `{'test_sets' if stage == 'test' else 'eval_sets'}` "
                             "or set the suite's set names")
        ev = _Evaluator(model, tokenizer, datamodule, records, self.batch_size, self.max_new_tokens,
                        context or nullcontext(), self.progress, self.share_prompts)
        was_training = model.training
        model.eval()
        try:
            result = self.evaluate(ev)
        finally:
            model.train(was_training)
        if with_reference:
            reference = self.reference(tokenizer, datamodule, stage, context, next(model.parameters()).device,
                                       default_gold)
            if reference is not None:
                result.metrics.update(self.compare(result, reference))
        return result

    def reference(self, tokenizer, datamodule, stage: str, context, device,
                  default_gold: str | None = None) -> dict[str, Any] | None:
        """The gold model's ``stats`` (loaded, cached, or computed once)."""
        if self._reference is not None:
            return self._reference
        if self.gold_stats is not None:
            data = json.loads(Path(self.gold_stats).read_text())
            self._reference = data.get("stats", data)
            return self._reference
        gold_name = self.gold_model or default_gold
        if gold_name is None:
            return None
        path = Path(resolve_model_path(gold_name))
        records = datamodule.test_records if stage == "test" else datamodule.eval_records
        key = self._stats_key(records, datamodule)
        cache = path / f"lit_unlearn_suite_stats-{key}.json"
        if cache.is_file():
            self._reference = json.loads(cache.read_text())
            return self._reference
        gold = load_causal_lm(str(path), dtype=None).to(device)
        self._reference = self.run(gold, tokenizer, datamodule, stage, context, with_reference=False).stats
        del gold
        if _world()[1] == 0 and path.resolve().is_relative_to(cache_home().resolve()):
            atomic_write_text(cache, json.dumps(self._reference))
        return self._reference

    def _stats_key(self, records: dict[str, Records], datamodule) -> str:
        blob = json.dumps({"suite": type(self).__name__, "config": self.config(),
                           "sets": {s: records[s].rows for s in self.required_sets()},
                           "data": [datamodule.max_length, datamodule.prompt_template, datamodule.chat_template,
                                    datamodule.max_eval_examples, datamodule.seed]}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def config(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens}


class _Evaluator:
    """Batched passes over this rank's share of each set's records."""

    def __init__(self, model, tokenizer, datamodule, records: dict[str, Records], batch_size: int,
                 max_new_tokens: int, context, progress: bool, share_prompts: bool = True) -> None:
        self.model, self.tokenizer, self.dm, self.records = model, tokenizer, datamodule, records
        self.batch_size, self.max_new_tokens, self.context = batch_size, max_new_tokens, context
        self.device = next(model.parameters()).device
        self.keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.share_prompts = share_prompts and self.keep_logits and hasattr(model, "generate")
        # transformers 5.x renamed `past_key_values` to `cache`
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.world, self.rank = _world()
        self.progress = progress and self.rank == 0

    def rows(self, name: str) -> list[int]:
        """This rank's record ids of a set (after the datamodule's evaluation subset)."""
        keep = self.dm.eval_subset(len(self.records[name]))
        return keep[self.rank :: self.world]

    def _records(self, name: str, rows: list[int], answer_key: str | None = None) -> Records:
        src = self.records[name]
        picked = [src.rows[i] for i in rows]
        if answer_key is not None:
            picked = [{**r, "answer": r[answer_key]} for r in picked]
        meta = dict(src.meta)
        if answer_key is not None:
            meta["fields"] = {**meta.get("fields", {}), "answer": "answer"}
        return Records(picked, src.origin, src.path, meta)

    def encode(self, name: str, rows: list[int], answer_key: str | None = None, fact_span_key: str | None = None):
        overrides = {"fact_span_key": fact_span_key} if fact_span_key else {}
        return self.dm.encode(self._records(name, rows, answer_key), name, **overrides)

    def forward(self, data, desc: str):
        """Yield ``(batch, logits)`` over an encoded set, in batches of similar length
        (less padding); ``batch["index"]`` holds each example's position in ``data``."""
        pad = self.tokenizer.pad_token_id
        order = sorted(range(len(data)), key=lambda i: len(data[i][0]))
        starts = range(0, len(data), self.batch_size)
        for start in tqdm(starts, desc=desc, disable=not self.progress, leave=False):
            items = [data[i] for i in order[start : start + self.batch_size]]
            if not self.keep_logits:
                batch = {k: v.to(self.device) for k, v in collate(items, pad).items()}
                with self.context:
                    logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        use_cache=False).logits
                yield batch, logits.float()
                continue
            # Left padding aligns the answers at the end, so the LM head runs only on the last
            # `keep` positions (the prompt's logits are never scored); big vocabularies gain most.
            batch = {k: v.to(self.device) for k, v in collate(items, pad, padding_side="left").items()}
            width = batch["input_ids"].shape[1]
            keep = max(len(ids) - _prompt_len(labels) for ids, labels, *_ in items) + 1
            keep = min(keep, width)
            positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with self.context:
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    position_ids=positions, use_cache=False, logits_to_keep=keep).logits
            for key in ("labels", "fact_mask", "input_ids", "attention_mask"):
                if key in batch:
                    batch[key] = batch[key][:, width - keep:]
            yield batch, logits.float()

    def variants(self, name: str, rows: list[int], keys: list[str]):
        """Score several answers per record, running each record's prompt once.

        ``keys`` name answer fields (``"answer"``, ``"paraphrased_answer"``) or a list field
        (``"perturbed_answer"``). The prompts of a chunk of records go through the model once
        with the KV cache; the cache is then repeated for every answer of every record, and
        all answers are scored in one continuation pass. Yields ``(key, batch, logits)``
        where ``batch`` is a ``TokenBatch`` (``labels`` hold the answer, ``index`` the
        position in ``rows``, ``option`` the position in a list field) and ``logits[:, t]``
        predicts ``labels[:, t + 1]``, as everywhere else. Models whose cache cannot be
        reordered fall back to one full pass per answer.
        """
        src = self.records[name].rows
        encoded = {}
        for key in keys:
            if key == "perturbed_answer":
                flat = [(j, k, opt) for j, i in enumerate(rows)
                        for k, opt in enumerate(_as_list(src[i].get(key), name, i, key))]
                recs = Records([{**src[rows[j]], "answer": opt} for j, _, opt in flat], self.records[name].origin,
                               meta={**self.records[name].meta, "fields": {**self.records[name].meta.get("fields", {}),
                                                                           "answer": "answer"}})
                encoded[key] = ([(j, k) for j, k, _ in flat], self.dm.encode(recs, name))
            else:
                data = self.encode(name, rows, None if key == "answer" else key)
                encoded[key] = ([(j, 0) for j in range(len(rows))], data)
        per_record = max(1, self.batch_size // max(1, sum(len(v[0]) for v in encoded.values()) // max(1, len(rows))))
        starts = range(0, len(rows), per_record)
        for start in tqdm(starts, desc=f"{name}/score", disable=not self.progress, leave=False):
            chunk = range(start, min(start + per_record, len(rows)))
            items = [(key, j, k, data[pos]) for key, (where, data) in encoded.items()
                     for pos, (j, k) in enumerate(where) if j in chunk]
            yield from self._score_chunk(list(chunk), items)

    def scored(self, name: str, rows: list[int], keys: list[str]):
        """``variants`` when prompts can be shared, else one full pass per answer field (same yields)."""
        if self.share_prompts:
            yield from self.variants(name, rows, keys)
            return
        src = self.records[name].rows
        for key in keys:
            if key == "perturbed_answer":
                where = [(j, k) for j, i in enumerate(rows) for k, _ in enumerate(_as_list(src[i].get(key), name, i, key))]
                recs = Records([{**src[rows[j]], "answer": _as_list(src[rows[j]][key], name, rows[j], key)[k]}
                                for j, k in where], self.records[name].origin,
                               meta={**self.records[name].meta, "fields": {**self.records[name].meta.get("fields", {}),
                                                                           "answer": "answer"}})
                data = self.dm.encode(recs, name)
            else:
                where = [(j, 0) for j in range(len(rows))]
                data = self.encode(name, rows, None if key == "answer" else key)
            for batch, logits in self.forward(data, f"{name}/{key}"):
                pos = batch["index"].tolist()
                batch["index"] = torch.tensor([where[p][0] for p in pos], device=self.device)
                batch["option"] = torch.tensor([where[p][1] for p in pos], device=self.device)
                yield key, batch, logits

    def _score_chunk(self, chunk: list[int], items: list):
        pad = self.tokenizer.pad_token_id
        # one prompt per record: the prompt tokens of its first item (all items share it)
        prompts = {}
        for _, j, _, (ids, labels, _, _) in items:
            prompts.setdefault(j, ids[: _prompt_len(labels)])
        order = {j: r for r, j in enumerate(chunk)}
        width = max(len(p) for p in prompts.values())
        p_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        p_mask = torch.zeros_like(p_ids)
        for j, p in prompts.items():
            p_ids[order[j], width - len(p):], p_mask[order[j], width - len(p):] = p, 1
        p_ids, p_mask = p_ids.to(self.device), p_mask.to(self.device)
        p_len = p_mask.sum(-1)
        with self.context:
            out = self.model(input_ids=p_ids, attention_mask=p_mask, position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0),
                             use_cache=True, logits_to_keep=1)
        cache = out.cache if self.cache_arg == "cache" else out.past_key_values
        rows = torch.tensor([order[j] for _, j, _, _ in items], device=self.device)
        cache.reorder_cache(rows)
        conts = [(ids[_prompt_len(labels):], fact[_prompt_len(labels):] if fact is not None else None)
                 for _, _, _, (ids, labels, fact, _) in items]
        length = max(len(c) for c, _ in conts)
        c_ids = torch.full((len(items), length), pad, dtype=torch.long)
        c_mask = torch.zeros_like(c_ids)
        fact_mask = torch.zeros((len(items), length + 1), dtype=torch.bool)
        for r, (c, f) in enumerate(conts):
            c_ids[r, : len(c)], c_mask[r, : len(c)] = c, 1
            if f is not None:
                fact_mask[r, 1 : 1 + len(f)] = f
        c_ids, c_mask = c_ids.to(self.device), c_mask.to(self.device)
        positions = p_len[rows][:, None] + torch.arange(length, device=self.device)[None, :]
        with self.context:
            logits = self.model(input_ids=c_ids, attention_mask=torch.cat([p_mask[rows], c_mask], dim=1),
                                position_ids=positions, use_cache=True, **{self.cache_arg: cache}).logits
        # logits[:, t] predicts labels[:, t + 1]: the prompt's last logit predicts the first answer token
        logits = torch.cat([out.logits[rows, -1:].float(), logits.float()], dim=1)
        labels = torch.cat([torch.full((len(items), 1), -100, device=self.device),
                            c_ids.masked_fill(c_mask == 0, -100)], dim=1)
        has_fact = torch.tensor([f is not None for _, f in conts], device=self.device)
        for key in dict.fromkeys(k for k, *_ in items):
            sel = [r for r, it in enumerate(items) if it[0] == key]
            idx = torch.tensor(sel, device=self.device)
            batch = {"labels": labels[idx], "index": torch.tensor([items[r][1] for r in sel], device=self.device),
                     "option": torch.tensor([items[r][2] for r in sel], device=self.device),
                     "fact_mask": fact_mask.to(self.device)[idx], "has_fact": has_fact[idx]}
            yield key, batch, logits[idx]

    def generate(self, name: str, rows: list[int]) -> tuple[list[str], list[str]]:
        """Greedy answers and the reference answers of a set's rows."""
        data = self.encode(name, rows)
        prompts = [data[i][0][: _prompt_len(data[i][1])] for i in range(len(data))]
        order = sorted(range(len(data)), key=lambda i: len(prompts[i]))  # less left padding
        preds = [""] * len(data)
        starts = range(0, len(data), self.batch_size)
        for start in tqdm(starts, desc=f"{name}/generate", disable=not self.progress, leave=False):
            idx = order[start : start + self.batch_size]
            with self.context:
                out = greedy_generate(self.model, [prompts[i] for i in idx], self.tokenizer.pad_token_id,
                                      self.tokenizer.eos_token_id, self.max_new_tokens)
            for i, text in zip(idx, self.tokenizer.batch_decode(out, skip_special_tokens=True)):
                preds[i] = text.strip()
        answer = self.dm.fields_for(self.records[name]).answer
        targets = [self.records[name].rows[r][answer] for r in rows]
        return preds, targets


def _prompt_len(labels: Tensor) -> int:
    scored = (labels != -100).nonzero()
    return int(scored[0]) if len(scored) else len(labels)


def _as_list(value, name: str, row: int, key: str) -> list[str]:
    if value is None:
        raise ValueError(f"{name}: row {row} has no field '{key}' (needed for the truth ratio / options)")
    return [value] if isinstance(value, str) else list(value)


def _has(records: Records, key: str) -> bool:
    return bool(records.rows) and all(r.get(key) is not None for r in records.rows)


class TOFUSuite(EvalSuite):
    """TOFU's metrics on QA sets.

    Per QA set: answer probability, ROUGE-L recall and F1 of greedy answers, truth ratio
    (where records have ``paraphrased_answer`` and ``perturbed_answer``), fact accuracy
    (where they mark a fact span), exact memorization and extraction strength. Over sets:
    forget quality (KS test of forget truth ratios against the gold retain model), model
    utility (harmonic mean of the retain and utility sets' probability, ROUGE-L recall and
    truth ratio, plus retain fact accuracy where spans exist), MIA AUC of forget vs
    holdout (LOSS, zlib, Min-K%, Min-K%++), and the privacy leak of each against the gold
    model. ``score`` is the harmonic mean of forget quality and model utility.

    Args:
        forget, retain, holdout: names of those sets in the datamodule.
        option_sets: multiple-choice sets (``answer`` plus wrong ``perturbed_answer`` options,
            TOFU's real authors and world facts): option-normalised probability.
        utility_sets: sets whose metrics enter model utility besides ``retain``.
        extra_sets: other QA sets to report (e.g. ``neighbor``).
        mia_k: fraction of tokens for Min-K% and Min-K%++.
        **kwargs: see :class:`EvalSuite`.
    """

    def __init__(self, forget: str = "forget", retain: str = "retain", holdout: str | None = "holdout",
                 option_sets: list[str] | None = None, utility_sets: list[str] | None = None,
                 extra_sets: list[str] | None = None, mia_k: float = 0.4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.forget, self.retain, self.holdout = forget, retain, holdout
        self.option_sets, self.extra_sets = list(option_sets or []), list(extra_sets or [])
        self.utility_sets = list(utility_sets if utility_sets is not None else self.option_sets)
        if not 0 < mia_k <= 1:
            raise ValueError(f"TOFUSuite: `mia_k` must be in (0, 1], got {mia_k!r}")
        self.mia_k = mia_k

    def config(self) -> dict[str, Any]:
        return {**super().config(), "mia_k": self.mia_k}

    def required_sets(self) -> list[str]:
        sets = [self.forget, self.retain] + ([self.holdout] if self.holdout else [])
        return list(dict.fromkeys(sets + self.option_sets + self.utility_sets + self.extra_sets))

    def evaluate(self, ev: _Evaluator) -> SuiteResult:
        metrics: dict[str, float] = {}
        stats: dict[str, Any] = {}
        mia = MembershipInference(ATTACKS).to(ev.device)
        for name in self.required_sets():
            recs = ev.records[name]
            rows = ev.rows(name)
            tf, prob, em, es = (m.to(ev.device) for m in (TeacherForcedMetrics(), AnswerProbability(),
                                                          ExactMemorization(), ExtractionStrength()))
            has_pert = _has(recs, "perturbed_answer")
            keys = ["answer"] + (["paraphrased_answer"] if has_pert and _has(recs, "paraphrased_answer") else [])
            keys += ["perturbed_answer"] if has_pert else []
            width = max((len(_as_list(recs.rows[i]["perturbed_answer"], name, i, "perturbed_answer")) for i in rows),
                        default=0) if has_pert else 0
            answer_nll = torch.zeros(len(rows), device=ev.device)
            para_nll = torch.zeros(len(rows), device=ev.device)
            wrong = torch.zeros(len(rows), max(width, 1), device=ev.device)
            wrong_mask = torch.zeros_like(wrong, dtype=torch.bool)
            answer_field = ev.dm.fields_for(recs).answer
            for key, batch, logits in ev.scored(name, rows, keys):
                per_token = nll(logits, batch["labels"])
                if key == "paraphrased_answer":
                    para_nll[batch["index"]] = per_token
                    continue
                if key == "perturbed_answer":
                    wrong[batch["index"], batch["option"]] = per_token
                    wrong_mask[batch["index"], batch["option"]] = True
                    continue
                answer_nll[batch["index"]] = per_token
                tf.update(logits, batch["labels"], batch.get("fact_mask"), batch.get("has_fact"))
                prob.update(per_token)
                em.update(logits, batch["labels"])
                es.update(logits, batch["labels"])
                if name in (self.forget, self.holdout):
                    texts = [recs.rows[rows[int(i)]][answer_field] for i in batch["index"]]
                    zl = torch.tensor([zlib_length(t) for t in texts], device=ev.device)
                    mia.update(mia_scores(logits, batch["labels"], zl, self.mia_k), member=name == self.forget)
            t = tf.compute()
            metrics[f"{name}/prob"] = float(prob.compute())
            if "fact_acc" in t:
                metrics[f"{name}/fact_acc"] = float(t["fact_acc"])
            metrics[f"{name}/exact_mem"] = float(em.compute())
            metrics[f"{name}/extraction_strength"] = float(es.compute())
            rouge = RougeL().to(ev.device)
            rouge.update(*ev.generate(name, rows))
            r = rouge.compute()
            metrics[f"{name}/rougeL_recall"], metrics[f"{name}/rougeL_f1"] = float(r["recall"]), float(r["f1"])
            if not has_pert:
                continue
            if name in self.option_sets:
                opt = OptionProbability().to(ev.device)
                opt.update(answer_nll, wrong, wrong_mask)
                metrics[f"{name}/prob"] = float(opt.compute())
            # truth ratio: the paraphrase against the wrong answers (the answer itself on option sets)
            if "paraphrased_answer" in keys or name in self.option_sets:
                tr = TruthRatio(forget=name == self.forget).to(ev.device)
                tr.update(para_nll if "paraphrased_answer" in keys else answer_nll, wrong, wrong_mask)
                metrics[f"{name}/truth_ratio"] = float(tr.compute())
                if name == self.forget:
                    with tr.sync_context():  # every rank's ratios, for the KS test
                        stats["forget_truth_ratios"] = tr.values().tolist()
        if self.holdout:
            aucs = {a: float(v) for a, v in mia.compute().items()}
            metrics.update({f"mia/{a}": v for a, v in aucs.items()})
            stats["mia_auc"] = aucs
        parts = []
        for name in [self.retain] + self.utility_sets:
            parts += [metrics.get(f"{name}/prob"), metrics.get(f"{name}/rougeL_recall"),
                      metrics.get(f"{name}/truth_ratio")]
        if f"{self.retain}/fact_acc" in metrics:
            parts.append(metrics[f"{self.retain}/fact_acc"])
        metrics["model_utility"] = harmonic_mean(p for p in parts if p is not None)
        return SuiteResult(metrics, stats)

    def compare(self, result: SuiteResult, reference: dict[str, Any]) -> dict[str, float]:
        out = super().compare(result, reference)
        mine, gold = result.stats.get("forget_truth_ratios"), reference.get("forget_truth_ratios")
        if mine and gold:
            out["forget_quality"] = forget_quality(torch.tensor(mine), torch.tensor(gold))
            out["score"] = harmonic_mean([out["forget_quality"], result.metrics["model_utility"]])
        return out


class MUSESuite(EvalSuite):
    """MUSE's metrics: verbatim memorization, knowledge memorization, privacy leak.

    - ``verbmem``: ROUGE-L F1 of greedy continuations of forget-text prompts (records with
      a prompt and its true continuation; map them with the set's ``fields`` and use
      ``prompt_template: "{question}"``).
    - ``knowmem_forget`` / ``knowmem_retain``: ROUGE-L F1 of greedy answers to QA pairs.
    - ``privleak``: Min-K%++ MIA AUC of ``privleak_forget`` vs ``privleak_holdout`` texts
      (also LOSS, zlib, Min-K%), relative to the gold retain model's.

    Args:
        verbmem, knowmem_forget, knowmem_retain, privleak_forget, privleak_holdout: set
            names in the datamodule (None skips that part).
        mia_k: fraction of tokens for Min-K% and Min-K%++.
        **kwargs: see :class:`EvalSuite`.
    """

    def __init__(self, verbmem: str | None = "verbmem_forget", knowmem_forget: str | None = "knowmem_forget",
                 knowmem_retain: str | None = "knowmem_retain", privleak_forget: str | None = "privleak_forget",
                 privleak_holdout: str | None = "privleak_holdout", mia_k: float = 0.4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verbmem, self.knowmem_forget, self.knowmem_retain = verbmem, knowmem_forget, knowmem_retain
        self.privleak_forget, self.privleak_holdout, self.mia_k = privleak_forget, privleak_holdout, mia_k
        if (privleak_forget is None) != (privleak_holdout is None):
            raise ValueError("MUSESuite: give both `privleak_forget` and `privleak_holdout`, or neither")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "mia_k": self.mia_k}

    def required_sets(self) -> list[str]:
        sets = [self.verbmem, self.knowmem_forget, self.knowmem_retain, self.privleak_forget, self.privleak_holdout]
        return [s for s in sets if s]

    def evaluate(self, ev: _Evaluator) -> SuiteResult:
        metrics: dict[str, float] = {}
        stats: dict[str, Any] = {}
        for name in (self.verbmem, self.knowmem_forget, self.knowmem_retain):
            if name:
                rouge = RougeL().to(ev.device)
                rouge.update(*ev.generate(name, ev.rows(name)))
                metrics[f"{name}/rougeL_f1"] = float(rouge.compute()["f1"])
        if self.privleak_forget:
            mia = MembershipInference(ATTACKS).to(ev.device)
            for name in (self.privleak_forget, self.privleak_holdout):
                recs, rows = ev.records[name], ev.rows(name)
                field_name = ev.dm.fields_for(recs).text
                for batch, logits in ev.forward(ev.encode(name, rows), name):
                    texts = [recs.rows[rows[int(i)]].get(field_name) or "" for i in batch["index"]]
                    zl = torch.tensor([max(zlib_length(t), 1) for t in texts], device=ev.device)
                    mia.update(mia_scores(logits, batch["labels"], zl, self.mia_k), member=name == self.privleak_forget)
            aucs = {a: float(v) for a, v in mia.compute().items()}
            metrics.update({f"mia/{a}": v for a, v in aucs.items()})
            stats["mia_auc"] = aucs
        return SuiteResult(metrics, stats)
