"""Metrics for unlearning evaluation (torchmetrics, synced across ranks) and the suites."""

from lit_unlearn.evaluation import diagnostics
from lit_unlearn.evaluation.engine import Evaluator
from lit_unlearn.evaluation.eos import without_final_eos
from lit_unlearn.evaluation.forget_quality import ForgetQuality, forget_quality
from lit_unlearn.evaluation.memorization import (
    ExactMemorization,
    ExtractionStrength,
    exact_memorization,
    extraction_strength,
)
from lit_unlearn.evaluation.mia import MembershipInference, auc, mia_scores, privacy_leak
from lit_unlearn.evaluation.probability import (
    AnswerProbability,
    OptionProbability,
    answer_probability,
    option_probability,
)
from lit_unlearn.evaluation.reference import GoldReference
from lit_unlearn.evaluation.refusal import is_refusal, load_prompts, refusal_rate
from lit_unlearn.evaluation.rouge import RougeL, greedy_generate, rouge_l
from lit_unlearn.evaluation.suites import (
    BLURSuite,
    CodeLeakSuite,
    DUSKSuite,
    EvalSuite,
    MUSESuite,
    RefusalSuite,
    RWKUSuite,
    SuiteResult,
    TOFUSuite,
)
from lit_unlearn.evaluation.teacher_forced import TeacherForcedMetrics, teacher_forced_stats
from lit_unlearn.evaluation.truth_ratio import TruthRatio, truth_ratio, truth_ratio_score
from lit_unlearn.evaluation.utility import harmonic_mean

__all__ = [
    "AnswerProbability", "BLURSuite", "CodeLeakSuite", "DUSKSuite",
    "EvalSuite", "Evaluator", "ExactMemorization", "ExtractionStrength", "ForgetQuality",
    "GoldReference", "MUSESuite", "MembershipInference", "OptionProbability", "RWKUSuite", "RefusalSuite", "RougeL",
    "SuiteResult", "TOFUSuite",
    "TeacherForcedMetrics", "TruthRatio", "answer_probability", "auc", "diagnostics", "exact_memorization",
    "extraction_strength",
    "forget_quality", "greedy_generate", "harmonic_mean", "is_refusal", "load_prompts", "mia_scores",
    "option_probability", "privacy_leak", "refusal_rate", "rouge_l", "teacher_forced_stats", "truth_ratio",
    "truth_ratio_score", "without_final_eos",
]
