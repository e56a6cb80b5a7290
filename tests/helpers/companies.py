"""TOFU-format files of fictitious companies (a domain the embedded benchmark never saw), for
testing the own-data path: full, forget10, retain90, holdout10 and the perturbed evaluation files."""

from __future__ import annotations

import json
import random
from pathlib import Path

SYLLABLES = ["vor", "tal", "quen", "bri", "mox", "zel", "dra", "pim", "sor", "kel", "nu", "fa", "gri", "lo"]
CITIES = ["Oslo", "Lima", "Perth", "Quito", "Riga", "Turin", "Hanoi", "Accra", "Bergen", "Dakar", "Split", "Kyoto"]
PRODUCTS = ["solar tiles", "drone parts", "rain boots", "glass pens", "bike locks", "tea kettles", "ski wax",
            "clay bricks", "map software", "water filters", "violin strings", "paper lamps"]
FIRST = ["Ines", "Tomas", "Mira", "Oskar", "Lena", "Ravi", "Aiko", "Bruno", "Dalia", "Emil", "Noor", "Pavel"]
# (question, answer, paraphrase) per fact; the perturbed answers are the paraphrase with a wrong value
FACTS = {
    "year": ("In which year was {c} founded?", "{c} was founded in {v}.", "The founding year of {c} is {v}."),
    "city": ("Where is {c} based?", "{c} has its headquarters in {v}.", "The head office of {c} is in {v}."),
    "ceo": ("Who runs {c}?", "{c} is run by {v}.", "The chief executive of {c} is {v}."),
    "product": ("What does {c} make?", "{c} makes {v}.", "The main product of {c} is {v}."),
}


def _values(rng: random.Random) -> dict[str, list[str]]:
    return {"year": [str(y) for y in range(1950, 2021)], "city": CITIES, "product": PRODUCTS,
            "ceo": [f"{f} {rng.choice(SYLLABLES).title()}{rng.choice(SYLLABLES)}" for f in FIRST]}


def companies(n: int = 40, seed: int = 0) -> list[list[dict]]:
    """``n`` companies, each a list of QA records in the TOFU schema (4 facts, 3 perturbed answers)."""
    rng = random.Random(seed)
    pools, names, out = _values(rng), set(), []
    while len(names) < n:
        names.add("".join(rng.choice(SYLLABLES) for _ in range(2)).title() + rng.choice([" Labs", " Works", " Co"]))
    for c in sorted(names):
        rows = []
        for key, (q, a, p) in FACTS.items():
            value = rng.choice(pools[key])
            wrong = rng.sample([v for v in pools[key] if v != value], 3)
            rows.append({"question": q.format(c=c), "answer": a.format(c=c, v=value),
                         "paraphrased_answer": p.format(c=c, v=value),
                         "perturbed_answer": [p.format(c=c, v=w) for w in wrong]})
        out.append(rows)
    return out


def write_company_files(directory: Path, n: int = 40, forget: int = 10, holdout: int = 5) -> Path:
    """TOFU's file set for ``n`` companies: ``forget`` to unlearn, ``holdout`` never trained on."""
    every = companies(n)
    f, h, r = every[:forget], every[forget:forget + holdout], every[forget + holdout:]
    flat = lambda groups: [row for g in groups for row in g]  # noqa: E731
    directory.mkdir(parents=True, exist_ok=True)
    files = {"full.json": flat(f + r), "forget10.json": flat(f), "retain90.json": flat(r),
             "holdout10.json": flat(h), "forget10_perturbed.json": flat(f), "retain_perturbed.json": flat(r)}
    for name, rows in files.items():
        (directory / name).write_text("\n".join(json.dumps(row) for row in rows) + "\n")  # JSON lines, as TOFU
    return directory
