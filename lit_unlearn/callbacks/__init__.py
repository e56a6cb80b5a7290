"""Callbacks that work with any unlearning method (one per file)."""

from lit_unlearn.callbacks.attribution import DataAttributionWeights
from lit_unlearn.callbacks.divergence_guard import DivergenceGuard
from lit_unlearn.callbacks.dual_variable import DualVariable
from lit_unlearn.callbacks.gradient_projection import GradientProjection
from lit_unlearn.callbacks.log_progress import LogProgress
from lit_unlearn.callbacks.null_space import NullSpaceProjection
from lit_unlearn.callbacks.relearning_probe import RelearningProbe
from lit_unlearn.callbacks.save_pretrained import SavePretrained
from lit_unlearn.callbacks.stability_gap import StabilityGap
from lit_unlearn.callbacks.suite_evaluation import SuiteEvaluation
from lit_unlearn.callbacks.summary import RunSummary
from lit_unlearn.callbacks.tradeoff import TradeOffCurves

__all__ = ["DataAttributionWeights", "DivergenceGuard", "DualVariable", "GradientProjection", "LogProgress",
           "NullSpaceProjection", "RelearningProbe", "RunSummary", "SavePretrained", "StabilityGap", "SuiteEvaluation",
           "TradeOffCurves"]
