"""``TOFUSuite``: TOFU's metrics on QA sets, as TOFU's and open-unlearning's evaluation code computes them."""

from __future__ import annotations

from typing import Any

import torch

from lit_unlearn.evaluation import diagnostics
from lit_unlearn.evaluation.engine import Evaluator, as_list, has_field
from lit_unlearn.evaluation.forget_quality import forget_quality
from lit_unlearn.evaluation.memorization import ES_NO_MATCH, ExactMemorization, ExtractionStrength
from lit_unlearn.evaluation.mia import ATTACKS, MembershipInference, mia_scores, zlib_length
from lit_unlearn.evaluation.probability import AnswerProbability, OptionProbability
from lit_unlearn.evaluation.rouge import RougeL
from lit_unlearn.evaluation.suites.base import EvalSuite, SuiteResult
from lit_unlearn.evaluation.teacher_forced import TeacherForcedMetrics
from lit_unlearn.evaluation.truth_ratio import TruthRatio
from lit_unlearn.evaluation.utility import harmonic_mean
from lit_unlearn.objectives import nll


class TOFUSuite(EvalSuite):
    """TOFU's metrics on QA sets.

    Per QA set: answer probability, ROUGE-L recall and F1 of greedy answers, truth ratio
    (where records have ``paraphrased_answer`` and ``perturbed_answer``), fact accuracy
    (where they mark a fact span), exact memorization and extraction strength. Over sets:
    forget quality (KS test of forget truth ratios against the gold retain model), model
    utility (harmonic mean of the retain and utility sets' probability, ROUGE-L recall and
    truth ratio, plus retain fact accuracy where spans exist), MIA AUC of forget vs
    holdout (LOSS, zlib, Min-K%, Min-K%++), and the privacy leak of each against the gold
    model. ``score`` is the harmonic mean of forget quality and model utility.

    Where a metric degenerates (see :mod:`~lit_unlearn.evaluation.diagnostics`: truth ratio
    above 1 on most rows of a set in model utility, a harmonic mean with a zero term, forget
    quality on fewer than 30 truth ratios, a gold model whose MIA AUC is far from 0.5), the
    result's ``stats["warnings"]`` says so and why, and ``run`` logs each kind of warning
    once per suite on the ``lit_unlearn`` logger (the gold model's, computed for the
    reference, prefixed as such).

    By default each metric is computed as the published code does: ROUGE-L as TOFU's
    ``eval_rouge_recall`` (``rouge_score`` with the Porter stemmer), exact memorization,
    extraction strength and the MIA attacks as open-unlearning's ``memorization.py`` and
    ``mia/`` (final EOS label left out of EM, ES, Min-K% and Min-K%++; ``max(1, int(k*n))``
    tokens for Min-K%; ES at the last answer position when no suffix is predicted).

    Args:
        forget, retain, holdout: names of those sets in the datamodule.
        option_sets: multiple-choice sets (``answer`` plus wrong ``perturbed_answer`` options,
            TOFU's real authors and world facts): option-normalised probability.
        utility_sets: sets whose metrics enter model utility besides ``retain``.
        extra_sets: other QA sets to report (e.g. ``neighbor``).
        stemming: Porter-stem ROUGE tokens (True, as TOFU and open-unlearning).
        extraction_no_match: extraction strength of an answer none of whose suffixes is
            predicted: ``"last"`` (``1/|y|``: open-unlearning's loop stops at the last
            position) or ``"zero"`` (0).
        **kwargs: see :class:`EvalSuite` (``mia_k``, ``mia_k_rounding``, ``privleak_attack``,
            ``score_eos``, batching and the gold model).
    """

    def __init__(self, forget: str = "forget", retain: str = "retain", holdout: str | None = "holdout",
                 option_sets: list[str] | None = None, utility_sets: list[str] | None = None,
                 extra_sets: list[str] | None = None, stemming: bool = True, extraction_no_match: str = "last",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if extraction_no_match not in ES_NO_MATCH:
            raise ValueError(f"TOFUSuite: `extraction_no_match` must be one of {ES_NO_MATCH}, "
                             f"got {extraction_no_match!r}")
        self.forget, self.retain, self.holdout = forget, retain, holdout
        self.option_sets, self.extra_sets = list(option_sets or []), list(extra_sets or [])
        self.utility_sets = list(utility_sets if utility_sets is not None else self.option_sets)
        self.stemming, self.extraction_no_match = bool(stemming), extraction_no_match
        self._warned: set[str] = set()  # kinds of warnings already logged (diagnostics.emit)

    def required_sets(self) -> list[str]:
        sets = [self.forget, self.retain] + ([self.holdout] if self.holdout else [])
        return list(dict.fromkeys(sets + self.option_sets + self.utility_sets + self.extra_sets))

    def evaluate(self, ev: Evaluator) -> SuiteResult:
        metrics: dict[str, float] = {}
        stats: dict[str, Any] = {}
        warnings: list[str] = []
        eos = self.eos_id(ev)
        mia = MembershipInference(ATTACKS).to(ev.device)
        for name in self.required_sets():
            recs = ev.records[name]
            rows = ev.rows(name)
            tf, prob = TeacherForcedMetrics().to(ev.device), AnswerProbability().to(ev.device)
            em = ExactMemorization(eos_id=eos).to(ev.device)
            es = ExtractionStrength(eos_id=eos, no_match=self.extraction_no_match).to(ev.device)
            has_pert = has_field(recs, "perturbed_answer")
            keys = ["answer"] + (["paraphrased_answer"] if has_pert and has_field(recs, "paraphrased_answer") else [])
            keys += ["perturbed_answer"] if has_pert else []
            width = max((len(as_list(recs.rows[i]["perturbed_answer"], name, i, "perturbed_answer")) for i in rows),
                        default=0) if has_pert else 0
            answer_nll = torch.zeros(len(rows), device=ev.device)
            para_nll = torch.zeros(len(rows), device=ev.device)
            wrong = torch.zeros(len(rows), max(width, 1), device=ev.device)
            wrong_mask = torch.zeros_like(wrong, dtype=torch.bool)
            answer_field = ev.dm.fields_for(recs).answer
            for key, batch, logits in ev.scored(name, rows, keys):
                per_token = nll(logits, batch["labels"])
                if key == "paraphrased_answer":
                    para_nll[batch["index"]] = per_token
                    continue
                if key == "perturbed_answer":
                    wrong[batch["index"], batch["option"]] = per_token
                    wrong_mask[batch["index"], batch["option"]] = True
                    continue
                answer_nll[batch["index"]] = per_token
                tf.update(logits, batch["labels"], batch.get("fact_mask"), batch.get("has_fact"))
                prob.update(per_token)
                em.update(logits, batch["labels"])
                es.update(logits, batch["labels"])
                if name in (self.forget, self.holdout):
                    texts = [recs.rows[rows[int(i)]][answer_field] for i in batch["index"]]
                    zl = torch.tensor([zlib_length(t) for t in texts], device=ev.device)
                    # LOSS and zlib on every answer label (open-unlearning's evaluate_probability),
                    # Min-K% and Min-K%++ without the final EOS (its tokenwise_logprobs)
                    scores = mia_scores(logits, batch["labels"], zl, self.mia_k, eos_id=eos,
                                        k_rounding=self.mia_k_rounding)
                    mia.update(scores, member=name == self.forget)
            t = tf.compute()
            metrics[f"{name}/prob"] = float(prob.compute())
            if "fact_acc" in t:
                metrics[f"{name}/fact_acc"] = float(t["fact_acc"])
            metrics[f"{name}/exact_mem"] = float(em.compute())
            metrics[f"{name}/extraction_strength"] = float(es.compute())
            rouge = RougeL(stemming=self.stemming).to(ev.device)
            rouge.update(*ev.generate(name, rows))
            r = rouge.compute()
            metrics[f"{name}/rougeL_recall"], metrics[f"{name}/rougeL_f1"] = float(r["recall"]), float(r["f1"])
            if not has_pert:
                continue
            if name in self.option_sets:
                opt = OptionProbability().to(ev.device)
                opt.update(answer_nll, wrong, wrong_mask)
                metrics[f"{name}/prob"] = float(opt.compute())
            # truth ratio: the paraphrase against the wrong answers (the answer itself on option sets)
            if "paraphrased_answer" in keys or name in self.option_sets:
                tr = TruthRatio(forget=name == self.forget).to(ev.device)
                tr.update(para_nll if "paraphrased_answer" in keys else answer_nll, wrong, wrong_mask)
                metrics[f"{name}/truth_ratio"] = float(tr.compute())
                if name == self.forget:
                    with tr.sync_context():  # every rank's ratios, for the KS test
                        stats["forget_truth_ratios"] = tr.values().tolist()
                elif name in [self.retain] + self.utility_sets:  # sets that enter model utility
                    with tr.sync_context():
                        warnings += diagnostics.truth_ratio_degenerate(tr.values(), name,
                                                                       options=name in self.option_sets)
        if self.holdout:
            aucs = {a: float(v) for a, v in mia.compute().items()}
            metrics.update({f"mia/{a}": v for a, v in aucs.items()})
            stats["mia_auc"] = aucs
        terms = [f"{name}/{m}" for name in [self.retain] + self.utility_sets
                 for m in ("prob", "rougeL_recall", "truth_ratio")] + [f"{self.retain}/fact_acc"]
        terms = [k for k in terms if k in metrics]
        metrics["model_utility"] = harmonic_mean(metrics[k] for k in terms)
        warnings += diagnostics.harmonic_mean_zero({k: metrics[k] for k in terms}, "model_utility")
        stats["warnings"] = warnings
        return SuiteResult(metrics, stats)

    def compare(self, result: SuiteResult, reference: dict[str, Any]) -> dict[str, float]:
        """Forget quality and ``score`` besides the privacy leak; warnings about them (too few
        truth ratios, a zero term in ``score``, the gold model's MIA AUC far from 0.5) are
        added to ``result.stats["warnings"]``."""
        out = super().compare(result, reference)
        warnings = result.stats.setdefault("warnings", [])
        mine, gold = result.stats.get("forget_truth_ratios"), reference.get("forget_truth_ratios")
        if mine and gold:
            out["forget_quality"] = forget_quality(torch.tensor(mine), torch.tensor(gold))
            out["score"] = harmonic_mean([out["forget_quality"], result.metrics["model_utility"]])
            warnings += diagnostics.forget_quality_small(len(mine), len(gold))
            warnings += diagnostics.harmonic_mean_zero(
                {"forget_quality": out["forget_quality"], "model_utility": result.metrics["model_utility"]}, "score")
        if result.stats.get("mia_auc") and reference.get("mia_auc"):
            warnings += diagnostics.gold_mia_far(reference["mia_auc"])
        return out

    def run(self, model, tokenizer, datamodule, stage: str = "test", context=None, with_reference: bool = True,
            **kwargs: Any) -> SuiteResult:
        """:meth:`EvalSuite.run`, then each kind of warning in ``stats["warnings"]`` logged once
        per suite (``with_reference=False`` is the gold model's evaluation for the reference)."""
        result = super().run(model, tokenizer, datamodule, stage, context, with_reference=with_reference, **kwargs)
        diagnostics.emit(result.stats.get("warnings", []), self._warned,
                         prefix="" if with_reference else "gold retain model's evaluation: ")
        return result
