"""Suites end to end: on the tiny benchmark, on files in the TOFU and MUSE schemas, through the CLI."""

import json
import re
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_unlearn import FictitiousPeople, TOFUSuite
from lit_unlearn.cli import cli_main
from lit_unlearn.datamodules.fictitious import FictitiousBenchmark
from lit_unlearn.evaluation import greedy_generate
from lit_unlearn.models import load_causal_lm
from tests.helpers import ROOT, TINY, lit_unlearn, method_config, requires_ddp

NPO = method_config("npo")
TOFU_SUITE = str(ROOT / "configs/eval/tofu_suite.yaml")


@pytest.fixture(scope="module")
def tiny_data(tiny_subject):
    dm = FictitiousPeople("tiny")
    dm.setup()
    return dm


def test_tofu_suite_separates_subject_from_gold(tiny_subject, tiny_gold, tiny_data):
    suite = TOFUSuite(gold_model=tiny_gold, extra_sets=["neighbor"], max_new_tokens=24, progress=False)
    subject = suite.run(load_causal_lm(tiny_subject), tiny_data.tokenizer, tiny_data, "val").metrics
    gold = suite.run(load_causal_lm(tiny_gold), tiny_data.tokenizer, tiny_data, "val").metrics
    assert subject["forget_quality"] < 0.01
    assert gold["forget_quality"] == 1.0 and gold["privleak"] == 0.0
    assert subject["mia/loss"] > 0.9 and subject["mia/min_k_pp"] > 0.9 and subject["privleak"] < -50
    # The gold model never saw the forget people: no attack finds them members (tiny preset: 0.10-0.21,
    # below 0.5 because its holdout people recur in the retain data as mentors).
    assert all(gold[f"mia/{attack}"] < 0.5 for attack in ("loss", "zlib", "min_k", "min_k_pp"))
    assert subject["forget/fact_acc"] >= 0.95 and gold["forget/fact_acc"] <= 0.2
    assert subject["forget/rougeL_recall"] > gold["forget/rougeL_recall"]
    assert subject["forget/truth_ratio"] < gold["forget/truth_ratio"]  # min(TR, 1/TR): subject far from 1
    assert 0 < subject["model_utility"] <= 1 and 0 < subject["score"] < 0.01
    for name in ("forget", "retain", "holdout", "neighbor"):
        for metric in ("prob", "rougeL_recall", "rougeL_f1", "exact_mem", "extraction_strength"):
            assert f"{name}/{metric}" in subject


def test_batched_greedy_generation_equals_one_at_a_time(tiny_subject, tiny_data):
    model = load_causal_lm(tiny_subject).eval()
    tok = tiny_data.tokenizer
    data = tiny_data.eval_encoded["retain"]
    prompts = [data[i][0][: int((data[i][1] != -100).nonzero()[0])] for i in (0, 11, 23, 35)]
    assert len({len(p) for p in prompts}) > 1  # left padding is exercised
    batched = greedy_generate(model, prompts, tok.pad_token_id, tok.eos_token_id, 24)
    single = [greedy_generate(model, [p], tok.pad_token_id, tok.eos_token_id, 24)[0] for p in prompts]
    assert batched == single
    # the subject model answers a known fact with one of its two trained phrasings
    rec = tiny_data.eval_records["retain"].rows[0]
    assert tok.decode(batched[0]).strip() in (rec["answer"], rec["paraphrased_answer"])


def run_test(*args, save_dir):
    return cli_main(["test", *args, f"--trainer.logger.init_args.save_dir={save_dir}",
                     "--trainer.enable_progress_bar=false"])


def test_cli_test_writes_results_usable_as_gold_stats(tmp_path, tiny_subject, tiny_gold):
    gold_run = run_test("--config", NPO, "--config", TINY, "--config", TOFU_SUITE,
                        "--model.init_args.model=builtin:tiny/retain90", save_dir=tmp_path / "gold")
    gold_results = Path(gold_run.trainer.log_dir) / "results.json"
    payload = json.loads(gold_results.read_text())
    assert payload["metrics"]["forget_quality"] == 1.0
    assert len(payload["stats"]["forget_truth_ratios"]) == 20
    assert set(payload["stats"]["mia_auc"]) >= {"loss", "min_k", "min_k_pp"}
    md = (Path(gold_run.trainer.log_dir) / "results.md").read_text()
    assert "| forget_quality | 1.0000 |" in md
    by_model = run_test("--config", NPO, "--config", TINY, "--config", TOFU_SUITE, save_dir=tmp_path / "a")
    by_file = run_test("--config", NPO, "--config", TINY, "--config", TOFU_SUITE, "--model.init_args.compare_with=null",
                       f"--model.init_args.suite.init_args.gold_stats={gold_results}", save_dir=tmp_path / "b")
    a, b = by_model.model.summary["test"], by_file.model.summary["test"]
    assert a["forget_quality"] == pytest.approx(b["forget_quality"]) and a["forget_quality"] < 0.01
    assert a["privleak"] == pytest.approx(b["privleak"])


def write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_tofu_schema_files_with_multiple_choice_sets(tmp_path, tiny_subject, monkeypatch):
    bench = FictitiousBenchmark("tiny")
    d = tmp_path / "data" / "TOFU"
    qa, full = ("question", "answer"), ("question", "answer", "paraphrased_answer", "perturbed_answer")
    pick = lambda rows, keys: [{k: r[k] for k in keys} for r in rows]  # noqa: E731
    write_jsonl(d / "forget10.json", pick(bench.records("forget10"), qa))
    write_jsonl(d / "retain90.json", pick(bench.records("retain90"), qa))
    write_jsonl(d / "forget10_perturbed.json", pick(bench.records("forget10"), full))
    write_jsonl(d / "retain_perturbed.json", pick(bench.records("retain90")[:20], full))
    write_jsonl(d / "holdout10.json", pick(bench.records("holdout"), qa))
    mc = [{"question": r["question"], "answer": r["answer"], "perturbed_answer": r["perturbed_answer"]}
          for r in bench.records("retain90")[20:32]]
    write_jsonl(d / "real_authors_perturbed.json", mc[:6])
    write_jsonl(d / "world_facts_perturbed.json", mc[6:])
    monkeypatch.chdir(tmp_path)
    cli = run_test("--config", NPO, "--config", str(ROOT / "configs/data/tofu_local.yaml"), "--config",
                   str(ROOT / "configs/eval/tofu_files.yaml"), f"--model.init_args.model={tiny_subject}",
                   "--model.init_args.compare_with=null",
                   "--model.init_args.suite.init_args.max_new_tokens=24", save_dir=tmp_path / "runs")
    m = cli.model.summary["test"]
    for key in ("forget/truth_ratio", "retain/truth_ratio", "real_authors/prob", "world_facts/truth_ratio",
                "mia/min_k_pp", "model_utility"):
        assert key in m, key
    assert "forget_quality" not in m  # no gold model or statistics given
    assert 0 < m["real_authors/prob"] <= 1
    assert m["model_utility"] > 0


def test_muse_schema_files(tmp_path, tiny_subject, tiny_gold, monkeypatch):
    bench = FictitiousBenchmark("tiny")
    d = tmp_path / "data" / "MUSE"
    forget, retain, holdout = bench.records("forget10"), bench.records("retain90"), bench.records("holdout")
    write_jsonl(d / "raw/forget.json", [{"text": r["answer"]} for r in forget])
    write_jsonl(d / "raw/retain1.json", [{"text": r["answer"]} for r in retain])
    # verbatim memorization: continue the forget answer from just before its fact
    write_jsonl(d / "verbmem/forget.json", [
        {"prompt": f"Question: {r['question']}\nAnswer: {r['answer'][: r['fact_span'][0]].strip()}",
         "gt": r["value"] + "."}
        for r in forget])
    write_jsonl(d / "knowmem/forget_qa.json", [{"question": r["question"], "answer": r["answer"]} for r in forget])
    write_jsonl(d / "knowmem/retain_qa.json", [{"question": r["question"], "answer": r["answer"]} for r in retain[:10]])
    as_text = lambda r: {"text": f"Question: {r['question']}\nAnswer: {r['answer']}"}  # noqa: E731
    write_jsonl(d / "privleak/forget.json", [as_text(r) for r in forget])
    write_jsonl(d / "privleak/holdout.json", [as_text(r) for r in holdout])
    monkeypatch.chdir(tmp_path)
    cli = run_test("--config", NPO, "--config", str(ROOT / "configs/data/muse_local.yaml"), "--config",
                   str(ROOT / "configs/eval/muse_suite.yaml"), f"--model.init_args.model={tiny_subject}",
                   "--model.init_args.compare_with=null",
                   f"--model.init_args.suite.init_args.gold_model={tiny_gold}", "--data.init_args.max_length=64",
                   "--model.init_args.suite.init_args.max_new_tokens=16", save_dir=tmp_path / "runs")
    m = cli.model.summary["test"]
    assert m["verbmem_forget/rougeL_f1"] > 0.5  # the subject continues its forget sentences
    assert {"knowmem_forget/rougeL_f1", "knowmem_retain/rougeL_f1", "mia/min_k_pp", "privleak"} <= set(m)
    # The tiny model never trained on these texts' question tokens, so whole-text MIA is weak
    # here; the forget texts still score as members more often than the holdout texts.
    assert m["mia/loss"] > 0.5 and m["privleak"] < 0


def test_suite_evaluation_callback_feeds_checkpointing(tmp_path, tiny_subject, tiny_gold):
    callbacks = tmp_path / "callbacks.yaml"
    callbacks.write_text(f"""
trainer:
  callbacks:
    - class_path: lit_unlearn.SuiteEvaluation
      init_args: {{every_n_steps: 2}}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{monitor: suite/forget_quality, mode: max, every_n_train_steps: 2, dirpath: {tmp_path / 'ckpt'}}}
    - class_path: lit_unlearn.TradeOffCurves
""")
    cli = cli_main(["fit", "--config", str(ROOT / "configs/methods/grad_ascent.yaml"), "--config", TINY,
                    "--config", TOFU_SUITE, "--config", str(callbacks), "--trainer.max_steps=4",
                    "--model.init_args.optimizer.init_args.lr=1e-3", "--trainer.enable_progress_bar=false",
                    f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"])
    acc = EventAccumulator(cli.trainer.log_dir)
    acc.Reload()
    steps = [e.step for e in acc.Scalars("suite/forget_quality")]
    assert steps == [0, 2, 4]
    forget_run = EventAccumulator(str(Path(cli.trainer.log_dir) / "forget"))  # a set's metrics: its own run
    forget_run.Reload()
    assert forget_run.Scalars("suite/fact_acc")[0].value >= 0.95
    # 4 small steps leave every fact's argmax in place but lower the forget answers' probability
    prob = [e.value for e in forget_run.Scalars("suite/prob")]
    assert prob[-1] < prob[1] < prob[0]
    ckpt = cli.trainer.checkpoint_callback
    assert ckpt.best_model_path and float(ckpt.best_model_score) == pytest.approx(
        max(e.value for e in acc.Scalars("suite/forget_quality")[1:]), rel=1e-5)
    # TradeOffCurves' layout has the suite's charts, and each has data in the run or a set's run
    layout = [t for t in acc.Tags()["tensors"] if "custom_scalars" in t]
    assert layout
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.util import tensor_util

    proto = layout_pb2.Layout.FromString(tensor_util.make_ndarray(acc.Tensors(layout[0])[0].tensor_proto).item())
    tags = [chart.multiline.tag[0] for category in proto.category for chart in category.chart]
    assert "^suite/forget_quality$" in tags and "^suite/rougeL_recall$" in tags and "^eval/fact_acc$" in tags
    logged = set(acc.Tags()["scalars"]) | set(forget_run.Tags()["scalars"])
    assert [tag for tag in tags if not any(re.fullmatch(tag.strip("^$"), t) for t in logged)] == []


@requires_ddp
def test_ddp_sharded_suite_equals_single_process(tmp_path, tiny_subject, tiny_gold):
    base = ["test", "--config", NPO, "--config", TINY, "--config", TOFU_SUITE, "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false"]
    results = {}
    for devices in (1, 2):
        save = tmp_path / f"d{devices}"
        extra = ["--trainer.strategy=ddp", "--trainer.devices=2"] if devices == 2 else ["--trainer.devices=1"]
        lit_unlearn(base + extra + [f"--trainer.logger.init_args.save_dir={save}"], cwd=tmp_path)
        results[devices] = json.loads(next(save.rglob("results.json")).read_text())["metrics"]
    one, two = results[1], results[2]
    assert one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key


def test_shared_prompt_scoring_equals_full_passes(tiny_subject, tiny_gold, tiny_data):
    model = load_causal_lm(tiny_subject)
    kw = dict(gold_model=tiny_gold, extra_sets=["neighbor"], max_new_tokens=24, progress=False, batch_size=16)
    shared = TOFUSuite(share_prompts=True, **kw).run(model, tiny_data.tokenizer, tiny_data, "val").metrics
    full = TOFUSuite(share_prompts=False, **kw).run(model, tiny_data.tokenizer, tiny_data, "val").metrics
    assert shared.keys() == full.keys()
    for key in shared:
        assert shared[key] == pytest.approx(full[key], rel=1e-4, abs=1e-6), key
    # and both agree with the module's plain right-padded teacher-forced metrics
    from lightning.pytorch import Trainer

    from lit_unlearn import GradAscent

    module = GradAscent(model=tiny_subject)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, tiny_data, verbose=False)
    tf = module.trainer.callback_metrics
    assert shared["forget/fact_acc"] == pytest.approx(float(tf["forget/fact_acc"]))
    assert shared["retain/prob"] == pytest.approx(float(tf["retain/prob"]), rel=1e-4)


def test_cli_test_on_a_lightning_checkpoint(tmp_path, tiny_subject, tiny_gold):
    fitted = cli_main(["fit", "--config", str(ROOT / "configs/methods/grad_ascent.yaml"), "--config", TINY,
                       "--trainer.max_steps=3", "--model.init_args.optimizer.init_args.lr=1e-3",
                       "--trainer.enable_progress_bar=false",
                       f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
                       f"--trainer.default_root_dir={tmp_path}"])
    ckpt = fitted.trainer.checkpoint_callback.best_model_path or fitted.trainer.checkpoint_callback.last_model_path
    assert ckpt and Path(ckpt).exists()
    tested = run_test("--config", str(ROOT / "configs/methods/grad_ascent.yaml"), "--config", TINY,
                      "--config", TOFU_SUITE, f"--ckpt_path={ckpt}", save_dir=tmp_path / "test")
    m = tested.model.summary["test"]
    assert m["forget/nll"] == pytest.approx(fitted.model.summary["end"]["forget/nll"], rel=1e-4)
    assert m["forget_quality"] > 0 and "start" in tested.model.summary  # the start column came with the checkpoint
