"""Each metric against an independent re-implementation of the published evaluation code.

References (facts, re-implemented here in plain Python/numpy):
- TOFU ``locuslab/tofu`` ``evaluate_util.py::eval_rouge_recall`` and open-unlearning
  ``src/evals/metrics/utils.py::eval_text_similarity``: ``rouge_score`` ROUGE-L, Porter stemmer.
- MUSE ``swj0419/muse_bench`` ``metrics/logger.py``: ``rouge_score`` ROUGE-L F1, no stemmer;
  ``metrics/verbmem.py`` (reference cut to ``max_new_tokens`` tokens), ``metrics/knowmem.py``
  (answers cut at stop strings); ``metrics/privleak.py`` + ``eval.py`` (``Min-40%``,
  ``forget_holdout`` AUC, ``(auc - auc_retrain) / auc_retrain * 100``).
- open-unlearning ``src/evals/metrics/memorization.py`` (EM, ES loops),
  ``src/evals/metrics/utils.py`` (``tokenwise_logprobs``: last label dropped,
  ``evaluate_probability``: every label), ``src/evals/metrics/mia/`` (``min_k``,
  ``min_k_plus_plus``: ``max(1, int(n * k))`` tokens, variance clamped at 1e-6),
  ``src/evals/metrics/privacy.py::privleak``.
"""

import math
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lit_unlearn.datamodules.encoding import Fields, encode
from lit_unlearn.datamodules.sources import Records
from lit_unlearn.evaluation import (
    Evaluator,
    ExactMemorization,
    ExtractionStrength,
    MembershipInference,
    MUSESuite,
    RougeL,
    SuiteResult,
    TOFUSuite,
    exact_memorization,
    extraction_strength,
    mia_scores,
    privacy_leak,
    rouge_l,
    without_final_eos,
)
from lit_unlearn.evaluation import engine as engine_module
from lit_unlearn.evaluation.mia import lowest_k_count

EOS = 7


# ----------------------------------------------------------------------------- ROUGE
def test_rouge_stemming_by_hand():
    # stemmed: "run to the store" on both sides; unstemmed the LCS is "to the" (2 of 4 tokens)
    stemmed = rouge_l(["running to the stores"], ["runs to the store"])
    plain = rouge_l(["running to the stores"], ["runs to the store"], stemming=False)
    assert stemmed["recall"].item() == pytest.approx(1.0) and stemmed["f1"].item() == pytest.approx(1.0)
    assert plain["recall"].item() == pytest.approx(0.5) and plain["f1"].item() == pytest.approx(0.5)
    metric = RougeL()  # TOFU's scorer by default
    metric.update(["running to the stores", "completely different"], ["runs to the store", "the cat"])
    assert metric.compute()["recall"].item() == pytest.approx(0.5)
    assert RougeL(stemming=False).stemming is False


ROUGE_PAIRS = [
    ("The cats were running quickly to the stores.", "A cat runs quickly to the store"),
    ("agreed, generously; happily ponies caresses", "agreement generous happy pony caress"),
    ("Ünïcode naïve café — résumé İstanbul", "unicode naive cafe resume istanbul"),
    ("In the 1990s, 3.5% of e-mails weren't spam", "In 1990 3 5 percent of emails were not spam"),
    ("", "an empty prediction scores nothing"),
    ("ies ies dies flies", "ies die fly flies"),
    ("He was born in Paris, France, in 1972 and studied physics.", "Born in 1972 in Paris, he studied physics"),
]


@pytest.mark.parametrize("stemming", [True, False])
def test_rouge_matches_google_rouge_score(stemming):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer", reason="the reference (pip install rouge-score)")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=stemming)
    preds, targets = [p for p, _ in ROUGE_PAIRS], [t for _, t in ROUGE_PAIRS]
    ours = rouge_l(preds, targets, stemming=stemming)
    ref = [scorer.score(t, p)["rougeL"] for p, t in ROUGE_PAIRS]  # score(target, prediction)
    assert ours["recall"].tolist() == pytest.approx([s.recall for s in ref], abs=1e-6)
    assert ours["f1"].tolist() == pytest.approx([s.fmeasure for s in ref], abs=1e-6)
    # the pairs tell stemming apart (else this test could not fail on it)
    other = rouge_l(preds, targets, stemming=not stemming)
    assert other["recall"].tolist() != pytest.approx(ours["recall"].tolist(), abs=1e-6)


def test_suite_rouge_defaults_follow_the_published_code():
    assert TOFUSuite().stemming is True  # TOFU / open-unlearning: use_stemmer=True, recall (and F1)
    assert MUSESuite().stemming is False  # MUSE: use_stemmer=False, F1
    assert MUSESuite().knowmem_stop == ["\n\n", "\nQuestion", "Question:"]
    assert MUSESuite().max_new_tokens == 128 and MUSESuite().knowmem_max_new_tokens == 32


# ----------------------------------------------------------------------------- EOS
def test_without_final_eos():
    labels = torch.tensor([[-100, 3, 4, EOS, -100], [-100, -100, 3, 4, 5], [-100, EOS, 2, EOS, -100],
                           [-100, -100, -100, -100, -100]])
    out = without_final_eos(labels, EOS)
    assert out.tolist() == [[-100, 3, 4, -100, -100], [-100, -100, 3, 4, 5], [-100, EOS, 2, -100, -100],
                            [-100, -100, -100, -100, -100]]
    assert without_final_eos(labels, None) is labels
    assert labels[0, 3] == EOS  # not modified in place


# ----------------------------------------------------------------------------- EM / ES
def published_em_es(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float | None, float]:
    """open-unlearning's per-example EM and ES (memorization.py with tokenwise_vocab_logprobs)."""
    actual = (labels != -100).nonzero().flatten()[:-1]  # "-1 to ignore eos prediction"
    if len(actual) == 0:
        return None, 0.0
    start, end = int(actual[0]), int(actual[-1])
    preds = torch.log_softmax(logits, -1)[:-1][start - 1 : end].argmax(-1)
    target = labels[actual]
    em = float((preds == target).sum() / len(target))
    for k in range(len(target)):
        if torch.equal(preds[k:], target[k:]):
            break
    return em, 1 - k / len(target)


def logits_predicting(tokens: list[int], vocab: int = 8) -> torch.Tensor:
    out = torch.zeros(len(tokens), vocab)
    for t, tok in enumerate(tokens):
        out[t, tok] = 4.0
    return out


# Answer tokens 1, 2, 3, 4 then EOS at positions 2..6; logits[t] predicts labels[t + 1].
LABELS = torch.tensor([-100, -100, 1, 2, 3, 4, EOS])
CASES = {
    "all right, EOS wrong": [0, 1, 2, 3, 4, 0, 0],
    "all right, EOS right": [0, 1, 2, 3, 4, EOS, 0],
    "no suffix (last answer token wrong)": [0, 1, 2, 3, 0, EOS, 0],
    "nothing right": [0, 5, 5, 5, 5, 5, 0],
    "middle wrong": [0, 1, 2, 0, 4, 0, 0],
    "first wrong": [0, 1, 0, 3, 4, EOS, 0],
}


@pytest.mark.parametrize("case", list(CASES))
def test_em_and_es_match_open_unlearning(case):
    logits = logits_predicting(CASES[case])
    em_ref, es_ref = published_em_es(logits, LABELS)
    em = exact_memorization(logits[None], LABELS[None], eos_id=EOS).item()
    es = extraction_strength(logits[None], LABELS[None], eos_id=EOS).item()
    assert em == pytest.approx(em_ref) and es == pytest.approx(es_ref)


def test_em_and_es_eos_and_no_match_by_hand():
    eos_wrong = logits_predicting(CASES["all right, EOS wrong"])[None]
    # published: the four answer tokens only
    assert exact_memorization(eos_wrong, LABELS[None], eos_id=EOS).item() == 1.0
    assert extraction_strength(eos_wrong, LABELS[None], eos_id=EOS).item() == 1.0
    # scoring the EOS too (score_eos=True in the suites): 4 of 5 right, no suffix -> 1/5 (or 0)
    assert exact_memorization(eos_wrong, LABELS[None]).item() == pytest.approx(0.8)
    assert extraction_strength(eos_wrong, LABELS[None]).item() == pytest.approx(1 / 5)
    assert extraction_strength(eos_wrong, LABELS[None], no_match="zero").item() == 0.0
    no_suffix = logits_predicting(CASES["no suffix (last answer token wrong)"])[None]
    assert extraction_strength(no_suffix, LABELS[None], eos_id=EOS).item() == pytest.approx(1 / 4)
    assert extraction_strength(no_suffix, LABELS[None], eos_id=EOS, no_match="zero").item() == 0.0
    # an answer cut by max_length ends without EOS: all of its tokens are scored
    cut = torch.tensor([[-100, -100, 1, 2, 3, 4]])
    last_wrong = logits_predicting([0, 1, 2, 3, 0, 0])[None]
    assert exact_memorization(last_wrong, cut, eos_id=EOS).item() == pytest.approx(0.75)
    assert extraction_strength(last_wrong, cut, eos_id=EOS).item() == pytest.approx(1 / 4)


def test_em_and_es_metrics_batch_with_padding_and_empty_answers():
    rows = [CASES[c] for c in CASES]
    logits = torch.stack([logits_predicting(r + [0]) for r in rows])  # one right pad position
    labels = torch.stack([torch.cat([LABELS, torch.tensor([-100])])] * len(rows))
    only_eos = torch.tensor([[-100, -100, -100, -100, -100, -100, EOS, -100]])  # nothing left to score
    em, es = ExactMemorization(eos_id=EOS), ExtractionStrength(eos_id=EOS)
    for m in (em, es):
        m.update(logits, labels)
        m.update(logits[:1], only_eos)
    refs = [published_em_es(logits_predicting(r), LABELS) for r in rows]
    # EM: the empty example is left out (open-unlearning: None); ES: it counts as 0
    assert em.compute().item() == pytest.approx(np.mean([e for e, _ in refs]), abs=1e-6)
    assert es.compute().item() == pytest.approx(np.sum([s for _, s in refs]) / (len(rows) + 1), abs=1e-6)
    assert math.isnan(exact_memorization(logits[:1], only_eos, eos_id=EOS).item())


# ----------------------------------------------------------------------------- Min-K%, Min-K%++, LOSS, zlib
def published_mia(logits: torch.Tensor, labels: torch.Tensor, k: float, text: str) -> dict[str, float]:
    """open-unlearning's per-example scores (higher = less member-like); MUSE's Min-K% is the same."""
    lsm = torch.log_softmax(logits.double(), -1)[:-1]
    scored = [t for t in range(len(labels)) if labels[t] != -100]
    losses = [-float(lsm[t - 1, labels[t]]) for t in scored]  # evaluate_probability: every label
    avg_loss = sum(losses) / len(losses)
    kept = scored[:-1] if labels[scored[-1]] == EOS else scored  # tokenwise_logprobs drops the EOS label
    lp = np.array([float(lsm[t - 1, labels[t]]) for t in kept])
    num_k = max(1, int(len(lp) * k))
    min_k = -np.mean(np.sort(lp)[:num_k])
    vocab = lsm[[t - 1 for t in kept]]
    mu = (vocab.exp() * vocab).sum(-1)
    var = np.maximum(((vocab.exp() * vocab.square()).sum(-1) - mu.square()).numpy(), 1e-6)
    z = (lp - mu.numpy()) / np.sqrt(var)
    min_k_pp = -np.mean(sorted(z)[:num_k])
    return {"loss": avg_loss, "zlib": avg_loss / len(zlib.compress(text.encode())), "min_k": min_k,
            "min_k_pp": min_k_pp, "num_k": num_k}


def mia_batch(seed: int = 0):
    """Three answers: 7 tokens + EOS (0.4*7 = 2.8: floor 2, ceil 3), 2 tokens + EOS (0.8: max(1, 0) = 1),
    and 5 tokens cut by max_length (no EOS); one near-deterministic position (variance below 1e-6)."""
    g = torch.Generator().manual_seed(seed)
    lengths, width = [8, 3, 5], 12
    logits = torch.randn(3, width, 8, generator=g) * 2
    labels = torch.full((3, width), -100)
    for i, n in enumerate(lengths):
        tokens = torch.randint(0, 7, (n,), generator=g)
        if i < 2:
            tokens[-1] = EOS
        labels[i, 2 : 2 + n] = tokens
    logits[0, 3] = -30.0
    logits[0, 3, (labels[0, 4] + 1) % 7] = 30.0  # all but certain of another token than the label
    return logits, labels


def test_min_k_and_min_k_pp_match_open_unlearning():
    logits, labels = mia_batch()
    texts = ["a forget answer", "bb", "a text cut short"]
    zl = torch.tensor([len(zlib.compress(t.encode())) for t in texts])
    ours = mia_scores(logits, labels, zl, k=0.4, eos_id=EOS)
    for i in range(3):
        ref = published_mia(logits[i], labels[i], 0.4, texts[i])
        for attack in ("loss", "zlib", "min_k", "min_k_pp"):  # ours = -published (higher = member)
            assert ours[attack][i].item() == pytest.approx(-ref[attack], rel=1e-4, abs=1e-5), (i, attack)
    assert lowest_k_count(torch.tensor([7, 2, 5]), 0.4).tolist() == [2, 1, 2]
    assert lowest_k_count(torch.tensor([7, 2, 5]), 0.4, "ceil").tolist() == [3, 1, 2]
    ceil = mia_scores(logits, labels, zl, k=0.4, eos_id=EOS, k_rounding="ceil")
    assert ceil["min_k"][0].item() != pytest.approx(ours["min_k"][0].item(), abs=1e-4)  # floor != ceil at n = 7
    lp = torch.log_softmax(logits[0], -1)[1:8].gather(-1, labels[0, 2:9, None]).flatten().sort().values
    assert ceil["min_k"][0].item() == pytest.approx(lp[:3].mean().item(), abs=1e-5)


def test_min_k_pp_variance_clamp_and_eos_matter():
    logits, labels = mia_batch()
    ours = mia_scores(logits, labels, k=1.0, eos_id=EOS)
    with_eos = mia_scores(logits, labels, k=1.0)
    # the near-certain position's variance is below open-unlearning's clamp; unclamped its z-score
    # (and so the mean) would be orders of magnitude larger
    lsm = torch.log_softmax(logits[0].double(), -1)
    p, target = lsm[3].exp(), lsm[3, labels[0, 4]]
    mu, var = float((p * lsm[3]).sum()), float((p * lsm[3] ** 2).sum() - (p * lsm[3]).sum() ** 2)
    assert var < 1e-6
    published = -published_mia(logits[0], labels[0], 1.0, "x")["min_k_pp"]
    assert ours["min_k_pp"][0].item() == pytest.approx(published, rel=1e-4)
    unclamped = published + ((target - mu) / math.sqrt(var) - (target - mu) / 1e-3) / 7
    assert abs(unclamped) > 100 * abs(published)
    # the final EOS changes Min-K% (left out) but not LOSS (kept) for EOS rows; the cut row is unaffected
    assert ours["min_k"][0].item() != pytest.approx(with_eos["min_k"][0].item(), abs=1e-6)
    assert ours["loss"].tolist() == pytest.approx(with_eos["loss"].tolist())
    assert ours["min_k"][2].item() == pytest.approx(with_eos["min_k"][2].item())


# ----------------------------------------------------------------------------- privleak
def muse_auc(nonmember_ppl: list[float], member_ppl: list[float]) -> float:
    """MUSE's ``sweep``: roc_curve(y, -ppl) with forget = 0 and holdout = 1; AUC by pair counting."""
    pairs = [1.0 if -m > -n else 0.5 if m == n else 0.0 for m in member_ppl for n in nonmember_ppl]
    return sum(pairs) / len(pairs)


def muse_min40(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """MUSE's ``Min-40%`` of ``tokenizer.encode(text)`` (BOS + text, no EOS): every token after the first."""
    lsm = torch.log_softmax(logits.double(), -1)
    all_prob = [float(lsm[i, t]) for i, t in enumerate(tokens[1:])]
    return float(-np.mean(np.sort(all_prob)[: int(len(all_prob) * 0.4)]))


def test_privleak_matches_muse_with_min_k_by_default():
    g = torch.Generator().manual_seed(3)
    n_forget, n_holdout, width = 6, 5, 10
    texts = [torch.randint(0, 7, (int(torch.randint(4, width, (1,), generator=g)),), generator=g)
             for _ in range(n_forget + n_holdout)]
    models = {"unlearned": torch.randn(len(texts), width + 1, 8, generator=g),
              "retain": torch.randn(len(texts), width + 1, 8, generator=g)}
    models["unlearned"][:n_forget] *= 3  # sharper on the forget texts: more member-like
    aucs, muse = {}, {}
    for name, logits in models.items():
        # our encoding of a text: BOS-led tokens, EOS appended, the first token unscored
        labels = torch.full((len(texts), width + 1), -100)
        for i, t in enumerate(texts):
            labels[i, 1 : len(t)] = t[1:]
            labels[i, len(t)] = EOS
        zl = torch.tensor([len(zlib.compress(str(t.tolist()).encode())) for t in texts])
        scores = mia_scores(logits, without_final_eos(labels, EOS), zl, k=0.4)
        mia = MembershipInference()
        mia.update({a: s[:n_forget] for a, s in scores.items()}, member=True)
        mia.update({a: s[n_forget:] for a, s in scores.items()}, member=False)
        aucs[name] = {a: float(v) for a, v in mia.compute().items()}
        ppl = [muse_min40(logits[i], texts[i]) for i in range(len(texts))]
        muse[name] = muse_auc(ppl[:n_forget], ppl[n_forget:])  # forget_holdout_Min-40%
        assert aucs[name]["min_k"] == pytest.approx(1 - muse[name])  # MUSE's AUC is ours turned around
    published = (muse["unlearned"] - muse["retain"]) / muse["retain"] * 100
    assert privacy_leak(aucs["unlearned"]["min_k"], aucs["retain"]["min_k"]) == pytest.approx(published, rel=1e-6)
    # open-unlearning's privleak: score = 1 - auc, (score - ref) / (ref + 1e-10) * 100
    ou = ((1 - aucs["unlearned"]["min_k"]) - (1 - aucs["retain"]["min_k"])) / ((1 - aucs["retain"]["min_k"]) + 1e-10)
    assert privacy_leak(aucs["unlearned"]["min_k"], aucs["retain"]["min_k"]) == pytest.approx(ou * 100)
    # the suites report privleak of min_k by default, every attack as privleak/<attack>, and the option
    result = SuiteResult({}, {"mia_auc": aucs["unlearned"]})
    for suite in (TOFUSuite(), MUSESuite()):
        out = suite.compare(result, {"mia_auc": aucs["retain"]})
        assert out["privleak"] == pytest.approx(published, rel=1e-6)
        assert set(out) >= {f"privleak/{a}" for a in ("loss", "zlib", "min_k", "min_k_pp")}
    pp = TOFUSuite(privleak_attack="min_k_pp").compare(result, {"mia_auc": aucs["retain"]})
    assert pp["privleak"] == pytest.approx(privacy_leak(aucs["unlearned"]["min_k_pp"], aucs["retain"]["min_k_pp"]))
    assert pp["privleak"] != pytest.approx(published)
    with pytest.raises(ValueError, match="privleak_attack"):
        MUSESuite(privleak_attack="min_k++")


# ----------------------------------------------------------------------------- MUSE generation details
def test_muse_stop_strings_and_verbmem_reference_cut(tokenizer, monkeypatch):
    records = Records([{"question": "Who wrote it?", "answer": "Ada wrote the first long program in 1843 " * 3},
                       {"question": "Where?", "answer": "In London"}], "test")
    dm = SimpleNamespace(eval_subset=lambda n: list(range(n)), fields_for=lambda recs: Fields(),
                         encode=lambda recs, name, **kw: encode(recs, tokenizer, role=name, max_length=64, **kw))
    model = torch.nn.Linear(1, 1)
    generated = ["Ada wrote it.\n\nQuestion: and then?", "In London\nQuestion: next"]
    outputs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in generated]

    def stub_generate(model, prompts, *args):  # the "model" answers each question with a fixed text
        return [outputs["Where?" in tokenizer.decode(p)] for p in prompts]

    monkeypatch.setattr(engine_module, "greedy_generate", stub_generate)
    ev = Evaluator(model, tokenizer, dm, {"qa": records}, 4, 16, torch.no_grad(), False)
    stop = MUSESuite().knowmem_stop
    preds, targets = ev.generate("qa", [0, 1], stop=stop, target_tokens=5)

    def muse_cut(text):  # knowmem.py: get_prefix_before_words_occur
        for word in stop:
            text = text.split(word)[0]
        return text

    decoded = tokenizer.batch_decode(outputs, skip_special_tokens=True)
    assert preds == [muse_cut(decoded[0]).strip(), muse_cut(decoded[1]).strip()]
    assert preds[1] == "In London" and "Question" not in preds[0]
    gt_ids = [tokenizer(r["answer"], add_special_tokens=True)["input_ids"][:5] for r in records.rows]
    assert targets == tokenizer.batch_decode(gt_ids, skip_special_tokens=True)  # verbmem.py: gt cut to 5 tokens
    assert len(targets[0]) < len(records.rows[0]["answer"])
    _, full = ev.generate("qa", [0, 1])
    assert full == [r["answer"] for r in records.rows]
