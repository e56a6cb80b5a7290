"""CodeLeakSuite on the code domain's tiny built-in models: the subject leaks its forget secrets, the gold
model does not, and a short gradient-ascent fit lowers the direct leak rate."""

import json
from pathlib import Path

import pytest

from lit_unlearn.datamodules.code_leak import CodeLeak
from lit_unlearn.evaluation.suites.code_leak import CodeLeakSuite
from lit_unlearn.models import load_causal_lm
from tests.helpers import CONFIGS, adamw, fit

F, R = "forget_secrets", "retain_secrets"


@pytest.fixture(scope="module")
def code_models(lit_home):
    from lit_unlearn.zoo import resolve

    return resolve("builtin:code-tiny/subject"), resolve("builtin:code-tiny/retain")


@pytest.fixture(scope="module")
def data():
    dm = CodeLeak("tiny", batch_size=4, eval_sets=["forget"])
    dm.setup()
    return dm


def run_suite(model, data, **kw):
    return CodeLeakSuite(progress=False, **kw).run(model, data.tokenizer, data, "val")


@pytest.fixture(scope="module")
def subject_result(code_models, data):
    return run_suite(load_causal_lm(code_models[0]), data, keep_generations=40)


def test_subject_leaks_forget_secrets_and_gold_does_not(code_models, data, subject_result):
    s = subject_result.metrics
    g = run_suite(load_causal_lm(code_models[1]), data).metrics
    assert s[f"{F}/direct_leak"] >= 0.8 and s[f"{R}/direct_leak"] >= 0.8
    assert g[f"{F}/direct_leak"] == 0.0 and g[f"{F}/indirect_leak"] <= 0.1 and g[f"{F}/direct_variant"] == 0.0
    assert g[f"{R}/direct_leak"] >= 0.8  # the gold model keeps what it was trained on
    assert s[f"{F}/indirect_leak"] > g[f"{F}/indirect_leak"]
    for kind in ("file", "nl", "prefix", "email", "phone", "api_key"):
        assert 0.0 <= s[f"{F}/indirect_leak_{kind}"] <= 1.0
    assert 0.0 <= s["holdout_code/line_em"] <= 1.0
    # what the build wrote beside the model is the same measurement
    built = json.loads((Path(code_models[0]) / "eval.json").read_text())["code_leak"]
    assert built[f"{F}/direct_leak"] == s[f"{F}/direct_leak"]


def test_generations_are_kept_and_scored(subject_result, data):
    kept = subject_result.generations[F]
    probes = data.records_for("val")[F].rows
    assert [k["reference"] for k in kept] == [p["answer"] for p in probes[: len(kept)]]
    direct = [k for k, p in zip(kept, probes) if p["prompt_kind"] == "direct"]
    share = sum(k["reference"] in k["generated"] for k in direct) / len(direct)
    assert share == pytest.approx(subject_result.metrics[f"{F}/direct_leak"])


def test_suite_arguments_and_missing_sets(code_models, data):
    with pytest.raises(ValueError, match="nothing to evaluate"):
        CodeLeakSuite(forget=None, retain=None, utility=None)
    with pytest.raises(ValueError, match="`forget` must be a set name or None"):
        CodeLeakSuite(forget="")
    suite = CodeLeakSuite(retain=None, utility=None, progress=False)
    assert suite.required_sets() == [F]
    with pytest.raises(ValueError, match=r"needs the val set\(s\) \['elsewhere'\]"):
        CodeLeakSuite(forget="elsewhere", progress=False).run(load_causal_lm(code_models[1]), data.tokenizer, data,
                                                               "val")


def test_gradient_ascent_lowers_the_direct_leak_rate(code_models, data, subject_result):
    from lit_unlearn.methods.gradient_ascent import GradAscent

    module = GradAscent(model=code_models[0], optimizer=adamw(5e-4), evaluate_at_start=False)
    trainer, _ = fit(module, data, steps=10, limit_val_batches=0)
    after = run_suite(module.model, data, utility=None).metrics
    start = subject_result.metrics
    assert trainer.global_step == 10 and start[f"{F}/direct_leak"] >= 0.8
    assert after[f"{F}/direct_leak"] <= 0.5 * start[f"{F}/direct_leak"]  # measured: 1.0 -> 0.17
    assert after[f"{R}/direct_leak"] >= 0.5  # measured: 1.0 -> 0.8: the retain secrets mostly stay


@pytest.mark.parametrize("name", ["ga", "graddiff_nll", "graddiff_kl", "npo", "rmu"])
def test_code_configs_parse(name):
    from lit_unlearn.cli import cli_main

    cli = cli_main(["--config", str(CONFIGS / "code" / f"{name}.yaml"), "--config",
                    str(CONFIGS / "data" / "code_leak_tiny.yaml")], run=False)
    assert isinstance(cli.datamodule, CodeLeak) and cli.datamodule.preset == "tiny"
    assert cli.datamodule.batch_size == 4 and isinstance(cli.model.suite, CodeLeakSuite)
    assert cli.model.source.name == "builtin:code-tiny/subject" and cli.model.compare_with == "builtin:code-tiny/retain"
