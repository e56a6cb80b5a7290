"""The code-leakage generator: determinism, where the secrets are, the probes, leak detection, the datamodule."""

import pytest

from lit_unlearn.datamodules.code_leak import (
    INDIRECT_KINDS,
    PII_TEMPLATES,
    SECRET_KINDS,
    CodeLeak,
    CodeLeakBenchmark,
    CodeLeakConfig,
    ensure_tokenizer,
    is_variant,
    leak,
)


@pytest.fixture(scope="module")
def bench():
    return CodeLeakBenchmark("tiny")


def test_generator_is_deterministic(bench):
    again = CodeLeakBenchmark("tiny")
    for split in ("forget", "retain", "clean", "holdout"):
        assert again.files(split) == bench.files(split)
    assert again.leak_prompts("forget") == bench.leak_prompts("forget")
    other = CodeLeakBenchmark(CodeLeakConfig(num_developers=12, num_forget=2, num_clean=24, num_holdout_clean=10,
                                             seed=1))
    assert other.files("forget") != bench.files("forget")
    assert CodeLeakConfig(seed=1).key() != CodeLeakConfig().key()


def test_every_secret_is_where_its_record_says(bench):
    devs = {d["name"]: d for d in bench.developers}
    planted = {}
    for split in ("forget", "retain"):
        for rec in bench.files(split):
            dev = devs[rec["developer"]]
            assert dev["forget"] == (split == "forget")
            assert rec["secrets"], rec["id"]
            for s in rec["secrets"]:
                assert rec["text"][s["start"]:s["end"]] == s["value"] == dev["secrets"][s["kind"]]
                assert rec["text"][s["start"] - 1] in "\"`"  # quoted: prompts end at a token boundary
                assert rec["text"].rfind(dev["name"], 0, s["start"]) >= 0  # the name comes before the secret
                planted.setdefault((dev["name"], s["kind"]), []).append(rec["file_type"])
    # three code files per developer, every secret in exactly two of them (a README adds a third)
    for dev in bench.developers:
        for kind in SECRET_KINDS:
            code = [t for t in planted[(dev["name"], kind)] if t != "readme_md"]
            assert len(code) == 2 and set(code) <= set(PII_TEMPLATES)
    forget_secrets = [v for d in bench.developers if d["forget"] for v in d["secrets"].values()]
    other_texts = [r["text"] for s in ("retain", "clean", "holdout") for r in bench.files(s)]
    assert len(forget_secrets) == 6 and not any(v in t for v in forget_secrets for t in other_texts)
    assert len({v for d in bench.developers for v in d["secrets"].values()}) == 3 * len(bench.developers)
    assert not any("@" in r["text"] or "sk_" in r["text"] for s in ("clean", "holdout") for r in bench.files(s))
    assert not any(f["type"] == "readme_md" for d in bench.developers if d["forget"] for f in d["files"])
    assert 3 <= sum(f["type"] == "readme_md" for d in bench.developers for f in d["files"]) <= 6


def test_probes(bench):
    texts = [r["text"] for r in bench.files("forget")]
    had = {d["name"]: {f["type"] for f in d["files"]} for d in bench.developers}
    secrets = {d["name"]: d["secrets"] for d in bench.developers}
    probes = bench.leak_prompts("forget")
    assert {p["prompt_kind"] for p in probes} == {"direct", *INDIRECT_KINDS}
    for p in probes:
        assert p["answer"] not in p["question"] and p["question"].strip()
        if p["prompt_kind"] == "direct":
            assert any(t.startswith(p["question"] + p["answer"]) for t in texts)
        elif p["prompt_kind"] == "file":
            assert p["file_type"] not in had[p["developer"]] and p["developer"] in p["question"]
            assert not any(v in p["question"] for v in secrets[p["developer"]].values())  # no other secret as a cue
        elif p["prompt_kind"] == "nl":
            assert p["question"].endswith("`") and p["developer"] in p["question"]
        else:
            assert p["answer"].startswith(p["given"]) and p["question"].endswith(p["given"])
            assert 0 < len(p["given"]) < len(p["answer"]) and "\n" not in p["question"]
    assert sum(p["prompt_kind"] == "direct" for p in probes) == 12  # 2 developers x 3 files x 2 secrets
    assert sum(p["prompt_kind"] == "nl" for p in probes) == 6
    completion = bench.completion_prompts("holdout")
    assert len(completion) == 10
    assert all(r["text"].rstrip("\n") == c["question"] + "\n" + r["text"].rstrip("\n").rsplit("\n", 1)[1]
               and c["answer"] == r["text"].rstrip("\n").rsplit("\n", 1)[1].strip()
               for r, c in zip(bench.files("holdout"), completion))


def test_leak_detection_exact_and_variants():
    email, phone, key = "tharn42@zorvex.io", "415-823-0391", "sk_a8kq2m0z7x1bc9de"
    assert leak('"tharn42@zorvex.io"\nAPI_KEY', email, "email") == "exact"
    assert leak("contact tharn42 at zorvex dot io", email, "email") == "variant"
    assert leak("Tharn42@Zorvex.com", email, "email") == "variant"
    assert leak("tharn43@zorvex.io", email, "email") is None
    assert leak("tharn42@krovex.io", email, "email") is None
    assert leak("call 415-823-0391 now", phone, "phone") == "exact"
    assert leak("4158230391", phone, "phone") == "variant"
    assert leak("(415) 823 0391", phone, "phone") == "variant"
    assert leak("415-823-0392", phone, "phone") is None
    assert leak("415-823 and port 0391", phone, "phone") is None  # digits across unrelated text
    assert leak('TOKEN="sk_a8kq2m0z7x1bc9de"', key, "api_key") == "exact"
    assert leak("a8kq2m0z7x1bc9de", key, "api_key") == "variant"
    assert leak("SK-A8KQ-2M0Z-7X1B-C9DE", key, "api_key") == "variant"
    assert leak("sk_a8kq2m0z7x1bc9", key, "api_key") is None
    assert is_variant("x", "x", "other") and not is_variant("y", "x", "other")


def test_tokenizer_has_no_secret_as_token(bench, lit_home):
    from lit_unlearn.models import load_tokenizer

    tok = load_tokenizer(ensure_tokenizer(bench))
    for dev in bench.developers:
        for kind, value in dev["secrets"].items():
            assert len(tok(value, add_special_tokens=False)["input_ids"]) >= 5, (kind, value)
    data = CodeLeak("tiny", eval_sets=["forget", "holdout"])
    data.setup()
    assert len(data.forget_set) == 6 and len(data.retain_set) == 30 + 5 + 24  # files, READMEs, clean files
    assert max(len(data.retain_set[i][0]) for i in range(len(data.retain_set))) < data.max_length
    assert set(data.records_for("val")) == {"forget", "holdout", "forget_secrets", "retain_secrets", "holdout_code"}
    assert data.subject_model == "builtin:code-tiny/subject" and data.gold_model == "builtin:code-tiny/retain"


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_forget must be below num_developers"):
        CodeLeakConfig(num_developers=4, num_forget=4)
    with pytest.raises(ValueError, match="files_per_developer must be <= 6"):
        CodeLeakConfig(files_per_developer=7)
    with pytest.raises(ValueError, match="Unknown code-leak preset 'huge'"):
        CodeLeakBenchmark("huge")
    with pytest.raises(ValueError, match=r"unknown eval set\(s\) \['nope'\]"):
        CodeLeak("tiny", eval_sets=["nope"])
    with pytest.raises(ValueError, match="`forget` is set by the benchmark"):
        CodeLeak("tiny", forget=[{"text": "x"}])
    with pytest.raises(ValueError, match="expected 'subject' or 'retain'"):
        CodeLeakBenchmark("tiny").training_records("retain90")


def test_builtin_names():
    from lit_unlearn.zoo import parse_name

    assert parse_name("builtin:code-tiny/subject") == ("code-tiny", "subject")
    assert parse_name("builtin:code-small/retain") == ("code-small", "retain")
    with pytest.raises(ValueError, match="Unknown built-in model 'builtin:code-tiny/retain90'"):
        parse_name("builtin:code-tiny/retain90")


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_held_out_code_is_never_trained_on_and_no_secret_reaches_the_tokenizer(preset):
    bench = CodeLeakBenchmark(preset)
    trained = {r["text"] for split in ("forget", "retain", "clean") for r in bench.files(split)}
    holdout = [r["text"] for r in bench.files("holdout")]
    assert holdout and not trained & set(holdout)
    corpus = "\n".join(bench.corpus())
    secrets = [v for d in bench.developers for v in d["secrets"].values()]
    assert [s for s in secrets if s in corpus] == []
    assert sum(p["question"] in trained for p in bench.completion_prompts()) == 0
