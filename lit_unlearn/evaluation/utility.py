"""Model utility: the harmonic mean of utility metrics (TOFU)."""

from __future__ import annotations

from collections.abc import Iterable


def harmonic_mean(values: Iterable[float]) -> float:
    """Harmonic mean; 0 if any value is 0 or negative, NaN for no values."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan")
    if min(vals) <= 0:
        return 0.0
    return len(vals) / sum(1 / v for v in vals)
