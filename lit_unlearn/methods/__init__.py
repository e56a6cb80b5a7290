"""Unlearning methods: one ``UnlearningModule`` subclass each."""

from lit_unlearn.methods.altpo import AltPO
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.methods.ceu import CEU
from lit_unlearn.methods.constrained import ConstrainedEntropic
from lit_unlearn.methods.evaluate_only import EvaluateOnly
from lit_unlearn.methods.finetune import FineTune
from lit_unlearn.methods.gradient_ascent import GradAscent, GradDiff
from lit_unlearn.methods.icu import ICU
from lit_unlearn.methods.idk import IdkDPO, IdkNLL
from lit_unlearn.methods.kfade import KFADE
from lit_unlearn.methods.modhifi import ModHiFi
from lit_unlearn.methods.npo import NPO, SimNPO
from lit_unlearn.methods.reglu import REGLU
from lit_unlearn.methods.replay import GeneralReplay
from lit_unlearn.methods.rmu import RMU, SRMU
from lit_unlearn.methods.rule import RULE
from lit_unlearn.methods.satimp import SatImp
from lit_unlearn.methods.selective_amnesia import SelectiveAmnesia
from lit_unlearn.methods.undial import UNDIAL
from lit_unlearn.methods.wga import WGA

# The order of the README's methods table: baselines, preference, representation, the rest.
__all__ = ["GradAscent", "GradDiff", "WGA", "SatImp", "NPO", "SimNPO", "IdkNLL", "IdkDPO", "RULE", "AltPO", "RMU",
           "SRMU", "UNDIAL", "CEU", "SelectiveAmnesia", "KFADE", "REGLU", "ModHiFi", "ConstrainedEntropic", "ICU",
           "FineTune", "EvaluateOnly", "Objectives", "UnlearningModule", "GeneralReplay"]
