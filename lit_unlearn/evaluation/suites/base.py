"""``EvalSuite``: the base class of the evaluation suites, and ``SuiteResult``.

A suite evaluates one model on the datamodule's validation or test records, sharded by
record across ranks (every metric keeps sum or gathered per-example states, so results
are the same on any number of processes), and returns a flat ``{name: value}`` dict plus
the per-example statistics that a later run needs as its reference (``stats``).
Comparisons with the gold retain model (forget quality, privacy leak) use the gold model's
``stats`` (see :mod:`lit_unlearn.evaluation.reference`).

A new suite subclasses :class:`EvalSuite` and implements ``required_sets`` and
``evaluate`` (and ``compare`` for comparisons beyond the privacy leak), in one file.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lit_unlearn import checks
from lit_unlearn.evaluation.engine import Evaluator
from lit_unlearn.evaluation.eos import without_final_eos
from lit_unlearn.evaluation.mia import ATTACKS, K_ROUNDINGS, MembershipInference, mia_scores, privacy_leak, zlib_length
from lit_unlearn.evaluation.reference import GoldReference

PRIVLEAK_ATTACK = "min_k"


def rank_mean(values: list[float], ev: Evaluator) -> float:
    """Mean over every rank's values (each rank scores its share of a set's rows)."""
    from torchmetrics import MeanMetric

    metric = MeanMetric().to(ev.device)
    if values:
        metric.update(torch.tensor(values, dtype=torch.float64, device=ev.device))
    return float(metric.compute())


@dataclass
class SuiteResult:
    """``metrics``: flat name -> value; ``stats``: per-example data a later run compares against;
    ``generations``: per set generated on, its first rows as ``{"prompt", "reference",
    "generated"}`` (``RunSummary`` writes them to ``generations.json``)."""

    metrics: dict[str, float]
    stats: dict[str, Any] = field(default_factory=dict)
    generations: dict[str, list[dict]] = field(default_factory=dict)


class EvalSuite:
    """Base class: sharding, batched forward passes, generation and the gold-model reference.

    ``supports_instruction``: whether the suite puts ``run``'s ``instruction`` before its prompts.

    Args:
        batch_size: examples per forward pass and per generation batch.
        max_new_tokens: generation budget for ROUGE; clamped to the model's context minus the
            prompt (``max_position_embeddings``), with a warning (see
            :class:`~lit_unlearn.evaluation.engine.GenerationLimit`).
        gold_model: the retain model to compare with (name or path); its statistics are
            computed once (cached beside built-in and cached models).
        gold_stats: a ``results.json`` from ``lit-unlearn test`` on the retain model, instead
            of ``gold_model``.
        share_prompts: run each question once with the KV cache and score all of its answers
            (answer, paraphrase, perturbed) as continuations; off runs one full pass each.
        progress: show a progress bar.
        mia_k: fraction of tokens for Min-K% and Min-K%++ (0.4: MUSE's ``Min-40%`` and
            open-unlearning's ``k`` for both).
        mia_k_rounding: ``"floor"`` (published: ``max(1, int(k * n))`` tokens, as
            open-unlearning's attacks; MUSE's ``int(k * n)`` is the same whenever it is not
            0, where MUSE's mean is NaN) or ``"ceil"`` (``ceil(k * n)``, this library before).
        privleak_attack: the MIA attack whose AUC gives ``privleak`` (one of ``loss``,
            ``zlib``, ``min_k``, ``min_k_pp``); ``min_k`` as MUSE (``forget_holdout_Min-40%``)
            and open-unlearning (``privleak`` on ``mia_min_k``). Every attack's is logged as
            ``privleak/<attack>``.
        score_eos: score the final EOS label in exact memorization, extraction strength and
            the attacks that the published code runs without it (False: as published; see
            :func:`~lit_unlearn.evaluation.eos.without_final_eos`).
        keep_generations: keep the first this many generations of each set (prompt, reference
            and generated text) in ``SuiteResult.generations`` for inspection (``lit-unlearn
            test`` writes them to ``generations.json`` beside ``results.json``); 0 keeps none.
            Under DDP, from rank 0's share of the rows.
    """

    supports_instruction = False
    compares_with_gold = True  # False: no gold-model reference is loaded or computed (``reference`` is None)

    def __init__(self, batch_size: int = 32, max_new_tokens: int = 64, gold_model: str | None = None,
                 gold_stats: str | None = None, share_prompts: bool = True, progress: bool = True,
                 mia_k: float = 0.4, mia_k_rounding: str = "floor", privleak_attack: str = PRIVLEAK_ATTACK,
                 score_eos: bool = False, keep_generations: int = 20) -> None:
        name = type(self).__name__
        if isinstance(keep_generations, bool) or not isinstance(keep_generations, int) or keep_generations < 0:
            raise ValueError(f"{name}: `keep_generations` must be an integer >= 0 (0 keeps none), got "
                             f"{keep_generations!r}")
        checks.positive_int(name, "batch_size", batch_size)
        checks.positive_int(name, "max_new_tokens", max_new_tokens)
        if not 0 < mia_k <= 1:
            raise ValueError(f"{name}: `mia_k` must be in (0, 1], got {mia_k!r}")
        if mia_k_rounding not in K_ROUNDINGS:
            raise ValueError(f"{name}: `mia_k_rounding` must be one of {K_ROUNDINGS}, got {mia_k_rounding!r}")
        if privleak_attack not in ATTACKS:
            raise ValueError(f"{name}: `privleak_attack` must be one of {ATTACKS}, got {privleak_attack!r}")
        self.gold = GoldReference(gold_model, gold_stats, owner=name)
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.share_prompts, self.progress = share_prompts, progress
        self.mia_k, self.mia_k_rounding, self.privleak_attack = mia_k, mia_k_rounding, privleak_attack
        self.score_eos = score_eos
        self.keep_generations = keep_generations

    @property
    def gold_model(self) -> str | None:
        return self.gold.gold_model

    @property
    def gold_stats(self) -> str | None:
        return self.gold.gold_stats

    # -------------------------------------------------------------- interface
    def required_sets(self) -> list[str]:
        raise NotImplementedError

    def evaluate(self, ev: Evaluator) -> SuiteResult:
        """Compute the suite's metrics with ``ev`` (no reference comparisons)."""
        raise NotImplementedError

    def compare(self, result: SuiteResult, reference: dict[str, Any]) -> dict[str, float]:
        """Metrics that need the gold model's ``stats``: here the privacy leak of every MIA
        attack both ran (``privleak/<attack>``; ``privleak`` is ``privleak_attack``'s);
        suites add their own (forget quality)."""
        out = {}
        for attack, value in result.stats.get("mia_auc", {}).items():
            if attack in reference.get("mia_auc", {}):
                out[f"privleak/{attack}"] = privacy_leak(value, reference["mia_auc"][attack])
        if f"privleak/{self.privleak_attack}" in out:
            out["privleak"] = out[f"privleak/{self.privleak_attack}"]
        return out

    def config(self) -> dict[str, Any]:
        """Settings that change the ``stats`` (part of the gold statistics' cache key)."""
        return {"max_new_tokens": self.max_new_tokens, "mia_k": self.mia_k, "mia_k_rounding": self.mia_k_rounding,
                "score_eos": self.score_eos}

    def text_mia(self, ev: Evaluator, members: str, nonmembers: str) -> dict[str, float]:
        """AUC of every MIA attack (``ATTACKS``) separating the text records of set ``members`` from
        those of ``nonmembers``, each text scored on its own tokens (without the EOS the datamodule
        appends, unless ``score_eos``); zlib on the text field."""
        eos = self.eos_id(ev)
        mia = MembershipInference(ATTACKS).to(ev.device)
        for name in (members, nonmembers):
            recs, rows = ev.records[name], ev.rows(name)
            field_name = ev.dm.fields_for(recs).text
            for batch, logits in ev.forward(ev.encode(name, rows), name):
                texts = [recs.rows[rows[int(i)]].get(field_name) or "" for i in batch["index"]]
                zl = torch.tensor([max(zlib_length(t), 1) for t in texts], device=ev.device)
                scores = mia_scores(logits, without_final_eos(batch["labels"], eos), zl, self.mia_k,
                                    k_rounding=self.mia_k_rounding)
                mia.update(scores, member=name == members)
        return {a: float(v) for a, v in mia.compute().items()}

    def eos_id(self, ev: Evaluator) -> int | None:
        """The EOS id left out where the published code leaves it out (None with ``score_eos``)."""
        return None if self.score_eos else ev.tokenizer.eos_token_id

    # -------------------------------------------------------------- running
    @torch.no_grad()
    def run(self, model: nn.Module, tokenizer, datamodule, stage: str = "test", context=None,
            with_reference: bool = True, default_gold: str | None = None,
            instruction: str | None = None) -> SuiteResult:
        """Evaluate ``model`` on the datamodule's ``stage`` (``"test"`` or ``"val"``) records.

        ``default_gold`` is the gold model used when the suite names neither ``gold_model``
        nor ``gold_stats`` (the module passes its ``compare_with``). ``instruction`` goes
        before every prompt in suites that support it (``RWKUSuite``; in-context unlearning)."""
        if instruction and not self.supports_instruction:
            raise ValueError(f"{type(self).__name__} does not put an instruction before its prompts (in-context "
                             "unlearning); use a suite that does, such as RWKUSuite")
        records = datamodule.records_for(stage)
        missing = [s for s in self.required_sets() if s not in records]
        if missing:
            raise ValueError(f"{type(self).__name__} needs the {stage} set(s) {missing}; the datamodule has "
                             f"{sorted(records)}. Name them in `{'test_sets' if stage == 'test' else 'eval_sets'}` "
                             "or set the suite's set names")
        ev = Evaluator(model, tokenizer, datamodule, records, self.batch_size, self.max_new_tokens,
                       context or nullcontext(), self.progress, self.share_prompts, instruction,
                       keep_generations=self.keep_generations)
        was_training = model.training
        model.eval()
        try:
            result = self.evaluate(ev)
        finally:
            model.train(was_training)
        for name, kept in ev.generations.items():  # what ev.generate / ev.keep kept, unless the suite set its own
            result.generations.setdefault(name, kept)
        if with_reference:
            reference = self.reference(tokenizer, datamodule, stage, context, next(model.parameters()).device,
                                       default_gold)
            if reference is not None:
                result.metrics.update(self.compare(result, reference))
        return result

    def reference(self, tokenizer, datamodule, stage: str, context, device,
                  default_gold: str | None = None) -> dict[str, Any] | None:
        """The gold model's ``stats`` (loaded, cached, or computed once); see :class:`GoldReference`."""
        if not self.compares_with_gold:
            return None
        return self.gold.get(self, tokenizer, datamodule, stage, context, device, default_gold)
