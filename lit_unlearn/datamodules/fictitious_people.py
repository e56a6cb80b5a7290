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
        preset: ``"tiny"`` (tests), ``"small"`` (quickstart) or ``"default"`` (200 people).
        split: ``"forget01"``, ``"forget05"`` or ``"forget10"``.
        eval_sets: any of ``forget``, ``retain``, ``holdout``, ``neighbor``, ``paraphrase``
            (the forget facts in their second phrasing).
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
        unknown = [s for s in eval_sets if s not in sources]
        if unknown:
            raise ValueError(f"FictitiousPeople: unknown eval set(s) {unknown}; choose from {list(sources)}")
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
