"""``MUSESuite``: MUSE's verbatim memorization, knowledge memorization and privacy leak,
as MUSE's own evaluation code (``swj0419/muse_bench``) computes them."""

from __future__ import annotations

from typing import Any

from lit_unlearn.evaluation.engine import Evaluator
from lit_unlearn.evaluation.rouge import RougeL
from lit_unlearn.evaluation.suites.base import EvalSuite, SuiteResult

KNOWMEM_STOP = ("\n\n", "\nQuestion", "Question:")


class MUSESuite(EvalSuite):
    """MUSE's metrics: verbatim memorization, knowledge memorization, privacy leak.

    - ``verbmem``: ROUGE-L F1 of greedy continuations (``max_new_tokens``, 128 as MUSE) of
      forget-text prompts against the first ``max_new_tokens`` tokens of the true
      continuation (records with a prompt and its continuation; map them with the set's
      ``fields`` and use ``prompt_template: "{question}"``).
    - ``knowmem_forget`` / ``knowmem_retain``: ROUGE-L F1 of greedy answers to QA pairs
      (``knowmem_max_new_tokens``, 32 as MUSE), cut at MUSE's stop strings. MUSE prompts
      with in-context examples: put them in the set's ``prompt_template``.
    - ``privleak``: ``(AUC'_model - AUC'_retain) / AUC'_retain * 100`` of the
      ``privleak_attack`` (Min-K% with k = 0.4, MUSE's ``forget_holdout_Min-40%``) on
      ``privleak_forget`` vs ``privleak_holdout`` texts; MUSE's ``AUC'`` is ``1 - mia/<attack>``.
      LOSS, zlib and Min-K%++ AUCs are logged too.

    ROUGE is Google's ``rouge_score`` without stemming, F1 (MUSE's ``mean_rougeL``). The
    attacks score every text token after the first, without the EOS the datamodule appends
    (MUSE scores ``tokenizer.encode(text)``, which has none).

    Args:
        verbmem, knowmem_forget, knowmem_retain, privleak_forget, privleak_holdout: set
            names in the datamodule (None skips that part).
        max_new_tokens: generation budget of the verbmem continuations (128, as MUSE).
        stemming: Porter-stem ROUGE tokens (False, as MUSE; open-unlearning's MUSE port stems).
        knowmem_max_new_tokens: generation budget of the knowmem answers (None: ``max_new_tokens``).
        knowmem_stop: knowmem answers are cut before these strings (MUSE's; ``[]`` keeps all).
        truncate_verbmem_target: compare verbmem continuations with the true continuation
            cut to ``max_new_tokens`` tokens (True, as MUSE) rather than all of it.
        **kwargs: see :class:`EvalSuite` (``mia_k``, ``mia_k_rounding``,
            ``privleak_attack``, ``score_eos``, batching and the gold model).
    """

    def __init__(self, verbmem: str | None = "verbmem_forget", knowmem_forget: str | None = "knowmem_forget",
                 knowmem_retain: str | None = "knowmem_retain", privleak_forget: str | None = "privleak_forget",
                 privleak_holdout: str | None = "privleak_holdout", max_new_tokens: int = 128,
                 stemming: bool = False, knowmem_max_new_tokens: int | None = 32,
                 knowmem_stop: list[str] | None = None, truncate_verbmem_target: bool = True, **kwargs: Any) -> None:
        super().__init__(max_new_tokens=max_new_tokens, **kwargs)
        self.verbmem, self.knowmem_forget, self.knowmem_retain = verbmem, knowmem_forget, knowmem_retain
        self.privleak_forget, self.privleak_holdout = privleak_forget, privleak_holdout
        if (privleak_forget is None) != (privleak_holdout is None):
            raise ValueError("MUSESuite: give both `privleak_forget` and `privleak_holdout`, or neither")
        if knowmem_max_new_tokens is not None and knowmem_max_new_tokens < 1:
            raise ValueError(f"MUSESuite: `knowmem_max_new_tokens` must be >= 1, got {knowmem_max_new_tokens!r}")
        self.stemming, self.knowmem_max_new_tokens = bool(stemming), knowmem_max_new_tokens
        self.knowmem_stop = list(KNOWMEM_STOP if knowmem_stop is None else knowmem_stop)
        self.truncate_verbmem_target = bool(truncate_verbmem_target)

    def required_sets(self) -> list[str]:
        sets = [self.verbmem, self.knowmem_forget, self.knowmem_retain, self.privleak_forget, self.privleak_holdout]
        return [s for s in sets if s]

    def evaluate(self, ev: Evaluator) -> SuiteResult:
        metrics: dict[str, float] = {}
        stats: dict[str, Any] = {}
        if self.verbmem:
            target = self.max_new_tokens if self.truncate_verbmem_target else None
            self._rouge(ev, self.verbmem, metrics, target_tokens=target)
        for name in (self.knowmem_forget, self.knowmem_retain):
            if name:
                option = "max_new_tokens" if self.knowmem_max_new_tokens is None else "knowmem_max_new_tokens"
                self._rouge(ev, name, metrics, max_new_tokens=self.knowmem_max_new_tokens, stop=self.knowmem_stop,
                            option=option)
        if self.privleak_forget:
            aucs = self.text_mia(ev, self.privleak_forget, self.privleak_holdout)
            metrics.update({f"mia/{a}": v for a, v in aucs.items()})
            stats["mia_auc"] = aucs
        return SuiteResult(metrics, stats)

    def _rouge(self, ev: Evaluator, name: str, metrics: dict[str, float], **generate: Any) -> None:
        rouge = RougeL(stemming=self.stemming).to(ev.device)
        rouge.update(*ev.generate(name, ev.rows(name), **generate))
        metrics[f"{name}/rougeL_f1"] = float(rouge.compute()["f1"])
