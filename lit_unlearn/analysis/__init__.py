"""Model analysis utilities (causal tracing)."""

from lit_unlearn.analysis.causal_tracing import causal_trace, subject_mask

__all__ = ["causal_trace", "subject_mask"]
