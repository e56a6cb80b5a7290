"""Evaluation suites: the base class and one module per benchmark (TOFU, MUSE, RWKU, DUSK, BLUR, code
leakage) or behaviour (refusal)."""

from lit_unlearn.evaluation.suites.base import EvalSuite, SuiteResult
from lit_unlearn.evaluation.suites.blur import BLURSuite
from lit_unlearn.evaluation.suites.code_leak import CodeLeakSuite
from lit_unlearn.evaluation.suites.dusk import DUSKSuite
from lit_unlearn.evaluation.suites.muse import MUSESuite
from lit_unlearn.evaluation.suites.refusal import RefusalSuite
from lit_unlearn.evaluation.suites.rwku import RWKUSuite
from lit_unlearn.evaluation.suites.tofu import TOFUSuite

__all__ = ["BLURSuite", "CodeLeakSuite", "DUSKSuite", "EvalSuite", "MUSESuite", "RWKUSuite", "RefusalSuite",
           "SuiteResult", "TOFUSuite"]
