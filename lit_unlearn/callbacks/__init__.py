"""Callbacks that work with any unlearning method (one per file)."""

from lit_unlearn.callbacks.suite_evaluation import SuiteEvaluation

__all__ = ["SuiteEvaluation"]
