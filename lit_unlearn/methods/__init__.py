"""Unlearning methods: one ``UnlearningModule`` subclass each."""

from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.methods.constrained import ConstrainedEntropic
from lit_unlearn.methods.finetune import FineTune
from lit_unlearn.methods.gradient_ascent import GradAscent, GradDiff
from lit_unlearn.methods.npo import NPO, SimNPO

__all__ = ["ConstrainedEntropic", "FineTune", "GradAscent", "GradDiff", "NPO", "Objectives", "SimNPO", "UnlearningModule"]
