import json
from pathlib import Path

from lit_unlearn.datamodules.fictitious import FictitiousBenchmark
from lit_unlearn.zoo import SPECS, TrainSpec, model_dir, parse_name


def test_subject_knows_its_facts(tiny_subject):
    acc = json.loads((Path(tiny_subject) / "eval.json").read_text())["forget10"]
    chance = FictitiousBenchmark("tiny").chance_level()
    assert acc["forget/fact_acc"] >= 0.95
    assert acc["retain/fact_acc"] >= 0.95
    assert acc["holdout/fact_acc"] <= chance + 0.10  # never trained on: near chance


def test_gold_retain_model_does_not_know_forget_people(tiny_gold):
    acc = json.loads((Path(tiny_gold) / "eval.json").read_text())["forget10"]
    chance = FictitiousBenchmark("tiny").chance_level()
    assert acc["retain/fact_acc"] >= 0.95
    assert acc["forget/fact_acc"] <= chance + 0.10


def test_cache_is_keyed_by_settings(tiny_subject):
    info = json.loads((Path(tiny_subject) / "build_info.json").read_text())
    assert info["name"] == "builtin:tiny/subject" and info["train"]["epochs"] == SPECS["tiny"].epochs
    assert model_dir("tiny", "subject") == Path(tiny_subject)
    changed = TrainSpec(**{**info["train"], "lr": info["train"]["lr"] * 2})
    assert changed.key() != SPECS["tiny"].key()
    assert model_dir("tiny", "subject") != model_dir("small", "subject")
    assert parse_name("builtin:small/retain95") == ("small", "retain95")
