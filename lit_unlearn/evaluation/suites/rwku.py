"""``RWKUSuite``: RWKU's efficacy, locality and utility measures, as RWKU's evaluation code frames them."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch

from lit_unlearn.evaluation.engine import Evaluator
from lit_unlearn.evaluation.eos import without_final_eos
from lit_unlearn.evaluation.mia import ATTACKS, MembershipInference, mia_scores, zlib_length
from lit_unlearn.evaluation.refusal import is_refusal
from lit_unlearn.evaluation.rwku_probes import (
    SCORERS,
    chat_prompt,
    generate_texts,
    probe_answers,
    probe_prompt,
    rouge_recall,
)
from lit_unlearn.evaluation.suites.base import EvalSuite, SuiteResult, rank_mean
from lit_unlearn.objectives import sequence_logprob

PROBE_SETS = ("forget_level1", "forget_level2", "forget_level3", "neighbor_level1", "neighbor_level2")


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """ROME's and RWKU's fluency: the weighted mean over ``ns`` of the entropy (bits) of the
    text's word n-gram frequencies. Words come from nltk's ``NLTKWordTokenizer`` (RWKU's
    ``word_tokenize`` also splits sentences with punkt first, which needs a download; the
    two differ only on sentence-final periods inside the text). 0 for a text without n-grams."""
    from nltk.tokenize import NLTKWordTokenizer

    tokens = NLTKWordTokenizer().tokenize(text)
    values = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(grams.values())
        values.append(w * -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0)
    return sum(values) / len(values)


class RWKUSuite(EvalSuite):
    """RWKU's measures on the sets of :class:`~lit_unlearn.datamodules.RWKU`.

    - Efficacy: ``forget_level1/2/3/rougeL_recall``: ROUGE-L recall of greedy answers to the
      targets' fill-in-the-blank, question-answer and adversarial probes (per attack type as
      ``forget_level3/<type>/rougeL_recall``), framed as RWKU's ``eval_forget.py``
      (:mod:`lit_unlearn.evaluation.rwku_probes`). Lower is better.
    - Locality: ``neighbor_level1/2/rougeL_recall`` on probes about related people and works.
    - Refusals: ``<probe set>/refusal_rate``, the share of those answers that refuse
      (:func:`~lit_unlearn.evaluation.refusal.is_refusal`): refusal methods (RT, RULE) should
      refuse forget probes and answer the neighbour ("boundary") probes.
    - Membership inference: ``mia/<attack>`` AUC (LOSS, zlib, Min-K%, Min-K%++) of the forget
      corpus (members) against the model's texts about other people; 0.5 on the start model
      (both are its own writing), below 0.5 once the forget texts became unlikely.
    - Utility: ``utility/accuracy``, multiple choice on general knowledge unrelated to the
      targets: the option with the highest log-likelihood per character after the question
      (lm-evaluation-harness's ``acc_norm``).
    - Fluency: ``fluency/entropy``, the n-gram entropy of greedy answers to open instructions
      (RWKU's prompt ``"Instruction: {instruction}"``).

    ``forget_level12/rougeL_recall`` and ``neighbor_level12/rougeL_recall`` pool levels 1 and 2.

    Args:
        scorer: ``"rouge"`` (the ``rouge`` package, as RWKU) or ``"rouge_score"`` (Google's
            tokenisation, case- and punctuation-insensitive); see
            :func:`~lit_unlearn.evaluation.rwku_probes.rouge_recall`.
        max_new_tokens: answer budget of the probes (30, as RWKU).
        fluency_max_new_tokens: answer budget of the fluency instructions (RWKU: 256).
        probe_sets, mia_forget, mia_other, utility, fluency: set names (None skips a part).
        **kwargs: see :class:`EvalSuite` (``batch_size``, ``mia_k``, ``progress``, ...).

    The instruction of in-context unlearning (``ICU``) reaches the prompts through
    :meth:`EvalSuite.run`'s ``instruction``.

    The first ``keep_generations`` answers of each probe set and of the fluency set land in
    ``SuiteResult.generations`` (``prompt``, ``reference``: the probe's answer or None,
    ``generated``; probes add their ``recall``).
    """

    supports_instruction = True

    def __init__(self, scorer: str = "rouge", max_new_tokens: int = 30, fluency_max_new_tokens: int = 128,
                 probe_sets: list[str] | None = None, mia_forget: str | None = "mia_forget",
                 mia_other: str | None = "mia_other", utility: str | None = "utility",
                 fluency: str | None = "fluency", **kwargs: Any) -> None:
        super().__init__(max_new_tokens=max_new_tokens, **kwargs)
        if scorer not in SCORERS:
            raise ValueError(f"RWKUSuite: `scorer` must be one of {SCORERS}, got {scorer!r}")
        if (mia_forget is None) != (mia_other is None):
            raise ValueError("RWKUSuite: give both `mia_forget` and `mia_other`, or neither")
        self.scorer, self.fluency_max_new_tokens = scorer, fluency_max_new_tokens
        self.probe_sets = list(PROBE_SETS if probe_sets is None else probe_sets)
        self.mia_forget, self.mia_other, self.utility, self.fluency = mia_forget, mia_other, utility, fluency

    def required_sets(self) -> list[str]:
        return [s for s in [*self.probe_sets, self.mia_forget, self.mia_other, self.utility, self.fluency] if s]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "scorer": self.scorer}

    def evaluate(self, ev: Evaluator) -> SuiteResult:
        metrics: dict[str, float] = {}
        pooled: dict[str, list[float]] = {"forget_level12": [], "neighbor_level12": []}
        for name in self.probe_sets:
            rows = [ev.records[name].rows[i] for i in ev.rows(name)]
            if not rows:
                continue
            answers = probe_answers(ev.model, ev.tokenizer, rows, ev.batch_size, ev.instruction, self.max_new_tokens,
                                    ev.context, ev.progress, desc=name, limit=ev.limit)
            recall = rouge_recall(answers, [r["answer"] for r in rows], self.scorer)
            metrics[f"{name}/rougeL_recall"] = rank_mean(recall, ev)
            metrics[f"{name}/refusal_rate"] = rank_mean([float(is_refusal(a)) for a in answers], ev)
            if name.endswith(("level1", "level2")):
                pooled[name.rsplit("_", 1)[0] + "_level12"] += recall
            if name.endswith("level3"):
                for kind in sorted({r.get("type", "") for r in rows}):
                    scores = [s for r, s in zip(rows, recall) if r.get("type", "") == kind]
                    metrics[f"{name}/{kind.replace(' ', '_') or 'untyped'}/rougeL_recall"] = rank_mean(scores, ev)
            kept = rows[: max(0, ev.keep_generations)]
            ev.keep(name, [probe_prompt(r, ev.tokenizer, ev.instruction) for r in kept], [r["answer"] for r in kept],
                    answers, recall=recall)
        for name, values in pooled.items():
            if values:
                metrics[f"{name}/rougeL_recall"] = rank_mean(values, ev)
        if self.mia_forget:
            metrics.update(self._mia(ev))
        if self.utility:
            metrics["utility/accuracy"] = self._utility(ev)
        if self.fluency:
            metrics["fluency/entropy"] = self._fluency(ev)
        return SuiteResult(metrics, {"mia_auc": {k[4:]: v for k, v in metrics.items() if k.startswith("mia/")}})

    def _mia(self, ev: Evaluator) -> dict[str, float]:
        mia = MembershipInference(ATTACKS).to(ev.device)
        for name in (self.mia_forget, self.mia_other):
            recs, rows = ev.records[name], ev.rows(name)
            for batch, logits in ev.forward(ev.encode(name, rows), name):
                texts = [recs.rows[rows[int(i)]]["text"] for i in batch["index"]]
                zl = torch.tensor([max(zlib_length(t), 1) for t in texts], device=ev.device)
                labels = without_final_eos(batch["labels"], self.eos_id(ev))
                mia.update(mia_scores(logits, labels, zl, self.mia_k, k_rounding=self.mia_k_rounding),
                           member=name == self.mia_forget)
        return {f"mia/{a}": float(v) for a, v in mia.compute().items()}

    def _utility(self, ev: Evaluator) -> float:
        """Share of questions whose correct option is the likeliest continuation of the question,
        by log-likelihood per character of the option (lm-evaluation-harness's ``acc_norm``;
        the scored continuation ends with the EOS token)."""
        src = ev.records[self.utility]
        rows = ev.rows(self.utility)
        options = [(j, k, opt) for j, i in enumerate(rows) for k, opt in enumerate(src.rows[i]["options"])]
        recs = type(src)([{"question": src.rows[rows[j]]["question"], "answer": opt} for j, _, opt in options],
                         src.origin)
        scores = torch.full((len(rows), max(len(src.rows[i]["options"]) for i in rows)), -math.inf)
        for batch, logits in ev.forward(ev.dm.encode(recs, self.utility), self.utility):
            logp, _ = sequence_logprob(logits, batch["labels"])
            for p, v in zip(batch["index"].tolist(), logp.tolist()):
                j, k, option = options[p]
                scores[j, k] = v / max(1, len(option))
        correct = torch.tensor([int(src.rows[i]["answer"]) for i in rows])
        return rank_mean((scores.argmax(-1) == correct).double().tolist(), ev)

    def _fluency(self, ev: Evaluator) -> float:
        src, rows = ev.records[self.fluency], ev.rows(self.fluency)
        subject = (getattr(ev.dm, "targets", None) or [""])[0]  # ICU names the target; instructions name none
        prompts = []
        for r in (src.rows[i] for i in rows):
            user = f"Instruction: {r['instruction']}\n"
            if ev.instruction:
                user = ev.instruction.format(subject=r.get("subject", subject)) + user
            prompts.append(chat_prompt(ev.tokenizer, user))
        outputs = generate_texts(ev.model, ev.tokenizer, prompts, self.fluency_max_new_tokens, ev.batch_size,
                                 ev.context, desc=self.fluency, limit=ev.limit, option="fluency_max_new_tokens")
        ev.keep(self.fluency, prompts, [None] * len(prompts), outputs)
        return rank_mean([ngram_entropy(o) for o in outputs], ev)
