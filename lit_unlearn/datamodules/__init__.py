"""Forget/retain data: sources, encoding, sampling, and the embedded benchmark."""

from lit_unlearn.datamodules.encoding import Fields
from lit_unlearn.datamodules.fictitious import BenchmarkConfig, FictitiousBenchmark
from lit_unlearn.datamodules.fictitious_people import FictitiousPeople
from lit_unlearn.datamodules.forget_retain import ForgetRetainDataModule

__all__ = ["BenchmarkConfig", "FictitiousBenchmark", "FictitiousPeople", "Fields", "ForgetRetainDataModule"]
