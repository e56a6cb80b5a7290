"""Your own data, end to end, through the console entry point as the README shows it: TOFU-format
files of fictitious companies -> a tokenizer and a start model from scratch -> the subject (on
full) and the gold retain model (on retain90) -> NPO -> ``lit-unlearn test --model DIR`` of each."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lit_unlearn.cli import expand_short_forms, main, model_label
from tests.helpers import CONFIGS
from tests.helpers.companies import write_company_files

OWN = CONFIGS / "own"
DATA, SUBJECT, GOLD, NPO, EVALUATE = (str(OWN / f"{n}.yaml") for n in ("data", "subject", "gold", "npo", "evaluate"))
QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
STEPS = 400  # the tiny model memorises 35 companies x 4 facts x 2 phrasings in about 25 epochs


def run(*args: str) -> None:
    main(list(args))


def results(model: str) -> dict:
    return json.loads(Path(f"runs/test/{model_label(model)}/version_0/results.json").read_text())


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The whole path once: files, tokenizer, start model, subject, gold, NPO, and a test of each."""
    root = tmp_path_factory.mktemp("own")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        write_company_files(root / "data/own")
        run("tokenizer", "data/own/full.json", "data/own/holdout10.json", "--out", "work/tokenizer",
            "--vocab-size", "600")
        run("new-model", "--tokenizer", "work/tokenizer", "--out", "work/start", "--layers", "2", "--hidden", "64",
            "--heads", "2", "--context", "96")
        train = [*QUIET, "--data.init_args.train_answers=[answer, paraphrased_answer]", f"--trainer.max_steps={STEPS}",
                 f"--model.init_args.scheduler.init_args.total_iters={STEPS}", "--trainer.check_val_every_n_epoch=1000"]
        run("fit", "--config", DATA, "--config", SUBJECT, *train)
        run("fit", "--config", DATA, "--config", SUBJECT, "--config", GOLD, *train)
        run("fit", "--config", DATA, "--config", NPO, *QUIET, "--trainer.max_epochs=3")
        for model in ("work/subject", "work/gold", "work/npo"):
            run("test", "--model", model, "--config", DATA, "--config", EVALUATE, *QUIET)
        yield root


def test_the_subject_is_far_from_the_gold_model_and_utility_is_not_zero(own, monkeypatch):
    monkeypatch.chdir(own)
    subject, gold, npo = (results(m)["metrics"] for m in ("work/subject", "work/gold", "work/npo"))
    assert gold["forget_quality"] == pytest.approx(1.0)  # its forget truth ratios against themselves
    assert subject["forget_quality"] < 0.01  # the subject knows the forget companies; the gold model never saw them
    for m in (subject, gold, npo):
        assert 0.1 < m["model_utility"] <= 1
    assert subject["forget/rougeL_recall"] > 0.9 > 0.5 > gold["forget/rougeL_recall"]
    assert npo["forget/prob"] < subject["forget/prob"]  # NPO unlearned something
    assert npo["retain/rougeL_recall"] > 0.5


def test_test_runs_land_under_runs_test_with_generations(own, monkeypatch):
    monkeypatch.chdir(own)
    for model in ("subject", "gold", "npo"):
        run_dir = Path(f"runs/test/{model}/version_0")
        assert (run_dir / "results.md").is_file() and (run_dir / "generations.json").is_file()
    assert not list(Path("runs").glob("own_*/version_*/results.json"))  # not among the fit runs
    assert sorted(p.name for p in Path("work").iterdir()) == ["gold", "npo", "start", "subject", "tokenizer"]


def test_a_degenerate_retain_file_is_named_in_the_warnings(own, monkeypatch):
    monkeypatch.chdir(own)
    rows = [json.loads(line) for line in Path("data/own/retain_perturbed.json").read_text().splitlines()]
    for row in rows:  # a paraphrase no model finds likely: every perturbed answer is likelier
        row["paraphrased_answer"] = " ".join(reversed(row["paraphrased_answer"].split()))
    Path("data/own/retain_degenerate.json").write_text("\n".join(json.dumps(r) for r in rows))
    before = results("work/subject")
    assert not any("truth ratio" in w.lower() for w in before["stats"].get("warnings", []))  # the healthy file
    run("test", "--model", "work/subject", "--config", DATA, "--config", EVALUATE, *QUIET,
        "--data.init_args.test_sets={forget: forget10_perturbed.json, retain: retain_degenerate.json, "
        "holdout: holdout10.json}")
    run_dir = Path("runs/test/subject")
    md = (max(run_dir.glob("version_*"), key=lambda p: int(p.name.split("_")[1])) / "results.md").read_text()
    assert "truth ratio" in md.lower() and "## Warnings" in md
    assert results("work/subject") == before  # a second test run writes a new version, not over the first


def test_a_suite_set_the_data_lacks_fails_before_any_work_naming_the_option(own, monkeypatch, capsys):
    monkeypatch.chdir(own)
    before = sorted(Path("runs").rglob("version_*"))
    with pytest.raises(SystemExit):
        run("test", "--model", "work/gold", "--config", DATA, "--config", EVALUATE, *QUIET,
            "--model.init_args.suite.init_args.option_sets=[world_facts]")
    err = capsys.readouterr().err
    assert "world_facts" in err and "option_sets" in err and "test_sets" in err
    assert sorted(Path("runs").rglob("version_*")) == before


def test_finetune_says_fine_tuned(own, caplog, monkeypatch):
    monkeypatch.chdir(own)
    with caplog.at_level(logging.INFO):
        run("fit", "--config", DATA, "--config", SUBJECT, *QUIET, "--trainer.max_steps=1",
            "--save_pretrained.dirpath=work/one_step")
    assert "Saved the fine-tuned model to work/one_step" in caplog.text


def test_short_forms_expand_to_the_full_arguments():
    assert expand_short_forms(["test", "--model", "work/npo", "--suite", "TOFUSuite", "--gold=work/gold"]) == [
        "test", "--model", "EvaluateOnly", "--model.init_args.suite", "TOFUSuite",
        "--model.init_args.compare_with", "work/gold", "--model.init_args.model", "work/npo"]
    assert expand_short_forms(["test", "--model", "NPO", "--config", "x.yaml"]) == ["test", "--model", "NPO",
                                                                                   "--config", "x.yaml"]
    assert expand_short_forms(["fit", "--model", "work/npo"]) == ["fit", "--model", "work/npo"]
    assert model_label("runs/npo/version_3/model") == "npo-version_3"
    assert model_label("builtin:small/subject") == "subject"
