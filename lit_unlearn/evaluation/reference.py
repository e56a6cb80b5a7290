"""The gold retain model's reference statistics, for comparisons (forget quality, privacy leak).

A suite compares a model with the gold retain model through that model's ``stats`` (the
per-example statistics of :class:`~lit_unlearn.evaluation.SuiteResult`): read from a
``results.json`` that ``lit-unlearn test`` wrote on the retain model (``gold_stats``), or
computed once by running the same suite on ``gold_model`` and cached on disk beside it
(for built-in and cached models) under a key of the suite's configuration and the data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit_unlearn.datamodules.sampling import _world
from lit_unlearn.datamodules.sources import Records
from lit_unlearn.models import load_causal_lm, resolve_model_path
from lit_unlearn.utils import atomic_write_text, cache_home

if TYPE_CHECKING:
    from lit_unlearn.evaluation.suites.base import EvalSuite

CACHE_PREFIX = "lit_unlearn_suite_stats-"


def load_gold_stats(path: str | Path) -> dict[str, Any]:
    """The ``stats`` of a ``results.json`` from ``lit-unlearn test`` (or a bare stats dict)."""
    data = json.loads(Path(path).read_text())
    return data.get("stats", data)


def stats_key(suite: EvalSuite, records: dict[str, Records], datamodule) -> str:
    """Cache key of a suite's statistics: its class and ``config()``, the rows of its sets,
    and the datamodule settings that change the encoded examples."""
    blob = json.dumps({"suite": type(suite).__name__, "config": suite.config(),
                       "sets": {s: records[s].rows for s in suite.required_sets()},
                       "data": [datamodule.max_length, datamodule.prompt_template, datamodule.chat_template,
                                datamodule.max_eval_examples, datamodule.seed]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class GoldReference:
    """Where a suite gets the gold retain model's ``stats`` from, with an in-memory memo.

    Args:
        gold_model: the retain model (name or path); its statistics are computed once per
            configuration and data, and cached on disk beside built-in and cached models.
        gold_stats: a ``results.json`` from ``lit-unlearn test`` on the retain model, used
            instead of ``gold_model`` for every stage and set.
        owner: the suite's class name, for error messages.
    """

    def __init__(self, gold_model: str | None = None, gold_stats: str | None = None, owner: str = "EvalSuite") -> None:
        if gold_stats is not None and not Path(gold_stats).is_file():
            raise FileNotFoundError(f"{owner}: `gold_stats` file '{gold_stats}' does not exist; write it with "
                                    "`lit-unlearn test` on the retain model (results.json)")
        self.gold_model, self.gold_stats = gold_model, gold_stats
        self._memo: dict[str, dict[str, Any]] = {}

    def get(self, suite: EvalSuite, tokenizer, datamodule, stage: str, context, device,
            default_gold: str | None = None) -> dict[str, Any] | None:
        """The gold model's ``stats`` for ``suite`` on the datamodule's ``stage`` sets: loaded
        from ``gold_stats``, from memory or the disk cache, or computed with ``suite.run``.
        None when there is no gold model (neither given nor ``default_gold``)."""
        if self.gold_stats is not None:
            if "file" not in self._memo:
                self._memo["file"] = load_gold_stats(self.gold_stats)
            return self._memo["file"]
        gold_name = self.gold_model or default_gold
        if gold_name is None:
            return None
        records = datamodule.records_for(stage)
        key = stats_key(suite, records, datamodule)
        memo_key = f"{gold_name}:{key}"
        if memo_key in self._memo:
            return self._memo[memo_key]
        path = Path(resolve_model_path(gold_name))
        cache = path / f"{CACHE_PREFIX}{key}.json"
        if cache.is_file():
            stats = json.loads(cache.read_text())
        else:
            gold = load_causal_lm(str(path), dtype=None).to(device)
            stats = suite.run(gold, tokenizer, datamodule, stage, context, with_reference=False).stats
            del gold
            if _world()[1] == 0 and path.resolve().is_relative_to(cache_home().resolve()):
                atomic_write_text(cache, json.dumps(stats))
        self._memo[memo_key] = stats
        return stats
