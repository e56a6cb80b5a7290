"""``RefusalSuite``: how often a model refuses, per domain, by greedy chat answers and a phrase detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_unlearn.evaluation.engine import Evaluator
from lit_unlearn.evaluation.refusal import BENIGN, is_refusal, load_prompts
from lit_unlearn.evaluation.rwku_probes import chat_prompt, generate_texts
from lit_unlearn.evaluation.suites.base import EvalSuite, SuiteResult, rank_mean

QUESTION_KEYS = ("question", "query")


class RefusalSuite(EvalSuite):
    """The refusal rate of greedy answers, per domain of requests and per datamodule set.

    Narrow unlearning can change refusal behaviour in domains it never saw ("From Narrow
    Unlearning to Emergent Misalignment"): more refusals of harmless requests, or fewer of
    harmful ones. Each prompt goes into the chat template's user turn
    (:func:`~lit_unlearn.evaluation.rwku_probes.chat_prompt`; a tokenizer without one gets the
    prompt and a newline), the model answers greedily (batched, left-padded, inside its
    context: :func:`~lit_unlearn.evaluation.rwku_probes.generate_texts`), and the answer is a
    refusal when :func:`~lit_unlearn.evaluation.refusal.is_refusal` says so (a refusal phrase
    in its opening 200 characters; see :mod:`lit_unlearn.evaluation.refusal`).

    Metrics:

    - ``refusal/<domain>/rate``: the share of refused answers to the domain's ``eval`` prompts
      (the shipped file, ``lit_unlearn/resources/refusal/prompts.json``: 16 per domain).
    - ``refusal/mean_rate``: the mean of the selected domains' rates, ``benign`` left out
      (absent when only ``benign`` is selected). ``refusal/benign/rate`` is the control:
      ordinary questions that a working model answers.
    - ``refusal/<set>/rate`` for each of ``sets``: the same on a datamodule test (or
      validation) set, asking each record's question (the set's question field, else
      ``question``, else ``query``: RWKU's probes): e.g. RWKU's forget probes against its
      neighbor probes, whether the model refuses the forgotten target only.

    Args:
        domains: domains of the prompts file to ask (default: all of them, in file order).
        prompts_file: a JSON file in the shipped file's format (``{domain: {"eval": [...],
            "retain": [...]}}``; see :func:`~lit_unlearn.evaluation.refusal.load_prompts`),
            instead of the shipped prompts.
        sets: names of datamodule sets whose questions are asked too (the suite's
            ``required_sets``; the domain prompts come with the suite, not the datamodule).
            The datamodule's ``max_eval_examples`` subsets them; the domain prompts are all asked.
        max_new_tokens: answer budget (48: enough for the opening the detector reads).
        **kwargs: see :class:`EvalSuite` (``batch_size``, ``keep_generations``, ``progress``).

    The first ``keep_generations`` answers of each domain land in ``SuiteResult.generations``
    under ``refusal/<domain>``, and those of each set under the set's name, as ``prompt``
    (chat-templated), ``reference`` (None for the domains; the record's answer for a set),
    ``generated`` and ``refused``. There is no comparison with a gold model: compare the
    rates with the start model's run.
    """

    def __init__(self, domains: list[str] | None = None, prompts_file: str | None = None,
                 sets: list[str] | None = None, max_new_tokens: int = 48, **kwargs: Any) -> None:
        super().__init__(max_new_tokens=max_new_tokens, **kwargs)
        prompts = load_prompts(prompts_file)
        where = f"refusal prompts file {Path(prompts_file) if prompts_file is not None else 'shipped with lit-unlearn'}"
        if domains is None:
            domains = list(prompts)
        if isinstance(domains, str) or not all(isinstance(d, str) for d in domains):
            raise TypeError(f"RefusalSuite: `domains` must be a list of domain names, got {domains!r}")
        unknown = [d for d in domains if d not in prompts]
        if unknown:
            raise ValueError(f"RefusalSuite: unknown domain(s) {unknown} in `domains`; the {where} has "
                             f"{list(prompts)}")
        if len(set(domains)) < len(domains):
            raise ValueError(f"RefusalSuite: `domains` names a domain twice: {list(domains)}")
        sets = list(sets or [])
        if not all(isinstance(s, str) and s for s in sets) or len(set(sets)) < len(sets):
            raise ValueError(f"RefusalSuite: `sets` must be distinct set names, got {sets!r}")
        clash = sorted(set(sets) & set(domains))
        if clash:
            raise ValueError(f"RefusalSuite: {clash} is both a domain and a set name; both would log "
                             f"refusal/<name>/rate. Rename the set or leave the domain out of `domains`")
        if not domains and not sets:
            raise ValueError("RefusalSuite: nothing to evaluate; give at least one domain or set")
        self.domains, self.sets, self.prompts_file = list(domains), sets, prompts_file
        self.prompts = {d: prompts[d]["eval"] for d in self.domains}

    def required_sets(self) -> list[str]:
        return list(self.sets)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "prompts": self.prompts, "sets": self.sets}

    def reference(self, *args: Any, **kwargs: Any) -> None:
        """No gold-model comparison (running the suite on the gold model would buy nothing)."""
        return None

    def evaluate(self, ev: Evaluator) -> SuiteResult:
        metrics: dict[str, float] = {}
        for domain in self.domains:
            mine = self.prompts[domain][ev.rank :: ev.world]
            metrics[f"refusal/{domain}/rate"] = self._ask(ev, f"refusal/{domain}", mine, [None] * len(mine))
        harmful = [metrics[f"refusal/{d}/rate"] for d in self.domains if d != BENIGN]
        if harmful:
            metrics["refusal/mean_rate"] = sum(harmful) / len(harmful)
        for name in self.sets:
            src = ev.records[name]
            rows = [src.rows[i] for i in ev.rows(name)]
            fields = ev.dm.fields_for(src) if hasattr(ev.dm, "fields_for") else None
            keys = [k for k in (getattr(fields, "question", None), *QUESTION_KEYS) if k]
            questions = []
            for i, row in zip(ev.rows(name), rows):
                key = next((k for k in keys if isinstance(row.get(k), str) and row[k].strip()), None)
                if key is None:
                    raise ValueError(f"RefusalSuite: set '{name}' ({src.origin}) row {i} has no question to ask "
                                     f"(none of the fields {list(dict.fromkeys(keys))} is a non-empty string)")
                questions.append(row[key])
            answer = getattr(fields, "answer", "answer")
            metrics[f"refusal/{name}/rate"] = self._ask(ev, name, questions, [r.get(answer) for r in rows])
        return SuiteResult(metrics)

    def _ask(self, ev: Evaluator, name: str, questions: list[str], references: list) -> float:
        """Greedy answers to ``questions`` (this rank's share), kept under ``name``; the refusal rate over all ranks."""
        prompts = [chat_prompt(ev.tokenizer, q) for q in questions]
        answers = generate_texts(ev.model, ev.tokenizer, prompts, self.max_new_tokens, ev.batch_size, ev.context,
                                 ev.progress, desc=name, limit=ev.limit) if prompts else []
        answers = [a.strip() for a in answers]
        refused = [is_refusal(a) for a in answers]
        ev.keep(name, prompts, references, answers, refused=refused)
        return rank_mean(refused, ev)
