"""lit-unlearn: machine unlearning of causal language models with PyTorch Lightning."""

from lit_unlearn import pretrained as _pretrained  # noqa: F401  (registers builtin:smollm2-135m)
from lit_unlearn import zoo as _zoo  # noqa: F401  (registers the builtin: model names)
from lit_unlearn.callbacks import (
    DataAttributionWeights,
    DivergenceGuard,
    DualVariable,
    GradientProjection,
    LogProgress,
    NullSpaceProjection,
    RelearningProbe,
    RunSummary,
    SavePretrained,
    StabilityGap,
    SuiteEvaluation,
    TradeOffCurves,
)
from lit_unlearn.datamodules import CodeLeak, DuskDocuments, FictitiousPeople, ForgetRetainDataModule
from lit_unlearn.evaluation import BLURSuite, CodeLeakSuite, DUSKSuite, MUSESuite, RefusalSuite, RWKUSuite, TOFUSuite
from lit_unlearn.methods import (
    CEU,
    ICU,
    KFADE,
    NPO,
    REGLU,
    RMU,
    RULE,
    SRMU,
    UNDIAL,
    WGA,
    AltPO,
    ConstrainedEntropic,
    EvaluateOnly,
    FineTune,
    GeneralReplay,
    GradAscent,
    GradDiff,
    IdkDPO,
    IdkNLL,
    ModHiFi,
    Objectives,
    SatImp,
    SelectiveAmnesia,
    SimNPO,
    UnlearningModule,
)
from lit_unlearn.models import load_causal_lm, load_tokenizer
from lit_unlearn.rwku import RWKU

__version__ = "0.1.0"

__all__ = [
    "AltPO", "BLURSuite", "CEU", "CodeLeak", "CodeLeakSuite", "ConstrainedEntropic", "DUSKSuite", "DuskDocuments",
    "DataAttributionWeights", "DivergenceGuard", "DualVariable", "EvaluateOnly", "FictitiousPeople", "FineTune",
    "ForgetRetainDataModule", "GeneralReplay", "GradAscent", "GradDiff", "GradientProjection", "ICU", "IdkDPO",
    "IdkNLL", "KFADE", "LogProgress", "MUSESuite", "ModHiFi", "NPO", "NullSpaceProjection", "Objectives", "REGLU",
    "RMU", "RULE", "RWKU", "RWKUSuite", "RefusalSuite", "RelearningProbe", "RunSummary", "SRMU", "SatImp",
    "SavePretrained", "SelectiveAmnesia", "SimNPO", "StabilityGap", "SuiteEvaluation", "TOFUSuite", "TradeOffCurves",
    "UNDIAL", "UnlearningModule", "WGA", "load_causal_lm", "load_tokenizer",
]
