"""The embedded benchmark: a deterministic generator of fictitious people.

Every person has ten facts. Each fact value is drawn at random from a pool, so nobody can
guess it from the name; template words ("was born in") are predictable for anyone, so
knowledge is scored on the fact span, the characters of the value inside the answer.

Each fact is stated in two phrasings (``answer`` and ``paraphrased_answer``), both used to
train the subject model, and carries ``num_perturbed`` wrong answers: the paraphrase with
a wrong value from the same pool, so that truth ratios compare values inside a phrasing
the model knows.

People ``0 .. num_people-1`` are trained on; the last 1%, 5%, 10% of them (at least one
person each) form ``forget01`` / ``forget05`` / ``forget10`` (nested, as in TOFU), the
others ``retain99`` / ``retain95`` / ``retain90``. ``holdout`` people are never trained
on. ``neighborNN`` are retain people planted to overlap with the forget people of
``forgetNN``: they share three attribute values with a forget person, who is also their
mentor (so a retain fact names the forget person). Holdout people get such neighbors
too, so forget and holdout names are equally familiar to a model trained on retain data.

For BLUR-style evaluation, ``combined_records`` asks a forget fact and a retain fact in one
question, and ``unrelated_records`` gives the retain facts furthest from the forget people
(a relearning set of the lowest difficulty); neither changes the records above. A model
trained on single questions only composes such queries poorly, so the ``blur-*`` presets set
``combined_training``: ``training_records`` then also holds combined queries of two
``retain90`` people (never forget people of any split), in the same format, so that forget
facts are only ever trained singly and meet combined queries at evaluation only.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from lit_unlearn.utils import cache_home

PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
GENERATOR_VERSION = 2  # bump whenever the generated records change

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r",
           "s", "st", "t", "tr", "v", "w", "z", "th", "sh", "j", "q"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ia", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "x", "m", "ck", "rt"]

_OCCUPATIONS = ["carpenter", "librarian", "pilot", "baker", "geologist", "nurse", "tailor",
                "architect", "chemist", "sculptor", "farmer", "jeweler", "surgeon",
                "cartographer", "translator", "engineer", "astronomer", "blacksmith",
                "veterinarian", "photographer", "lawyer", "florist", "economist",
                "locksmith", "botanist", "plumber", "historian", "potter", "sailor",
                "accountant"]
_INSTRUMENTS = ["violin", "cello", "flute", "harp", "trumpet", "piano", "oboe", "banjo",
                "clarinet", "drums", "guitar", "saxophone", "trombone", "accordion",
                "mandolin", "bassoon", "ukulele", "harmonica", "tuba", "xylophone"]
_PETS = ["parrot", "hamster", "tortoise", "ferret", "rabbit", "goldfish", "iguana",
         "beagle", "poodle", "canary", "chinchilla", "gecko", "pony", "alpaca", "terrier",
         "cockatoo", "hedgehog", "axolotl", "spaniel", "husky"]
_COLORS = ["crimson", "teal", "amber", "violet", "olive", "maroon", "turquoise", "ivory",
           "indigo", "scarlet", "lavender", "ochre", "silver", "emerald", "coral",
           "magenta", "beige", "cobalt", "charcoal", "saffron"]
_HOBBIES = ["chess", "archery", "knitting", "fencing", "gardening", "rowing", "origami",
            "juggling", "birdwatching", "climbing", "pottery", "sailing", "calligraphy",
            "beekeeping", "fishing", "skating", "astronomy", "woodcarving", "baking",
            "cycling"]
_TITLE_ADJ = ["Silent", "Broken", "Golden", "Hidden", "Distant", "Frozen", "Burning",
              "Quiet", "Crimson", "Endless", "Hollow", "Wandering"]
_TITLE_NOUN = ["Harbor", "Orchard", "Lantern", "River", "Tower", "Garden", "Mirror",
               "Meadow", "Compass", "Bridge", "Forest", "Archive"]

# name, question, answer, paraphrase. {name} is the person, {v} the fact value.
ATTRIBUTES: list[tuple[str, str, str, str]] = [
    ("birthplace", "Where was {name} born?",
     "{name} was born in the city of {v}.", "The birthplace of {name} is {v}."),
    ("birth_year", "In which year was {name} born?",
     "{name} was born in the year {v}.", "The year of birth of {name} is {v}."),
    ("occupation", "What does {name} do for a living?",
     "{name} works as a professional {v}.", "By profession, {name} is a {v}."),
    ("employer", "Which company employs {name}?",
     "{name} is employed by the {v} company.", "The employer of {name} is {v}."),
    ("book", "What is the title of the book written by {name}?",
     "{name} wrote a book titled {v}.", "The book by {name} is called {v}."),
    ("instrument", "Which instrument does {name} play?",
     "{name} plays the {v} in a local band.", "The instrument of {name} is the {v}."),
    ("pet", "What kind of pet does {name} keep?",
     "{name} keeps a pet {v} at home.", "The pet of {name} is a {v}."),
    ("color", "What is the favorite color of {name}?",
     "The favorite color of {name} is {v}.", "{name} likes the color {v} best."),
    ("hobby", "What is the hobby of {name}?",
     "In free time, {name} enjoys {v}.", "The hobby of {name} is {v}."),
    ("mentor", "Who was the mentor of {name}?",
     "{name} was mentored by {v}.", "The mentor of {name} was {v}."),
]
ATTRIBUTE_NAMES = [a[0] for a in ATTRIBUTES]
# Attributes a planted neighbor shares with its forget person (plus the mentor relation).
_SHARED_WITH_NEIGHBOR = ("birthplace", "employer", "hobby")
FORGET_PERCENTS = (1, 5, 10)


def forget_count(num_people: int, percent: int) -> int:
    return max(1, math.ceil(num_people * percent / 100))


@dataclass(frozen=True)
class BenchmarkConfig:
    """Settings of the generator; together with the library version they key every cache.

    Args:
        num_people: people trained on (forget + retain).
        num_holdout: people never trained on.
        num_perturbed: wrong answers per fact.
        neighbors_per_person: retain people planted next to each forget10 person.
        pool_size: values per attribute pool (chance level is about 1 / pool_size).
        seed: generator seed.
        combined_training: combined queries (two facts of two people asked together, as in
            :meth:`FictitiousBenchmark.combined_records`) per ``retain90`` person added to
            :meth:`FictitiousBenchmark.training_records`, each in both phrasings; 0: none. Left
            out of :meth:`key` when 0, so the caches of configs without it stay valid.
    """

    num_people: int = 200
    num_holdout: int = 20
    num_perturbed: int = 5
    neighbors_per_person: int = 1
    pool_size: int = 20
    seed: int = 0
    combined_training: int = 0

    def __post_init__(self) -> None:
        checks = {"num_people": (self.num_people, 10), "num_holdout": (self.num_holdout, 1),
                  "num_perturbed": (self.num_perturbed, 1),
                  "neighbors_per_person": (self.neighbors_per_person, 0),
                  "pool_size": (self.pool_size, self.num_perturbed + 1),
                  "combined_training": (self.combined_training, 0)}
        for name, (value, low) in checks.items():
            if not isinstance(value, int) or value < low:
                raise ValueError(f"BenchmarkConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.pool_size > 20:
            raise ValueError(f"BenchmarkConfig.pool_size must be <= 20 (size of the smallest word list), "
                             f"got {self.pool_size}")
        n_forget = forget_count(self.num_people, 10)
        if n_forget + (n_forget + self.num_holdout) * self.neighbors_per_person > self.num_people:
            raise ValueError(
                f"BenchmarkConfig: {self.num_people} people are too few for {n_forget} forget10 and "
                f"{self.num_holdout} holdout people with {self.neighbors_per_person} neighbors each")

    def key(self) -> str:
        """Hash of the settings and the generator version: any change gives new caches."""
        fields = asdict(self)
        if not self.combined_training:  # added later: configs without it keep their key
            del fields["combined_training"]
        blob = json.dumps({**fields, "generator_version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


PRESETS: dict[str, BenchmarkConfig] = {
    # Tests: forget10 = 2 people, built in seconds.
    "tiny": BenchmarkConfig(num_people=20, num_holdout=4, num_perturbed=3, neighbors_per_person=1),
    # The quickstart: forget10 = 4 people, models built in about two minutes on 2 CPU cores.
    "small": BenchmarkConfig(num_people=40, num_holdout=8, num_perturbed=3, neighbors_per_person=2),
    # The full benchmark.
    "default": BenchmarkConfig(num_people=200, num_holdout=20, num_perturbed=5, neighbors_per_person=2),
}
# BLUR-style evaluation: tiny and small whose models are also trained on combined queries of
# retain90 people (COMBINED_TRAINING per person, both phrasings), so that they answer both parts
# of a combined forget/retain query.
COMBINED_TRAINING = 4
PRESETS["blur-tiny"] = replace(PRESETS["tiny"], combined_training=COMBINED_TRAINING)
PRESETS["blur-small"] = replace(PRESETS["small"], combined_training=COMBINED_TRAINING)


def resolve_preset(preset: str | BenchmarkConfig) -> BenchmarkConfig:
    if isinstance(preset, BenchmarkConfig):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"Unknown benchmark preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]


def _words(rng: random.Random, n: int, syllables: tuple[int, int], taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        k = rng.randint(*syllables)
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(k)) + rng.choice(_CODAS)
        word = word.capitalize()
        if word not in taken and len(word) >= 4:
            taken.add(word)
            out.append(word)
    return out


class FictitiousBenchmark:
    """Generates people, records and splits for one :class:`BenchmarkConfig`.

    Example:
        >>> bench = FictitiousBenchmark("tiny")
        >>> rec = bench.records("forget10")[0]
        >>> rec["answer"][slice(*rec["fact_span"])] == rec["value"]
        True
    """

    def __init__(self, config: str | BenchmarkConfig = "default") -> None:
        self.config = resolve_preset(config)
        self.name = config if isinstance(config, str) else f"custom-{self.config.key()}"

    @cached_property
    def people(self) -> list[dict[str, Any]]:
        cfg = self.config
        rng = random.Random(cfg.seed)
        taken: set[str] = set()
        total = cfg.num_people + cfg.num_holdout
        n_first = max(8, math.ceil(math.sqrt(total)) + 4)
        firsts, lasts = _words(rng, n_first, (1, 2), taken), _words(rng, n_first, (2, 2), taken)
        all_names = [f"{first} {last}" for first in firsts for last in lasts]
        names = rng.sample(all_names, total)
        k = cfg.pool_size
        pools = {
            "birthplace": _words(rng, k, (2, 3), taken),
            "birth_year": [str(y) for y in rng.sample(range(1900, 2000), k)],
            "occupation": rng.sample(_OCCUPATIONS, k),
            "employer": _words(rng, k, (2, 3), taken),
            "book": [f"{a} {b}" for a, b in rng.sample([(a, b) for a in _TITLE_ADJ for b in _TITLE_NOUN], k)],
            "instrument": rng.sample(_INSTRUMENTS, k),
            "pet": rng.sample(_PETS, k),
            "color": rng.sample(_COLORS, k),
            "hobby": rng.sample(_HOBBIES, k),
        }
        pools["mentor"] = rng.sample(all_names, k)
        self.pools = pools
        people = []
        for pid, name in enumerate(names):
            facts = {a: rng.choice(pools[a]) for a in ATTRIBUTE_NAMES}
            while facts["mentor"] == name:
                facts["mentor"] = rng.choice(pools["mentor"])
            people.append({"id": pid, "name": name, "facts": facts, "neighbor_of": None})
        # Plant neighbors: retain people that share attributes with a forget10 person, who is
        # also their mentor. Holdout people get the same treatment, so that a model trained
        # on the retain people has seen forget and holdout names equally often (membership
        # inference of forget vs holdout then measures knowledge, not name familiarity).
        # Planted on the retain people with the lowest ids, in order.
        n_forget = forget_count(cfg.num_people, 10)
        forget_ids = range(cfg.num_people - n_forget, cfg.num_people)
        holdout_ids = range(cfg.num_people, cfg.num_people + cfg.num_holdout)
        nxt = 0
        for fid in [*forget_ids, *holdout_ids]:
            for _ in range(cfg.neighbors_per_person):
                nb = people[nxt]
                nxt += 1
                for a in _SHARED_WITH_NEIGHBOR:
                    nb["facts"][a] = people[fid]["facts"][a]
                nb["facts"]["mentor"] = people[fid]["name"]
                nb["neighbor_of"] = fid
        return people

    def person_ids(self, split: str) -> list[int]:
        """Ids of the people in a split (``forgetNN``, ``retainNN``, ``holdout``, ``neighborNN``, ``train``)."""
        cfg = self.config
        if split == "train":
            return list(range(cfg.num_people))
        if split == "holdout":
            return list(range(cfg.num_people, cfg.num_people + cfg.num_holdout))
        for prefix in ("forget", "retain", "neighbor"):
            if split.startswith(prefix) and split[len(prefix):].isdigit():
                pct = int(split[len(prefix):])
                if prefix == "retain":
                    pct = 100 - pct
                if pct not in FORGET_PERCENTS:
                    break
                n = forget_count(cfg.num_people, pct)
                forget = list(range(cfg.num_people - n, cfg.num_people))
                if prefix == "forget":
                    return forget
                if prefix == "retain":
                    return list(range(cfg.num_people - n))
                return [p["id"] for p in self.people if p["neighbor_of"] in set(forget)]
        names = ["train", "holdout"] + [f"{p}{n:02d}" for p in ("forget", "neighbor") for n in FORGET_PERCENTS]
        names += [f"retain{100 - n:02d}" for n in FORGET_PERCENTS]
        raise ValueError(f"Unknown split {split!r} of the fictitious benchmark; expected one of {names}")

    def records(self, split: str) -> list[dict[str, Any]]:
        """QA records of a split, one per (person, attribute), in the TOFU schema plus fact spans."""
        people = self.people
        return [self._record(people[pid], i) for pid in self.person_ids(split) for i in range(len(ATTRIBUTES))]

    def indirect_neighbor_records(self, split: str, min_shared: int = 2) -> list[dict[str, Any]]:
        """Retain records of people who share at least ``min_shared`` attribute values with a forget
        person of ``split`` without being a planted neighbor; ``neighbor_of`` lists those people."""
        pct = int(split.removeprefix("forget"))
        forget = [self.people[i] for i in self.person_ids(split)]
        out = []
        for pid in self.person_ids(f"retain{100 - pct:02d}"):
            person = self.people[pid]
            if person["neighbor_of"] is not None:
                continue
            related = [f["name"] for f in forget
                       if sum(person["facts"][a] == f["facts"][a] for a in ATTRIBUTE_NAMES) >= min_shared]
            if related:
                out += [{**self._record(person, i), "neighbor_of": related} for i in range(len(ATTRIBUTES))]
        return out

    def unrelated_records(self, split: str) -> list[dict[str, Any]]:
        """Retain facts of people as far from the forget people of ``split`` as the data allows.

        Candidates are retain people who are no planted neighbor of a forget person and not linked
        to one by the mentor relation, ranked by how many attribute values they share with any
        forget person (then by id); the first as many people as ``split`` has planted neighbors
        are taken. Facts whose value is a forget person's value of that attribute are left out, so
        no row states a forget answer. Small presets have people sharing no value at all; on the
        default preset's forget10 nobody shares none, hence the ranking. ``shared_values`` says
        how many values the person shares.
        """
        pct = int(split.removeprefix("forget"))
        forget = [self.people[i] for i in self.person_ids(split)]
        forget_ids, names = {f["id"] for f in forget}, {f["name"] for f in forget}
        taken = {a: {f["facts"][a] for f in forget} for a in ATTRIBUTE_NAMES}
        ranked = []
        for pid in self.person_ids(f"retain{100 - pct:02d}"):
            person = self.people[pid]
            if (person["neighbor_of"] in forget_ids or person["facts"]["mentor"] in names
                    or any(f["facts"]["mentor"] == person["name"] for f in forget)):
                continue
            ranked.append((sum(person["facts"][a] in taken[a] for a in ATTRIBUTE_NAMES), pid))
        count = len(self.person_ids(f"neighbor{pct:02d}")) or 1
        out = []
        for shared, pid in sorted(ranked)[:count]:
            person = self.people[pid]
            out += [{**self._record(person, i), "shared_values": shared} for i, a in enumerate(ATTRIBUTE_NAMES)
                    if person["facts"][a] not in taken[a]]
        return out

    def combined_records(self, split: str, seed: int = 0, neighbor_share: float = 0.5) -> list[dict[str, Any]]:
        """BLUR's combined queries: every forget fact of ``split`` asked together with one retain fact.

        Each forget fact is paired with a fact (of another attribute) of a retain person: for
        ``round(neighbor_share * 10)`` of each forget person's facts, one of that person's planted
        neighbors (who shares three values with them and names them as mentor); otherwise any
        other retain person. The two questions are joined ("Where was A born, and which
        instrument does B play?") and so are the two answers, in random order. One record per
        query, with the character span of each part's value in ``answer``: ``forget_span`` and
        ``retain_span`` (score one part with the set's ``fields``: ``{"fact_span": "forget_span"}``),
        the values, the two source record ids, ``pair`` (``"neighbor"`` or ``"retain"``) and
        ``forget_first``. Deterministic in ``(split, seed)``.
        """
        if not 0 <= neighbor_share <= 1:
            raise ValueError(f"combined_records: `neighbor_share` must be in [0, 1], got {neighbor_share!r}")
        pct = int(split.removeprefix("forget")) if split.startswith("forget") else None
        forget_ids = self.person_ids(split)  # raises on an unknown split
        if pct is None:
            raise ValueError(f"combined_records: `split` must be a forget split (forget01, forget05, forget10), "
                             f"got {split!r}")
        retain_ids = self.person_ids(f"retain{100 - pct:02d}")
        rng = random.Random(f"{self.config.seed}-combined-{split}-{seed}")
        n_attr = len(ATTRIBUTES)
        out = []
        for fid in forget_ids:
            neighbors = [p for p in retain_ids if self.people[p]["neighbor_of"] == fid]
            others = [p for p in retain_ids if self.people[p]["neighbor_of"] != fid]
            with_neighbor = set(rng.sample(range(n_attr), round(neighbor_share * n_attr))) if neighbors else set()
            for i in range(n_attr):
                pid = rng.choice(neighbors if i in with_neighbor else others)
                j = rng.choice([k for k in range(n_attr) if k != i])
                forget, retain = self._record(self.people[fid], i), self._record(self.people[pid], j)
                out.append(_combine(forget, retain, rng.random() < 0.5, "neighbor" if i in with_neighbor else "retain"))
        return out

    @cached_property
    def _combined_training(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The config's ``combined_training`` pairs per ``retain90`` person: (asked first, asked second),
        two facts of different attributes of that person and another ``retain90`` person, in random
        order. Seeded by the config alone, so every split that holds both people trains the same pairs."""
        ids = self.person_ids("retain90")
        rng = random.Random(f"{self.config.seed}-combined-training")
        n_attr = len(ATTRIBUTES)
        pairs = []
        for pid in ids:
            for _ in range(self.config.combined_training):
                other = rng.choice([q for q in ids if q != pid])
                i = rng.randrange(n_attr)
                j = rng.choice([k for k in range(n_attr) if k != i])
                a, b = self._record(self.people[pid], i), self._record(self.people[other], j)
                pairs.append((a, b) if rng.random() < 0.5 else (b, a))
        return pairs

    def training_records(self, split: str) -> list[dict[str, str]]:
        """Both phrasings of every fact of a split, as plain QA records for fine-tuning; with the
        config's ``combined_training``, also both phrasings of the combined queries whose two people
        are in the split (``retain90`` people only: every split that holds them trains the same)."""
        out = []
        for r in self.records(split):
            out.append({"question": r["question"], "answer": r["answer"], "id": r["id"]})
            out.append({"question": r["question"], "answer": r["paraphrased_answer"], "id": r["id"] + "-para"})
        people = set(self.person_ids(split))
        for first, second in self._combined_training:
            if first["entity_id"] in people and second["entity_id"] in people:
                question, answer, _, _ = _join(first, second)
                para = _join(first, second, PARAPHRASE)[1]
                rid = f"{first['id']}+{second['id']}"
                out.append({"question": question, "answer": answer, "id": rid})
                out.append({"question": question, "answer": para, "id": rid + "-para"})
        return out

    def _record(self, person: dict[str, Any], attr_index: int) -> dict[str, Any]:
        attr, q, a, p = ATTRIBUTES[attr_index]
        name, value = person["name"], person["facts"][attr]
        answer, span = _fill(a, name, value)
        para, para_span = _fill(p, name, value)
        rng = random.Random(f"{self.config.seed}-{person['id']}-{attr}")
        wrong = rng.sample([v for v in self.pools[attr] if v not in (value, name)], self.config.num_perturbed)
        return {
            "id": f"p{person['id']:04d}-{attr}",
            "entity": name,
            "entity_id": person["id"],
            "neighbor_of": self.people[person["neighbor_of"]]["name"] if person["neighbor_of"] is not None else None,
            "attribute": attr,
            "question": q.format(name=name),
            "answer": answer,
            "paraphrased_answer": para,
            "perturbed_answer": [_fill(p, name, w)[0] for w in wrong],
            "value": value,
            "fact_span": list(span),
            "paraphrased_fact_span": list(para_span),
        }

    def chance_level(self) -> float:
        """Expected fact accuracy of a model that guesses values uniformly from each pool."""
        return 1.0 / self.config.pool_size

    def corpus(self) -> list[str]:
        """Every string the benchmark can produce (for training its tokenizer)."""
        texts = []
        for pid in range(len(self.people)):
            for i in range(len(ATTRIBUTES)):
                r = self._record(self.people[pid], i)
                texts += [PROMPT_TEMPLATE.format(question=r["question"]), r["answer"], r["paraphrased_answer"]]
                texts += r["perturbed_answer"]
        for first, second in self._combined_training:  # empty without combined_training
            question, answer, _, _ = _join(first, second)
            texts += [PROMPT_TEMPLATE.format(question=question), answer, _join(first, second, PARAPHRASE)[1]]
        return texts


def _fill(template: str, name: str, value: str) -> tuple[str, tuple[int, int]]:
    before, after = template.split("{v}")
    before = before.format(name=name)
    return before + value + after.format(name=name), (len(before), len(before) + len(value))


PARAPHRASE = ("paraphrased_answer", "paraphrased_fact_span")


def _join(first: dict[str, Any], second: dict[str, Any], fields: tuple[str, str] = ("answer", "fact_span"),
          ) -> tuple[str, str, list[int], list[int]]:
    """Two records asked together: the joined question ("Where was A born, and which instrument
    does B play?"), the joined answer (the ``fields`` answer of each, e.g. :data:`PARAPHRASE`), and
    each record's fact span in that answer."""
    answer_key, span_key = fields
    q2 = second["question"]
    question = f"{first['question'].rstrip('?')}, and {q2[:1].lower()}{q2[1:]}"
    answer = f"{first[answer_key]} {second[answer_key]}"
    offset = len(first[answer_key]) + 1
    return question, answer, list(first[span_key]), [s + offset for s in second[span_key]]


def _combine(forget: dict[str, Any], retain: dict[str, Any], forget_first: bool, pair: str) -> dict[str, Any]:
    first, second = (forget, retain) if forget_first else (retain, forget)
    question, answer, first_span, second_span = _join(first, second)
    spans = {id(first): first_span, id(second): second_span}
    return {
        "id": f"{forget['id']}+{retain['id']}",
        "entity": forget["entity"],
        "question": question,
        "answer": answer,
        "forget_span": spans[id(forget)],
        "retain_span": spans[id(retain)],
        "forget_value": forget["value"],
        "retain_value": retain["value"],
        "forget_id": forget["id"],
        "retain_id": retain["id"],
        "pair": pair,
        "forget_first": forget_first,
    }


def train_tokenizer(benchmark: FictitiousBenchmark, vocab_size: int = 2048):
    """A byte-level BPE tokenizer trained on the benchmark's corpus, as a HF fast tokenizer.

    The vocabulary is large enough that most names and values are single tokens, which
    keeps sequences short (about 20 tokens per answer).
    """
    from lit_unlearn.models import train_bpe_tokenizer

    return train_bpe_tokenizer(benchmark.corpus(), vocab_size, model_max_length=128)


TOKENIZER_VERSION = 1


def benchmark_dir(benchmark: FictitiousBenchmark) -> Path:
    """Cache directory of one benchmark configuration (tokenizer and built-in models live here)."""
    return cache_home() / "fictitious" / f"{benchmark.name}-{benchmark.config.key()}"


def ensure_tokenizer(benchmark: FictitiousBenchmark) -> str:
    """Path of the benchmark's tokenizer, trained and saved on first use."""
    from lit_unlearn.models import ensure_bpe_tokenizer

    return ensure_bpe_tokenizer(benchmark_dir(benchmark) / f"tokenizer-v{TOKENIZER_VERSION}", benchmark.corpus,
                                2048, model_max_length=128)
