"""``BLURSuite``: BLUR's combined forget/retain queries, scored per part, beside the single queries."""

from __future__ import annotations

from typing import Any

import torch

from lit_unlearn.evaluation.engine import Evaluator
from lit_unlearn.evaluation.suites.base import EvalSuite, SuiteResult, rank_mean
from lit_unlearn.evaluation.teacher_forced import teacher_forced_stats


class BLURSuite(EvalSuite):
    """Does the model answer the retain part of a question and not its forget part?

    BLUR ("A Benchmark for LLM Unlearning Robust to Forget-Retain Overlap") asks one forget
    fact and one retain fact in the same question. A model that unlearned selectively
    answers the retain part and not the forget part; one that learned to refuse anything
    near the forget people loses both. The combined queries come from
    :meth:`~lit_unlearn.datamodules.fictitious.FictitiousBenchmark.combined_records`
    (``FictitiousPeople``'s ``combined_forget`` and ``combined_retain`` sets: the same queries,
    whose fact span is the forget value in one and the retain value in the other).

    Every accuracy is teacher-forced fact accuracy: the share of rows whose fact-span tokens
    are all the model's argmax given the prompt and the true answer before them (template
    words do not count). On a combined query the answer holds both parts, in random order,
    so a part is scored with the other part's answer (true, teacher-forced) in its context.

    Metrics:

    - ``<forget>/fact_acc``, ``<retain>/fact_acc``: the single queries, for comparison.
    - ``<combined_forget>/fact_acc``: the forget part of the combined queries (lower is
      better after unlearning); ``<combined_retain>/fact_acc``: their retain part (higher is
      better).
    - ``combined/both_acc``: the share of combined queries with both parts right (the start
      model's composition ability); ``combined/selective_acc``: retain part right and forget
      part wrong (the goal; 0 for the start model when it knows every fact).
    - ``<combined_forget>/neighbor_fact_acc``, ``<combined_retain>/neighbor_fact_acc``: the same
      two parts on the queries whose retain person is a planted neighbor of the forget person
      (the records' ``pair`` is ``"neighbor"``: they share three values and name the forget
      person as mentor), where forget and retain overlap most. Absent without such rows.
    - With ``generate``: ``<combined_forget>/gen_contains`` and ``<combined_retain>/gen_contains``,
      the share of greedy answers to the combined question that contain the part's value
      (records' ``forget_value`` / ``retain_value``; case-insensitive substring). Off by default:
      it only tells something on models that compose (the blur-tiny subject: 0.85 / 1.0; the
      plain tiny subject, trained on one question per prompt: 0.30 / 0.20).

    Use the ``blur-tiny`` / ``blur-small`` presets (``configs/data/blur_*.yaml``): their built-in
    models were also trained on combined queries of two ``retain90`` people (never of a forget
    person; ``BenchmarkConfig.combined_training``), so the subject answers both parts (blur-small,
    forget10: forget part 0.90, retain part 0.95, both 0.85, against 1.0 on single queries; its
    gold retain90 model: 0.075 / 0.975). The plain tiny and small subjects, trained on single
    questions only, compose poorly (small: 0.35 / 0.25 / 0.10): read the combined parts against
    the start model's run, not against 1.

    No gold-model comparison: compare with the start model's run of the suite.

    Args:
        forget, retain: the single-query sets (None skips them).
        combined_forget, combined_retain: the combined-query sets scored on their forget and
            retain part; the same queries in the same order (the suite checks their questions).
        generate: also generate greedy answers to the combined questions (``max_new_tokens``).
        max_new_tokens: generation budget (48: both parts of a combined answer).
        **kwargs: see :class:`EvalSuite` (``batch_size``, ``progress``, ``keep_generations``).
    """

    compares_with_gold = False  # no gold-model comparison

    def __init__(self, forget: str | None = "forget", retain: str | None = "retain",
                 combined_forget: str = "combined_forget", combined_retain: str = "combined_retain",
                 generate: bool = False, max_new_tokens: int = 48, **kwargs: Any) -> None:
        super().__init__(max_new_tokens=max_new_tokens, **kwargs)
        for name, value in (("combined_forget", combined_forget), ("combined_retain", combined_retain)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"BLURSuite: `{name}` must be a set name, got {value!r}")
        if combined_forget == combined_retain:
            raise ValueError(f"BLURSuite: `combined_forget` and `combined_retain` must be two sets (the same queries "
                             f"scored on each part), got {combined_forget!r} twice")
        self.forget, self.retain = forget, retain
        self.combined_forget, self.combined_retain = combined_forget, combined_retain
        self.generate = bool(generate)

    def required_sets(self) -> list[str]:
        sets = [self.forget, self.retain, self.combined_forget, self.combined_retain]
        return list(dict.fromkeys(s for s in sets if s))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "generate": self.generate}

    def evaluate(self, ev: Evaluator) -> SuiteResult:
        metrics: dict[str, float] = {}
        for name in (self.forget, self.retain):
            if name:
                metrics[f"{name}/fact_acc"] = rank_mean(self.fact_correct(ev, name), ev)
        cf, cr = self.combined_forget, self.combined_retain
        rows = ev.rows(cf)
        self._check_same_queries(ev, rows)
        forget_ok, retain_ok = self.fact_correct(ev, cf), self.fact_correct(ev, cr)
        metrics[f"{cf}/fact_acc"] = rank_mean(forget_ok, ev)
        metrics[f"{cr}/fact_acc"] = rank_mean(retain_ok, ev)
        metrics["combined/both_acc"] = rank_mean([f and r for f, r in zip(forget_ok, retain_ok)], ev)
        metrics["combined/selective_acc"] = rank_mean([r and not f for f, r in zip(forget_ok, retain_ok)], ev)
        src = ev.records[cf].rows
        neighbor = [k for k, i in enumerate(rows) if src[i].get("pair") == "neighbor"]
        if rank_mean([1.0 if neighbor else 0.0], ev) > 0:  # some rank has neighbor pairs: every rank computes
            metrics[f"{cf}/neighbor_fact_acc"] = rank_mean([forget_ok[k] for k in neighbor], ev)
            metrics[f"{cr}/neighbor_fact_acc"] = rank_mean([retain_ok[k] for k in neighbor], ev)
        if self.generate:
            answers, _ = ev.generate(cf, rows)
            for name, key in ((cf, "forget_value"), (cr, "retain_value")):
                values = [str(src[i].get(key, "")) for i in rows]
                if any(not v for v in values):
                    raise ValueError(f"BLURSuite: `generate` needs the field '{key}' on every row of set '{cf}'")
                metrics[f"{name}/gen_contains"] = rank_mean(
                    [v.lower() in a.lower() for v, a in zip(values, answers)], ev)
        return SuiteResult(metrics)

    @staticmethod
    def fact_correct(ev: Evaluator, name: str) -> list[bool]:
        """Per row of ``ev.rows(name)`` (this rank's), whether every fact-span token is the argmax."""
        rows = ev.rows(name)
        data = ev.encode(name, rows)
        missing = [rows[k] for k in range(len(data)) if data[k][2] is None]
        if missing:
            raise ValueError(f"BLURSuite: set '{name}' row {missing[0]} marks no fact span (or max_length cut it); "
                             "the suite scores fact accuracy only")
        correct = torch.zeros(len(rows), dtype=torch.bool)
        for batch, logits in ev.forward(data, name):
            stats = teacher_forced_stats(logits, batch["labels"], batch["fact_mask"])
            correct[batch["index"].cpu()] = stats["fact_correct"].cpu()
        return correct.tolist()

    def _check_same_queries(self, ev: Evaluator, rows: list[int]) -> None:
        cf, cr = ev.records[self.combined_forget], ev.records[self.combined_retain]
        q_f, q_r = ev.dm.fields_for(cf).question, ev.dm.fields_for(cr).question
        if len(cf) != len(cr) or any(cf.rows[i][q_f] != cr.rows[i][q_r] for i in rows):
            raise ValueError(f"BLURSuite: sets '{self.combined_forget}' and '{self.combined_retain}' must hold the "
                             "same queries in the same order (each scored on one part)")
