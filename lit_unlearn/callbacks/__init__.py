"""Callbacks that work with any unlearning method (one per file)."""

from lit_unlearn.callbacks.dual_variable import DualVariable
from lit_unlearn.callbacks.gradient_projection import GradientProjection
from lit_unlearn.callbacks.suite_evaluation import SuiteEvaluation

__all__ = ["DualVariable", "GradientProjection", "SuiteEvaluation"]
