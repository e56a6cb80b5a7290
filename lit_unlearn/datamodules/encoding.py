"""Tokenisation of QA and text records, prompt masking, and padding into ``TokenBatch`` dicts.

A ``TokenBatch`` is ``{"input_ids" [B, T], "attention_mask" [B, T], "labels" [B, T],
"index" [B]}`` with ``labels == -100`` on prompt and padding tokens, plus ``fact_mask``
``[B, T]`` (True on the tokens of the fact span) and ``has_fact`` ``[B]`` when the records
mark a fact span (QA: ``[start, end]`` in the answer; text: ``[start, end]`` or a list of
them, in the text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from lit_unlearn.datamodules.sources import Records
from lit_unlearn.objectives import IGNORE_INDEX

DEFAULT_PROMPT_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass
class Fields:
    """Names of the record fields (defaults follow the published TOFU files)."""

    question: str = "question"
    answer: str = "answer"
    text: str = "text"
    fact_span: str = "fact_span"
    entity: str = "entity"
    neighbor_of: str = "neighbor_of"


class EncodedSet(Dataset):
    """Tokenised examples of one set; ``self[i]`` is ``(input_ids, labels, fact_mask | None, i)``."""

    def __init__(self, name: str, records: Records, examples: list[tuple[torch.Tensor, torch.Tensor, Any]]) -> None:
        self.name, self.records, self.examples = name, records, examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        ids, labels, fact = self.examples[i]
        return ids, labels, fact, i


def encode(
    records: Records,
    tokenizer,
    *,
    role: str,
    fields: Fields | None = None,
    answer_key: str | None = None,
    fact_span_key: str | None = None,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    chat_template: bool = False,
    max_length: int = 256,
) -> EncodedSet:
    """Tokenise every record of ``records`` (QA if it has the question field, else text).

    Raises:
        ValueError: naming the row and field when a record lacks a configured field, or
            when ``max_length`` leaves no answer token.
    """
    if not len(records):
        return EncodedSet(role, records, [])
    fields = fields or Fields()
    answer_key = answer_key or fields.answer
    fact_span_key = fact_span_key or fields.fact_span
    is_qa = check_fields(records, role, fields, answer_key)
    if is_qa:
        examples = _encode_qa(records, tokenizer, role, fields, answer_key, fact_span_key, prompt_template,
                              chat_template, max_length)
    else:
        examples = _encode_text(records, tokenizer, fields, fact_span_key, max_length, role)
    return EncodedSet(role, records, examples)


def check_fields(records: Records, role: str, fields: Fields | None = None, answer_key: str | None = None) -> bool:
    """Check every row has the configured fields; return True for QA records, False for text."""
    fields = fields or Fields()
    answer_key = answer_key or fields.answer
    first = records.rows[0]
    is_qa = fields.question in first
    if not is_qa and fields.text not in first:
        raise ValueError(f"{role}: {records.where(0)} has neither the question field '{fields.question}' nor the text "
                         f"field '{fields.text}' (fields present: {sorted(first)}); set `fields` to match the data")
    needed = (fields.question, answer_key) if is_qa else (fields.text,)
    for i, row in enumerate(records.rows):
        for key in needed:
            if row.get(key) is None:
                raise ValueError(f"{role}: {records.where(i)} has no field '{key}' (fields present: {sorted(row)}); "
                                 "set `fields` to the names your data uses")
            if not isinstance(row[key], str):
                raise ValueError(f"{role}: field '{key}' of {records.where(i)} is a {type(row[key]).__name__}, "
                                 "expected a string")
    return is_qa


def _prompt(question: str, tokenizer, template: str, chat_template: bool) -> str:
    if chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    return template.format(question=question)


def _encode_qa(records, tokenizer, role, fields, answer_key, fact_span_key, template, chat_template, max_length):
    prompts = [_prompt(r[fields.question], tokenizer, template, chat_template) for r in records.rows]
    # A space separates "Answer:" from the answer unless the prompt already ends in whitespace.
    seps = ["" if (p[-1:].isspace() or chat_template) else " " for p in prompts]
    answers = [s + r[answer_key] for s, r in zip(seps, records.rows)]
    p_ids = tokenizer(prompts, add_special_tokens=not chat_template)["input_ids"]
    a_enc = tokenizer(answers, add_special_tokens=False, return_offsets_mapping=True)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    out = []
    for i, row in enumerate(records.rows):
        prompt, answer = p_ids[i], a_enc["input_ids"][i] + eos
        ids = (prompt + answer)[:max_length]
        n_answer = len(ids) - len(prompt)
        if n_answer <= 0:
            raise ValueError(f"{role}: max_length={max_length} leaves no answer token for {records.where(i)} "
                             f"(its prompt alone has {len(prompt)} tokens); raise max_length")
        labels = [IGNORE_INDEX] * len(prompt) + ids[len(prompt):]
        fact = None
        span = row.get(fact_span_key)
        if span is not None:
            start, end = int(span[0]) + len(seps[i]), int(span[1]) + len(seps[i])
            fact = torch.zeros(len(ids), dtype=torch.bool)
            offsets = a_enc["offset_mapping"][i][:n_answer]  # the answer's tokens; the EOS has none
            fact[len(prompt):len(prompt) + len(offsets)] = _span_mask(offsets, [(start, end)])
            if not fact.any():  # the fact span was cut by max_length or is empty
                fact = None
        out.append((torch.tensor(ids), torch.tensor(labels), fact))
    return out


def _span_mask(offsets, spans) -> torch.Tensor:
    """True on the tokens whose character ``offsets`` overlap one of ``spans``."""
    return torch.tensor([any(s < end and e > start for start, end in spans) for s, e in offsets], dtype=torch.bool)


def _text_spans(value: Any, role: str, where: str, key: str) -> list[tuple[int, int]]:
    """A text record's fact spans: ``[start, end]`` or a list of them (character offsets)."""
    pair = isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value)
    spans = [value] if pair else value
    ok = isinstance(spans, (list, tuple)) and all(
        isinstance(sp, (list, tuple)) and len(sp) == 2 and all(isinstance(v, int) for v in sp) and 0 <= sp[0] <= sp[1]
        for sp in spans)
    if not ok:
        raise ValueError(f"{role}: field '{key}' of {where} must be [start, end] or a list of them (character "
                         f"offsets into the text), got {value!r}")
    return [(int(a), int(b)) for a, b in spans]


def _encode_text(records, tokenizer, fields, fact_span_key, max_length, role):
    texts = [r[fields.text] for r in records.rows]
    marked = any(r.get(fact_span_key) for r in records.rows)
    enc = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length,
                    return_offsets_mapping=marked)
    eos = tokenizer.eos_token_id
    out = []
    for i, ids in enumerate(enc["input_ids"]):
        fact = None
        if marked and records.rows[i].get(fact_span_key):
            spans = _text_spans(records.rows[i][fact_span_key], role, records.where(i), fact_span_key)
            fact = _span_mask(enc["offset_mapping"][i], spans)
        if eos is not None and len(ids) < max_length:
            ids = ids + [eos]
            fact = None if fact is None else torch.cat([fact, fact.new_zeros(1)])
        labels = list(ids)
        labels[0] = IGNORE_INDEX  # never predicted
        out.append((torch.tensor(ids), torch.tensor(labels), fact if fact is not None and fact.any() else None))
    return out


def collate(items: list[tuple], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad ``(input_ids, labels, fact_mask, index)`` items into a ``TokenBatch``."""
    n, width = len(items), max(len(it[0]) for it in items)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    with_fact = any(it[2] is not None for it in items)
    fact_mask = torch.zeros((n, width), dtype=torch.bool) if with_fact else None
    for k, (ids, lab, fact, _) in enumerate(items):
        sl = slice(0, len(ids)) if padding_side == "right" else slice(width - len(ids), width)
        input_ids[k, sl], labels[k, sl], attention[k, sl] = ids, lab, 1
        if fact is not None:
            fact_mask[k, sl] = fact
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels,
             "index": torch.tensor([it[3] for it in items], dtype=torch.long)}
    if with_fact:
        batch["fact_mask"] = fact_mask
        batch["has_fact"] = torch.tensor([it[2] is not None for it in items])
    return batch
