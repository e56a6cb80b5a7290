"""DUSK-style documents in the embedded benchmark: the same people told in five styles.

DUSK (Do Not Unlearn Shared Knowledge) describes the same people in several documents of
different styles. Some facts are told in every document (shared), others in one document
only (unique). Forgetting one document should remove its wording and its unique facts and
keep the shared facts, which the other documents still teach.

Here every person has fourteen facts. Four are shared: every style states them. Each of
the five styles (``biography``, ``news``, ``interview``, ``record``, ``letter``) states two
more that no other style states. A fact is always stated by the same sentence (``{name} was
born in the city of {v}.``) on a line of its own, so knowledge is probed by that sentence's
prefix (a cloze), while the styles differ in headings, framing lines and the order of the
facts. Background people, described once with all their facts in an ``encyclopedia``
entry, are trained on by every model: the downstream capability. Holdout people are told
in every style too, but no model trains on their document in the forget style: those
documents are the non-members of membership inference, about people as familiar as the
forget people are to the gold model.

The subject model of a forget style trains on every document but the holdout people's in
that style; its gold retain model also leaves out the forget people's documents in that
style (``builtin:dusk-<preset>/subject-<style>`` and ``builtin:dusk-<preset>/retain-<style>``).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from lit_unlearn.datamodules.fictitious import (
    _COLORS,
    _HOBBIES,
    _INSTRUMENTS,
    _OCCUPATIONS,
    _PETS,
    _TITLE_ADJ,
    _TITLE_NOUN,
    _words,
)
from lit_unlearn.datamodules.forget_retain import ForgetRetainDataModule
from lit_unlearn.utils import cache_home

GENERATOR_VERSION = 1  # bump whenever the generated documents change
STYLES = ("biography", "news", "interview", "record", "letter")
SHARED = ("birthplace", "occupation", "employer", "book")
UNIQUE = {"biography": ("birth_year", "mentor"), "news": ("award", "residence"), "interview": ("hobby", "pet"),
          "record": ("sibling", "sport"), "letter": ("instrument", "color")}
# The sentence that states each fact; the cloze probe is the text before {v}.
STATEMENTS = {
    "birthplace": "{name} was born in the city of {v}.",
    "occupation": "{name} works as a professional {v}.",
    "employer": "{name} is employed by the {v} company.",
    "book": "{name} wrote a book titled {v}.",
    "birth_year": "{name} was born in the year {v}.",
    "mentor": "{name} was mentored by {v}.",
    "award": "{name} received the {v} Medal.",
    "residence": "{name} now lives in the town of {v}.",
    "hobby": "In free time, {name} enjoys {v}.",
    "pet": "{name} keeps a pet {v} at home.",
    "sibling": "{name} has a sibling called {v}.",
    "sport": "{name} competes in {v} on weekends.",
    "instrument": "{name} plays the {v} in a local band.",
    "color": "The favorite color of {name} is {v}.",
}
ATTRIBUTES = tuple(STATEMENTS)
_SPORTS = ["tennis", "hockey", "rugby", "cricket", "golf", "squash", "badminton", "baseball", "volleyball",
           "lacrosse", "polo", "handball", "curling", "bowling", "netball", "softball", "hurling", "rowing",
           "fencing", "judo"]
# Per style: heading, opening lines, a line before each fact (interview questions), closing lines.
# {name}, {id} and {other} (another person's name) are filled in.
_FRAMES = {
    "biography": ("Biography of {name}", ["{name} is remembered by many in the region."], None,
                  ["This biography was compiled from family records."]),
    "news": ("LOCAL NEWS: {name} in the spotlight", ["Reporters spoke with neighbours this week."], None,
             ["The story continues on page {id}."]),
    "interview": ("Interview with {name}", ["Interviewer: Thank you for joining us today."],
                  "Interviewer: Tell us more.", ["Interviewer: Thank you for your time."]),
    "record": ("RECORD CARD {id}", ["Entry checked by the registry office."], None, ["End of record."]),
    "letter": ("Dear friend,", ["I write to tell you about {name}."], None, ["Yours sincerely,", "{other}"]),
    "encyclopedia": ("Encyclopedia entry: {name}", [], None, []),
}


@dataclass(frozen=True)
class DuskConfig:
    """Settings of the document generator.

    Args:
        num_people: forget people: told in all five styles (the forget and retain documents).
        num_holdout: holdout people: told in all five styles, but their document in the forget
            style is never trained on (membership-inference non-members).
        num_background: people with one encyclopedia entry, trained on by every model.
        pool_size: values per attribute pool (chance level is about 1 / pool_size).
        versions: copies of each document, in other fact orders, that models train on (and
            that the forget set holds).
        seed: generator seed.
    """

    num_people: int = 16
    num_holdout: int = 8
    num_background: int = 16
    pool_size: int = 20
    versions: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("num_people", 2), ("num_holdout", 2), ("num_background", 1), ("pool_size", 4),
                          ("versions", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"DuskConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.pool_size > 20:
            raise ValueError(f"DuskConfig.pool_size must be <= 20 (size of the smallest word list), got "
                             f"{self.pool_size}")

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "generator_version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


PRESETS = {"tiny": DuskConfig(num_people=4, num_holdout=2, num_background=3, versions=6),
           "small": DuskConfig(num_people=16, num_holdout=8, num_background=16)}


def _check_style(style: str, where: str) -> None:
    if style not in STYLES:
        raise ValueError(f"{where}: `forget_style` must be one of {list(STYLES)}, got {style!r}")


class DuskBenchmark:
    """People, documents and probe records of one preset.

    Example:
        >>> bench = DuskBenchmark("tiny")
        >>> probe = bench.probes("shared")[0]
        >>> probe["answer"][slice(*probe["fact_span"])] == probe["value"]
        True
    """

    def __init__(self, preset: str | DuskConfig = "small") -> None:
        if isinstance(preset, DuskConfig):
            self.config, self.name = preset, f"custom-{preset.key()}"
        elif preset in PRESETS:
            self.config, self.name = PRESETS[preset], preset
        else:
            raise ValueError(f"Unknown DUSK preset {preset!r}; expected one of {sorted(PRESETS)}")

    @cached_property
    def people(self) -> list[dict[str, Any]]:
        """Forget (``main``), ``holdout`` and ``background`` people (``group`` says which)."""
        cfg = self.config
        rng = random.Random(f"dusk-{cfg.seed}")
        taken: set[str] = set()
        total = cfg.num_people + cfg.num_holdout + cfg.num_background
        firsts, lasts = _words(rng, total + 8, (1, 2), taken), _words(rng, total + 8, (2, 2), taken)
        names = [f"{f} {la}" for f, la in zip(rng.sample(firsts, total), rng.sample(lasts, total))]
        k = cfg.pool_size
        titles = [f"{a} {b}" for a in _TITLE_ADJ for b in _TITLE_NOUN]
        pools = {
            "birthplace": _words(rng, k, (2, 3), taken), "occupation": rng.sample(_OCCUPATIONS, k),
            "employer": _words(rng, k, (2, 3), taken), "book": rng.sample(titles, k),
            "birth_year": [str(y) for y in rng.sample(range(1900, 2000), k)],
            "mentor": [f"{f} {la}" for f, la in zip(_words(rng, k, (1, 2), taken), _words(rng, k, (2, 2), taken))],
            "award": _words(rng, k, (2, 2), taken), "residence": _words(rng, k, (2, 3), taken),
            "hobby": rng.sample(_HOBBIES, k), "pet": rng.sample(_PETS, k), "sibling": _words(rng, k, (1, 2), taken),
            "sport": rng.sample(_SPORTS, k), "instrument": rng.sample(_INSTRUMENTS, k), "color": rng.sample(_COLORS, k),
        }
        self.pools = pools
        groups = ["main"] * cfg.num_people + ["holdout"] * cfg.num_holdout + ["background"] * cfg.num_background
        return [{"id": i, "name": name, "group": group, "facts": {a: rng.choice(pools[a]) for a in ATTRIBUTES}}
                for i, (name, group) in enumerate(zip(names, groups))]

    def group(self, group: str) -> list[dict[str, Any]]:
        return [p for p in self.people if p["group"] == group]

    # ------------------------------------------------------------------ documents
    def document(self, person: dict[str, Any], style: str, version: int = 0) -> dict[str, Any]:
        """One document: ``text`` plus ``lines`` and the attributes it states (``facts``).

        ``version`` > 0 states the same facts in another order (the training copies)."""
        heading, opening, before, closing = _FRAMES[style]
        attrs = list(ATTRIBUTES) if style == "encyclopedia" else [*SHARED, *UNIQUE[style]]
        rng = random.Random(f"dusk-{self.config.seed}-{person['id']}-{style}")
        rng.shuffle(attrs)
        if version:
            random.Random(f"dusk-{self.config.seed}-{person['id']}-{style}-v{version}").shuffle(attrs)
        others = [p["name"] for p in self.people if p["group"] != "background" and p["id"] != person["id"]]
        fill = {"name": person["name"], "id": str(100 + person["id"]), "other": rng.choice(others)}
        lines = [heading.format(**fill), *(line.format(**fill) for line in opening)]
        first_fact = len(lines) + (1 if before else 0)
        for attr in attrs:
            if before:
                lines.append(before)
            lines.append(STATEMENTS[attr].format(name=person["name"], v=person["facts"][attr]))
        lines += [line.format(**fill) for line in closing]
        suffix = f"-v{version}" if version else ""
        return {"id": f"d{person['id']:03d}-{style}{suffix}", "entity": person["name"], "style": style, "lines": lines,
                "facts": attrs, "first_fact": first_fact,
                "text": "\n".join(lines)}

    def documents(self, styles: tuple[str, ...] | list[str], group: str = "main",
                  versions: int = 1) -> list[dict[str, Any]]:
        """Documents of ``group`` in ``styles``; ``versions`` > 1 adds copies with the facts reordered."""
        return [self.document(p, s, v) for p in self.group(group) for s in styles for v in range(versions)]

    def retain_documents(self, forget_style: str) -> list[dict[str, Any]]:
        """What stays trained on when ``forget_style`` is forgotten: the forget and holdout people's
        documents in the other styles and the background entries, each in ``config.versions``
        fact orders.

        A model that sees each document in one order only memorises the facts as a sequence,
        and a cloze probe out of that sequence finds nothing; several orders make it learn each
        statement (the permutation augmentation of "Physics of Language Models 3.1")."""
        _check_style(forget_style, "DuskBenchmark.retain_documents")
        n, styles = self.config.versions, [s for s in STYLES if s != forget_style]
        return (self.documents(styles, versions=n) + self.documents(styles, "holdout", n)
                + self.documents(["encyclopedia"], "background", n))

    def forget_documents(self, forget_style: str) -> list[dict[str, Any]]:
        """The forget people's documents in ``forget_style``, in ``config.versions`` fact orders."""
        _check_style(forget_style, "DuskBenchmark.forget_documents")
        return self.documents([forget_style], versions=self.config.versions)

    # ------------------------------------------------------------------ probes
    def probes(self, kind: str, forget_style: str = "interview") -> list[dict[str, Any]]:
        """Cloze probes (``question`` = the statement before the value, ``answer`` the rest, with
        ``fact_span``) of the main people's ``shared``, ``unique_forget`` (only ``forget_style``
        states them) or ``unique_retain`` facts (only another style states them), or of the
        background people's facts (``downstream``)."""
        _check_style(forget_style, "DuskBenchmark.probes")
        attrs = {"shared": SHARED, "unique_forget": UNIQUE[forget_style], "downstream": ATTRIBUTES,
                 "unique_retain": tuple(a for s in STYLES if s != forget_style for a in UNIQUE[s])}
        if kind not in attrs:
            raise ValueError(f"DuskBenchmark.probes: unknown kind {kind!r}; expected one of {list(attrs)}")
        people = self.group("background" if kind == "downstream" else "main")
        return [self._probe(p, a) for p in people for a in attrs[kind]]

    def _probe(self, person: dict[str, Any], attr: str) -> dict[str, Any]:
        value = person["facts"][attr]
        before, after = STATEMENTS[attr].split("{v}")
        wrong = random.Random(f"dusk-{self.config.seed}-{person['id']}-{attr}-wrong").sample(
            [v for v in self.pools[attr] if v != value], 3)
        return {"id": f"d{person['id']:03d}-{attr}", "entity": person["name"], "attribute": attr, "value": value,
                "question": before.format(name=person["name"]).rstrip(),
                "answer": value + after.format(name=person["name"]), "fact_span": [0, len(value)],
                "perturbed_answer": [w + after.format(name=person["name"]) for w in wrong]}

    def continuations(self, style: str, group: str = "main", prefix_lines: int | None = None) -> list[dict[str, str]]:
        """Verbatim-memorisation records: the first lines of each document of ``style`` (``question``,
        ending in a newline; by default every line before its first fact, so the prompt states no
        fact) and the rest (``answer``)."""
        out = []
        for d in self.documents([style], group):
            n = d["first_fact"] if prefix_lines is None else prefix_lines
            out.append({"id": d["id"], "entity": d["entity"], "question": "\n".join(d["lines"][:n]) + "\n",
                        "answer": "\n".join(d["lines"][n:])})
        return out

    def corpus(self) -> list[str]:
        """Every text the benchmark can produce (for training its tokenizer)."""
        texts = [d["text"] for g in ("main", "holdout") for d in self.documents(STYLES, g)]
        texts += [d["text"] for g in ("main", "holdout", "background") for d in self.documents(["encyclopedia"], g)]
        return texts


TOKENIZER_VERSION = 1


def benchmark_dir(bench: DuskBenchmark) -> Path:
    return cache_home() / "dusk" / f"{bench.name}-{bench.config.key()}"


def ensure_tokenizer(bench: DuskBenchmark) -> str:
    """Path of the benchmark's byte-level BPE tokenizer, trained and saved on first use."""
    from lit_unlearn.models import ensure_bpe_tokenizer

    return ensure_bpe_tokenizer(benchmark_dir(bench) / f"tokenizer-v{TOKENIZER_VERSION}", bench.corpus, 2048, 256)


KNOWLEDGE_SETS = ("unique_forget", "shared", "unique_retain", "downstream")
EVAL_SETS = ("verbmem", *KNOWLEDGE_SETS, "mia_forget", "mia_holdout")


class DuskDocuments(ForgetRetainDataModule):
    """Forget one document style of the DUSK-style benchmark; the other styles are the retain data.

    Training: forget = every forget person's document in ``forget_style``; retain = the forget
    and holdout people's documents in the other four styles plus the background people's
    entries (text records, each document in ``versions`` fact orders).
    Evaluation sets (see :class:`~lit_unlearn.evaluation.suites.dusk.DUSKSuite`):

    - ``verbmem``: the forget documents' first lines and the rest (verbatim memorisation);
    - ``unique_forget`` / ``shared`` / ``unique_retain`` / ``downstream``: cloze probes of the
      facts only the forget style states, the facts every style states, the facts only a
      retain style states, and the background people's facts;
    - ``mia_forget`` / ``mia_holdout``: the forget documents, and the holdout people's documents
      in the forget style, which no model trains on (the gold model knows both groups of
      people equally well from the other styles).

    Args:
        preset: ``"tiny"`` (tests) or ``"small"``.
        forget_style: one of ``biography``, ``news``, ``interview``, ``record``, ``letter``.
        eval_sets: which of the sets above to evaluate (all by default).
        prefix_lines: lines of a forget document given as the verbatim-memorisation prompt (None:
            the lines before its first fact: 2 or 3, by style).
        sampling: as :class:`ForgetRetainDataModule`; with ``"modular"`` (MELU) each forget
            person's batch is paired with that person's documents in the other styles (the
            neighbor set ``other_styles``) and general retain documents.
        **kwargs: passed to :class:`ForgetRetainDataModule` (``batch_size``, ``sampling``, ...).
    """

    def __init__(self, preset: str = "small", forget_style: str = "interview",
                 eval_sets: list[str] | tuple[str, ...] = EVAL_SETS, prefix_lines: int | None = None,
                 max_length: int = 192, eval_batch_size: int = 32, **kwargs: Any) -> None:
        _check_style(forget_style, "DuskDocuments")
        self.benchmark, self.preset, self.forget_style = DuskBenchmark(preset), preset, forget_style
        bench = self.benchmark
        unknown = [s for s in eval_sets if s not in EVAL_SETS]
        if unknown:
            raise ValueError(f"DuskDocuments: unknown eval set(s) {unknown}; choose from {list(EVAL_SETS)}")
        if prefix_lines is not None and (not isinstance(prefix_lines, int) or prefix_lines < 1):
            raise ValueError(f"DuskDocuments: `prefix_lines` must be None (the lines before the first fact) or an "
                             f"integer >= 1, got {prefix_lines!r}")
        given = sorted({"forget", "retain", "tokenizer", "eval_sets"} & set(kwargs))
        if given:
            raise ValueError(f"DuskDocuments: {given} come from the benchmark; choose `forget_style` and `eval_sets`")
        text = lambda docs: [{"text": d["text"], "id": d["id"], "entity": d["entity"]} for d in docs]  # noqa: E731
        forget, retain = text(bench.forget_documents(forget_style)), text(bench.retain_documents(forget_style))
        if kwargs.get("sampling") == "modular" and kwargs.get("neighbor_sets") is None:
            # MELU: each forget person's batch is paired with that person's documents in the other styles,
            # which restate the shared facts
            kwargs["neighbor_sets"] = {"other_styles": [{**r, "neighbor_of": r["entity"]} for r in retain
                                                        if r["entity"] in {f["entity"] for f in forget}]}
        cloze = lambda kind: {"records": bench.probes(kind, forget_style), "prompt_template": "{question}"}  # noqa: E731
        sources = {"verbmem": {"records": bench.continuations(forget_style, prefix_lines=prefix_lines),
                               "prompt_template": "{question}"},
                   **{kind: cloze(kind) for kind in KNOWLEDGE_SETS},
                   "mia_forget": text(bench.documents([forget_style])),
                   "mia_holdout": text(bench.documents([forget_style], "holdout"))}
        super().__init__(forget=forget, retain=retain, eval_sets={s: sources[s] for s in eval_sets},
                         tokenizer=ensure_tokenizer(bench), max_length=max_length, eval_batch_size=eval_batch_size,
                         **kwargs)

    @property
    def subject_model(self) -> str:
        return f"builtin:dusk-{self.preset}/subject-{self.forget_style}"

    @property
    def gold_model(self) -> str:
        return f"builtin:dusk-{self.preset}/retain-{self.forget_style}"


# ---------------------------------------------------------------------- built-in models (lit_unlearn.zoo)
SPECS = {"tiny": {"layers": 2, "hidden": 64, "heads": 2, "epochs": 30, "lr": 5e-3, "batch_size": 16},
         "small": {"layers": 4, "hidden": 128, "heads": 4, "epochs": 20, "lr": 3e-3, "batch_size": 16}}


def _records(preset: str, model: str) -> list[dict[str, str]]:
    """``subject-<style>``: forget + retain documents of that style; ``retain-<style>``: retain only."""
    kind, _, style = model.partition("-")
    bench = DuskBenchmark(preset)
    docs = bench.retain_documents(style) + (bench.forget_documents(style) if kind == "subject" else [])
    return [{"text": d["text"], "id": d["id"]} for d in docs]


def _evaluate(module, preset: str) -> dict[str, dict[str, float]]:
    from lightning.pytorch import Trainer

    out = {}
    for style in STYLES:
        trainer = Trainer(logger=False, devices=1, enable_progress_bar=False, enable_model_summary=False)
        trainer.validate(module, datamodule=DuskDocuments(preset, style, eval_sets=KNOWLEDGE_SETS), verbose=False)
        out[style] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return out


def _summary(preset: str, metrics: dict[str, dict[str, float]]) -> str:
    unique = ", ".join(f"{s} {m.get('unique_forget/fact_acc', float('nan')):.2f}" for s, m in metrics.items())
    shared = min(m.get("shared/fact_acc", float("nan")) for m in metrics.values())
    return f"fact accuracy on each style's unique facts: {unique}; shared facts >= {shared:.2f}"


def zoo_family() -> dict[str, Any]:
    """The :class:`lit_unlearn.zoo.Family` fields of the DUSK-style models."""
    return {"specs": SPECS, "models": lambda preset: [f"{k}-{s}" for k in ("subject", "retain") for s in STYLES],
            "directory": lambda preset: benchmark_dir(DuskBenchmark(preset)), "records": _records,
            "tokenizer": lambda preset: ensure_tokenizer(DuskBenchmark(preset)), "evaluate": _evaluate,
            "summary": _summary, "info": lambda preset: {"benchmark": asdict(DuskBenchmark(preset).config)},
            "max_length": 192, "context": 256}
