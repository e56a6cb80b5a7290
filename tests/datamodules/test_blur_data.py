"""BLUR's data on the embedded benchmark: combined forget/retain queries, the graded relearn sets and the
blur-* presets' combined training."""

import dataclasses
import json

import pytest

from lit_unlearn import FictitiousPeople
from lit_unlearn.datamodules.fictitious import ATTRIBUTE_NAMES, PROMPT_TEMPLATE, FictitiousBenchmark


def by_id(bench, split):
    return {r["id"]: r for r in bench.records(split)}


def test_combined_query_joins_a_forget_and_a_retain_fact(tiny_bench):
    first = tiny_bench.combined_records("forget10")[0]
    assert first["question"] == "What is the favorite color of Brybert Toqym, and where was Jiabrux Griqynd born?"
    assert first["answer"] == ("The favorite color of Brybert Toqym is teal. "
                               "Jiabrux Griqynd was born in the city of Trithojack.")
    assert first["answer"][slice(*first["forget_span"])] == "Trithojack" == first["forget_value"]
    assert first["answer"][slice(*first["retain_span"])] == "teal" == first["retain_value"]
    assert (first["forget_id"], first["retain_id"], first["pair"], first["forget_first"]) == (
        "p0018-birthplace", "p0000-color", "neighbor", False)


def test_every_combined_query_is_its_two_source_records(tiny_bench):
    forget, retain = by_id(tiny_bench, "forget10"), by_id(tiny_bench, "retain90")
    rows = tiny_bench.combined_records("forget10")
    assert [r["forget_id"] for r in rows] == list(forget)  # every forget fact once, in order
    for r in rows:
        f, k = forget[r["forget_id"]], retain[r["retain_id"]]
        assert r["answer"][slice(*r["forget_span"])] == f["value"] == r["forget_value"]
        assert r["answer"][slice(*r["retain_span"])] == k["value"] == r["retain_value"]
        parts = (f, k) if r["forget_first"] else (k, f)
        assert r["answer"] == f"{parts[0]['answer']} {parts[1]['answer']}"
        q2 = parts[1]["question"]
        assert r["question"] == f"{parts[0]['question'][:-1]}, and {q2[0].lower()}{q2[1:]}"
        assert f["attribute"] != k["attribute"]
        assert (k["neighbor_of"] == f["entity"]) == (r["pair"] == "neighbor")  # a planted neighbor, or not
    for pid in tiny_bench.person_ids("forget10"):  # half of each person's facts asked with a neighbor
        assert sum(r["pair"] == "neighbor" for r in rows if r["forget_id"].startswith(f"p{pid:04d}-")) == 5
    assert 0 < sum(r["forget_first"] for r in rows) < len(rows)


def test_combined_queries_are_seeded():
    small = FictitiousBenchmark("small")
    assert json.dumps(small.combined_records("forget10")) == json.dumps(
        FictitiousBenchmark("small").combined_records("forget10"))
    other = small.combined_records("forget10", seed=1)
    assert [r["retain_id"] for r in other] != [r["retain_id"] for r in small.combined_records("forget10")]
    assert {r["pair"] for r in small.combined_records("forget05", neighbor_share=0.0)} == {"retain"}
    with pytest.raises(ValueError, match="`neighbor_share` must be in"):
        small.combined_records("forget10", neighbor_share=2)
    with pytest.raises(ValueError, match="`split` must be a forget split"):
        small.combined_records("retain90")


def test_encoded_spans_cover_exactly_each_part_value():
    data = FictitiousPeople("tiny", eval_sets=["combined_forget", "combined_retain"])
    data.setup()
    tok = data.tokenizer
    for name, key in (("combined_forget", "forget_value"), ("combined_retain", "retain_value")):
        encoded = data.eval_encoded[name]
        for i in range(len(encoded)):
            ids, _, fact, _ = encoded[i]
            assert tok.decode(ids[fact]).strip() == encoded.records.rows[i][key]


def test_unrelated_people_share_no_forget_value(tiny_bench):
    forget = [tiny_bench.people[i] for i in tiny_bench.person_ids("forget10")]
    rows = tiny_bench.unrelated_records("forget10")
    people = {r["entity_id"] for r in rows}
    assert len(people) == len(tiny_bench.person_ids("neighbor10")) == 2 and len(rows) == 20
    assert people <= set(tiny_bench.person_ids("retain90")) and {r["shared_values"] for r in rows} == {0}
    for r in rows:
        person = tiny_bench.people[r["entity_id"]]
        assert person["neighbor_of"] is None or person["neighbor_of"] not in {f["id"] for f in forget}
        assert all(person["facts"][a] != f["facts"][a] for f in forget for a in ATTRIBUTE_NAMES)
        assert person["facts"]["mentor"] not in {f["name"] for f in forget}


def test_unrelated_rows_state_no_forget_value_where_everyone_shares_some():
    bench = FictitiousBenchmark("small")  # only 2 retain people share no value with the 4 forget people
    forget = [bench.people[i] for i in bench.person_ids("forget10")]
    rows = bench.unrelated_records("forget10")
    assert len({r["entity_id"] for r in rows}) == 8 and sorted({r["shared_values"] for r in rows}) == [0, 1]
    assert len(rows) == 74  # the 6 facts whose value a forget person has are left out
    assert all(r["value"] != f["facts"][r["attribute"]] for r in rows for f in forget)


def test_relearn_sets_are_encoded_not_evaluated():
    plain = FictitiousPeople("tiny")
    data = FictitiousPeople("tiny", relearn_sets=["paraphrase", "neighbor", "unrelated"])
    plain.setup()
    data.setup()
    assert list(data.relearn_encoded) == ["paraphrase", "neighbor", "unrelated"]
    assert data.val_set_names == plain.val_set_names and len(data.val_dataloader()) == len(plain.val_dataloader())
    assert data.fingerprint() == plain.fingerprint()  # what is trained and evaluated is unchanged
    para = data.relearn_encoded["paraphrase"]
    _, labels, fact, _ = para[0]
    assert data.tokenizer.decode(labels[labels != -100], skip_special_tokens=True).strip() == (
        para.records.rows[0]["paraphrased_answer"])
    assert [r["id"] for r in data.relearn_encoded["neighbor"].records.rows] == [
        r["id"] for r in data.benchmark.records("neighbor10")]
    with pytest.raises(ValueError, match=r"unknown relearn set\(s\) \['forget'\] in `relearn_sets`"):
        FictitiousPeople("tiny", relearn_sets=["forget"])
    with pytest.raises(TypeError, match="`relearn_sets` must be a list of set names"):
        FictitiousPeople("tiny", relearn_sets="neighbor")


# ------------------------------------------------------------------ combined training (blur-* presets)

def test_blur_presets_train_combined_queries_of_retain90_people_only():
    bench, plain = FictitiousBenchmark("blur-tiny"), FictitiousBenchmark("tiny")
    n = bench.config.combined_training
    assert n > 0 and bench.config == dataclasses.replace(plain.config, combined_training=n)
    assert bench.people == plain.people and bench.records("forget10") == plain.records("forget10")
    single = plain.training_records("train")
    records = bench.training_records("train")
    assert records[:len(single)] == single  # the single facts first, unchanged
    combined = records[len(single):]
    retain90 = set(bench.person_ids("retain90"))
    assert len(combined) == 2 * n * len(retain90)  # n queries per retain90 person, both phrasings
    facts = {r["id"]: r for r in bench.records("train")}
    for plain_row, para_row in zip(combined[::2], combined[1::2]):
        first, second = (facts[i] for i in plain_row["id"].split("+"))
        assert para_row["id"] == plain_row["id"] + "-para" and para_row["question"] == plain_row["question"]
        assert {first["entity_id"], second["entity_id"]} <= retain90  # forget facts are only trained singly
        assert first["entity_id"] != second["entity_id"] and first["attribute"] != second["attribute"]
        # the format of combined_records: questions joined by ", and", answers by a space
        q2 = second["question"]
        assert plain_row["question"] == f"{first['question'][:-1]}, and {q2[0].lower()}{q2[1:]}"
        assert plain_row["answer"] == f"{first['answer']} {second['answer']}"
        assert para_row["answer"] == f"{first['paraphrased_answer']} {second['paraphrased_answer']}"
    # every retain90 person is asked first and second; a gold model trains the same combined queries
    assert {r["id"].split("+")[0][:5] for r in combined} == {f"p{p:04d}" for p in retain90}
    for split in ("retain90", "retain95", "retain99"):
        assert bench.training_records(split)[-len(combined):] == combined
        assert len(bench.training_records(split)) == len(plain.training_records(split)) + len(combined)
    assert bench.training_records("forget10") == plain.training_records("forget10")


def test_combined_training_keys_the_cache_and_trains_the_tokenizer():
    plain, blur = FictitiousBenchmark("small"), FictitiousBenchmark("blur-small")
    assert blur.config.key() != plain.config.key()  # (tests/test_zoo.py: the plain presets' keys are unchanged)
    texts = set(blur.corpus())
    assert set(plain.corpus()) < texts  # the plain corpus is unchanged, the blur one has the combined queries
    for r in blur.training_records("train"):
        assert r["answer"] in texts and PROMPT_TEMPLATE.format(question=r["question"]) in texts
    per_fact = 3 + plain.config.num_perturbed  # prompt, two phrasings, wrong answers; nothing else when off
    assert len(plain.corpus()) == len(plain.people) * len(ATTRIBUTE_NAMES) * per_fact
    with pytest.raises(ValueError, match="combined_training must be an integer >= 0"):
        dataclasses.replace(plain.config, combined_training=-1)


def test_blur_preset_data_names_the_blur_models():
    data = FictitiousPeople("blur-small", split="forget05", eval_sets=["combined_forget"])
    assert (data.subject_model, data.gold_model) == ("builtin:blur-small/subject", "builtin:blur-small/retain95")
    # the evaluation sets are those of the small preset: combined training changes only the training data
    small = FictitiousPeople("small", split="forget05", eval_sets=["combined_forget"])
    assert data.eval_records["combined_forget"].rows == small.eval_records["combined_forget"].rows
