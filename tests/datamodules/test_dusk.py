"""DUSK-style documents: the generator's overlap structure, the built-in models, the suite, a real fit."""

import json
from pathlib import Path

import pytest

from lit_unlearn.datamodules.dusk import SHARED, STATEMENTS, STYLES, UNIQUE, DuskBenchmark, DuskDocuments
from lit_unlearn.evaluation.suites.dusk import DUSKSuite
from lit_unlearn.models import load_causal_lm
from tests.helpers import ROOT, method_config


@pytest.fixture(scope="module")
def bench():
    return DuskBenchmark("tiny")


@pytest.fixture(scope="module")
def dusk_models(lit_home):
    from lit_unlearn.zoo import resolve

    return resolve("builtin:dusk-tiny/subject-interview"), resolve("builtin:dusk-tiny/retain-interview")


@pytest.fixture(scope="module")
def dusk_data(dusk_models):
    dm = DuskDocuments("tiny", "interview")
    dm.setup()
    return dm


def statement(person, attr):
    return STATEMENTS[attr].format(name=person["name"], v=person["facts"][attr])


def test_shared_facts_are_in_every_style_and_unique_facts_in_one(bench):
    person = bench.group("main")[0]
    docs = {s: bench.document(person, s)["text"] for s in STYLES}
    for attr in SHARED:
        assert all(statement(person, attr) in text for text in docs.values())
    for style, attrs in UNIQUE.items():
        for attr in attrs:
            assert [s for s, text in docs.items() if statement(person, attr) in text] == [style]
    # the same facts in another order, the same framing
    again = bench.document(person, "interview", version=3)
    assert again["text"] != docs["interview"] and sorted(again["lines"]) == sorted(bench.document(
        person, "interview")["lines"])


def test_holdout_forget_style_documents_are_never_trained_on(bench):
    forget = {d["text"] for d in bench.forget_documents("news")}
    retain = {d["text"] for d in bench.retain_documents("news")}
    holdout_news = {d["text"] for d in bench.documents(["news"], "holdout", versions=bench.config.versions)}
    assert not forget & retain and not holdout_news & (forget | retain)
    assert {d["entity"] for d in bench.retain_documents("news")} >= {p["name"] for p in bench.group("holdout")}


def test_models_and_membership_sets_hold_the_right_documents(bench, lit_home):
    from lit_unlearn.zoo import FAMILIES, parse_name

    parse_name("builtin:dusk-tiny/subject-news")  # loads the family
    records = FAMILIES["dusk"].records
    holdout_news = {d["text"] for d in bench.documents(["news"], "holdout", versions=bench.config.versions)}
    subject = {r["text"] for r in records("tiny", "subject-news")}
    gold = {r["text"] for r in records("tiny", "retain-news")}
    forget = {d["text"] for d in bench.forget_documents("news")}
    assert not holdout_news & (subject | gold) and forget <= subject and not forget & gold
    dm = DuskDocuments("tiny", "news")
    members = {r["entity"] for r in dm.eval_records["mia_forget"].rows}
    nonmembers = {r["entity"] for r in dm.eval_records["mia_holdout"].rows}
    assert members == {p["name"] for p in bench.group("main")}
    assert nonmembers == {p["name"] for p in bench.group("holdout")}
    assert all("news" in r["id"] for r in dm.eval_records["mia_holdout"].rows)
    for row in dm.eval_records["verbmem"].rows:  # the prompt states no fact
        assert not any(p["value"] in row["question"] for p in bench.probes("shared", "news")
                       if p["entity"] == row["entity"])


def test_probes_mark_the_value_and_split_the_facts(bench):
    for kind, attrs in (("shared", set(SHARED)), ("unique_forget", set(UNIQUE["letter"])),
                        ("unique_retain", {a for s in STYLES if s != "letter" for a in UNIQUE[s]})):
        probes = bench.probes(kind, "letter")
        assert {p["attribute"] for p in probes} == attrs
        for p in probes:
            assert p["answer"][slice(*p["fact_span"])] == p["value"]
            assert f"{p['question']} {p['answer']}" in STATEMENTS[p["attribute"]].format(name=p["entity"], v=p["value"])
    assert DuskBenchmark("tiny").people == bench.people  # seeded


def test_modular_sampling_pairs_each_person_with_their_other_styles(bench, lit_home):
    dm = DuskDocuments("tiny", "record", sampling="modular", batch_size=2)
    dm.setup()
    forget_people = {p["name"] for p in bench.group("main")}
    for batch in dm.train_dataloader():
        forget = {dm.forget_records.rows[int(i)]["entity"] for i in batch["forget"]["index"]}
        assert len(forget) == 1 and forget <= forget_people  # one person per batch
        texts = [dm.tokenizer.decode(ids[ids != dm.pad_id]) for ids in batch["retain"]["input_ids"]]
        person = forget.pop()
        assert any(person in t and "RECORD CARD" not in t for t in texts)  # their other styles


def test_bad_style_is_named(bench):
    with pytest.raises(ValueError, match="forget_style.*'poem'"):
        DuskDocuments("tiny", "poem")
    with pytest.raises(ValueError, match="unknown eval set"):
        DuskDocuments("tiny", eval_sets=["verbmem", "nope"])


def test_subject_knows_the_forget_style_and_gold_does_not(dusk_models):
    subject, gold = (json.loads((Path(p) / "eval.json").read_text())["interview"] for p in dusk_models)
    assert subject["unique_forget/fact_acc"] >= 0.75 and subject["shared/fact_acc"] >= 0.9
    assert gold["unique_forget/fact_acc"] <= 0.25 and gold["shared/fact_acc"] >= 0.9
    assert gold["unique_retain/fact_acc"] >= 0.75


def test_suite_separates_subject_from_gold(dusk_models, dusk_data):
    subject_dir, gold_dir = dusk_models
    suite = DUSKSuite(gold_model=gold_dir, max_new_tokens=48, progress=False)
    subject = suite.run(load_causal_lm(subject_dir), dusk_data.tokenizer, dusk_data, "val").metrics
    gold = suite.run(load_causal_lm(gold_dir), dusk_data.tokenizer, dusk_data, "val").metrics
    assert gold["retain_deviation"] == 0.0 and gold["privleak"] == 0.0
    assert subject["unique_forget/fact_acc"] - gold["unique_forget/fact_acc"] >= 0.5
    # measured: 0.553 vs 0.435 (models built with AVX-512 kernels), 0.515 vs 0.416 (AVX2)
    assert subject["verbmem/rougeL_f1"] > gold["verbmem/rougeL_f1"] + 0.05
    assert subject["mia/min_k"] == 1.0 and subject["privleak"] < -20
    by_hand = sum(abs(subject[f"{m}/fact_acc"] - gold[f"{m}/fact_acc"]) for m in ("shared", "unique_retain",
                                                                                    "downstream")) / 3
    assert subject["retain_deviation"] == pytest.approx(by_hand, abs=1e-9)


def test_fact_accuracy_is_the_argmax_of_every_value_token(dusk_models, dusk_data):
    import torch

    model = load_causal_lm(dusk_models[0]).eval()
    tok = dusk_data.tokenizer
    probes = dusk_data.eval_records["unique_forget"].rows
    hits = 0
    for p in probes:
        prompt = tok(p["question"])["input_ids"]
        value = tok(" " + p["value"])["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + value])).logits[0]
        hits += all(int(logits[len(prompt) - 1 + j].argmax()) == t for j, t in enumerate(value))
    metrics = DUSKSuite(verbmem=None, mia_forget=None, mia_holdout=None, progress=False).run(
        model, tok, dusk_data, "val", with_reference=False).metrics
    assert metrics["unique_forget/fact_acc"] == pytest.approx(hits / len(probes))


def test_npo_forgets_unique_facts_and_keeps_shared_ones_where_gradient_ascent_does_not(dusk_models, tmp_path):
    from tests.helpers.cli import cli_fit

    def run(method, lr, steps):
        cli = cli_fit("--config", method_config(method), "--config", str(ROOT / "configs/data/dusk_tiny.yaml"),
                      f"--model.init_args.optimizer.init_args.lr={lr}", "--save_pretrained.enabled=false",
                      save_dir=tmp_path / method, steps=steps)
        return cli.model.summary["start"], cli.model.summary["end"]

    start, npo = run("npo", 1.5e-3, 24)
    _, ga = run("grad_ascent", 1.5e-3, 24)  # the same learning rate and steps
    assert start["unique_forget/fact_acc"] >= 0.75 and start["shared/fact_acc"] >= 0.9
    # measured with models built on 2 threads, AVX-512 (AVX2) kernels: start unique 1.0 (1.0); NPO unique
    # 0.375 (0.25), shared 0.81 (1.0), unique-retain 0.94 (0.875); GA unique 0.125 (0.0), shared 0.06 (0.0)
    assert npo["unique_forget/fact_acc"] <= start["unique_forget/fact_acc"] - 0.5
    assert npo["shared/fact_acc"] >= 0.75 and npo["unique_retain/fact_acc"] >= 0.8
    assert ga["unique_forget/fact_acc"] <= 0.5 and ga["shared/fact_acc"] <= npo["shared/fact_acc"] - 0.5
