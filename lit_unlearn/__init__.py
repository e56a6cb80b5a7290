"""lit-unlearn: machine unlearning of causal language models with PyTorch Lightning."""

from lit_unlearn import zoo as _zoo  # noqa: F401  (registers the builtin: model names)
from lit_unlearn.callbacks import (
    DualVariable, GradientProjection, RelearningProbe, StabilityGap, SuiteEvaluation, TradeOffCurves,
)
from lit_unlearn.datamodules import FictitiousPeople, ForgetRetainDataModule
from lit_unlearn.evaluation import MUSESuite, TOFUSuite
from lit_unlearn.methods import NPO, ConstrainedEntropic, FineTune, GradAscent, GradDiff, Objectives, SimNPO, UnlearningModule
from lit_unlearn.models import load_causal_lm, load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "ConstrainedEntropic", "DualVariable", "FictitiousPeople", "GradientProjection", "FineTune", "ForgetRetainDataModule", "GradAscent", "GradDiff", "MUSESuite", "NPO",
    "Objectives", "RelearningProbe", "SimNPO", "StabilityGap", "SuiteEvaluation", "TOFUSuite", "TradeOffCurves",
    "UnlearningModule", "load_causal_lm", "load_tokenizer",
]
