"""The batched scoring engine the suites run on.

``Evaluator`` shards each set's records across ranks, runs teacher-forced passes in
batches of similar length (left padding; the LM head only on the answer positions via
``logits_to_keep``), scores several answers of one question from a shared KV-cached prompt,
and generates greedy answers in left-padded batches, never past the model's context
(:func:`generation_budget`, :class:`GenerationLimit`), keeping the first rows of each set's
generations for inspection (``Evaluator.generations``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from lit_unlearn.datamodules.encoding import collate
from lit_unlearn.datamodules.sampling import _world
from lit_unlearn.datamodules.sources import Records
from lit_unlearn.evaluation.rouge import greedy_generate
from lit_unlearn.utils import progress

# config fields that give the positions a model takes, first found wins (GPT-2 maps
# `max_position_embeddings` to its `n_positions`; MPT-style configs have `max_sequence_length`)
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def model_context(model) -> int | None:
    """The positions ``model`` takes, prompt and generated tokens together: its config's
    ``max_position_embeddings``, ``n_positions`` or ``max_sequence_length`` (a multimodal
    model's text config); None when the config names none (no clamp)."""
    found = _context_field(model)
    return found[1] if found else None


def _context_field(model) -> tuple[str, int] | None:
    config = getattr(model, "config", None)
    if config is not None and callable(getattr(config, "get_text_config", None)):
        config = config.get_text_config()
    for key in CONTEXT_FIELDS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            return key, value
    return None


def generation_budget(model, prompt_len: int, requested: int) -> int:
    """New tokens a prompt of ``prompt_len`` tokens may get: ``requested``, clamped so that
    ``prompt_len + new <= model_context(model)`` (``requested`` when the context is unknown).
    0 when the prompt alone fills the context (:class:`GenerationLimit` left-truncates such
    prompts first)."""
    return _clamp(model_context(model), prompt_len, requested)


def _clamp(context: int | None, prompt_len: int, requested: int) -> int:
    return requested if context is None else max(0, min(requested, context - prompt_len))


class GenerationLimit:
    """Keeps greedy generation inside a model's context, and says so once.

    Every generation path of the library goes through one (``Evaluator.limit`` for a suite
    run; :func:`~lit_unlearn.evaluation.rwku_probes.generate_texts` makes its own otherwise):

    - :meth:`fit` left-truncates a prompt that alone leaves no room (``len >= context``) to
      its last ``context - 1`` tokens, so it still gets an answer: the end of a prompt (the
      question and its answer cue) is what generation continues; skipping the row instead
      would score it as an empty answer. Prompts shorter than the context are unchanged.
    - :meth:`budget` gives a left-padded batch the budget of its longest prompt
      (:func:`generation_budget`): no row, padding included, runs past the context. Batches
      hold prompts of similar length, so a row gets at most a few tokens fewer than its own
      ``context - prompt_len``; nothing changes when ``requested`` fits.
    - The first time a budget is clamped or a prompt truncated, a ``UserWarning`` names the
      requested budget, the model's context, the effective budget and the suite option to
      change; once per limit and option (one evaluation), not per batch.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.field, self.context = _context_field(model) or (None, None)
        self.warned: set[str] = set()

    def fit(self, prompts: Sequence[Tensor], requested: int, where: str = "generate",
            option: str = "max_new_tokens") -> list[Tensor]:
        """``prompts`` with those of ``context`` tokens or more left-truncated; warns (once per
        ``option``) when the budget of ``requested`` new tokens is clamped for any of them."""
        prompts = list(prompts)
        if self.context is None or not prompts:
            return prompts
        room = self.context - 1
        longest = max(len(p) for p in prompts)
        cut = sum(len(p) > room for p in prompts)
        prompts = [p[len(p) - room:] if len(p) > room else p for p in prompts]
        if (cut or longest + requested > self.context) and option not in self.warned:
            self.warned.add(option)
            low = self.context - max(len(p) for p in prompts)
            high = min(requested, self.context - min(len(p) for p in prompts))
            span = str(low) if low == high else f"{low}-{high}"
            name = getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__
            advice = f"Set the suite's `{option}` to at most {low} for the same budget on every row"
            if cut:
                advice = (f"{cut} prompt(s) of {self.context}+ tokens are left-truncated to their last {room} "
                          "tokens; shorten the prompts (the prompt template, instruction or data) or use a model "
                          "with a longer context")
            warnings.warn(
                f"{where}: `{option}`={requested} new tokens after prompts of up to {longest} tokens would run past "
                f"the model's context ({name}: {self.context} positions, its config's `{self.field}`); generation "
                f"is clamped to context - prompt length, an effective budget of {span} new tokens here. "
                f"{advice} (said once per evaluation).", UserWarning, stacklevel=2)
        return prompts

    def budget(self, prompts: Sequence[Tensor], requested: int) -> int:
        """The budget of one left-padded batch of ``prompts``: its longest prompt's."""
        return _clamp(self.context, max(len(p) for p in prompts), requested)


class Evaluator:
    """Batched passes over this rank's share of each set's records (what ``EvalSuite.evaluate`` gets).

    ``generations`` holds, per set generated on, the first ``keep_generations`` rows (of this
    rank's share) as ``{"prompt", "reference", "generated"}`` (:meth:`keep`); ``limit`` keeps
    every generation of the run inside the model's context (:class:`GenerationLimit`).
    """

    def __init__(self, model, tokenizer, datamodule, records: dict[str, Records], batch_size: int,
                 max_new_tokens: int, context, progress: bool, share_prompts: bool = True,
                 instruction: str | None = None, keep_generations: int = 20) -> None:
        self.model, self.tokenizer, self.dm, self.records = model, tokenizer, datamodule, records
        # an instruction put before every prompt by suites that support it (in-context unlearning)
        self.instruction = instruction
        self.batch_size, self.max_new_tokens, self.context = batch_size, max_new_tokens, context
        self.device = next(model.parameters()).device
        self.keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.share_prompts = share_prompts and self.keep_logits and hasattr(model, "generate")
        # transformers 5.x renamed `past_key_values` to `cache`
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.world, self.rank = _world()
        self.progress = progress and self.rank == 0
        self.limit = GenerationLimit(model)
        self.keep_generations = keep_generations
        self.generations: dict[str, list[dict]] = {}

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
        for start in progress(starts, desc, disable=not self.progress):
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
                        for k, opt in enumerate(as_list(src[i].get(key), name, i, key))]
                recs = Records([{**src[rows[j]], "answer": opt} for j, _, opt in flat], self.records[name].origin,
                               meta={**self.records[name].meta, "fields": {**self.records[name].meta.get("fields", {}),
                                                                           "answer": "answer"}})
                encoded[key] = ([(j, k) for j, k, _ in flat], self.dm.encode(recs, name))
            else:
                data = self.encode(name, rows, None if key == "answer" else key)
                encoded[key] = ([(j, 0) for j in range(len(rows))], data)
        per_record = max(1, self.batch_size // max(1, sum(len(v[0]) for v in encoded.values()) // max(1, len(rows))))
        starts = range(0, len(rows), per_record)
        for start in progress(starts, f"{name}/score", disable=not self.progress):
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
                where = [(j, k) for j, i in enumerate(rows)
                         for k, _ in enumerate(as_list(src[i].get(key), name, i, key))]
                recs = Records([{**src[rows[j]], "answer": as_list(src[rows[j]][key], name, rows[j], key)[k]}
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

    def generate(self, name: str, rows: list[int], max_new_tokens: int | None = None, stop: Sequence[str] = (),
                 target_tokens: int | None = None, option: str = "max_new_tokens") -> tuple[list[str], list[str]]:
        """Greedy answers and the reference answers of a set's rows.

        Generation stays inside the model's context (:class:`GenerationLimit`): each batch
        gets at most ``context - longest prompt`` new tokens, a prompt that alone fills the
        context is left-truncated to its last ``context - 1`` tokens, and the first clamp of
        the run warns once. The first ``keep_generations`` rows are kept in ``generations``.

        Args:
            max_new_tokens: generation budget (default the suite's).
            stop: each answer is cut before the first occurrence of each of these strings, in
                order (MUSE's knowmem cuts at ``"\\n\\n"``, ``"\\nQuestion"``, ``"Question:"``).
            target_tokens: cut each reference to its first ``target_tokens`` tokens (special
                tokens included, then decoded without them), as MUSE's verbmem does with the
                true continuation.
            option: the suite option that sets ``max_new_tokens`` (named by the warning).
        """
        budget = max_new_tokens or self.max_new_tokens
        data = self.encode(name, rows)
        prompts = [data[i][0][: _prompt_len(data[i][1])] for i in range(len(data))]
        prompts = self.limit.fit(prompts, budget, f"generating on '{name}'", option)
        order = sorted(range(len(data)), key=lambda i: len(prompts[i]))  # less left padding
        preds = [""] * len(data)
        starts = range(0, len(data), self.batch_size)
        for start in progress(starts, f"{name}/generate", disable=not self.progress):
            idx = order[start : start + self.batch_size]
            batch = [prompts[i] for i in idx]
            with self.context:
                out = greedy_generate(self.model, batch, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id,
                                      self.limit.budget(batch, budget))
            for i, text in zip(idx, self.tokenizer.batch_decode(out, skip_special_tokens=True)):
                for s in stop:
                    text = text.split(s)[0]
                preds[i] = text.strip()
        answer = self.dm.fields_for(self.records[name]).answer
        targets = [self.records[name].rows[r][answer] for r in rows]
        if target_tokens is not None and targets:
            ids = self.tokenizer(targets, add_special_tokens=True)["input_ids"]
            targets = self.tokenizer.batch_decode([t[:target_tokens] for t in ids], skip_special_tokens=True)
        n = max(0, self.keep_generations)
        self.keep(name, self.tokenizer.batch_decode([p.tolist() for p in prompts[:n]]), targets, preds)
        return preds, targets

    def keep(self, name: str, prompts: Sequence[str], references: Sequence[str | None], generated: Sequence[str],
             **extra: Sequence) -> None:
        """Keep the first ``keep_generations`` rows of set ``name``'s generations in
        ``generations[name]`` as ``{"prompt", "reference", "generated", **extra}`` (the prompt
        as the model got it, special tokens included); ``keep_generations=0`` keeps none."""
        n = self.keep_generations
        if n <= 0:
            return
        kept = [{"prompt": p, "reference": r, "generated": g}
                for p, r, g in zip(prompts[:n], references[:n], generated[:n])]
        for key, values in extra.items():
            for row, value in zip(kept, values):
                row[key] = value
        self.generations[name] = kept


def _prompt_len(labels: Tensor) -> int:
    scored = (labels != -100).nonzero()
    return int(scored[0]) if len(scored) else len(labels)


def as_list(value, name: str, row: int, key: str) -> list[str]:
    """A string or list field as a list of strings (error naming the row if missing)."""
    if value is None:
        raise ValueError(f"{name}: row {row} has no field '{key}' (needed for the truth ratio / options)")
    return [value] if isinstance(value, str) else list(value)


def has_field(records: Records, key: str) -> bool:
    """Whether every row of ``records`` has ``key`` (and there is a row)."""
    return bool(records.rows) and all(r.get(key) is not None for r in records.rows)
