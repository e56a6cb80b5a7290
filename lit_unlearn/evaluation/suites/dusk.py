"""``DUSKSuite``: DUSK's seven measures for unlearning one document among overlapping ones."""

from __future__ import annotations

from typing import Any

from lit_unlearn.evaluation.engine import Evaluator
from lit_unlearn.evaluation.rouge import RougeL
from lit_unlearn.evaluation.suites.base import EvalSuite, SuiteResult
from lit_unlearn.evaluation.teacher_forced import TeacherForcedMetrics

RETAIN_SIDE = ("shared", "unique_retain", "downstream")


class DUSKSuite(EvalSuite):
    """DUSK's measures (Do Not Unlearn Shared Knowledge), on :class:`~lit_unlearn.datamodules.dusk.DuskDocuments`.

    An ideal unlearned model has lost the forget document's wording and the facts only it
    states, and kept everything else, as the gold retain model (trained without the forget
    document) has:

    1. ``verbmem/rougeL_f1``: verbatim memorisation, ROUGE-L F1 of the greedy continuation of a
       forget document's first lines against the rest of it (lower is better);
    2. ``unique_forget/fact_acc``: knowledge stated only by the forget documents (lower);
    3. ``shared/fact_acc``: knowledge every document states, the forget one too (keep it);
    4. ``unique_retain/fact_acc``: knowledge stated only by a retain document (keep it);
    5. ``downstream/fact_acc``: knowledge of people unrelated to the documents (keep it);
    6. ``privleak``: the privacy leak of membership inference, forget documents against the
       same style's documents about holdout people (whom every model knows from the other
       styles, but no model trained on in this one), relative to the gold model's AUC
       (MUSE's formula; ``mia/<attack>`` are the AUCs), near 0 is best;
    7. ``retain_deviation``: the mean absolute difference from the gold model on the three
       retain-side measures (3-5), as a fraction of the probes (0 is best).

    Knowledge is the fact accuracy of cloze probes: the statement up to the value, and the
    share of probes whose value tokens are all the model's argmax (teacher forced). DUSK's
    paper asks questions and scores ROUGE of generated answers; the embedded benchmark's
    models are too small to answer questions about documents they were not trained to
    answer, so the probes use the statements' own wording, out of the documents' context.

    Args:
        verbmem, unique_forget, shared, unique_retain, downstream, mia_forget, mia_holdout:
            set names in the datamodule (None skips that measure).
        max_new_tokens: generation budget of the verbatim continuations.
        **kwargs: see :class:`EvalSuite` (``mia_k``, ``privleak_attack``, batching, the gold model).
    """

    def __init__(self, verbmem: str | None = "verbmem", unique_forget: str | None = "unique_forget",
                 shared: str | None = "shared", unique_retain: str | None = "unique_retain",
                 downstream: str | None = "downstream", mia_forget: str | None = "mia_forget",
                 mia_holdout: str | None = "mia_holdout", max_new_tokens: int = 128, **kwargs: Any) -> None:
        super().__init__(max_new_tokens=max_new_tokens, **kwargs)
        if (mia_forget is None) != (mia_holdout is None):
            raise ValueError("DUSKSuite: give both `mia_forget` and `mia_holdout`, or neither")
        self.verbmem, self.mia_forget, self.mia_holdout = verbmem, mia_forget, mia_holdout
        self.knowledge = {"unique_forget": unique_forget, "shared": shared, "unique_retain": unique_retain,
                          "downstream": downstream}

    def required_sets(self) -> list[str]:
        sets = [self.verbmem, *self.knowledge.values(), self.mia_forget, self.mia_holdout]
        return [s for s in sets if s]

    def evaluate(self, ev: Evaluator) -> SuiteResult:
        metrics: dict[str, float] = {}
        stats: dict[str, Any] = {"knowledge": {}}
        if self.verbmem:
            rouge = RougeL(stemming=False).to(ev.device)
            rouge.update(*ev.generate(self.verbmem, ev.rows(self.verbmem)))
            metrics[f"{self.verbmem}/rougeL_f1"] = float(rouge.compute()["f1"])
        for measure, name in self.knowledge.items():
            if not name:
                continue
            tf = TeacherForcedMetrics().to(ev.device)
            for _, batch, logits in ev.scored(name, ev.rows(name), ["answer"]):
                tf.update(logits, batch["labels"], batch.get("fact_mask"), batch.get("has_fact"))
            acc = float(tf.compute()["fact_acc"])
            metrics[f"{name}/fact_acc"] = acc
            stats["knowledge"][measure] = acc
        if self.mia_forget:
            aucs = self.text_mia(ev, self.mia_forget, self.mia_holdout)
            metrics.update({f"mia/{a}": v for a, v in aucs.items()})
            stats["mia_auc"] = aucs
        return SuiteResult(metrics, stats)

    def compare(self, result: SuiteResult, reference: dict[str, Any]) -> dict[str, float]:
        """The privacy leak (see :class:`EvalSuite`) and ``retain_deviation`` against the gold
        model, with ``gold/<measure>`` beside it."""
        out = super().compare(result, reference)
        ours, gold = result.stats.get("knowledge", {}), reference.get("knowledge", {})
        both = [m for m in RETAIN_SIDE if m in ours and m in gold]
        if both:
            out["retain_deviation"] = sum(abs(ours[m] - gold[m]) for m in both) / len(both)
        out.update({f"gold/{m}": v for m, v in gold.items()})
        return out
