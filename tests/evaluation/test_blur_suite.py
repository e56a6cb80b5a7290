"""BLURSuite on the blur-tiny models: per-part accuracy by hand, the start and gold models, a short
unlearning run, the CLI."""

import pytest
import torch

from lit_unlearn import FictitiousPeople, GradAscent, RelearningProbe
from lit_unlearn.callbacks import SuiteEvaluation
from lit_unlearn.evaluation.suites.blur import BLURSuite
from lit_unlearn.models import load_causal_lm
from lit_unlearn.zoo import resolve
from tests.helpers import CONFIGS, adamw, fit, method_config
from tests.helpers.cli import cli_fit

SETS = ["forget", "retain", "combined_forget", "combined_retain"]


@pytest.fixture(scope="module")
def blur_subject(lit_home) -> str:
    """builtin:blur-tiny/subject: the tiny preset's subject also trained on combined retain queries."""
    return resolve("builtin:blur-tiny/subject")


@pytest.fixture(scope="module")
def blur_gold(lit_home) -> str:
    return resolve("builtin:blur-tiny/retain90")


@pytest.fixture(scope="module")
def blur_data():
    data = FictitiousPeople("blur-tiny", batch_size=4, eval_sets=SETS)
    data.setup()
    return data


@torch.no_grad()
def by_hand(model, tok, row, span_key):
    """Whether every token of the span is the argmax: one unpadded pass on the prompt, a space and the answer."""
    prompt = tok(f"Question: {row['question']}\nAnswer:")["input_ids"]
    answer = tok(" " + row["answer"], add_special_tokens=False, return_offsets_mapping=True)
    ids = prompt + answer["input_ids"] + [tok.eos_token_id]
    start, end = row[span_key][0] + 1, row[span_key][1] + 1  # + the space
    where = [len(prompt) + j for j, (s, e) in enumerate(answer["offset_mapping"]) if s < end and e > start]
    value = row["forget_value" if span_key == "forget_span" else "retain_value"]
    assert tok.decode([ids[t] for t in where]).strip() == value  # the hand span is the value
    logits = model(input_ids=torch.tensor([ids])).logits[0]
    return all(int(logits[t - 1].argmax()) == ids[t] for t in where)


def test_per_part_accuracy_by_hand_and_the_start_model(blur_subject, blur_data):
    model = load_causal_lm(blur_subject).eval()
    suite = BLURSuite(progress=False, batch_size=8)
    m = suite.run(model, blur_data.tokenizer, blur_data, "val").metrics
    rows = blur_data.eval_records["combined_forget"].rows
    forget = [by_hand(model, blur_data.tokenizer, r, "forget_span") for r in rows]
    retain = [by_hand(model, blur_data.tokenizer, r, "retain_span") for r in rows]
    n = len(rows)
    assert n == 20
    assert m["combined_forget/fact_acc"] == pytest.approx(sum(forget) / n)
    assert m["combined_retain/fact_acc"] == pytest.approx(sum(retain) / n)
    assert m["combined/both_acc"] == pytest.approx(sum(f and r for f, r in zip(forget, retain)) / n)
    assert m["combined/selective_acc"] == pytest.approx(sum(r and not f for f, r in zip(forget, retain)) / n)
    pairs = [i for i, r in enumerate(rows) if r["pair"] == "neighbor"]
    assert m["combined_retain/neighbor_fact_acc"] == pytest.approx(sum(retain[i] for i in pairs) / len(pairs))
    # The start model knows every single fact and answers both parts of the combined queries: it was also
    # trained on combined queries of retain90 people (never of a forget person). Calibrated on CPU: forget
    # part 20/20, retain part 20/20 (0.86 / 0.985 on 200 queries of seeds 0-9); chance is 1/20. The plain
    # tiny subject, trained on single questions only, gets 10/20 and 6/20.
    assert m["forget/fact_acc"] == 1.0 and m["retain/fact_acc"] >= 0.98
    assert m["combined_forget/fact_acc"] >= 0.8 and m["combined_retain/fact_acc"] >= 0.8
    assert m["combined/both_acc"] >= 0.8 and m["combined/selective_acc"] <= 0.2


def test_gold_retain_model_answers_only_the_retain_part(blur_gold, blur_data):
    m = BLURSuite(progress=False).run(load_causal_lm(blur_gold).eval(), blur_data.tokenizer, blur_data, "val").metrics
    # Calibrated on CPU: forget part 1/20 (a guess; single forget 2/20), retain part 19/20, selective 18/20:
    # the gold model is what selective unlearning aims at.
    assert m["forget/fact_acc"] <= 0.15 and m["retain/fact_acc"] >= 0.98
    assert m["combined_forget/fact_acc"] <= 0.3 and m["combined_retain/fact_acc"] >= 0.9
    assert m["combined/selective_acc"] >= 0.7


def test_unlearning_drops_the_forget_part_while_the_retain_part_holds(blur_subject, blur_data):
    suite = BLURSuite(progress=False)
    before = suite.run(load_causal_lm(blur_subject).eval(), blur_data.tokenizer, blur_data, "val").metrics
    data = FictitiousPeople("blur-tiny", batch_size=4, eval_sets=SETS)
    module = GradAscent(model=blur_subject, optimizer=adamw(2e-3), evaluate_at_start=False)
    fit(module, data, steps=8, limit_val_batches=0)
    after = suite.run(module.model, data.tokenizer, data, "val").metrics
    # measured, models built on 2 threads with AVX-512 (AVX2) kernels: forget part 0.85 -> 0.2 (0.95 -> 0.1),
    # retain part 1.0 -> 0.85 (1.0 -> 0.75), selective 0.15 -> 0.75 (0.05 -> 0.7); single forget 0.2 (0.1),
    # retain 0.92 (0.89). 7 steps at 3e-3 took the AVX2 build's retain part to 0.5.
    forget_drop = before["combined_forget/fact_acc"] - after["combined_forget/fact_acc"]
    retain_drop = before["combined_retain/fact_acc"] - after["combined_retain/fact_acc"]
    assert forget_drop >= 0.5 and retain_drop <= 0.35 and forget_drop - retain_drop >= 0.3
    assert after["combined_forget/fact_acc"] <= 0.3 and after["combined_retain/fact_acc"] >= 0.6
    assert after["combined/selective_acc"] >= 0.5
    assert after["forget/fact_acc"] <= 0.3 and after["retain/fact_acc"] >= 0.6


def test_generation_counts_answers_that_contain_each_value(blur_subject, blur_data):
    suite = BLURSuite(progress=False, generate=True, keep_generations=20)
    result = suite.run(load_causal_lm(blur_subject).eval(), blur_data.tokenizer, blur_data, "val")
    kept, rows = result.generations["combined_forget"], blur_data.eval_records["combined_forget"].rows
    assert len(kept) == 20
    for key, name in (("forget_value", "combined_forget"), ("retain_value", "combined_retain")):
        hits = [r[key].lower() in g["generated"].lower() for r, g in zip(rows, kept)]
        assert result.metrics[f"{name}/gen_contains"] == pytest.approx(sum(hits) / 20)
    # the start model composes when it generates too. Calibrated on CPU: forget value in 17/20 answers,
    # retain value in 20/20
    assert result.metrics["combined_forget/gen_contains"] >= 0.7
    assert result.metrics["combined_retain/gen_contains"] >= 0.8


def test_bad_arguments_and_missing_sets(blur_subject):
    with pytest.raises(ValueError, match="`combined_forget` and `combined_retain` must be two sets"):
        BLURSuite(combined_forget="c", combined_retain="c")
    with pytest.raises(ValueError, match="`combined_retain` must be a set name"):
        BLURSuite(combined_retain="")
    data = FictitiousPeople("blur-tiny", eval_sets=["forget", "retain"])
    data.setup()
    with pytest.raises(ValueError, match=r"needs the val set\(s\) \['combined_forget', 'combined_retain'\]"):
        BLURSuite(progress=False).run(load_causal_lm(blur_subject), data.tokenizer, data, "val")


def test_composed_cli_runs_suite_and_graded_probe(tmp_path, blur_subject):
    cli = cli_fit("--config", method_config("grad_ascent"), "--config", str(CONFIGS / "data/blur_tiny.yaml"),
                  "--config", str(CONFIGS / "eval/blur_suite.yaml"), "--model.init_args.compare_with=null",
                  "--save_pretrained.enabled=false", save_dir=tmp_path / "runs", steps=3)
    assert cli.trainer.global_step == 3
    kinds = [type(c).__name__ for c in cli.trainer.callbacks]
    assert {"DivergenceGuard", "RelearningProbe", "SuiteEvaluation"} <= set(kinds)  # appended, not replaced
    suite = next(c for c in cli.trainer.callbacks if isinstance(c, SuiteEvaluation))
    assert [h["step"] for h in suite.history] == [0, 3]
    assert cli.datamodule.preset == "blur-tiny" and cli.model.source.name == "builtin:blur-tiny/subject"
    assert suite.history[0]["forget/fact_acc"] == 1.0 and suite.history[0]["combined_forget/fact_acc"] >= 0.8
    assert "combined_retain/fact_acc" in suite.history[-1]
    probe = next(c for c in cli.trainer.callbacks if isinstance(c, RelearningProbe))
    for name in ("forget", "paraphrase", "neighbor", "unrelated"):
        assert f"relearn/{name}/recovery" in cli.trainer.callback_metrics
    assert probe.history[-1]["step"] == 3
