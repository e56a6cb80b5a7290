import json
from pathlib import Path

import pytest

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


def test_blur_family_names_models_of_the_blur_presets():
    assert parse_name("builtin:blur-small/retain90") == ("blur-small", "retain90")
    assert parse_name("builtin:blur-tiny/subject") == ("blur-tiny", "subject")
    blur = FictitiousBenchmark("blur-small")
    # same training settings as small, in the blur-small benchmark's own cache directory
    assert model_dir("blur-small", "retain90").name == model_dir("small", "retain90").name
    assert model_dir("blur-small", "retain90").parent.name == f"blur-small-{blur.config.key()}"
    # adding the option left the keys (and so the caches) of the plain presets unchanged
    assert FictitiousBenchmark("tiny").config.key() == "656d6a8a8db3"
    assert FictitiousBenchmark("small").config.key() == "25725f572aa3"
    assert model_dir("small", "subject").parent.name == "small-25725f572aa3"
    with pytest.raises(ValueError, match="Unknown built-in model 'builtin:blur-default/subject'"):
        parse_name("builtin:blur-default/subject")
