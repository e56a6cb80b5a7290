"""Forget/retain data: sources, encoding, sampling, and the embedded benchmarks (fictitious people, DUSK-style
documents, code with planted secrets)."""

from lit_unlearn.datamodules.code_leak import CodeLeak, CodeLeakBenchmark
from lit_unlearn.datamodules.dusk import DuskBenchmark, DuskDocuments
from lit_unlearn.datamodules.encoding import Fields
from lit_unlearn.datamodules.fictitious import BenchmarkConfig, FictitiousBenchmark
from lit_unlearn.datamodules.fictitious_people import FictitiousPeople
from lit_unlearn.datamodules.forget_retain import ForgetRetainDataModule

__all__ = ["BenchmarkConfig", "CodeLeak", "CodeLeakBenchmark", "DuskBenchmark", "DuskDocuments", "FictitiousBenchmark",
           "FictitiousPeople", "Fields", "ForgetRetainDataModule"]
