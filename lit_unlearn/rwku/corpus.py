"""Corpora the start model writes about a person, as RWKU builds its forget corpus.

RWKU gives only the target's name and the model: the forget corpus is text the model itself
generates about the target. Here, with the model's chat template:

- descriptions: ``n`` sampled answers to "Write a short biography of {name}." (seeded);
- questions: the questions (sentences ending in "?" that name the person) found in sampled
  answers to "Write a quiz question about {name}.", each answered greedily by the model
  (its own answer), plus a counterfactual answer: the
  model's answer to the same question about another person, with the names swapped back
  (fluent, on topic, and false; DPO's preferred answer). Refusal answers are added by the
  method (``IdkNLL``, rejection tuning).
- name-swapped copies (:func:`name_swapped`): corpus rows with the person's name replaced by a
  made-up person's, for a retain corpus that keeps the same sentences about someone else.

Everything is cached under ``$LIT_UNLEARN_HOME/rwku/`` by model and settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lit_unlearn.evaluation.rwku_probes import chat_prompt, generate_texts
from lit_unlearn.utils import atomic_write_text, cache_home, file_lock, isolated_rng

DESCRIBE = "Write a short biography of {name}."
ASK = "Write a quiz question about {name}."
# Made-up people for name-swapped copies: no one the probes ask about
SWAP_NAMES = ("Daniel Whitfield", "Laura Brennan", "Marcus Ellery", "Helen Stroud", "Victor Alden", "Nora Castell",
              "Peter Lindqvist", "Clara Redmond")


@dataclass(frozen=True)
class CorpusSettings:
    """How a corpus is sampled (part of its cache key)."""

    descriptions: int = 16
    questions: int = 16
    max_new_tokens: int = 128
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0


def model_key(path: str) -> str:
    """Identity of a model for caches: its config and the size and edges of its weight files
    (a local directory), or the name (a hub id)."""
    root = Path(path)
    if not root.is_dir():
        return hashlib.sha256(str(path).encode()).hexdigest()[:16]
    h = hashlib.sha256()
    for f in sorted(root.iterdir()):
        if f.name == "config.json" or f.name == "adapter_config.json":
            h.update(f.read_bytes())
        elif f.suffix in (".safetensors", ".bin"):
            size = f.stat().st_size
            with open(f, "rb") as fh:
                head = fh.read(1 << 20)
                fh.seek(max(0, size - (1 << 20)))
                tail = fh.read()
            h.update(f"{f.name}:{size}".encode() + head + tail)
    return h.hexdigest()[:16]


def cached(kind: str, key: dict, build):
    """``build()`` once per ``key`` (JSON), stored under ``$LIT_UNLEARN_HOME/rwku/<kind>-<hash>.json``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_home() / "rwku" / f"{kind}-{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())["data"]
    with file_lock(str(path) + ".lock"):
        if path.is_file():
            return json.loads(path.read_text())["data"]
        data = build()
        atomic_write_text(path, json.dumps({"key": key, "data": data}, indent=1))
    return data


@torch.no_grad()
def sample(model, tokenizer, prompt: str, n: int, settings: CorpusSettings, seed: int,
           max_new_tokens: int | None = None) -> list[str]:
    """``n`` sampled completions of a chat prompt (one batch, seeded, global RNG untouched)."""
    enc = tokenizer([chat_prompt(tokenizer, prompt)] * n, return_tensors="pt", add_special_tokens=False)
    device = next(model.parameters()).device
    with isolated_rng():
        torch.manual_seed(seed)
        out = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                             do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                             max_new_tokens=max_new_tokens or settings.max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [t.strip() for t in texts]


def answer(model, tokenizer, questions: list[str], max_new_tokens: int = 48, batch_size: int = 16) -> list[str]:
    """Greedy chat answers to ``questions``, first paragraph only."""
    prompts = [chat_prompt(tokenizer, q) for q in questions]
    return [t.split("\n\n")[0].strip() for t in generate_texts(model, tokenizer, prompts, max_new_tokens, batch_size)]


def _seed(settings: CorpusSettings, name: str, salt: str) -> int:
    return settings.seed * 1_000_003 + int(hashlib.sha256(f"{salt}:{name}".encode()).hexdigest()[:8], 16)


def descriptions(model, tokenizer, name: str, settings: CorpusSettings) -> list[dict]:
    """``{"text", "subject"}`` records: the model's own descriptions of ``name`` (empty ones dropped)."""
    texts = sample(model, tokenizer, DESCRIBE.format(name=name), settings.descriptions, settings,
                   _seed(settings, name, "describe"))
    return [{"text": t, "subject": name} for t in texts if len(t.split()) >= 5]


def questions(model, tokenizer, name: str, substitute: str | None, settings: CorpusSettings) -> list[dict]:
    """``{"question", "answer", "counterfactual", "subject"}`` records about ``name``: model-written
    questions (distinct, ending in "?", naming the person), the model's answers, and its answers
    about ``substitute`` with the names swapped back (no ``counterfactual`` when it is None)."""
    drafts = sample(model, tokenizer, ASK.format(name=name), 3 * settings.questions, settings,
                    _seed(settings, name, "ask"), max_new_tokens=48)
    last = name.split()[-1]
    picked: list[str] = []
    for text in drafts:
        for found in re.findall(r"[^?\n\"]+\?", text):
            q = re.sub(r"^\s*(Q:|Question:|\d+\.)?\s*", "", found).strip()
            if last in q and len(q.split()) >= 4 and q[0].isupper() and q not in picked:
                picked.append(q)
    picked = picked[: settings.questions]
    if not picked:
        return []
    own = answer(model, tokenizer, picked)
    if substitute is None:
        return [{"question": q, "answer": a, "subject": name} for q, a in zip(picked, own) if a]
    swapped = [q.replace(name, substitute).replace(last, substitute.split()[-1]) for q in picked]
    other = answer(model, tokenizer, swapped)
    counter = [a.replace(substitute, name).replace(substitute.split()[-1], last) for a in other]
    return [{"question": q, "answer": a, "counterfactual": c, "subject": name}
            for q, a, c in zip(picked, own, counter) if a and c and a != c]


def name_mentions(text: str, name: str) -> list[tuple[int, int, int | None]]:
    """``(start, end, part)`` of each mention of ``name`` in ``text``, in order: the full name
    (``part`` None), and its last (-1) and first (0) words on their own (``Einstein's``)."""
    found = [(m.start(), m.end(), None) for m in re.finditer(re.escape(name), text)]
    parts = name.split()
    if len(parts) > 1:
        for part in (-1, 0):
            found += [(m.start(), m.end(), part) for m in re.finditer(rf"\b{re.escape(parts[part])}\b", text)
                      if not any(a <= m.start() < b for a, b, _ in found)]
    return sorted(found)


def swap_name(text: str, name: str, other: str) -> str:
    """``text`` with each :func:`name_mentions` of ``name`` replaced by ``other`` (or its last or
    first word)."""
    new, out, at = other.split(), [], 0
    for start, end, part in name_mentions(text, name):
        out += [text[at:start], other if part is None else new[part]]
        at = end
    return "".join(out) + text[at:]


def name_spans(text: str, name: str) -> list[list[int]]:
    """Character spans ``[start, end]`` of :func:`name_mentions` of ``name`` in ``text``."""
    return [[start, end] for start, end, _ in name_mentions(text, name)]


def name_swapped(rows: list[dict], copies: int) -> list[dict]:
    """``copies`` copies of each row whose ``subject`` is named in it, every string field with the
    subject's name swapped for a made-up person's (:data:`SWAP_NAMES`, in turn); the copies'
    ``subject`` is the made-up name, ``swapped_from`` the real one."""
    out = []
    for i, row in enumerate(rows):
        name = row["subject"]
        for c in range(copies):
            other = SWAP_NAMES[(i * copies + c) % len(SWAP_NAMES)]
            swapped = {k: swap_name(v, name, other) if isinstance(v, str) and k != "subject" else v
                       for k, v in row.items()}
            if swapped != row:
                out.append({**swapped, "subject": other, "swapped_from": name})
    return out


def settings_dict(settings: CorpusSettings) -> dict:
    return asdict(settings)
