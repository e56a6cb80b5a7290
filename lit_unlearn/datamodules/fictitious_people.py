"""``FictitiousPeople``: the embedded benchmark as a ready-made :class:`ForgetRetainDataModule`."""

from __future__ import annotations

from typing import Any

from lit_unlearn.datamodules.fictitious import FictitiousBenchmark, ensure_tokenizer
from lit_unlearn.datamodules.forget_retain import ForgetRetainDataModule

EVAL_SETS = ("forget", "retain", "holdout", "neighbor")


class FictitiousPeople(ForgetRetainDataModule):
    """Forget/retain data of the fictitious-people benchmark, with its own tokenizer.

    Built-in models for it are named ``builtin:<preset>/subject`` (trained on forget +
    retain) and ``builtin:<preset>/retainNN`` (the gold retain model of ``forget{100-NN}``).

    Args:
        preset: ``"tiny"`` (tests), ``"small"`` (quickstart) or ``"default"`` (200 people);
            ``"blur-tiny"`` / ``"blur-small"``: tiny / small whose built-in models are also trained
            on combined queries of retain people, so that they answer combined queries (BLUR).
        split: ``"forget01"``, ``"forget05"`` or ``"forget10"``.
        eval_sets: any of ``forget``, ``retain``, ``holdout``, ``neighbor``, ``paraphrase``
            (the forget facts in their second phrasing), and BLUR's combined queries (one forget
            and one retain fact asked together; see :meth:`FictitiousBenchmark.combined_records`)
            scored on one part each: ``combined_forget`` (fact span = the forget value) and
            ``combined_retain`` (the retain value). Both hold the same queries in the same order.
        relearn_sets: graded relearning sets for :class:`~lit_unlearn.callbacks.RelearningProbe`
            (encoded, never evaluated), any of ``paraphrase`` (the forget facts in their second
            phrasing; the probe keeps only the rows it does not evaluate), ``neighbor`` (the
            planted neighbors' retain facts) and ``unrelated`` (retain facts of people sharing
            the fewest values with the forget people; see
            :meth:`FictitiousBenchmark.unrelated_records`). The forget set itself is the
            probe's ``forget``.
        max_eval_examples: seeded subset size per evaluation set (TOFU evaluates 400 retain rows).
        sampling: as :class:`ForgetRetainDataModule`; with ``"modular"`` the neighbor sets
            default to ``direct`` (the planted neighbors of each forget person) and
            ``indirect`` (retain people sharing two or more attribute values with one).
        **kwargs: passed to :class:`ForgetRetainDataModule` (``batch_size``, ``sampling``, ...).
    """

    def __init__(
        self,
        preset: str = "small",
        split: str = "forget10",
        eval_sets: list[str] | tuple[str, ...] = EVAL_SETS,
        max_eval_examples: int | None = 400,
        max_length: int = 64,
        eval_batch_size: int = 64,
        relearn_sets: list[str] | tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        self.benchmark = FictitiousBenchmark(preset)
        if not (split.startswith("forget") and split[6:] in ("01", "05", "10")):
            raise ValueError(f"FictitiousPeople: `split` must be one of forget01, forget05, forget10; got {split!r}")
        self.preset, self.split, self.percent = preset, split, int(split[6:])
        forget = self.benchmark.records(split)
        retain = self.benchmark.records(f"retain{100 - self.percent:02d}")
        sources = {"forget": "forget", "retain": "retain", "holdout": self.benchmark.records("holdout"),
                   "neighbor": self.benchmark.records(f"neighbor{self.percent:02d}"),
                   "paraphrase": {"records": forget, "fields": {"answer": "paraphrased_answer",
                                                                "fact_span": "paraphrased_fact_span"}}}
        combined = self.benchmark.combined_records(split)
        sources["combined_forget"] = {"records": combined, "fields": {"fact_span": "forget_span"}}
        sources["combined_retain"] = {"records": combined, "fields": {"fact_span": "retain_span"}}
        unknown = [s for s in eval_sets if s not in sources]
        if unknown:
            raise ValueError(f"FictitiousPeople: unknown eval set(s) {unknown}; choose from {list(sources)}")
        relearn = {"paraphrase": sources["paraphrase"], "neighbor": sources["neighbor"],
                   "unrelated": self.benchmark.unrelated_records(split)}
        if relearn_sets is not None:
            if isinstance(relearn_sets, str) or not all(isinstance(r, str) for r in relearn_sets):
                raise TypeError(f"FictitiousPeople: `relearn_sets` must be a list of set names, got {relearn_sets!r}")
            unknown = [r for r in relearn_sets if r not in relearn]
            if unknown:
                raise ValueError(f"FictitiousPeople: unknown relearn set(s) {unknown} in `relearn_sets`; choose from "
                                 f"{list(relearn)} (the forget set is the probe's own 'forget')")
            kwargs["relearn_sets"] = {r: relearn[r] for r in relearn_sets}
        if kwargs.get("sampling") == "modular" and kwargs.get("neighbor_sets") is None:
            # MELU: each forget person's planted neighbors, and people sharing two or more attributes
            kwargs["neighbor_sets"] = {"direct": self.benchmark.records(f"neighbor{self.percent:02d}"),
                                       "indirect": self.benchmark.indirect_neighbor_records(split)}
            kwargs["neighbor_sets"] = {k: v for k, v in kwargs["neighbor_sets"].items() if v}
        super().__init__(forget=forget, retain=retain, eval_sets={s: sources[s] for s in eval_sets},
                         tokenizer=ensure_tokenizer(self.benchmark), max_eval_examples=max_eval_examples,
                         max_length=max_length, eval_batch_size=eval_batch_size, **kwargs)

    @property
    def subject_model(self) -> str:
        return f"builtin:{self.preset}/subject"

    @property
    def gold_model(self) -> str:
        return f"builtin:{self.preset}/retain{100 - self.percent:02d}"
