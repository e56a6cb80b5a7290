"""The RWKU setting: corpora the start model writes about real people, and the datamodule.

It sits above :mod:`lit_unlearn.evaluation` (the datamodule keeps only the probes the start
model answers, scored as :class:`~lit_unlearn.evaluation.RWKUSuite` scores them).
"""

from lit_unlearn.rwku.datamodule import RWKU

__all__ = ["RWKU"]
