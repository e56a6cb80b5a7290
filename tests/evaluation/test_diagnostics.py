"""Warnings for degenerate metrics (lit_unlearn.evaluation.diagnostics), their place in the TOFU
suite's results and in results.md, and the answer-level knowledge score answer_em."""

import json
import logging

import pytest
import torch

from lit_unlearn import TOFUSuite
from lit_unlearn.datamodules import ForgetRetainDataModule
from lit_unlearn.datamodules.fictitious import FictitiousBenchmark
from lit_unlearn.evaluation import SuiteResult, TeacherForcedMetrics, diagnostics, teacher_forced_stats
from lit_unlearn.evaluation.summary import format_summary, targets, write_results
from lit_unlearn.models import load_causal_lm


# ------------------------------------------------------------------ the checks, one by one
def test_truth_ratio_degenerate_fires_with_its_numbers_and_not_on_a_healthy_set():
    ratios = [1.5, 2.0, 3.0, 1.2, 0.5]  # 4 of 5 rows: the wrong answers are likelier
    (msg,) = diagnostics.truth_ratio_degenerate(ratios, "retain")
    assert msg.startswith("retain/truth_ratio:")
    assert "4 of 5 rows (80%" in msg and "median truth ratio 1.500" in msg
    assert "is 0.1000" in msg  # mean of max(0, 1 - TR): only the last row counts, (1 - 0.5) / 5
    assert "paraphrase with a wrong value" in msg  # what to do
    assert diagnostics.truth_ratio_degenerate(torch.tensor([0.2, 0.5, 1.5, 0.9]), "retain") == []
    assert diagnostics.truth_ratio_degenerate([0.5, 1.5], "retain") == []  # half is not most
    (opt,) = diagnostics.truth_ratio_degenerate([2.0, 3.0], "world_facts", options=True)
    assert "than the answer on 2 of 2 rows" in opt and "utility_sets" in opt


def test_harmonic_mean_zero_names_the_zero_term():
    parts = {"retain/prob": 0.41, "retain/rougeL_recall": 0.62, "retain/truth_ratio": 0.0}
    (msg,) = diagnostics.harmonic_mean_zero(parts, "model_utility")
    assert msg.startswith("model_utility: 0 because retain/truth_ratio is 0")
    assert "retain/prob 0.4100" in msg and "retain/rougeL_recall 0.6200" in msg
    assert diagnostics.harmonic_mean_zero({"retain/prob": 0.41, "retain/truth_ratio": 0.01}) == []
    (two,) = diagnostics.harmonic_mean_zero({"forget_quality": 0.0, "model_utility": 0.0}, "score")
    assert "forget_quality, model_utility are 0" in two


def test_forget_quality_small_counts_both_sides():
    (msg,) = diagnostics.forget_quality_small(20, 40)
    assert "only 20 forget truth ratios (gold retain model: 40), fewer than 30" in msg
    assert diagnostics.forget_quality_small(12)[0].count("12") == 1
    assert diagnostics.forget_quality_small(40, 30) == []


def test_gold_mia_far_lists_the_attacks_outside_the_interval():
    (msg,) = diagnostics.gold_mia_far({"loss": 0.21, "min_k": 0.55, "zlib": 0.83})
    assert "0.210 (loss), 0.830 (zlib)" in msg and "min_k" not in msg and "[0.4, 0.6]" in msg
    assert "differ in distribution" in msg
    assert diagnostics.gold_mia_far({"loss": 0.45, "min_k": 0.6}) == []
    assert "0.700 (auc)" in diagnostics.gold_mia_far(0.7)[0]


def test_start_forget_quality_high():
    (msg,) = diagnostics.start_forget_quality_high(0.095 * 2)
    assert msg.startswith("forget_quality: the starting model already scores 0.19 ") and "above 0.1" in msg
    assert diagnostics.start_forget_quality_high(1e-5) == []
    assert diagnostics.start_model_checks({"forget_quality": 0.36})
    assert diagnostics.start_model_checks({"model_utility": 0.5}) == []


def test_emit_logs_each_kind_once(caplog):
    seen: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="lit_unlearn"):
        diagnostics.emit(diagnostics.forget_quality_small(20, 20), seen)
        diagnostics.emit(diagnostics.forget_quality_small(21, 21), seen)  # the same check, other numbers
        diagnostics.emit(diagnostics.gold_mia_far(0.8), seen, prefix="gold retain model's evaluation: ")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "only 20 forget truth ratios" in lines[0]
    assert lines[1].startswith("lit-unlearn warning: gold retain model's evaluation: privleak:")


# ------------------------------------------------------------------ answer_em
def test_answer_em_by_hand():
    # vocab 5, 3 answers; answer tokens (labels != -100) are predicted from the previous position
    labels = torch.tensor([[-100, 2, 3, 4], [-100, -100, 1, 1], [-100, 3, 3, 0]])
    predicted = [[2, 3, 4, 0],   # next tokens 2, 3, 4: all right
                 [0, 1, 1, 0],   # 1, 1: all right
                 [3, 3, 1, 0]]   # 3, 3, then 1 for label 0: 2 of 3 tokens right
    logits = torch.zeros(3, 4, 5)
    for b, row in enumerate(predicted):
        for t, k in enumerate(row):
            logits[b, t, k] = 3.0
    s = teacher_forced_stats(logits, labels)
    assert s["answer_correct"].tolist() == [True, True, False]
    m = TeacherForcedMetrics()
    m.update(logits[:2], labels[:2])
    m.update(logits[2:], labels[2:])  # sums: the same in any split
    out = m.compute()
    assert set(out) == {"nll", "prob", "token_acc", "answer_em"}
    assert out["answer_em"].item() == pytest.approx(2 / 3)
    assert out["token_acc"].item() == pytest.approx(7 / 8)  # token accuracy forgives the wrong value
    # an answer with no scored token (cut off by max_length) does not count
    m.update(logits[:1], torch.full((1, 4), -100))
    assert m.compute()["answer_em"].item() == pytest.approx(2 / 3)


def test_summary_targets_prefer_fact_acc_then_answer_em():
    start = {"forget/token_acc": 0.95, "forget/answer_em": 0.9, "retain/token_acc": 0.95, "retain/answer_em": 0.8}
    end = {"forget/token_acc": 0.91, "forget/answer_em": 0.05, "retain/token_acc": 0.93, "retain/answer_em": 0.6}
    gold = {"forget/token_acc": 0.91, "forget/answer_em": 0.0, "retain/token_acc": 0.94, "retain/answer_em": 0.7}
    lines = targets({"start": start, "end": end, "gold": gold})
    assert lines == ["forget/answer_em: 0.050 vs gold retain model 0.000 (gap +0.050)",
                     "retain/answer_em: 0.600 = 75.0% of the start model's 0.800"]
    with_facts = {k: {**v, "forget/fact_acc": 0.5, "retain/fact_acc": 1.0} for k, v in
                  {"start": start, "end": end, "gold": gold}.items()}
    assert targets(with_facts)[0].startswith("forget/fact_acc:")
    old = {k: {m: x for m, x in v.items() if "answer_em" not in m} for k, v in
           {"start": start, "end": end, "gold": gold}.items()}  # columns saved before answer_em
    assert targets(old)[0].startswith("forget/token_acc:")


# ------------------------------------------------------------------ in the suite and its files
def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.fixture(scope="module")
def crafted_data(tmp_path_factory, tiny_subject, tiny_tokenizer_dir):
    """The tiny benchmark's questions; the retain set degenerate: its 'paraphrase' is the answer's
    words reversed and its 'perturbed' answer the trained answer itself, so every truth ratio is > 1."""
    bench = FictitiousBenchmark("tiny")
    d = tmp_path_factory.mktemp("crafted")
    full = ("question", "answer", "paraphrased_answer", "perturbed_answer")
    pick = lambda rows: [{k: r[k] for k in full} for r in rows]  # noqa: E731
    retain = bench.records("retain90")
    write_jsonl(d / "forget.json", pick(bench.records("forget10")[:8]))
    write_jsonl(d / "holdout.json", pick(bench.records("holdout")[:8]))
    write_jsonl(d / "good.json", pick(retain[8:16]))
    write_jsonl(d / "retain.json", [{"question": r["question"], "answer": r["answer"],
                                     "paraphrased_answer": " ".join(reversed(r["answer"].split())),
                                     "perturbed_answer": [r["answer"]]} for r in retain[:8]])
    dm = ForgetRetainDataModule(forget=str(d / "forget.json"), retain=str(d / "good.json"),
                                tokenizer=tiny_tokenizer_dir,
                                eval_sets={s: str(d / f"{s}.json") for s in ("forget", "retain", "good", "holdout")},
                                prompt_template="Question: {question}\nAnswer:", max_length=64)
    dm.setup()
    return dm


def test_tofu_suite_warns_on_a_degenerate_retain_set(crafted_data, tiny_subject, tmp_path, caplog):
    suite = TOFUSuite(utility_sets=["good"], max_new_tokens=4, progress=False, batch_size=8)
    with caplog.at_level(logging.WARNING, logger="lit_unlearn"):
        result = suite.run(load_causal_lm(tiny_subject), crafted_data.tokenizer, crafted_data, "val")
    warnings = list(result.stats["warnings"])
    assert result.metrics["retain/truth_ratio"] == 0.0 and result.metrics["model_utility"] == 0.0
    (tr,) = [w for w in warnings if "/truth_ratio:" in w]
    assert tr.startswith("retain/truth_ratio: the wrong answers are more likely than the paraphrased answer on "
                         "8 of 8 rows (100%")
    assert not any(w.startswith("good/") for w in warnings)  # the real paraphrases: healthy
    assert result.metrics["good/truth_ratio"] > 0.2
    (mu,) = [w for w in warnings if w.startswith("model_utility:")]
    assert "because retain/truth_ratio is 0" in mu and "good/truth_ratio" in mu
    assert [r.getMessage() for r in caplog.records] == [f"lit-unlearn warning: {w}" for w in warnings]

    # compare (the gold model's statistics): too few truth ratios, the gold model's MIA AUC far from 0.5
    reference = {"forget_truth_ratios": result.stats["forget_truth_ratios"], "mia_auc": {"loss": 0.2, "min_k": 0.5}}
    out = suite.compare(result, reference)
    assert out["forget_quality"] == 1.0 and out["score"] == 0.0
    added = result.stats["warnings"][len(warnings):]
    assert [w.split(":")[0] for w in added] == ["forget_quality", "score", "privleak"]
    assert "only 8 forget truth ratios (gold retain model: 8)" in added[0]
    assert "0.200 (loss)" in added[2]

    # results.md: a Warnings section; results.json keeps them; the printed summary lists them
    write_results(tmp_path, result.metrics, result.stats, "subject", "TOFUSuite")
    md = (tmp_path / "results.md").read_text()
    assert "\n## Warnings\n\n- retain/truth_ratio: the wrong answers" in md
    assert md.count("\n- ") == len(result.stats["warnings"])
    assert json.loads((tmp_path / "results.json").read_text())["stats"]["warnings"] == result.stats["warnings"]
    printed = format_summary({"test": result.metrics}, "test", warnings=result.stats["warnings"])
    assert printed.splitlines()[-len(result.stats["warnings"]):] == [f"warning: {w}" for w in result.stats["warnings"]]


def test_results_md_without_warnings_has_no_section(tmp_path):
    write_results(tmp_path, {"model_utility": 0.5}, SuiteResult({}, {"warnings": []}).stats, "m", "TOFUSuite")
    assert "Warnings" not in (tmp_path / "results.md").read_text()
