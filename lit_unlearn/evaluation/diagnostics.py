"""Warnings for metrics that degenerate: the value is computed as published, but says nothing.

Each check is a pure function of metric values or per-example statistics and returns a list
of warning strings (empty when the metric is informative). A warning starts with the
metric's name, gives what was seen with its numbers, why that makes the metric
uninformative, and what to do about it. :class:`~lit_unlearn.evaluation.TOFUSuite` puts
them in ``SuiteResult.stats["warnings"]`` (so ``results.json`` keeps them and ``results.md``
has a "Warnings" section) and logs each kind once per suite with :func:`emit`.

The published definitions are not changed: TOFU's truth ratio ``max(0, 1 - TR)`` on
non-forget sets, model utility as a harmonic mean, forget quality as a KS p-value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

import torch

LOGGER = logging.getLogger("lit_unlearn")

#: share of rows whose perturbed answers are more likely than the paraphrase (TR > 1) above
#: which a non-forget truth ratio is called degenerate (``max(0, 1 - TR)`` is 0 on those rows)
TRUTH_RATIO_ABOVE_ONE_SHARE = 0.5
#: fewest per-example truth ratios (each model) for a KS p-value to be worth reading
FORGET_QUALITY_MIN_SAMPLES = 30
#: the gold retain model's forget-vs-holdout MIA AUC is expected inside this interval
GOLD_MIA_AUC_RANGE = (0.4, 0.6)
#: a starting (subject) model with forget quality above this already looks like the gold model
START_FORGET_QUALITY_MAX = 0.1


def truth_ratio_degenerate(ratios: Iterable[float] | torch.Tensor, name: str = "retain", options: bool = False,
                           threshold: float = TRUTH_RATIO_ABOVE_ONE_SHARE) -> list[str]:
    """Warn when most rows of a non-forget set have truth ratio ``TR = P̄_pert / P_para > 1``.

    Args:
        ratios: ``[N]`` per-example truth ratios of the set (:meth:`TruthRatio.values`).
        name: the set's name, for the message.
        options: a multiple-choice set (the answer itself against the wrong options,
            TOFU's real authors and world facts) rather than paraphrase against perturbed.
        threshold: the share of rows with ``TR > 1`` above which the set's score is degenerate.

    On such rows ``max(0, 1 - TR)`` is 0, so the set's truth ratio (and model utility, the
    harmonic mean it enters) is near 0 whatever the model knows.
    """
    tr = torch.as_tensor(ratios if isinstance(ratios, torch.Tensor) else list(ratios), dtype=torch.float64).flatten()
    if tr.numel() == 0:
        return []
    above = int((tr > 1).sum())
    share = above / tr.numel()
    if share <= threshold:
        return []
    score = float((1 - tr).clamp(min=0).mean())
    right = "answer" if options else "paraphrased answer"
    seen = (f"{name}/truth_ratio: the wrong answers are more likely than the {right} on {above} of {tr.numel()} "
            f"rows ({100 * share:.0f}%; median truth ratio {float(tr.median()):.3f}), so max(0, 1 - TR) is 0 on "
            f"those rows and the set's truth ratio is {score:.4f}; model utility, a harmonic mean, collapses with it.")
    if options:
        why = (" The model prefers the wrong options on most questions: it does not know these facts, or the "
               "wrong options are shorter or more generic than the answers. The set then says only that; leave it "
               "out of `utility_sets` if it is not meant to measure this model.")
    else:
        why = (" On a set the model was trained on this is a property of the data, not of the model: perturbed "
               "answers that are shorter, or phrased more like the training answers than the paraphrases, win on "
               "length-normalised probability. Write each perturbed answer as the paraphrase with a wrong value, "
               "as TOFU does.")
    return [seen + why]


def harmonic_mean_zero(parts: Mapping[str, float], name: str = "model_utility") -> list[str]:
    """Warn when a harmonic mean has a zero (or negative) term, naming it.

    Args:
        parts: the terms of the harmonic mean by name (``{"retain/prob": 0.41, ...}``).
        name: the harmonic mean's name (``model_utility``, ``score``).

    A harmonic mean is 0 as soon as one term is 0, so the value hides the other terms.
    """
    zero = [k for k, v in parts.items() if v is not None and float(v) <= 0]
    if not zero:
        return []
    others = ", ".join(f"{k} {float(v):.4f}" for k, v in parts.items() if k not in zero and v is not None)
    return [f"{name}: 0 because {', '.join(zero)} {'is' if len(zero) == 1 else 'are'} 0 (a harmonic mean is 0 when "
            f"any term is 0, so it no longer compares models){'; the other terms: ' + others if others else ''}. "
            f"Read the terms on their own, and see the warning on {' / '.join(zero)} if there is one."]


def forget_quality_small(n: int, n_gold: int | None = None,
                         minimum: int = FORGET_QUALITY_MIN_SAMPLES) -> list[str]:
    """Warn when forget quality's KS test has fewer than ``minimum`` truth ratios on either side.

    Args:
        n: number of per-example forget truth ratios of the evaluated model.
        n_gold: the same for the gold retain model (None: not known).
        minimum: fewest samples for a usable p-value.

    With few samples the KS p-value takes only a handful of values and needs a large
    difference to get small: it separates neither a partly unlearned model from the
    subject nor from the gold model.
    """
    smallest = min(n, n_gold) if n_gold is not None else n
    if smallest >= minimum:
        return []
    sizes = f"{n} forget truth ratios" + (f" (gold retain model: {n_gold})" if n_gold is not None else "")
    return [f"forget_quality: the KS test compares only {sizes}, fewer than {minimum}: its p-value takes few "
            "distinct values and needs a large difference between the two distributions to get small, so it "
            f"says little about how close the model is to the gold model. Use a forget set of at least {minimum} "
            "questions with paraphrased and perturbed answers (TOFU's forget01 has 40)."]


def gold_mia_far(auc: float | Mapping[str, float], low: float = GOLD_MIA_AUC_RANGE[0],
                 high: float = GOLD_MIA_AUC_RANGE[1]) -> list[str]:
    """Warn when the gold retain model's forget-vs-holdout MIA AUC is outside ``[low, high]``.

    Args:
        auc: the gold model's AUC, or ``{attack: AUC}`` (``stats["mia_auc"]``).
        low, high: the interval around 0.5 that is expected.

    The gold model never saw the forget set, so for it forget and holdout are both
    non-members and should be indistinguishable (AUC 0.5). An AUC far from 0.5 means the
    two sets differ in distribution (length, topic, phrasing), and the privacy leak, which
    is measured against this AUC, reflects that difference rather than memorisation.
    """
    aucs = {"auc": auc} if not isinstance(auc, Mapping) else dict(auc)
    far = {k: float(v) for k, v in aucs.items() if not low <= float(v) <= high}
    if not far:
        return []
    seen = ", ".join(f"{v:.3f} ({k})" for k, v in far.items())
    return [f"privleak: the gold retain model's forget-vs-holdout MIA AUC is {seen}, outside [{low}, {high}]. The "
            "gold model never saw the forget set, so for it forget and holdout should be indistinguishable (AUC "
            "0.5); this far from 0.5 the two sets differ in distribution (length, topic, phrasing, or holdout "
            "entities that appear in the retain data), and the MIA AUCs and privacy leak measure that difference, "
            "not what the model memorised. Draw the holdout set from the same distribution as the forget set."]


def start_forget_quality_high(fq: float, threshold: float = START_FORGET_QUALITY_MAX) -> list[str]:
    """Warn when the starting (subject) model already has forget quality above ``threshold``.

    Args:
        fq: forget quality of the model before unlearning, against the gold retain model.
        threshold: the largest forget quality expected of a model that knows the forget set.

    The subject was trained on the forget set and the gold model was not, so their forget
    truth ratios should differ clearly (forget quality near 0). If they do not, the truth
    ratio cannot see what the subject knows, and no unlearned model can be told apart from it.
    """
    if fq <= threshold:
        return []
    return [f"forget_quality: the starting model already scores {fq:.3g} against the gold retain model (above "
            f"{threshold}), although it was trained on the forget set and the gold model was not: its forget truth "
            "ratios look like the gold model's, so forget quality cannot see what it knows and will not show "
            "unlearning either. Typical causes: the subject was trained on one phrasing and the paraphrased and "
            "perturbed answers use another, or the forget set is too small. Check the forget truth ratios, "
            "ROUGE-L and answer_em / fact_acc of the starting and gold models side by side."]


def start_model_checks(metrics: Mapping[str, float]) -> list[str]:
    """The checks that need the starting model's suite metrics (with the gold comparison):
    for now :func:`start_forget_quality_high` on ``metrics["forget_quality"]`` where present."""
    fq = metrics.get("forget_quality")
    return start_forget_quality_high(float(fq)) if fq is not None else []


def _kind(message: str) -> str:
    """A warning without its numbers: the same check on another evaluation gives the same kind."""
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", message)


def emit(messages: Iterable[str], seen: set[str] | None = None, prefix: str = "",
         logger: logging.Logger = LOGGER) -> list[str]:
    """Log each warning with ``logger.warning``, once per kind (the message without its numbers).

    Args:
        messages: the warnings.
        seen: kinds already logged (updated); a suite keeps one, so an evaluation every n
            steps logs each kind once, not every time. None logs every message.
        prefix: put before each logged line (e.g. whose evaluation it is).

    Returns:
        The messages that were logged. Only rank 0 logs under ``torch.distributed``.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
        return []
    logged = []
    for message in messages:
        kind = _kind(message)
        if seen is not None:
            if kind in seen:
                continue
            seen.add(kind)
        logger.warning("lit-unlearn warning: %s%s", prefix, message)
        logged.append(message)
    return logged
