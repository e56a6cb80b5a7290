"""Continual-evaluation statistics of a retain-accuracy curve (the stability gap)."""

from __future__ import annotations

from collections.abc import Sequence


def stability_metrics(steps: Sequence[int], retain_acc: Sequence[float], forget_acc: float | None = None,
                      window: int = 10) -> dict[str, float]:
    """Statistics of the retain accuracy ``A_n`` measured after ``steps[i]`` optimizer steps.

    Args:
        steps: evaluation steps, increasing; ``steps[0]`` is normally 0 (the starting model).
        retain_acc: ``A`` at those steps.
        forget_acc: the current forget accuracy (for WC-ACC).
        window: ``w`` in optimizer steps for windowed forgetting.

    Returns:
        ``min_acc`` = min_n A_n; ``gap`` = A_0 - min_acc (the stability gap);
        ``wf`` = max over n and m with n - w <= m < n of A_m - A_n (windowed forgetting, >= 0);
        ``wc_acc`` = ½ (1 - forget_acc) + ½ min_acc (the current task is forgetting), when
        ``forget_acc`` is given.
    """
    if len(steps) != len(retain_acc) or not steps:
        raise ValueError("stability_metrics: `steps` and `retain_acc` must be non-empty and of equal length")
    min_acc = min(retain_acc)
    wf = 0.0
    for n in range(len(steps)):
        for m in range(n):
            if steps[n] - window <= steps[m] < steps[n]:
                wf = max(wf, retain_acc[m] - retain_acc[n])
    out = {"min_acc": float(min_acc), "gap": float(retain_acc[0] - min_acc), "wf": float(wf)}
    if forget_acc is not None:
        out["wc_acc"] = 0.5 * (1 - forget_acc) + 0.5 * min_acc
    return out
