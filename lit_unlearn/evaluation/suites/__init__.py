"""Evaluation suites: the base class and one module per benchmark (TOFU, MUSE, RWKU) or behaviour (refusal)."""

from lit_unlearn.evaluation.suites.base import EvalSuite, SuiteResult
from lit_unlearn.evaluation.suites.muse import MUSESuite
from lit_unlearn.evaluation.suites.refusal import RefusalSuite
from lit_unlearn.evaluation.suites.rwku import RWKUSuite
from lit_unlearn.evaluation.suites.tofu import TOFUSuite

__all__ = ["EvalSuite", "MUSESuite", "RWKUSuite", "RefusalSuite", "SuiteResult", "TOFUSuite"]
