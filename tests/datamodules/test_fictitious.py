import json

import pytest

from lit_unlearn.datamodules.fictitious import (
    ATTRIBUTE_NAMES,
    PRESETS,
    BenchmarkConfig,
    FictitiousBenchmark,
    forget_count,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def bench():
    return FictitiousBenchmark("default")


def test_default_size_and_facts(bench):
    assert bench.config.num_people >= 200
    assert len(ATTRIBUTE_NAMES) >= 10
    for p in bench.people:
        assert set(p["facts"]) == set(ATTRIBUTE_NAMES)


def test_deterministic():
    a = FictitiousBenchmark("small").records("forget10")
    b = FictitiousBenchmark("small").records("forget10")
    assert json.dumps(a) == json.dumps(b)
    other = FictitiousBenchmark(BenchmarkConfig(num_people=40, num_holdout=8, num_perturbed=3, neighbors_per_person=2,
                                                seed=1))
    assert [r["value"] for r in other.records("forget10")] != [r["value"] for r in a]


def test_records_mark_fact_spans_and_perturbations(bench):
    for rec in bench.records("forget10") + bench.records("holdout"):
        assert rec["answer"][slice(*rec["fact_span"])] == rec["value"]
        assert rec["paraphrased_answer"][slice(*rec["paraphrased_fact_span"])] == rec["value"]
        assert rec["answer"] != rec["paraphrased_answer"]
        assert len(rec["perturbed_answer"]) >= 3
        assert len(set(rec["perturbed_answer"])) == len(rec["perturbed_answer"])
        para_prefix = rec["paraphrased_answer"][: rec["paraphrased_fact_span"][0]]
        for wrong in rec["perturbed_answer"]:
            assert wrong.startswith(para_prefix)  # same phrasing ...
            assert wrong != rec["paraphrased_answer"]  # ... with a wrong value
            assert rec["value"] not in wrong[len(para_prefix):]


def test_values_are_drawn_from_pools(bench):
    # each attribute uses many values: a value cannot be guessed from the name
    for attr in ATTRIBUTE_NAMES:
        values = {p["facts"][attr] for p in bench.people}
        assert len(values) >= 10, attr


def test_splits(bench):
    n = bench.config.num_people
    f01, f05, f10 = (set(bench.person_ids(f"forget{k:02d}")) for k in (1, 5, 10))
    assert f01 < f05 < f10
    assert len(f10) == forget_count(n, 10) == 20
    r90 = set(bench.person_ids("retain90"))
    assert not (r90 & f10) and len(r90 | f10) == n
    holdout = set(bench.person_ids("holdout"))
    assert not holdout & (r90 | f10)
    neighbors = bench.person_ids("neighbor10")
    assert neighbors and set(neighbors) <= r90
    assert len(bench.records("forget10")) == 20 * len(ATTRIBUTE_NAMES)
    with pytest.raises(ValueError, match="Unknown split 'forget20'"):
        bench.person_ids("forget20")


def test_neighbors_share_attributes_with_forget_people(bench):
    people = bench.people
    forget = set(bench.person_ids("forget10"))
    for pid in bench.person_ids("neighbor10"):
        nb = people[pid]
        src = people[nb["neighbor_of"]]
        assert src["id"] in forget
        shared = [a for a in ATTRIBUTE_NAMES if nb["facts"][a] == src["facts"][a]]
        assert len(shared) >= 3
        assert nb["facts"]["mentor"] == src["name"]


def test_presets_are_valid():
    assert {"tiny", "small", "default"} <= set(PRESETS)
    with pytest.raises(ValueError, match="num_people"):
        BenchmarkConfig(num_people=3)


def test_tokenizer_keeps_words_whole():
    bench = FictitiousBenchmark("small")
    tok = train_tokenizer(bench)
    rec = bench.records("forget10")[0]
    ids = tok(" " + rec["value"], add_special_tokens=False)["input_ids"]
    assert len(ids) <= 3  # a value is one or two words, each a single token
    assert tok.decode(tok(rec["answer"])["input_ids"]) == rec["answer"]
